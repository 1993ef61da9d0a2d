//! `[alerting]` and `[[alerts]]`: where alerts are posted, the memory budget, and the rules
//! (the shipped ones, unless `default_rules = false`, plus or replaced by name by `[[alerts]]`).
//! `[log]`: the log's format.

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use crate::alerts::webhook::Target;
use crate::alerts::{default_rules, Rule, RuleSection};

/// Default `alerting.memory_budget_bytes`: resident memory above it fires `MemoryOverBudget`.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 4 << 30;
/// Most rules accepted (each is evaluated every second).
pub const MAX_RULES: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingSection {
    /// `http://host:port/path` to POST alert transitions to; empty: none.
    pub webhook_url: String,
    pub memory_budget_bytes: u64,
    /// Whether the shipped rules apply.
    pub default_rules: bool,
}

impl Default for AlertingSection {
    fn default() -> Self {
        AlertingSection {
            webhook_url: String::new(),
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            default_rules: true,
        }
    }
}

/// `[alerting]` and the rules, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertingConfig {
    pub webhook: Option<Target>,
    pub memory_budget_bytes: u64,
    pub rules: Vec<Rule>,
}

impl AlertingSection {
    pub(super) fn validate(&self, extra: &[RuleSection]) -> Result<AlertingConfig, ConfigError> {
        let webhook = match self.webhook_url.as_str() {
            "" => None,
            url => Some(Target::parse(url).map_err(|e| invalid("alerting.webhook_url", e))?),
        };
        let mut sections = match self.default_rules {
            true => default_rules(self.memory_budget_bytes),
            false => Vec::new(),
        };
        for rule in extra {
            sections.retain(|r| r.name != rule.name);
            sections.push(rule.clone());
        }
        if sections.len() > MAX_RULES {
            return Err(invalid("alerts", format!("more than {MAX_RULES} rules")));
        }
        let rules = sections
            .iter()
            .map(|s| s.validate().map_err(|e| invalid("alerts", e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AlertingConfig {
            webhook,
            memory_budget_bytes: self.memory_budget_bytes,
            rules,
        })
    }
}

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "text".into(),
        }
    }
}

impl LogSection {
    pub fn validate(&self) -> Result<LogFormat, ConfigError> {
        match self.format.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(invalid(
                "log.format",
                format!("{other:?} is not \"text\" or \"json\""),
            )),
        }
    }
}
