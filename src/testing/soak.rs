//! A month of fleet churn in minutes: one imds host in this process, on its real store (SQLite
//! in a state directory, or PostgreSQL), with an injected clock moved forward an hour at a
//! time, driven through its real control and guest APIs as operators and guests drive it. Used
//! by `examples/soak.rs` (`scripts/soak`) and by the test suite, to show that a month of churn
//! leaves memory, `/metrics` and the store as they are for the fleet live at the end: from the
//! second simulated day on (once the day-long windows of tokens, tombstones and history are full,
//! and PostgreSQL's indexes have grown to their working size) nothing grows.
//!
//! Every simulated [`Soak::hour`]: [`Settings::launches_per_hour`] instances are launched with
//! `RunInstances` and as many of the oldest terminated (so [`Settings::live`] stay running); a
//! few guests fetch tokens, read leaves and make token-less requests (the token-less history);
//! maintenance events are scheduled, then completed or canceled; faults are injected, then
//! cleared; the token keys are rotated; and the sweeps of `imds serve` (forgetting terminated
//! instances, writing the history) run as the clock passes each ten minutes.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::app::config::{Config, Overrides};
use crate::clock::{Clock, ManualClock};
use crate::control::Persisted;
use crate::fleet::identity::IdentitySigner;
use crate::fleet::keys::Keys;
use crate::fleet::secret::ServerSecret;
use crate::store::{Location, Store};
use crate::App;

/// How hard each simulated hour churns.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Instances kept running.
    pub live: usize,
    /// Instances launched (and as many terminated) each simulated hour.
    pub launches_per_hour: usize,
    /// Guests that make requests each simulated hour.
    pub guests_per_hour: usize,
    /// Maintenance events scheduled each simulated hour (each ended an hour later).
    pub events_per_hour: usize,
    /// Faults injected each simulated hour (each cleared an hour later).
    pub faults_per_hour: usize,
}

impl Default for Settings {
    /// About 10^5 instances in 30 days, 150 of them live at a time.
    fn default() -> Self {
        Settings {
            live: 150,
            launches_per_hour: 140,
            guests_per_hour: 20,
            events_per_hour: 6,
            faults_per_hour: 4,
        }
    }
}

/// 2026-11-02T00:00:00Z.
const START_MILLIS: u64 = 1_793_577_600_000;
const HOUR: Duration = Duration::from_secs(3600);
/// The sweeps run as the clock passes each of these.
const STEP: Duration = Duration::from_secs(600);

/// What one [`Soak::sample`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Simulated days since the start.
    pub day: f64,
    /// Instances launched so far.
    pub launched: usize,
    /// Instances running now.
    pub live: usize,
    /// Instances `DescribeInstances` shows (running, the file's, and those terminated within
    /// the hour EC2 still shows them).
    pub served: usize,
    /// This process' resident set, in KiB (meaningful when the soak runs alone in it).
    pub rss_kib: u64,
    /// This process' open files.
    pub open_files: usize,
    /// The size of the control API's `/metrics`.
    pub metrics_bytes: usize,
    /// The store's rows, per table.
    pub store_rows: BTreeMap<String, i64>,
    /// The store's size: the pages in use (SQLite), the tables with their indexes (PostgreSQL).
    pub store_bytes: i64,
    /// Real seconds since the start.
    pub wall_seconds: f64,
}

impl Sample {
    /// The measures that must not grow with the history, by name.
    pub fn bounded(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("rss_kib", self.rss_kib as f64),
            ("open_files", self.open_files as f64),
            ("metrics_bytes", self.metrics_bytes as f64),
            (
                "store_rows",
                self.store_rows.values().sum::<i64>().max(0) as f64,
            ),
            ("store_bytes", self.store_bytes as f64),
            ("served", self.served as f64),
        ]
    }

    /// How much each [`bounded`](Sample::bounded) measure grew from `self` to `later`, in
    /// percent (rounded to a tenth).
    pub fn growth_to(&self, later: &Sample) -> BTreeMap<&'static str, f64> {
        self.bounded()
            .into_iter()
            .zip(later.bounded())
            .map(|((name, from), (_, to))| {
                let percent = if from != 0.0 {
                    (to - from) / from * 100.0
                } else if to == 0.0 {
                    0.0
                } else {
                    100.0
                };
                (name, (percent * 10.0).round() / 10.0)
            })
            .collect()
    }
}

