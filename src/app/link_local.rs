//! `imds serve --link-local`: serve at EC2's own addresses, 169.254.169.254:80 and (with
//! `HttpProtocolIpv6=enabled`) [fd00:ec2::254]:80, so clients need no endpoint override.
//!
//! The addresses go on a dedicated dummy interface `imds0` where the kernel offers one, else on
//! `lo`; [`LinkLocal`] removes them (and the interface) when dropped, which `imds serve` does on
//! SIGINT/SIGTERM. A leftover from a run that was killed is noticed at the next start (the address
//! is configured but nothing serves it) and replaced. Addresses are managed with iproute2's `ip`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;

/// EC2's IPv4 metadata address.
pub const IPV4: Ipv4Addr = crate::server::net::IMDS_IPV4;
/// EC2's IPv6 metadata address (Nitro instances with `HttpProtocolIpv6=enabled`).
pub const IPV6: Ipv6Addr = crate::server::net::IMDS_IPV6;
/// The dummy interface created where the kernel supports it.
pub const DUMMY_INTERFACE: &str = "imds0";

/// Why the link-local endpoints could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkLocalError {
    /// Not root (no CAP_NET_ADMIN).
    #[error(
        "--link-local needs root to put 169.254.169.254 on an interface and serve port 80: run `sudo imds serve --link-local`, \
         or serve on 127.0.0.1:1338 and send 169.254.169.254:80 there with the rules from `imds link-local --print-rules`"
    )]
    NotPermitted,
    /// `ip` is not installed.
    #[error("--link-local needs iproute2's `ip` command: {0}")]
    NoIpCommand(std::io::Error),
    /// Something else already serves the address.
    #[error("{0}:80 is already served by another process; stop it first")]
    Busy(IpAddr),
    /// `ip` refused for another reason.
    #[error("`ip {args}` failed: {message}")]
    Ip {
        /// The arguments given.
        args: String,
        /// What `ip` said.
        message: String,
    },
}

/// The link-local addresses this process added; removed on drop.
#[derive(Debug)]
pub struct LinkLocal {
    device: String,
    created_interface: bool,
    addresses: Vec<IpAddr>,
}

fn ip(args: &[&str]) -> Result<String, LinkLocalError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(LinkLocalError::NoIpCommand)?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if message.contains("Operation not permitted") {
        return Err(LinkLocalError::NotPermitted);
    }
    Err(LinkLocalError::Ip {
        args: args.join(" "),
        message,
    })
}

fn prefix(address: IpAddr) -> String {
    match address {
        IpAddr::V4(_) => format!("{address}/32"),
        IpAddr::V6(_) => format!("{address}/128"),
    }
}

impl LinkLocal {
    /// Adds 169.254.169.254 (and fd00:ec2::254 when `ipv6`) to `imds0` or `lo`.
    pub fn setup(ipv6: bool) -> Result<LinkLocal, LinkLocalError> {
        let mut addresses = vec![IpAddr::V4(IPV4)];
        if ipv6 {
            addresses.push(IpAddr::V6(IPV6));
        }
        let (device, created_interface) =
            match ip(&["link", "add", DUMMY_INTERFACE, "type", "dummy"]) {
                Ok(_) => (DUMMY_INTERFACE, true),
                Err(LinkLocalError::Ip { message, .. }) if message.contains("File exists") => {
                    (DUMMY_INTERFACE, true)
                }
                Err(LinkLocalError::NotPermitted) => return Err(LinkLocalError::NotPermitted),
                Err(_) => ("lo", false),
            };
        let mut link_local = LinkLocal {
            device: device.to_owned(),
            created_interface,
            addresses: Vec::new(),
        };
        ip(&["link", "set", device, "up"])?;
        for address in addresses {
            link_local.add(address)?;
        }
        Ok(link_local)
    }

    fn add(&mut self, address: IpAddr) -> Result<(), LinkLocalError> {
        remove_leftover(address)?;
        let net = prefix(address);
        let mut args = vec!["addr", "add", net.as_str(), "dev", self.device.as_str()];
        if address.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)?;
        self.addresses.push(address);
        tracing::debug!(%address, device = self.device, "link-local address added");
        Ok(())
    }

    fn remove(&mut self, address: IpAddr) {
        if let Err(error) = ip(&["addr", "del", &prefix(address), "dev", &self.device]) {
            tracing::warn!(%address, %error, "could not remove a link-local address");
        }
        self.addresses.retain(|a| *a != address);
    }

    /// Opens or closes the IPv6 address as `HttpProtocolIpv6` says; true when it changed.
    /// Stop serving [fd00:ec2::254]:80 before closing it.
    pub fn set_ipv6(&mut self, enabled: bool) -> Result<bool, LinkLocalError> {
        let address = IpAddr::V6(IPV6);
        match (enabled, self.addresses.contains(&address)) {
            (true, false) => self.add(address).map(|()| true),
            (false, true) => {
                self.remove(address);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Where to listen: port 80 on each address.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.addresses
            .iter()
            .map(|a| SocketAddr::new(*a, 80))
            .collect()
    }
}

/// Removes `address` if a previous run left it configured and nothing serves it any more.
fn remove_leftover(address: IpAddr) -> Result<(), LinkLocalError> {
    let family = if address.is_ipv6() { "-6" } else { "-4" };
    let shown = ip(&[family, "-o", "addr", "show", "to", &prefix(address)])?;
    let Some(device) = shown.split_whitespace().nth(1) else {
        return Ok(());
    };
    match std::net::TcpListener::bind(SocketAddr::new(address, 80)) {
        Ok(probe) => drop(probe),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(LinkLocalError::Busy(address))
        }
        Err(_) => {}
    }
    tracing::warn!(%address, device, "removing {address} left on {device} by an imds that did not stop cleanly");
    ip(&["addr", "del", &prefix(address), "dev", device]).map(drop)
}

