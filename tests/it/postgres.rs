//! A real PostgreSQL server from Debian's packages for the tests that share a store: `initdb`
//! (as the `postgres` user when running as root) in a temporary directory, started on a free
//! loopback port, stopped and removed when dropped. `scripts/install-test-deps` installs the
//! packages when they are missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One PostgreSQL cluster of one test.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its loopback port.
    pub port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// Creates and starts a cluster.
    pub fn start() -> Postgres {
        let bin = binaries();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("imds-pg-")
            .tempdir()
            .unwrap();
        if as_postgres {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path()));
        }
        let port = free_port();
        let postgres = Postgres {
            dir,
            bin,
            port,
            as_postgres,
        };
        postgres.tool(
            "initdb",
            &[
                "--auth=trust",
                "--username=imds",
                "--no-sync",
                "--encoding=UTF8",
                "-D",
            ],
            Some(&postgres.data()),
        );
        postgres.start_server();
        postgres
    }

    /// Its data directory.
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL of a new, empty database `name` in it.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://imds@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in database `db`; its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-U", "imds"])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "psql {sql}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        self.tool(
            "pg_ctl",
            &["-m", "fast", "-w", "stop", "-D"],
            Some(&self.data()),
        );
    }

    /// Starts the server again, on the same port.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let log = log.to_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        self.tool(
            "pg_ctl",
            &["-w", "-o", &options, "-l", &log, "start", "-D"],
            Some(&self.data()),
        );
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tool(&self, name: &str, args: &[&str], dir: Option<&Path>) {
        let program = self.bin.join(name);
        let mut command = match self.as_postgres {
            true => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(&program);
                command
            }
            false => Command::new(&program),
        };
        command.args(args);
        if let Some(dir) = dir {
            command.arg(dir);
        }
        // The server pg_ctl starts keeps inherited descriptors open: never wait for their end.
        let status = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{command:?} failed (see {})",
            self.dir.path().join("server.log").display()
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(match self.as_postgres {
            true => PathBuf::from("runuser"),
            false => self.bin.join("pg_ctl"),
        })
        .args(match self.as_postgres {
            true => vec![
                "-u".to_owned(),
                "postgres".to_owned(),
                "--".to_owned(),
                self.bin.join("pg_ctl").display().to_string(),
            ],
            false => vec![],
        })
        .args(["-m", "immediate", "stop", "-D"])
        .arg(self.data())
        .output();
    }
}

/// The newest installed PostgreSQL's binaries.
fn binaries() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/install-test-deps installs Debian's postgresql)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server with initdb under /usr/lib/postgresql")
        .1
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", text(&output));
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
