//! A month of fleet churn in minutes ([`imds::testing::soak`]): one imds host in this process,
//! on a real store, its clock injected and moved an hour at a time.
//!
//! `cargo run --release --features testing --example soak -- --days 30` (or `scripts/soak`,
//! which runs it on SQLite and on a temporary PostgreSQL). Prints one JSON line per
//! `--sample-hours`: the simulated day, instances launched and live, this process' RSS and open
//! files, the size of `/metrics`, and the store's rows (per table) and bytes. The last line
//! compares the end with the first sample of the steady state (two days in: the day-long
//! windows of tokens, tombstones and history are full); `--max-growth P` makes the exit status 1 when any measure grew by
//! more than P percent.

use clap::Parser;
use imds::store::Location;
use imds::testing::soak::{Sample, Settings, Soak};

/// How long, and how hard.
#[derive(Debug, Parser)]
#[command(about = "A month of imds fleet churn in minutes, with an injected clock")]
struct Args {
    /// Simulated days.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Instances kept running.
    #[arg(long, default_value_t = Settings::default().live)]
    live: usize,
    /// Instances launched (and as many terminated) each simulated hour; the default makes about
    /// 10^5 in 30 days.
    #[arg(long, default_value_t = Settings::default().launches_per_hour)]
    launches_per_hour: usize,
    /// Guests that make requests each simulated hour.
    #[arg(long, default_value_t = Settings::default().guests_per_hour)]
    guests_per_hour: usize,
    /// Maintenance events scheduled each simulated hour (each ended an hour later).
    #[arg(long, default_value_t = Settings::default().events_per_hour)]
    events_per_hour: usize,
    /// Faults injected each simulated hour (each cleared an hour later).
    #[arg(long, default_value_t = Settings::default().faults_per_hour)]
    faults_per_hour: usize,
    /// Simulated hours between samples.
    #[arg(long, default_value_t = 24)]
    sample_hours: u64,
    /// The store: a state directory (default: a new temporary one) or postgres://USER@HOST/DB.
    #[arg(long)]
    store: Option<String>,
    /// Exit 1 when a measure grew by more than this many percent from the steady state to the
    /// end.
    #[arg(long)]
    max_growth: Option<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let settings = Settings {
        live: args.live,
        launches_per_hour: args.launches_per_hour,
        guests_per_hour: args.guests_per_hour,
        events_per_hour: args.events_per_hour,
        faults_per_hour: args.faults_per_hour,
    };
    let temporary = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = match &args.store {
        Some(text) => Location::parse(text)?,
        None => Location::StateDir(temporary.path().join("state")),
    };
    let mut soak = Soak::start(settings, store).await?;
    let hours = args.days * 24;
    let mut samples: Vec<Sample> = Vec::new();
    for hour in 1..=hours {
        soak.hour().await?;
        if hour % args.sample_hours.max(1) == 0 || hour == hours {
            let sample = soak.sample().await?;
            println!(
                "{}",
                serde_json::to_string(&sample).map_err(|e| e.to_string())?
            );
            samples.push(sample);
        }
    }
    summarize(&args, &samples)
}

/// Prints the growth from the steady state to the end; an error past `--max-growth`.
fn summarize(args: &Args, samples: &[Sample]) -> Result<(), String> {
    let (Some(steady), Some(end)) = (
        samples.iter().find(|s| s.day >= 2.0).or(samples.first()),
        samples.last(),
    ) else {
        return Err("no sample was taken: run at least one simulated hour".into());
    };
    let growth = steady.growth_to(end);
    let summary = serde_json::json!({
        "steady_day": steady.day,
        "end_day": end.day,
        "launched": end.launched,
        "growth_percent": growth,
    });
    println!("{summary}");
    if let Some(limit) = args.max_growth {
        let over: Vec<String> = growth
            .iter()
            .filter(|(_, percent)| **percent > limit)
            .map(|(name, percent)| format!("{name} grew {percent} %"))
            .collect();
        if !over.is_empty() {
            return Err(format!(
                "beyond --max-growth {limit} %: {}",
                over.join(", ")
            ));
        }
    }
    Ok(())
}