impl Drop for LinkLocal {
    fn drop(&mut self) {
        for address in self.addresses.clone() {
            self.remove(address);
        }
        if self.created_interface {
            if let Err(error) = ip(&["link", "del", &self.device]) {
                tracing::warn!(device = self.device, %error, "could not remove the dummy interface");
            }
        }
    }
}

/// iptables and nftables rules that send 169.254.169.254:80 to `target`, for machines and
/// container networks where imds runs unprivileged on another address. For a loopback target
/// only this machine's own processes are redirected: reaching loopback from a bridge would need
/// `route_localnet`, which opens every loopback service (imds' keyless control API among them)
/// to guests and neighbours, so the rules say to serve on the bridge address instead.
pub fn dnat_rules(target: SocketAddr) -> String {
    let to = target.to_string();
    let mut out = format!(
        "# Send the metadata address 169.254.169.254:80 to imds at {to}.\n\
         # Processes on this machine (iptables):\n\
         iptables -t nat -A OUTPUT -d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination {to}\n"
    );
    let bridged = !target.ip().is_loopback();
    if bridged {
        out.push_str(&format!(
            "# Containers or VMs on a bridge (e.g. docker0) reaching this host:\n\
             iptables -t nat -A PREROUTING -d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination {to}\n"
        ));
    } else {
        out.push_str(
            "# Containers or VMs on a bridge cannot reach a loopback address: serve imds on the\n\
             # bridge's address (e.g. `imds serve --listen 172.17.0.1:1338`) and print the rules for it.\n\
             # Do not enable net.ipv4.conf.*.route_localnet: it lets every guest and neighbour reach\n\
             # loopback services, imds' control API among them.\n",
        );
    }
    out.push_str(&format!(
        "\n\
         # The same with nftables:\n\
         nft add table ip imds\n\
         nft add chain ip imds output '{{ type nat hook output priority -100; }}'\n\
         nft add rule ip imds output ip daddr 169.254.169.254 tcp dport 80 dnat to {to}\n"
    ));
    if bridged {
        out.push_str(&format!(
            "nft add chain ip imds prerouting '{{ type nat hook prerouting priority -100; }}'\n\
             nft add rule ip imds prerouting ip daddr 169.254.169.254 tcp dport 80 dnat to {to}\n"
        ));
    }
    out.push_str(
        "\n# Undo: iptables -t nat -D ... (the same rules with -D), or `nft delete table ip imds`.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addresses_are_ec2s() {
        assert_eq!(IPV4.to_string(), "169.254.169.254");
        assert_eq!(IPV6.to_string(), "fd00:ec2::254");
        assert_eq!(prefix(IpAddr::V6(IPV6)), "fd00:ec2::254/128");
    }

    #[test]
    fn rules_point_at_the_target() {
        let rules = dnat_rules("127.0.0.1:1338".parse().unwrap());
        assert!(rules.contains("-j DNAT --to-destination 127.0.0.1:1338"));
        assert!(rules.contains("dnat to 127.0.0.1:1338"));
    }

    #[test]
    fn rules_for_a_loopback_target_never_enable_route_localnet_nor_redirect_bridges() {
        let rules = dnat_rules("127.0.0.1:1338".parse().unwrap());
        let commands: Vec<&str> = rules.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(
            commands.iter().all(|l| !l.contains("route_localnet")),
            "{rules}"
        );
        assert!(
            commands
                .iter()
                .all(|l| !l.contains("PREROUTING") && !l.contains("prerouting")),
            "{rules}"
        );
        assert!(
            rules.contains("serve imds on the\n# bridge's address"),
            "{rules}"
        );
        let bridged = dnat_rules("172.17.0.1:1338".parse().unwrap());
        assert!(bridged.contains("-A PREROUTING"), "{bridged}");
        assert!(bridged.contains("hook prerouting"), "{bridged}");
        assert!(!bridged.contains("route_localnet"), "{bridged}");
    }
}
