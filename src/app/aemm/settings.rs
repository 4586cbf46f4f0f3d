//! AEMM's configuration layers, by AEMM's key names (`server.port`, `spot.action`,
//! `metadata.values.instance-id`, ...): flag > environment (`AEMM_` + the key upper-cased with
//! `.` and `-` as `_`) > JSON config file > defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::AemmError;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// An `AEMM_*` variable.
    Env(String),
    /// The config file.
    File(PathBuf),
    /// AEMM's own default (see [`super::defaults`]).
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Default => f.write_str("AEMM defaults"),
        }
    }
}

/// The keys AEMM reads besides the metadata, dynamic and user data values.
pub const KEYS: &[&str] = &[
    "server.hostname",
    "server.port",
    "mock-delay-sec",
    "mock-trigger-time",
    "mock-ip-count",
    "imdsv2",
    "rebalance-delay-sec",
    "rebalance-trigger-time",
    "asg-termination-delay-sec",
    "asg-termination-trigger-time",
    "save-config-to-file",
    "watch-config-file",
    "spot.action",
    "spot.time",
    "spot.rebalance-rec-time",
    "events.code",
    "events.state",
    "events.not-before",
    "events.not-after",
    "events.not-before-deadline",
];

/// Prefixes of the keys whose names are open-ended (`metadata.values.instance-id`).
const VALUE_PREFIXES: &[&str] = &["metadata.values.", "dynamic.values.", "userdata.values."];

/// Every value, by key, from the highest layer that has it.
#[derive(Debug, Default)]
pub struct Settings {
    values: BTreeMap<String, (String, Origin)>,
}

impl Settings {
    /// The layers: `flags`, then `env` (a snapshot of the environment), then the config file.
    pub fn gather(
        flags: Vec<(&'static str, String)>,
        env: &BTreeMap<String, String>,
        file: Option<&Path>,
    ) -> Result<Settings, AemmError> {
        let mut settings = Settings::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                AemmError(format!("cannot read config file {}: {e}", path.display()))
            })?;
            settings = Settings::from_file_text(path, &text)?;
        }
        for key in KEYS {
            let name = env_name(key);
            if let Some(value) = env.get(&name) {
                settings
                    .values
                    .insert((*key).to_owned(), (value.clone(), Origin::Env(name)));
            }
        }
        for prefix in VALUE_PREFIXES {
            let env_prefix = env_name(prefix);
            for (name, value) in env.range(env_prefix.clone()..) {
                let Some(rest) = name.strip_prefix(&env_prefix) else {
                    break;
                };
                let key = format!("{prefix}{}", rest.to_ascii_lowercase().replace('_', "-"));
                settings
                    .values
                    .insert(key, (value.clone(), Origin::Env(name.clone())));
            }
        }
        for (key, value) in flags {
            settings
                .values
                .insert(key.to_owned(), (value, Origin::Flag));
        }
        Ok(settings)
    }

    /// The settings of a config file with `text` (JSON) only.
    pub fn from_file_text(path: &Path, text: &str) -> Result<Settings, AemmError> {
        let json: Value = serde_json::from_str(text)
            .map_err(|e| AemmError(format!("config file {}: not JSON: {e}", path.display())))?;
        let mut flat = BTreeMap::new();
        flatten("", &json, &mut flat);
        let values = flat
            .into_iter()
            .map(|(key, value)| (key, (value, Origin::File(path.to_owned()))))
            .collect();
        Ok(Settings { values })
    }

    /// The value of `key` and where it came from.
    pub fn get(&self, key: &str) -> Option<(&str, &Origin)> {
        self.values.get(key).map(|(v, o)| (v.as_str(), o))
    }

    /// The values under `prefix` (e.g. `metadata.values.`), by the rest of their key.
    pub fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a Origin)> + 'a {
        self.values
            .range(prefix.to_owned()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(move |(key, (value, origin))| (&key[prefix.len()..], value.as_str(), origin))
    }

    /// Every value as nested JSON, as `-s` saves it.
    pub fn to_json(&self) -> Value {
        let mut root = serde_json::Map::new();
        for (key, (value, _)) in &self.values {
            let mut parts: Vec<&str> = Vec::new();
            let mut rest = key.as_str();
            for prefix in VALUE_PREFIXES {
                if let Some(tail) = key.strip_prefix(prefix) {
                    parts = prefix.trim_end_matches('.').split('.').collect();
                    rest = tail;
                }
            }
            if parts.is_empty() {
                parts = key.split('.').collect();
                rest = parts.pop().unwrap_or_default();
            }
            let mut node = &mut root;
            for part in parts {
                node = node
                    .entry(part)
                    .or_insert_with(|| Value::Object(Default::default()))
                    .as_object_mut()
                    .expect("only objects are made here");
            }
            node.insert(rest.to_owned(), Value::String(value.clone()));
        }
        Value::Object(root)
    }
}

