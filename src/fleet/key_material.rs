//! Key pairs `CreateKeyPair` makes: a new RSA (2048 bits) or ED25519 key, its private half in
//! the format asked for (returned once, never kept), its public half as an OpenSSH line (kept,
//! and served to instances launched with it), and EC2's fingerprint of a created key:
//! - RSA: the SHA-1 of the DER PKCS#8 private key, colon-separated hex (what
//!   `openssl pkcs8 -topk8 -nocrypt -outform DER | openssl sha1 -c` prints);
//! - ED25519: the base64 SHA-256 of the public key blob (OpenSSH's, with padding).
//!
//! Formats: `pem` is PKCS#1 (`BEGIN RSA PRIVATE KEY`) for RSA and OpenSSH's own
//! (`BEGIN OPENSSH PRIVATE KEY`) for ED25519, as EC2 returns them; `ppk` is PuTTY's key file,
//! version 2 (unencrypted), which every PuTTY reads.

use base64::Engine;
use sha2::Digest;

use crate::fleet::network::KeyType;

/// The size of the RSA keys EC2 creates.
const RSA_BITS: usize = 2048;

/// The private key's file format (`KeyFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// PEM (PKCS#1 for RSA, OpenSSH for ED25519).
    Pem,
    /// PuTTY's `.ppk`, version 2.
    Ppk,
}

/// A key pair just made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedKey {
    /// `rsa` or `ed25519`.
    pub key_type: KeyType,
    /// The public key as one OpenSSH line, commented with the key's name.
    pub openssh: String,
    /// EC2's fingerprint of a created key.
    pub fingerprint: String,
    /// The private key in the format asked for: shown once.
    pub private: String,
}

/// Why a key could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the key pair could not be generated: {0}")]
pub struct KeyGenerationError(String);

/// A new key of `key_type`, named `name`, its private half in `format`.
pub fn create(
    key_type: KeyType,
    format: KeyFormat,
    name: &str,
) -> Result<CreatedKey, KeyGenerationError> {
    match key_type {
        KeyType::Rsa => create_rsa(format, name),
        KeyType::Ed25519 => Ok(create_ed25519(rand::random(), format, name)),
    }
}

fn create_rsa(format: KeyFormat, name: &str) -> Result<CreatedKey, KeyGenerationError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let failed = |e: &dyn std::fmt::Display| KeyGenerationError(e.to_string());
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS).map_err(|e| failed(&e))?;
    let mut public = Vec::new();
    string(&mut public, b"ssh-rsa");
    mpint(&mut public, &key.e().to_bytes_be());
    mpint(&mut public, &key.n().to_bytes_be());
    let pkcs8 = key.to_pkcs8_der().map_err(|e| failed(&e))?;
    let fingerprint = colon_hex(&sha1::Sha1::digest(pkcs8.as_bytes()));
    let private = match format {
        KeyFormat::Pem => key
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| failed(&e))?
            .to_string(),
        KeyFormat::Ppk => {
            let primes = key.primes();
            let (p, q) = (&primes[0], &primes[1]);
            // PuTTY's `iqmp`, q⁻¹ mod p: the CRT coefficient the key precomputed.
            let (_, iqmp) = key
                .qinv()
                .ok_or_else(|| KeyGenerationError("the key has no CRT coefficient".into()))?
                .to_bytes_be();
            let mut blob = Vec::new();
            mpint(&mut blob, &key.d().to_bytes_be());
            mpint(&mut blob, &p.to_bytes_be());
            mpint(&mut blob, &q.to_bytes_be());
            mpint(&mut blob, &iqmp);
            ppk("ssh-rsa", name, &public, &blob)
        }
    };
    Ok(CreatedKey {
        key_type: KeyType::Rsa,
        openssh: openssh_line("ssh-rsa", &public, name),
        fingerprint,
        private,
    })
}

/// The ED25519 key whose private seed is `seed`.
fn create_ed25519(seed: [u8; 32], format: KeyFormat, name: &str) -> CreatedKey {
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .expect("every 32-byte seed is an ED25519 private key");
    let point = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let mut public = Vec::new();
    string(&mut public, b"ssh-ed25519");
    string(&mut public, &point);
    let fingerprint =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&public));
    let private = match format {
        KeyFormat::Pem => openssh_private_key(&seed, &point, &public, name),
        KeyFormat::Ppk => {
            let mut blob = Vec::new();
            string(&mut blob, &seed);
            ppk("ssh-ed25519", name, &public, &blob)
        }
    };
    CreatedKey {
        key_type: KeyType::Ed25519,
        openssh: openssh_line("ssh-ed25519", &public, name),
        fingerprint,
        private,
    }
}

/// `type base64 comment`.
fn openssh_line(kind: &str, blob: &[u8], comment: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("{kind} {encoded} {comment}")
}

