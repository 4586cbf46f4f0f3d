//! The signatures of the instance identity document (`dynamic/instance-identity/`): `signature`
//! (RSA PKCS#1 v1.5, SHA-256, of the exact document bytes) and `pkcs7`/`rsa2048` (PKCS#7
//! signed data carrying the document), all made with imds' own RSA-2048 key.
//!
//! EC2 signs with AWS' keys, which no emulator has; imds signs with its own and publishes the
//! self-signed certificate (`imds cert`), so the commands of the EC2 User Guide verify its
//! documents once they are pointed at that certificate.
//!
//! Signing happens when a snapshot is built (an instance change), never per request, so no
//! request can time a private-key operation.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::IssuerAndSerialNumber;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::{Any, Encode, EncodePem, Tag};
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{Keypair, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::DecodePem;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;
use zeroize::Zeroizing;

/// Key size of generated signing keys, as EC2's `rsa2048` document names it.
pub const KEY_BITS: usize = 2048;

/// How long a generated certificate is valid.
const CERTIFICATE_VALIDITY: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// Why a signing key or certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The private key could not be generated.
    #[error("cannot generate the RSA signing key: {0}")]
    Generate(String),
    /// The private key PEM is not a usable RSA key.
    #[error("signing key: not an RSA private key in PEM (PKCS#8 or PKCS#1): {0}")]
    Key(String),
    /// The key is too small to sign like EC2.
    #[error("signing key: {bits}-bit RSA key, needs at least {KEY_BITS} bits")]
    KeyTooSmall {
        /// Its size.
        bits: usize,
    },
    /// The certificate PEM is not a certificate.
    #[error("signing certificate: not an X.509 certificate in PEM: {0}")]
    Certificate(String),
    /// The certificate names another key.
    #[error("signing certificate: its public key is not the signing key's")]
    Mismatch,
    /// The certificate could not be built.
    #[error("cannot create the signing certificate: {0}")]
    Build(String),
}

/// The signatures of one identity document, base64 in 64-character lines as EC2 serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSignatures {
    /// `signature`: RSA-SHA256 of the document bytes.
    pub signature: Bytes,
    /// `pkcs7` (and `rsa2048`): DER PKCS#7 signed data carrying the document, without PEM armour.
    pub pkcs7: Bytes,
}

/// imds' signing key and the certificate that verifies its signatures.
pub struct IdentitySigner {
    signing_key: SigningKey<Sha256>,
    certificate: Certificate,
    certificate_pem: String,
    /// The last document signed and its signatures: every snapshot build signs the instance's
    /// document, which control changes (tags, options, role, events) leave as it was.
    last: Mutex<Option<(Bytes, DocumentSignatures)>>,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySigner")
            .field(
                "certificate_subject",
                &self.certificate.tbs_certificate.subject,
            )
            .finish_non_exhaustive()
    }
}

