//! The metadata tree of an instance: every category of `meta-data/`, `dynamic/` and `user-data`
//! with the API version that introduced it (from the EC2 User Guide's category table).

use serde::Serialize;

use super::render;
use super::{CredentialsLeaf, Leaf, MetadataTree, Timeline, TreeBuilder};
use crate::fleet::events::{EventsNow, Schedule};
use crate::fleet::identity::{DocumentSignatures, IdentitySigner};
use crate::fleet::instance::{is_system_tag, Instance, Interface, SecurityGroup};

/// Builds the trees an instance serves under every version root, one per stretch of time in
/// which its events look the same, with its signed identity document.
pub fn timeline(instance: &Instance, identity: &SignedIdentity, schedule: &Schedule) -> Timeline {
    let mut trees = vec![(0, tree(instance, identity, &schedule.at(0)))];
    // A change at time 0 (an event dated at the epoch) is already in the first tree.
    for point in schedule.change_points().into_iter().filter(|p| *p > 0) {
        trees.push((point, tree(instance, identity, &schedule.at(point))));
    }
    Timeline::new(trees)
}

/// The identity document of `instance` signed by `signer`, taking the signatures of `known`
/// when it is the same document signed by the same signer (most control changes, e.g. tags or
/// options, leave the document as it was: no RSA signature is made again).
pub fn sign_identity(
    instance: &Instance,
    signer: &std::sync::Arc<IdentitySigner>,
    known: Option<&SignedIdentity>,
) -> SignedIdentity {
    let document = identity_document(instance);
    let reused =
        known.filter(|k| std::sync::Arc::ptr_eq(&k.signer, signer) && k.document == document);
    let signed = match reused {
        Some(known) => known.signed.clone(),
        None => signer.sign(&document),
    };
    SignedIdentity {
        document,
        signed,
        signer: signer.clone(),
    }
}

/// The identity document, its signatures and who made them.
#[derive(Debug)]
pub struct SignedIdentity {
    document: bytes::Bytes,
    signed: DocumentSignatures,
    signer: std::sync::Arc<IdentitySigner>,
}

fn tree(instance: &Instance, identity: &SignedIdentity, events: &EventsNow<'_>) -> MetadataTree {
    let mut b = TreeBuilder::default();
    meta_data(&mut b, instance);
    super::events::add(&mut b, events);
    dynamic(&mut b, identity);
    if let Some(user_data) = &instance.user_data {
        b.leaf("user-data", "1.0", Leaf::UserData(user_data.clone()));
    }
    b.build()
}

