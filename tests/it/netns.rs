//! Helpers for tests that need real network namespaces (root, iproute2, curl): creating and
//! removing namespaces, running imds and curl inside them.

use std::process::Command;

use crate::process::{Served, IMDS};

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
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name(role), IMDS, "serve"])
            .args(args);
        Served::spawn(command)
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
        self.try_curl_with(role, method, url, &[])
    }

    /// Like [`Namespaces::curl`], with extra request `headers` (`"Name: value"`).
    pub fn curl_with(
        &self,
        role: &str,
        method: &str,
        url: &str,
        headers: &[&str],
    ) -> Option<(u16, String)> {
        self.try_curl_with(role, method, url, headers)
            .unwrap_or_else(|code| panic!("curl {method} {url} from {role}: exit {code}"))
    }

    /// Like [`Namespaces::try_curl`], with extra request `headers` (`"Name: value"`).
    pub fn try_curl_with(
        &self,
        role: &str,
        method: &str,
        url: &str,
        headers: &[&str],
    ) -> Result<Option<(u16, String)>, i32> {
        let mut command = Command::new("ip");
        command.args([
            "netns",
            "exec",
            &self.name(role),
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-m",
            "2",
        ]);
        command.args([
            "-X",
            method,
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
        ]);
        for header in headers {
            command.args(["-H", header]);
        }
        let output = command.arg(url).output().expect("curl runs");
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
