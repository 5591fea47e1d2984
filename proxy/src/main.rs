//! `vexil-proxy`: the sidecar binary. Parses configuration and wires the library's parts.
//!
//! Without a subcommand it runs the sidecar (flags from control over QUIC, or from a file);
//! `--print-config` prints its effective configuration instead. `check` validates a flagd flag-set
//! file and lists every problem with its JSON path; `eval` resolves its flags for a context.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once when it starts (the `malloc_conf` symbol of tikv-jemalloc-sys's
/// prefixed build; `_RJEM_MALLOC_CONF` in the environment still overrides it).
///
/// `tcache_gc_incr_bytes`: a thread cache is garbage-collected after every 1 MiB allocated, not
/// every 64 KiB. A proxied request allocates tens of KiB (pingora's buffers), so the default
/// collected once or twice per request: callgrind counted 8.4 k instructions per request in
/// `tcache_gc_event` of 131.5 k in all; with 1 MiB, 123.1 k (`bench/scripts/callgrind-hop.sh`,
/// bench/results/README.md, session 9). What a thread cache may hold is bounded as before.
// Exported under jemalloc's name (it reads the symbol; the library's weak default is replaced).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
#[used]
static _rjem_malloc_conf: MallocConf = MallocConf(c"tcache_gc_incr_bytes:1048576".as_ptr());

/// A C string pointer that can live in a `static` (it points at a literal).
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a `'static` C string literal, never written.
#[allow(unsafe_code)]
unsafe impl Sync for MallocConf {}

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::Value;
use vexil_engine::{EvaluationContext, FlagSet};
use vexil_proxy::config::ProxyConfig;
use vexil_proxy::server::Bound;

#[derive(Parser)]
#[command(
    name = "vexil-proxy",
    version,
    about = "Vexil sidecar: flags evaluated locally, injected as headers, answered over gRPC and OFREP",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: vexil_settings::Cli<ProxyConfig>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a flagd flag-set file; exit 1 and list every problem when it is invalid.
    Check {
        /// The flag-set file (flagd JSON).
        #[arg(long, env = "VEXIL_FLAGS_FILE")]
        flags_file: PathBuf,
    },
    /// Resolve flags of a flag-set file for one evaluation context and print the details as JSON.
    Eval {
        /// The flag-set file (flagd JSON).
        #[arg(long, env = "VEXIL_FLAGS_FILE")]
        flags_file: PathBuf,
        /// The evaluation context, a JSON object (e.g. '{"targetingKey":"user-1"}').
        #[arg(long, default_value = "{}")]
        context: String,
        /// Resolve only this flag (default: every flag).
        #[arg(long)]
        flag: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none() {
        return serve(&cli.serve);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the sidecar until SIGTERM or Ctrl-C; exit 0 after a clean drain, 1 on a start failure
/// (an invalid configuration: every problem listed). With `--print-config`, prints the effective
/// configuration and exits.
fn serve(args: &vexil_settings::Cli<ProxyConfig>) -> ExitCode {
    let config = match args.settings_or_exit("vexil-proxy") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let _telemetry = vexil_telemetry::init(&config.telemetry, "info", "vexil-proxy");
    if !vexil_proxy::memory::start_background_purge() {
        tracing::warn!("jemalloc refused to start its background purge thread");
    }
    let result = (|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let shutdown = shutdown_signal();
            let bound = Bound::bind(&config).await?;
            vexil_proxy::server::run(config, bound, shutdown).await
        })
    })();
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or Ctrl-C. The handlers are installed at once (not when first polled), so a signal
/// that arrives while the sidecar is still starting is not lost to the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        unreachable!("serve is handled by main");
    };
    match command {
        Command::Check { flags_file } => {
            let text = read(&flags_file)?;
            match FlagSet::from_json_str(&text) {
                Ok(set) => {
                    println!("{}: {} flags, valid", flags_file.display(), set.len());
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for e in &errors {
                        println!("{}: {e}", flags_file.display());
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Eval {
            flags_file,
            context,
            flag,
        } => {
            let set = FlagSet::from_json_str(&read(&flags_file)?)
                .map_err(|e| anyhow::anyhow!("{}: invalid flag set:\n{e}", flags_file.display()))?;
            let ctx_value: Value =
                serde_json::from_str(&context).context("--context is not valid JSON")?;
            let ctx = EvaluationContext::from_value(ctx_value)
                .map_err(|_| anyhow::anyhow!("--context must be a JSON object"))?;
            let out: Vec<Value> = match flag {
                Some(key) => vec![set.resolve(&key, &ctx).to_json(&key)],
                None => set
                    .resolve_all(&ctx)
                    .map(|(f, r)| r.to_json(f.key()))
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    /// Resident anonymous memory of this process, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon")
    }

    /// With the binary's jemalloc, memory freed in many small pieces (as a parsed flag document
    /// is) stays resident until purged, and `release_freed_memory` gives it back.
    #[test]
    fn purge_returns_freed_pages() {
        // ~96 MiB in 96-byte pieces, the size of small JSON values.
        let pieces: Vec<Box<[u8; 96]>> = (0..1_000_000).map(|i| Box::new([i as u8; 96])).collect();
        std::hint::black_box(&pieces);
        let alive = rss_anon_kib();
        drop(pieces);
        assert!(vexil_proxy::memory::release_freed_memory());
        let after = rss_anon_kib();
        // Measured from while the pieces were alive: jemalloc's background thread may already
        // have returned some of them between the drop and the purge (the next test); after the
        // purge, all of them are back.
        assert!(
            alive.saturating_sub(after) > 64 * 1024,
            "RssAnon {alive} KiB with the pieces, {after} KiB after the purge"
        );
    }

    /// With the background thread, freed pages go back without a purge call and without any
    /// allocation activity (within jemalloc's 10 s decay).
    #[test]
    fn background_thread_returns_freed_pages_when_idle() {
        assert!(vexil_proxy::memory::start_background_purge());
        let pieces: Vec<Box<[u8; 96]>> = (0..1_000_000).map(|i| Box::new([i as u8; 96])).collect();
        std::hint::black_box(&pieces);
        drop(pieces);
        let before = rss_anon_kib();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut after = before;
        while std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(500));
            after = rss_anon_kib();
            if before.saturating_sub(after) > 48 * 1024 {
                return;
            }
        }
        panic!("RssAnon {before} KiB after freeing, still {after} KiB 30 s later");
    }
}
