//! One address, one live instance: an instance the config file adds at SIGHUP and one
//! `RunInstances` launches can never share an address, a stopped instance keeps its addresses
//! and a terminated one gives them back, driven with the unmodified AWS CLI against a real
//! server and real guests at the instances' own (loopback) addresses.

use std::time::{Duration, Instant};

use crate::control::aws;
use crate::fleet::{fleet_config, get, run_one, serve_fleet, SUBNET};

/// An `[[instances]]` entry of `id` at `address` in the loopback subnet (its MAC and interface
/// id end with the id's last digit).
pub(crate) fn file_instance(id: &str, address: &str) -> String {
    let n = &id[id.len() - 1..];
    format!(
        r#"
[[instances]]
instance_id = "{id}"
[[instances.network_interfaces]]
mac = "0e:8c:1f:6b:2d:3{n}"
interface_id = "eni-0d9a1b7c3e5f2468{n}"
subnet_id = "{SUBNET}"
subnet_ipv4_cidr_block = "127.16.0.0/16"
vpc_id = "vpc-0c4f6a8e2b1d35792"
vpc_ipv4_cidr_blocks = ["127.0.0.0/8"]
private_ipv4s = ["{address}"]
security_groups = [{{ name = "default", id = "sg-0e1f2a3b4c5d6e7f8" }}]
"#
    )
}

/// Waits (at most 5 s) until a guest at `source` is answered `expected` at `path`.
fn wait_for(served: &crate::process::Served, source: &str, path: &str, expected: (u16, &str)) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(served, source, path);
        if (got.0, got.1.as_str()) == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{source} {path}: {got:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn launched_address(launched: &serde_json::Value) -> (String, String) {
    let instance = &launched["Instances"][0];
    (
        instance["InstanceId"].as_str().unwrap().to_owned(),
        instance["PrivateIpAddress"].as_str().unwrap().to_owned(),
    )
}

fn in_use(result: Result<serde_json::Value, (i32, String)>, address: &str) {
    let (_, stderr) = result.expect_err("the address is in use");
    assert!(stderr.contains("InvalidIPAddress.InUse"), "{stderr}");
    assert!(
        stderr.contains(&format!("Address {address} is in use.")),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn an_address_a_reload_adds_or_a_launch_holds_never_gets_a_second_instance() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let served = serve_fleet(&config, &dir.path().join("state"));
    let id_path = "/latest/meta-data/instance-id";

    // SIGHUP adds an instance at 127.16.0.50: no launch may take its address.
    let second = file_instance("i-0aaaaaaaaaaaaaaa2", "127.16.0.50");
    fleet_config(dir.path(), &second);
    served.signal("HUP");
    wait_for(
        &served,
        "127.16.0.50",
        id_path,
        (200, "i-0aaaaaaaaaaaaaaa2"),
    );
    in_use(
        run_one(&served, &["--private-ip-address", "127.16.0.50"]),
        "127.16.0.50",
    );
    for _ in 0..3 {
        let (_, address) = launched_address(&run_one(&served, &[]).unwrap());
        assert!(
            address != "127.16.0.50" && address != "127.16.0.10",
            "{address}"
        );
    }

    // A launched instance holds 127.16.0.60: a reload claiming it is refused whole.
    let launched = run_one(&served, &["--private-ip-address", "127.16.0.60"]).unwrap();
    let (launched_id, _) = launched_address(&launched);
    wait_for(&served, "127.16.0.60", id_path, (200, &launched_id));
    // Compared after the reload: taken once every launch has left `pending`.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let described = aws(&served, &["describe-instances"]).unwrap();
        if !described.to_string().contains("\"pending\"") {
            break described;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still pending: {described}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let third = file_instance("i-0aaaaaaaaaaaaaaa3", "127.16.0.60");
    let fourth = file_instance("i-0aaaaaaaaaaaaaaa4", "127.16.0.70");
    fleet_config(dir.path(), &format!("{second}{third}{fourth}"));
    served.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get(&served, "127.16.0.60", id_path),
        (200, launched_id.clone())
    );
    assert_eq!(
        get(&served, "127.16.0.70", id_path).0,
        403,
        "nothing half-applied: an unknown caller"
    );
    assert_eq!(aws(&served, &["describe-instances"]).unwrap(), before);

    // Stopped, it keeps its address; terminated, the next launch may have it.
    aws(&served, &["stop-instances", "--instance-ids", &launched_id]).unwrap();
    in_use(
        run_one(&served, &["--private-ip-address", "127.16.0.60"]),
        "127.16.0.60",
    );
    aws(
        &served,
        &["terminate-instances", "--instance-ids", &launched_id],
    )
    .unwrap();
    let next = run_one(&served, &["--private-ip-address", "127.16.0.60"]).unwrap();
    let (next_id, address) = launched_address(&next);
    assert_eq!(address, "127.16.0.60");
    wait_for(&served, "127.16.0.60", id_path, (200, &next_id));

    let (status, stderr) = served.stop("TERM");
    assert!(status.success());
    assert!(
        stderr
            .contains("fleet.toml: [[instances]] entry 3 (instance_id = \"i-0aaaaaaaaaaaaaaa3\")")
            && stderr.contains("address 127.16.0.60 is in use by instance"),
        "{stderr}"
    );
}
