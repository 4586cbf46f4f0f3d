//! Injected faults: how IMDS misbehaves, per path pattern and per instance, so clients' retries
//! and fallbacks can be tested. A fault adds latency, answers a status instead (500, 503, 403,
//! ...), throttles with 429 beyond a rate like EC2's per-instance limit, resets the connection,
//! or never answers (what a token PUT looks like to a client more hops away than the hop
//! limit). Each fires for the first `count` matching requests, or with a `probability`, or
//! always. From the config file (`[[instance.faults]]`) or at runtime through the control API.
//!
//! The guest API pays for faults only when some are set: one check of an empty list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault as configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// `fault-` and 8 hex digits; assigned when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The request paths it applies to: exact (`/latest/api/token`), or a prefix ending in `*`
    /// (`/latest/meta-data/iam/*`); `*` (the default) is every path.
    #[serde(default = "every_path")]
    pub path: String,
    /// Only requests of this method (`GET`, `PUT`); every method when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Delay before answering (or before the status, reset or silence), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Answer this status (400..=599) with an empty body instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Answer 429 to matching requests beyond this many per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// Reset the connection (TCP RST) instead of answering.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// Never answer; the connection stays open until the client gives up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_answer: bool,
    /// Fire for the first this many matching requests only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Fire with this probability (0..=1) per matching request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

fn every_path() -> String {
    "*".into()
}

/// Most faults set on one instance at once: every matching guest request tries them in order.
pub const MAX_FAULTS: usize = 50;
/// Longest path pattern, in bytes (EC2 paths are far shorter).
pub const MAX_PATH: usize = 1024;
/// Longest fault id, in bytes.
pub const MAX_ID: usize = 64;

/// A fault that cannot be set as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadFault(String);

impl FaultConfig {
    /// Checks that the fault does one thing, with values in range.
    pub fn validate(&self) -> Result<(), BadFault> {
        let bad = |why: &str| Err(BadFault(why.to_owned()));
        let effects = [
            self.status.is_some(),
            self.rate_limit.is_some(),
            self.reset,
            self.no_answer,
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if effects > 1 {
            return bad("a fault does one of: status, rate_limit, reset, no_answer");
        }
        if effects == 0 && self.latency_ms.is_none() {
            return bad("a fault needs latency_ms, status, rate_limit, reset or no_answer");
        }
        if self.status.is_some_and(|s| !(400..=599).contains(&s)) {
            return bad("status must be from 400 to 599");
        }
        if self.rate_limit == Some(0) {
            return bad("rate_limit must be at least 1 request per second");
        }
        if self
            .probability
            .is_some_and(|p| !(0.0..=1.0).contains(&p) || p.is_nan())
        {
            return bad("probability must be from 0 to 1");
        }
        if self.count.is_some() && self.rate_limit.is_some() {
            return bad("a rate_limit applies to every request; it takes no count");
        }
        if !self.path.starts_with('/') && self.path != "*" {
            return bad("path must start with / (or be *)");
        }
        if self.path.len() > MAX_PATH {
            return Err(BadFault(format!("path must be at most {MAX_PATH} bytes")));
        }
        if self
            .id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > MAX_ID)
        {
            return Err(BadFault(format!("a fault id must be 1 to {MAX_ID} bytes")));
        }
        if let Some(method) = &self.method {
            if !matches!(method.as_str(), "GET" | "PUT" | "HEAD" | "POST" | "DELETE") {
                return bad("method must be GET, PUT, HEAD, POST or DELETE");
            }
        }
        Ok(())
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let path_matches = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path,
        };
        path_matches && self.method.as_deref().is_none_or(|m| m == method)
    }
}

/// What an injected fault does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Answer normally (after the delay).
    Answer,
    /// Answer this status with an empty body.
    Status(u16),
    /// Reset the connection.
    Reset,
    /// Never answer.
    NoAnswer,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Wait this long first.
    pub delay: Duration,
    /// Then this.
    pub effect: Effect,
}

/// A fault and its counters.
#[derive(Debug)]
struct Fault {
    config: FaultConfig,
    /// Firings left when counted.
    remaining: AtomicU64,
    /// Times fired.
    fired: AtomicU64,
    /// Rate limit window: second (upper 40 bits) and requests seen in it (lower 24).
    window: AtomicU64,
}

/// A fault as listed: its configuration and how often it fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The fault, with its id.
    pub config: FaultConfig,
    /// How many requests it changed.
    pub fired: u64,
}

/// The faults set on one instance, in the order they are tried: the first that fires decides.
#[derive(Debug, Default)]
pub struct FaultSet {
    faults: Vec<Arc<Fault>>,
}

