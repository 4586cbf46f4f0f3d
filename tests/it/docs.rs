//! The docs are tests: every ```` ```sh ```` block of README.md and docs/*.md runs here as
//! written, in order, the way a reader runs it in a terminal, or is marked ```` ```sh excerpt ````
//! (a deployment file, a command that needs root, PostgreSQL or another machine).
//!
//! Each document runs in its own network namespace, so its fixed ports (1338, 1339, ...) are
//! free whatever else runs, in a fresh directory that is also `$HOME`, with a clean environment:
//! no AWS configuration, no `IMDS_*` or `AEMM_*` variables, `imds` on the `PATH` and `EDITOR`
//! an editor that changes nothing. How a reader runs a block:
//! - A server command (`imds serve`, `imds aemm`, `ec2-metadata-mock`) runs until the document
//!   ends; the next command waits until it has printed its addresses. Typed without `&`, it is
//!   the reader's server in its own terminal: the next such command replaces it (Ctrl-C there
//!   first). With `&`, it runs beside whatever runs, and must not clash with it.
//! - Other commands must succeed (`set -e -o pipefail`).
//! - In a transcript (lines starting with `$ `), the lines after a command are what it prints:
//!   each must appear in its output, in order (for a server, in its start-up lines). A reader
//!   types each command after the last one's output: 200 ms pass between them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::IMDS;

/// Every document with shell blocks.
const DOCS: &[&str] = &[
    "README.md",
    "docs/aemm.md",
    "docs/deploy.md",
    "docs/fleet.md",
    "docs/limits.md",
    "docs/security.md",
    "docs/throttling.md",
    "python/README.md",
];

/// The documents whose runnable blocks a test below runs.
const RUN: &[&str] = &[
    "README.md",
    "docs/aemm.md",
    "docs/fleet.md",
    "docs/security.md",
];

/// Commands that start a server.
const SERVERS: &[&str] = &[
    "imds serve",
    "imds aemm",
    "ec2-metadata-mock",
    "~/bin/ec2-metadata-mock",
];

/// A fenced block of a document.
#[derive(Debug)]
struct Block {
    doc: &'static str,
    /// Line of the opening fence, counting from 1.
    line: usize,
    /// The info string (`sh`, `sh excerpt`, `toml`, ...).
    info: String,
    text: String,
}

impl Block {
    fn is_shell(&self) -> bool {
        self.info.split_whitespace().next() == Some("sh")
    }

    fn is_excerpt(&self) -> bool {
        self.info.split_whitespace().any(|word| word == "excerpt")
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn blocks(doc: &'static str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join(doc)).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    doc,
                    line: index + 1,
                    info: info.trim().to_owned(),
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{doc}: a fence is not closed");
    blocks
}

#[test]
fn every_shell_block_in_the_docs_runs_here_or_is_marked_an_excerpt() {
    let mut found = Vec::new();
    for doc in DOCS {
        for block in blocks(doc) {
            let language = block.info.split_whitespace().next().unwrap_or("");
            assert!(
                !matches!(
                    language,
                    "" | "bash" | "shell" | "console" | "zsh" | "shell-session"
                ),
                "{}:{}: write ```sh (or ```sh excerpt) for shell, or name the language, not ```{}",
                block.doc,
                block.line,
                block.info
            );
            if block.is_shell() && !block.is_excerpt() {
                found.push(block.doc);
            }
        }
    }
    found.dedup();
    for doc in &found {
        assert!(
            RUN.contains(doc),
            "{doc} has runnable ```sh blocks but no test runs them: add it to RUN and a test"
        );
    }
    for doc in RUN {
        assert!(found.contains(doc), "{doc} has no runnable block any more");
    }
    let listed: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|entry| format!("docs/{}", entry.unwrap().file_name().to_string_lossy()))
        .filter(|name| name.ends_with(".md"))
        .collect();
    for doc in listed {
        assert!(DOCS.contains(&doc.as_str()), "{doc} is not in DOCS");
    }
}

/// A bash word holding `text` as is.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The command of a logical line, its trailing comment dropped (a `#` after a space, outside
/// quotes), and whether it ends with `&`.
fn command_of(line: &str) -> (String, bool) {
    let mut quote = None;
    let mut end = line.len();
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => {
                end = i;
                break;
            }
            _ => {}
        }
        previous = c;
    }
    let command = line[..end].trim();
    match command.strip_suffix('&') {
        Some(rest) if !rest.ends_with('&') => (rest.trim().to_owned(), true),
        _ => (command.to_owned(), false),
    }
}

fn is_server(command: &str) -> bool {
    SERVERS
        .iter()
        .any(|s| command == *s || command.starts_with(&format!("{s} ")))
}