fn meta_data(b: &mut TreeBuilder, instance: &Instance) {
    let c = &instance.config;
    let primary = instance.primary_interface();
    let nic = &primary.config;
    let m = |path: &str| format!("meta-data/{path}");

    b.text(&m("ami-id"), "1.0", &c.ami_id)
        .text(
            &m("ami-launch-index"),
            "1.0",
            c.ami_launch_index.to_string(),
        )
        .text(&m("ami-manifest-path"), "1.0", &c.ami_manifest_path)
        .text(&m("hostname"), "1.0", &primary.local_hostname)
        .text(&m("instance-action"), "2008-09-01", "none")
        .text(&m("instance-id"), "1.0", &c.instance_id)
        .text(
            &m("instance-life-cycle"),
            "2019-10-01",
            // Only spot instances are interrupted: an interruption makes the instance one.
            match c.events.spot {
                Some(_) => "spot",
                None => &c.instance_life_cycle,
            },
        )
        .text(&m("instance-type"), "2007-08-29", &c.instance_type)
        .text(&m("local-hostname"), "2007-01-19", &primary.local_hostname)
        .text(&m("local-ipv4"), "1.0", nic.private_ipv4s[0].to_string())
        .text(&m("mac"), "2011-01-01", &nic.mac)
        .text(&m("profile"), "2011-01-01", &c.profile)
        .text(&m("reservation-id"), "1.0", &c.reservation_id)
        .text(&m("security-groups"), "1.0", names(&nic.security_groups))
        .text(
            &m("services/domain"),
            "2014-02-25",
            instance.services_domain,
        )
        .text(&m("services/partition"), "2015-10-20", instance.partition)
        .text(
            &m("hibernation/configured"),
            "2016-09-02",
            c.hibernation_configured.to_string(),
        )
        .text(
            &m("metrics/vhostmd"),
            "2011-05-01",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        );
    if !c.ancestor_ami_ids.is_empty() {
        b.text(
            &m("ancestor-ami-ids"),
            "2007-10-10",
            c.ancestor_ami_ids.join("\n"),
        );
    }
    if let Some(kernel) = &c.kernel_id {
        b.text(&m("kernel-id"), "2008-02-01", kernel);
    }
    if let Some(ramdisk) = &c.ramdisk_id {
        b.text(&m("ramdisk-id"), "2007-10-10", ramdisk);
    }
    if !c.product_codes.is_empty() {
        b.text(
            &m("product-codes"),
            "2007-03-01",
            c.product_codes.join("\n"),
        );
    }
    if let Some(system) = &c.system {
        b.text(&m("system"), "2022-09-24", system);
    }
    if let Some(public) = nic.public_ipv4 {
        b.text(&m("public-ipv4"), "2007-01-19", public.to_string());
    }
    if let Some(hostname) = &primary.public_hostname {
        b.text(&m("public-hostname"), "2007-01-19", hostname);
    }
    if let Some(ipv6) = nic.ipv6s.first() {
        b.text(&m("ipv6"), "2021-01-03", ipv6.to_string());
    }
    for (device, mapping) in &c.block_device_mapping {
        b.text(
            &m(&format!("block-device-mapping/{device}")),
            "2007-12-15",
            mapping,
        );
    }
    for (i, key) in c.public_keys.iter().enumerate() {
        b.text(
            &m(&format!("public-keys/{i}/openssh-key")),
            "1.0",
            &key.openssh_key,
        )
        .show_as(
            &m(&format!("public-keys/{i}")),
            &format!("{i}={}", key.name),
        );
    }
    placement(b, instance);
    for interface in &instance.interfaces {
        network_interface(b, instance, interface);
    }
    iam(b, instance);
    identity_credentials(b, instance);
    if c.metadata_options.instance_metadata_tags.is_enabled() {
        // EC2's own tags (`aws:...`) are not shown, as on EC2.
        for (key, value) in c.tags.iter().filter(|(k, _)| !is_system_tag(k)) {
            b.text(&m(&format!("tags/instance/{key}")), "2021-03-23", value);
        }
    }
}