impl FaultSet {
    /// The set of `configs` (validated), ids assigned where missing.
    pub fn new(configs: impl IntoIterator<Item = FaultConfig>) -> Result<FaultSet, BadFault> {
        let mut set = FaultSet::default();
        for config in configs {
            set = set.with(config)?;
        }
        Ok(set)
    }

    /// This set plus `config` (validated, tried last); the faults already set keep their
    /// counts. An id already in use is refused, and so is a fault past [`MAX_FAULTS`].
    pub fn with(&self, mut config: FaultConfig) -> Result<FaultSet, BadFault> {
        config.validate()?;
        if self.faults.len() >= MAX_FAULTS {
            return Err(BadFault(format!(
                "an instance has at most {MAX_FAULTS} faults at once: clear some first"
            )));
        }
        let id = config.id.get_or_insert_with(new_fault_id).clone();
        if self
            .faults
            .iter()
            .any(|f| f.config.id.as_deref() == Some(&id))
        {
            return Err(BadFault(format!("a fault {id} is already set")));
        }
        let mut faults = self.faults.clone();
        faults.push(Arc::new(Fault {
            remaining: AtomicU64::new(config.count.unwrap_or(u64::MAX)),
            fired: AtomicU64::new(0),
            window: AtomicU64::new(0),
            config,
        }));
        Ok(FaultSet { faults })
    }

    /// This set without the faults `ids` (without any when `ids` is empty); the ids not found.
    pub fn without(&self, ids: &[&str]) -> (FaultSet, Vec<String>) {
        let unknown = ids
            .iter()
            .filter(|id| {
                !self
                    .faults
                    .iter()
                    .any(|f| f.config.id.as_deref() == Some(**id))
            })
            .map(|id| (*id).to_owned())
            .collect();
        let faults = self
            .faults
            .iter()
            .filter(|f| !ids.is_empty() && !ids.contains(&f.config.id.as_deref().unwrap_or("")))
            .cloned()
            .collect();
        (FaultSet { faults }, unknown)
    }

    /// Whether no fault is set.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// The faults with their counts.
    pub fn list(&self) -> Vec<Listed> {
        self.faults
            .iter()
            .map(|f| Listed {
                config: f.config.clone(),
                fired: f.fired.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// What to do with a `method` request for `path` at `now_millis`; `None`: no fault fires.
    pub fn decide(&self, method: &str, path: &str, now_millis: u64) -> Option<Decision> {
        self.faults
            .iter()
            .filter(|f| f.config.matches(method, path))
            .find_map(|f| f.fire(now_millis))
    }
}

impl Fault {
    fn fire(&self, now_millis: u64) -> Option<Decision> {
        let config = &self.config;
        if let Some(limit) = config.rate_limit {
            if self.within_rate(limit, now_millis / 1000) {
                return None;
            }
        }
        if config
            .probability
            .is_some_and(|p| rand::random::<f64>() >= p)
        {
            return None;
        }
        if config.count.is_some() {
            let taken = self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                });
            taken.ok()?;
        }
        self.fired.fetch_add(1, Ordering::Relaxed);
        let effect = match (config.status, config.rate_limit) {
            (Some(status), _) => Effect::Status(status),
            (None, Some(_)) => Effect::Status(429),
            _ if config.reset => Effect::Reset,
            _ if config.no_answer => Effect::NoAnswer,
            _ => Effect::Answer,
        };
        Some(Decision {
            delay: Duration::from_millis(config.latency_ms.unwrap_or(0)),
            effect,
        })
    }

    /// Counts one request in `second`'s window; true while within `limit`.
    fn within_rate(&self, limit: u32, second: u64) -> bool {
        const COUNT_BITS: u32 = 24;
        const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
        let updated = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                let count = match packed >> COUNT_BITS == second {
                    true => (packed & COUNT_MASK).saturating_add(1).min(COUNT_MASK),
                    false => 1,
                };
                Some((second << COUNT_BITS) | count)
            })
            .expect("the update always yields a value");
        let count = match updated >> COUNT_BITS == second {
            true => (updated & COUNT_MASK) + 1,
            false => 1,
        };
        count <= u64::from(limit)
    }
}

