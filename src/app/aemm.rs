//! Compatibility with aws/amazon-ec2-metadata-mock (AEMM): invoked as `ec2-metadata-mock` (a
//! symlink or copy of the binary) or as `imds aemm ...`, imds accepts AEMM's command line
//! ([`cli`]), its `AEMM_*` environment and its JSON config file ([`settings`], with AEMM's
//! precedence), and turns them into an imds configuration: the instance (with AEMM's metadata
//! values where imds has the field), the listener, IMDSv2-only, and the events as a schedule
//! counted from the start. The answers are imds' own, faithful to real IMDS; `docs/aemm.md`
//! lists where AEMM differs.

pub mod cli;
pub mod defaults;
pub mod instance;
pub mod settings;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use time::OffsetDateTime;

use self::cli::{AemmCli, AemmCommand};
use self::instance::Values;
use self::settings::{Origin, Settings};
use crate::app::config::{Config, Loaded, Overrides};
use crate::app::serve::{self, Listener, ServeError};
use crate::clock::{Clock, SystemClock};
use crate::fleet::events::{
    EventCode, EventsConfig, LifecycleConfig, LifecycleState, MaintenanceConfig, SpotAction,
    SpotConfig, When,
};
use crate::fleet::options::HttpTokens;

/// An AEMM-style setting imds cannot use, with the key and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AemmError(pub String);

impl From<AemmError> for ServeError {
    fn from(error: AemmError) -> ServeError {
        ServeError::Settings(Box::new(error))
    }
}

/// Runs `ec2-metadata-mock ARGS` (`args[0]` is the program name) until SIGINT or SIGTERM.
pub fn run(args: Vec<OsString>) -> Result<(), ServeError> {
    let cli = AemmCli::parse_from(args);
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("AEMM_"))
        .collect();
    let started = SystemClock.now_millis();
    if cli.save_config_to_file
        || env
            .get("AEMM_SAVE_CONFIG_TO_FILE")
            .is_some_and(|v| v == "true")
    {
        save(&gather(&cli, &env)?)?;
    }
    if cli.watch_config_file {
        tracing::warn!("-w/--watch-config-file: imds reloads its configuration on SIGHUP instead");
    }
    let load = move || plan(&cli, &env, started);
    serve::run_with(Box::new(load), false).map_err(|error| match error {
        ServeError::Bind {
            addr,
            listener: Listener::Guest,
            source,
            ..
        } => ServeError::Bind {
            addr,
            listener: Listener::Guest,
            source,
            moved_by:
                "-p/--port PORT and -n/--hostname ADDR (AEMM_SERVER_PORT, AEMM_SERVER_HOSTNAME)"
                    .into(),
        },
        ServeError::Bind {
            addr,
            listener: Listener::Control,
            source,
            ..
        } => ServeError::Bind {
            addr,
            listener: Listener::Control,
            source,
            moved_by: "IMDS_CONTROL_LISTEN=ADDR:PORT (or leave it unset: AEMM has none)".into(),
        },
        other => other,
    })
}

/// The settings of every layer.
fn gather(cli: &AemmCli, env: &BTreeMap<String, String>) -> Result<Settings, AemmError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = match (&cli.config_file, env.get("AEMM_CONFIG_FILE")) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(file)) => Some(PathBuf::from(file)),
        (None, None) => home
            .map(|home| home.join("aemm-config.json"))
            .filter(|path| path.exists()),
    };
    let file = file.filter(|path| {
        let found = path.exists();
        if !found {
            tracing::warn!(path = %path.display(), "config file not found; going on without it");
        }
        found
    });
    Settings::gather(cli.flags(), env, file.as_deref())
}

/// Writes the merged settings where AEMM's `-s` does.
fn save(settings: &Settings) -> Result<(), AemmError> {
    let dir = std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
        .join(".ec2-metadata-mock");
    let path = dir.join(".aemm-config-used.json");
    let json = serde_json::to_string_pretty(&settings.to_json()).expect("JSON values serialise");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, json))
        .map_err(|e| {
            AemmError(format!(
                "cannot save the configuration to {}: {e}",
                path.display()
            ))
        })?;
    tracing::info!(path = %path.display(), "configuration saved");
    Ok(())
}

