//! Configuration: the built-in default (`config/default.toml`), a user file layered over it one
//! key deep, then `IMDS_*` environment variables and flags (applied by the CLI through
//! [`Overrides`]). Loading reads files only; it binds no sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet::instance::{Instance, InstanceConfig, InstanceError};
use crate::fleet::instance_id::InstanceId;
use crate::fleet::options::{HopLimit, HttpTokens, Switch};
use crate::fleet::state::AddressInUse;

/// The built-in configuration, as `imds print-config` prints it.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("config/default.toml");

/// Everything `imds serve` needs, as read from the layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and connection settings.
    pub server: ServerConfig,
    /// The instance served (single-instance mode).
    pub instance: InstanceConfig,
    /// Fleet mode: the instances served at start, each laid over the built-in default instance
    /// one key deep (as `[instance]` is); more come with `RunInstances`.
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    /// Who may use the control API.
    #[serde(default)]
    pub control: ControlConfig,
}

/// `[control]`: the keys control requests must be signed with (SigV4). Without them the
/// control API listens on loopback addresses only. Its `Debug` never shows the secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// The access key id clients sign with.
    pub access_key_id: Option<String>,
    /// Its secret.
    pub secret_access_key: Option<String>,
    /// Guardrails: IAM JSON policy files (service control policies) evaluated on
    /// `RunInstances` and `ModifyInstanceMetadataOptions`; relative to the config file.
    #[serde(default)]
    pub service_control_policies: Vec<PathBuf>,
}

impl std::fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(redacted)"),
            )
            .field("service_control_policies", &self.service_control_policies)
            .finish()
    }
}

impl ControlConfig {
    /// The keys, when both are set.
    pub fn keys(&self) -> Option<crate::control::ControlKeys> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Some(crate::control::ControlKeys {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
            }),
            _ => None,
        }
    }
}

/// `[server]`: how the guest listener behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to bind.
    pub listen: Vec<SocketAddr>,
    /// Addresses of the control API (EC2 Query API, health); loopback only.
    #[serde(default = "default_control_listen")]
    pub control_listen: Vec<SocketAddr>,
    /// Persistent connections instead of `Connection: close`.
    pub keep_alive: bool,
    /// Fleet mode: one process serves many instances, each caller answered as the instance
    /// owning its address (`[[instances]]`, `RunInstances`); unknown callers are refused.
    #[serde(default)]
    pub fleet: bool,
    /// File whose content keys IMDSv2 tokens; from the state directory, else random per
    /// process, when absent.
    pub token_key_file: Option<PathBuf>,
    /// Directory keeping what must survive restarts in `state.db`: the token key, the identity
    /// signing key and the control plane's changes.
    pub state_dir: Option<PathBuf>,
    /// The store shared by many hosts (`postgres://USER@HOST:PORT/DB`, libpq-style, TLS when
    /// the URL asks for it), or a state directory; replaces `state_dir` when given.
    pub store: Option<crate::store::StoreUrl>,
    /// PEM private key signing the identity document (with `signing_cert_file`).
    pub signing_key_file: Option<PathBuf>,
    /// PEM certificate of `signing_key_file`.
    pub signing_cert_file: Option<PathBuf>,
    /// STS endpoint URL for `credentials = "sts"` (default: the regional endpoint).
    pub sts_endpoint: Option<String>,
    /// File appended with one JSON line per guest request; `-` for stdout.
    pub access_log: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Deadline for a request head, in milliseconds.
    pub header_read_timeout_ms: u64,
    /// Largest request head, in bytes.
    pub max_request_header_bytes: usize,
    /// Time given to in-flight requests at shutdown, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Connections the control listener serves at once (its other limits are the guest
    /// listener's), so that no guest and no idle client takes the operators' slots.
    #[serde(default = "default_control_max_connections")]
    pub control_max_connections: usize,
    /// Host names besides IP literals and `localhost` that requests on loopback addresses may
    /// name in `Host` (others are refused: DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Requests each instance is answered per second (and at most as many at once), unless its
    /// `[instance.throttle]` says otherwise; 0 is unlimited. Beyond it: 429.
    #[serde(default = "default_instance_requests_per_second")]
    pub instance_requests_per_second: u32,
    /// Connections each instance may have open at once, unless its `[instance.throttle]` says
    /// otherwise; 0 is unlimited. Beyond it: 429 and the connection closed.
    #[serde(default = "default_instance_max_connections")]
    pub instance_max_connections: u32,
    /// Hours between automatic session token key rotations (as `imds ctl rotate-keys` does),
    /// counted from the newest key's creation; 0 never rotates on its own.
    #[serde(default)]
    pub token_key_rotation_hours: u32,
}