impl IdentitySigner {
    /// A new RSA-2048 key and a self-signed certificate for it, valid from a day ago for ten
    /// years (the day absorbs clock differences between imds and the verifier).
    pub fn generate() -> Result<IdentitySigner, IdentityError> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, KEY_BITS)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let signing_key = SigningKey::<Sha256>::new(key);
        let certificate = self_signed(&signing_key)?;
        IdentitySigner::assemble(signing_key, certificate)
    }

    /// The signer of a PEM private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`) and
    /// its PEM certificate, which must carry that key's public half.
    pub fn from_pem(key_pem: &str, certificate_pem: &str) -> Result<IdentitySigner, IdentityError> {
        let key = RsaPrivateKey::from_pkcs8_pem(key_pem)
            .or_else(|pkcs8| {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                RsaPrivateKey::from_pkcs1_pem(key_pem).map_err(|_| pkcs8)
            })
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let bits = key.size() * 8;
        if bits < KEY_BITS {
            return Err(IdentityError::KeyTooSmall { bits });
        }
        let certificate = Certificate::from_pem(certificate_pem.trim().as_bytes())
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let signing_key = SigningKey::<Sha256>::new(key);
        let public = SubjectPublicKeyInfoOwned::from_key(signing_key.verifying_key())
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        if public != certificate.tbs_certificate.subject_public_key_info {
            return Err(IdentityError::Mismatch);
        }
        IdentitySigner::assemble(signing_key, certificate)
    }

    fn assemble(
        signing_key: SigningKey<Sha256>,
        certificate: Certificate,
    ) -> Result<IdentitySigner, IdentityError> {
        let certificate_pem = certificate
            .to_pem(LineEnding::LF)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Ok(IdentitySigner {
            signing_key,
            certificate,
            certificate_pem,
            last: Mutex::new(None),
        })
    }

    /// The certificate, PEM-encoded (what `imds cert` prints).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The private key as PKCS#8 PEM, for the state directory.
    pub fn private_key_pem(&self) -> Zeroizing<String> {
        let key: &RsaPrivateKey = self.signing_key.as_ref();
        key.to_pkcs8_pem(LineEnding::LF)
            .expect("an RSA key in memory always encodes as PKCS#8")
    }

    /// The public key as SPKI PEM (`openssl x509 -pubkey` of the certificate).
    pub fn public_key_pem(&self) -> String {
        RsaPublicKey::from(self.signing_key.as_ref() as &RsaPrivateKey)
            .to_public_key_pem(LineEnding::LF)
            .expect("an RSA public key always encodes as SPKI")
    }

    /// Signs the exact bytes of an identity document (the same document again: the same
    /// signatures, without signing anew; PKCS#1 v1.5 signatures are deterministic anyway).
    pub fn sign(&self, document: &[u8]) -> DocumentSignatures {
        let remembered = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((signed, signatures)) = remembered {
            if signed == document {
                return signatures;
            }
        }
        // Signed without the lock: a fleet's documents are signed on every core at once.
        let signature: Signature = self.signing_key.sign(document);
        let signatures = DocumentSignatures {
            signature: wrapped_base64(&signature.to_vec()),
            pkcs7: wrapped_base64(&self.pkcs7(document)),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Bytes::copy_from_slice(document), signatures.clone()));
        signatures
    }

    /// PKCS#7 `SignedData` with the document as `id-data` content, a SHA-256 digest and the
    /// signer named by issuer and serial number. As on EC2, the certificate is not embedded:
    /// verifiers pass it (`-certfile`).
    fn pkcs7(&self, document: &[u8]) -> Vec<u8> {
        let content = EncapsulatedContentInfo {
            econtent_type: const_oid::db::rfc5911::ID_DATA,
            econtent: Some(
                Any::new(Tag::OctetString, document)
                    .expect("an octet string holds any bytes up to 256 MiB"),
            ),
        };
        let tbs = &self.certificate.tbs_certificate;
        let signer_id = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        });
        let sha256 = AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ID_SHA_256,
            parameters: None,
        };
        let signer_info =
            SignerInfoBuilder::new(&self.signing_key, signer_id, sha256.clone(), &content, None)
                .expect("the signer info builder takes any RSA key");
        SignedDataBuilder::new(&content)
            .add_digest_algorithm(sha256)
            .and_then(|b| b.add_signer_info::<SigningKey<Sha256>, Signature>(signer_info))
            .and_then(|b| b.build())
            .and_then(|info| info.to_der().map_err(Into::into))
            .expect("PKCS#7 of an identity document: SHA-256 and RSA are supported")
    }
}

/// A self-signed CA certificate for `key`: it is both the signer of the documents and the root
/// a verifier may trust.
fn self_signed(key: &SigningKey<Sha256>) -> Result<Certificate, IdentityError> {
    let build = |e: &dyn std::fmt::Display| IdentityError::Build(e.to_string());
    let now = SystemTime::now();
    let validity = Validity {
        not_before: Time::try_from(now - Duration::from_secs(24 * 3600)).map_err(|e| build(&e))?,
        not_after: Time::try_from(now + CERTIFICATE_VALIDITY).map_err(|e| build(&e))?,
    };
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f;
    let serial = SerialNumber::new(&serial).map_err(|e| build(&e))?;
    let subject = Name::from_str("CN=imds instance identity,O=imds").map_err(|e| build(&e))?;
    let public = SubjectPublicKeyInfoOwned::from_key(key.verifying_key()).map_err(|e| build(&e))?;
    CertificateBuilder::new(Profile::Root, serial, validity, subject, public, key)
        .map_err(|e| build(&e))?
        .build::<Signature>()
        .map_err(|e| build(&e))
}

