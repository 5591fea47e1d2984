//! `vexil-jwt`: the one JWT verifier of Vexil, used by control's admin API and sync
//! authentication and by the sidecar's `jwt:` context sources.
//!
//! # What is accepted
//!
//! - **Algorithms**: HS256, RS256 and ES256 (ring). A key has exactly one algorithm (an HMAC
//!   secret: HS256; an RSA public key: RS256; an EC P-256 key: ES256) and verifies only tokens of
//!   that algorithm, so the bytes of an RSA public key are never used as an HMAC secret.
//!   `alg: none` and every other algorithm are refused. A header with `crit` is refused.
//! - **Key choice** ([`KeySet::select`]): a token with a `kid` is verified by the key of that id; a
//!   `kid` no key has is refused, except when no key of the set has an id at all (keys from PEM
//!   files and secrets), where it is ignored. A token without `kid` is verified by the one key of
//!   its algorithm, and refused when several keys have it.
//! - **Time claims**: `exp` is required unless [`VerifierConfig::require_exp`] is off. `exp`, `nbf`
//!   and `iat` must be JSON integers (seconds): a fraction (`1.5`, or `1.0`), a string or `null` is
//!   refused, never ignored. With leeway `L` (default 30 s), a token is refused when
//!   `now >= exp + L`, `now + L < nbf`, or `now + L < iat`.
//! - **Audience and issuer**: when configured, `aud` (a string or an array of strings) must name one
//!   of the audiences, and `iss` must be one of the issuers; a token without them is refused.
//! - **Sizes** ([`Limits`]): the token (8 KiB), its decoded header (4 KiB) and payload (8 KiB), a
//!   JWKS document (256 KiB, 64 keys).
//! - **List claims** ([`Claims::string_list`]): an array of strings, or one string (read as a list
//!   of that one string). An empty array grants nothing. Any other type is an error. Only a token
//!   without the claim ([`ListClaim::Absent`]) may mean "unrestricted", where the caller says so.
//!
//! # Keys
//!
//! [`KeySource`]: an HMAC secret (or a file holding one), a PEM public key file (SubjectPublicKeyInfo
//! RSA or EC P-256, or PKCS#1 RSA), a JWKS file, or a JWKS URL (`http` or `https`: rustls with
//! ring, the public web roots or a configured CA file; a timeout and a size cap; redirects are not
//! followed). JWKS sources are loaded at start and reloaded every [`VerifierConfig::jwks_refresh`]
//! in a background thread; a reload that fails keeps the last good keys. Verification reads the
//! current set through an `ArcSwap`: no lock.
//!
//! Errors ([`JwtError`]) never quote the token.

#![warn(missing_docs)]

mod claims;
mod error;
mod fetch;
mod key;
mod source;
mod verifier;

pub use claims::{Claims, ListClaim};
pub use error::{AlgName, JwtError, LoadError};
pub use key::{Algorithm, Key, KeySet, parse_jwks};
pub use source::{KeySource, KeySources, KeySpec};
pub use verifier::{
    DEFAULT_JWKS_FETCH_TIMEOUT, DEFAULT_JWKS_REFRESH, DEFAULT_LEEWAY, Limits, Verifier,
    VerifierConfig, bearer_token, unix_now,
};
