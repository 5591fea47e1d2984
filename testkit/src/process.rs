//! Child processes whose output is kept, and the binaries of this workspace.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many of the last output lines a failure message or a failed test shows.
const TAIL_LINES: usize = 80;

/// How often [`Process::wait_until`] polls.
const POLL: Duration = Duration::from_millis(20);

/// What a child printed: each stream, and both interleaved by line as they came.
#[derive(Default)]
struct Logs {
    stdout: String,
    stderr: String,
    both: String,
}

/// A child process whose standard output and error are collected as they come (standard input is
/// closed). Killed on drop; when the test is failing (the drop runs during a panic), the tail of
/// its output is printed then, so the cause shows next to the failure.
pub struct Process {
    name: String,
    child: Child,
    logs: Arc<Mutex<Logs>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(
    stream: impl Read + Send + 'static,
    logs: Arc<Mutex<Logs>>,
    stderr: bool,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut logs = logs.lock().unwrap_or_else(|e| e.into_inner());
            let own = if stderr {
                &mut logs.stderr
            } else {
                &mut logs.stdout
            };
            own.push_str(&line);
            own.push('\n');
            logs.both.push_str(&line);
            logs.both.push('\n');
        }
    })
}

impl Process {
    /// Spawns `cmd` (its output piped and collected) under `name`, which messages use.
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> Process {
        let name = name.into();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let logs = Arc::new(Mutex::new(Logs::default()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), logs.clone(), false),
            collect(child.stderr.take().expect("stderr"), logs.clone(), true),
        ];
        Process {
            name,
            child,
            logs,
            readers,
        }
    }

    /// The name given at [`Process::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything it printed so far, standard output and error interleaved by line.
    pub fn output(&self) -> String {
        self.logs().both.clone()
    }

    /// Its standard output so far.
    pub fn stdout(&self) -> String {
        self.logs().stdout.clone()
    }

    /// Its standard error so far.
    pub fn stderr(&self) -> String {
        self.logs().stderr.clone()
    }

    /// The last `lines` lines of [`Process::output`], with how many came before.
    pub fn tail(&self, lines: usize) -> String {
        let logs = self.logs();
        let all: Vec<&str> = logs.both.lines().collect();
        let from = all.len().saturating_sub(lines);
        let mut out = String::new();
        if from > 0 {
            out.push_str(&format!("[{from} earlier lines left out]\n"));
        }
        for line in &all[from..] {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// A failure message: `what`, then the tail of its output.
    fn report(&self, what: &str) -> String {
        format!(
            "{} (pid {}) {what}; its last output lines:\n{}",
            self.name,
            self.pid(),
            self.tail(TAIL_LINES)
        )
    }

    /// Its exit status if it has exited (its output is then complete).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().expect("try_wait")?;
        self.drain();
        Some(status)
    }

    /// Lets the reader threads take what is left in the pipes of an exited child (bounded: a
    /// grandchild may hold them open).
    fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for reader in std::mem::take(&mut self.readers) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }

    /// Panics (with the tail of its output) if it has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!("{}", self.report(&format!("exited ({status})")));
        }
    }

    /// Sends `signal` (`KILL`, `TERM`, `INT`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} ({}) failed", self.pid(), self.name);
    }

    /// `kill -9`, then reaps it.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
        self.drain();
    }

    /// Waits at most `limit` for it to exit; its status, or `None` if it is still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits at most `secs` for it to exit (panics, with its output, when it does not).
    pub fn wait(&mut self, secs: u64) -> ExitStatus {
        match self.wait_timeout(Duration::from_secs(secs)) {
            Some(status) => status,
            None => panic!("{}", self.report(&format!("still running after {secs} s"))),
        }
    }

    /// SIGTERM, then waits (at most `secs`) for it to exit; returns the exit code. Panics (after
    /// killing it) when it is still running then.
    pub fn terminate(&mut self, secs: u64) -> Option<i32> {
        // A stopped process would not see the SIGTERM.
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
        self.signal("TERM");
        if let Some(status) = self.wait_timeout(Duration::from_secs(secs)) {
            return status.code();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{}",
            self.report(&format!("still running {secs} s after SIGTERM"))
        );
    }

    /// Polls `probe` (every 20 ms, given this process, e.g. to read its output) until it returns
    /// `Some`, for at most `limit`. Panics, with the tail of its output, when it exits meanwhile or
    /// the time is up; `what` says what was awaited.
    pub async fn wait_until<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut probe: impl AsyncFnMut(&Process) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_waiting(what);
            if let Some(t) = probe(self).await {
                return t;
            }
            self.assert_in_time(deadline, limit, what);
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Process::wait_until`] for code outside an async runtime.
    pub fn wait_until_blocking<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut probe: impl FnMut(&Process) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_waiting(what);
            if let Some(t) = probe(self) {
                return t;
            }
            self.assert_in_time(deadline, limit, what);
            std::thread::sleep(POLL);
        }
    }

    /// Panics if it has exited while waiting until `what`.
    fn assert_waiting(&mut self, what: &str) {
        if let Some(status) = self.try_wait() {
            let what = format!("exited ({status}) while waiting until {what}");
            panic!("{}", self.report(&what));
        }
    }

    /// Panics if `deadline` has passed.
    fn assert_in_time(&self, deadline: Instant, limit: Duration, what: &str) {
        if Instant::now() >= deadline {
            panic!("{}", self.report(&format!("not {what} within {limit:?}")));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            self.drain();
            eprintln!(
                "---- {} (pid {}), its last output lines:\n{}---- end of {}",
                self.name,
                self.pid(),
                self.tail(TAIL_LINES),
                self.name
            );
        }
    }
}

/// The path of binary `name` (of the workspace package of the same name) in the target directory
/// that holds the running test executable. Built with cargo first when it is not there (e.g. when
/// only another package's tests were built); the workspace test run builds them all.
pub fn binary(name: &str) -> PathBuf {
    // Cargo builds of one target directory wait for each other; this keeps the threads of one
    // test binary from queueing several.
    static BUILD: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/debug/deps/test-HASH -> target/debug/
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("the test executable's directory")
        .to_path_buf();
    let path = profile_dir.join(name);
    if path.is_file() {
        return path;
    }
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_file() {
        return path;
    }
    build(name, &profile_dir);
    assert!(
        path.is_file(),
        "{name} not found at {} after building it",
        path.display()
    );
    path
}

/// `cargo build -p NAME --bin NAME` into the target directory above `profile_dir`.
fn build(name: &str, profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("the target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "{name} is not built in {}: building it",
        profile_dir.display()
    );
    let status = Command::new(cargo)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["build", "--profile", profile, "-p", name, "--bin", name])
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building {name} failed (cargo build -p {name})"
    );
}
