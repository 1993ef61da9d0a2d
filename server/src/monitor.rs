//! The monitor thread: once a second it scrapes the server's own metrics (the `/metrics` text,
//! read back), evaluates the alert rules, logs and posts their transitions, and publishes the
//! second's figures for the dashboard (`/api/stats`) on [`crate::alerts::Board`].

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::alerts::series::{bucket_delta, quantile, History, Scrape};
use crate::alerts::webhook::Webhook;
use crate::alerts::{Alerts, Status};
use crate::conn::unix_ms;
use crate::metrics::{render, CloseReason};
use crate::shard::Shared;

/// How often the monitor runs.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Channels the dashboard lists.
const TOP_CHANNELS: usize = 10;

/// Starts the thread; it stops soon after `stop` turns true.
pub fn start(
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let webhook = match shared.config.alerting.webhook.clone() {
        Some(target) => Some(Webhook::start(target)?),
        None => None,
    };
    let alerts = Alerts::new(shared.config.alerting.rules.clone());
    shared.board.set_statuses(alerts.statuses());
    std::thread::Builder::new()
        .name("wsedge-monitor".into())
        .spawn(move || run(&shared, &stop, alerts, webhook))
}

fn run(shared: &Shared, stop: &AtomicBool, mut alerts: Alerts, webhook: Option<Webhook>) {
    let mut history = History::default();
    let shards = shared.config.shards;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(INTERVAL);
        let now = unix_ms();
        let text = render(&shared.metrics, &shared.live());
        history.push(Scrape::parse(&text, now));
        let changed = alerts.evaluate(&history, shards, now);
        let statuses = alerts.statuses();
        let point = point(&history, shared, &statuses, now);
        // The board first: whoever a webhook post prompts to look at `/api/alerts` sees the
        // state it announces.
        shared.board.publish(now, point, statuses);
        for status in changed {
            report(&status, webhook.as_ref());
        }
    }
}

/// Logs a transition and posts it.
fn report(status: &Status, webhook: Option<&Webhook>) {
    let value = status.value.unwrap_or(f64::NAN);
    match status.state {
        "firing" => tracing::warn!(
            alert = %status.name, value, threshold = status.threshold, "alert firing: {}", status.summary
        ),
        _ => tracing::info!(alert = %status.name, value, "alert resolved"),
    }
    if let Some(webhook) = webhook {
        webhook.send(status.json());
    }
}

/// One second's figures as a JSON object.
fn point(history: &History, shared: &Shared, statuses: &[Status], now: u64) -> String {
    let (Some(latest), Some(before)) = (history.latest(), history.before(1)) else {
        return format!("{{\"t\":{now}}}");
    };
    let seconds = (latest.at_ms.saturating_sub(before.at_ms) as f64 / 1e3).max(1e-3);
    let rate = |name: &str, labels: &[(String, String)]| {
        let now = latest.sum(name, labels).unwrap_or(0.0);
        let then = before.sum(name, labels).unwrap_or(0.0);
        ((now - then).max(0.0) / seconds * 100.0).round() / 100.0
    };
    let label = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let quantile_ms = |name: &str, window: u64, q: f64| {
        let then = history.before(window).unwrap_or(before);
        let delta = bucket_delta(&latest.buckets(name, &[]), &then.buckets(name, &[]));
        quantile(&delta, q).map_or("null".into(), |s| format!("{:.3}", s * 1e3))
    };
    let by_shard = |name: &str| -> Vec<f64> {
        (0..shared.config.shards)
            .map(|i| {
                latest
                    .sum(name, &label("shard", &i.to_string()))
                    .unwrap_or(0.0)
            })
            .collect()
    };
    let cpu = |i: usize| {
        let key = label("shard", &i.to_string());
        let now = latest
            .sum("wsedge_shard_cpu_seconds_total", &key)
            .unwrap_or(0.0);
        let then = before
            .sum("wsedge_shard_cpu_seconds_total", &key)
            .unwrap_or(0.0);
        ((now - then).max(0.0) / seconds * 1000.0).round() / 1000.0
    };
    let connections = by_shard("wsedge_connections");
    let mut o = String::with_capacity(1024);
    let _ = write!(
        o,
        "{{\"t\":{},\"connections\":{},\"connections_by_shard\":{:?},",
        latest.at_ms,
        connections.iter().sum::<f64>(),
        connections
    );
    let _ = write!(
        o,
        "\"received_per_s\":{},\"publishes_per_s\":{},\"deliveries_per_s\":{},\"bytes_in_per_s\":{},\"bytes_out_per_s\":{},\"errors_per_s\":{},",
        rate("wsedge_messages_received_total", &[]),
        rate("wsedge_messages_received_total", &label("op", "publish")),
        rate("wsedge_deliveries_total", &[]),
        rate("wsedge_received_bytes_total", &[]),
        rate("wsedge_sent_bytes_total", &[]),
        rate("wsedge_errors_total", &[]),
    );
    let _ = write!(
        o,
        "\"delivery_p50_ms\":{},\"delivery_p99_ms\":{},\"fsync_p99_ms\":{},",
        quantile_ms("wsedge_delivery_latency_seconds", 1, 0.5),
        quantile_ms("wsedge_delivery_latency_seconds", 1, 0.99),
        quantile_ms("wsedge_store_fsync_seconds", 10, 0.99),
    );
    o.push_str("\"drops_per_s\":{");
    for (i, lane) in ["critical", "high", "normal", "low"].iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(
            o,
            "{sep}\"{lane}\":{}",
            rate("wsedge_dropped_total", &label("lane", lane))
        );
    }
    o.push_str("},\"closes_per_s\":{");
    for (i, reason) in CloseReason::ALL.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let per_s = rate("wsedge_closes_total", &label("reason", reason.as_str()));
        let _ = write!(o, "{sep}\"{}\":{per_s}", reason.as_str());
    }
    let shard_cpu: Vec<f64> = (0..shared.config.shards).map(cpu).collect();
    let _ = write!(
        o,
        "}},\"shard_cpu\":{:?},\"shard_queue\":{:?},\"cpu\":{},\"rss_bytes\":{},\"dead_letters\":{},\"redeliveries_per_s\":{},",
        shard_cpu,
        by_shard("wsedge_shard_queue_messages"),
        rate("process_cpu_seconds_total", &[]),
        latest.sum("process_resident_memory_bytes", &[]).unwrap_or(0.0),
        latest.sum("wsedge_dead_letters", &[]).unwrap_or(0.0),
        rate("wsedge_redeliveries_total", &[]),
    );
    o.push_str("\"top_channels\":[");
    for (i, (channel, count)) in top_channels(shared).iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let mut name = Vec::new();
        wsedge_core::protocol::reply::write_json_string(&mut name, channel);
        let _ = write!(o, "[{},{count}]", String::from_utf8_lossy(&name));
    }
    let firing = statuses.iter().filter(|s| s.state == "firing").count();
    let _ = write!(o, "],\"alerts_firing\":{firing}}}");
    o
}

/// The busiest channels of the shards' last tick, merged: (channel, publishes a second).
fn top_channels(shared: &Shared) -> Vec<(Box<str>, u64)> {
    let mut merged: std::collections::HashMap<Box<str>, u64> = Default::default();
    for slot in shared.top_channels.iter() {
        for (channel, count) in slot.load().iter() {
            *merged.entry(channel.clone()).or_default() += count;
        }
    }
    let mut top: Vec<_> = merged.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_CHANNELS);
    top
}
