//! `vexil-settings`: the settings of Vexil's binaries, each declared once, and the one error style
//! of Vexil's validations.
//!
//! - [`Problem`], [`Problems`]: where and what, one per line; the engine's validation errors, the
//!   configuration errors of both binaries.
//! - [`settings!`]: declares a structure of settings; each field states its type, default, flag,
//!   `VEXIL_*` variable, file key and documentation.
//! - [`resolve`]: default < file < environment variable < flag, every value parsed into its type
//!   where it enters, every problem reported at once with the setting and where its value came
//!   from (`proxy.toml:12 [context] targetingKey[1]`, `--outbound-addr`, `VEXIL_THREADS`).
//! - [`Cli`]: the declared flags as clap arguments, plus `--print-config`; [`print_config`] shows
//!   the effective configuration with each value's origin and secrets redacted.
//! - [`doc_table`], [`update_docs`]: the option tables of `docs/configuration.md`, rendered from the
//!   declarations.
//!
//! Without its default `resolve` feature the crate is only [`Problem`] and [`Problems`].

mod problem;

pub use problem::{Problem, Problems};

#[cfg(feature = "resolve")]
mod cli;
#[cfg(feature = "resolve")]
mod macros;
#[cfg(feature = "resolve")]
mod render;
#[cfg(feature = "resolve")]
mod resolve;
#[cfg(feature = "resolve")]
mod value;

#[cfg(feature = "resolve")]
pub use cli::Cli;
#[cfg(feature = "resolve")]
pub use render::{doc_table, print_config, update_docs};
#[cfg(feature = "resolve")]
pub use resolve::{
    Declared, Effective, File, Layers, Origin, Resolved, Resolver, Setting, Settings, join_key,
    resolve, resolve_record,
};
#[cfg(feature = "resolve")]
pub use value::{
    IsZero, Millis, Seconds, Secret, SecretFile, SecretUrl, Value, between, expected, json_to_toml,
    ms, nonzero, not_empty, secs,
};

#[doc(hidden)]
#[cfg(feature = "resolve")]
pub mod __private {
    pub use toml;
}
