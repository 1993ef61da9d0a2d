//! Scenarios from `config/scenarios.toml`: the roles' base counts and rates, and the shape of the
//! user count over time, turned into a goose test plan and named phases for the report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The shipped scenarios file.
pub const DEFAULT_SCENARIOS_TOML: &str = include_str!("../../config/scenarios.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Steady,
    Steps,
    Spike,
}

/// One scenario table. Durations are seconds before `--duration-scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: String,
    pub shape: Shape,
    pub ramp_s: f64,
    #[serde(default)]
    pub duration_s: f64,
    #[serde(default)]
    pub step_s: f64,
    #[serde(default)]
    pub steps: Vec<u32>,
    #[serde(default)]
    pub before_s: f64,
    #[serde(default)]
    pub spike_s: f64,
    #[serde(default)]
    pub after_s: f64,
    #[serde(default)]
    pub spike_multiplier: u32,
    pub echo_users: u32,
    pub echo_rate: f64,
    pub publishers: u32,
    pub publish_rate: f64,
    pub subscribers: u32,
    /// Fan-out channels the publishers and subscribers are split over, each with an even
    /// share of both [default 1]. Channels keep their size as a phase multiplies the users
    /// (new users fill new channels), so deliveries grow with the multiplier, not with its
    /// square. Raw mode (a plain peer) has one channel.
    #[serde(default = "one")]
    pub channels: u32,
    pub churn_users: u32,
    pub churn_rate: f64,
    /// Agents that each send direct messages (`send`) to the next agent at `direct_rate`.
    #[serde(default)]
    pub direct_users: u32,
    #[serde(default)]
    pub direct_rate: f64,
    /// Publishers of tasks to `loadtest.tasks` at `task_rate` each, consumed by a queue group of
    /// `group_members` agents.
    #[serde(default)]
    pub task_publishers: u32,
    #[serde(default)]
    pub task_rate: f64,
    #[serde(default)]
    pub group_members: u32,
    /// Agents making persisted sends (`reliable_rate` each) to `reliable_receivers` agents that
    /// ack them; they run alone (no other role), on plain tasks that survive a server crash.
    #[serde(default)]
    pub reliable_senders: u32,
    #[serde(default)]
    pub reliable_receivers: u32,
    #[serde(default)]
    pub reliable_rate: f64,
    /// With a value above 0, each reliable send is scheduled `delay_ms` ahead, and receivers
    /// measure how late it arrives after its due time (the `schedule` workload).
    #[serde(default)]
    pub reliable_delay_ms: u64,
    /// Every other sender publishes its tasks (`"persist":true`, with a `msg_id`) to a durable
    /// acknowledged group that the receivers are members of, instead of sending them to a
    /// user. Not with `reliable_delay_ms`.
    #[serde(default)]
    pub reliable_groups: bool,
    /// `"kill9"`: SIGKILL the spawned server halfway through the steady phase and restart it
    /// on the same port and store (`--fault` overrides it).
    #[serde(default)]
    pub fault: String,
    pub payload_bytes: usize,
    pub lz4: bool,
    pub drain_s: f64,
}

fn one() -> u32 {
    1
}

/// A named stretch of the run, for per-phase statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    /// Multiple of the base user counts.
    pub multiplier: u32,
    pub start_s: f64,
    pub end_s: f64,
}

/// Parses the scenarios file.
pub fn parse(text: &str) -> anyhow::Result<BTreeMap<String, Scenario>> {
    let all: BTreeMap<String, Scenario> = toml::from_str(text)?;
    for (name, s) in &all {
        s.validate()
            .map_err(|e| anyhow::anyhow!("scenarios.{name}: {e}"))?;
    }
    Ok(all)
}

