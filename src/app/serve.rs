//! `imds serve` from start to stop: open the state directory's store, bind the listeners (and
//! the link-local addresses), print them, serve; on SIGHUP reopen the access log, reload the
//! config file, layer the control plane's changes over it and swap the new instance in; after
//! either a reload or a control change, open or close the link-local IPv6 endpoint as
//! `HttpProtocolIpv6` now says; on SIGINT/SIGTERM drain and stop (the access log is flushed as
//! the runtime ends).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::app::cli::ServeArgs;
use crate::app::config::{Config, ConfigError, Loaded, Overrides, ServerConfig};
use crate::app::link_local::{self, LinkLocal, LinkLocalError};
use crate::clock::{Clock, SystemClock};
use crate::control::policy::PolicySet;
use crate::control::Persisted;
use crate::fleet::keys::{Keys, KeysError};
use crate::guest::access_log::{AccessLogError, Destination};
use crate::guest::GuestApi;
use crate::server::{Accepting, Server};
use crate::store::{Changed, Location, Store, StoreError};
use crate::App;

/// Why `imds serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keys could not be loaded or created.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The state directory's store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// `--link-local` could not be set up.
    #[error(transparent)]
    LinkLocal(#[from] LinkLocalError),
    /// An address could not be bound.
    #[error("cannot listen on {addr} for {listener}: {source}{}", hint(*listener, source, moved_by))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        listener: Listener,
        /// Why.
        source: std::io::Error,
        /// The flags, variables and keys that move this listener elsewhere.
        moved_by: String,
    },
    /// A guardrail policy file is unreadable or invalid.
    #[error(transparent)]
    Policy(#[from] crate::control::policy::PolicyError),
    /// Settings from another front end (amazon-ec2-metadata-mock's flags, environment and
    /// file) are invalid.
    #[error(transparent)]
    Settings(Box<dyn std::error::Error + Send + Sync>),
    /// The runtime or the signal handlers could not start.
    #[error("cannot start: {0}")]
    Startup(std::io::Error),
}

/// The listeners imds binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The guest API (instance metadata).
    Guest,
    /// The control API (EC2 Query API, `/metrics`, `/healthz`, the console).
    Control,
    /// The guest API at EC2's own link-local address.
    LinkLocal,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Listener::Guest => "the guest API",
            Listener::Control => "the control API",
            Listener::LinkLocal => "the link-local guest API (--link-local)",
        })
    }
}

impl Listener {
    /// How `imds serve` moves this listener.
    pub fn moved_by(self) -> String {
        match self {
            Listener::Guest => "--listen ADDR:PORT (IMDS_LISTEN, [server] listen)".into(),
            Listener::Control => {
                "--control-listen ADDR:PORT (IMDS_CONTROL_LISTEN, [server] control_listen)".into()
            }
            Listener::LinkLocal => {
                "nothing: 169.254.169.254:80 is EC2's; stop what holds it".into()
            }
        }
    }
}

/// What to do about a bind error: for an address in use, what may hold it and how to move it.
fn hint(listener: Listener, source: &std::io::Error, moved_by: &str) -> String {
    match source.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            " (another imds, or another program, holds it: stop it, or move {listener} with {moved_by}; port 0 picks a free port)"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or move {listener} with {moved_by})"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            " (no interface of this host has that address; move {listener} with {moved_by})"
        ),
        _ => String::new(),
    }
}

/// How long the start waits for role credentials from STS before serving without them.
const FIRST_STS_FETCH: std::time::Duration = std::time::Duration::from_secs(15);

/// Loads the configuration, at the start and at each SIGHUP.
pub type LoadConfig = Box<dyn Fn() -> Result<Loaded, ServeError> + Send + Sync>;

/// What a SIGHUP reload needs to rebuild the instance.
struct Reloader {
    load: LoadConfig,
    keys: Keys,
    running: ServerConfig,
}

