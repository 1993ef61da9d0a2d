//! An alert rule: a metric (any `/metrics` series, with label filters), an aggregation, a
//! comparison, a threshold and how long it must hold (`for_s`). `[[alerts]]` in the config
//! adds rules to (or, by name, replaces) the shipped ones.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::series::{bucket_delta, quantile, History};

/// `[[alerts]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub name: String,
    pub metric: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `value` (the default), `rate` (per second), `increase`, or a histogram quantile:
    /// `p50`, `p90`, `p95`, `p99`, `p999`.
    #[serde(default = "value")]
    pub aggregation: String,
    /// The window of a rate, increase or quantile, seconds (default 10, at most 300).
    #[serde(default = "ten")]
    pub window_s: u64,
    /// `>`, `>=`, `<` or `<=`.
    pub op: String,
    pub threshold: f64,
    /// How long the comparison must hold before the alert fires (default 0: at once).
    #[serde(default)]
    pub for_s: u64,
    /// Divide the value by the number of shards (CPU per shard, for instance).
    #[serde(default)]
    pub per_shard: bool,
    #[serde(default = "warning")]
    pub severity: String,
    #[serde(default)]
    pub summary: String,
}

fn value() -> String {
    "value".into()
}
fn ten() -> u64 {
    10
}
fn warning() -> String {
    "warning".into()
}

/// How a rule reads its metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    Value,
    Rate,
    Increase,
    Quantile(f64),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Above,
    AtLeast,
    Below,
    AtMost,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Above => value > threshold,
            Op::AtLeast => value >= threshold,
            Op::Below => value < threshold,
            Op::AtMost => value <= threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Above => ">",
            Op::AtLeast => ">=",
            Op::Below => "<",
            Op::AtMost => "<=",
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub aggregation: Aggregation,
    pub window_s: u64,
    pub op: Op,
    pub threshold: f64,
    pub for_s: u64,
    pub per_shard: bool,
    pub severity: String,
    pub summary: String,
}

fn is_name(text: &str, extra: &[char]) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || extra.contains(&c))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
}

impl RuleSection {
    /// The rule, or why not (naming the rule).
    pub fn validate(&self) -> Result<Rule, String> {
        let name = &self.name;
        if name.len() > 64 || !is_name(name, &[]) {
            return Err(format!(
                "alert name {name:?} is not 1-64 bytes of [A-Za-z0-9_]"
            ));
        }
        let fail = |what: String| Err(format!("alert {name}: {what}"));
        if !is_name(&self.metric, &[':']) {
            return fail(format!("metric {:?} is not a metric name", self.metric));
        }
        for (key, value) in &self.labels {
            if !is_name(key, &[]) || value.contains(['"', '\\', '\n']) {
                return fail(format!("label {key}={value:?} is not a plain label"));
            }
        }
        let aggregation = match self.aggregation.as_str() {
            "value" => Aggregation::Value,
            "rate" => Aggregation::Rate,
            "increase" => Aggregation::Increase,
            "p50" => Aggregation::Quantile(0.5),
            "p90" => Aggregation::Quantile(0.9),
            "p95" => Aggregation::Quantile(0.95),
            "p99" => Aggregation::Quantile(0.99),
            "p999" => Aggregation::Quantile(0.999),
            other => {
                return fail(format!(
                    "aggregation {other:?} is not value, rate, increase, p50, p90, p95, p99 or p999"
                ))
            }
        };
        if !(1..=300).contains(&self.window_s) {
            return fail("window_s is 1-300".into());
        }
        let op = match self.op.as_str() {
            ">" => Op::Above,
            ">=" => Op::AtLeast,
            "<" => Op::Below,
            "<=" => Op::AtMost,
            other => return fail(format!("op {other:?} is not >, >=, < or <=")),
        };
        if !self.threshold.is_finite() {
            return fail("threshold is not a finite number".into());
        }
        if self.for_s > 86_400 {
            return fail("for_s is at most 86400".into());
        }
        if !["info", "warning", "critical"].contains(&self.severity.as_str()) {
            return fail("severity is info, warning or critical".into());
        }
        Ok(Rule {
            name: name.clone(),
            metric: self.metric.clone(),
            labels: self.labels.clone().into_iter().collect(),
            aggregation,
            window_s: self.window_s,
            op,
            threshold: self.threshold,
            for_s: self.for_s,
            per_shard: self.per_shard,
            severity: self.severity.clone(),
            summary: self.summary.clone(),
        })
    }
}

impl Rule {
    /// Its value over `history`; `None` when the metric is absent or (for a quantile) nothing
    /// was observed in the window.
    pub fn value(&self, history: &History, shards: usize) -> Option<f64> {
        let latest = history.latest()?;
        let value = match self.aggregation {
            Aggregation::Value => latest.sum(&self.metric, &self.labels)?,
            Aggregation::Rate | Aggregation::Increase => {
                let then = history.before(self.window_s)?;
                let now = latest.sum(&self.metric, &self.labels)?;
                let before = then.sum(&self.metric, &self.labels).unwrap_or(0.0);
                // A counter only falls when the server restarted: count from zero then.
                let increase = if now >= before { now - before } else { now };
                match self.aggregation {
                    Aggregation::Increase => increase,
                    _ => {
                        let seconds = (latest.at_ms.saturating_sub(then.at_ms)) as f64 / 1e3;
                        if seconds <= 0.0 {
                            return None;
                        }
                        increase / seconds
                    }
                }
            }
            Aggregation::Quantile(q) => {
                let then = history.before(self.window_s)?;
                let now = latest.buckets(&self.metric, &self.labels);
                let before = then.buckets(&self.metric, &self.labels);
                quantile(&bucket_delta(&now, &before), q)?
            }
        };
        Some(match self.per_shard {
            true => value / shards.max(1) as f64,
            false => value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> RuleSection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn bad_rules_are_refused_with_their_name() {
        let good = "name = \"x\"\nmetric = \"m\"\nop = \">\"\nthreshold = 1.0\n";
        assert!(section(good).validate().is_ok());
        for (bad, says) in [
            ("aggregation = \"p42\"", "aggregation"),
            ("window_s = 0", "window_s"),
            ("severity = \"loud\"", "severity"),
            ("for_s = 100000", "for_s"),
        ] {
            let err = section(&format!("{good}{bad}\n")).validate().unwrap_err();
            assert!(err.contains("alert x") && err.contains(says), "{err}");
        }
        let err = section(&good.replace(">", "!=")).validate().unwrap_err();
        assert!(err.contains("op"), "{err}");
        let err = section(&good.replace("\"m\"", "\"a b\""))
            .validate()
            .unwrap_err();
        assert!(err.contains("metric"), "{err}");
    }
}
