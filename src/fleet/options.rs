//! Per-instance metadata options (EC2's `InstanceMetadataOptions`) and their validated value types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Whether IMDSv2 session tokens are optional or required (`HttpTokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv1 (token-less) and IMDSv2 requests are both answered.
    #[default]
    Optional,
    /// Every request must carry a valid session token (IMDSv2 only).
    Required,
}

/// An `enabled|disabled` switch, as EC2 spells `HttpEndpoint`, `HttpProtocolIpv6` and `InstanceMetadataTags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// The feature is on.
    Enabled,
    /// The feature is off.
    Disabled,
}

impl Switch {
    /// True when the switch is `enabled`.
    pub fn is_enabled(self) -> bool {
        self == Switch::Enabled
    }
}

/// As EC2, the flags and the config file spell it: `enabled` or `disabled`.
impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Switch::Enabled => "enabled",
            Switch::Disabled => "disabled",
        })
    }
}

/// As EC2, the flags and the config file spell it: `optional` or `required`.
impl fmt::Display for HttpTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpTokens::Optional => "optional",
            HttpTokens::Required => "required",
        })
    }
}

/// The IP TTL / IPv6 hop limit of token PUT responses (`HttpPutResponseHopLimit`, 1..=64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct HopLimit(u8);

/// A hop limit outside EC2's range 1..=64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hop limit must be an integer from 1 to 64, got {0}")]
pub struct HopLimitOutOfRange(String);

impl HopLimit {
    /// The hop limit as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for HopLimit {
    fn default() -> Self {
        HopLimit(1)
    }
}

impl TryFrom<u8> for HopLimit {
    type Error = HopLimitOutOfRange;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        if (1..=64).contains(&value) {
            Ok(HopLimit(value))
        } else {
            Err(HopLimitOutOfRange(value.to_string()))
        }
    }
}

impl From<HopLimit> for u8 {
    fn from(value: HopLimit) -> Self {
        value.0
    }
}

impl FromStr for HopLimit {
    type Err = HopLimitOutOfRange;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u8>()
            .map_err(|_| HopLimitOutOfRange(s.to_owned()))
            .and_then(HopLimit::try_from)
    }
}

impl fmt::Display for HopLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How the metadata service answers this instance (EC2's `InstanceMetadataOptions`); omitted
/// fields take EC2's launch defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataOptions {
    /// `HttpTokens`: whether token-less (IMDSv1) requests are answered.
    pub http_tokens: HttpTokens,
    /// `HttpEndpoint`: when disabled, every request gets 403.
    pub http_endpoint: Switch,
    /// `HttpPutResponseHopLimit`: IP TTL of token PUT responses.
    pub http_put_response_hop_limit: HopLimit,
    /// `HttpProtocolIpv6`: whether the IPv6 endpoint is offered.
    pub http_protocol_ipv6: Switch,
    /// `InstanceMetadataTags`: whether `meta-data/tags/instance/` is served.
    pub instance_metadata_tags: Switch,
}

impl Default for MetadataOptions {
    /// EC2's launch defaults.
    fn default() -> Self {
        MetadataOptions {
            http_tokens: HttpTokens::Optional,
            http_endpoint: Switch::Enabled,
            http_put_response_hop_limit: HopLimit::default(),
            http_protocol_ipv6: Switch::Disabled,
            instance_metadata_tags: Switch::Disabled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_print_as_ec2_spells_them() {
        assert_eq!(HttpTokens::Optional.to_string(), "optional");
        assert_eq!(HttpTokens::Required.to_string(), "required");
        assert_eq!(Switch::Enabled.to_string(), "enabled");
        assert_eq!(Switch::Disabled.to_string(), "disabled");
    }

    #[test]
    fn hop_limit_accepts_one_to_sixty_four_only() {
        assert_eq!("1".parse::<HopLimit>().unwrap().get(), 1);
        assert_eq!("64".parse::<HopLimit>().unwrap().get(), 64);
        assert!("0".parse::<HopLimit>().is_err());
        assert!("65".parse::<HopLimit>().is_err());
        assert!("-1".parse::<HopLimit>().is_err());
        assert!("two".parse::<HopLimit>().is_err());
    }

    #[test]
    fn defaults_are_ec2_launch_defaults() {
        let options = MetadataOptions::default();
        assert_eq!(options.http_tokens, HttpTokens::Optional);
        assert!(options.http_endpoint.is_enabled());
        assert!(!options.http_protocol_ipv6.is_enabled());
        assert!(!options.instance_metadata_tags.is_enabled());
        assert_eq!(options.http_put_response_hop_limit.get(), 1);
    }
}