/// Runs `imds serve` until SIGINT or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<(), ServeError> {
    let file: Option<PathBuf> = args.config.clone();
    let overrides: Overrides = args.overrides();
    let load = move || Ok(Config::load(file.as_deref())?.resolve(&overrides, file.as_deref())?);
    run_with(Box::new(load), args.link_local)
}

/// Runs the service with the configuration `load` gives (at the start and at each SIGHUP),
/// with the link-local addresses when `link_local`, until SIGINT or SIGTERM.
pub fn run_with(load: LoadConfig, link_local: bool) -> Result<(), ServeError> {
    let loaded = load()?;
    let runtime = tokio::runtime::Runtime::new().map_err(ServeError::Startup)?;
    let location = loaded
        .server
        .store_location()
        .map_err(|e| ServeError::Settings(e.into()))?;
    let (keys, persisted) = runtime.block_on(open_store(location.as_ref(), &loaded))?;
    let policies = PolicySet::load(&loaded.control.service_control_policies)?;
    let access_log = match &loaded.server.access_log {
        Some(path) => Some(Destination::open(path)?),
        None => None,
    };
    for (instance, changes) in &persisted.changes {
        tracing::info!(
            instance,
            changes = changes.summary(),
            "control-plane changes from the state directory are layered over the config file"
        );
    }
    // The link-local IPv6 endpoint opens when any instance served has HttpProtocolIpv6.
    let served: Vec<&crate::fleet::instance::Instance> = match loaded.server.fleet {
        true => loaded.instances.iter().collect(),
        false => vec![&loaded.instance],
    };
    let launched = persisted
        .launched
        .iter()
        .map(|config| (config.instance_id.as_str(), config.metadata_options));
    let ipv6 = served
        .iter()
        .map(|instance| (instance.id(), instance.options()))
        .chain(launched)
        .any(|(id, options)| {
            let changes = persisted.changes_of(id);
            let options = match changes.metadata_options {
                Some(changed) => changes.option_fields().over(changed, options),
                None => options,
            };
            options.http_protocol_ipv6.is_enabled()
        });
    let mut link_local = match link_local {
        true => Some(LinkLocal::setup(ipv6)?),
        false => None,
    };
    let reloader = Reloader {
        load,
        keys,
        running: loaded.server.clone(),
    };
    let result = runtime.block_on(serve(
        loaded,
        persisted,
        policies,
        reloader,
        access_log,
        &mut link_local,
    ));
    // The link-local addresses go only after every connection has finished.
    drop(link_local);
    result
}

/// Opens the store (when there is one) and reads what it keeps: keys (created there on first
/// start) and the control plane's changes. A shared store that cannot be reached stops the
/// start here, with its reason.
async fn open_store(
    location: Option<&Location>,
    loaded: &Loaded,
) -> Result<(Keys, Persisted), ServeError> {
    let store = match location {
        Some(location) => Some(Arc::new(Store::open(location).await?)),
        None => None,
    };
    let changed = match &store {
        Some(store) => store.load_since(-1).await?,
        None => Changed::default(),
    };
    if let Some(store) = &store {
        tracing::info!(
            store = store.describe(),
            revision = changed.revision,
            instances = changed.instances.len(),
            "store opened"
        );
    }
    let keys = Keys::load(&loaded.server.key_files(), store.as_deref(), &changed.keys).await?;
    let mut persisted = Persisted::from_store(store, changed)?;
    persisted.signing_key_from_files = loaded.server.signing_key_file.is_some();
    Ok((keys, persisted))
}

async fn bind(addr: SocketAddr, listener: Listener) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr,
            listener,
            source,
            moved_by: listener.moved_by(),
        })
}

fn announce(bound: &[SocketAddr], control: &[SocketAddr]) {
    let mut stdout = std::io::stdout().lock();
    for addr in bound {
        let _ = writeln!(stdout, "listening on http://{addr}");
    }
    for addr in control {
        let _ = writeln!(stdout, "control API on http://{addr}");
    }
    if let Some(first) = bound.first() {
        let _ = writeln!(
            stdout,
            "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{first}"
        );
    }
    let _ = stdout.flush();
}