/// A new `fault-` id.
fn new_fault_id() -> String {
    let hex: String = rand::random::<[u8; 4]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("fault-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(toml_text: &str) -> FaultSet {
        #[derive(Deserialize)]
        struct File {
            faults: Vec<FaultConfig>,
        }
        FaultSet::new(toml::from_str::<File>(toml_text).unwrap().faults).unwrap()
    }

    #[test]
    fn a_counted_status_fires_that_many_times_on_matching_requests() {
        let faults = set(
            "[[faults]]\npath = \"/latest/api/token\"\nmethod = \"PUT\"\nstatus = 503\ncount = 2\n",
        );
        let token = |m| faults.decide(m, "/latest/api/token", 0);
        assert_eq!(token("GET"), None);
        assert_eq!(token("PUT").unwrap().effect, Effect::Status(503));
        assert_eq!(token("PUT").unwrap().effect, Effect::Status(503));
        assert_eq!(token("PUT"), None);
        assert_eq!(faults.list()[0].fired, 2);
        assert!(faults.list()[0]
            .config
            .id
            .as_ref()
            .unwrap()
            .starts_with("fault-"));
    }

    #[test]
    fn prefixes_latency_and_order() {
        let faults = set(
            "[[faults]]\npath = \"/latest/meta-data/iam/*\"\nreset = true\ncount = 1\n\
             [[faults]]\nlatency_ms = 250\n",
        );
        let iam = faults
            .decide("GET", "/latest/meta-data/iam/info", 0)
            .unwrap();
        assert_eq!(iam.effect, Effect::Reset);
        let next = faults
            .decide("GET", "/latest/meta-data/iam/info", 0)
            .unwrap();
        assert_eq!(next.effect, Effect::Answer);
        assert_eq!(next.delay, Duration::from_millis(250));
    }

    #[test]
    fn a_rate_limit_answers_429_beyond_its_rate_per_second() {
        let faults = set("[[faults]]\nrate_limit = 2\n");
        let at = |ms| faults.decide("GET", "/", ms).map(|d| d.effect);
        assert_eq!(at(1000), None);
        assert_eq!(at(1100), None);
        assert_eq!(at(1200), Some(Effect::Status(429)));
        assert_eq!(at(2000), None, "a new second");
    }

    #[test]
    fn probability_zero_never_fires_and_one_always_does() {
        let never = set("[[faults]]\nstatus = 500\nprobability = 0.0\n");
        let always = set("[[faults]]\nstatus = 500\nprobability = 1.0\n");
        for _ in 0..100 {
            assert_eq!(never.decide("GET", "/", 0), None);
            assert!(always.decide("GET", "/", 0).is_some());
        }
    }

    #[test]
    fn faults_that_do_not_make_sense_are_refused() {
        let check = |text: &str| {
            #[derive(Deserialize)]
            struct File {
                faults: Vec<FaultConfig>,
            }
            let configs = toml::from_str::<File>(text).unwrap().faults;
            FaultSet::new(configs).unwrap_err().to_string()
        };
        assert!(check("[[faults]]\npath = \"/\"\n").contains("needs"));
        assert!(check("[[faults]]\nstatus = 200\n").contains("400 to 599"));
        assert!(check("[[faults]]\nstatus = 500\nreset = true\n").contains("one of"));
        assert!(check("[[faults]]\nstatus = 500\nprobability = 2.0\n").contains("0 to 1"));
        assert!(check("[[faults]]\nstatus = 500\npath = \"latest\"\n").contains("start with /"));
    }

    #[test]
    fn an_instance_holds_a_bounded_number_of_faults_and_clearing_makes_room() {
        let fault = |n: usize| FaultConfig {
            id: Some(format!("fault-{n:08x}")),
            path: "*".into(),
            status: Some(503),
            ..FaultConfig::default()
        };
        let mut faults = FaultSet::default();
        for n in 0..MAX_FAULTS {
            faults = faults.with(fault(n)).unwrap();
        }
        let refused = faults.with(fault(MAX_FAULTS)).unwrap_err().to_string();
        assert!(refused.contains("at most 50 faults"), "{refused}");
        let (fewer, unknown) = faults.without(&["fault-00000000"]);
        assert!(unknown.is_empty());
        assert_eq!(
            fewer.with(fault(MAX_FAULTS)).unwrap().list().len(),
            MAX_FAULTS
        );
    }

    #[test]
    fn long_paths_and_ids_are_refused() {
        let long_path = FaultConfig {
            path: format!("/{}", "a".repeat(MAX_PATH)),
            status: Some(500),
            ..FaultConfig::default()
        };
        assert!(long_path
            .validate()
            .unwrap_err()
            .to_string()
            .contains("1024"));
        let long_id = FaultConfig {
            id: Some("f".repeat(MAX_ID + 1)),
            path: "*".into(),
            status: Some(500),
            ..FaultConfig::default()
        };
        assert!(long_id.validate().unwrap_err().to_string().contains("64"));
    }
}
