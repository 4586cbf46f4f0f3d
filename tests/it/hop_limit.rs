//! The hop limit on the wire, with real packets: network namespaces for a server, a neighbour on
//! the server's own link, a router (forwarding on) and a client one router hop away.
//!
//! ```text
//!  client 10.99.2.1 ── router (10.99.2.254 | bridge 10.99.1.254) ── server 10.99.1.1 (imds)
//!  fd99:2::1                                   fd99:1::fe      │── neighbour 10.99.1.2, fd99:1::2
//! ```
//! Needs root and `ip netns` (iproute2) and curl; `scripts/test` runs it where namespaces can be
//! created and says so where they cannot.

use crate::netns::{ip, Namespaces};

/// Builds the four namespaces and their links.
fn lab() -> Namespaces {
    let lab = Namespaces::new("h", &["srv", "nbr", "rtr", "cli"]);
    let (srv, nbr, rtr, cli) = (
        lab.name("srv"),
        lab.name("nbr"),
        lab.name("rtr"),
        lab.name("cli"),
    );
    for (ns, inside) in [(&srv, "s"), (&nbr, "n"), (&cli, "c")] {
        let (here, there) = (format!("{inside}0"), format!("{inside}1"));
        ip(&[
            "link", "add", &here, "netns", ns, "type", "veth", "peer", "name", &there, "netns",
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

fn status(answer: Option<(u16, String)>) -> Option<u16> {
    answer.map(|(status, _)| status)
}

const TOKEN_V4: &str = "http://10.99.1.1:1338/latest/api/token";
const TOKEN_V6: &str = "http://[fd99:1::1]:1338/latest/api/token";
const LEAF_V4: &str = "http://10.99.1.1:1338/latest/meta-data/instance-id";
const LEAF_V6: &str = "http://[fd99:1::1]:1338/latest/meta-data/instance-id";

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn a_token_never_reaches_a_caller_beyond_the_hop_limit() {
    let lab = lab();
    let serve = |hops: &str| {
        let args = [
            "--listen",
            "10.99.1.1:1338",
            "--listen",
            "[fd99:1::1]:1338",
            "--hop-limit",
            hops,
        ];
        lab.serve("srv", &args)
    };
    {
        let _imds = serve("1");
        for (token, leaf) in [(TOKEN_V4, LEAF_V4), (TOKEN_V6, LEAF_V6)] {
            let neighbour = status(lab.curl("nbr", "PUT", token));
            assert_eq!(
                neighbour,
                Some(200),
                "the neighbour on the server's link gets a token"
            );
            let routed = status(lab.curl("cli", "PUT", token));
            assert_eq!(routed, None, "one router further, the token PUT times out");
            let v1 = status(lab.curl("cli", "GET", leaf));
            assert_eq!(v1, Some(200), "other answers still reach the routed client");
        }
    }
    let _imds = serve("2");
    for token in [TOKEN_V4, TOKEN_V6] {
        assert_eq!(status(lab.curl("nbr", "PUT", token)), Some(200));
        let routed = status(lab.curl("cli", "PUT", token));
        assert_eq!(routed, Some(200), "hop limit 2 reaches one router further");
    }
}