/// The imds configuration AEMM's settings describe, for a service started at `started`.
pub fn plan(
    cli: &AemmCli,
    env: &BTreeMap<String, String>,
    started: u64,
) -> Result<Loaded, ServeError> {
    let settings = gather(cli, env)?;
    let mut loaded = from_settings(&settings, cli.command.as_ref(), started)?;
    // AEMM has no control API, and test suites start several mocks side by side on different
    // ports: imds' own control listener is off unless its variable asks for it.
    loaded.server.control_listen.clear();
    if let Ok(list) = std::env::var("IMDS_CONTROL_LISTEN") {
        loaded.server.control_listen = list
            .split(',')
            .map(|addr| {
                addr.trim().parse::<SocketAddr>().map_err(|_| {
                    AemmError(format!("IMDS_CONTROL_LISTEN: \"{addr}\" is not ADDR:PORT"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(loaded)
}

/// The imds configuration `settings` describe for AEMM's `command`, started at `started`.
pub fn from_settings(
    settings: &Settings,
    command: Option<&AemmCommand>,
    started: u64,
) -> Result<Loaded, ServeError> {
    let mut config = Config::load(None)?;
    let values = Values::of(settings);
    let (derived, unknown) = values.not_applied();
    if !derived.is_empty() {
        tracing::warn!(
            keys = derived.join(", "),
            "metadata values imds derives from the instance instead (see docs/aemm.md)"
        );
    }
    if !unknown.is_empty() {
        tracing::warn!(
            keys = unknown.join(", "),
            "metadata values imds does not serve (see docs/aemm.md)"
        );
    }
    let paths: Vec<&str> = settings
        .under("metadata.paths.")
        .map(|(k, _, _)| k)
        .collect();
    if !paths.is_empty() {
        tracing::warn!(
            keys = paths.join(", "),
            "metadata paths are EC2's in imds; these are not applied (see docs/aemm.md)"
        );
    }
    config.instance = instance::build(&values, config.instance)?;
    let (data, origin) = settings
        .get("userdata.values.userdata")
        .unwrap_or((defaults::USER_DATA, &Origin::Default));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| invalid("userdata.values.userdata", data, origin, "base64"))?;
    config.instance.user_data = String::from_utf8(bytes).map_err(|_| {
        AemmError(format!(
            "userdata.values.userdata ({origin}): the decoded user data is not UTF-8 text"
        ))
    })?;
    config.instance.events = events(settings, &values, command, started)?;
    let hostname = settings.get("server.hostname").map_or("0.0.0.0", |v| v.0);
    let port = settings.get("server.port").map_or("1338", |v| v.0);
    let listen = listen_addresses(hostname, port)?;
    let imdsv2 = flag(settings, "imdsv2")?;
    let overrides = Overrides {
        listen,
        http_tokens: imdsv2.then_some(HttpTokens::Required),
        ..Overrides::default()
    };
    Ok(config.resolve(&overrides, Some(Path::new(SOURCE)))?)
}

/// How errors found after the AEMM settings became imds' configuration name their source.
const SOURCE: &str = "ec2-metadata-mock settings";

/// The events AEMM's settings describe: all of them without a command, else the command's.
fn events(
    s: &Settings,
    values: &Values<'_>,
    command: Option<&AemmCommand>,
    started: u64,
) -> Result<EventsConfig, AemmError> {
    let all = command.is_none();
    let at = |millis: u64| When::at_millis(millis);
    let mock_at = trigger(s, "mock-trigger-time", "mock-delay-sec", started)?;
    let mut events = EventsConfig {
        client_limit: match number(s, "mock-ip-count")?.unwrap_or(2) {
            n if n < 0 => None,
            n => Some(n as usize),
        },
        ..EventsConfig::default()
    };
    if all || matches!(command, Some(AemmCommand::Spot { .. })) {
        let action = match s.get("spot.action") {
            Some((text, origin)) => text.parse::<SpotAction>().map_err(|_| {
                invalid("spot.action", text, origin, "terminate, stop or hibernate")
            })?,
            None => SpotAction::Terminate,
        };
        // The notice at the mock time; the action at spot.time exactly (the notice comes up to
        // a second early to keep whole seconds between them), else two minutes later.
        let (notice, warning) = match time(s, "spot.time")? {
            Some(action_at) => {
                let warning = action_at.saturating_sub(mock_at).div_ceil(1000);
                (action_at.saturating_sub(warning * 1000), warning)
            }
            None => (mock_at, 120),
        };
        events.spot = Some(SpotConfig {
            action,
            notice: at(notice),
            warning_seconds: warning,
        });
        let rebalance_at = trigger(s, "rebalance-trigger-time", "rebalance-delay-sec", started)?;
        events.rebalance = Some(at(
            time(s, "spot.rebalance-rec-time")?.unwrap_or(rebalance_at)
        ));
    }
    if all || matches!(command, Some(AemmCommand::Events { .. })) {
        let code = match s.get("events.code") {
            Some((text, origin)) => text.parse::<EventCode>().map_err(|_| {
                invalid(
                    "events.code",
                    text,
                    origin,
                    "instance-reboot, system-reboot, system-maintenance, instance-retirement or instance-stop",
                )
            })?,
            None => EventCode::SystemReboot,
        };
        let state = s
            .get("events.state")
            .map_or(("active", None), |(v, o)| (v, Some(o)));
        let day = 24 * 3_600_000;
        let mut event = MaintenanceConfig {
            id: values.get("event-id").map(|(v, _)| v.to_owned()),
            code,
            description: None,
            not_before: at(time(s, "events.not-before")?.unwrap_or(started)),
            not_after: Some(at(time(s, "events.not-after")?.unwrap_or(started + 7 * day))),
            not_before_deadline: Some(at(
                time(s, "events.not-before-deadline")?.unwrap_or(started + 9 * day)
            )),
            announced: Some(at(mock_at)),
            completed: None,
            canceled: None,
        };
        match state {
            ("active", _) => {}
            ("completed", _) => event.completed = Some(at(mock_at)),
            ("canceled", _) => event.canceled = Some(at(mock_at)),
            (other, origin) => {
                return Err(invalid(
                    "events.state",
                    other,
                    origin.unwrap_or(&Origin::Flag),
                    "active, completed or canceled",
                ))
            }
        }
        events.maintenance.push(event);
    }
    if all || matches!(command, Some(AemmCommand::AsgLifecycle)) {
        let terminated = trigger(
            s,
            "asg-termination-trigger-time",
            "asg-termination-delay-sec",
            started,
        )?;
        events.target_lifecycle = vec![
            LifecycleConfig {
                state: LifecycleState::InService,
                at: at(started),
            },
            LifecycleConfig {
                state: LifecycleState::Terminated,
                at: at(terminated.max(started)),
            },
        ];
    }
    Ok(events)
}

/// The moment `trigger_key` (an RFC 3339 time) names, else `delay_key` seconds after the start.
fn trigger(
    s: &Settings,
    trigger_key: &str,
    delay_key: &str,
    started: u64,
) -> Result<u64, AemmError> {
    if let Some(at) = time(s, trigger_key)? {
        return Ok(at);
    }
    let delay = number(s, delay_key)?.unwrap_or(0).max(0) as u64;
    Ok(started + Duration::from_secs(delay).as_millis() as u64)
}

/// The RFC 3339 time under `key`, in clock milliseconds.
fn time(s: &Settings, key: &str) -> Result<Option<u64>, AemmError> {
    s.get(key)
        .map(|(text, origin)| {
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
                .map_err(|_| invalid(key, text, origin, "an RFC 3339 time (2026-11-23T10:00:00Z)"))
        })
        .transpose()
}

/// The whole number under `key`.
fn number(s: &Settings, key: &str) -> Result<Option<i64>, AemmError> {
    s.get(key)
        .map(|(text, origin)| {
            text.trim()
                .parse::<i64>()
                .map_err(|_| invalid(key, text, origin, "a whole number"))
        })
        .transpose()
}

/// The boolean under `key` (absent: false).
fn flag(s: &Settings, key: &str) -> Result<bool, AemmError> {
    match s.get(key) {
        None => Ok(false),
        Some((text, origin)) => text
            .parse::<bool>()
            .map_err(|_| invalid(key, text, origin, "true or false")),
    }
}

/// A value under `key` that is not what it should be.
fn invalid(key: &str, value: &str, origin: &Origin, expected: &str) -> AemmError {
    AemmError(format!(
        "invalid value \"{value}\" for {key} (from the {origin}): expected {expected}"
    ))
}

/// `hostname:port` (AEMM's default 0.0.0.0:1338). The hostname must be an IP address or
/// `localhost`: imds looks up no names to decide where to listen.
fn listen_addresses(hostname: &str, port: &str) -> Result<Vec<SocketAddr>, AemmError> {
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| AemmError(format!("invalid port \"{port}\": expected 0 to 65535")))?;
    let host = hostname.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
        other => other.parse().map_err(|_| {
            AemmError(format!(
                "invalid hostname \"{hostname}\": expected an IP address (0.0.0.0, ::, 127.0.0.1) or localhost"
            ))
        })?,
    };
    Ok(vec![SocketAddr::new(ip, port)])
}
