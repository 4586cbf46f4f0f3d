//! Helpers for tests that need real network namespaces (root, iproute2, curl): creating and
//! removing namespaces, running imds and curl inside them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const IMDS: &str = env!("CARGO_BIN_EXE_imds");

/// Runs `ip` and asserts it succeeded.
pub fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2) runs");
    assert!(status.success(), "ip {}", args.join(" "));
}

/// Network namespaces named `imds<pid>-<role>`, each with `lo` up; removed on drop.
pub struct Namespaces {
    prefix: String,
    roles: Vec<&'static str>,
}

impl Namespaces {
    pub fn new(test: &str, roles: &[&'static str]) -> Namespaces {
        let namespaces = Namespaces {
            prefix: format!("imds{}{test}", std::process::id() % 100_000),
            roles: roles.to_vec(),
        };
        for role in roles {
            let ns = namespaces.name(role);
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        namespaces
    }

    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Starts `imds serve ARGS` inside `role`'s namespace and waits for its addresses.
    pub fn serve(&self, role: &str, args: &[&str]) -> Served {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name(role), IMDS, "serve"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut endpoints = Vec::new();
        loop {
            let line = lines.next().expect("imds printed its addresses").unwrap();
            match line.strip_prefix("listening on ") {
                Some(endpoint) => endpoints.push(endpoint.to_owned()),
                None => break,
            }
        }
        Served { child, endpoints }
    }

    /// `curl` from inside `role`'s namespace: the HTTP status and body, or `None` on a timeout.
    pub fn curl(&self, role: &str, method: &str, url: &str) -> Option<(u16, String)> {
        self.try_curl(role, method, url)
            .unwrap_or_else(|code| panic!("curl {method} {url} from {role}: exit {code}"))
    }

    /// Like [`Namespaces::curl`], but a failure to connect is `Err(curl's exit code)`.
    pub fn try_curl(
        &self,
        role: &str,
        method: &str,
        url: &str,
    ) -> Result<Option<(u16, String)>, i32> {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name(role),
                "curl",
                "-s",
                "-w",
                "\n%{http_code}",
                "-m",
                "2",
            ])
            .args([
                "-X",
                method,
                "-H",
                "X-aws-ec2-metadata-token-ttl-seconds: 60",
                url,
            ])
            .output()
            .expect("curl runs");
        match output.status.code() {
            Some(0) => {
                let text = String::from_utf8_lossy(&output.stdout).into_owned();
                let (body, status) = text.rsplit_once('\n').unwrap();
                Ok(Some((status.parse().unwrap(), body.to_owned())))
            }
            Some(28) => Ok(None),
            other => Err(other.unwrap_or(-1)),
        }
    }

    /// The addresses configured in `role`'s namespace, one per line (`ip -o addr`).
    pub fn addresses(&self, role: &str) -> String {
        let output = Command::new("ip")
            .args(["-n", &self.name(role), "-o", "addr"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for role in &self.roles {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name(role)])
                .status();
        }
    }
}

/// A running `imds serve`; killed on drop.
pub struct Served {
    pub child: Child,
    pub endpoints: Vec<String>,
}

impl Served {
    /// Sends `signal` (e.g. `TERM`, `KILL`), waits for the exit, returns stderr.
    pub fn signal(mut self, signal: &str) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
