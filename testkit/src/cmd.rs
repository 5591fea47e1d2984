//! What starting either Vexil binary takes, whatever the binary.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use crate::process::binary;

/// A Vexil binary to start: which file, its name in messages, its log filter, its shutdown grace,
/// and the arguments and environment variables a test adds. [`crate::control::ControlCmd`] and
/// [`crate::proxy::ProxyCmd`] are this with their own part `K` (and their own `start`).
#[derive(Clone, Debug)]
pub struct BinaryCmd<K> {
    program: &'static str,
    binary: Option<PathBuf>,
    name: String,
    grace_secs: u64,
    log: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    pub(crate) own: K,
}

impl<K> BinaryCmd<K> {
    /// Binary `name` of this workspace, `--shutdown-grace-secs 5`, `VEXIL_LOG=info`.
    pub(crate) fn with(name: &'static str, own: K) -> Self {
        BinaryCmd {
            program: name,
            binary: None,
            name: name.to_string(),
            grace_secs: 5,
            log: "info".into(),
            args: Vec::new(),
            env: Vec::new(),
            own,
        }
    }

    /// The binary to run (default: the workspace's, see [`binary`]).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// The name messages use (default: the binary's).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `--shutdown-grace-secs` (default 5).
    pub fn grace_secs(mut self, secs: u64) -> Self {
        self.grace_secs = secs;
        self
    }

    /// `VEXIL_LOG` (default `info`).
    pub fn log(mut self, filter: &str) -> Self {
        self.log = filter.to_string();
        self
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The name messages use.
    pub(crate) fn display_name(&self) -> &str {
        &self.name
    }

    /// The command: the binary with `first` (e.g. a subcommand and the addresses), then the
    /// arguments given, then `--shutdown-grace-secs`; a clean environment but for `VEXIL_LOG`,
    /// `NO_COLOR=1` and the variables given.
    pub(crate) fn command(&self, first: &[OsString]) -> Command {
        let program = self.binary.clone().unwrap_or_else(|| binary(self.program));
        let mut cmd = Command::new(program);
        cmd.args(first)
            .args(&self.args)
            .args(["--shutdown-grace-secs", &self.grace_secs.to_string()])
            .env_clear()
            .env("VEXIL_LOG", &self.log)
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}
