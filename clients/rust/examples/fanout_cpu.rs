//! What the client costs per message received: N subscribers on one thread (a current-thread
//! runtime, as benches/refclient.rs) take a fan-out published by someone else, and it prints
//! the messages and this process's CPU per message.
//!
//! `cargo run --release -p wsedge-client --example fanout_cpu -- URL SUBSCRIBERS SECONDS`, with
//! a publisher on `loadtest.fanout`, e.g. `refclient URL fanout 1 200 0 SECONDS`.

use std::time::{Duration, Instant};

use wsedge_client::{Client, Options, SubscribeOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), wsedge_client::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or("ws://127.0.0.1:8080/ws".into());
    let subscribers: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let client = Client::connect(&url, Options::default())?;
        let sub = client
            .subscribe("loadtest.fanout", SubscribeOptions::default())
            .await?;
        subs.push((client, sub));
    }
    eprintln!("fanout_cpu: {subscribers} subscribed");
    let (cpu_before, start) = (cpu_us(), Instant::now());
    let end = start + Duration::from_secs(seconds);
    let mut readers = Vec::new();
    for (client, mut sub) in subs {
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok(Some(_)) = tokio::time::timeout_at(end.into(), sub.next()).await {
                n += 1;
            }
            drop(client);
            n
        }));
    }
    let mut messages = 0;
    for reader in readers {
        messages += reader.await.unwrap_or(0);
    }
    let cpu = cpu_us() - cpu_before;
    println!(
        "{{\"messages\":{messages},\"per_s\":{:.0},\"cpu_us\":{cpu},\"cpu_us_per_message\":{:.3}}}",
        messages as f64 / seconds as f64,
        cpu as f64 / messages.max(1) as f64
    );
    Ok(())
}

/// This process's CPU time (user + system) in µs, from /proc/self/stat.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks * 1_000_000 / 100
}
