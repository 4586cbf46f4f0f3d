//! The `imds` binary: parses arguments, runs the chosen command, maps errors to exit codes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use imds::cli::{Cli, Command, ServeArgs};
use imds::clock::SystemClock;
use imds::config::{Config, ConfigError, DEFAULT_CONFIG_TOML};
use imds::secret::{SecretError, ServerSecret};
use imds::{App, Overrides};
use tokio::net::TcpListener;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("invalid --log-level `{level}`: {reason}")]
    LogLevel { level: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    LinkLocal(#[from] imds::link_local::LinkLocalError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::PrintConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            Ok(())
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::LinkLocal { to, .. } => {
            print!("{}", imds::link_local::dnat_rules(to));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("imds: error: {failure}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> Result<(), Failure> {
    let loaded = Config::load(Some(file))?.resolve(&Overrides::default(), Some(file))?;
    let instance = &loaded.instance;
    println!(
        "{}: ok: instance {} ({}, {}), HttpTokens={:?}",
        file.display(),
        instance.id(),
        instance.config.instance_type,
        instance.config.placement.availability_zone,
        instance.options().http_tokens,
    );
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    init_logging(&args.log_level)?;
    let config_file = args.config.as_deref();
    let loaded = Config::load(config_file)?.resolve(&args.overrides(), config_file)?;
    let secret = match &loaded.server.token_key_file {
        Some(path) => ServerSecret::from_file(path)?,
        None => ServerSecret::random(),
    };
    let link_local = if args.link_local {
        let ipv6 = loaded.instance.options().http_protocol_ipv6.is_enabled();
        Some(imds::link_local::LinkLocal::setup(ipv6)?)
    } else {
        None
    };
    let mut addresses = loaded.server.listen.clone();
    addresses.extend(link_local.iter().flat_map(|l| l.listen_addrs()));
    let runtime = tokio::runtime::Runtime::new().map_err(Failure::Runtime)?;
    let result = runtime.block_on(async move {
        let mut listeners = Vec::new();
        for addr in &addresses {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Failure::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push(listener);
        }
        let bound: Vec<_> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let mut stdout = std::io::stdout().lock();
        for addr in &bound {
            let _ = writeln!(stdout, "listening on http://{addr}");
        }
        if let Some(first) = bound.first() {
            let _ = writeln!(
                stdout,
                "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{first}"
            );
        }
        let _ = stdout.flush();
        drop(stdout);
        let instance = &loaded.instance;
        let options = instance.options();
        tracing::info!(
            instance = instance.id(),
            http_tokens = ?options.http_tokens,
            http_endpoint = ?options.http_endpoint,
            keep_alive = loaded.server.keep_alive,
            link_local = args.link_local,
            addresses = ?bound,
            "imds started"
        );
        let app = App::new(loaded, &secret, Arc::new(SystemClock));
        let (signal_tx, signal_rx) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            let _ = signal_tx.send(shutdown_signal().await);
        };
        imds::server::run(listeners, app.api, app.settings, shutdown).await;
        let signal = signal_rx.await.unwrap_or("shutdown");
        tracing::info!(signal, "imds stopped");
        Ok(())
    });
    // The link-local addresses go only after every connection has finished.
    drop(link_local);
    result
}

fn init_logging(level: &str) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| Failure::LogLevel {
        level: level.to_owned(),
        reason: e.to_string(),
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Completes on SIGINT or SIGTERM, with the signal's name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
