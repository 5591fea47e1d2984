//! Resolution: a flag and a context in, a value, variant, reason, error code and metadata out.
//!
//! The rules are flagd's: a disabled flag answers the caller's default with reason `DISABLED` (it is
//! not a missing flag); no targeting gives the default variant with `STATIC`; a rule that returns
//! `null` gives the default variant with `DEFAULT`; a rule naming a variant gives `TARGETING_MATCH`; a
//! name that is not a variant is a `GENERAL` error; a value of another type than requested is
//! `TYPE_MISMATCH`. Resolutions borrow from the flag set, so a boolean resolution allocates nothing.

use std::borrow::Cow;

use serde_json::Value;

use crate::context::EvaluationContext;
use crate::flagset::{Flag, FlagSet, FlagState, Metadata, Targeting};
use crate::logic::eval::{Env, Scope, eval};
use crate::value::Val;

/// Why a value was chosen (OpenFeature's reasons, as flagd reports them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No targeting rule: the default variant.
    Static,
    /// The targeting rule chose the variant.
    TargetingMatch,
    /// The targeting rule chose nothing: the default variant (or the caller's default when there is
    /// none).
    Default,
    /// The flag is disabled: the caller's default.
    Disabled,
    /// Resolution failed: the caller's default; see the error code.
    Error,
}

impl Reason {
    /// The reason as flagd spells it: `STATIC`, `TARGETING_MATCH`, `DEFAULT`, `DISABLED`, `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

/// Why a resolution failed (OpenFeature's error codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No flag has that key.
    FlagNotFound,
    /// The flag's value is not of the requested type.
    TypeMismatch,
    /// The flag's definition could not be compiled (kept only in lenient mode).
    ParseError,
    /// Anything else, such as a rule naming a variant that does not exist.
    General,
}

impl ErrorCode {
    /// The code as flagd spells it: `FLAG_NOT_FOUND`, `TYPE_MISMATCH`, `PARSE_ERROR`, `GENERAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// A failed resolution's code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolutionError {
    /// The error code.
    pub code: ErrorCode,
    /// A message for logs and clients.
    pub message: Cow<'static, str>,
}

/// The outcome of resolving one flag.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution<'a, T> {
    /// The value; `None` when the caller's default applies (disabled, error, or no default variant).
    pub value: Option<T>,
    /// The chosen variant's name.
    pub variant: Option<&'a str>,
    /// Why.
    pub reason: Reason,
    /// What went wrong, when `reason` is [`Reason::Error`].
    pub error: Option<ResolutionError>,
    /// The flag's metadata overlaid on the flag set's (the set's alone for a missing flag).
    pub metadata: &'a Metadata,
    /// Where the flag and the variant given are in the set (`None` for a missing flag), for
    /// callers that count decisions by position (the sidecar's usage counters).
    pub position: Option<Position>,
}

/// A resolved flag's place in its set: the flag's index in [`FlagSet::flags`] order and, when a
/// value was given, the variant's index in [`crate::Flag::variants`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The flag's index.
    pub flag: usize,
    /// The variant whose value was given; `None` when the caller's default applies (disabled,
    /// an error, a type mismatch, no default variant).
    pub variant: Option<usize>,
}

impl<T> Resolution<'_, T> {
    /// The value, or `default` when the caller's default applies.
    pub fn value_or(self, default: T) -> T {
        self.value.unwrap_or(default)
    }

    /// The error code, if any.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }
}

impl Resolution<'_, &Value> {
    /// The resolution as JSON in flagd's vocabulary: `key`, `value`, `variant`, `reason`,
    /// `errorCode`, `errorMessage`, `metadata` (as the admin API's previews and CLI print it).
    pub fn to_json(&self, key: &str) -> Value {
        serde_json::json!({
            "key": key,
            "value": self.value,
            "variant": self.variant,
            "reason": self.reason.as_str(),
            "errorCode": self.error.as_ref().map(|e| e.code.as_str()),
            "errorMessage": self.error.as_ref().map(|e| e.message.to_string()),
            "metadata": self.metadata,
        })
    }
}