async fn serve(
    loaded: Loaded,
    persisted: Persisted,
    policies: PolicySet,
    reloader: Reloader,
    access_log: Option<Destination>,
    link_local: &mut Option<LinkLocal>,
) -> Result<(), ServeError> {
    // Handlers first: a client that reacts to the announced addresses may signal at once, and
    // SIGHUP's default action would end the process.
    let mut hangup = signal(SignalKind::hangup()).map_err(ServeError::Startup)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Startup)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Startup)?;
    let mut addresses: Vec<(SocketAddr, Listener)> = loaded
        .server
        .listen
        .iter()
        .map(|addr| (*addr, Listener::Guest))
        .collect();
    addresses.extend(
        link_local
            .iter()
            .flat_map(LinkLocal::listen_addrs)
            .map(|addr| (addr, Listener::LinkLocal)),
    );
    let mut listeners = Vec::with_capacity(addresses.len());
    for (addr, listener) in addresses {
        listeners.push(bind(addr, listener).await?);
    }
    let bound = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<Vec<SocketAddr>, _>>()
        .map_err(ServeError::Startup)?;
    let mut control_listeners = Vec::new();
    for addr in loaded.server.control_listen.clone() {
        control_listeners.push(bind(addr, Listener::Control).await?);
    }
    let control_bound = control_listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<Vec<SocketAddr>, _>>()
        .map_err(ServeError::Startup)?;
    let keep_alive = loaded.server.keep_alive;
    let rotation_hours = loaded.server.token_key_rotation_hours;
    // Role credentials from STS are fetched before anyone is told where to ask for them.
    let app = App::new(
        loaded,
        &reloader.keys,
        Arc::new(SystemClock),
        persisted,
        access_log,
    )?;
    app.control.set_policies(policies);
    match app.control.restore_history().await {
        Ok(0) => {}
        Ok(minutes) => tracing::info!(
            minutes,
            "token-less request history restored from the store"
        ),
        Err(error) => {
            tracing::warn!(%error, "the token-less request history could not be restored")
        }
    }
    app.control.publish_addresses().await;
    tokio::spawn(app.control.clone().follow_store());
    tokio::spawn(app.control.clone().keep_history());
    tokio::spawn(app.control.clone().forget_gone_on_schedule());
    if rotation_hours > 0 {
        let every = std::time::Duration::from_secs(u64::from(rotation_hours) * 3600);
        tokio::spawn(app.control.clone().rotate_on_schedule(every));
    }
    let first = app.state.first().map(|slot| slot.current());
    let options = first.as_ref().map(|s| s.options).unwrap_or_default();
    let instance = first.as_ref().map(|s| s.instance.id().to_owned());
    let instances = app.state.instances().len();
    if !app.snapshots.first_sts_fetch(FIRST_STS_FETCH).await {
        tracing::warn!("serving without the role's STS credentials for now (see the error above)");
    }
    let control = Server::new(app.control.clone(), app.control_settings, app.hosts.clone());
    let control_accepting: Vec<Accepting> = control_listeners
        .into_iter()
        .map(|l| control.accept_on(l))
        .collect();
    announce(&bound, &control_bound);
    tracing::info!(
        instance,
        instances,
        fleet = !app.state.is_single(),
        http_tokens = %options.http_tokens,
        http_endpoint = %options.http_endpoint,
        hop_limit = options.http_put_response_hop_limit.get(),
        keep_alive,
        link_local = link_local.is_some(),
        addresses = ?bound,
        "imds started"
    );
    let server = Server::new(app.api.clone(), app.settings, app.hosts.clone());
    let mut accepting: Vec<(SocketAddr, Accepting)> = bound
        .iter()
        .copied()
        .zip(listeners.into_iter().map(|l| server.accept_on(l)))
        .collect();

    let mut changed = app.control.subscribe();
    let stopped_by = loop {
        tokio::select! {
            _ = hangup.recv() => {
                // For logrotate: whatever becomes of the reload, the log moves to the new file.
                if let Some(log) = app.api.access_log() {
                    log.reopen();
                }
                reload(&reloader, &app).await;
                follow_ipv6(&app, &server, link_local, &mut accepting).await;
            }
            Ok(()) = changed.changed() => follow_ipv6(&app, &server, link_local, &mut accepting).await,
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
        }
    };
    drop(accepting);
    drop(control_accepting);
    tokio::join!(server.drain(), control.drain());
    // The last minutes' counts, since the last minute's write.
    let last_minutes = SystemClock.now_millis() / 60_000 - 1;
    if let Err(error) = app.control.flush_history(last_minutes).await {
        tracing::warn!(%error, "the last token-less request counts were not written");
    }
    tracing::info!(signal = stopped_by, "imds stopped");
    Ok(())
}