/// OpenSSH's private key file (`openssh-key-v1`, unencrypted) of an ED25519 key.
fn openssh_private_key(seed: &[u8; 32], point: &[u8], public: &[u8], comment: &str) -> String {
    let check: u32 = rand::random();
    let mut section = Vec::new();
    section.extend_from_slice(&check.to_be_bytes());
    section.extend_from_slice(&check.to_be_bytes());
    string(&mut section, b"ssh-ed25519");
    string(&mut section, point);
    let mut secret = seed.to_vec();
    secret.extend_from_slice(point);
    string(&mut section, &secret);
    string(&mut section, comment.as_bytes());
    // Padded to the cipher's block size (8 without a cipher) with 1, 2, 3, ...
    let mut pad = 1u8;
    while section.len() % 8 != 0 {
        section.push(pad);
        pad += 1;
    }
    let mut file = b"openssh-key-v1\0".to_vec();
    string(&mut file, b"none");
    string(&mut file, b"none");
    string(&mut file, b"");
    file.extend_from_slice(&1u32.to_be_bytes());
    string(&mut file, public);
    string(&mut file, &section);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&file);
    let mut out = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    out
}

/// PuTTY's key file, version 2, unencrypted: the blobs in base64 lines of 64 and the
/// HMAC-SHA-1 (keyed with the SHA-1 of `putty-private-key-file-mac-key`) of the key's
/// algorithm, encryption, comment and both blobs.
fn ppk(kind: &str, comment: &str, public: &[u8], private: &[u8]) -> String {
    use hmac::Mac;
    let lines = |blob: &[u8]| -> Vec<String> {
        base64::engine::general_purpose::STANDARD
            .encode(blob)
            .as_bytes()
            .chunks(64)
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect()
    };
    let mut signed = Vec::new();
    for part in [
        kind.as_bytes(),
        b"none",
        comment.as_bytes(),
        public,
        private,
    ] {
        string(&mut signed, part);
    }
    let key = sha1::Sha1::digest(b"putty-private-key-file-mac-key");
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(&key).expect("HMAC takes a key of any size");
    mac.update(&signed);
    let tag = mac.finalize().into_bytes();
    let (public, private) = (lines(public), lines(private));
    let mut out = format!(
        "PuTTY-User-Key-File-2: {kind}\nEncryption: none\nComment: {comment}\nPublic-Lines: {}\n",
        public.len()
    );
    for line in public {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("Private-Lines: {}\n", private.len()));
    for line in private {
        out.push_str(&line);
        out.push('\n');
    }
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    out.push_str(&format!("Private-MAC: {hex}\n"));
    out
}

/// SSH's `string`: a big-endian `u32` length, then the bytes.
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// SSH's `mpint` of a non-negative big-endian number: no leading zeros, but one zero byte
/// before a first byte whose high bit is set.
fn mpint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let digits = &magnitude[start..];
    let mut bytes = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.push(0);
    }
    bytes.extend_from_slice(digits);
    string(out, &bytes);
}

/// `aa:bb:...`.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_ed25519_key_imports_with_the_same_fingerprint() {
        let key = create_ed25519([7; 32], KeyFormat::Pem, "deploy");
        let imported = crate::fleet::network::key_pair::parse_openssh(&key.openssh).unwrap();
        assert_eq!(imported.fingerprint, key.fingerprint);
        assert!(key.fingerprint.ends_with('='), "{}", key.fingerprint);
        assert!(key
            .private
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(key.openssh.ends_with(" deploy"));
    }

    #[test]
    fn ppk_files_carry_putty_v2_headers_and_a_mac() {
        let key = create_ed25519([9; 32], KeyFormat::Ppk, "deploy");
        let lines: Vec<&str> = key.private.lines().collect();
        assert_eq!(lines[0], "PuTTY-User-Key-File-2: ssh-ed25519");
        assert_eq!(lines[1], "Encryption: none");
        assert_eq!(lines[2], "Comment: deploy");
        assert_eq!(lines[3], "Public-Lines: 2");
        assert!(lines.last().unwrap().starts_with("Private-MAC: "));
        assert_eq!(lines.last().unwrap().len(), "Private-MAC: ".len() + 40);
    }

    #[test]
    fn mpints_drop_leading_zeros_and_keep_the_sign_bit_clear() {
        let mut out = Vec::new();
        mpint(&mut out, &[0, 0, 0x80, 1]);
        assert_eq!(out, [0, 0, 0, 3, 0, 0x80, 1]);
        let mut out = Vec::new();
        mpint(&mut out, &[0, 0x7f]);
        assert_eq!(out, [0, 0, 0, 1, 0x7f]);
    }

    /// `ssh-keygen -y` reads the private key back to the public one imds keeps (where
    /// OpenSSH is installed).
    #[test]
    fn ssh_keygen_reads_created_private_keys_back_to_their_public_keys() {
        if std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_err()
        {
            eprintln!("ssh-keygen is not installed: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for key_type in [KeyType::Rsa, KeyType::Ed25519] {
            let key = create(key_type, KeyFormat::Pem, "probe").unwrap();
            let path = dir.path().join(key_type.as_str());
            std::fs::write(&path, &key.private).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            let output = std::process::Command::new("ssh-keygen")
                .arg("-y")
                .arg("-f")
                .arg(&path)
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            let shown = String::from_utf8(output.stdout).unwrap();
            let blob = |line: &str| line.split_whitespace().nth(1).unwrap_or("").to_owned();
            assert_eq!(blob(&shown), blob(&key.openssh), "{key_type:?}");
        }
    }
}