/// A launched instance the soak still runs.
#[derive(Debug)]
struct Running {
    id: String,
    address: IpAddr,
}

/// The host under test and what it drives.
pub struct Soak {
    settings: Settings,
    app: App,
    clock: Arc<ManualClock>,
    store: Location,
    hours: u64,
    running: VecDeque<Running>,
    /// Scheduled events not yet ended: instance and event id.
    events: VecDeque<(String, String)>,
    /// Faults set: instance and fault id, with the hour they were set.
    faults: VecDeque<(String, String, u64)>,
    launched: usize,
    started: Instant,
}

impl Soak {
    /// A host on the store at `store` (migrated when new), with the fleet's one file instance.
    pub async fn start(settings: Settings, store: Location) -> Result<Soak, String> {
        let opened = Arc::new(Store::open(&store).await.map_err(|e| e.to_string())?);
        let everything = opened.load_since(-1).await.map_err(|e| e.to_string())?;
        let persisted =
            Persisted::from_store(Some(opened), everything).map_err(|e| e.to_string())?;
        let source = PathBuf::from("soak-fleet.toml");
        let loaded = Config::from_text(&source, super::FLEET_TOML)
            .and_then(|config| config.resolve(&Overrides::default(), Some(&source)))
            .map_err(|e| e.to_string())?;
        let clock = Arc::new(ManualClock::at_millis(START_MILLIS));
        let keys = Keys {
            secret: ServerSecret::random(),
            signer: Arc::new(IdentitySigner::generate().map_err(|e| e.to_string())?),
            token_generations: Vec::new(),
        };
        let app =
            App::new(loaded, &keys, clock.clone(), persisted, None).map_err(|e| e.to_string())?;
        Ok(Soak {
            settings,
            app,
            clock,
            store,
            hours: 0,
            running: VecDeque::new(),
            events: VecDeque::new(),
            faults: VecDeque::new(),
            launched: 0,
            started: Instant::now(),
        })
    }

    /// One simulated hour of churn, guests, events, faults and a key rotation.
    pub async fn hour(&mut self) -> Result<(), String> {
        let hour = self.hours;
        self.hours += 1;
        self.launch(self.settings.launches_per_hour).await?;
        while self.running.len() > self.settings.live {
            let gone = self
                .running
                .pop_front()
                .expect("more than live are running");
            self.control(&format!(
                "Action=TerminateInstances&InstanceId.1={}",
                gone.id
            ))
            .await?;
        }
        self.guests(hour).await?;
        self.events(hour).await?;
        self.faults(hour).await?;
        self.control("Action=RotateKeys").await?;
        // The minute sweeps of `imds serve`, as the clock passes.
        let mut passed = Duration::ZERO;
        while passed < HOUR {
            self.clock.advance(STEP);
            passed += STEP;
            self.app.control.forget_gone().await;
            let minute = self.clock.now_millis() / 60_000;
            self.app
                .control
                .flush_history(minute.saturating_sub(STEP.as_secs() / 60))
                .await
                .map_err(|e| format!("the history could not be written: {e}"))?;
        }
        Ok(())
    }

