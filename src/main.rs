//! The `imds` binary: parses arguments, runs the chosen command, maps errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use imds::app::cli::{CertArgs, Cli, Command};
use imds::app::config::{Config, ConfigError, DEFAULT_CONFIG_TOML};
use imds::fleet::keys::Keys;
use imds::Overrides;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|arg0| std::path::Path::new(arg0).file_name())
        .map(|name| name.to_string_lossy().into_owned());
    if invoked_as.as_deref() == Some("ec2-metadata-mock") {
        return report(init_logging(None).and_then(|()| Ok(imds::app::aemm::run(args)?)));
    }
    let cli = Cli::parse_from(args.clone());
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_level.as_deref()).and_then(|()| Ok(imds::app::serve::run(&args)?))
        }
        Command::PrintConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            Ok(())
        }
        Command::CheckConfig { file } => check_config(&file).map_err(Into::into),
        Command::Cert(args) => print_certificate(&args),
        Command::Ctl(args) => imds::app::ctl::run(&args).map_err(Into::into),
        Command::Aemm { .. } => {
            // AEMM's own parser reads everything after `aemm`.
            args.drain(1..=aemm_position(&args));
            args[0] = "ec2-metadata-mock".into();
            init_logging(None).and_then(|()| Ok(imds::app::aemm::run(args)?))
        }
        Command::LinkLocal { to, .. } => {
            print!("{}", imds::app::link_local::dnat_rules(to));
            Ok(())
        }
    };
    report(result)
}

/// Where `aemm` is among the arguments (after `imds`'s own global flags, if any).
fn aemm_position(args: &[std::ffi::OsString]) -> usize {
    args.iter()
        .position(|arg| arg == "aemm")
        .expect("the aemm command was parsed from these arguments")
}

fn report(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("imds: error: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// Checks `file` and says what it serves: its instance, or every `[[instances]]` entry.
fn check_config(file: &std::path::Path) -> Result<(), ConfigError> {
    let loaded = Config::load(Some(file))?.resolve(&Overrides::default(), Some(file))?;
    let line = |instance: &imds::fleet::instance::Instance| {
        let options = instance.options();
        format!(
            "{} ({}, {}, {}), HttpTokens={}, HttpEndpoint={}, hop limit {}",
            instance.id(),
            instance.config.instance_type,
            instance.config.placement.availability_zone,
            instance.primary_interface().config.private_ipv4s[0],
            options.http_tokens,
            options.http_endpoint,
            options.http_put_response_hop_limit,
        )
    };
    let instances = &loaded.instances;
    if instances.is_empty() {
        let fleet = match loaded.server.fleet {
            true => " (fleet mode: more come with RunInstances)",
            false => "",
        };
        println!(
            "{}: ok: instance {}{fleet}",
            file.display(),
            line(&loaded.instance)
        );
        return Ok(());
    }
    let mode = match loaded.server.fleet {
        true => "served in fleet mode",
        false => "served with --fleet (or [server] fleet = true); without it, [instance] answers every caller",
    };
    println!(
        "{}: ok: {} [[instances]], {mode}:",
        file.display(),
        instances.len()
    );
    for (index, instance) in instances.iter().enumerate() {
        println!("  entry {}: {}", index + 1, line(instance));
    }
    Ok(())
}

fn print_certificate(args: &CertArgs) -> Result<(), Box<dyn std::error::Error>> {
    let file = args.config.as_deref();
    let loaded = Config::load(file)?.resolve(&args.overrides(), file)?;
    let server = &loaded.server;
    let location = server.store_location()?;
    // A mistyped directory would get a new key, and a certificate that verifies nothing.
    if let (Some(imds::store::Location::StateDir(dir)), None) =
        (&location, &server.signing_key_file)
    {
        if !dir.is_dir() {
            return Err(format!(
                "state directory {} does not exist: give the one `imds serve --state-dir` uses (it creates it at its first start), or create it (mkdir {}) to make the key here first",
                dir.display(),
                dir.display()
            )
            .into());
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (signer, certificates) = runtime.block_on(async {
        let store = match (&location, &server.signing_key_file) {
            (Some(location), None) => Some(imds::store::Store::open(location).await?),
            _ => None,
        };
        let stored = match &store {
            Some(store) => store.load_since(-1).await?.keys,
            None => Vec::new(),
        };
        let signer = Keys::lasting_signer(&server.key_files(), store.as_ref(), &stored).await?;
        let certificates = match store {
            Some(_) => imds::fleet::keys::certificates(&stored)?,
            None => vec![signer.certificate_pem().to_owned()],
        };
        Ok::<_, Box<dyn std::error::Error>>((signer, certificates))
    })?;
    match (args.public_key, args.all) {
        (true, _) => print!("{}", signer.public_key_pem()),
        (false, true) => print!("{}", certificates.concat()),
        (false, false) => print!("{}", signer.certificate_pem()),
    }
    Ok(())
}

/// Logs to stderr at `flag` (--log-level or IMDS_LOG_LEVEL), else at RUST_LOG as the Rust
/// ecosystem reads it, else at info.
fn init_logging(flag: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let rust_log = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let (level, source) = match (flag, &rust_log) {
        (Some(level), _) => (level, "--log-level (or IMDS_LOG_LEVEL)"),
        (None, Some(level)) => (level.as_str(), "RUST_LOG"),
        (None, None) => ("info", "the default"),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid {source} `{level}`: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}
