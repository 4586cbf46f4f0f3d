//! imds: an EC2-compatible Instance Metadata Service.
//!
//! Two parts around one domain core. The **guest API** ([`guest_api`]) is what instances see:
//! `GET /<version>/meta-data/...`, `/dynamic/...`, `/user-data` and `PUT /latest/api/token`;
//! it is the hot path and changes no state. The **core** is plain data and pure functions: the
//! instance model ([`instance`], [`options`]), the metadata tree with bodies prebuilt per
//! instance ([`metadata`]), sealed stateless session tokens ([`token`]), rotating credentials
//! per delivery (IMDSv1/IMDSv2, [`credentials`]), the signed identity document
//! ([`identity`]), and what EC2 announces as a schedule ([`events`]: spot interruptions,
//! rebalance, maintenance, lifecycle states). Injected [`faults`] make the guest API misbehave
//! on purpose. The **control API** ([`control_api`]) changes a running instance the EC2
//! way; its changes ([`changes`]) are layered over the config file and, with a state directory,
//! kept in an embedded database ([`store`]) with the keys. The **edges** load configuration
//! ([`config`], or amazon-ec2-metadata-mock's flags, environment and file: [`aemm`]) and keys
//! ([`keys`]: files or the store), parse the command line ([`cli`]), fetch real role
//! credentials ([`sts`]), and
//! run the service ([`serve`]: start, SIGHUP reload, stop) on sockets ([`server`], [`net`],
//! [`link_local`]), optionally writing an access log ([`access_log`]: a JSON line per request,
//! naming the local processes that still call IMDSv1).
//!
//! A guest GET flows: accept → pick the caller's [`state::Snapshot`] (lock-free) → apply its
//! options (endpoint, token rule) → parse the path ([`metadata::path`]) → look it up in the
//! snapshot's prebuilt tree for the request's time (one tree per moment the events change) →
//! write precomputed bytes. Changing an instance builds a new snapshot and swaps it in whole.
//! Time-dependent answers (credentials, events) are derived from the clock ([`clock`]) at
//! request time, never rebuilt per request.

pub mod access_log;
pub mod aemm;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control_api;
pub mod credentials;
pub mod ctl;
pub mod events;
pub mod faults;
pub mod fuzzing;
pub mod guest_api;
pub mod identity;
pub mod instance;
pub mod keys;
pub mod link_local;
pub mod log_limit;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod options;
pub mod policy;
pub mod secret;
pub mod serve;
pub mod server;
pub mod state;
pub mod store;
pub mod sts;
pub mod token;

use std::sync::Arc;

pub use crate::config::{Config, Loaded, Overrides};
pub use crate::guest_api::GuestApi;
pub use crate::server::ServerSettings;

/// A ready-to-serve guest API and its connection settings, built from a loaded configuration.
#[derive(Debug)]
pub struct App {
    /// The request handler.
    pub api: Arc<GuestApi>,
    /// The instances it serves, for swapping in changes.
    pub state: Arc<state::State>,
    /// Builds the snapshots to swap in.
    pub snapshots: Arc<state::SnapshotBuilder>,
    /// The control surface.
    pub control: Arc<control_api::ControlApi>,
    /// How guest connections are served.
    pub settings: ServerSettings,
    /// How control connections are served.
    pub control_settings: ServerSettings,
    /// The `Host` names loopback connections accept, for both listeners.
    pub hosts: Arc<server::HostGuard>,
}

impl App {
    /// Builds the app for `loaded` with `keys`, reading time from `clock`, keeping control
    /// changes where `persisted` says (the instance is served with `persisted`'s changes over
    /// it), logging requests to `access_log` if given. With STS role credentials configured or
    /// an access log, starts fetching or writing (so it must run within a Tokio runtime).
    pub fn new(
        loaded: Loaded,
        keys: &keys::Keys,
        clock: Arc<dyn clock::Clock>,
        persisted: control_api::Persisted,
        access_log: Option<access_log::Destination>,
    ) -> App {
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
        let snapshots = Arc::new(state::SnapshotBuilder::new(
            keys.clone(),
            clock.clone(),
            server.sts_endpoint.clone(),
        ));
        let instance = persisted.changes.layered(loaded.instance);
        let state = Arc::new(state::State::single(snapshots.build(instance)));
        let tokens = token::TokenSealer::new(&keys.secret);
        let metrics = Arc::new(metrics::Metrics::default());
        let access_log = access_log.map(|log| access_log::AccessLog::start(log, metrics.clone()));
        let control = Arc::new(control_api::ControlApi::new(
            state.clone(),
            snapshots.clone(),
            clock.clone(),
            metrics.clone(),
            loaded.control.keys(),
            persisted,
        ));
        App {
            api: Arc::new(GuestApi::new(
                state.clone(),
                tokens,
                clock,
                !settings.keep_alive,
                metrics,
                access_log,
            )),
            state,
            snapshots,
            control,
            settings,
            control_settings,
            hosts,
        }
    }
}
