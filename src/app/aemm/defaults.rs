//! AEMM v1.13's default values, as its documentation lists them (`docs/defaults.md`) and its
//! built-in `aemm-metadata-default-values.json` holds them: what `ec2-metadata-mock` serves when
//! nothing overrides a value, by AEMM's key under `metadata.values` (lower-case, `-` for `.`).
//! `imds aemm` serves the same, with what imds derives (hostnames, the identity document,
//! credentials) derived from them; `docs/aemm.md` lists what cannot be the same.

/// AEMM's default metadata values that imds applies to the instance.
pub const METADATA_VALUES: &[(&str, &str)] = &[
    ("ami-id", "ami-0a887e401f7654935"),
    ("ami-launch-index", "0"),
    ("ami-manifest-path", "(unknown)"),
    ("block-device-mapping-ami", "/dev/xvda"),
    ("block-device-mapping-ebs", "sdb"),
    ("block-device-mapping-ephemeral", "sdb"),
    ("block-device-mapping-root", "/dev/xvda"),
    ("block-device-mapping-swap", "sdcs"),
    ("event-id", "instance-event-1234567890abcdef0"),
    ("instance-id", "i-1234567890abcdef0"),
    ("instance-life-cycle", "on-demand"),
    ("instance-type", "m4.xlarge"),
    ("kernel-id", "aki-5c21674b"),
    ("ramdisk-id", "ari-01bb5768"),
    ("reservation-id", "r-046cb3eca3e201d2f"),
    ("local-ipv4", "172.16.34.43"),
    ("mac-local-ipv4s", "172.16.34.43"),
    ("mac", "0e:49:61:0f:c3:11"),
    ("mac-mac", "0e:49:61:0f:c3:11"),
    ("mac-device-number", "0"),
    ("mac-network-interface-card-index", "0"),
    ("mac-network-interface-id", "eni-0f95d3625f5c521cc"),
    ("public-ipv4", "192.0.2.54"),
    ("mac-public-ipv4s", "192.0.2.54"),
    ("mac-ipv6-associations", "2001:db8:8:4::2"),
    ("security-groups", "ura-launch-wizard-harry-1"),
    ("mac-security-groups", "ura-launch-wizard-harry-1"),
    ("mac-security-group-ids", "sg-0b07f8f6cb485d4df"),
    ("mac-subnet-id", "subnet-0ac62554"),
    // AEMM's network blocks do not hold its own local-ipv4: imds uses a default block only
    // where it holds the address, and otherwise the network the address implies.
    ("mac-subnet-ipv4-cidr-block", "192.0.2.0/24"),
    ("mac-subnet-ipv6-cidr-blocks", "2001:db8::/32"),
    ("mac-vpc-id", "vpc-d295a6a7"),
    ("mac-vpc-ipv4-cidr-block", "192.0.2.0/24"),
    ("mac-vpc-ipv4-cidr-blocks", "192.0.2.0/24"),
    ("mac-vpc-ipv6-cidr-blocks", "2001:db8::/32"),
    ("placement-availability-zone", "us-east-1a"),
    ("placement-availability-zone-id", "use1-az4"),
    ("placement-group-name", "a-placement-group"),
    ("placement-host-id", "h-0da999999f9999fb9"),
    ("placement-partition-number", "1"),
    ("placement-region", "us-east-1"),
    ("product-codes", "3iplms73etrdhxdepv72l6ywj"),
    ("public-key", PUBLIC_KEY),
    ("tags-instance-name", "test-instance"),
    ("tags-instance-test", "test-tag"),
    ("iam-security-credentials-role", "baskinc-role"),
    (
        "iam-info-instanceprofilearn",
        "arn:aws:iam::896453262835:instance-profile/baskinc-role",
    ),
    ("iam-info-instanceprofileid", "AIPA5BOGHHXZELSK34VU4"),
];

/// AEMM's default `public-keys/0/openssh-key`.
const PUBLIC_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC/JxGByvHDHgQAU+0nRFWdvMPi22OgNUn9ansrI8QN1ZJGxD1ML8DRnJ3Q3zFKqqjGucfNWW0xpVib+ttkIBp8G9P/EOcX9C3FF63O3SnnIUHJsp5faRAZsTJPx0G5HUbvhBvnAcCtSqQgmr02c1l582vAWx48pOmeXXMkl9qe9V/s7K3utmeZkRLo9DqnbsDlg5GWxLC/rWKYaZR66CnMEyZ7yBy3v3abKaGGRovLkHNAgWjSSgmUTI1nT5/S2OLxxuDnsC7+BiABLPaqlIE70SzcWZ0swx68Bo2AY9T9ymGqeAM/1T4yRtg0sPB98TpT7WrY5A3iia2UVtLO/xcTt test";

/// AEMM's default user data, base64 (`1234,john,reboot,true` and a newline).
pub const USER_DATA: &str = "MTIzNCxqb2huLHJlYm9vdCx0cnVlCg==";

/// The identity document's `pendingTime` in AEMM's default document; imds' launch time.
pub const PENDING_TIME: &str = "2019-10-31T07:02:24Z";

/// AEMM's default metadata values that imds derives from the instance instead, with what it
/// derives each from (for the warning that names a changed one).
pub const DERIVED: &[(&str, &str)] = &[
    ("hostname", "local-ipv4 and the region"),
    ("local-hostname", "local-ipv4 and the region"),
    ("mac-local-hostname", "local-ipv4 and the region"),
    ("public-hostname", "public-ipv4 and the region"),
    ("mac-public-hostname", "public-ipv4 and the region"),
    (
        "mac-ipv4-associations",
        "public-ipv4 (it answers local-ipv4, as EC2 does)",
    ),
    (
        "mac-owner-id",
        "the account of iam-info's InstanceProfileArn",
    ),
    ("instance-action", "nothing: it is always none"),
    ("services-domain", "the region"),
    ("services-partition", "the region"),
    ("iam-info-code", "the role"),
    ("iam-info-lastupdated", "the launch time"),
    ("iam-security-credentials-code", "the role"),
    ("iam-security-credentials-type", "the role"),
    (
        "iam-security-credentials-accesskeyid",
        "credentials imds generates",
    ),
    (
        "iam-security-credentials-secretaccesskey",
        "credentials imds generates",
    ),
    (
        "iam-security-credentials-token",
        "credentials imds generates",
    ),
    (
        "iam-security-credentials-expiration",
        "credentials imds generates",
    ),
    (
        "iam-security-credentials-lastupdated",
        "credentials imds generates",
    ),
];