/// EC2's one published figure for the link-local services (1024 packets per second per network
/// interface to the DNS server), taken as requests: see [`crate::fleet::throttle`].
fn default_instance_requests_per_second() -> u32 {
    1024
}

/// A quarter of the default `max_connections`: four noisy instances cannot take every slot.
fn default_instance_max_connections() -> u32 {
    256
}

fn default_control_max_connections() -> usize {
    128
}

fn default_control_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 1339))]
}

impl ServerConfig {
    /// The key files it names.
    pub fn key_files(&self) -> crate::fleet::keys::KeyFiles {
        crate::fleet::keys::KeyFiles {
            token_key_file: self.token_key_file.clone(),
            signing_key_file: self.signing_key_file.clone(),
            signing_cert_file: self.signing_cert_file.clone(),
        }
    }

    /// Where changes and keys are kept: `store`, else `state_dir`, else nowhere (memory).
    pub fn store_location(&self) -> Result<Option<crate::store::Location>, String> {
        match (&self.store, &self.state_dir) {
            (Some(store), Some(dir)) => {
                let location = crate::store::Location::parse(store.expose())?;
                match &location {
                    crate::store::Location::StateDir(named) if named == dir => Ok(Some(location)),
                    _ => Err(format!(
                        "both a store ({}) and a state directory ({}) are given: keep one (--store or --state-dir)",
                        store,
                        dir.display()
                    )),
                }
            }
            (Some(store), None) => crate::store::Location::parse(store.expose()).map(Some),
            (None, Some(dir)) => Ok(Some(crate::store::Location::StateDir(dir.clone()))),
            (None, None) => Ok(None),
        }
    }

    /// The header read deadline.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The throttle of every instance that sets none of its own.
    pub fn instance_throttle(&self) -> crate::fleet::throttle::ThrottleLimits {
        crate::fleet::throttle::ThrottleLimits {
            requests_per_second: self.instance_requests_per_second,
            max_connections: self.instance_max_connections,
        }
    }
}

/// Values from environment variables and flags, laid over the file (flags win over env; the CLI
/// resolves that before building this).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces `server.listen` when non-empty.
    pub listen: Vec<SocketAddr>,
    /// Replaces `server.control_listen` when non-empty.
    pub control_listen: Vec<SocketAddr>,
    /// Replaces `server.keep_alive`.
    pub keep_alive: Option<bool>,
    /// Replaces `server.fleet`.
    pub fleet: Option<bool>,
    /// Replaces `server.allowed_hosts` when non-empty.
    pub allowed_hosts: Vec<String>,
    /// Replaces `server.token_key_file`.
    pub token_key_file: Option<PathBuf>,
    /// Replaces `server.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// Replaces `server.store`.
    pub store: Option<crate::store::StoreUrl>,
    /// Replaces `server.signing_key_file`.
    pub signing_key_file: Option<PathBuf>,
    /// Replaces `server.signing_cert_file`.
    pub signing_cert_file: Option<PathBuf>,
    /// Replaces `server.sts_endpoint`.
    pub sts_endpoint: Option<String>,
    /// Replaces `server.access_log`.
    pub access_log: Option<PathBuf>,
    /// Replaces `instance.metadata_options.http_tokens`.
    pub http_tokens: Option<HttpTokens>,
    /// Replaces `instance.metadata_options.http_endpoint`.
    pub http_endpoint: Option<Switch>,
    /// Replaces `instance.metadata_options.http_put_response_hop_limit`.
    pub hop_limit: Option<HopLimit>,
    /// Replaces `instance.metadata_options.instance_metadata_tags`.
    pub instance_metadata_tags: Option<Switch>,
}

