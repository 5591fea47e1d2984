//! `vexil-bench`: runs the benchmark scenarios and writes their results.
//!
//! ```sh
//! cargo run --release -p vexil-bench -- all          # every scenario, into bench/results/
//! cargo run --release -p vexil-bench -- lookup hop   # some of them
//! cargo run -p vexil-bench -- --smoke all            # seconds, tiny loads (what CI runs)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Parser;
use vexil_bench::harness::Ctx;
use vexil_bench::scenarios::{self, ALL};
use vexil_bench::sys::Pinning;
use vexil_testkit::TempDir;

#[derive(Parser, Debug)]
#[command(name = "vexil-bench", about = "Vexil's benchmark scenarios")]
struct Cli {
    /// Scenarios to run: lookup, propagate, footprint, engine, hop, soak, usage, or all.
    #[arg(default_value = "all")]
    scenarios: Vec<String>,
    /// Tiny loads, a few seconds in all: checks that every scenario still runs.
    #[arg(long)]
    smoke: bool,
    /// Where results go (default: bench/results, or <target>/bench-smoke with --smoke).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not pin processes to cores.
    #[arg(long)]
    no_pin: bool,
    /// Do not build vexil-proxy and vexil-control first (use the binaries as they are).
    #[arg(long)]
    no_build: bool,
    /// The vexil-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// The vexil-control binary (default: next to this one).
    #[arg(long)]
    control_bin: Option<PathBuf>,
    /// engine: only summarise criterion's existing data, do not run the benches.
    #[arg(long)]
    no_criterion: bool,
    /// Unleash Edge binary, the lookup baseline (never downloaded).
    #[arg(long, env = "VEXIL_UNLEASH_EDGE")]
    unleash_edge: Option<PathBuf>,
    /// PostgreSQL to create a fresh database on per propagate run (an existing database, trust auth).
    #[arg(
        long,
        env = "VEXIL_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// soak: seconds of traffic (default 600; 3 with --smoke); usage: seconds of reporting
    /// (default 120; 4 with --smoke).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// propagate: only these sidecar counts (default 100,1000,10000; the whole matrix takes
    /// about two minutes on two cores); usage: these sidecar counts (default 10000).
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    sidecars: Option<Vec<usize>>,
    /// propagate: only these flag counts per environment (default 1,1000).
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    flags: Option<Vec<usize>>,
    /// propagate and usage: only these backends (sqlite, postgres; default both).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...", value_parser = scenarios::propagate::BACKENDS)]
    backends: Option<Vec<String>>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vexil-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let names = scenario_names(&cli.scenarios)?;
    let exe = std::env::current_exe()?;
    let bin_dir = exe
        .parent()
        .expect("the binary has a directory")
        .to_path_buf();
    let target_dir = bin_dir.parent().unwrap_or(&bin_dir).to_path_buf();
    if !cli.no_build {
        build_binaries(&target_dir)?;
    }
    let pinning = Pinning::plan(!cli.no_pin);
    // Before any runtime: threads created later inherit the affinity.
    pinning.pin_self()?;
    println!("vexil-bench: {}", pinning.describe());
    let work = TempDir::new("vexil-bench");
    let ctx = Ctx {
        smoke: cli.smoke,
        pinning,
        proxy_bin: cli.proxy_bin.unwrap_or_else(|| bin_dir.join("vexil-proxy")),
        control_bin: cli
            .control_bin
            .unwrap_or_else(|| bin_dir.join("vexil-control")),
        work: work.to_path_buf(),
        unleash_edge: cli.unleash_edge.filter(|p| p.exists()),
        nginx: find_nginx(),
        haproxy: [
            "/usr/sbin/haproxy",
            "/usr/bin/haproxy",
            "/usr/local/sbin/haproxy",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists()),
        target_dir: target_dir.clone(),
        run_criterion: !cli.no_criterion && !cli.smoke,
        pg_url: cli.pg_url,
        soak_duration: cli.duration.map(std::time::Duration::from_secs_f64),
        propagate_sidecars: cli.sidecars,
        propagate_flags: cli.flags,
        propagate_backends: cli.backends,
    };
    let out = cli.out.unwrap_or_else(|| {
        if cli.smoke {
            target_dir.join("bench-smoke")
        } else {
            workspace_root().join("bench/results")
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut ok = true;
    for name in names {
        println!(
            "vexil-bench: running {name}{}",
            if ctx.smoke { " (smoke)" } else { "" }
        );
        match runtime.block_on(scenarios::run(name, &ctx)) {
            Ok(report) => {
                let (json, md) = report.write(&out)?;
                println!(
                    "vexil-bench: {name} done in {:.1} s: {} and {}",
                    report.seconds,
                    json.display(),
                    md.display()
                );
            }
            Err(e) => {
                ok = false;
                eprintln!("vexil-bench: {name} failed: {e:#}");
            }
        }
    }
    Ok(ok)
}

fn scenario_names(args: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let mut names = Vec::new();
    for a in args {
        if a == "all" {
            names.extend(ALL);
            continue;
        }
        let name = ALL.iter().find(|n| **n == a.as_str()).ok_or_else(|| {
            anyhow::anyhow!("unknown scenario {a:?} (expected one of {ALL:?} or all)")
        })?;
        names.push(*name);
    }
    names.dedup();
    Ok(names)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is in the workspace")
        .to_path_buf()
}

/// Builds the binaries under test with this binary's profile, into the same target directory.
fn build_binaries(target_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "build",
            "-p",
            "vexil-proxy",
            "-p",
            "vexil-control",
            "-p",
            "vexil-bench",
            "--bins",
        ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    println!("vexil-bench: building the binaries under test: {cmd:?}");
    let status = cmd.status()?;
    anyhow::ensure!(
        status.success(),
        "building vexil-proxy, vexil-control and bare-pingora failed"
    );
    Ok(())
}

fn find_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}
