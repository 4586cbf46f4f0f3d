//! imds: an EC2-compatible Instance Metadata Service.
//!
//! Two HTTP surfaces around one domain core, each folder one part:
//!
//! - [`guest`]: what instances see, `GET /<version>/meta-data/...`, `/dynamic/...`,
//!   `/user-data` and `PUT /latest/api/token`. The hot path; it changes no state but counters
//!   and each instance's throttle ([`fleet::throttle`]: 429 beyond its budget). Optionally
//!   writes an access log ([`guest::access_log`]) naming the local processes that still call
//!   IMDSv1.
//! - [`control`]: what operators use, the EC2 Query API subset the AWS CLI and boto3 speak
//!   (instances and their launch, states, options, tags, roles, events, faults, VPCs and key
//!   pairs), guardrail policies ([`control::policy`]), key rotation, CloudWatch's
//!   `MetadataNoToken` API, `/metrics`, `/healthz` and the web console at `/console`.
//! - [`fleet`]: the domain core, plain data and pure functions: the instance model and its
//!   lifecycle, the metadata tree prebuilt per instance, sealed stateless tokens, credentials
//!   (generated, or from STS), the signed identity document, event schedules, faults, the
//!   network registry, and the fleet index of instance slots, each swapped whole
//!   ([`fleet::state`]).
//! - [`store`]: the storage boundary that keeps the fleet, control changes, keys and the
//!   token-less history: SQLite in a state directory (`--state-dir`) for one host, or one
//!   PostgreSQL database shared by many (`--store postgres://...`), each row stamped with a
//!   revision. The control plane learns other hosts' changes from it (`control::sync`); guests
//!   never wait on it.
//! - [`app`]: the edges, configuration (and AEMM's), the command line and `imds ctl`, `imds
//!   serve` (start, SIGHUP reload, stop), the link-local addresses.
//!
//! - `testing` (cargo feature `testing`): an in-process imds for Rust tests, in one line.
//!
//! Shared by both surfaces: [`server`] (connections, limits, deadlines, drain, the browser
//! guard, hop-limited sockets), [`metrics`], the injected [`clock`] and [`log_limit`].
//!
//! A guest GET flows: accept → find the caller's instance by its address in the fleet index
//! (single-instance mode: the only one) → its [`fleet::state::Snapshot`] (lock-free) → apply
//! its options (endpoint, token rule) → parse the path ([`fleet::metadata::path`]) → look it up
//! in the snapshot's prebuilt tree for the request's time (one tree per moment the events
//! change) → write precomputed bytes. Changing an instance builds a new snapshot and swaps it in
//! whole. Time-dependent answers (credentials, events) are derived from the clock at request
//! time, never rebuilt per request.
//!
//! Each invariant has one owner. "One live instance per address": the fleet index
//! ([`fleet::state`]), from which guests are answered and which refuses a second owner. The
//! instances, their addresses, the network registry and the `ClientToken`s: the control
//! plane's inventory. The account's defaults, guardrail policies and key generations: its
//! account. What the control plane changed on one instance: that instance's slot. Changes take
//! the account's lock before instances' locks, an order the compiler keeps
//! ([`fleet::lock_order`]), and are made durable before they are acknowledged.

pub mod app;
pub mod clock;
pub mod control;
pub mod fleet;
pub mod fuzzing;
pub mod guest;
pub mod id_map;
pub mod log_limit;
pub mod metrics;
pub mod server;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

pub use crate::app::config::{Config, Loaded, Overrides};
pub use crate::guest::GuestApi;
pub use crate::server::ServerSettings;

/// A ready-to-serve guest API and its connection settings, built from a loaded configuration.
#[derive(Debug)]
pub struct App {
    /// The request handler.
    pub api: Arc<GuestApi>,
    /// The instances it serves, for swapping in changes.
    pub state: Arc<fleet::state::State>,
    /// Builds the snapshots to swap in.
    pub snapshots: Arc<fleet::state::SnapshotBuilder>,
    /// The control surface.
    pub control: Arc<control::ControlApi>,
    /// How guest connections are served.
    pub settings: ServerSettings,
    /// How control connections are served.
    pub control_settings: ServerSettings,
    /// The `Host` names loopback connections accept, for both listeners.
    pub hosts: Arc<server::HostGuard>,
}

