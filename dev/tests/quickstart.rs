//! The README's tour, run as written, so it cannot rot.
//!
//! The README marks its tour with `<!-- quickstart:begin -->` and `<!-- quickstart:end -->`. In
//! between, every ```` ```sh ```` block is executed (one bash process, in order, from the repository
//! root, like a reader's second terminal), except blocks whose info string says `no-run` (the gRPC
//! lookup needs grpcurl). A ```` ```text ```` block right after an executed block is that block's
//! expected output: each of its lines must appear in the output, in order, where `...` stands for
//! any text and a line holding only `...` for any number of lines.
//!
//! The test starts the real `vexil-dev` binary on its fixed default ports, with a temporary
//! `VEXIL_DEV_DIR` (the README reads the admin token from `${VEXIL_DEV_DIR:-.vexil-dev}`), waits for
//! the sidecar to be ready, runs the tour, and stops it with Ctrl-C (SIGINT), which must end it
//! cleanly. It also checks that every command of the tour is one `vexil-dev` prints, so the README
//! and the printed tour say the same thing.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vexil_testkit::{Process, TempDir, http_status_blocking, loopback};

/// The ports `vexil-dev` uses (TCP), and its QUIC port (UDP).
const TCP_PORTS: &[(u16, &str)] = &[
    (8080, "control's admin API"),
    (15101, "the sidecar's outbound proxy"),
    (8013, "the sidecar's gRPC evaluation"),
    (8014, "the sidecar's admin endpoints"),
    (8015, "the sidecar's flagd sync"),
    (8016, "the sidecar's OFREP"),
    (9000, "the demo upstream"),
];
const UDP_PORT: u16 = 7443;

/// The last line `vexil-dev` prints once everything is started.
const TOUR_END: &str = "Ctrl-C stops everything";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("dev/ has a parent")
        .to_path_buf()
}

/// A fenced code block of the quickstart section.
#[derive(Debug)]
struct Block {
    /// The info string (`sh`, `sh no-run`, `text`).
    info: String,
    /// The lines between the fences.
    text: String,
}

impl Block {
    fn is_shell(&self) -> bool {
        self.info.split_whitespace().next() == Some("sh")
    }

    fn is_executed(&self) -> bool {
        self.is_shell() && !self.info.split_whitespace().any(|w| w == "no-run")
    }

    fn is_output(&self) -> bool {
        self.info.trim() == "text"
    }
}

/// The code blocks between the quickstart markers of `readme`.
fn quickstart_blocks(readme: &str) -> Vec<Block> {
    let begin = readme
        .find("<!-- quickstart:begin -->")
        .expect("README.md has a <!-- quickstart:begin --> marker");
    let end = readme
        .find("<!-- quickstart:end -->")
        .expect("README.md has a <!-- quickstart:end --> marker");
    assert!(begin < end, "quickstart:begin comes before quickstart:end");
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in readme[begin..end].lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(_), Some(_)) => blocks.push(open.take().expect("an open block")),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "unterminated code block in the quickstart");
    blocks
}

/// The commands of a shell block: continuation lines joined, comments and blank lines left out.
fn commands(block: &Block) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(normalize(&current));
                current.clear();
            }
        }
    }
    out
}

/// Runs of whitespace as one space; shell line continuations joined.
fn normalize(text: &str) -> String {
    text.replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when `line` matches `pattern`, where `...` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || !line.ends_with(last) || line.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Checks that every line of `expected` (trimmed) matches a line of `actual` (trimmed), in order.
fn check_output(expected: &str, actual: &str) -> Result<(), String> {
    let mut actual_lines = actual.lines().map(str::trim);
    for want in expected.lines().map(str::trim) {
        if want.is_empty() || want == "..." {
            continue;
        }
        if !actual_lines.any(|got| matches(want, got)) {
            return Err(format!("no line matching {want:?} (in order)"));
        }
    }
    Ok(())
}

/// Fails with a clear message when a port `vexil-dev` needs is taken.
fn require_free_ports() {
    for &(port, what) in TCP_PORTS {
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "TCP port 127.0.0.1:{port} ({what}) is not free: {e}. vexil-dev uses fixed ports; \
                 stop whatever listens there (another vexil-dev?) and run the test again"
            );
        }
    }
    if let Err(e) = UdpSocket::bind(("127.0.0.1", UDP_PORT)) {
        panic!(
            "UDP port 127.0.0.1:{UDP_PORT} (control's QUIC sync) is not free: {e}. vexil-dev uses \
             fixed ports; stop whatever uses it (another vexil-dev?) and run the test again"
        );
    }
}