/// The script lines that run a server `command`.
fn serve(command: &str, background: bool) -> String {
    let mode = if background { "bg" } else { "fg" };
    format!("__serve {mode} {command}\n")
}

/// The bash that runs `block` as a reader would.
fn script_of(block: &Block) -> String {
    let mut script = format!(
        "echo {}\n",
        quoted(&format!("@@ {}:{}", block.doc, block.line))
    );
    let lines: Vec<&str> = block.text.lines().collect();
    let transcript = lines
        .iter()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.starts_with("$ "));
    let mut i = 0;
    let mut heredoc: Option<String> = None;
    while i < lines.len() {
        // A logical line: continuation lines joined.
        let start = i;
        let mut logical = lines[i].to_owned();
        while logical.ends_with('\\') && i + 1 < lines.len() && heredoc.is_none() {
            i += 1;
            logical.push('\n');
            logical.push_str(lines[i]);
        }
        i += 1;
        if let Some(end) = &heredoc {
            if logical.trim() == end {
                heredoc = None;
            }
            script.push_str(&logical);
            script.push('\n');
            continue;
        }
        if transcript {
            let Some(command) = logical.strip_prefix("$ ") else {
                continue; // output, checked with its command
            };
            let mut expected = Vec::new();
            while i < lines.len() && !lines[i].starts_with("$ ") {
                if !lines[i].trim().is_empty() {
                    expected.push(quoted(lines[i]));
                }
                i += 1;
            }
            let (bare, background) = command_of(command);
            if is_server(&bare) {
                script.push_str(&serve(&bare, background));
                script.push_str(&format!("__expect \"$__log\" {}\n", expected.join(" ")));
            } else {
                script.push_str(&format!(
                    "__run {} <<'__COMMAND__'\n{command}\n__COMMAND__\n__expect \"$__out\" {}\n",
                    quoted(&format!("{}:{}", block.doc, block.line + start + 1)),
                    expected.join(" ")
                ));
            }
            continue;
        }
        if let Some(marker) = logical.split("<<").nth(1) {
            let end = marker.trim().trim_matches(['\'', '"', '-']).to_owned();
            heredoc = Some(end);
        }
        let (bare, background) = command_of(&logical);
        if is_server(&bare) {
            script.push_str(&serve(&bare, background));
        } else {
            script.push_str(&logical);
            script.push('\n');
        }
    }
    script
}

/// The functions the scripts use.
const PRELUDE: &str = r#"
set -e -o pipefail
__n=0
__fg=""
__log=""
__out="$__LOGS/out"
trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT
__serve() {
  local mode=$1; shift
  if [ "$mode" = fg ] && [ -n "$__fg" ]; then
    kill -INT "$__fg" 2>/dev/null || true
    wait "$__fg" 2>/dev/null || true
  fi
  __n=$((__n + 1))
  __log="$__LOGS/server-$__n.log"
  "$@" > "$__log" 2>&1 &
  local pid=$!
  if [ "$mode" = fg ]; then __fg=$pid; fi
  local tries=0
  until grep -q '^export AWS_EC2_METADATA_SERVICE_ENDPOINT=' "$__log"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "@@ the server stopped: $*"; cat "$__log"; exit 1
    fi
    tries=$((tries + 1))
    if [ $tries -gt 300 ]; then echo "@@ the server did not start in 30 s: $*"; cat "$__log"; exit 1; fi
    sleep 0.1
  done
}
__run() {
  local where=$1 command
  command=$(cat)
  sleep 0.2
  if ! eval "$command" > "$__out" 2>&1; then
    echo "@@ $where failed: $command"; cat "$__out"; exit 1
  fi
}
__expect() {
  local file=$1; shift
  local rest found
  rest=$(cat "$file")
  for want in "$@"; do
    found=$(printf '%s\n' "$rest" | grep -n -F -x -e "$want" | head -1 | cut -d: -f1) || true
    if [ -z "$found" ]; then
      echo "@@ expected, in order, the line: $want"; echo "@@ in:"; cat "$file"; exit 1
    fi
    rest=$(printf '%s\n' "$rest" | tail -n +$((found + 1)))
  done
}
"#;

/// Where the test clients live, when a document needs them (the AWS CLI, botocore).
fn deps_bin() -> PathBuf {
    let deps = std::env::var_os("IMDS_CONFORMANCE_DEPS")
        .map_or_else(|| repo().join(".test-deps"), PathBuf::from);
    let bin = deps.join("venv/bin");
    assert!(
        bin.join("aws").exists(),
        "{} is missing: run scripts/install-test-deps (scripts/test does)",
        bin.display()
    );
    bin
}

/// Runs every runnable shell block of `doc`, in order, as the module's doc says; panics with
/// the output when one fails.
fn run_document(doc: &'static str, clients: Option<PathBuf>) {
    if let Err(failure) = run_blocks(blocks(doc), clients) {
        panic!("{doc} does not run as written: {failure}");
    }
}

