//! The command line: every declared flag becomes a clap argument (its help from the doc, its
//! variable named), plus `--print-config`. Values are kept as text: the resolution parses them,
//! so a bad flag is reported with every other problem, not alone by clap.

use std::marker::PhantomData;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};

use crate::problem::Problems;
use crate::resolve::{Layers, Resolved, Settings, resolve};

/// The flags of a structure of settings `S`, for `#[command(flatten)]`.
pub struct Cli<S> {
    flags: Vec<(&'static str, Vec<String>)>,
    /// `--print-config`: print the effective configuration and exit.
    pub print_config: bool,
    settings: PhantomData<fn() -> S>,
}

impl<S> Clone for Cli<S> {
    fn clone(&self) -> Self {
        Cli {
            flags: self.flags.clone(),
            print_config: self.print_config,
            settings: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for Cli<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Flag values may be secrets (`--token`): only their names.
        let names: Vec<&str> = self.flags.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Cli")
            .field("flags", &names)
            .field("print_config", &self.print_config)
            .finish()
    }
}

const PRINT_CONFIG: &str = "print-config";

impl<S: Settings> Cli<S> {
    /// The layers of this process: the flags given, its environment, the file `--config` (or
    /// `VEXIL_CONFIG`) names.
    pub fn layers(&self) -> Layers {
        let mut layers = Layers::new().process_env();
        for (flag, values) in &self.flags {
            for v in values {
                layers = layers.flag(flag, v.clone());
            }
        }
        layers
    }

    /// Resolves `S` from the layers of this process.
    pub fn resolve(&self) -> Result<Resolved<S>, Problems> {
        resolve(self.layers())
    }

    /// What a binary's `main` does first: the settings to run with, or the exit code when there
    /// is nothing to run — every problem printed on standard error (failure), or, with
    /// `--print-config`, the effective configuration printed under `program`'s name (success).
    pub fn settings_or_exit(&self, program: &str) -> Result<S, std::process::ExitCode> {
        let resolved = match self.resolve() {
            Ok(resolved) => resolved,
            Err(problems) => {
                eprintln!("error: invalid configuration:\n{problems}");
                return Err(std::process::ExitCode::FAILURE);
            }
        };
        if self.print_config {
            print!("{}", crate::print_config(&resolved.effective, program));
            return Err(std::process::ExitCode::SUCCESS);
        }
        Ok(resolved.settings)
    }
}

impl<S: Settings> clap::Args for Cli<S> {
    fn augment_args(mut cmd: Command) -> Command {
        // Settings read from a variable but given no flag (a secret such as the first admin token)
        // are listed after the options, so that `--help` names every variable the binary reads.
        let mut env_only = String::new();
        for d in S::declared() {
            let s = d.setting;
            let Some(flag) = s.flag else {
                if let Some(env) = s.env {
                    let doc = s.doc_text();
                    let short = doc
                        .split_once(". ")
                        .map_or(doc.as_str(), |(first, _)| first)
                        .trim_end_matches('.');
                    env_only.push_str(&format!("  {env}\n          {short} [env: {env}]\n"));
                }
                continue;
            };
            let doc = s.doc_text();
            let short = doc
                .split_once(". ")
                .map_or(doc.as_str(), |(first, _)| first)
                .trim_end_matches('.');
            let env = s.env.map(|e| format!(" [env: {e}]")).unwrap_or_default();
            let mut arg = Arg::new(flag)
                .long(flag)
                .help(format!("{short}{env}"))
                .long_help(format!("{doc}{env}"));
            arg = if s.switch {
                arg.action(ArgAction::SetTrue)
            } else {
                arg.action(ArgAction::Append)
                    .num_args(1)
                    .value_name(value_name(flag))
            };
            cmd = cmd.arg(arg);
        }
        if !env_only.is_empty() {
            cmd = cmd.after_help(format!("Variables without a flag:\n{env_only}"));
        }
        cmd.arg(
            Arg::new(PRINT_CONFIG)
                .long(PRINT_CONFIG)
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration (TOML, secrets redacted, each value's origin) and exit"),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// `--outbound-addr <ADDR>`, `--token-file <PATH>`: from the last word of the flag.
fn value_name(flag: &str) -> &'static str {
    match flag.rsplit('-').next().unwrap_or(flag) {
        "addr" | "upstream" => "ADDR",
        "file" | "dir" | "config" | "cert" | "key" | "ca" => "PATH",
        "ms" => "MS",
        "secs" => "SECS",
        "threads" | "bytes" => "N",
        "url" | "control" => "URL",
        "routes" => "JSON",
        "names" | "proxy" => "LIST",
        _ => "VALUE",
    }
}

impl<S: Settings> FromArgMatches for Cli<S> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut cli = Cli {
            flags: Vec::new(),
            print_config: false,
            settings: PhantomData,
        };
        cli.update_from_arg_matches(m)?;
        Ok(cli)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
        for d in S::declared() {
            let s = d.setting;
            let Some(flag) = s.flag else { continue };
            if !given(flag) {
                continue;
            }
            let values: Vec<String> = if s.switch {
                vec!["true".into()]
            } else {
                m.try_get_many::<String>(flag)
                    .ok()
                    .flatten()
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default()
            };
            self.flags.push((flag, values));
        }
        self.print_config |= given(PRINT_CONFIG);
        Ok(())
    }
}
