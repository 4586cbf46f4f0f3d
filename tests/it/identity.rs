//! The signed identity documents, verified by Debian's `openssl` exactly as the EC2 User Guide
//! and the README do it.

use std::path::Path;
use std::process::{Command, Output};

use imds::app::config::{Config, Overrides};
use imds::fleet::state::Snapshot;

use crate::harness::TestImds;
use crate::process::{Served, IMDS};

const IDENTITY: &str = "/latest/dynamic/instance-identity";

/// Runs `script` with `sh -e` in `dir`, off the async runtime (the server runs on it).
async fn sh(dir: &Path, script: &str) -> Output {
    let dir = dir.to_owned();
    let script = script.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-ec", &script])
            .current_dir(dir)
            .output()
            .expect("sh runs")
    })
    .await
    .unwrap()
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Saves the server's certificate, public key, document, signature and each PKCS#7 leaf
/// (armoured as PEM) into `dir`.
async fn fetch_all(imds: &TestImds, dir: &Path) {
    std::fs::write(dir.join("cert.pem"), &imds.certificate_pem).unwrap();
    let base = format!("http://{}{IDENTITY}", imds.addr);
    let script = format!(
        r#"openssl x509 -pubkey -noout -in cert.pem > pubkey.pem
curl -sf {base}/document > document
curl -sf {base}/signature | base64 -d > sig.bin
for name in pkcs7 rsa2048 dsa2048; do
  (echo "-----BEGIN PKCS7-----"; curl -sf {base}/$name; echo; echo "-----END PKCS7-----") > $name.pem
done"#
    );
    let output = sh(dir, &script).await;
    assert!(output.status.success(), "{}", show(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_identity_lists_its_documents_in_ec2_order() {
    let imds = TestImds::start().await;
    assert_eq!(
        imds.get(&format!("{IDENTITY}/")).await.text(),
        "rsa2048\npkcs7\ndocument\nsignature\ndsa2048"
    );
    for name in ["signature", "pkcs7", "rsa2048", "dsa2048"] {
        let answer = imds.get(&format!("{IDENTITY}/{name}")).await;
        assert_eq!(answer.status, 200, "{name}");
        assert_eq!(answer.header("content-type"), Some("text/plain"), "{name}");
        assert!(!answer.text().ends_with('\n'), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openssl_verifies_the_signature_and_every_pkcs7_against_imds_certificate() {
    let imds = TestImds::start().await;
    let dir = tempfile::tempdir().unwrap();
    fetch_all(&imds, dir.path()).await;

    let output = sh(
        dir.path(),
        "openssl dgst -sha256 -verify pubkey.pem -signature sig.bin document",
    )
    .await;
    assert!(output.status.success(), "{}", show(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Verified OK\n");

    let document = std::fs::read(dir.path().join("document")).unwrap();
    for name in ["pkcs7", "rsa2048", "dsa2048"] {
        let output = sh(
            dir.path(),
            &format!(
                "openssl smime -verify -inform PEM -in {name}.pem -certfile cert.pem -noverify"
            ),
        )
        .await;
        assert!(output.status.success(), "{name}: {}", show(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains("Verification successful"));
        assert_eq!(output.stdout, document, "{name} carries the exact document");
        // The User Guide's form, with the document given separately.
        let output = sh(
            dir.path(),
            &format!("openssl smime -verify -in {name}.pem -inform PEM -content document -certfile cert.pem -noverify > /dev/null"),
        )
        .await;
        assert!(
            output.status.success(),
            "{name} with -content: {}",
            show(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_document_fails_verification() {
    let imds = TestImds::start().await;
    let dir = tempfile::tempdir().unwrap();
    fetch_all(&imds, dir.path()).await;
    let document = std::fs::read_to_string(dir.path().join("document")).unwrap();
    let forged = document.replace("t3.medium", "p5.48xlarge");
    assert_ne!(forged, document);
    std::fs::write(dir.path().join("forged"), forged).unwrap();

    let output = sh(
        dir.path(),
        "openssl dgst -sha256 -verify pubkey.pem -signature sig.bin forged",
    )
    .await;
    assert!(!output.status.success(), "{}", show(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Verification failure\n"
    );

    let output = sh(
        dir.path(),
        "openssl smime -verify -in pkcs7.pem -inform PEM -content forged -certfile cert.pem -noverify",
    )
    .await;
    assert!(!output.status.success(), "{}", show(&output));

    // A PKCS#7 whose embedded document was edited fails too.
    let output = sh(
        dir.path(),
        r#"sed '1d;$d' pkcs7.pem | base64 -d > pkcs7.der
sed 's/t3\.medium/t3.xlarge/' pkcs7.der > edited.der
cmp -s pkcs7.der edited.der && exit 3
openssl smime -verify -inform DER -in edited.der -certfile cert.pem -noverify"#,
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(4),
        "digest mismatch: {}",
        show(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_instance_gets_a_new_document_signed_again() {
    let imds = TestImds::start().await;
    let before = imds
        .get(&format!("{IDENTITY}/signature"))
        .await
        .text()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moved.toml");
    std::fs::write(
        &path,
        "[instance]\ninstance_type = \"m7g.large\"\narchitecture = \"arm64\"\n",
    )
    .unwrap();
    let moved = Config::load(Some(&path))
        .unwrap()
        .resolve(&Overrides::default(), Some(&path))
        .unwrap();
    imds.state
        .replace(Snapshot::new(moved.instance, &imds.keys, 0))
        .expect("one instance holds its addresses alone");

    let document = imds.get(&format!("{IDENTITY}/document")).await;
    assert!(document.text().contains("\"instanceType\" : \"m7g.large\""));
    let after = imds
        .get(&format!("{IDENTITY}/signature"))
        .await
        .text()
        .to_owned();
    assert_ne!(before, after);
    fetch_all(&imds, dir.path()).await;
    let output = sh(
        dir.path(),
        "openssl dgst -sha256 -verify pubkey.pem -signature sig.bin document && \
         openssl smime -verify -inform PEM -in rsa2048.pem -certfile cert.pem -noverify | grep -q m7g.large",
    )
    .await;
    assert!(output.status.success(), "{}", show(&output));
}

/// The README's verification commands, run as written against `imds serve --state-dir` and the
/// certificate `imds cert` prints for that directory.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_verification_commands_work_against_a_running_server() {
    let readme = include_str!("../../README.md");
    let block = readme
        .split("<!-- verify-identity -->")
        .nth(1)
        .and_then(|after| after.split("```sh\n").nth(1))
        .and_then(|code| code.split("```").next())
        .expect("README has a ```sh block after <!-- verify-identity -->");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("imds-state");
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state);
    let served = Served::spawn(command);
    let script = block
        .replace("http://127.0.0.1:1338", &served.endpoints[0])
        .replace(
            "imds cert --state-dir imds-state",
            &format!("{IMDS} cert --state-dir {}", state.display()),
        );
    let output = sh(dir.path(), &script).await;
    assert!(output.status.success(), "{script}\n{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Verified OK"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Verification successful"), "{stderr}");
    served.stop("TERM");
}

#[test]
fn imds_cert_without_a_lasting_key_explains_what_to_do() {
    let output = Command::new(IMDS).arg("cert").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--state-dir"), "{stderr}");
}

#[test]
fn imds_cert_prints_the_certificate_of_a_given_key_and_its_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    // A directory that does not exist (a typo) is refused: its new key would verify nothing.
    let typo = Command::new(IMDS)
        .args(["cert", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("imds serve --state-dir"),
        "{stderr}"
    );
    assert!(!state.exists(), "nothing is created");
    std::fs::create_dir(&state).unwrap();
    let cert = Command::new(IMDS)
        .args(["cert", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(cert.status.success());
    let pem = String::from_utf8(cert.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    let again = Command::new(IMDS)
        .args(["cert", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        pem,
        "the key is kept"
    );
    let public = Command::new(IMDS)
        .args(["cert", "--public-key", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(String::from_utf8(public.stdout)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let stray = Command::new(IMDS)
        .args(["cert", "--signing-key", "/nonexistent/key.pem"])
        .output()
        .unwrap();
    assert_eq!(
        stray.status.code(),
        Some(2),
        "--signing-key needs --signing-cert"
    );
    let missing = Command::new(IMDS)
        .args([
            "cert",
            "--signing-key",
            "/nonexistent/key.pem",
            "--signing-cert",
            "/nonexistent/cert.pem",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("/nonexistent/key.pem"), "{stderr}");
}