/// The status code of `GET path` on `127.0.0.1:port`, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    http_status_blocking(loopback(port), path)
}

/// The running `vexil-dev`: stopped (SIGINT, then SIGKILL) and its directory removed on drop.
struct Dev {
    process: Process,
    _dir: TempDir,
}

impl Dev {
    fn start(dir: TempDir) -> Dev {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vexil-dev"));
        cmd.current_dir(repo_root())
            .env("VEXIL_DEV_DIR", dir.path())
            .env("VEXIL_LOG", "warn");
        Dev {
            process: Process::spawn("vexil-dev", cmd),
            _dir: dir,
        }
    }

    fn stdout(&self) -> String {
        self.process.stdout()
    }

    fn logs(&self) -> String {
        format!(
            "--- vexil-dev stdout:\n{}\n--- vexil-dev stderr:\n{}",
            self.stdout(),
            self.process.stderr()
        )
    }

    /// Waits until the tour is printed and the sidecar has its flags.
    fn wait_ready(&mut self, limit: Duration) {
        self.process
            .wait_until_blocking(limit, "ready (tour printed, sidecar ready)", |p| {
                (p.stdout().contains(TOUR_END) && http_status(8014, "/readyz") == Some(200))
                    .then_some(())
            });
    }

    /// Ctrl-C; returns whether it exited successfully within `limit`.
    fn interrupt(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-INT", &self.process.pid().to_string()])
            .status();
        self.process.wait_timeout(limit)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // Ctrl-C first, so it stops cleanly; the kit kills it if that is not enough.
        if self.process.try_wait().is_none() {
            self.interrupt(Duration::from_secs(10));
        }
    }
}

/// Runs `script` with bash from the repository root; returns (success, stdout, stderr).
fn run_bash(script: &str, dev_dir: &Path, limit: Duration) -> (bool, String, String) {
    // The tour runs `vexilctl` from the PATH: the one of this build.
    let vexilctl = vexil_testkit::process::binary("vexilctl");
    let bin_dir = vexilctl.parent().expect("a target directory");
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("a PATH");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .current_dir(repo_root())
        .env("VEXIL_DEV_DIR", dev_dir)
        .env("PATH", path)
        .env_remove("VEXIL_URL")
        .env_remove("VEXIL_TOKEN")
        // The tour talks to 127.0.0.1 directly (or names its proxy with -x).
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
    let mut bash = Process::spawn("bash (the quickstart)", cmd);
    let status = bash.wait_timeout(limit);
    if status.is_none() {
        bash.kill9();
    }
    (
        status.is_some_and(|s| s.success()),
        bash.stdout(),
        bash.stderr(),
    )
}

fn marker(i: usize) -> String {
    format!("@@quickstart-block-{i}@@")
}