/// Rebuilds the instance from the config file and the same environment and flags, layers the
/// control plane's changes over it, and swaps it in; a bad file leaves the running instance as
/// it was. `[server]` settings apply at restart.
async fn reload(reloader: &Reloader, app: &App) {
    let loaded = match (reloader.load)() {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!(%error, "reload failed; still serving the previous configuration");
            return;
        }
    };
    if loaded.server != reloader.running {
        tracing::warn!("[server] settings change only at restart; the running ones are kept");
    }
    let policies = PolicySet::load(&loaded.control.service_control_policies);
    let instances = match app.state.is_single() {
        true => vec![loaded.instance.clone()],
        false => loaded.instances.clone(),
    };
    // One change through the control plane's own change path: an acknowledged change is never
    // lost, and a file claiming an address a live instance holds changes nothing.
    let instances = match app.control.reload_file(instances).await {
        Ok(instances) => instances,
        Err(conflict) => {
            let error = loaded.address_conflict(&conflict);
            tracing::error!(
                %error,
                "reload refused; still serving the previous instances and guardrail policies"
            );
            return;
        }
    };
    // The file's policies come with the rest of the file, or not at all.
    match policies {
        Ok(policies) => app.control.set_policies(policies),
        Err(error) => {
            tracing::error!(%error, "guardrail policies not reloaded; the running ones are kept")
        }
    }
    for instance in instances {
        let options = instance.options();
        tracing::info!(
            instance = instance.id(),
            http_tokens = %options.http_tokens,
            http_endpoint = %options.http_endpoint,
            hop_limit = options.http_put_response_hop_limit.get(),
            http_protocol_ipv6 = %options.http_protocol_ipv6,
            "imds reloaded"
        );
    }
}

/// Opens or closes the link-local IPv6 endpoint (with `--link-local`) as the instance's
/// `HttpProtocolIpv6` now says.
async fn follow_ipv6(
    app: &App,
    server: &Server<GuestApi>,
    link_local: &mut Option<LinkLocal>,
    accepting: &mut Vec<(SocketAddr, Accepting)>,
) {
    let Some(link_local) = link_local else {
        return;
    };
    // One endpoint for every instance: open while any of them has IPv6 enabled (the guest API
    // refuses the others there).
    let ipv6 = app
        .state
        .instances()
        .iter()
        .any(|slot| slot.snapshot().options.http_protocol_ipv6.is_enabled());
    let endpoint = SocketAddr::new(link_local::IPV6.into(), 80);
    if !ipv6 {
        accepting.retain(|(addr, _)| *addr != endpoint);
    }
    match link_local.set_ipv6(ipv6) {
        Ok(true) if ipv6 => match bind(endpoint, Listener::LinkLocal).await {
            Ok(listener) => {
                accepting.push((endpoint, server.accept_on(listener)));
                tracing::info!(%endpoint, "link-local IPv6 endpoint opened");
            }
            Err(error) => tracing::error!(%error, "cannot open the link-local IPv6 endpoint"),
        },
        Ok(true) => tracing::info!(%endpoint, "link-local IPv6 endpoint closed"),
        Ok(false) => {}
        Err(error) => tracing::error!(%error, "cannot change the link-local IPv6 endpoint"),
    }
}
