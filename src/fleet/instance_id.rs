//! `InstanceId`: `i-` and 8 or 17 lower-case hexadecimal digits, parsed once for the whole crate.

use std::fmt;
use std::str::FromStr;

/// An EC2 instance id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(Box<str>);

/// Text that is not an instance id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an instance id (i- and 8 or 17 hexadecimal digits)")]
pub struct MalformedInstanceId(pub String);

impl InstanceId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InstanceId {
    type Err = MalformedInstanceId;

    fn from_str(text: &str) -> Result<InstanceId, MalformedInstanceId> {
        let well_formed = text.strip_prefix("i-").is_some_and(|hex| {
            matches!(hex.len(), 8 | 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        match well_formed {
            true => Ok(InstanceId(text.into())),
            false => Err(MalformedInstanceId(text.to_owned())),
        }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_of_8_and_17_lower_case_hex_digits_parse() {
        for id in ["i-0b4f7d2c9a1e83f56", "i-1234abcd"] {
            assert_eq!(id.parse::<InstanceId>().unwrap().as_str(), id);
        }
        for bad in [
            "",
            "i-",
            "i-0B4F7D2C9A1E83F56",
            "i-123",
            "x-1234abcd",
            "i-1234abcg",
            "i-0b4f7d2c9a1e83f567",
        ] {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsing_accepts_exactly_the_ec2_shape(text in "\\PC{0,24}") {
            let shaped = regex_like(&text);
            prop_assert_eq!(text.parse::<InstanceId>().is_ok(), shaped);
        }
    }

    fn regex_like(text: &str) -> bool {
        match text.strip_prefix("i-") {
            Some(hex) => {
                (hex.len() == 8 || hex.len() == 17)
                    && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
            }
            None => false,
        }
    }
}
