//! The one error type of the crate.

use std::borrow::Cow;
use std::fmt;

use crate::key::Algorithm;

/// Why a token was refused, or why keys could not be loaded.
///
/// Messages never contain the token or any part of it (no claim value, no `kid`, no algorithm
/// name the token made up): they may end up in logs and HTTP answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token, its decoded header or payload, or a key document is over its limit.
    #[error("{what} is over the limit of {limit} bytes")]
    TooLarge {
        /// `token`, `header`, `payload`, `JWKS document`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// Not a compact JWS: wrong segment count, bad base64url, bad JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is `none`, not a supported algorithm, or not one a configured key has.
    #[error("algorithm {0} is not accepted")]
    AlgorithmRefused(AlgName),
    /// The header has a `crit` member: this verifier understands no JWS extension.
    #[error("the token requires extensions (\"crit\") this verifier does not support")]
    CriticalHeader,
    /// No configured key has the token's algorithm.
    #[error("no key is configured for {0}")]
    NoKeyForAlgorithm(Algorithm),
    /// The token's `kid` names no configured key.
    #[error("the token's key id (kid) names no configured key")]
    UnknownKid,
    /// The token's `kid` names a key of another algorithm (each key has one algorithm).
    #[error("the key named by the token's kid is a {key} key, the token says {token}")]
    KeyAlgorithmMismatch {
        /// The key's algorithm.
        key: Algorithm,
        /// The token's.
        token: Algorithm,
    },
    /// A token without `kid` while several keys have its algorithm.
    #[error("the token has no key id (kid) and {count} {alg} keys are configured")]
    AmbiguousKey {
        /// The token's algorithm.
        alg: Algorithm,
        /// How many keys have it.
        count: usize,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is absent.
    #[error("missing claim {0:?}")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or shape.
    #[error("claim {claim:?} {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: Cow<'static, str>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `exp` (plus leeway) is past.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is still ahead.
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// `iat` (minus leeway) is ahead.
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    /// `aud` names none of the configured audiences.
    #[error("token audience (aud) is not accepted")]
    AudienceMismatch,
    /// `iss` is not a configured issuer.
    #[error("token issuer (iss) is not accepted")]
    IssuerMismatch,
    /// A key source could not be loaded (file, PEM, JWK, JWKS, fetch).
    #[error("{label}: {reason}")]
    Key {
        /// The source's label (a configuration key, or a path or URL).
        label: String,
        /// What went wrong.
        reason: String,
    },
}

impl JwtError {
    /// A key-loading error.
    pub(crate) fn key(label: impl Into<String>, reason: impl fmt::Display) -> JwtError {
        JwtError::Key {
            label: label.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn invalid(claim: &'static str, reason: &'static str) -> JwtError {
        JwtError::InvalidClaim {
            claim: Cow::Borrowed(claim),
            reason,
        }
    }
}

/// An algorithm name from a token header, as it may be shown: a well-known name, or
/// "an unsupported one" (a token's made-up text is never echoed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgName(pub(crate) &'static str);

impl AlgName {
    /// The name as shown.
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    pub(crate) fn of(alg: &str) -> AlgName {
        const KNOWN: [&str; 14] = [
            "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
            "PS512", "ES256", "ES384", "ES512", "EdDSA",
        ];
        AlgName(
            KNOWN
                .iter()
                .find(|k| **k == alg)
                .copied()
                .unwrap_or("(unrecognized)"),
        )
    }
}

impl fmt::Display for AlgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Every problem found while loading key sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// One [`JwtError::Key`] per failed source.
    pub problems: Vec<JwtError>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl From<JwtError> for LoadError {
    fn from(e: JwtError) -> Self {
        LoadError { problems: vec![e] }
    }
}