impl Scenario {
    /// This scenario with `--set key=value` overrides applied (`echo_users=500`,
    /// `publish_rate=2000`, `lz4=false`, `steps=[1,2,4]`), each checked against the field's
    /// type, then the whole validated as the file's tables are.
    pub fn with_overrides(&self, sets: &[String]) -> anyhow::Result<Scenario> {
        use toml::Value;
        let Value::Table(mut table) = Value::try_from(self)? else {
            anyhow::bail!("a scenario is a table");
        };
        for set in sets {
            let (key, text) = set
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set {set:?}: give key=value"))?;
            let key = key.trim();
            let Some(old) = table.get(key) else {
                let known: Vec<&str> = table.keys().map(String::as_str).collect();
                anyhow::bail!(
                    "--set {key}: no such scenario field; known: {}",
                    known.join(", ")
                );
            };
            let parsed = toml::from_str::<toml::Table>(&format!("v = {}", text.trim()))
                .ok()
                .and_then(|mut t| t.remove("v"));
            let value = match (old, parsed) {
                (Value::String(_), _) => Value::String(text.to_string()),
                (Value::Float(_), Some(Value::Integer(i))) => Value::Float(i as f64),
                (_, Some(v)) if v.same_type(old) => v,
                _ => anyhow::bail!(
                    "--set {set}: {key} takes type {} (like {old})",
                    old.type_str()
                ),
            };
            if matches!(value, Value::Float(f) if !f.is_finite() || f < 0.0)
                || matches!(value, Value::Integer(i) if i < 0)
            {
                anyhow::bail!("--set {set}: {key} must be a finite number >= 0");
            }
            table.insert(key.to_string(), value);
        }
        let scenario: Scenario = Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("--set: {e}"))?;
        scenario
            .validate()
            .map_err(|e| anyhow::anyhow!("--set: the scenario becomes invalid: {e}"))?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), String> {
        let base = self.base_users();
        if base == 0 {
            return Err("no users in any role".into());
        }
        if self.publishers > 0 && self.subscribers == 0 {
            return Err("publishers need subscribers".into());
        }
        if self.channels == 0 || self.channels > self.publishers.max(1) {
            return Err(format!(
                "channels must be 1..=publishers ({}): every channel needs a publisher",
                self.publishers.max(1)
            ));
        }
        if self.subscribers < self.channels && self.publishers > 0 {
            return Err("every channel needs a subscriber: subscribers >= channels".into());
        }
        if self.task_publishers > 0 && self.group_members == 0 {
            return Err("task_publishers need group_members".into());
        }
        let reliable = self.reliable_senders + self.reliable_receivers;
        if reliable > 0 {
            if self.reliable_senders == 0
                || self.reliable_receivers == 0
                || self.reliable_rate <= 0.0
            {
                return Err(
                    "reliable_senders, reliable_receivers and reliable_rate go together".into(),
                );
            }
            if reliable != self.base_users() || self.shape != Shape::Steady {
                return Err("the reliable roles run alone, in a steady scenario".into());
            }
        }
        if !matches!(self.fault.as_str(), "" | "kill9") {
            return Err(format!("fault {:?} is not \"kill9\"", self.fault));
        }
        if self.direct_users == 1 {
            return Err("direct_users must be 0 or at least 2 (each sends to the next)".into());
        }
        let agents = self.direct_users + self.task_publishers + self.group_members;
        if agents > 0 && self.shape != Shape::Steady {
            return Err("direct and group roles run in steady scenarios only".into());
        }
        match self.shape {
            Shape::Steady if self.duration_s <= 0.0 => Err("duration_s must be > 0".into()),
            Shape::Steps if self.steps.is_empty() || self.step_s <= 0.0 => {
                Err("steps and step_s needed".into())
            }
            Shape::Spike if self.spike_multiplier < 2 || self.spike_s <= 0.0 => {
                Err("spike_multiplier >= 2 and spike_s > 0 needed".into())
            }
            _ => Ok(()),
        }
    }

    /// Users at 1x: the sum of the roles.
    pub fn base_users(&self) -> u32 {
        self.echo_users
            + self.publishers
            + self.subscribers
            + self.churn_users
            + self.direct_users
            + self.task_publishers
            + self.group_members
            + self.reliable_senders
            + self.reliable_receivers
    }

    /// Whether this is the reliable workload (run by [`crate::reliable`], not goose).
    pub fn is_reliable(&self) -> bool {
        self.reliable_senders > 0
    }

    /// Users at the busiest phase.
    pub fn peak_users(&self) -> u32 {
        let top = match self.shape {
            Shape::Steady => 1,
            Shape::Steps => self.steps.iter().copied().max().unwrap_or(1),
            Shape::Spike => self.spike_multiplier,
        };
        self.base_users() * top
    }

    /// The phases, with `scale` applied to every duration (rounded to whole seconds, at least 1:
    /// goose test plans count in seconds).
    pub fn phases(&self, scale: f64) -> Vec<Phase> {
        let secs = |s: f64| (s * scale).round().max(1.0);
        let mut phases = Vec::new();
        let mut t = secs(self.ramp_s);
        let mut push = |name: String, multiplier: u32, secs: f64, t: &mut f64| {
            phases.push(Phase {
                name,
                multiplier,
                start_s: *t,
                end_s: *t + secs,
            });
            *t += secs;
        };
        match self.shape {
            Shape::Steady => push("steady".into(), 1, secs(self.duration_s), &mut t),
            Shape::Steps => {
                for (i, &m) in self.steps.iter().enumerate() {
                    // The first second of each step is the ramp to it.
                    if i > 0 {
                        t += 1.0;
                    }
                    push(format!("step{}x{m}", i + 1), m, secs(self.step_s), &mut t);
                }
            }
            Shape::Spike => {
                push("before".into(), 1, secs(self.before_s), &mut t);
                t += 1.0;
                push(
                    "spike".into(),
                    self.spike_multiplier,
                    secs(self.spike_s),
                    &mut t,
                );
                t += 1.0;
                push("after".into(), 1, secs(self.after_s), &mut t);
            }
        }
        phases
    }

    /// The goose test plan ("users,seconds;..."): ramp, the phases, a drain at the last count
    /// (senders stop for it, so in-flight messages arrive), then a 1 s ramp down to 0. Returns
    /// the plan and the time (s) at which the drain ends.
    pub fn test_plan(&self, scale: f64) -> (String, f64) {
        let base = self.base_users();
        let phases = self.phases(scale);
        let mut steps = vec![format!("{base},{}", phases[0].start_s)];
        let mut previous = 1;
        for phase in &phases {
            if phase.multiplier != previous {
                steps.push(format!("{},1", base * phase.multiplier));
                previous = phase.multiplier;
            }
            steps.push(format!(
                "{},{}",
                base * phase.multiplier,
                phase.end_s - phase.start_s
            ));
        }
        let drain = self.drain_s.round().max(1.0);
        steps.push(format!("{},{drain}", base * previous));
        // Ending at 0 users is what makes goose stop (and run every user's on_stop).
        steps.push("0,1".into());
        let total = phases.last().map_or(0.0, |p| p.end_s) + drain;
        (steps.join(";"), total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_typed_checked_and_validated() {
        let base = parse(DEFAULT_SCENARIOS_TOML)
            .unwrap()
            .remove("baseline")
            .unwrap();
        let sets = |list: &[&str]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };
        let s = base
            .with_overrides(&sets(&["echo_users=500", "publish_rate=2000", "lz4=false"]))
            .unwrap();
        assert_eq!((s.echo_users, s.publish_rate, s.lz4), (500, 2000.0, false));
        assert_eq!(s.subscribers, base.subscribers, "the rest is kept");
        for (bad, why) in [
            ("echo_users", "key=value"),
            ("nope=1", "no such scenario field"),
            ("echo_users=many", "takes type integer"),
            ("echo_users=-5", ">= 0"),
            ("publish_rate=nan", "finite"),
            ("lz4=1", "takes type boolean"),
            ("echo_rate=1e400", "takes type float"),
            ("subscribers=0", "publishers need subscribers"),
            ("echo_users=1.5", "takes type integer"),
            ("channels=0", "channels must be 1..=publishers"),
            ("channels=21", "every channel needs a publisher"),
            ("channels=-1", ">= 0"),
            ("subscribers=10", "subscribers >= channels"),
        ] {
            let e = base.with_overrides(&sets(&[bad])).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn shipped_scenarios_parse_and_have_consistent_plans() {
        let all = parse(DEFAULT_SCENARIOS_TOML).unwrap();
        for name in ["baseline", "stress", "spike", "endurance"] {
            let s = &all[name];
            let phases = s.phases(0.5);
            assert!(!phases.is_empty(), "{name}");
            assert!(
                phases.windows(2).all(|w| w[0].end_s <= w[1].start_s),
                "{name}: ordered phases"
            );
            let (plan, total) = s.test_plan(0.5);
            assert!(plan.split(';').count() > phases.len(), "{name}: {plan}");
            assert!(total > phases.last().unwrap().end_s);
        }
        let spike = all["spike"].phases(1.0);
        assert_eq!(
            spike.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["before", "spike", "after"]
        );
        assert_eq!(spike[1].multiplier, 10);
    }
}
