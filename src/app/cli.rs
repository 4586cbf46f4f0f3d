//! The command line: `serve`, `print-config`, `check-config`. Each flag's help lives beside it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::config::Overrides;
use crate::fleet::options::{HopLimit, HttpTokens, Switch};

/// An EC2-compatible Instance Metadata Service.
///
/// Serves /latest/meta-data, /latest/dynamic, /latest/user-data and IMDSv2 session tokens exactly
/// as EC2 does, so unmodified AWS SDKs, the AWS CLI and cloud-init work against it. Point SDKs at
/// it with AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1338.
#[derive(Debug, Parser)]
#[command(name = "imds", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the instance metadata service.
    ///
    /// Without --config, serves the built-in default instance (see `imds print-config`) on
    /// 127.0.0.1:1338. Prints each bound address as `listening on http://ADDR` on stdout, then
    /// runs until SIGINT or SIGTERM, letting requests in flight finish. SIGHUP reloads the
    /// config file (with the same environment and flags) and applies the instance and its
    /// metadata options at once; [server] settings apply at restart. SIGHUP also reopens the
    /// --access-log file, which shows who still calls IMDSv1 (pid and command line).
    Serve(ServeArgs),
    /// Print the built-in default configuration: a commented TOML file to edit and pass to --config.
    PrintConfig,
    /// Check a configuration file; exit 0 when it is valid, else name the file, key and reason.
    CheckConfig {
        /// The TOML (or .json) file to check.
        file: PathBuf,
    },
    /// Print the certificate (PEM) that verifies the identity document's signatures.
    ///
    /// imds signs dynamic/instance-identity/{signature,pkcs7,rsa2048} with its own RSA key. Give
    /// the same --state-dir (or --signing-key/--signing-cert, or --config) as `imds serve`; with
    /// --state-dir the key is created here if the server has not created it yet (the directory
    /// must exist: a mistyped one is refused). Without any of them the server uses a key per
    /// process, which no other process can print.
    Cert(CertArgs),
    /// Run with amazon-ec2-metadata-mock's command line, AEMM_* environment and JSON config
    /// file (`imds aemm spot -a stop`); the same as invoking imds as `ec2-metadata-mock`.
    #[command(disable_help_flag = true)]
    Aemm {
        /// AEMM's arguments (`imds aemm --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Change a running imds through its control API (a thin client; the AWS CLI works too).
    ///
    /// Examples: `imds ctl options --http-tokens required`, `imds ctl tag Name=web Team=blue`,
    /// `imds ctl untag Team`, `imds ctl role batch-worker`, `imds ctl role --none`,
    /// `imds ctl defaults --http-tokens-enforced enabled`, `imds ctl describe`.
    ///
    /// Fleets (`imds serve --fleet`): `imds ctl run --count 3 --tag Name=web`, `imds ctl list`,
    /// `imds ctl --instance-id i-0123456789abcdef0 options --http-tokens required` (or
    /// IMDS_INSTANCE_ID), `imds ctl stop|start|terminate ID...`.
    Ctl(CtlArgs),
    /// How machines and container networks reach imds at 169.254.169.254 without --link-local.
    LinkLocal {
        /// Print iptables and nftables rules that send 169.254.169.254:80 to imds.
        #[arg(long, required = true)]
        print_rules: bool,
        /// Where imds listens.
        #[arg(long, default_value = "127.0.0.1:1338", value_name = "ADDR:PORT")]
        to: SocketAddr,
    },
}