/// `AEMM_` and `key` upper-cased with `.` and `-` as `_`.
pub fn env_name(key: &str) -> String {
    format!("AEMM_{}", key.to_ascii_uppercase().replace(['.', '-'], "_"))
}

/// Scalars of `json` by dotted key; objects nest, other values are skipped.
fn flatten(prefix: &str, json: &Value, out: &mut BTreeMap<String, String>) {
    match json {
        Value::Object(map) => {
            for (key, value) in map {
                let key = match prefix.is_empty() {
                    true => key.clone(),
                    false => format!("{prefix}.{key}"),
                };
                flatten(&key, value, out);
            }
        }
        Value::String(text) => {
            out.insert(prefix.to_owned(), text.clone());
        }
        Value::Number(number) => {
            out.insert(prefix.to_owned(), number.to_string());
        }
        Value::Bool(flag) => {
            out.insert(prefix.to_owned(), flag.to_string());
        }
        Value::Null | Value::Array(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aemm.json");
        std::fs::write(
            &file,
            r#"{"spot": {"action": "stop", "time": "2030-01-01T00:00:00Z"},
                "server": {"port": 1400, "hostname": "127.0.0.1"},
                "metadata": {"values": {"instance-id": "i-1234567890abcdef0", "mac": "0e:00:00:00:00:01"}}}"#,
        )
        .unwrap();
        let env = BTreeMap::from([
            ("AEMM_SPOT_ACTION".to_owned(), "hibernate".to_owned()),
            ("AEMM_SERVER_PORT".to_owned(), "1500".to_owned()),
            (
                "AEMM_METADATA_VALUES_INSTANCE_ID".to_owned(),
                "i-0fedcba9876543210".to_owned(),
            ),
            ("AEMM_SPOT_ITN_ACTION".to_owned(), "ignored".to_owned()),
        ]);
        let flags = vec![("server.port", "1600".to_owned())];
        let settings = Settings::gather(flags, &env, Some(&file)).unwrap();
        assert_eq!(settings.get("server.port").unwrap().0, "1600");
        assert_eq!(settings.get("spot.action").unwrap().0, "hibernate");
        assert_eq!(
            settings.get("spot.action").unwrap().1,
            &Origin::Env("AEMM_SPOT_ACTION".into())
        );
        assert_eq!(settings.get("spot.time").unwrap().0, "2030-01-01T00:00:00Z");
        assert_eq!(settings.get("server.hostname").unwrap().0, "127.0.0.1");
        let values: Vec<_> = settings
            .under("metadata.values.")
            .map(|(k, v, _)| (k, v))
            .collect();
        assert_eq!(
            values,
            [
                ("instance-id", "i-0fedcba9876543210"),
                ("mac", "0e:00:00:00:00:01")
            ]
        );
        let saved = settings.to_json();
        assert_eq!(saved["server"]["port"], "1600");
        assert_eq!(
            saved["metadata"]["values"]["instance-id"],
            "i-0fedcba9876543210"
        );
    }

    #[test]
    fn env_names_follow_the_key() {
        assert_eq!(
            env_name("spot.rebalance-rec-time"),
            "AEMM_SPOT_REBALANCE_REC_TIME"
        );
        assert_eq!(env_name("mock-ip-count"), "AEMM_MOCK_IP_COUNT");
    }
}
