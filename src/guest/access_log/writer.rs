//! The access log's writer: takes lines off the queue, formats them as JSON and appends them to
//! the file (or stdout) through a buffer, flushed whenever the queue runs empty; reopens the file
//! when asked; warns, at most every 10 s, about dropped entries and failed writes.
//!
//! After each batch it pauses for [`PAUSE`] before waiting on the queue again: a request that
//! finds the writer waiting must wake it (a system call on the request path), and under load the
//! pause means requests almost never find it waiting. Lines reach the file at most a few
//! milliseconds later.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use super::Line;
use crate::metrics::Metrics;

/// How often an idle writer looks at the reopen flag and the drop count.
const TICK: Duration = Duration::from_secs(1);
/// Lines written between two flushes at most, when the queue never runs empty.
const BATCH: usize = 4096;
/// Rest between batches, gathering the next one.
const PAUSE: Duration = Duration::from_millis(2);
/// At most one warning of each kind this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
const BUFFER: usize = 64 * 1024;
const SECOND: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// The access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {}: {source}", path.display())]
pub struct AccessLogError {
    path: PathBuf,
    source: io::Error,
}

/// Where access-log lines go: a file opened for appending, or stdout.
pub struct Destination {
    /// The file; `None` for stdout.
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Destination {
    /// Opens `path` for appending, creating it (mode 0640) if missing; `-` means stdout.
    pub fn open(path: &Path) -> Result<Destination, AccessLogError> {
        if path == Path::new("-") {
            return Ok(Destination {
                path: None,
                out: BufWriter::with_capacity(BUFFER, Box::new(io::stdout())),
            });
        }
        let file = append(path).map_err(|source| AccessLogError {
            path: path.to_owned(),
            source,
        })?;
        Ok(Destination {
            path: Some(path.to_owned()),
            out: BufWriter::with_capacity(BUFFER, Box::new(file)),
        })
    }

    /// Flushes, then opens the file's path again (a new file if it was moved away).
    fn reopen(&mut self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        self.out.flush()?;
        self.out = BufWriter::with_capacity(BUFFER, Box::new(append(path)?));
        Ok(())
    }

    fn write(&mut self, line: &Line, clock: &mut TimeText) -> io::Result<()> {
        let entry = &line.entry;
        let json = Json {
            time: clock.format(entry.time),
            peer: entry.peer,
            instance: &entry.instance,
            method: entry.method.as_str(),
            path: entry.uri.path(),
            status: entry.status,
            version: entry.version.label(),
            latency_us: u64::try_from(entry.latency.as_micros()).unwrap_or(u64::MAX),
            pid: line.caller.as_ref().map(|c| c.pid),
            cmdline: line.caller.as_ref().map(|c| c.cmdline.as_str()),
        };
        serde_json::to_writer(&mut self.out, &json)?;
        self.out.write_all(b"\n")
    }
}

fn append(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Formats times as RFC 3339 UTC with milliseconds, formatting each second once.
#[derive(Default)]
struct TimeText {
    second: Option<i64>,
    text: String,
}

impl TimeText {
    fn format(&mut self, time: SystemTime) -> &str {
        let time = OffsetDateTime::from(time);
        if self.second != Some(time.unix_timestamp()) {
            self.second = Some(time.unix_timestamp());
            self.text = time.format(SECOND).unwrap_or_default();
            self.text.push_str(".000Z");
        }
        let millis = time.millisecond();
        let digits = [millis / 100, millis / 10 % 10, millis % 10].map(|d| b'0' + d as u8);
        let at = self.text.len() - 4;
        self.text
            .replace_range(at..at + 3, std::str::from_utf8(&digits).unwrap_or("000"));
        &self.text
    }
}

/// One line of the file; see the module documentation of `access_log` for the fields.
#[derive(Serialize)]
struct Json<'a> {
    time: &'a str,
    peer: SocketAddr,
    instance: &'a str,
    method: &'a str,
    path: &'a str,
    status: u16,
    version: &'static str,
    latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmdline: Option<&'a str>,
}

/// The writer's state. It must not hold the queue's sender: the writer ends when the last one
/// is dropped.
pub(super) struct Writer {
    destination: Destination,
    reopen: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    clock: TimeText,
    drops_reported: u64,
    drop_warning: Limiter,
    error_warning: Limiter,
}

impl Writer {
    pub(super) fn new(
        destination: Destination,
        reopen: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Writer {
        Writer {
            destination,
            reopen,
            metrics,
            clock: TimeText::default(),
            drops_reported: 0,
            drop_warning: Limiter::default(),
            error_warning: Limiter::default(),
        }
    }

    /// Writes lines until every sender is gone, then flushes.
    pub(super) fn run(mut self, lines: Receiver<Line>) {
        loop {
            let first = match lines.recv_timeout(TICK) {
                Ok(line) => Some(line),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if self.reopen.swap(false, Ordering::Relaxed) {
                if let Err(error) = self.destination.reopen() {
                    tracing::error!(%error, "cannot reopen the access log");
                }
            }
            if let Some(first) = first {
                let batch = std::iter::once(first).chain(lines.try_iter().take(BATCH));
                self.write(batch);
                std::thread::sleep(PAUSE);
            }
            self.report_drops();
        }
        let _ = self.destination.out.flush();
    }

    fn write(&mut self, batch: impl Iterator<Item = Line>) {
        let mut result = Ok(());
        for line in batch {
            result = result.and(self.destination.write(&line, &mut self.clock));
        }
        if let Err(error) = result.and(self.destination.out.flush()) {
            if self.error_warning.due() {
                tracing::warn!(%error, "cannot write the access log; lines are lost");
            }
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.metrics.access_log_drops();
        if dropped > self.drops_reported && self.drop_warning.due() {
            tracing::warn!(
                dropped,
                "the access log fell behind; entries were dropped (imds_access_log_dropped_total)"
            );
            self.drops_reported = dropped;
        }
    }
}

/// Allows something at most once every [`WARN_EVERY`].
#[derive(Default)]
struct Limiter(Option<Instant>);

impl Limiter {
    fn due(&mut self) -> bool {
        let due = self.0.is_none_or(|last| last.elapsed() >= WARN_EVERY);
        if due {
            self.0 = Some(Instant::now());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::access_log::{Caller, Entry};
    use crate::metrics::ImdsVersion;
    use std::time::UNIX_EPOCH;

    fn line(caller: Option<Caller>) -> Line {
        Line {
            entry: Entry {
                time: UNIX_EPOCH + Duration::from_millis(1_793_607_269_123),
                peer: "[::1]:50412".parse().unwrap(),
                instance: "i-0b4f7d2c9a1e83f56".into(),
                method: http::Method::GET,
                uri: "/latest/meta-data/ami-id?secret=s3cr3t".parse().unwrap(),
                status: 200,
                version: ImdsVersion::V1,
                latency: Duration::from_micros(1500),
            },
            caller: caller.map(Arc::new),
        }
    }

    fn written(lines: &[Line]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut destination = Destination::open(&path).unwrap();
        let mut clock = TimeText::default();
        for line in lines {
            destination.write(line, &mut clock).unwrap();
        }
        destination.out.flush().unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_line_is_one_json_object_with_the_documented_fields() {
        let caller = Caller {
            pid: 4242,
            uid: 0,
            cmdline: "python3 -c \"poll()\"".into(),
        };
        let text = written(&[line(None), line(Some(caller))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"time":"2026-11-02T08:14:29.123Z","peer":"[::1]:50412","instance":"i-0b4f7d2c9a1e83f56","method":"GET","path":"/latest/meta-data/ami-id","status":200,"version":"v1","latency_us":1500}"#
        );
        assert!(
            lines[1]
                .ends_with(r#""latency_us":1500,"pid":4242,"cmdline":"python3 -c \"poll()\""}"#),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn stdout_is_a_dash_and_missing_directories_name_the_path() {
        assert!(Destination::open(Path::new("-")).unwrap().path.is_none());
        let error = Destination::open(Path::new("/nonexistent/imds/access.log"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with("cannot open the access log /nonexistent/imds/access.log: "),
            "{error}"
        );
    }

    #[test]
    fn times_have_milliseconds_and_change_second() {
        let mut clock = TimeText::default();
        let at = |millis: u64| UNIX_EPOCH + Duration::from_millis(millis);
        assert_eq!(
            clock.format(at(1_793_607_269_007)),
            "2026-11-02T08:14:29.007Z"
        );
        assert_eq!(
            clock.format(at(1_793_607_269_990)),
            "2026-11-02T08:14:29.990Z"
        );
        assert_eq!(
            clock.format(at(1_793_607_270_050)),
            "2026-11-02T08:14:30.050Z"
        );
        assert_eq!(clock.format(at(0)), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn limiters_allow_one_warning_per_period() {
        let mut limiter = Limiter::default();
        assert!(limiter.due());
        assert!(!limiter.due());
    }
}