#[test]
fn the_readme_quickstart_works() {
    let started = Instant::now();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let blocks = quickstart_blocks(&readme);
    let executed: Vec<usize> = (0..blocks.len())
        .filter(|&i| blocks[i].is_executed())
        .collect();
    assert!(
        executed.len() >= 4,
        "the quickstart should run at least 4 shell blocks, found {}",
        executed.len()
    );

    require_free_ports();
    let dir = TempDir::new("vexil-quickstart");
    let dir_path = dir.to_path_buf();
    let mut dev = Dev::start(dir);
    dev.wait_ready(Duration::from_secs(60));
    assert_eq!(
        http_status(8080, "/readyz"),
        Some(200),
        "control is not ready\n{}",
        dev.logs()
    );

    // Every command of the README's tour is one vexil-dev prints (the token export aside: the
    // README reads the token from the file, vexil-dev prints it).
    let tour = normalize(&dev.stdout());
    for block in blocks.iter().filter(|b| b.is_shell()) {
        for command in commands(block) {
            if command.starts_with("export ADMIN_TOKEN=") {
                continue;
            }
            assert!(
                tour.contains(&command),
                "the README's command {command:?} is not in the tour vexil-dev prints:\n{}",
                dev.stdout()
            );
        }
    }
    let token =
        std::fs::read_to_string(dir_path.join("admin-token")).expect("the admin-token file");
    assert!(
        tour.contains(&format!("export ADMIN_TOKEN={}", token.trim())),
        "vexil-dev prints the token of its admin-token file"
    );

    // The tour, in one shell, each executed block after a marker line.
    let mut script = String::from("set -eo pipefail\n");
    for &i in &executed {
        script.push_str(&format!("printf '\\n%s\\n' '{}'\n", marker(i)));
        script.push_str(&blocks[i].text);
    }
    let (ok, out, err) = run_bash(&script, &dir_path, Duration::from_secs(30));
    assert!(
        ok,
        "the README's quickstart failed\n--- script:\n{script}\n--- stdout:\n{out}\n--- stderr:\n{err}\n{}",
        dev.logs()
    );
    let mut outputs = std::collections::HashMap::new();
    for (n, &i) in executed.iter().enumerate() {
        let from = out.find(&marker(i)).expect("marker") + marker(i).len();
        let to = executed
            .get(n + 1)
            .map_or(out.len(), |&j| out.find(&marker(j)).expect("marker"));
        outputs.insert(i, out[from..to].to_string());
    }

    // The outputs the README shows.
    let mut checked = 0;
    for (i, block) in blocks.iter().enumerate().skip(1) {
        if block.is_output() && blocks[i - 1].is_executed() {
            if let Err(e) = check_output(&block.text, &outputs[&(i - 1)]) {
                panic!(
                    "the README's output of\n{}\ndoes not match: {e}\n--- expected:\n{}--- actual:\n{}",
                    blocks[i - 1].text,
                    block.text,
                    outputs[&(i - 1)]
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "the README shows at least 4 outputs, found {checked}"
    );

    // What the tour is for, whatever the README's wording: the header appears, OFREP answers, the
    // header changes right after a change through the API, the sidecar is listed.
    let outs: Vec<&str> = executed.iter().map(|i| outputs[i].as_str()).collect();
    let first_off = outs
        .iter()
        .position(|o| o.contains("vexil-flags") && o.contains("new-checkout=?0"));
    let then_on = first_off.and_then(|f| {
        outs.iter()
            .skip(f + 1)
            .position(|o| o.contains("vexil-flags") && o.contains("new-checkout=?1"))
    });
    assert!(
        first_off.is_some() && then_on.is_some(),
        "the tour shows vexil-flags with new-checkout=?0, then ?1 after the change:\n{out}"
    );
    assert!(
        outs.iter()
            .any(|o| o.contains(r#""key":"new-checkout""#) && o.contains(r#""reason":"#)),
        "the tour shows an OFREP answer:\n{out}"
    );
    assert!(
        outs.iter()
            .any(|o| o.contains(r#""id":"vexil-dev-sidecar""#)),
        "the tour lists the sidecar:\n{out}"
    );

    // Ctrl-C stops everything cleanly.
    let logs = dev.logs();
    match dev.interrupt(Duration::from_secs(15)) {
        Some(status) => assert!(status.success(), "vexil-dev exited with {status}\n{logs}"),
        None => panic!("vexil-dev did not stop within 15 s of Ctrl-C\n{logs}"),
    }
    println!("quickstart: ok in {:?}", started.elapsed());
}

#[test]
fn output_patterns() {
    assert!(matches("a...c", "abbbc"));
    assert!(matches("...", "anything"));
    assert!(matches(r#"{"x":1,...}"#, r#"{"x":1,"y":2}"#));
    assert!(!matches("a...c", "abbb"));
    assert!(!matches("a...b...c", "acb"));
    assert!(matches("abc", "abc"));
    assert!(!matches("abc", "abcd"));
    assert!(!matches("ab...ba", "aba"));
    assert!(check_output("{\n...\n  \"k\": 1\n}\n", "{\n \"a\": 0,\n \"k\": 1\n}").is_ok());
    assert!(check_output("b\na\n", "a\nb\n").is_err());
}

#[test]
fn commands_join_continuations_and_skip_comments() {
    let block = Block {
        info: "sh".into(),
        text: "# a comment\ncurl -s \\\n   -H 'x: y' \\\n  http://h/\n\necho  done\n".into(),
    };
    assert_eq!(
        commands(&block),
        ["curl -s -H 'x: y' http://h/", "echo done"]
    );
    assert!(
        Block {
            info: "sh no-run".into(),
            text: String::new()
        }
        .is_shell()
    );
    assert!(
        !Block {
            info: "sh no-run".into(),
            text: String::new()
        }
        .is_executed()
    );
}
