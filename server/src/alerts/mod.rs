//! Alert rules evaluated in the server every second against its own metrics ([`series`]):
//! each goes inactive → pending (its condition holds, not yet for `for_s`) → firing →
//! resolved. Transitions are logged and, with `[alerting] webhook_url`, POSTed as JSON
//! ([`webhook`]). The shipped rules ([`default_rules`]) are also in
//! `config/prometheus-alerts.yml` for Prometheus and Alertmanager.

mod board;
mod rule;
pub mod series;
mod status;
pub mod webhook;

pub use board::Board;
pub use rule::{Rule, RuleSection};
use series::History;
pub use status::Status;

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Inactive,
    /// The condition has held since (Unix ms).
    Pending(u64),
    /// Firing since (Unix ms).
    Firing(u64),
    /// Resolved at (Unix ms); shown until the condition holds again.
    Resolved(u64),
}

/// The rules and their states.
#[derive(Debug)]
pub struct Alerts {
    rules: Vec<Rule>,
    phases: Vec<(Phase, Option<f64>)>,
}

impl Alerts {
    pub fn new(rules: Vec<Rule>) -> Self {
        let phases = vec![(Phase::Inactive, None); rules.len()];
        Alerts { rules, phases }
    }

    /// Evaluates every rule at `now_ms`; returns the rules that started firing or resolved.
    pub fn evaluate(&mut self, history: &History, shards: usize, now_ms: u64) -> Vec<Status> {
        let mut changed = Vec::new();
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            let value = rule.value(history, shards);
            let holds = value.is_some_and(|v| rule.op.holds(v, rule.threshold));
            let phase = self.phases[i].0;
            let next = match phase {
                Phase::Inactive | Phase::Resolved(_) if holds => {
                    if rule.for_s == 0 {
                        Phase::Firing(now_ms)
                    } else {
                        Phase::Pending(now_ms)
                    }
                }
                Phase::Pending(since) if holds => {
                    if now_ms.saturating_sub(since) >= rule.for_s * 1000 {
                        Phase::Firing(now_ms)
                    } else {
                        phase
                    }
                }
                Phase::Pending(_) => Phase::Inactive,
                Phase::Firing(_) if !holds => Phase::Resolved(now_ms),
                other => other,
            };
            self.phases[i] = (next, value);
            let entered = matches!(
                (phase, next),
                (
                    Phase::Pending(_) | Phase::Inactive | Phase::Resolved(_),
                    Phase::Firing(_)
                ) | (Phase::Firing(_), Phase::Resolved(_))
            );
            if entered {
                changed.push(self.status(i));
            }
        }
        changed
    }

    /// Every rule's state.
    pub fn statuses(&self) -> Vec<Status> {
        (0..self.rules.len()).map(|i| self.status(i)).collect()
    }

    fn status(&self, i: usize) -> Status {
        let rule = &self.rules[i];
        let (phase, value) = self.phases[i];
        let (state, since_ms) = match phase {
            Phase::Inactive => ("inactive", 0),
            Phase::Pending(at) => ("pending", at),
            Phase::Firing(at) => ("firing", at),
            Phase::Resolved(at) => ("resolved", at),
        };
        Status {
            name: rule.name.clone(),
            severity: rule.severity.clone(),
            summary: rule.summary.clone(),
            state,
            value,
            op: rule.op.as_str(),
            threshold: rule.threshold,
            for_s: rule.for_s,
            since_ms,
        }
    }
}