/// The instances `persisted` says were launched with `RunInstances` and are still visible at
/// `now` (clock milliseconds); a stored one that no longer validates is skipped with an error.
fn launched(persisted: &control::Persisted, now: u64) -> Vec<fleet::instance::Instance> {
    persisted
        .launched
        .iter()
        .filter(|config| {
            let lifecycle = persisted.changes_of(&config.instance_id).lifecycle;
            !lifecycle.is_some_and(|l| l.is_gone(now))
        })
        .filter_map(|config| match fleet::instance::Instance::new(config.clone()) {
            Ok(instance) => Some(instance),
            Err(error) => {
                tracing::error!(instance = config.instance_id, %error, "a stored instance is not valid; left out");
                None
            }
        })
        .collect()
}

impl App {
    /// Builds the app for `loaded` with `keys`, reading time from `clock`, keeping control
    /// changes where `persisted` says (the instance is served with `persisted`'s changes over
    /// it), logging requests to `access_log` if given. With STS role credentials configured or
    /// an access log, starts fetching or writing (so it must run within a Tokio runtime).
    /// Refused, naming the file's entry, when a configured instance claims an address a live
    /// launched instance holds.
    pub fn new(
        loaded: Loaded,
        keys: &fleet::keys::Keys,
        clock: Arc<dyn clock::Clock>,
        persisted: control::Persisted,
        access_log: Option<guest::access_log::Destination>,
    ) -> Result<App, app::config::ConfigError> {
        let server = &loaded.server;
        let settings = ServerSettings {
            keep_alive: server.keep_alive,
            max_connections: server.max_connections,
            header_read_timeout: server.header_read_timeout(),
            max_request_header_bytes: server.max_request_header_bytes,
            shutdown_grace: server.shutdown_grace(),
        };
        let control_settings = ServerSettings {
            keep_alive: true,
            max_connections: server.control_max_connections,
            ..settings
        };
        let hosts = Arc::new(server::HostGuard::new(&server.allowed_hosts));
        let throttle = server.instance_throttle();
        let snapshots = Arc::new(fleet::state::SnapshotBuilder::new(
            keys.clone(),
            clock.clone(),
            server.sts_endpoint.clone(),
        ));
        let fleet_mode = server.fleet;
        let instances = match fleet_mode {
            true => {
                let mut instances = loaded.instances.clone();
                instances.extend(launched(&persisted, clock.now_millis()));
                instances
            }
            false => vec![loaded.instance.clone()],
        };
        let changes: Vec<_> = instances
            .iter()
            .map(|instance| persisted.changes_of(instance.id()))
            .collect();
        let metrics = Arc::new(metrics::Metrics::default());
        let layered = instances
            .into_iter()
            .zip(&changes)
            .map(|(instance, changes)| {
                changes.log_shadowed(&instance);
                let layered = changes.layered(instance).logged();
                metrics.changes_skipped(&layered.skipped);
                layered.instance
            })
            .collect();
        let slots: Vec<_> = snapshots
            .build_all(layered)
            .into_iter()
            .zip(changes)
            .map(|(snapshot, changes)| {
                let revision = persisted.revision_of(snapshot.instance.id());
                fleet::state::InstanceSlot::stored(snapshot, changes, revision)
            })
            .collect();
        let state = Arc::new(match fleet_mode {
            true => fleet::state::State::fleet(slots)
                .map_err(|conflict| loaded.address_conflict(&conflict))?,
            false => {
                fleet::state::State::single_slot(slots.into_iter().next().expect("one instance"))
            }
        });
        let tokens = Arc::new(fleet::token::TokenSealer::new(&keys.secret));
        let access_log =
            access_log.map(|log| guest::access_log::AccessLog::start(log, metrics.clone()));
        let control = Arc::new(control::ControlApi::new(
            state.clone(),
            snapshots.clone(),
            clock.clone(),
            metrics.clone(),
            loaded.control.keys(),
            persisted,
            app::config::Config::load(None)
                .expect("the built-in configuration is valid")
                .instance,
            tokens.clone(),
            keys.token_generations.clone(),
        ));
        control.set_caller_lookup(access_log.is_some());
        Ok(App {
            api: Arc::new(
                GuestApi::new(
                    state.clone(),
                    tokens,
                    clock,
                    !settings.keep_alive,
                    metrics,
                    access_log,
                )
                .with_throttle_defaults(throttle),
            ),
            state,
            snapshots,
            control,
            settings,
            control_settings,
            hosts,
        })
    }
}