/// A variant choice before its value is typed.
struct Outcome<'a> {
    variant: Option<usize>,
    reason: Reason,
    error: Option<ResolutionError>,
    flag: Option<&'a Flag>,
}

/// An outcome with the flag's index in its set.
type Placed<'a> = (Option<usize>, Outcome<'a>);

impl FlagSet {
    /// Resolves `key` as a boolean.
    pub fn resolve_bool<'a>(&'a self, key: &str, ctx: &EvaluationContext) -> Resolution<'a, bool> {
        self.resolve_typed(key, ctx, "boolean", Value::as_bool)
    }

    /// Resolves `key` as a string.
    pub fn resolve_string<'a>(
        &'a self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> Resolution<'a, &'a str> {
        self.resolve_typed(key, ctx, "string", Value::as_str)
    }

    /// Resolves `key` as an integer (a JSON number with a fraction is a type mismatch).
    pub fn resolve_int<'a>(&'a self, key: &str, ctx: &EvaluationContext) -> Resolution<'a, i64> {
        self.resolve_typed(key, ctx, "integer", Value::as_i64)
    }

    /// Resolves `key` as a float (any number).
    pub fn resolve_float<'a>(&'a self, key: &str, ctx: &EvaluationContext) -> Resolution<'a, f64> {
        self.resolve_typed(key, ctx, "float", Value::as_f64)
    }

    /// Resolves `key` as an object (an object or array value).
    pub fn resolve_object<'a>(
        &'a self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> Resolution<'a, &'a Value> {
        self.resolve_typed(key, ctx, "object", |v| {
            matches!(v, Value::Object(_) | Value::Array(_)).then_some(v)
        })
    }

    /// Resolves `key` whatever its type.
    pub fn resolve<'a>(&'a self, key: &str, ctx: &EvaluationContext) -> Resolution<'a, &'a Value> {
        self.resolve_typed(key, ctx, "any", Some)
    }

    /// The variant the flag at position `index` (in key order, as [`FlagSet::flags`] lists them)
    /// chooses for `ctx`: its position in the flag's variants ([`Flag::variants`] order), or `None`
    /// when the flag gives no value (disabled, an error, no default variant) or there is no such
    /// flag. What [`FlagSet::resolve`] decides, for callers that planned the flag's position ahead
    /// (the sidecar's data plane): no key is looked up, no variant name compared, nothing
    /// allocated.
    pub fn variant_at(&self, index: usize, ctx: &EvaluationContext) -> Option<usize> {
        let flag = self.flags.get(index)?;
        self.outcome(flag, ctx).variant
    }

    /// Resolves every flag of the set for one context, in key order (disabled flags included, with
    /// reason `DISABLED`). Lazy: nothing is evaluated until the iterator is advanced.
    pub fn resolve_all<'a, 'c>(
        &'a self,
        ctx: &'c EvaluationContext,
    ) -> impl Iterator<Item = (&'a Flag, Resolution<'a, &'a Value>)> + 'c
    where
        'a: 'c,
    {
        self.flags.iter().enumerate().map(move |(index, flag)| {
            let flag = &**flag;
            let outcome = self.outcome(flag, ctx);
            (flag, self.finish((Some(index), outcome), "any", Some))
        })
    }

    fn resolve_typed<'a, T>(
        &'a self,
        key: &str,
        ctx: &EvaluationContext,
        type_name: &'static str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Resolution<'a, T> {
        let outcome = match self.index.get(key) {
            Some(&index) => (Some(index), self.outcome(&self.flags[index], ctx)),
            None => (
                None,
                Outcome {
                    variant: None,
                    reason: Reason::Error,
                    error: Some(ResolutionError {
                        code: ErrorCode::FlagNotFound,
                        message: Cow::Owned(format!("flag {} not found", Value::from(key))),
                    }),
                    flag: None,
                },
            ),
        };
        self.finish(outcome, type_name, convert)
    }

    /// Types the chosen variant's value.
    fn finish<'a, T>(
        &'a self,
        (at, outcome): Placed<'a>,
        type_name: &'static str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Resolution<'a, T> {
        let metadata = outcome.flag.map_or(&self.metadata, |f| &f.metadata);
        let position = |variant| at.map(|flag| Position { flag, variant });
        let (Some(flag), Some(index)) = (outcome.flag, outcome.variant) else {
            return Resolution {
                value: None,
                variant: None,
                reason: outcome.reason,
                error: outcome.error,
                metadata,
                position: position(None),
            };
        };
        let (name, value) = &flag.variants[index];
        match convert(value) {
            Some(v) => Resolution {
                value: Some(v),
                variant: Some(name),
                reason: outcome.reason,
                error: None,
                metadata,
                position: position(Some(index)),
            },
            None => Resolution {
                value: None,
                variant: None,
                reason: Reason::Error,
                error: Some(ResolutionError {
                    code: ErrorCode::TypeMismatch,
                    message: Cow::Owned(format!(
                        "flag {} is not of type {type_name}",
                        Value::from(&*flag.key)
                    )),
                }),
                metadata,
                position: position(None),
            },
        }
    }

    /// Chooses a variant.
    fn outcome<'a>(&'a self, flag: &'a Flag, ctx: &EvaluationContext) -> Outcome<'a> {
        if flag.state == FlagState::Disabled {
            return Outcome {
                variant: None,
                reason: Reason::Disabled,
                error: None,
                flag: Some(flag),
            };
        }
        match &flag.targeting {
            Targeting::Static => default_outcome(flag, Reason::Static),
            Targeting::Broken(message) => {
                error_outcome(flag, ErrorCode::ParseError, Cow::Owned(message.to_string()))
            }
            Targeting::Rule(expr) => {
                let env = Env::new(ctx.as_value(), &flag.key, self.fractional);
                let result = eval(expr, &env, Scope::Root);
                targeted_outcome(flag, &result)
            }
        }
    }
}