/// The rules wsedge ships (`[alerting] default_rules`), with the memory budget's threshold.
pub fn default_rules(memory_budget_bytes: u64) -> Vec<RuleSection> {
    let rule =
        |name: &str, metric: &str, aggregation: &str, op: &str, threshold: f64| RuleSection {
            name: name.into(),
            metric: metric.into(),
            labels: Default::default(),
            aggregation: aggregation.into(),
            window_s: 10,
            op: op.into(),
            threshold,
            for_s: 0,
            per_shard: false,
            severity: "warning".into(),
            summary: String::new(),
        };
    let mut latency = rule(
        "DeliveryLatencyHigh",
        "wsedge_delivery_latency_seconds",
        "p99",
        ">",
        0.1,
    );
    latency.window_s = 30;
    latency.for_s = 30;
    latency.summary = "server-side delivery p99 above 100 ms for 30 s".into();
    let mut slow = rule(
        "SlowConsumerCloses",
        "wsedge_closes_total",
        "rate",
        ">",
        1.0,
    );
    slow.labels.insert("reason".into(), "slow_consumer".into());
    slow.for_s = 30;
    slow.summary = "more than 1 connection a second closed as a slow consumer".into();
    let mut drops = rule("LowLaneDrops", "wsedge_dropped_total", "rate", ">", 100.0);
    drops.labels.insert("lane".into(), "low".into());
    drops.for_s = 30;
    drops.summary = "more than 100 low-priority messages a second dropped".into();
    let mut cpu = rule("CpuHigh", "process_cpu_seconds_total", "rate", ">", 0.8);
    cpu.window_s = 60;
    cpu.for_s = 60;
    cpu.per_shard = true;
    cpu.summary = "CPU above 80% of the shards' cores for 60 s".into();
    let mut memory = rule(
        "MemoryOverBudget",
        "process_resident_memory_bytes",
        "value",
        ">",
        memory_budget_bytes as f64,
    );
    memory.for_s = 60;
    memory.severity = "critical".into();
    memory.summary = "resident memory above [alerting] memory_budget_bytes for 60 s".into();
    let mut dead = rule(
        "DeadLettersGrowing",
        "wsedge_dead_letters_total",
        "increase",
        ">",
        0.0,
    );
    dead.window_s = 60;
    dead.for_s = 60;
    dead.summary = "messages keep going to the dead-letter queue".into();
    let mut health = rule("HealthCanaryStale", "wsedge_healthy", "value", "<", 1.0);
    health.for_s = 5;
    health.severity = "critical".into();
    health.summary = "a shard heartbeat or the store canary is older than 3 s".into();
    vec![latency, slow, drops, cpu, memory, dead, health]
}

#[cfg(test)]
mod tests {
    use super::series::Scrape;
    use super::*;

    fn history(points: &[(u64, f64)]) -> History {
        let mut h = History::default();
        for &(at, total) in points {
            let text =
                format!("wsedge_closes_total{{code=\"1008\",reason=\"slow_consumer\"}} {total}\n");
            h.push(Scrape::parse(&text, at));
        }
        h
    }

    #[test]
    fn a_rule_goes_pending_then_firing_after_for_s_then_resolved() {
        let mut slow = default_rules(1 << 30).remove(1);
        slow.for_s = 2;
        slow.window_s = 1;
        let mut alerts = Alerts::new(vec![slow.validate().unwrap()]);
        // 5 closes a second from t = 1 s.
        let mut points = vec![(0, 0.0)];
        let mut fired = Vec::new();
        for t in 1..=4u64 {
            points.push((t * 1000, 5.0 * t as f64));
            let changed = alerts.evaluate(&history(&points), 1, t * 1000);
            fired.push((alerts.statuses()[0].state, changed.len()));
        }
        assert_eq!(
            fired,
            [("pending", 0), ("pending", 0), ("firing", 1), ("firing", 0)]
        );
        assert_eq!(alerts.statuses()[0].value, Some(5.0));
        // No more closes: resolved.
        points.push((5000, 20.0));
        let changed = alerts.evaluate(&history(&points), 1, 5000);
        assert_eq!((changed.len(), changed[0].state), (1, "resolved"));
        assert!(changed[0].json().contains("\"state\":\"resolved\""));
        // A condition that stops holding while pending goes back to inactive, silently.
        let mut alerts = Alerts::new(vec![default_rules(1 << 30).remove(1).validate().unwrap()]);
        let burst = history(&[(0, 0.0), (1000, 10.0)]);
        assert!(alerts.evaluate(&burst, 1, 1000).is_empty());
        assert_eq!(alerts.statuses()[0].state, "pending");
        let calm = history(&[(0, 0.0), (1000, 10.0), (11_000, 10.0)]);
        assert!(alerts.evaluate(&calm, 1, 11_000).is_empty());
        assert_eq!(alerts.statuses()[0].state, "inactive");
    }

    #[test]
    fn the_shipped_rules_are_valid() {
        for rule in default_rules(1 << 30) {
            rule.validate().unwrap();
        }
    }
}
