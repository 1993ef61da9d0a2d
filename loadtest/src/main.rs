fn main() {
    println!("loadtest: not implemented yet");
}