/// Why a configuration could not be loaded; each names the file and, where known, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or JSON.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key is unknown, missing or has a value of the wrong type or range.
    #[error("{path}: {key}: {reason}")]
    InvalidKey {
        /// The file (or `built-in default`).
        path: PathBuf,
        /// Dotted key, e.g. `instance.metadata_options.http_tokens`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The values do not describe a possible instance.
    #[error("{path}: {source}")]
    Instance {
        /// The file (or `built-in default`).
        path: PathBuf,
        /// The inconsistency.
        source: InstanceError,
    },
    /// An `[[instances]]` entry does not describe a possible instance.
    #[error("{path}: [[instances]] entry {entry} (instance_id = \"{instance}\"): {key}: {reason}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// Which entry, counting from 1.
        entry: usize,
        /// Its instance id.
        instance: String,
        /// The key inside the entry, e.g. `network_interfaces[0].mac`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `[[instances]]` contradict each other.
    #[error("{path}: instances: {reason}")]
    Fleet {
        /// The file (or `built-in default`).
        path: PathBuf,
        /// The contradiction.
        reason: String,
    },
    /// An `[[instances]]` entry names an address another live instance holds (one launched
    /// with `RunInstances`, or served before a reload).
    #[error("{path}: [[instances]] entry {entry} (instance_id = \"{instance}\"): {reason}")]
    AddressInUse {
        /// The file.
        path: PathBuf,
        /// Which `[[instances]]` entry, counting from 1.
        entry: usize,
        /// Its instance id.
        instance: String,
        /// What holds the address.
        reason: String,
    },
    /// The server settings are unusable.
    #[error("{origin}: server.{key}: {reason}")]
    Server {
        /// Where the value came from: the file, `built-in default`, or the command line or
        /// environment when a flag or `IMDS_*` variable set it.
        origin: String,
        /// Key under `server`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A loaded, validated configuration and the instance it describes.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Server settings after every layer.
    pub server: ServerConfig,
    /// The validated instance after every layer (single-instance mode).
    pub instance: Instance,
    /// Fleet mode: the validated instances of `[[instances]]`, with distinct ids and addresses.
    pub instances: Vec<Instance>,
    /// Who may use the control API.
    pub control: ControlConfig,
    /// The file it was read from (or `built-in default`), for errors found after loading.
    pub file: PathBuf,
}

impl Loaded {
    /// The error naming the `[[instances]]` entry of `conflict` (the claimant, or else the
    /// holder, whichever the file describes) and why it cannot be served.
    pub fn address_conflict(&self, conflict: &AddressInUse) -> ConfigError {
        let entry = |id: &InstanceId| {
            self.instances
                .iter()
                .position(|instance| instance.id() == id.as_str())
        };
        let (entry, instance, other) = match (entry(&conflict.claimant), entry(&conflict.holder)) {
            (Some(entry), _) => (entry, &conflict.claimant, &conflict.holder),
            (None, Some(entry)) => (entry, &conflict.holder, &conflict.claimant),
            (None, None) => (0, &conflict.claimant, &conflict.holder),
        };
        ConfigError::AddressInUse {
            path: self.file.clone(),
            entry: entry + 1,
            instance: instance.to_string(),
            reason: format!(
                "address {} is in use by instance {other}: one address, one live instance",
                conflict.address
            ),
        }
    }
}

impl Config {
    /// Reads the built-in default, then `file` over it (if any).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                        path: path.to_owned(),
                        source,
                    })?;
                Config::from_text(path, &text)
            }
            None => Config::layered(Path::new(BUILT_IN), None),
        }
    }

    /// The built-in default with `text` laid over it; `path` names it in errors and decides the
    /// format (JSON when it ends in `.json`, else TOML).
    pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let user = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            parse_json(path, text)?
        } else {
            parse_toml(path, text)?
        };
        Config::layered(path, Some(user))
    }

    fn layered(source: &Path, user: Option<toml::Table>) -> Result<Config, ConfigError> {
        let mut table = parse_toml(Path::new(BUILT_IN), DEFAULT_CONFIG_TOML)?;
        let default_instance = match table.get("instance") {
            Some(toml::Value::Table(instance)) => instance.clone(),
            _ => toml::Table::new(),
        };
        let default_placement = match default_instance.get("placement") {
            Some(toml::Value::Table(placement)) => placement.clone(),
            _ => toml::Table::new(),
        };
        if let Some(user) = user {
            layer(&mut table, user);
        }
        if let Some(toml::Value::Table(instance)) = table.get_mut("instance") {
            partial_placement(instance, &default_placement)
                .map_err(|(key, reason)| invalid(source, &format!("instance.{key}"), reason))?;
        }
        // Each of `[[instances]]` starts from the built-in instance, as `[instance]` does.
        if let Some(toml::Value::Array(instances)) = table.get_mut("instances") {
            for (index, entry) in instances.iter_mut().enumerate() {
                if let toml::Value::Table(own) = entry {
                    let mut full = default_instance.clone();
                    full.extend(std::mem::take(own));
                    partial_placement(&mut full, &default_placement).map_err(|(key, reason)| {
                        invalid(source, &entry_key(&full, index, &key), reason)
                    })?;
                    *own = full;
                }
            }
        }
        let entries = table.get("instances").cloned();
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
            let path = err.path().to_string();
            // `instances[1].mac` names the entry as the reader counts it, with its id.
            let key = match (path.strip_prefix("instances["), &entries) {
                (Some(rest), Some(toml::Value::Array(entries))) => rest
                    .split_once(']')
                    .and_then(|(n, rest)| {
                        let index: usize = n.parse().ok()?;
                        let toml::Value::Table(entry) = entries.get(index)? else {
                            return None;
                        };
                        Some(entry_key(entry, index, rest.trim_start_matches('.')))
                    })
                    .unwrap_or(path),
                _ => path,
            };
            invalid(source, &key, err.into_inner().message().to_owned())
        })
    }

    /// Applies env/flag overrides and validates the result.
    pub fn resolve(
        mut self,
        overrides: &Overrides,
        source: Option<&Path>,
    ) -> Result<Loaded, ConfigError> {
        let path = source.unwrap_or(Path::new(BUILT_IN)).to_owned();
        if !overrides.listen.is_empty() {
            self.server.listen = overrides.listen.clone();
        }
        if !overrides.control_listen.is_empty() {
            self.server.control_listen = overrides.control_listen.clone();
        }
        if !overrides.allowed_hosts.is_empty() {
            self.server.allowed_hosts = overrides.allowed_hosts.clone();
        }
        if let Some(keep_alive) = overrides.keep_alive {
            self.server.keep_alive = keep_alive;
        }
        if let Some(fleet) = overrides.fleet {
            self.server.fleet = fleet;
        }
        let server = &mut self.server;
        for (value, slot) in [
            (&overrides.token_key_file, &mut server.token_key_file),
            (&overrides.state_dir, &mut server.state_dir),
            (&overrides.signing_key_file, &mut server.signing_key_file),
            (&overrides.signing_cert_file, &mut server.signing_cert_file),
            (&overrides.access_log, &mut server.access_log),
        ] {
            if let Some(value) = value {
                *slot = Some(value.clone());
            }
        }
        if let Some(endpoint) = &overrides.sts_endpoint {
            server.sts_endpoint = Some(endpoint.clone());
        }
        if let Some(store) = &overrides.store {
            server.store = Some(store.clone());
        }
        let options = &mut self.instance.metadata_options;
        if let Some(tokens) = overrides.http_tokens {
            options.http_tokens = tokens;
        }
        if let Some(endpoint) = overrides.http_endpoint {
            options.http_endpoint = endpoint;
        }
        if let Some(hops) = overrides.hop_limit {
            options.http_put_response_hop_limit = hops;
        }
        if let Some(tags) = overrides.instance_metadata_tags {
            options.instance_metadata_tags = tags;
        }
        // Policy files are found beside the config file that names them.
        let base = source.and_then(Path::parent).unwrap_or(Path::new("."));
        for policy in &mut self.control.service_control_policies {
            if policy.is_relative() {
                *policy = base.join(&*policy);
            }
        }
        check_server(&self.server, &self.control).map_err(|(key, reason)| {
            let set_here = match key {
                "listen" => !overrides.listen.is_empty(),
                // Also when the guest address a flag gave is the control API's.
                "control_listen" => {
                    !overrides.control_listen.is_empty()
                        || (!overrides.listen.is_empty() && reason.contains("(server.listen)"))
                }
                "allowed_hosts" => !overrides.allowed_hosts.is_empty(),
                "sts_endpoint" => overrides.sts_endpoint.is_some(),
                "signing_key_file" | "signing_cert_file" => {
                    overrides.signing_key_file.is_some() || overrides.signing_cert_file.is_some()
                }
                _ => false,
            };
            ConfigError::Server {
                origin: match set_here {
                    true => "command line or environment".to_owned(),
                    false => path.display().to_string(),
                },
                key,
                reason,
            }
        })?;
        let instance = Instance::new(self.instance).map_err(|source| ConfigError::Instance {
            path: path.clone(),
            source,
        })?;
        let instances = self
            .instances
            .into_iter()
            .enumerate()
            .map(|(index, config)| {
                let id = config.instance_id.clone();
                Instance::new(config).map_err(|source| ConfigError::Entry {
                    path: path.clone(),
                    entry: index + 1,
                    instance: id,
                    key: source.key,
                    reason: source.reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_fleet(&instances).map_err(|reason| ConfigError::Fleet {
            path: path.clone(),
            reason,
        })?;
        Ok(Loaded {
            server: self.server,
            instance,
            instances,
            control: self.control,
            file: path,
        })
    }
}

const BUILT_IN: &str = "built-in default";

fn invalid(source: &Path, key: &str, reason: String) -> ConfigError {
    ConfigError::InvalidKey {
        path: source.to_owned(),
        key: key.to_owned(),
        reason,
    }
}

/// `[[instances]] entry N (instance_id = "...")`, then `key`: an entry as the reader counts
/// them, from 1, and by its id.
fn entry_key(entry: &toml::Table, index: usize, key: &str) -> String {
    let id = entry
        .get("instance_id")
        .and_then(toml::Value::as_str)
        .unwrap_or("?");
    match key.is_empty() {
        true => format!("[[instances]] entry {} (instance_id = \"{id}\")", index + 1),
        false => format!(
            "[[instances]] entry {} (instance_id = \"{id}\"): {key}",
            index + 1
        ),
    }
}

/// A `placement` table written in part keeps the default's other keys, as `metadata_options`
/// does; a zone written without its zone id takes the id derived from the zone (the default's
/// belongs to the default zone). Errs with the key and why when a Local Zone's id is needed.
fn partial_placement(
    instance: &mut toml::Table,
    default: &toml::Table,
) -> Result<(), (String, String)> {
    let Some(toml::Value::Table(given)) = instance.get("placement") else {
        return Ok(());
    };
    let mut merged = default.clone();
    let text = |table: &toml::Table, key: &str| {
        table
            .get(key)
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
    };
    let default_zone = text(default, "availability_zone").unwrap_or_default();
    let zone_moved = text(given, "availability_zone").is_some_and(|z| z != default_zone);
    let region_moved = text(given, "region")
        .is_some_and(|r| Some(r) != crate::fleet::instance::region_of_zone(&default_zone));
    if (zone_moved || region_moved) && !given.contains_key("availability_zone_id") {
        merged.remove("availability_zone_id");
        let zone = given
            .get("availability_zone")
            .or_else(|| default.get("availability_zone"))
            .and_then(toml::Value::as_str)
            .unwrap_or_default();
        let region = given
            .get("region")
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
            .or_else(|| crate::fleet::instance::region_of_zone(zone));
        // A zone of another region than the one given is refused when the instance is
        // validated, saying so: its own region's id stands in until then.
        let derived = region
            .and_then(|r| crate::fleet::instance::derived_zone_id(zone, &r))
            .or_else(|| {
                let own = crate::fleet::instance::region_of_zone(zone)?;
                crate::fleet::instance::derived_zone_id(zone, &own)
            });
        match derived {
            Some(id) => {
                merged.insert("availability_zone_id".into(), id.into());
            }
            None => {
                return Err((
                    "placement.availability_zone_id".into(),
                    format!("is needed for zone `{zone}`: its id cannot be derived from its name (a Local Zone's looks like `usw2-lax1-az1`)"),
                ))
            }
        }
    }
    merged.extend(given.clone());
    instance.insert("placement".into(), toml::Value::Table(merged));
    Ok(())
}

/// `[[instances]]` must not share ids or addresses: a caller's address names one instance.
fn check_fleet(instances: &[Instance]) -> Result<(), String> {
    let mut ids = std::collections::BTreeSet::new();
    let mut owners = std::collections::BTreeMap::new();
    let entry = |id: &str| {
        instances
            .iter()
            .position(|instance| instance.id() == id)
            .map_or(0, |i| i + 1)
    };
    for (index, instance) in instances.iter().enumerate() {
        if !ids.insert(instance.id()) {
            return Err(format!(
                "entries {} and {} both have instance_id = \"{}\": ids must differ",
                entry(instance.id()),
                index + 1,
                instance.id()
            ));
        }
        for interface in &instance.config.network_interfaces {
            let addresses = interface
                .private_ipv4s
                .iter()
                .map(|ip| std::net::IpAddr::V4(*ip))
                .chain(interface.ipv6s.iter().map(|ip| std::net::IpAddr::V6(*ip)));
            for address in addresses {
                if let Some(owner) = owners.insert(address, instance.id()) {
                    return Err(format!(
                        "{address} belongs to both entry {} ({owner}) and entry {} ({}): a caller's address must name one instance",
                        entry(owner),
                        index + 1,
                        instance.id()
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_server(
    server: &ServerConfig,
    control: &ControlConfig,
) -> Result<(), (&'static str, String)> {
    if control.access_key_id.is_some() != control.secret_access_key.is_some() {
        return Err((
            "control",
            "access_key_id and secret_access_key go together".into(),
        ));
    }
    if server.listen.is_empty() {
        return Err(("listen", "at least one address is needed".into()));
    }
    match (&server.signing_key_file, &server.signing_cert_file) {
        (Some(_), None) => {
            return Err((
                "signing_cert_file",
                "is needed with signing_key_file (the certificate of that key)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "signing_key_file",
                "is needed with signing_cert_file (the key of that certificate)".into(),
            ))
        }
        _ => {}
    }
    if let Some(endpoint) = &server.sts_endpoint {
        let scheme_ok = endpoint.starts_with("https://") || endpoint.starts_with("http://");
        if !scheme_ok || endpoint.parse::<http::Uri>().is_err() {
            return Err((
                "sts_endpoint",
                format!("`{endpoint}` is not an http(s) URL such as https://sts.eu-west-1.amazonaws.com"),
            ));
        }
    }
    let open = server.control_listen.iter().find(|a| !a.ip().is_loopback());
    if let (Some(open), None) = (open, control.keys()) {
        return Err((
            "control_listen",
            format!("{open} is not a loopback address: without [control] access_key_id and secret_access_key (which every request must then be signed with) the control API listens on 127.0.0.1 or ::1 only"),
        ));
    }
    if let Some(shared) = server
        .control_listen
        .iter()
        .find(|a| a.port() != 0 && server.listen.contains(a))
    {
        return Err((
            "control_listen",
            format!("{shared} is also a guest address (server.listen); instances must never reach the control API: move one of them (--listen, --control-listen; port 0 picks a free port)"),
        ));
    }
    if server.max_connections == 0 {
        return Err(("max_connections", "must be at least 1".into()));
    }
    if server.control_max_connections == 0 {
        return Err(("control_max_connections", "must be at least 1".into()));
    }
    if let Some(bad) = server.allowed_hosts.iter().find(|name| {
        name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    }) {
        return Err((
            "allowed_hosts",
            format!("\"{bad}\" is not a host name (letters, digits, '-', '.', '_'; no port)"),
        ));
    }
    if server.header_read_timeout_ms == 0 {
        return Err(("header_read_timeout_ms", "must be at least 1".into()));
    }
    if !(8192..=1024 * 1024).contains(&server.max_request_header_bytes) {
        return Err((
            "max_request_header_bytes",
            "must be from 8192 to 1048576".into(),
        ));
    }
    Ok(())
}

fn parse_toml(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|err| ConfigError::Syntax {
            path: path.to_owned(),
            message: err.to_string().trim_end().replace('\n', "\n  "),
        })
}

fn parse_json(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    serde_json::from_str::<toml::Table>(text).map_err(|err| ConfigError::Syntax {
        path: path.to_owned(),
        message: format!("invalid JSON: {err}"),
    })
}

/// Lays `user` over `base`: top-level sections merge key by key; each key's value replaces the
/// default's whole (a table or list written by the user is taken as written).
fn layer(base: &mut toml::Table, user: toml::Table) {
    for (section, value) in user {
        match (base.get_mut(&section), value) {
            (Some(toml::Value::Table(base_section)), toml::Value::Table(user_section)) => {
                base_section.extend(user_section);
            }
            (_, value) => {
                base.insert(section, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_config_debug_never_shows_the_secret() {
        let control = ControlConfig {
            access_key_id: Some("AKIAIMDSCONTROL00001".into()),
            secret_access_key: Some("very-secret-value".into()),
            service_control_policies: Vec::new(),
        };
        let shown = format!("{control:?}");
        assert!(shown.contains("AKIAIMDSCONTROL00001"), "{shown}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("(redacted)"), "{shown}");
    }

    #[test]
    fn a_loaded_configuration_never_shows_the_store_password() {
        let overrides = Overrides {
            store: Some("postgres://imds:pw-e6f1c2@db.example/imds".parse().unwrap()),
            ..Overrides::default()
        };
        let loaded = Config::load(None)
            .unwrap()
            .resolve(&overrides, None)
            .unwrap();
        for shown in [format!("{loaded:?}"), format!("{overrides:?}")] {
            assert!(shown.contains("postgres://imds@db.example/imds"), "{shown}");
            assert!(!shown.contains("pw-e6f1c2"), "{shown}");
        }
    }
    use std::io::Write;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, path)
    }

    #[test]
    fn built_in_default_is_a_valid_instance() {
        let loaded = Config::load(None)
            .unwrap()
            .resolve(&Overrides::default(), None)
            .unwrap();
        assert_eq!(loaded.instance.region, "us-east-1");
        assert_eq!(
            loaded.instance.primary_interface().local_hostname,
            "ip-10-0-21-74.ec2.internal"
        );
        assert!(loaded.instance.iam.is_some());
        assert!(loaded.instance.user_data.is_some());
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let (_dir, path) = write(
            "i.toml",
            "[instance]\ninstance_type = \"c5.xlarge\"\niam = {}\n",
        );
        let loaded = Config::load(Some(&path))
            .unwrap()
            .resolve(&Overrides::default(), Some(&path))
            .unwrap();
        assert_eq!(loaded.instance.config.instance_type, "c5.xlarge");
        assert_eq!(loaded.instance.id(), "i-0b4f7d2c9a1e83f56");
        assert!(loaded.instance.iam.is_none());
    }

    #[test]
    fn unknown_keys_name_file_and_key() {
        let (_dir, path) = write(
            "i.toml",
            "[instance.placement]\navailability_zone = \"us-east-1b\"\nzone = \"x\"\n",
        );
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("i.toml"), "{err}");
        assert!(err.contains("instance.placement"), "{err}");
        assert!(err.contains("unknown field `zone`"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_reason() {
        let (_dir, path) = write(
            "i.toml",
            "[instance.metadata_options]\nhttp_tokens = \"sometimes\"\n",
        );
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("instance.metadata_options.http_tokens"),
            "{err}"
        );
        assert!(err.contains("sometimes"), "{err}");

        let (_dir, path) = write(
            "i.toml",
            "[instance.metadata_options]\nhttp_put_response_hop_limit = 65\n",
        );
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("http_put_response_hop_limit") && err.contains("1 to 64"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let (_dir, path) = write("i.toml", "[instance]\ninstance_type = \n");
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("i.toml") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn inconsistent_instances_are_refused_at_load() {
        let (_dir, path) = write(
            "i.json",
            r#"{"instance": {"network_interfaces": [{"mac": "0e:00:00:00:00:01", "interface_id": "eni-0123456789abcdef0",
               "subnet_id": "subnet-0123456789abcdef0", "subnet_ipv4_cidr_block": "10.0.0.0/24", "vpc_id": "vpc-0123456789abcdef0",
               "vpc_ipv4_cidr_blocks": ["10.0.0.0/16"], "private_ipv4s": ["10.0.1.5"],
               "security_groups": [{"name": "default", "id": "sg-0123456789abcdef0"}]}]}}"#,
        );
        let err = Config::load(Some(&path))
            .unwrap()
            .resolve(&Overrides::default(), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains("network_interfaces[0].private_ipv4s"), "{err}");
        assert!(
            err.contains("10.0.1.5 is not inside the subnet 10.0.0.0/24"),
            "{err}"
        );
    }

    #[test]
    fn a_partial_placement_keeps_the_default_keys_and_derives_the_zone_id() {
        let load = |text: &str| {
            let (_dir, path) = write("i.toml", text);
            Config::load(Some(&path)).and_then(|c| c.resolve(&Overrides::default(), Some(&path)))
        };
        let loaded = load("[instance.placement]\ngroup_name = \"web\"\n").unwrap();
        let p = &loaded.instance.config.placement;
        assert_eq!(
            (
                p.availability_zone.as_str(),
                p.availability_zone_id.as_str()
            ),
            ("us-east-1a", "use1-az4")
        );
        assert_eq!(p.group_name.as_deref(), Some("web"));
        let loaded = load("[instance.placement]\navailability_zone = \"eu-west-1c\"\n").unwrap();
        assert_eq!(
            loaded.instance.config.placement.availability_zone_id,
            "euw1-az3"
        );
        assert_eq!(loaded.instance.region, "eu-west-1");
        // A zone id left over from another region contradicts the zone.
        let err = load("[instance.placement]\navailability_zone = \"eu-west-1a\"\navailability_zone_id = \"use1-az4\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`use1-az4` is not a zone id of eu-west-1"),
            "{err}"
        );
        // A zone and a region that contradict each other.
        let err = load(
            "[instance.placement]\navailability_zone = \"eu-west-1a\"\nregion = \"us-east-1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a zone of region"), "{err}");
        // A Local Zone's id cannot be derived: asked for by name.
        let err = load("[instance.placement]\navailability_zone = \"us-west-2-lax-1a\"\nregion = \"us-west-2\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("instance.placement.availability_zone_id: is needed"),
            "{err}"
        );
    }

    #[test]
    fn a_clash_a_flag_makes_is_not_blamed_on_the_built_in_default() {
        let overrides = Overrides {
            listen: vec!["127.0.0.1:1339".parse().unwrap()],
            ..Overrides::default()
        };
        let err = Config::load(None)
            .unwrap()
            .resolve(&overrides, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("command line or environment: server.control_listen: 127.0.0.1:1339 is also a guest address"),
            "{err}"
        );
        assert!(err.contains("--control-listen"), "{err}");
    }

    #[test]
    fn overrides_beat_the_file() {
        let (_dir, path) = write(
            "i.toml",
            "[instance.metadata_options]\nhttp_tokens = \"optional\"\n",
        );
        let overrides = Overrides {
            http_tokens: Some(HttpTokens::Required),
            keep_alive: Some(true),
            ..Overrides::default()
        };
        let loaded = Config::load(Some(&path))
            .unwrap()
            .resolve(&overrides, Some(&path))
            .unwrap();
        assert_eq!(loaded.instance.options().http_tokens, HttpTokens::Required);
        assert!(loaded.server.keep_alive);
    }
}