fn names(groups: &[SecurityGroup]) -> String {
    groups
        .iter()
        .map(|g| g.name.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn placement(b: &mut TreeBuilder, instance: &Instance) {
    let p = &instance.config.placement;
    b.text(
        "meta-data/placement/availability-zone",
        "2008-02-01",
        &p.availability_zone,
    )
    .text(
        "meta-data/placement/availability-zone-id",
        "2019-10-01",
        &p.availability_zone_id,
    )
    .text("meta-data/placement/region", "2020-08-24", &instance.region);
    if let Some(group) = &p.group_name {
        b.text("meta-data/placement/group-name", "2020-08-24", group);
    }
    if let Some(partition) = p.partition_number {
        b.text(
            "meta-data/placement/partition-number",
            "2020-08-24",
            partition.to_string(),
        );
    }
    if let Some(host) = &p.host_id {
        b.text("meta-data/placement/host-id", "2020-08-24", host);
    }
}

fn network_interface(b: &mut TreeBuilder, instance: &Instance, interface: &Interface) {
    let nic = &interface.config;
    let base = format!("meta-data/network/interfaces/macs/{}", nic.mac);
    let p = |leaf: &str| format!("{base}/{leaf}");
    let join = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join("\n");
    b.text(
        &p("device-number"),
        "2011-01-01",
        nic.device_number.to_string(),
    )
    .text(&p("interface-id"), "2011-01-01", &nic.interface_id)
    .text(
        &p("local-hostname"),
        "2011-01-01",
        &interface.local_hostname,
    )
    .text(
        &p("local-ipv4s"),
        "2011-01-01",
        join(&mut nic.private_ipv4s.iter().map(ToString::to_string)),
    )
    .text(&p("mac"), "2011-01-01", &nic.mac)
    .text(
        &p("network-card-index"),
        "2020-11-01",
        nic.network_card_index.to_string(),
    )
    .text(&p("owner-id"), "2011-01-01", &instance.config.account_id)
    .text(
        &p("security-groups"),
        "2011-01-01",
        names(&nic.security_groups),
    )
    .text(
        &p("security-group-ids"),
        "2011-01-01",
        join(&mut nic.security_groups.iter().map(|g| g.id.clone())),
    )
    .text(&p("subnet-id"), "2011-01-01", &nic.subnet_id)
    .text(
        &p("subnet-ipv4-cidr-block"),
        "2011-01-01",
        nic.subnet_ipv4_cidr_block.to_string(),
    )
    .text(&p("vpc-id"), "2011-01-01", &nic.vpc_id)
    .text(
        &p("vpc-ipv4-cidr-block"),
        "2011-01-01",
        nic.vpc_ipv4_cidr_blocks[0].to_string(),
    )
    .text(
        &p("vpc-ipv4-cidr-blocks"),
        "2016-06-30",
        join(&mut nic.vpc_ipv4_cidr_blocks.iter().map(ToString::to_string)),
    );
    if let (Some(public), Some(hostname)) = (nic.public_ipv4, &interface.public_hostname) {
        b.text(&p("public-ipv4s"), "2011-01-01", public.to_string())
            .text(&p("public-hostname"), "2011-01-01", hostname)
            .text(
                &p(&format!("ipv4-associations/{public}")),
                "2011-01-01",
                nic.private_ipv4s[0].to_string(),
            );
    }
    if !nic.ipv6s.is_empty() {
        b.text(
            &p("ipv6s"),
            "2016-06-30",
            join(&mut nic.ipv6s.iter().map(ToString::to_string)),
        );
    }
    if !nic.subnet_ipv6_cidr_blocks.is_empty() {
        b.text(
            &p("subnet-ipv6-cidr-blocks"),
            "2016-06-30",
            join(&mut nic.subnet_ipv6_cidr_blocks.iter().map(ToString::to_string)),
        );
    }
    if !nic.vpc_ipv6_cidr_blocks.is_empty() {
        b.text(
            &p("vpc-ipv6-cidr-blocks"),
            "2016-06-30",
            join(&mut nic.vpc_ipv6_cidr_blocks.iter().map(ToString::to_string)),
        );
    }
}

/// `iam/info`, keys in IMDS' order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct IamInfo<'a> {
    code: &'static str,
    last_updated: &'a str,
    instance_profile_arn: &'a str,
    instance_profile_id: &'a str,
}

fn iam(b: &mut TreeBuilder, instance: &Instance) {
    let Some(profile) = &instance.iam else {
        return;
    };
    let launched = render::iso_seconds(instance.config.pending_time);
    let info = render::json(&IamInfo {
        code: "Success",
        last_updated: &launched,
        instance_profile_arn: &profile.instance_profile_arn,
        instance_profile_id: &profile.instance_profile_id,
    });
    b.leaf("meta-data/iam/info", "2012-01-12", Leaf::Text(info))
        .leaf(
            &format!("meta-data/iam/security-credentials/{}", profile.role),
            "2012-01-12",
            Leaf::Credentials(CredentialsLeaf::Role),
        )
        .leaf(
            &format!(
                "meta-data/iam/security-credentials-extended/{}",
                profile.role
            ),
            "2012-01-12",
            Leaf::Credentials(CredentialsLeaf::RoleExtended),
        )
        // The SDKs that want it ask by name; no public EC2 listing shows it, and cloud-init
        // crawls every listed entry, redacting only `security-credentials` from the
        // world-readable instance-data.json.
        .unlisted("meta-data/iam/security-credentials-extended");
}

/// `identity-credentials/ec2/info`, keys in IMDS' order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct IdentityInfo<'a> {
    code: &'static str,
    last_updated: &'a str,
    account_id: &'a str,
}

fn identity_credentials(b: &mut TreeBuilder, instance: &Instance) {
    let launched = render::iso_seconds(instance.config.pending_time);
    let info = render::json(&IdentityInfo {
        code: "Success",
        last_updated: &launched,
        account_id: &instance.config.account_id,
    });
    b.leaf(
        "meta-data/identity-credentials/ec2/info",
        "2018-05-23",
        Leaf::Text(info),
    )
    .leaf(
        "meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
        "2018-05-23",
        Leaf::Credentials(CredentialsLeaf::Identity),
    );
}

/// `dynamic/instance-identity/document`, keys in IMDS' order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument<'a> {
    account_id: &'a str,
    architecture: &'a str,
    availability_zone: &'a str,
    billing_products: Option<Vec<String>>,
    devpay_product_codes: Option<Vec<String>>,
    marketplace_product_codes: Option<&'a [String]>,
    image_id: &'a str,
    instance_id: &'a str,
    instance_type: &'a str,
    kernel_id: Option<&'a str>,
    pending_time: &'a str,
    private_ip: String,
    ramdisk_id: Option<&'a str>,
    region: &'a str,
    version: &'static str,
}

