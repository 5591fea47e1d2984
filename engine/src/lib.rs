//! Vexil's flag engine: flagd flag sets, parsed, validated, compiled once and evaluated fast.
//!
//! The format and the semantics are OpenFeature flagd's, so any flagd or OFREP client works against
//! Vexil unchanged: a document holds `flags` (each with `state`, `variants`, `defaultVariant`,
//! `targeting`, `metadata`), shared rules in `$evaluators` (referenced with `{"$ref": name}`) and
//! set-level `metadata`. Targeting is JsonLogic plus flagd's `fractional`, `sem_ver`, `starts_with`
//! and `ends_with`, with `$flagd.flagKey` and `$flagd.timestamp` available to rules.
//!
//! ```
//! use vexil_engine::{EvaluationContext, FlagSet, Reason};
//!
//! let set = FlagSet::from_json_str(r#"{"flags": {"new-checkout": {
//!     "state": "ENABLED",
//!     "variants": {"on": true, "off": false},
//!     "defaultVariant": "off",
//!     "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on"]}
//! }}}"#).unwrap();
//!
//! let mut ctx = EvaluationContext::new();
//! ctx.insert("email", "ada@example.com");
//! let r = set.resolve_bool("new-checkout", &ctx);
//! assert_eq!(r.value, Some(true));
//! assert_eq!(r.reason, Reason::TargetingMatch);
//! ```
//!
//! Compilation ([`FlagSet::compile`]) checks everything and reports every problem with its JSON path
//! ([`ValidationErrors`]). A compiled [`FlagSet`] is immutable and `Send + Sync`; evaluation takes
//! `&self` and a borrowed [`EvaluationContext`], takes no lock, does no I/O and, for a boolean flag,
//! allocates nothing.

#![warn(missing_docs)]

mod context;
mod error;
mod flagset;
mod keys;
mod logic;
mod ops;
mod resolve;
mod value;

pub use context::EvaluationContext;
pub use error::{ValidationError, ValidationErrors};
pub use flagset::{
    CompileOptions, FRACTIONAL_VERSION_KEY, Flag, FlagSet, FlagState, Limits, Metadata, Mode,
    ValueKind, parse_json,
};
pub use keys::header_key_problem;
pub use ops::fractional::FractionalVersion;
pub use resolve::{ErrorCode, Position, Reason, Resolution, ResolutionError};

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn flag_set_is_send_and_sync() {
        assert_send_sync::<super::FlagSet>();
        assert_send_sync::<super::EvaluationContext>();
    }
}