/// Flags of `imds serve`. Each can also be set by an IMDS_* environment variable; flags win over
/// the environment, which wins over the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Also serve at EC2's own addresses, 169.254.169.254:80 and (with HttpProtocolIpv6=enabled)
    /// [fd00:ec2::254]:80, added to a dummy interface or `lo` and removed at exit. Needs root.
    #[arg(long, env = "IMDS_LINK_LOCAL")]
    pub link_local: bool,
    /// Configuration file (TOML, or JSON when it ends in .json) laid over the built-in default.
    #[arg(long, short, env = "IMDS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; repeat for several (e.g. --listen 127.0.0.1:1338 --listen [::1]:1338).
    /// Port 0 picks a free port.
    #[arg(
        long,
        env = "IMDS_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR:PORT"
    )]
    pub listen: Vec<SocketAddr>,
    /// Address of the control API, which `aws ec2 --endpoint-url http://ADDR` drives
    /// (DescribeInstances, ModifyInstanceMetadataOptions, CreateTags, ...); loopback only.
    #[arg(
        long,
        env = "IMDS_CONTROL_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR:PORT"
    )]
    pub control_listen: Vec<SocketAddr>,
    /// A host name, besides IP addresses and `localhost`, that requests on loopback addresses
    /// may carry in `Host`; repeat for several. Others are refused with 403, so that a web page
    /// cannot reach imds by making its own name resolve to 127.0.0.1 (DNS rebinding).
    #[arg(
        long = "allowed-host",
        env = "IMDS_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub allowed_hosts: Vec<String>,
    /// IMDSv2 enforcement: `optional` answers v1 and v2, `required` answers only requests with a
    /// valid session token (401 otherwise).
    #[arg(long, env = "IMDS_HTTP_TOKENS", value_name = "MODE")]
    pub http_tokens: Option<HttpTokens>,
    /// `disabled` answers every request with 403, as EC2 does with HttpEndpoint=disabled.
    #[arg(long, env = "IMDS_HTTP_ENDPOINT", value_name = "STATE")]
    pub http_endpoint: Option<Switch>,
    /// HttpPutResponseHopLimit (1-64): the IP TTL / IPv6 hop limit of token PUT answers. Callers
    /// more router hops away never receive a token (their PUT times out), as on EC2.
    #[arg(long, env = "IMDS_HOP_LIMIT", value_name = "HOPS")]
    pub hop_limit: Option<HopLimit>,
    /// `enabled` serves the instance's tags under meta-data/tags/instance/.
    #[arg(long, env = "IMDS_INSTANCE_METADATA_TAGS", value_name = "STATE")]
    pub instance_metadata_tags: Option<Switch>,
    /// Fleet mode: serve many instances, each caller answered as the instance that owns its
    /// address (the config file's `[[instances]]`, and those made with `aws ec2 run-instances`);
    /// a caller whose address belongs to no instance gets 403. Without it, the one instance
    /// answers every caller.
    #[arg(long, env = "IMDS_FLEET", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub fleet: Option<bool>,
    /// Serve persistent HTTP/1.1 connections instead of real IMDS' `Connection: close`
    /// (faster for load tests; every SDK works either way).
    #[arg(long, env = "IMDS_KEEP_ALIVE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub keep_alive: Option<bool>,
    /// File of at least 32 bytes that keys session tokens, so restarts and replicas accept each
    /// other's tokens (default: the one kept in --state-dir, else a random key per process).
    #[arg(long, env = "IMDS_TOKEN_KEY_FILE", value_name = "FILE")]
    pub token_key_file: Option<PathBuf>,
    /// Where the signing key comes from.
    #[command(flatten)]
    pub keys: KeyArgs,
    /// STS endpoint for role credentials from STS ([instance.iam] credentials = "sts"), e.g. a
    /// local test STS; default: the regional endpoint of `sts_region`.
    #[arg(long, env = "IMDS_STS_ENDPOINT", value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// Append one JSON line per guest request to FILE (`-`: stdout): time, peer, instance,
    /// method, path, status, IMDS version (v1/v2) and latency_us; for IMDSv1 requests from a
    /// process on this host also its pid and cmdline, to find who still calls IMDSv1 (processes
    /// of other users are found only when imds runs as root). Never headers, tokens or
    /// credentials. SIGHUP reopens FILE (for logrotate). Example:
    /// `jq -r 'select(.version == "v1") | "\(.pid) \(.cmdline)"' FILE | sort | uniq -c`
    #[arg(long, env = "IMDS_ACCESS_LOG", value_name = "FILE|-")]
    pub access_log: Option<PathBuf>,
    /// Log verbosity on stderr: error, warn, info, debug (one line per request) or trace; or a
    /// tracing filter such as `imds=debug`. Default: RUST_LOG when it is set, else info.
    #[arg(long, env = "IMDS_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Flags naming the key material kept across restarts, shared by `serve` and `cert`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Directory for what must survive restarts, created if missing: a SQLite database
    /// (state.db) keeping the token key (unless --token-key-file is given), the identity
    /// signing key with its certificate, and every change made through the control API
    /// (metadata options, tags, role association, account defaults), written before it is
    /// acknowledged. Default: new keys per process, changes kept in memory.
    #[arg(long, env = "IMDS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The store many hosts share instead of a state directory: a PostgreSQL database,
    /// postgres://USER@HOST:PORT/DB or postgres://USER:PASSWORD@HOST:PORT/DB (libpq-style; add
    /// ?sslmode=require for TLS).
    /// Every host serving the fleet keeps its inventory, changes and keys there: an instance
    /// launched or changed through any host is served by all of them. Migrations are applied
    /// at start. A host does not start while the database is unreachable, and keeps serving
    /// its guests from memory if it goes away later (control changes are refused until it is
    /// back). Prefer IMDS_STORE or the config file for a URL with a password.
    #[arg(long, env = "IMDS_STORE", hide_env_values = true, value_name = "URL")]
    pub store: Option<crate::store::StoreUrl>,
    /// RSA private key (PEM, PKCS#8 or PKCS#1, 2048 bits or more) that signs the identity
    /// document instead of a generated one; needs --signing-cert.
    #[arg(
        long,
        env = "IMDS_SIGNING_KEY",
        value_name = "FILE",
        requires = "signing_cert"
    )]
    pub signing_key: Option<PathBuf>,
    /// Certificate (PEM) of --signing-key, printed by `imds cert`.
    #[arg(
        long,
        env = "IMDS_SIGNING_CERT",
        value_name = "FILE",
        requires = "signing_key"
    )]
    pub signing_cert: Option<PathBuf>,
}

