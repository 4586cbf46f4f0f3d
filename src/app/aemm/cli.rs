//! The command line of aws/amazon-ec2-metadata-mock (AEMM), as its documentation describes it:
//! global flags (also accepted after the command), and the commands `spot`, `events` (`se`,
//! `scheduledevents`) and `asglifecycle` (`asg`, `autoscaling`). No command serves them all.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `ec2-metadata-mock [COMMAND] [FLAGS]`, served by imds.
#[derive(Debug, Parser)]
#[command(
    name = "ec2-metadata-mock",
    about = "imds with the command line, environment (AEMM_*) and JSON config file of amazon-ec2-metadata-mock",
    long_about = "imds with the command line, environment (AEMM_*) and JSON config file of \
                  amazon-ec2-metadata-mock. Precedence: flag > environment > config file > defaults. \
                  Answers are imds' (real IMDS formats); docs/aemm.md lists where AEMM differs."
)]
pub struct AemmCli {
    /// Address to listen on (AEMM_SERVER_HOSTNAME; default 0.0.0.0).
    #[arg(short = 'n', long, global = true)]
    pub hostname: Option<String>,
    /// Port to listen on (AEMM_SERVER_PORT; default 1338).
    #[arg(short = 'p', long, global = true)]
    pub port: Option<String>,
    /// JSON config file (AEMM_CONFIG_FILE; default $HOME/aemm-config.json when present).
    #[arg(short = 'c', long, global = true)]
    pub config_file: Option<PathBuf>,
    /// Write the merged configuration to $HOME/.ec2-metadata-mock/.aemm-config-used.json.
    #[arg(short = 's', long, global = true)]
    pub save_config_to_file: bool,
    /// Accepted for compatibility; imds reloads its configuration on SIGHUP instead.
    #[arg(short = 'w', long, global = true)]
    pub watch_config_file: bool,
    /// Seconds after the start before the spot notice and scheduled events appear.
    #[arg(short = 'd', long, global = true, allow_negative_numbers = true)]
    pub mock_delay_sec: Option<i64>,
    /// RFC 3339 time at which the spot notice and scheduled events appear (wins over -d).
    #[arg(long, global = true)]
    pub mock_trigger_time: Option<String>,
    /// Only the first N client addresses see spot, events and ASG data (negative: all).
    #[arg(short = 'x', long, global = true, allow_negative_numbers = true)]
    pub mock_ip_count: Option<i64>,
    /// IMDSv2 only: every request needs a session token.
    #[arg(short = 'I', long, global = true)]
    pub imdsv2: bool,
    /// Seconds after the start before the rebalance recommendation appears.
    #[arg(long, global = true, allow_negative_numbers = true)]
    pub rebalance_delay_sec: Option<i64>,
    /// RFC 3339 time at which the rebalance recommendation appears.
    #[arg(long, global = true)]
    pub rebalance_trigger_time: Option<String>,
    /// Seconds after the start before the ASG target lifecycle state becomes Terminated.
    #[arg(long, global = true, allow_negative_numbers = true)]
    pub asg_termination_delay_sec: Option<i64>,
    /// RFC 3339 time at which the ASG target lifecycle state becomes Terminated.
    #[arg(long, global = true)]
    pub asg_termination_trigger_time: Option<String>,
    /// Which mock to serve; none: all of them.
    #[command(subcommand)]
    pub command: Option<AemmCommand>,
}

/// AEMM's commands.
#[derive(Debug, Subcommand)]
pub enum AemmCommand {
    /// Spot interruption notice (and rebalance recommendation) only.
    Spot {
        /// terminate, stop or hibernate (AEMM_SPOT_ACTION).
        #[arg(short = 'a', long)]
        action: Option<String>,
        /// RFC 3339 time of the interruption (AEMM_SPOT_TIME; default: two minutes after the notice).
        #[arg(short = 't', long)]
        time: Option<String>,
        /// RFC 3339 noticeTime of the rebalance recommendation (AEMM_SPOT_REBALANCE_REC_TIME).
        #[arg(short = 'r', long)]
        rebalance_rec_time: Option<String>,
    },
    /// Scheduled maintenance events only.
    #[command(visible_aliases = ["se", "scheduledevents"])]
    Events {
        /// instance-reboot, system-reboot, system-maintenance, instance-retirement or instance-stop.
        #[arg(short = 'o', long)]
        code: Option<String>,
        /// active, completed or canceled.
        #[arg(short = 't', long)]
        state: Option<String>,
        /// RFC 3339 NotAfter (default: start + 7 days).
        #[arg(short = 'a', long)]
        not_after: Option<String>,
        /// RFC 3339 NotBefore (default: the start).
        #[arg(short = 'b', long)]
        not_before: Option<String>,
        /// RFC 3339 NotBeforeDeadline (default: start + 9 days).
        #[arg(short = 'l', long)]
        not_before_deadline: Option<String>,
    },
    /// Auto Scaling target lifecycle state only (InService, then Terminated after
    /// --asg-termination-delay-sec).
    #[command(name = "asglifecycle", visible_aliases = ["asg", "autoscaling"])]
    AsgLifecycle,
}

impl AemmCli {
    /// The flags given, as AEMM's configuration keys.
    pub fn flags(&self) -> Vec<(&'static str, String)> {
        let mut set: Vec<(&'static str, Option<String>)> = vec![
            ("server.hostname", self.hostname.clone()),
            ("server.port", self.port.clone()),
            ("mock-delay-sec", self.mock_delay_sec.map(|v| v.to_string())),
            ("mock-trigger-time", self.mock_trigger_time.clone()),
            ("mock-ip-count", self.mock_ip_count.map(|v| v.to_string())),
            ("imdsv2", self.imdsv2.then(|| "true".into())),
            (
                "rebalance-delay-sec",
                self.rebalance_delay_sec.map(|v| v.to_string()),
            ),
            (
                "rebalance-trigger-time",
                self.rebalance_trigger_time.clone(),
            ),
            (
                "asg-termination-delay-sec",
                self.asg_termination_delay_sec.map(|v| v.to_string()),
            ),
            (
                "asg-termination-trigger-time",
                self.asg_termination_trigger_time.clone(),
            ),
            (
                "save-config-to-file",
                self.save_config_to_file.then(|| "true".into()),
            ),
            (
                "watch-config-file",
                self.watch_config_file.then(|| "true".into()),
            ),
        ];
        match &self.command {
            Some(AemmCommand::Spot {
                action,
                time,
                rebalance_rec_time,
            }) => set.extend([
                ("spot.action", action.clone()),
                ("spot.time", time.clone()),
                ("spot.rebalance-rec-time", rebalance_rec_time.clone()),
            ]),
            Some(AemmCommand::Events {
                code,
                state,
                not_after,
                not_before,
                not_before_deadline,
            }) => set.extend([
                ("events.code", code.clone()),
                ("events.state", state.clone()),
                ("events.not-after", not_after.clone()),
                ("events.not-before", not_before.clone()),
                ("events.not-before-deadline", not_before_deadline.clone()),
            ]),
            Some(AemmCommand::AsgLifecycle) | None => {}
        }
        set.into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect()
    }
}