/// Runs the runnable shell blocks of `blocks` in order; the output when one fails.
fn run_blocks(blocks: Vec<Block>, clients: Option<PathBuf>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let logs = dir.path().join("logs");
    let home = dir.path().join("home");
    for made in [&bin, &logs, &home] {
        std::fs::create_dir(made).unwrap();
    }
    std::os::unix::fs::symlink(IMDS, bin.join("imds")).unwrap();
    let mut script = String::from(PRELUDE);
    for block in blocks {
        if block.is_shell() && !block.is_excerpt() {
            script.push_str(&script_of(&block));
        }
    }
    script.push_str("echo '@@ done'\n");
    let file = dir.path().join("doc.sh");
    std::fs::write(&file, &script).unwrap();
    let mut path = bin.display().to_string();
    if let Some(clients) = &clients {
        path = format!("{path}:{}", clients.display());
    }
    path.push_str(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("unshare")
        .args(["--net", "--map-root-user", "--", "bash", "-c"])
        .arg("ip link set lo up && exec bash --noprofile --norc \"$0\"")
        .arg(&file)
        .current_dir(&home)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env("EDITOR", "true")
        .env("__LOGS", &logs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("unshare (util-linux) runs the document in its own network namespace");
    let group = child.id();
    // bash's own kill: procps' kill reads `kill -KILL -PGID` as `kill(-1)`, every process.
    let kill_group = || {
        let _ = Command::new("bash")
            .args([
                "-c",
                "kill -s KILL -- \"-$0\" 2>/dev/null",
                &group.to_string(),
            ])
            .status();
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    kill_group();
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    match status.is_some_and(|s| s.success()) && output.contains("@@ done") {
        true => Ok(()),
        false => Err(format!(
            "{status:?}; the block that failed starts at the last `@@ doc:line`:\n{output}"
        )),
    }
}

#[test]
fn the_security_lab_runs_as_written() {
    run_document("docs/security.md", None);
}

#[test]
fn the_aemm_guide_runs_as_written() {
    run_document("docs/aemm.md", None);
}

#[test]
#[ignore = "needs the AWS CLI: scripts/test installs it"]
fn the_fleet_guide_runs_as_written() {
    run_document("docs/fleet.md", Some(deps_bin()));
}

#[test]
#[ignore = "needs the AWS CLI and botocore: scripts/test installs them"]
fn the_readme_runs_as_written() {
    run_document("README.md", Some(deps_bin()));
}

fn block(text: &str) -> Block {
    Block {
        doc: "t.md",
        line: 1,
        info: "sh".into(),
        text: text.into(),
    }
}

#[test]
fn a_block_that_fails_or_prints_otherwise_or_clashes_fails_its_document() {
    let ok = block("$ imds serve\nlistening on http://127.0.0.1:1338\n$ echo hi\nhi\n");
    assert_eq!(run_blocks(vec![ok], None), Ok(()));
    let failing = block("true\nfalse\ntrue\n");
    let err = run_blocks(vec![failing], None).unwrap_err();
    assert!(err.contains("@@ t.md:1"), "{err}");
    let other_output = block("$ echo hello\nhi\n");
    let err = run_blocks(vec![other_output], None).unwrap_err();
    assert!(err.contains("expected, in order, the line: hi"), "{err}");
    // A second server in the background on the control port of the first.
    let clash = block("imds serve\nimds serve --listen 127.0.0.1:1341 &\n");
    let err = run_blocks(vec![clash], None).unwrap_err();
    assert!(
        err.contains("the server stopped") && err.contains("127.0.0.1:1339"),
        "{err}"
    );
}

#[test]
fn a_transcript_checks_each_commands_output_and_servers_wait_for_their_addresses() {
    let script = script_of(&block(
        "$ imds serve --listen 127.0.0.1:1338 &  # the reader's server\nlistening on http://127.0.0.1:1338\n$ echo 'a b' \\\n    c\na b c\n",
    ));
    assert!(
        script.contains("__serve bg imds serve --listen 127.0.0.1:1338\n"),
        "{script}"
    );
    assert!(
        script.contains("__expect \"$__log\" 'listening on http://127.0.0.1:1338'"),
        "{script}"
    );
    assert!(
        script.contains("echo 'a b' \\\n    c\n__COMMAND__\n__expect \"$__out\" 'a b c'"),
        "{script}"
    );
    assert_eq!(
        command_of("curl -s 'a # b' # c"),
        ("curl -s 'a # b'".into(), false)
    );
    assert_eq!(
        command_of("imds serve --fleet &"),
        ("imds serve --fleet".into(), true)
    );
    assert_eq!(command_of("a && b"), ("a && b".into(), false));
}
