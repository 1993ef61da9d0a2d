//! `/metrics` in the Prometheus text exposition format (version 0.0.4). Names follow the
//! Prometheus conventions: `wsedge_` prefix, base units (`_seconds`, `_bytes`), `_total` on
//! counters; the process's own under the standard `process_*` names.

use std::fmt::Write;

use wsedge_core::broker::DeadReason;
use wsedge_core::protocol::envelope::ErrorCode;
use wsedge_core::protocol::Priority;

use super::cells::{Metrics, ShardMetrics};
use super::counter::HistogramSnapshot;
use super::labels::{
    close_code_index, CloseReason, CLOSE_CODES, DROP_REASONS, LIMITS, OPS, REJECTION_STATUSES,
};
use super::process::process_stats;

/// What the scrape reads from outside the metric cells.
#[derive(Debug, Default)]
pub struct Live {
    pub max_connections: usize,
    pub pending_handshakes: usize,
    /// Each shard's inbound queue: (messages, frame bytes).
    pub queues: Vec<(usize, usize)>,
    /// The oldest heartbeat between two shards, seconds.
    pub heartbeat_age_s: f64,
    /// Seconds since the store last confirmed a write.
    pub store_confirmed_age_s: f64,
    pub healthy: bool,
    /// Alert rules by state: (name, state) with state "pending" or "firing".
    pub alerts: Vec<(String, &'static str)>,
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        match labels {
            "" => {
                let _ = writeln!(self.0, "{name} {value}");
            }
            _ => {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
    }

    /// A counter or gauge summed over the shards.
    fn total(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        m: &Metrics,
        read: impl Fn(&ShardMetrics) -> u64,
    ) {
        self.head(name, kind, help);
        self.line(name, "", m.sum(read));
    }

    /// A histogram kept in µs (`seconds`: rendered in seconds) or a count.
    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot, seconds: bool) {
        self.head(name, "histogram", help);
        let scale = if seconds { 1e6 } else { 1.0 };
        for (bound, count) in h.bounds.iter().zip(&h.cumulative) {
            self.line(
                &format!("{name}_bucket"),
                &format!("le=\"{}\"", *bound as f64 / scale),
                count,
            );
        }
        self.line(&format!("{name}_bucket"), "le=\"+Inf\"", h.count());
        self.line(&format!("{name}_sum"), "", h.sum as f64 / scale);
        self.line(&format!("{name}_count"), "", h.count());
    }
}

/// The whole exposition.
pub fn render(m: &Metrics, live: &Live) -> String {
    let mut o = Out(String::with_capacity(16 << 10));
    o.head(
        "wsedge_connections",
        "gauge",
        "Open WebSocket connections, by shard.",
    );
    for (i, shard) in m.shards().iter().enumerate() {
        o.line(
            "wsedge_connections",
            &format!("shard=\"{i}\""),
            shard.connections.get(),
        );
    }
    o.head(
        "wsedge_connections_max",
        "gauge",
        "Connections allowed (server.max_connections against the open-file limit).",
    );
    o.line("wsedge_connections_max", "", live.max_connections);
    o.head(
        "wsedge_pending_handshakes",
        "gauge",
        "TCP connections still in the HTTP phase.",
    );
    o.line("wsedge_pending_handshakes", "", live.pending_handshakes);
    o.total(
        "wsedge_upgrades_total",
        "counter",
        "WebSocket upgrades accepted.",
        m,
        |s| s.upgrades.get(),
    );
    o.head(
        "wsedge_upgrade_rejections_total",
        "counter",
        "Connection attempts refused, by HTTP status.",
    );
    for (i, status) in REJECTION_STATUSES.iter().enumerate() {
        o.line(
            "wsedge_upgrade_rejections_total",
            &format!("status=\"{status}\""),
            m.sum(|s| s.rejections[i].get()),
        );
    }
    o.head(
        "wsedge_messages_received_total",
        "counter",
        "Messages received from clients, by op (invalid: not a valid envelope).",
    );
    for (i, op) in OPS.iter().enumerate() {
        o.line(
            "wsedge_messages_received_total",
            &format!("op=\"{op}\""),
            m.sum(|s| s.received[i].get()),
        );
    }
    o.total(
        "wsedge_deliveries_total",
        "counter",
        "Messages queued to connections (published, direct, inbox and queue deliveries).",
        m,
        |s| s.deliveries.get(),
    );
    o.total(
        "wsedge_received_bytes_total",
        "counter",
        "Bytes read from WebSocket connections.",
        m,
        |s| s.bytes_in.get(),
    );
    o.total(
        "wsedge_sent_bytes_total",
        "counter",
        "Bytes written to WebSocket connections.",
        m,
        |s| s.bytes_out.get(),
    );
    o.total(
        "wsedge_write_syscalls_total",
        "counter",
        "Vectored writes to WebSocket connections.",
        m,
        |s| s.write_calls.get(),
    );
    o.total(
        "wsedge_outbox_bytes",
        "gauge",
        "Bytes queued in connections' outboxes (sampled each second).",
        m,
        |s| s.outbox_bytes.get(),
    );
    o.head(
        "wsedge_dropped_total",
        "counter",
        "Messages dropped, by lane and reason.",
    );
    for (lane, priority) in Priority::ALL.iter().enumerate() {
        for (r, reason) in DROP_REASONS.iter().enumerate() {
            let labels = format!("lane=\"{}\",reason=\"{reason}\"", priority.as_str());
            o.line(
                "wsedge_dropped_total",
                &labels,
                m.sum(|s| s.dropped[lane][r].get()),
            );
        }
    }
    o.head(
        "wsedge_closes_total",
        "counter",
        "WebSocket connections closed, by the code sent and the reason.",
    );
    for reason in CloseReason::ALL {
        for (c, code) in CLOSE_CODES
            .iter()
            .map(|c| c.to_string())
            .chain(["other".into()])
            .enumerate()
        {
            let value = m.sum(|s| s.closes[reason as usize][c].get());
            // Alert rules read these two: they are there from the start.
            let always = matches!(reason, CloseReason::SlowConsumer | CloseReason::RateLimited)
                && c == close_code_index(1008);
            if value > 0 || always {
                o.line(
                    "wsedge_closes_total",
                    &format!("code=\"{code}\",reason=\"{}\"", reason.as_str()),
                    value,
                );
            }
        }
    }
    o.head(
        "wsedge_errors_total",
        "counter",
        "Error replies sent, by code.",
    );
    for code in ErrorCode::ALL {
        o.line(
            "wsedge_errors_total",
            &format!("code=\"{}\"", code.as_str()),
            m.sum(|s| s.errors[code as usize].get()),
        );
    }
    o.head(
        "wsedge_rate_limited_total",
        "counter",
        "Requests and connections refused by a rate limit, by limit.",
    );
    for (i, limit) in LIMITS.iter().enumerate() {
        o.line(
            "wsedge_rate_limited_total",
            &format!("limit=\"{limit}\""),
            m.sum(|s| s.rate_limited[i].get()),
        );
    }
    o.histogram("wsedge_delivery_latency_seconds", "From reading a publish to writing its frame to a subscriber: the oldest message of a write, sampled at most once per 100 us per shard.", &m.delivery_latency(), true);
    o.head(
        "wsedge_shard_queue_messages",
        "gauge",
        "Messages in a shard's inbound cross-shard queue.",
    );
    for (i, (messages, _)) in live.queues.iter().enumerate() {
        o.line(
            "wsedge_shard_queue_messages",
            &format!("shard=\"{i}\""),
            messages,
        );
    }
    o.head(
        "wsedge_shard_queue_bytes",
        "gauge",
        "Frame bytes in a shard's inbound cross-shard queue.",
    );
    for (i, (_, bytes)) in live.queues.iter().enumerate() {
        o.line("wsedge_shard_queue_bytes", &format!("shard=\"{i}\""), bytes);
    }
    o.head(
        "wsedge_shard_cpu_seconds_total",
        "counter",
        "CPU time of each shard's thread.",
    );
    for (i, shard) in m.shards().iter().enumerate() {
        o.line(
            "wsedge_shard_cpu_seconds_total",
            &format!("shard=\"{i}\""),
            shard.cpu_seconds(),
        );
    }
    o.histogram(
        "wsedge_store_fsync_seconds",
        "Time to write and sync one batch of the store.",
        &m.store.fsync.snapshot(),
        true,
    );
    o.histogram(
        "wsedge_store_batch_records",
        "Records in one synced store batch.",
        &m.store.batch.snapshot(),
        false,
    );
    o.head(
        "wsedge_store_failures_total",
        "counter",
        "Store batches that failed to write or sync.",
    );
    o.line("wsedge_store_failures_total", "", m.store.failures.get());
    o.head(
        "wsedge_dead_letters",
        "gauge",
        "Dead letters held in the store.",
    );
    o.line("wsedge_dead_letters", "", m.store.dead_letters.get());
    o.total(
        "wsedge_inbox_messages",
        "gauge",
        "Messages held in user inboxes.",
        m,
        |s| s.inbox_messages.get(),
    );
    o.total(
        "wsedge_inbox_bytes",
        "gauge",
        "Frame bytes held in user inboxes.",
        m,
        |s| s.inbox_bytes.get(),
    );
    o.total(
        "wsedge_queue_messages",
        "gauge",
        "Messages held in acknowledged subscriptions' and groups' queues.",
        m,
        |s| s.queue_messages.get(),
    );
    o.total(
        "wsedge_queue_bytes",
        "gauge",
        "Frame bytes held in acknowledged subscriptions' and groups' queues.",
        m,
        |s| s.queue_bytes.get(),
    );
    o.total(
        "wsedge_redeliveries_total",
        "counter",
        "Messages delivered again (ack timeout, nak, hand-over).",
        m,
        |s| s.redeliveries.get(),
    );
    o.head(
        "wsedge_dead_letters_total",
        "counter",
        "Messages moved to the dead-letter queue, by reason.",
    );
    for reason in DeadReason::ALL {
        o.line(
            "wsedge_dead_letters_total",
            &format!("reason=\"{}\"", reason.as_str()),
            m.sum(|s| s.dead_letters[reason as usize].get()),
        );
    }
    o.head(
        "wsedge_recoveries_total",
        "counter",
        "Subscribes and history reads with since, by result.",
    );
    for (i, result) in ["recovered", "not_recovered"].iter().enumerate() {
        o.line(
            "wsedge_recoveries_total",
            &format!("result=\"{result}\""),
            m.sum(|s| s.recoveries[i].get()),
        );
    }
    o.head(
        "wsedge_heartbeat_age_seconds",
        "gauge",
        "Age of the oldest heartbeat between two shards (unhealthy above 3).",
    );
    o.line("wsedge_heartbeat_age_seconds", "", live.heartbeat_age_s);
    o.head(
        "wsedge_store_confirmed_age_seconds",
        "gauge",
        "Seconds since the store last confirmed a write (its canary writes each second).",
    );
    o.line(
        "wsedge_store_confirmed_age_seconds",
        "",
        live.store_confirmed_age_s,
    );
    o.head(
        "wsedge_healthy",
        "gauge",
        "1 when /health answers 200, 0 when 503.",
    );
    o.line("wsedge_healthy", "", u8::from(live.healthy));
    o.head("wsedge_alerts", "gauge", "Alert rules pending or firing.");
    for (name, state) in &live.alerts {
        o.line(
            "wsedge_alerts",
            &format!("alertname=\"{name}\",state=\"{state}\""),
            1,
        );
    }
    let p = process_stats();
    let process = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds as f64,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time,
        ),
    ];
    for (name, kind, help, value) in process {
        o.head(name, kind, help);
        o.line(name, "", value);
    }
    o.0
}
