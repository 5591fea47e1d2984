//! `vexilctl`: Vexil's command line, a client of control's admin API (docs/cli.md).
//!
//! Server and token from `--url`/`VEXIL_URL` and `--token`/`VEXIL_TOKEN`; output as a table or
//! `--output json`; exit codes a script can use ([`client::Exit`]).

mod client;
mod commands;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use client::{Client, Failure};

#[derive(Parser)]
#[command(
    name = "vexilctl",
    version,
    about = "Vexil's command line: flags, environments, tokens, the fleet"
)]
struct Cli {
    /// Control's admin API.
    #[arg(
        long,
        env = "VEXIL_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// The API token (`vxl_...`).
    #[arg(long, env = "VEXIL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// Timeout of each request, in seconds.
    #[arg(long, default_value_t = 30, global = true)]
    timeout_secs: u64,
    #[command(subcommand)]
    command: Command,
}

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, one document.
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Environments.
    #[command(subcommand, name = "env")]
    Env(commands::EnvCmd),
    /// Flags of an environment.
    #[command(subcommand)]
    Flag(commands::FlagCmd),
    /// An environment's whole flag set (a flagd document).
    #[command(subcommand)]
    Flagset(commands::FlagsetCmd),
    /// Copy one environment's flag set onto another (`--dry-run`: show the difference only).
    Promote {
        from: String,
        to: String,
        #[arg(long)]
        dry_run: bool,
        /// The target's `ETag` from an earlier read (e.g. when the difference was reviewed),
        /// instead of the one read now.
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Write an environment's sidecar bootstrap file (for `vexil-proxy --bootstrap-file`).
    Bootstrap {
        env: String,
        /// Where to write it (`-`: standard output).
        #[arg(long, short = 'f', default_value = "-")]
        file: String,
    },
    /// API tokens.
    #[command(subcommand)]
    Token(commands::TokenCmd),
    /// The audit log, newest first.
    Audit {
        #[arg(long)]
        env: Option<String>,
        /// A flag, evaluator or token name.
        #[arg(long)]
        flag: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The sidecars connected to the replica that answers.
    Sidecars {
        #[arg(long)]
        env: Option<String>,
    },
    /// How the sidecars evaluate an environment's flags (from their usage reports).
    #[command(subcommand)]
    Usage(commands::UsageCmd),
    /// Guarded rollouts: guards that switch a flag off when its rollout fails more than its
    /// baseline.
    #[command(subcommand)]
    Guard(commands::GuardCmd),
    /// A flag's proposal: a definition the sidecars evaluate beside the live one on a sample of
    /// decisions, without changing any (shadow evaluation); compared, then published or dropped.
    #[command(subcommand)]
    Proposal(commands::ProposalCmd),
    /// Wait until every connected sidecar of an environment holds a revision (exit 7 when the
    /// timeout ends first).
    Wait {
        env: String,
        /// Default: the environment's current revision.
        #[arg(long)]
        revision: Option<i64>,
        /// At least this many sidecars must be connected.
        #[arg(long, default_value_t = 1)]
        min_sidecars: usize,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "vexilctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let client = match Client::new(
        &cli.url,
        cli.token.clone(),
        Duration::from_secs(cli.timeout_secs.max(1)),
    ) {
        Ok(c) => c,
        Err(e) => return fail(Failure::from(e)),
    };
    match commands::run(&client, cli.command, cli.output).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    eprintln!("vexilctl: {f}");
    ExitCode::from(f.exit as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Exit;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(Exit::NotFound as u8, 3);
        assert_eq!(Exit::Timeout as u8, 7);
    }
}
