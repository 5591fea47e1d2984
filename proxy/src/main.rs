//! `vexil-proxy`: the sidecar binary.
//!
//! The data plane (pingora), the sync client and the lookup servers arrive with their own issues.
//! Today the binary offers the offline tools every later mode builds on: `check` validates a flagd
//! flag-set file and lists every problem with its JSON path, `eval` resolves its flags for a context.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::Value;
use vexil_engine::{EvaluationContext, FlagSet};

#[derive(Parser)]
#[command(name = "vexil-proxy", version, about = "Vexil sidecar")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
