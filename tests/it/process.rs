//! `imds serve` as a child process, started from any command line (directly, or inside a network
//! namespace), with the addresses it announces, signalled the way an operator would.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const IMDS: &str = env!("CARGO_BIN_EXE_imds");

/// A running `imds serve`; killed on drop.
pub struct Served {
    pub child: Child,
    /// Each `listening on http://ADDR`, as `http://ADDR`.
    pub endpoints: Vec<String>,
    /// Each `control API on http://ADDR`, as `http://ADDR`.
    pub control: Vec<String>,
    /// The line after them (`export AWS_EC2_METADATA_SERVICE_ENDPOINT=...`).
    pub export_line: String,
}

impl Served {
    /// Spawns `command`, which runs `imds serve ...`, and reads the addresses it announces.
    /// Unless the command says otherwise, the control API takes a free port (tests run many
    /// servers at once).
    pub fn spawn(mut command: Command) -> Served {
        if !command
            .get_envs()
            .any(|(key, _)| key == "IMDS_CONTROL_LISTEN")
        {
            command.env("IMDS_CONTROL_LISTEN", "127.0.0.1:0");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut endpoints, mut control) = (Vec::new(), Vec::new());
        let export_line = loop {
            let line = lines
                .next()
                .expect("imds serve printed its addresses")
                .unwrap();
            if let Some(endpoint) = line.strip_prefix("listening on ") {
                endpoints.push(endpoint.to_owned());
            } else if let Some(endpoint) = line.strip_prefix("control API on ") {
                control.push(endpoint.to_owned());
            } else {
                break line;
            }
        };
        Served {
            child,
            endpoints,
            control,
            export_line,
        }
    }

    /// Sends `signal` (`HUP`, `TERM`, `KILL`, ...) and goes on.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Sends `signal`, waits (at most 10 s) for the exit, and returns its status and stderr.
    pub fn stop(mut self, signal: &str) -> (ExitStatus, String) {
        self.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "imds did not stop within 10 s of SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .as_mut()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `imds serve` on a free loopback port with `args`.
pub fn serve(args: &[&str]) -> Served {
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args);
    Served::spawn(command)
}

/// One raw HTTP/1.1 exchange with `addr` (`{addr}` in `request` becomes it): the status and
/// body, or the I/O error when the server is gone before answering in full.
pub fn exchange(addr: &str, request: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let addr = addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.replace("{addr}", addr).as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no full answer: {answer:?}")))?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

/// A plain GET on the guest API: status and body.
pub fn get(served: &Served, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {{addr}}\r\n\r\n");
    exchange(&served.endpoints[0], &request).unwrap()
}

/// `imds ctl ARGS` against `served`: exit code, stdout and stderr.
pub fn ctl(served: &Served, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(IMDS)
        .args(["ctl", "--endpoint", &served.control[0]])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `imds ctl ARGS`: its stdout, or a panic with its stderr.
pub fn ctl_ok(served: &Served, args: &[&str]) -> String {
    let (code, stdout, stderr) = ctl(served, args);
    assert_eq!(code, 0, "imds ctl {args:?}: {stderr}");
    stdout
}