/// The default variant with `reason`, or the caller's default with `DEFAULT` when there is none.
fn default_outcome(flag: &Flag, reason: Reason) -> Outcome<'_> {
    match flag.default_variant {
        Some(i) => Outcome {
            variant: Some(i),
            reason,
            error: None,
            flag: Some(flag),
        },
        None => Outcome {
            variant: None,
            reason: Reason::Default,
            error: None,
            flag: Some(flag),
        },
    }
}

fn error_outcome<'a>(flag: &'a Flag, code: ErrorCode, message: Cow<'static, str>) -> Outcome<'a> {
    Outcome {
        variant: None,
        reason: Reason::Error,
        error: Some(ResolutionError { code, message }),
        flag: Some(flag),
    }
}

/// Maps a rule's result to a variant: `null` means "no opinion" (the default), a string or boolean
/// (`true` → `"true"`) or number names a variant.
fn targeted_outcome<'a>(flag: &'a Flag, result: &Val<'_>) -> Outcome<'a> {
    let name: Cow<'_, str> = match result {
        Val::Null => return default_outcome(flag, Reason::Default),
        Val::Str(s) => Cow::Borrowed(&**s),
        Val::Bool(true) => Cow::Borrowed("true"),
        Val::Bool(false) => Cow::Borrowed("false"),
        Val::Num(_) | Val::Ref(Value::Number(_)) => result.to_js_string(),
        Val::Ref(_) | Val::Array(_) => {
            return error_outcome(
                flag,
                ErrorCode::General,
                Cow::Borrowed("targeting returned an array or object, not a variant name"),
            );
        }
    };
    match flag.variant_index(&name) {
        Some(i) if !name.is_empty() => Outcome {
            variant: Some(i),
            reason: Reason::TargetingMatch,
            error: None,
            flag: Some(flag),
        },
        _ => error_outcome(
            flag,
            ErrorCode::General,
            Cow::Owned(format!(
                "targeting returned {}, which is not a variant of flag {}",
                Value::from(&*name),
                Value::from(&*flag.key)
            )),
        ),
    }
}
