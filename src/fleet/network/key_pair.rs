//! Imported key pairs: one OpenSSH public key line (`ssh-rsa AAAA... comment` or
//! `ssh-ed25519 AAAA... comment`), checked and fingerprinted as EC2 does for imported keys:
//! RSA as the MD5 of the DER `SubjectPublicKeyInfo` in colon-separated hex (what
//! `openssl pkey -pubin -outform DER | openssl md5 -c` prints), ED25519 as the base64 SHA-256 of
//! the key blob (OpenSSH's own fingerprint, with base64 padding).

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Smallest RSA modulus EC2 imports, in bits.
const MIN_RSA_BITS: usize = 1024;
/// Largest RSA modulus accepted, in bits.
const MAX_RSA_BITS: usize = 16384;

/// The kind of a key pair, as `keyType` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// `ssh-rsa`.
    Rsa,
    /// `ssh-ed25519`.
    Ed25519,
}

impl KeyType {
    /// `rsa` or `ed25519`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

/// A checked OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Its kind.
    pub key_type: KeyType,
    /// EC2's fingerprint of an imported key.
    pub fingerprint: String,
    /// The key as one line, `type base64 [comment]`, whitespace normalised.
    pub openssh: String,
}

/// Why a key could not be imported (EC2 answers `InvalidKey.Format`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFormatError(pub &'static str);

/// Parses one OpenSSH public key line.
pub fn parse_openssh(text: &str) -> Result<PublicKey, KeyFormatError> {
    let text = text.trim();
    if text.contains('\n') {
        return Err(KeyFormatError(
            "Key is not in valid OpenSSH public key format",
        ));
    }
    let mut words = text.split_whitespace();
    let (Some(kind), Some(encoded)) = (words.next(), words.next()) else {
        return Err(KeyFormatError(
            "Key is not in valid OpenSSH public key format",
        ));
    };
    let comment: Vec<&str> = words.collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| KeyFormatError("Key is not in valid OpenSSH public key format"))?;
    let mut reader = Reader(&blob);
    if reader.string()? != kind.as_bytes() {
        return Err(KeyFormatError(
            "Key is not in valid OpenSSH public key format",
        ));
    }
    let (key_type, fingerprint) = match kind {
        "ssh-rsa" => {
            let e = reader.string()?;
            let n = reader.string()?;
            (KeyType::Rsa, rsa_fingerprint(e, n)?)
        }
        "ssh-ed25519" => {
            if reader.string()?.len() != 32 {
                return Err(KeyFormatError(
                    "Key is not in valid OpenSSH public key format",
                ));
            }
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&blob);
            let text = base64::engine::general_purpose::STANDARD.encode(digest);
            (KeyType::Ed25519, text)
        }
        _ => {
            return Err(KeyFormatError(
                "Key type is not supported: import an RSA or ED25519 key",
            ))
        }
    };
    if !reader.0.is_empty() {
        return Err(KeyFormatError(
            "Key is not in valid OpenSSH public key format",
        ));
    }
    let mut openssh = format!("{kind} {encoded}");
    if !comment.is_empty() {
        openssh.push(' ');
        openssh.push_str(&comment.join(" "));
    }
    Ok(PublicKey {
        key_type,
        fingerprint,
        openssh,
    })
}

/// MD5 of the DER `SubjectPublicKeyInfo` of the RSA key `(e, n)`, as `aa:bb:...`.
fn rsa_fingerprint(e: &[u8], n: &[u8]) -> Result<String, KeyFormatError> {
    use md5::Digest;
    use rsa::pkcs8::EncodePublicKey;
    let n = rsa::BigUint::from_bytes_be(n);
    let e = rsa::BigUint::from_bytes_be(e);
    if n.bits() < MIN_RSA_BITS {
        return Err(KeyFormatError("RSA keys must be at least 1024 bits long"));
    }
    let key = rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
        .map_err(|_| KeyFormatError("Key is not in valid OpenSSH public key format"))?;
    let der = key
        .to_public_key_der()
        .map_err(|_| KeyFormatError("Key is not in valid OpenSSH public key format"))?;
    let digest = md5::Md5::digest(der.as_bytes());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Reads the SSH wire format: big-endian `u32` lengths, each followed by that many bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Result<&'a [u8], KeyFormatError> {
        let bad = KeyFormatError("Key is not in valid OpenSSH public key format");
        let (len, rest) = self.0.split_first_chunk::<4>().ok_or(bad.clone())?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad);
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(value)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `ssh-keygen -t rsa -b 2048`; `openssl pkey -pubin -outform DER | openssl md5 -c` gives
    /// the fingerprint below.
    pub(crate) const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDYdvchKIrJUMO5g0QcsRVx/OYbiVxVRs0aeaKwTPeKsDqkQUEpzcIgal8skT1xCf6CpAF6nmvIDYRXzXSWALwiIk0OrjalQrPn6y7kVwzKKRCsR27dCTyJY/KKX4JNkio/1AWcQqC2rjguJx8FQTmU4JYMNKTZF7eBAxInDSow/MTtnXTTUcgucLQpWS6q+lIFStA8FTY4yNpNPH1OJ2C29hDPVdNrzu3WzyUCLot9vuXL1pTUMbQGRnpYp633I7xOBua9HJAhRe14cyGCnUpXggsX8FT3UTHlau8Lp6mn3E5uMZTOPt8QVUXbf4aaiz+cbpbgzf5Uw2ilbxcyheYb test@imds";
    pub(crate) const RSA_FINGERPRINT: &str = "04:86:e6:86:c7:4d:c2:29:ce:cd:29:8a:c7:74:db:26";
    pub(crate) const ED25519_FINGERPRINT: &str = "OgLPzLBIP5QDgCQTNEBZZJrKLG+sV5TdeMeOA1WX2m8=";
    pub(crate) const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBoLTz5HKebQIoA++MGeZZTElONlHrf6nmRGkAvPF4JQ imds-dev";

    #[test]
    fn an_ed25519_key_is_fingerprinted_as_openssh_does() {
        let key = parse_openssh(ED25519).unwrap();
        assert_eq!(key.key_type, KeyType::Ed25519);
        assert_eq!(key.openssh, ED25519);
        // `ssh-keygen -lf` shows the same digest without base64 padding.
        assert_eq!(key.fingerprint, ED25519_FINGERPRINT);
    }

    #[test]
    fn an_rsa_key_is_fingerprinted_with_md5_of_its_der_form() {
        let key = parse_openssh(RSA).unwrap();
        assert_eq!(key.key_type, KeyType::Rsa);
        assert_eq!(key.fingerprint, RSA_FINGERPRINT);
    }

    #[test]
    fn broken_keys_are_refused() {
        for text in [
            "",
            "ssh-rsa",
            "ssh-rsa not-base64!",
            "ssh-ed25519 AAAAC3NzaC1yc2EAAAADAQAB",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBoLTz5HKebQIoA++MGeZZTElONlHrf6nmRGkAvPF4JQ\nssh-rsa AAAA",
        ] {
            assert!(parse_openssh(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn whitespace_around_the_key_is_normalised() {
        let key = parse_openssh(&format!("  {}\n", ED25519.replace(' ', "   "))).unwrap();
        assert_eq!(key.openssh, ED25519);
    }
}
