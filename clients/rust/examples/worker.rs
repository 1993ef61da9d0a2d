//! A work-queue agent: takes tasks from the group `workers` on `tasks`, publishes a result for
//! each to `results`, and acks it (a task whose `data` is not an object is termed).
//!
//! `cargo run -p wsedge-client --example worker [ws://127.0.0.1:8080/ws]`; then, from any
//! client, publish to `tasks`: `{"op":"publish","channel":"tasks","data":{"n":1}}`.

use wsedge_client::{Client, Event, Group, Options, PublishOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), wsedge_client::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or("ws://127.0.0.1:8080/ws".into());
    let client = Client::connect(&url, Options::default())?;
    let mut events = client.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if !matches!(event, Event::Connecting { .. }) {
                eprintln!("worker: {event:?}");
            }
        }
    });
    let mut tasks = client.subscribe("tasks", Group("workers").ack()).await?;
    eprintln!("worker: waiting for tasks on {url}");
    while let Some(task) = tasks.next().await {
        if !task.data.is_object() {
            task.term("a task is a JSON object").await?;
            continue;
        }
        let result = serde_json::json!({"task": task.id, "done": task.data});
        client
            .publish("results", result, PublishOptions::default())
            .await?;
        task.ack().await?;
        eprintln!("worker: done {}", task.id);
    }
    Ok(())
}
