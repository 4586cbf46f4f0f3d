//! The hop limit on the wire, with real packets: network namespaces for a server, a neighbour on
//! the server's own link, a router (forwarding on) and a client one router hop away.
//!
//! ```text
//!  client 10.99.2.1 ── router (10.99.2.254 | bridge 10.99.1.254) ── server 10.99.1.1 (imds)
//!  fd99:2::1                                   fd99:1::fe      │── neighbour 10.99.1.2, fd99:1::2
//! ```
//! Needs root and `ip netns` (iproute2) and curl; `scripts/test` runs it where namespaces can be
//! created and says so where they cannot.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const IMDS: &str = env!("CARGO_BIN_EXE_imds");

/// The four namespaces, removed on drop.
struct Lab {
    prefix: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2) runs");
    assert!(status.success(), "ip {}", args.join(" "));
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn build() -> Lab {
        let lab = Lab {
            prefix: format!("imds{}", std::process::id() % 100_000),
        };
        let (srv, nbr, rtr, cli) = (lab.ns("srv"), lab.ns("nbr"), lab.ns("rtr"), lab.ns("cli"));
        for ns in [&srv, &nbr, &rtr, &cli] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        for (ns, inside) in [(&srv, "s"), (&nbr, "n"), (&cli, "c")] {
            ip(&[
                "link",
                "add",
                &format!("{inside}0"),
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{inside}1"),
                "netns",
                &rtr,
            ]);
        }
        ip(&["-n", &rtr, "link", "add", "br0", "type", "bridge"]);
        for port in ["s1", "n1"] {
            ip(&["-n", &rtr, "link", "set", port, "master", "br0"]);
        }
        for dev in ["br0", "s1", "n1", "c1"] {
            ip(&["-n", &rtr, "link", "set", dev, "up"]);
        }
        let address = |ns: &str, dev: &str, v4: &str, v6: &str| {
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        };
        address(&rtr, "br0", "10.99.1.254/24", "fd99:1::fe/64");
        address(&rtr, "c1", "10.99.2.254/24", "fd99:2::fe/64");
        for (ns, dev, v4, v6, gw4, gw6) in [
            (
                &srv,
                "s0",
                "10.99.1.1/24",
                "fd99:1::1/64",
                "10.99.1.254",
                "fd99:1::fe",
            ),
            (
                &nbr,
                "n0",
                "10.99.1.2/24",
                "fd99:1::2/64",
                "10.99.1.254",
                "fd99:1::fe",
            ),
            (
                &cli,
                "c0",
                "10.99.2.1/24",
                "fd99:2::1/64",
                "10.99.2.254",
                "fd99:2::fe",
            ),
        ] {
            address(ns, dev, v4, v6);
            ip(&["-n", ns, "route", "add", "default", "via", gw4]);
            ip(&["-n", ns, "-6", "route", "add", "default", "via", gw6]);
        }
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            ip(&["netns", "exec", &rtr, "sysctl", "-q", "-w", sysctl]);
        }
        lab
    }

    /// Starts imds in the server namespace on both of its addresses.
    fn serve(&self, hop_limit: &str) -> Served {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns("srv"), IMDS, "serve"])
            .args([
                "--listen",
                "10.99.1.1:1338",
                "--listen",
                "[fd99:1::1]:1338",
                "--hop-limit",
                hop_limit,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..2 {
            let line = lines.next().expect("imds printed its addresses").unwrap();
            assert!(line.starts_with("listening on "), "{line}");
        }
        Served(child)
    }

    /// `curl` from inside a namespace: the HTTP status, or `None` when it timed out.
    fn curl(&self, role: &str, method: &str, url: &str) -> Option<u16> {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(role),
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
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
            Some(0) => Some(String::from_utf8_lossy(&output.stdout).parse().unwrap()),
            Some(28) => None,
            other => panic!("curl {method} {url} from {role}: exit {other:?}"),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for role in ["srv", "nbr", "rtr", "cli"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(role)])
                .status();
        }
    }
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TOKEN_V4: &str = "http://10.99.1.1:1338/latest/api/token";
const TOKEN_V6: &str = "http://[fd99:1::1]:1338/latest/api/token";
const LEAF_V4: &str = "http://10.99.1.1:1338/latest/meta-data/instance-id";
const LEAF_V6: &str = "http://[fd99:1::1]:1338/latest/meta-data/instance-id";

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn a_token_never_reaches_a_caller_beyond_the_hop_limit() {
    let lab = Lab::build();
    {
        let _imds = lab.serve("1");
        for (token, leaf) in [(TOKEN_V4, LEAF_V4), (TOKEN_V6, LEAF_V6)] {
            assert_eq!(
                lab.curl("nbr", "PUT", token),
                Some(200),
                "the neighbour on the server's link gets a token"
            );
            assert_eq!(
                lab.curl("cli", "PUT", token),
                None,
                "one router further, the token PUT times out"
            );
            assert_eq!(
                lab.curl("cli", "GET", leaf),
                Some(200),
                "other answers still reach the routed client"
            );
        }
    }
    let _imds = lab.serve("2");
    for token in [TOKEN_V4, TOKEN_V6] {
        assert_eq!(lab.curl("nbr", "PUT", token), Some(200));
        assert_eq!(
            lab.curl("cli", "PUT", token),
            Some(200),
            "hop limit 2 reaches one router further"
        );
    }
}