/// Flags of `imds ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control API of the imds to change (what `imds serve` prints as `control API on`).
    #[arg(
        long,
        env = "IMDS_CONTROL_ENDPOINT",
        default_value = "http://127.0.0.1:1339",
        value_name = "URL"
    )]
    pub endpoint: String,
    /// Access key id of the control API's `[control]` keys: with --secret-access-key, every
    /// request is SigV4-signed, as a control API with keys requires.
    #[arg(
        long,
        env = "IMDS_CONTROL_ACCESS_KEY_ID",
        value_name = "ID",
        requires = "secret_access_key"
    )]
    pub access_key_id: Option<String>,
    /// Secret access key of the control API's `[control]` keys (see --access-key-id).
    #[arg(
        long,
        env = "IMDS_CONTROL_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true,
        requires = "access_key_id"
    )]
    pub secret_access_key: Option<String>,
    /// The instance that per-instance commands (describe, options, tag, untag, role,
    /// spot-interrupt, event, asg, fault) change, sent as `InstanceId`; `imds ctl list` shows
    /// the ids. Needed when imds serves a fleet of more than one instance; without it, the one
    /// instance imds serves.
    #[arg(long, global = true, env = "IMDS_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `imds ctl` commands; values are checked by the server, as EC2 checks them.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show the instance: id, type, zone, address, role, tags and metadata options. In a fleet,
    /// give --instance-id (`imds ctl list` shows every instance).
    Describe,
    /// Change metadata options (ModifyInstanceMetadataOptions); options not given keep their value.
    Options {
        /// `optional` or `required` (IMDSv2 only).
        #[arg(long, value_name = "MODE")]
        http_tokens: Option<String>,
        /// `enabled` or `disabled` (every request gets 403).
        #[arg(long, value_name = "STATE")]
        http_endpoint: Option<String>,
        /// PUT response hop limit, 1-64.
        #[arg(long, value_name = "HOPS")]
        hop_limit: Option<u8>,
        /// `enabled` or `disabled`: the IPv6 endpoint.
        #[arg(long, value_name = "STATE")]
        http_protocol_ipv6: Option<String>,
        /// `enabled` or `disabled`: tags under meta-data/tags/instance/.
        #[arg(long, value_name = "STATE")]
        instance_metadata_tags: Option<String>,
    },
    /// Add or overwrite tags (CreateTags).
    Tag {
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Remove tags (DeleteTags).
    Untag {
        /// Tag keys.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Give the instance a role (its instance profile has the same name), or take it away.
    Role {
        /// The role name.
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        name: Option<String>,
        /// Remove the role (DisassociateIamInstanceProfile).
        #[arg(long)]
        none: bool,
    },
    /// Announce a spot interruption (SendSpotInstanceInterruptions, as FIS does): the rebalance
    /// recommendation now, the interruption notice after --in, the interruption two minutes
    /// after the notice. E.g. `imds ctl spot-interrupt --action stop --in 30s`.
    SpotInterrupt {
        /// What happens to the instance: `terminate`, `stop` or `hibernate`.
        #[arg(long, default_value = "terminate", value_name = "ACTION")]
        action: String,
        /// When the notice appears (`spot/instance-action`), from now: 0s to 13m.
        #[arg(long = "in", default_value = "0s", value_name = "DELAY")]
        notice_in: String,
        /// Send no rebalance recommendation first.
        #[arg(long)]
        no_rebalance: bool,
    },
    /// Scheduled maintenance events (events/maintenance/ and DescribeInstanceStatus).
    Event {
        /// What to do.
        #[command(subcommand)]
        command: EventCommand,
    },
    /// Set the Auto Scaling target lifecycle state (autoscaling/target-lifecycle-state):
    /// InService, Terminated, Detached, Standby, Warmed:Stopped, Warmed:Running,
    /// Warmed:Hibernated or Warmed:Terminated. E.g. `imds ctl asg Terminated --at +30s`.
    Asg {
        /// The state.
        state: String,
        /// When it shows: a delay (`+30s`) or an RFC 3339 time; default now.
        #[arg(long, value_name = "WHEN")]
        at: Option<String>,
    },
    /// Inject faults into the guest API (latency, statuses, throttling, resets, silence), list
    /// them, clear them.
    Fault {
        /// What to do.
        #[command(subcommand)]
        command: FaultCommand,
    },
    /// Launch instances (RunInstances; fleet mode), printing one line per new instance as
    /// `list` does. Their addresses come from the subnet (default: the default subnet of the
    /// default VPC), or --private-ip for one instance; options not given come from the
    /// account's defaults (`imds ctl defaults`), as on EC2.
    ///
    /// Examples: `imds ctl run --count 3 --tag Name=web --http-tokens required`,
    /// `imds ctl run --subnet-id subnet-0a3e5c7b9d1f24681 --private-ip 127.16.0.20 --user-data
    /// @cloud-init.yaml --role batch-worker`.
    Run {
        /// How many instances (MinCount and MaxCount).
        #[arg(long, default_value_t = 1, value_name = "N")]
        count: u32,
        /// The AMI id (default: the built-in instance's).
        #[arg(long, value_name = "AMI")]
        image_id: Option<String>,
        /// The instance type (default: m1.small, as on EC2).
        #[arg(long, value_name = "TYPE")]
        instance_type: Option<String>,
        /// The subnet the instances' addresses come from.
        #[arg(long, value_name = "SUBNET")]
        subnet_id: Option<String>,
        /// The primary private IPv4 address (only with --count 1).
        #[arg(long, value_name = "IPV4")]
        private_ip: Option<String>,
        /// A tag, KEY=VALUE; repeat for several.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// `optional` or `required` (IMDSv2 only).
        #[arg(long, value_name = "MODE")]
        http_tokens: Option<String>,
        /// PUT response hop limit, 1-64.
        #[arg(long, value_name = "HOPS")]
        hop_limit: Option<u8>,
        /// The role (its instance profile has the same name).
        #[arg(long, value_name = "NAME")]
        role: Option<String>,
        /// User data: the text itself, or @FILE for a file's contents.
        #[arg(long, value_name = "TEXT|@FILE")]
        user_data: Option<String>,
        /// A key pair imported with `aws ec2 import-key-pair`, served under public-keys/.
        #[arg(long, value_name = "NAME")]
        key_name: Option<String>,
    },
    /// List the instances (DescribeInstances), one line each: id, state, private IPv4, Name tag
    /// (`-` without one) and HttpTokens.
    List,
    /// Rotate the session token key (imds' RotateKeys): new IMDSv2 tokens are sealed with a new
    /// key generation at once, on every host sharing the store; tokens of older generations
    /// stay valid until they can have expired (21,600 s, plus 5 minutes for clocks), so no
    /// guest notices. Prints the new generation and the ones still accepted.
    RotateKeys {
        /// Also replace the key that signs identity documents (a new RSA key and certificate):
        /// every instance's document is signed again, on every host. `imds cert --all` prints
        /// every certificate kept, for documents signed before.
        #[arg(long)]
        signing_key: bool,
    },
    /// Terminate instances (TerminateInstances): they answer no guest any more, give their
    /// addresses back and stay listed as `terminated` for an hour. E.g. `imds ctl terminate
    /// i-0123456789abcdef0`.
    Terminate {
        /// Instance ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Stop instances (StopInstances): they answer no guest until started again.
    Stop {
        /// Instance ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Start stopped instances (StartInstances).
    Start {
        /// Instance ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Show, or change, the account's instance metadata defaults.
    Defaults {
        /// `optional`, `required` or `no-preference`.
        #[arg(long, value_name = "MODE")]
        http_tokens: Option<String>,
        /// `enabled` (IMDSv1 can no longer be turned on), `disabled` or `no-preference`.
        #[arg(long, value_name = "STATE")]
        http_tokens_enforced: Option<String>,
    },
}

/// `imds ctl event` commands. Times are RFC 3339 (`2026-11-23T10:00:00Z`) or delays from now
/// (`+1h`, `30m`).
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// List the announced events that have not ended.
    List,
    /// Announce an event (ScheduleInstanceEvent). E.g. `imds ctl event add --code system-reboot
    /// --not-before +1h`.
    Add {
        /// instance-reboot, system-reboot, system-maintenance, instance-retirement or instance-stop.
        #[arg(long, value_name = "CODE")]
        code: String,
        /// When its window opens (default: now).
        #[arg(long, value_name = "WHEN")]
        not_before: Option<String>,
        /// When its window closes (default: two hours after it opens); it is completed then.
        #[arg(long, value_name = "WHEN")]
        not_after: Option<String>,
        /// The latest start it can be rescheduled to; without one it cannot be rescheduled.
        #[arg(long, value_name = "WHEN")]
        deadline: Option<String>,
        /// Its description (default: EC2's for the code).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Cancel an event: it moves to events/maintenance/history as `[Canceled]`.
    Cancel {
        /// Its `instance-event-...` id.
        id: String,
    },
    /// Complete an event early: it moves to the history as `[Completed]`.
    Complete {
        /// Its `instance-event-...` id.
        id: String,
    },
    /// Move an event's start (ModifyInstanceEventStartTime, with EC2's rules).
    Reschedule {
        /// Its `instance-event-...` id.
        id: String,
        /// The new start: RFC 3339, or a delay from now (`+2h`).
        #[arg(long, value_name = "WHEN")]
        not_before: String,
    },
    /// Remove every event, spot interruption and lifecycle state (ClearInstanceEvents).
    Clear,
}

/// `imds ctl fault` commands.
#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Inject a fault (InjectFault). E.g. the token PUT that never answers, as for a caller
    /// beyond the hop limit: `imds ctl fault add --path /latest/api/token --method PUT
    /// --no-answer`; one 503 on the role: `imds ctl fault add --path
    /// '/latest/meta-data/iam/*' --status 503 --count 1`.
    Add {
        /// Request paths: exact, or a prefix ending in `*`; `*` is every path.
        #[arg(long, default_value = "*", value_name = "PATTERN")]
        path: String,
        /// Only requests of this method (GET, PUT).
        #[arg(long, value_name = "METHOD")]
        method: Option<String>,
        /// Delay before the answer (or the other effect), e.g. 500ms.
        #[arg(long, value_name = "DURATION")]
        latency: Option<String>,
        /// Answer this status (400-599, e.g. 500, 503, 403) with an empty body.
        #[arg(long, value_name = "CODE", group = "effect")]
        status: Option<u16>,
        /// Answer 429 beyond this many matching requests per second.
        #[arg(long, value_name = "PER_SECOND", group = "effect")]
        rate_limit: Option<u32>,
        /// Reset the connection instead of answering.
        #[arg(long, group = "effect")]
        reset: bool,
        /// Never answer (the client times out).
        #[arg(long, group = "effect")]
        no_answer: bool,
        /// Only for the first N matching requests.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Only with this probability (0-1) per matching request.
        #[arg(long, value_name = "P")]
        probability: Option<f64>,
    },
    /// List the faults and how often each fired (DescribeFaults).
    List,
    /// Remove the given faults, or all (ClearFaults).
    Clear {
        /// `fault-...` ids; none: every fault.
        ids: Vec<String>,
    },
}

/// Flags of `imds cert`.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// Configuration file whose [server] section names the keys.
    #[arg(long, short, env = "IMDS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the signing key comes from.
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Print the public key (SPKI PEM, for `openssl dgst -verify`) instead of the certificate.
    #[arg(long)]
    pub public_key: bool,
    /// Print every signing certificate the store has kept, oldest first (the key was rotated
    /// with `imds ctl rotate-keys --signing-key`): documents signed before a rotation verify
    /// with an older one.
    #[arg(long, conflicts_with = "public_key")]
    pub all: bool,
}

impl CertArgs {
    /// The flag layer, to lay over the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            state_dir: self.keys.state_dir.clone(),
            store: self.keys.store.clone(),
            signing_key_file: self.keys.signing_key.clone(),
            signing_cert_file: self.keys.signing_cert.clone(),
            ..Overrides::default()
        }
    }
}

impl ServeArgs {
    /// The environment and flag layer, to lay over the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            control_listen: self.control_listen.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            keep_alive: self.keep_alive,
            fleet: self.fleet,
            token_key_file: self.token_key_file.clone(),
            state_dir: self.keys.state_dir.clone(),
            store: self.keys.store.clone(),
            signing_key_file: self.keys.signing_key.clone(),
            signing_cert_file: self.keys.signing_cert.clone(),
            sts_endpoint: self.sts_endpoint.clone(),
            access_log: self.access_log.clone(),
            http_tokens: self.http_tokens,
            http_endpoint: self.http_endpoint,
            hop_limit: self.hop_limit,
            instance_metadata_tags: self.instance_metadata_tags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn listen_repeats_and_tokens_parse() {
        let cli = Cli::try_parse_from([
            "imds",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--http-tokens",
            "required",
            "--keep-alive",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.len(), 2);
        assert_eq!(args.http_tokens, Some(HttpTokens::Required));
        assert_eq!(args.keep_alive, Some(true));
        assert!(Cli::try_parse_from(["imds", "serve", "--http-tokens", "maybe"]).is_err());
    }
}