/// Base64 in lines of 64 characters, no newline after the last, as EC2 serves signatures.
fn wrapped_base64(bytes: &[u8]) -> Bytes {
    let flat = STANDARD.encode(bytes);
    let lines: Vec<&str> = flat
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
        .collect();
    Bytes::from(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;
    use rsa::pkcs1v15::VerifyingKey;
    use rsa::signature::Verifier;
    use std::sync::OnceLock;

    fn signer() -> &'static IdentitySigner {
        static SIGNER: OnceLock<IdentitySigner> = OnceLock::new();
        SIGNER.get_or_init(|| IdentitySigner::generate().unwrap())
    }

    fn unwrap_base64(text: &Bytes) -> Vec<u8> {
        let flat: String = std::str::from_utf8(text).unwrap().split('\n').collect();
        STANDARD.decode(flat).unwrap()
    }

    #[test]
    fn signature_verifies_with_the_certificate_key_and_only_for_the_document() {
        let document = b"{\n  \"region\" : \"us-east-1\"\n}";
        let signed = signer().sign(document);
        let certificate = Certificate::from_pem(signer().certificate_pem().as_bytes()).unwrap();
        let spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap();
        let public = rsa::pkcs8::DecodePublicKey::from_public_key_der(&spki).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(public);
        let signature = Signature::try_from(unwrap_base64(&signed.signature).as_slice()).unwrap();
        assert!(verifier.verify(document, &signature).is_ok());
        assert!(verifier
            .verify(b"{ \"region\" : \"eu-west-1\" }", &signature)
            .is_err());
    }

    #[test]
    fn a_document_signed_again_gets_the_same_signatures_and_another_its_own() {
        let signer = IdentitySigner::generate().unwrap();
        let first = signer.sign(b"{ \"a\" : 1 }");
        assert_eq!(signer.sign(b"{ \"a\" : 1 }"), first);
        let other = signer.sign(b"{ \"a\" : 2 }");
        assert_ne!(other.signature, first.signature);
        assert_ne!(other.pkcs7, first.pkcs7);
        let fresh = IdentitySigner::from_pem(&signer.private_key_pem(), signer.certificate_pem());
        assert_eq!(fresh.unwrap().sign(b"{ \"a\" : 1 }"), first);
    }

    #[test]
    fn signatures_are_base64_in_64_character_lines_without_a_final_newline() {
        let signed = signer().sign(b"{}");
        for text in [&signed.signature, &signed.pkcs7] {
            let text = std::str::from_utf8(text).unwrap();
            assert!(!text.ends_with('\n'));
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(lines.iter().all(|l| l.len() <= 64 && !l.is_empty()));
            assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 64));
        }
        assert_eq!(unwrap_base64(&signed.signature).len(), KEY_BITS / 8);
    }

    #[test]
    fn pkcs7_carries_the_document() {
        let document = b"{\"instanceId\" : \"i-0b4f7d2c9a1e83f56\"}";
        let der = unwrap_base64(&signer().sign(document).pkcs7);
        let info = cms::content_info::ContentInfo::from_der(&der).unwrap();
        assert_eq!(info.content_type, const_oid::db::rfc5911::ID_SIGNED_DATA);
        let signed: cms::signed_data::SignedData = info.content.decode_as().unwrap();
        let content = signed.encap_content_info.econtent.unwrap();
        assert_eq!(content.value(), document);
        assert!(
            signed.certificates.is_none(),
            "the certificate is passed by the verifier"
        );
    }

    #[test]
    fn a_saved_key_and_certificate_load_back() {
        let original = signer();
        let loaded =
            IdentitySigner::from_pem(&original.private_key_pem(), original.certificate_pem())
                .unwrap();
        assert_eq!(loaded.sign(b"x").signature, original.sign(b"x").signature);
        assert!(original
            .public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn a_certificate_of_another_key_is_refused() {
        let other = IdentitySigner::generate().unwrap();
        let error = IdentitySigner::from_pem(&signer().private_key_pem(), other.certificate_pem())
            .unwrap_err();
        assert!(matches!(error, IdentityError::Mismatch), "{error}");
        let error = IdentitySigner::from_pem("not a key", signer().certificate_pem()).unwrap_err();
        assert!(matches!(error, IdentityError::Key(_)), "{error}");
        let error = IdentitySigner::from_pem(&signer().private_key_pem(), "junk").unwrap_err();
        assert!(matches!(error, IdentityError::Certificate(_)), "{error}");
    }
}
