//! The server's own figures, from a wsedge target's `GET /metrics` (Prometheus text): its
//! delivery latency, deliveries, drops, closes and errors, read before, during (once a second)
//! and after a run, so the report shows them beside what the clients measured. A target
//! without `/metrics` (another server, or `wss://`) just has none. Written against the text
//! format, not the server's code: the load tester stays an outside observer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a scrape may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/metrics` answer read.
const MAX_BYTES: usize = 1 << 20;

/// The series the report uses, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub deliveries: f64,
    /// `wsedge_delivery_latency_seconds` cumulative buckets: (upper bound s, count).
    pub latency: Vec<(f64, f64)>,
    pub drops: BTreeMap<String, f64>,
    pub closes: BTreeMap<String, f64>,
    pub errors: f64,
}

/// What the server counted between two scrapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSide {
    pub deliveries: u64,
    /// Server-side delivery latency (publish read → frame written), ms; `None` without
    /// deliveries.
    pub delivery_p50_ms: Option<f64>,
    pub delivery_p99_ms: Option<f64>,
    /// Dropped messages by lane, closes by reason (only those that happened).
    pub drops: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub errors: u64,
}

/// `GET /metrics` from `addr`; `None` when it does not answer 200 in time.
pub async fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.take(MAX_BYTES as u64).read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8(body).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| parse(body))
    };
    tokio::time::timeout(TIMEOUT, fetch).await.ok().flatten()
}

/// Reads the series the report uses from the text format.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches(['"', '}']).to_string())
        };
        match name {
            "wsedge_deliveries_total" => scrape.deliveries = value,
            "wsedge_errors_total" => scrape.errors += value,
            "wsedge_delivery_latency_seconds_bucket" => {
                let le = match label("le").as_deref() {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                scrape.latency.push((le, value));
            }
            "wsedge_dropped_total" => {
                *scrape
                    .drops
                    .entry(label("lane").unwrap_or_default())
                    .or_default() += value;
            }
            "wsedge_closes_total" => {
                *scrape
                    .closes
                    .entry(label("reason").unwrap_or_default())
                    .or_default() += value;
            }
            _ => {}
        }
    }
    scrape.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
    scrape
}

/// The `q` quantile of cumulative buckets, interpolated within its bucket (as
/// `histogram_quantile`); `None` without observations.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|&(_, c)| c >= rank)?;
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    let (upper, at) = buckets[i];
    if upper.is_infinite() {
        return Some(lower);
    }
    let within = at - below;
    Some(
        lower
            + (upper - lower)
                * if within > 0.0 {
                    (rank - below) / within
                } else {
                    1.0
                },
    )
}

/// What happened between `before` and `after`.
pub fn between(before: &Scrape, after: &Scrape) -> ServerSide {
    let latency: Vec<(f64, f64)> = after
        .latency
        .iter()
        .map(|&(le, c)| {
            let was = before
                .latency
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |b| b.1);
            (le, (c - was).max(0.0))
        })
        .collect();
    let ms = |q| quantile(&latency, q).map(|s| (s * 1e6).round() / 1e3);
    let grew = |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>| {
        now.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - then.get(k).copied().unwrap_or(0.0)).max(0.0) as u64,
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    ServerSide {
        deliveries: (after.deliveries - before.deliveries).max(0.0) as u64,
        delivery_p50_ms: ms(0.5),
        delivery_p99_ms: ms(0.99),
        drops: grew(&after.drops, &before.drops),
        closes: grew(&after.closes, &before.closes),
        errors: (after.errors - before.errors).max(0.0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_side_is_the_difference_of_two_scrapes() {
        let before = parse(
            "wsedge_deliveries_total 10\n\
             wsedge_delivery_latency_seconds_bucket{le=\"0.001\"} 10\n\
             wsedge_delivery_latency_seconds_bucket{le=\"0.002\"} 10\n\
             wsedge_delivery_latency_seconds_bucket{le=\"+Inf\"} 10\n\
             wsedge_closes_total{code=\"1008\",reason=\"slow_consumer\"} 1\n",
        );
        let after = parse(
            "# HELP x\nwsedge_deliveries_total 110\n\
             wsedge_delivery_latency_seconds_bucket{le=\"0.001\"} 60\n\
             wsedge_delivery_latency_seconds_bucket{le=\"0.002\"} 110\n\
             wsedge_delivery_latency_seconds_bucket{le=\"+Inf\"} 110\n\
             wsedge_dropped_total{lane=\"low\",reason=\"outbox_full\"} 3\n\
             wsedge_closes_total{code=\"1008\",reason=\"slow_consumer\"} 4\n\
             wsedge_errors_total{code=\"forbidden\"} 2\n",
        );
        let side = between(&before, &after);
        assert_eq!(side.deliveries, 100);
        assert_eq!(side.delivery_p50_ms, Some(1.0));
        assert_eq!(side.delivery_p99_ms, Some(1.98));
        assert_eq!(side.drops.get("low"), Some(&3));
        assert_eq!(side.closes.get("slow_consumer"), Some(&3));
        assert_eq!(side.errors, 2);
        assert_eq!(between(&after, &after).delivery_p99_ms, None);
    }
}