    /// Launches `count` instances in one `RunInstances`.
    async fn launch(&mut self, count: usize) -> Result<(), String> {
        if count == 0 {
            return Ok(());
        }
        let xml = self
            .control(&format!(
                "Action=RunInstances&ImageId=ami-0abcdef1234567890&InstanceType=t3.micro&MinCount={count}&MaxCount={count}&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=soak&TagSpecification.1.Tag.1.Value=yes"
            ))
            .await?;
        let ids = elements(&xml, "instanceId");
        let addresses = elements(&xml, "privateIpAddress");
        for id in &ids {
            // The first privateIpAddress after the instance's id is its primary one.
            let at = xml
                .find(&format!("<instanceId>{id}</instanceId>"))
                .unwrap_or(0);
            let address = elements(&xml[at..], "privateIpAddress")
                .first()
                .or(addresses.first())
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("RunInstances answered no address for {id}"))?;
            self.running.push_back(Running {
                id: (*id).to_owned(),
                address,
            });
        }
        self.launched += ids.len();
        Ok(())
    }

    /// Guests spread over the running instances: a token, a leaf with it, a token-less read.
    async fn guests(&mut self, hour: u64) -> Result<(), String> {
        let n = self.running.len();
        for i in 0..self.settings.guests_per_hour.min(n) {
            let running = &self.running[(hour as usize * 7 + i * 13) % n];
            let peer = SocketAddr::new(running.address, 40_000);
            let (status, token) = self
                .guest(
                    peer,
                    Method::PUT,
                    "/latest/api/token",
                    Some(("x-aws-ec2-metadata-token-ttl-seconds", "21600")),
                )
                .await;
            if status != StatusCode::OK {
                return Err(format!("{}: token PUT answered {status}", running.id));
            }
            let (status, id) = self
                .guest(
                    peer,
                    Method::GET,
                    "/latest/meta-data/instance-id",
                    Some(("x-aws-ec2-metadata-token", &token)),
                )
                .await;
            if status != StatusCode::OK || id != running.id {
                return Err(format!(
                    "{}: the guest at {peer} was answered {status} {id}",
                    running.id
                ));
            }
            // Token-less: counted in the token-less history (and answered, HttpTokens optional).
            self.guest(peer, Method::GET, "/latest/meta-data/ami-id", None)
                .await;
        }
        Ok(())
    }

    /// Schedules events on running instances; completes or cancels the older ones.
    async fn events(&mut self, hour: u64) -> Result<(), String> {
        let n = self.running.len();
        for i in 0..self.settings.events_per_hour.min(n) {
            let id = self.running[(hour as usize * 5 + i * 11) % n].id.clone();
            let xml = self
                .control(&format!(
                    "Action=ScheduleInstanceEvent&InstanceId={id}&Code=system-reboot&NotBefore=%2B2h"
                ))
                .await?;
            let event = element(&xml, "instanceEventId")
                .ok_or_else(|| format!("ScheduleInstanceEvent answered no event id: {xml}"))?;
            self.events.push_back((id, event.to_owned()));
        }
        while self.events.len() > self.settings.events_per_hour {
            let (id, event) = self.events.pop_front().expect("events are pending");
            let action = match event.len() % 2 {
                0 => "CompleteInstanceEvent",
                _ => "CancelInstanceEvent",
            };
            // The instance may be terminated (or forgotten) since: EC2's error is the answer.
            let _ = self
                .control_any(&format!(
                    "Action={action}&InstanceId={id}&InstanceEventId={event}"
                ))
                .await;
        }
        Ok(())
    }

    /// Injects faults on running instances; clears those set an hour ago.
    async fn faults(&mut self, hour: u64) -> Result<(), String> {
        let n = self.running.len();
        for i in 0..self.settings.faults_per_hour.min(n) {
            let id = self.running[(hour as usize * 3 + i * 17) % n].id.clone();
            let xml = self
                .control(&format!(
                    "Action=InjectFault&InstanceId={id}&Path=%2Flatest%2Fmeta-data%2Fhostname&Status=503&Count=3"
                ))
                .await?;
            let fault = element(&xml, "faultId")
                .ok_or_else(|| format!("InjectFault answered no fault id: {xml}"))?;
            self.faults.push_back((id, fault.to_owned(), hour));
        }
        while self.faults.front().is_some_and(|(_, _, at)| *at < hour) {
            let (id, fault, _) = self.faults.pop_front().expect("a fault is set");
            let _ = self
                .control_any(&format!(
                    "Action=ClearFaults&InstanceId={id}&FaultId.1={fault}"
                ))
                .await;
        }
        Ok(())
    }

    /// What the host and its store hold now.
    pub async fn sample(&self) -> Result<Sample, String> {
        // Before the store is measured, whose connection would count.
        let (rss_kib, open_files) = (rss_kib(), open_files());
        let metrics = self.request(Method::GET, "/metrics", Bytes::new()).await;
        let (store_rows, store_bytes) = store_footprint(&self.store).await?;
        let served = self.control("Action=DescribeInstances").await?;
        Ok(Sample {
            day: (self.clock.now_millis() - START_MILLIS) as f64 / 86_400_000.0,
            launched: self.launched,
            live: self.running.len(),
            served: elements(&served, "instanceId").len(),
            rss_kib,
            open_files,
            metrics_bytes: metrics.1.len(),
            store_rows,
            store_bytes,
            wall_seconds: self.started.elapsed().as_secs_f64(),
        })
    }

    /// An EC2 Query request that must succeed: its XML answer.
    async fn control(&self, params: &str) -> Result<String, String> {
        let (status, xml) = self.control_any(params).await;
        if status != StatusCode::OK {
            return Err(format!("{params}: {status} {xml}"));
        }
        Ok(xml)
    }

    /// An EC2 Query request: its status and answer.
    async fn control_any(&self, params: &str) -> (StatusCode, String) {
        let body = Bytes::from(format!("{params}&Version=2016-11-15"));
        self.request(Method::POST, "/", body).await
    }

    /// Any request to the control API.
    async fn request(&self, method: Method, path: &str, body: Bytes) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:1339")
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(Full::new(body))
            .expect("a valid request");
        let response = self.app.control.handle(request).await;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A guest request from `peer`: its status and body.
    async fn guest(
        &self,
        peer: SocketAddr,
        method: Method,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let request = request.body(()).expect("a valid request");
        let response = self.app.api.handle(&request, peer);
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// This process' resident set, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// This process' open files.
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The store's rows per table and its size in bytes.
async fn store_footprint(store: &Location) -> Result<(BTreeMap<String, i64>, i64), String> {
    match store {
        Location::StateDir(dir) => {
            let path = dir.join(crate::store::sqlite::DATABASE_FILE);
            let connection = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            let tables: Vec<String> = connection
                .prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'table'
                     AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'refinery_%'",
                )
                .and_then(|mut s| {
                    s.query_map([], |row| row.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(|e| e.to_string())?;
            let mut rows = BTreeMap::new();
            for table in tables {
                let count: i64 = connection
                    .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                        r.get(0)
                    })
                    .map_err(|e| e.to_string())?;
                rows.insert(table, count);
            }
            // The pages in use: the file keeps freed pages for reuse.
            let used: i64 = connection
                .query_row(
                    "SELECT (page_count - freelist_count) * page_size
                     FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| e.to_string())?;
            Ok((rows, used))
        }
        Location::Postgres(url) => {
            let (client, connection) = tokio_postgres::connect(url.expose(), tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            // What autovacuum does within a minute of real time: a simulated day passes in
            // seconds, faster than it wakes, and dead rows would count as growth.
            client
                .batch_execute("VACUUM")
                .await
                .map_err(|e| e.to_string())?;
            let tables = client
                .query(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
                     AND tablename NOT LIKE 'refinery_%'",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            let mut rows = BTreeMap::new();
            let mut bytes = 0;
            for table in tables {
                let table: String = table.get(0);
                let count: i64 = client
                    .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
                    .await
                    .map_err(|e| e.to_string())?
                    .get(0);
                let size: i64 = client
                    .query_one(
                        "SELECT pg_total_relation_size(format('%I', $1::text)::regclass)",
                        &[&table],
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .get(0);
                rows.insert(table, count);
                bytes += size;
            }
            Ok((rows, bytes))
        }
    }
}

/// The text of the first `<tag>` element.
fn element<'x>(xml: &'x str, tag: &str) -> Option<&'x str> {
    elements(xml, tag).into_iter().next()
}

/// The text of every `<tag>` element, in order.
fn elements<'x>(xml: &'x str, tag: &str) -> Vec<&'x str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        found.push(&rest[..end]);
        rest = &rest[end + close.len()..];
    }
    found
}
