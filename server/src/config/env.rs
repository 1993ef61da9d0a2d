//! Environment overrides: `WSEDGE_<SECTION>_<KEY>` sets `<key>` of `[<section>]` (e.g.
//! `WSEDGE_CONNECTION_MAX_MESSAGE_SIZE=65536`). The value is read as a TOML literal (number,
//! boolean, array), else as a string.
//!
//! A name under a known section whose key does not exist is refused (a typo would otherwise be
//! silently ignored); any other `WSEDGE_*` name (a wrapper script's own variable) is logged and
//! ignored. A value of the wrong type is reported as the variable, not as the file.

use super::error::ConfigError;

/// The sections of the config file, as they appear in variable names.
const SECTIONS: [&str; 16] = [
    "server",
    "connection",
    "protocol",
    "limits",
    "tls",
    "auth",
    "groups",
    "presence",
    "store",
    "ack",
    "inbox",
    "dedup",
    "api",
    "history",
    "alerting",
    "log",
];

/// Environment variables of wsedge's that are not config keys.
const NON_KEY_ENV: [&str; 2] = ["WSEDGE_CONFIG", "WSEDGE_LOG"];

/// Which keys (`section.key`) environment variables set, and by which variable.
pub(super) type Overrides = Vec<(String, String)>;

/// Applies the `WSEDGE_<SECTION>_<KEY>` variables in `env` to `table`; `check` tries a table
/// holding one of them alone (the config file's deserializer: unknown keys and wrong types fail).
pub(super) fn apply(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    check: impl Fn(toml::Table) -> Result<(), String>,
) -> Result<Overrides, ConfigError> {
    let mut overrides = Overrides::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("WSEDGE_") else {
            continue;
        };
        if NON_KEY_ENV.contains(&name.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let found = SECTIONS.iter().find_map(|section| {
            let key = rest.strip_prefix(section)?.strip_prefix('_')?;
            Some((*section, key))
        });
        let Some((section, key)) = found else {
            tracing::warn!(
                "ignoring environment variable {name}: not a config override (WSEDGE_<SECTION>_<KEY>, sections: {})",
                SECTIONS.join(", ")
            );
            continue;
        };
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let mut probe = toml::Table::new();
        probe.insert(
            section.into(),
            toml::Value::Table(toml::Table::from_iter([(key.to_string(), value.clone())])),
        );
        if let Err(message) = check(probe) {
            return Err(if message.contains("unknown field") {
                ConfigError::UnknownEnv(name, format!("[{section}] has no key {key:?}"))
            } else {
                ConfigError::InvalidEnv { var: name, message }
            });
        }
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::InvalidEnv {
                var: name.clone(),
                message: format!("the config file's {section} is not a section"),
            })?
            .insert(key.to_string(), value);
        overrides.push((format!("{section}.{key}"), name));
    }
    Ok(overrides)
}

/// Reports a validation error about a key an environment variable set as that variable's.
pub(super) fn attribute(error: ConfigError, overrides: &Overrides) -> ConfigError {
    match error {
        ConfigError::Invalid { key, reason } => {
            match overrides.iter().find(|(set, _)| set == key) {
                Some((_, var)) => ConfigError::InvalidEnv {
                    var: var.clone(),
                    message: format!("{key}: {reason}"),
                },
                None => ConfigError::Invalid { key, reason },
            }
        }
        other => other,
    }
}