fn identity_document(instance: &Instance) -> bytes::Bytes {
    let c = &instance.config;
    render::json(&IdentityDocument {
        account_id: &c.account_id,
        architecture: &c.architecture,
        availability_zone: &c.placement.availability_zone,
        billing_products: None,
        devpay_product_codes: None,
        marketplace_product_codes: (!c.product_codes.is_empty())
            .then_some(c.product_codes.as_slice()),
        image_id: &c.ami_id,
        instance_id: &c.instance_id,
        instance_type: &c.instance_type,
        kernel_id: c.kernel_id.as_deref(),
        pending_time: &render::iso_seconds(c.pending_time),
        private_ip: instance.primary_interface().config.private_ipv4s[0].to_string(),
        ramdisk_id: c.ramdisk_id.as_deref(),
        region: &instance.region,
        version: "2017-09-30",
    })
}

fn dynamic(b: &mut TreeBuilder, identity: &SignedIdentity) {
    let (document, signed) = (identity.document.clone(), &identity.signed);
    let identity = |name: &str| format!("dynamic/instance-identity/{name}");
    // imds has one RSA key, so `dsa2048` (listed by EC2 next to the others) carries the same
    // RSA-2048/SHA-256 PKCS#7 as `pkcs7` and `rsa2048`: crawlers that fetch every listed entry
    // get an answer, and every PKCS#7 verifies with the one certificate of `imds cert`.
    b.leaf(&identity("document"), "2009-04-04", Leaf::Text(document))
        .leaf(
            &identity("pkcs7"),
            "2009-04-04",
            Leaf::Text(signed.pkcs7.clone()),
        )
        .leaf(
            &identity("signature"),
            "2009-04-04",
            Leaf::Text(signed.signature.clone()),
        )
        .leaf(
            &identity("rsa2048"),
            "2009-04-04",
            Leaf::Text(signed.pkcs7.clone()),
        )
        .leaf(
            &identity("dsa2048"),
            "2009-04-04",
            Leaf::Text(signed.pkcs7.clone()),
        )
        .list_in_order(
            "dynamic/instance-identity",
            &["rsa2048", "pkcs7", "document", "signature", "dsa2048"],
        )
        .text("dynamic/fws/instance-monitoring", "2009-04-04", "disabled");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::metadata::version::ApiVersion;
    use crate::fleet::metadata::Found;

    #[test]
    fn an_event_at_the_epoch_is_in_the_first_tree() {
        let path = std::path::Path::new("epoch.toml");
        let text = "[instance.events]\n\
                    target_lifecycle = [{ state = \"InService\", at = \"1970-01-01T00:00:00Z\" }]\n";
        let instance = crate::app::config::Config::from_text(path, text)
            .and_then(|c| c.resolve(&Default::default(), Some(path)))
            .unwrap()
            .instance;
        let schedule = Schedule::resolve(&instance.config.events, 1_800_000_000_000, "i-1");
        assert_eq!(schedule.change_points(), [0]);
        let signer = IdentitySigner::generate().unwrap();
        let signer = std::sync::Arc::new(signer);
        let timeline = timeline(
            &instance,
            &sign_identity(&instance, &signer, None),
            &schedule,
        );
        assert!(timeline.is_fixed());
        let latest = ApiVersion::from_name("latest").unwrap();
        let found = timeline.at(0).find(
            latest,
            ["meta-data", "autoscaling", "target-lifecycle-state"].into_iter(),
        );
        assert!(matches!(found, Some(Found::Leaf(Leaf::Text(body))) if body == "InService"));
    }

    #[test]
    fn the_same_document_by_the_same_signer_is_not_signed_again() {
        let instance = crate::app::config::Config::load(None)
            .and_then(|c| c.resolve(&Default::default(), None))
            .unwrap()
            .instance;
        let signer = std::sync::Arc::new(IdentitySigner::generate().unwrap());
        let first = sign_identity(&instance, &signer, None);
        let marked = SignedIdentity {
            signed: DocumentSignatures {
                signature: "kept".into(),
                pkcs7: "kept".into(),
            },
            ..first
        };
        let again = sign_identity(&instance, &signer, Some(&marked));
        assert_eq!(again.signed.signature, "kept", "reused, not signed");
        let mut moved = instance.clone();
        moved.config.instance_type = "m5.large".into();
        let changed = sign_identity(&moved, &signer, Some(&marked));
        assert_ne!(changed.signed.signature, "kept", "a new document is signed");
        let other = std::sync::Arc::new(IdentitySigner::generate().unwrap());
        let rotated = sign_identity(&instance, &other, Some(&marked));
        assert_ne!(rotated.signed.signature, "kept", "a new key signs anew");
    }
}
