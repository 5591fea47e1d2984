//! The machine and its processes: what the results record about where they were measured (cores,
//! CPU, kernel, versions), CPU pinning with `taskset`, free ports, and per-process figures read
//! from `/proc` (RSS, CPU time).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The machine the figures were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Cores of the machine (`processor` entries of `/proc/cpuinfo`).
    pub cores: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// `/proc/loadavg` when the scenario started (other work on the machine shows here).
    pub load_average: String,
}

impl Machine {
    /// Reads the machine's description from `/proc`.
    pub fn detect() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".into(), |m| m.trim().to_string());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        Machine {
            cores: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count()
                .max(1),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            memory_mib,
            load_average: read("/proc/loadavg").trim().to_string(),
        }
    }
}

/// Versions of what was measured.
#[derive(Clone, Debug, Serialize)]
pub struct Versions {
    /// `rustc -V`.
    pub rustc: String,
    /// `git rev-parse --short HEAD` of the work tree, with `-dirty` when it has changes.
    pub git_commit: String,
    /// The profile the harness (and the binaries next to it) were built with.
    pub profile: String,
}

impl Versions {
    /// Asks rustc and git.
    pub fn detect() -> Versions {
        let rustc = output("rustc", &["-V"]).unwrap_or_else(|| "unknown".into());
        let commit =
            output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = output("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty());
        Versions {
            rustc,
            git_commit: if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            },
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
        }
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Trimmed standard output of a command that succeeded.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Which core runs what. With two or more cores and `taskset`, the measured server gets core 0 and
/// the harness (load generator, simulated sidecars, echo upstream) core 1.
#[derive(Clone, Debug, Serialize)]
pub struct Pinning {
    /// Core of the measured server process (`None`: not pinned).
    pub server_core: Option<usize>,
    /// Core of the harness process.
    pub harness_core: Option<usize>,
    /// Why there is no pinning, when there is none.
    pub note: Option<String>,
}

impl Pinning {
    /// Decides the pinning (`enabled = false`: none).
    pub fn plan(enabled: bool) -> Pinning {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let none = |note: &str| Pinning {
            server_core: None,
            harness_core: None,
            note: Some(note.into()),
        };
        if !enabled {
            return none("pinning disabled (--no-pin)");
        }
        if cores < 2 {
            return none("fewer than two cores: nothing pinned");
        }
        if output("taskset", &["-V"]).is_none() && output("taskset", &["--version"]).is_none() {
            return none("taskset not found: nothing pinned");
        }
        Pinning {
            server_core: Some(0),
            harness_core: Some(1),
            note: None,
        }
    }

    /// Pins every thread of this process to the harness core (call before starting runtimes, so
    /// that threads created later inherit it).
    pub fn pin_self(&self) -> anyhow::Result<()> {
        if let Some(core) = self.harness_core {
            let pid = std::process::id().to_string();
            let status = Command::new("taskset")
                .args(["-a", "-p", "-c", &core.to_string(), &pid])
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "taskset -p failed");
        }
        Ok(())
    }

    /// A command running `program` on the server core.
    pub fn server_command(&self, program: &Path) -> Command {
        match self.server_core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// One line saying who runs where.
    pub fn describe(&self) -> String {
        match (self.server_core, self.harness_core) {
            (Some(s), Some(h)) => format!(
                "measured server pinned to core {s} (`taskset -c {s}`), harness (load generator, \
                 simulated sidecars, upstream) to core {h} (`taskset -a -p -c {h}`)"
            ),
            _ => format!(
                "not pinned: {}",
                self.note.as_deref().unwrap_or("no reason recorded")
            ),
        }
    }
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Peak resident set size of `pid` in KiB (`VmHWM`).
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time (user + system, every thread) `pid` has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    cpu_times(pid).map(|(user, system)| user + system)
}

/// User and system CPU time of `pid` so far.
pub fn cpu_times(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Option<Duration> {
        let t: u64 = fields.get(i)?.parse().ok()?;
        Some(Duration::from_nanos(t * 1_000_000_000 / clock_ticks()))
    };
    Some((ticks(11)?, ticks(12)?))
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        output("getconf", &["CLK_TCK"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(100)
    })
}

/// Measures the share of one core a process used over an interval.
pub struct CpuMeter {
    pid: u32,
    start_cpu: Duration,
    start_split: (Duration, Duration),
    start: Instant,
}

impl CpuMeter {
    /// Starts measuring `pid`.
    pub fn start(pid: u32) -> CpuMeter {
        let split = cpu_times(pid).unwrap_or_default();
        CpuMeter {
            pid,
            start_cpu: split.0 + split.1,
            start_split: split,
            start: Instant::now(),
        }
    }

    /// Cores used in user and in system mode since the start.
    pub fn user_system(&self) -> (f64, f64) {
        let (user, system) = cpu_times(self.pid).unwrap_or_default();
        let wall = self.start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
        (
            user.saturating_sub(self.start_split.0).as_secs_f64() / wall,
            system.saturating_sub(self.start_split.1).as_secs_f64() / wall,
        )
    }

    /// Cores used on average since the start (1.0 = one core busy all the time).
    pub fn cores_used(&self) -> f64 {
        let cpu = cpu_time(self.pid).unwrap_or_default();
        let wall = self.start.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        cpu.saturating_sub(self.start_cpu).as_secs_f64() / wall
    }
}

/// Measures how busy the whole machine was over an interval (`/proc/stat`), to show the load
/// from other processes next to a figure.
pub struct MachineMeter {
    start: (u64, u64),
    server: Option<CpuMeter>,
    harness: CpuMeter,
}

fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, busy + get(3) + get(4))
}

impl MachineMeter {
    /// Starts measuring, with `server` (the measured process) and this process to leave out.
    pub fn start(server: Option<u32>) -> MachineMeter {
        MachineMeter {
            start: machine_ticks(),
            server: server.map(CpuMeter::start),
            harness: CpuMeter::start(std::process::id()),
        }
    }

    /// Cores kept busy by everything but the server and the harness since the start.
    pub fn other_cores(&self) -> f64 {
        let ours =
            self.harness.cores_used() + self.server.as_ref().map_or(0.0, CpuMeter::cores_used);
        (self.cores_busy() - ours).max(0.0)
    }

    /// Cores busy on average since the start, every process counted.
    pub fn cores_busy(&self) -> f64 {
        let (busy, total) = machine_ticks();
        let cores = Machine::detect().cores as f64;
        let dt = total.saturating_sub(self.start.1);
        if dt == 0 {
            return 0.0;
        }
        busy.saturating_sub(self.start.0) as f64 / dt as f64 * cores
    }
}

/// A child process the harness started: killed (and reaped) when dropped. Its standard error goes
/// to a file, whose end is shown when it fails to start.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// What it is (for messages).
    pub name: String,
    /// Where its standard error goes.
    pub stderr_path: PathBuf,
}

impl Spawned {
    /// Starts `command` with its standard error in `dir/<name>.stderr`.
    pub fn start(mut command: Command, name: &str, dir: &Path) -> anyhow::Result<Spawned> {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        Ok(Spawned {
            child,
            name: name.into(),
            stderr_path,
        })
    }

    /// The process id (of `taskset`'s target: taskset execs the program in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(message)` when the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}): {}",
                self.name,
                self.stderr_tail(5)
            )),
            _ => None,
        }
    }

    /// The last `lines` lines of its standard error.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join(" | ")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
