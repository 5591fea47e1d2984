//! Authentication and authorization of the admin API.
//!
//! A bearer token is either one of ours (`vxl_` + 32 random bytes, base64url; only its SHA-256 is
//! stored, so a database leak reveals no usable secret) or, when a verification key is configured, a
//! JWT (verified by `vexil-jwt`) whose role comes from a configurable claim. Roles decide what a
//! caller may do; a token can be limited to some environments. The QUIC sync hub authenticates
//! Subscribe tokens through the same [`Authenticator`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vexil_jwt::{JwtError, KeySources, ListClaim, LoadError, Verifier, VerifierConfig};

use crate::auth_limit::FailureLimiter;
use crate::model::{Millis, Role, now_millis};
use crate::store::{Store, StoreError};

/// Prefix of every token secret we issue (makes leaked secrets easy to scan for).
pub const TOKEN_PREFIX: &str = "vxl_";

/// Failed authentications a peer may make in a burst, by default.
pub const DEFAULT_FAILURE_BURST: u32 = 20;

/// A peer regains one failed authentication this often, by default (10 a minute).
pub const DEFAULT_FAILURE_REFILL: Duration = Duration::from_secs(6);

/// How often the token uses seen since the last flush are written ([`Authenticator::flush_uses`]).
pub const USE_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A new random token secret.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Why `secret`, given as the first admin token (`VEXIL_ADMIN_TOKEN`), could never authenticate, if
/// it could not: it must have our tokens' form (`vxl_` then base64url characters, as
/// [`generate_secret`] makes them). Without the prefix it would be read as a JWT when JWT keys are
/// configured, and never be looked up; with a space, a line break or anything else outside that
/// alphabet a client could not send it intact in an `Authorization` header (surrounding whitespace
/// is trimmed there, so a secret read from a file with its trailing newline would never match).
pub fn check_admin_secret(secret: &str, jwt_configured: bool) -> Result<(), String> {
    let Some(body) = secret.strip_prefix(TOKEN_PREFIX) else {
        return Err(if jwt_configured {
            format!(
                "does not start with {TOKEN_PREFIX}: with JWT keys configured ([jwt]), a bearer \
                 token without that prefix is verified as a JWT, so this one would never be \
                 checked against the stored token"
            )
        } else {
            format!(
                "does not start with {TOKEN_PREFIX}: Vexil tokens are {TOKEN_PREFIX} followed by \
                 base64url characters (A-Z a-z 0-9 - _)"
            )
        });
    };
    if body.is_empty() {
        return Err(format!("has nothing after {TOKEN_PREFIX}"));
    }
    if let Some((i, c)) = body
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        let at = i + TOKEN_PREFIX.len();
        let alphabet = format!(
            "Vexil tokens are {TOKEN_PREFIX} followed by base64url characters (A-Z a-z 0-9 - _)"
        );
        return Err(match c {
            ' ' | '\t' | '\n' | '\r' => format!(
                "has {} at position {at}: it would not survive an Authorization header (surrounding \
                 whitespace is trimmed there); {alphabet}",
                if c == ' ' || c == '\t' {
                    "a space"
                } else {
                    "a line break"
                }
            ),
            c if c.is_ascii_graphic() => format!("has {c:?} at position {at}: {alphabet}"),
            _ => format!(
                "has a character outside printable ASCII at position {at}: an HTTP header cannot \
                 carry it as text; {alphabet}"
            ),
        });
    }
    Ok(())
}

/// The stored form of a secret: hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Name for the audit log: the token's name, or `jwt:<sub>`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The environments it may act on.
    pub environments: Environments,
}

/// The environments a caller may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Environments {
    /// Every environment: a stored token created without environments, or a JWT without the
    /// environments claim.
    All,
    /// Only these (none at all when empty: a JWT whose environments claim is an empty list).
    Only(Vec<String>),
}

impl Principal {
    /// True when the caller may act on environment `env`.
    pub fn allows_environment(&self, env: &str) -> bool {
        match &self.environments {
            Environments::All => true,
            Environments::Only(list) => list.iter().any(|e| e == env),
        }
    }

    /// True when the caller is limited to some environments (possibly none).
    pub fn is_limited(&self) -> bool {
        matches!(self.environments, Environments::Only(_))
    }
}

/// What an API call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read environments, flags, evaluators, flag sets, sidecars, the audit log; preview evaluations.
    Read,
    /// Change flags, evaluators and flag sets.
    WriteFlags,
    /// Create, change and delete environments; manage tokens.
    Admin,
}

impl Role {
    /// True when the role grants `p`.
    pub fn grants(self, p: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Editor => matches!(p, Permission::Read | Permission::WriteFlags),
            Role::Viewer => p == Permission::Read,
            Role::Sidecar => false,
        }
    }
}

/// Why a caller was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    Missing,
    /// Unknown, malformed, expired or revoked credentials.
    #[error("invalid or revoked token")]
    Invalid,
    /// A JWT that was refused, and why (the message never quotes the token).
    #[error("invalid JWT: {0}")]
    Jwt(#[from] JwtError),
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many failed authentications from this peer: refused without looking at the
    /// credentials until it may try again.
    #[error("too many failed authentications from this address; retry in {} s", retry_secs(*.retry_after))]
    RateLimited {
        /// When the peer may try again.
        retry_after: Duration,
    },
}

/// Whole seconds to wait, rounded up (at least 1): what `Retry-After` says.
pub fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// JWT settings, as configured (`[jwt]`); the keys are loaded by [`Authenticator::new`].
/// A token is accepted when its signature verifies with one of the keys (HS256, RS256 or ES256;
/// see `vexil-jwt` for every rule) and its claims hold.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// A file holding the HS256 secret.
    pub hs256_secret_file: Option<PathBuf>,
    /// RS256 public key: a PEM file (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub rs256_public_key: Option<PathBuf>,
    /// ES256 public key: a PEM file (`PUBLIC KEY`, EC P-256).
    pub es256_public_key: Option<PathBuf>,
    /// A JWKS file (keys chosen by `kid`).
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (`http://` or `https://`).
    pub jwks_url: Option<String>,
    /// Reload of the JWKS file or URL (seconds; 0: only at start).
    pub jwks_refresh_secs: u64,
    /// CA certificates (PEM) trusted for an `https` JWKS URL instead of the public roots.
    pub jwks_ca_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat` (seconds).
    pub leeway_secs: u64,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// When not empty, `aud` must name one of these.
    pub audiences: Vec<String>,
    /// When not empty, `iss` must be one of these.
    pub issuers: Vec<String>,
    /// The claim holding the role (`admin`, `editor`, `viewer`, `sidecar`).
    pub role_claim: String,
    /// The claim holding the environments list: absent means every environment; a string is a
    /// list of one; an empty list grants none; any other type refuses the token.
    pub environments_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            hs256_secret_file: None,
            rs256_public_key: None,
            es256_public_key: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: vexil_jwt::DEFAULT_JWKS_REFRESH.as_secs(),
            jwks_ca_file: None,
            leeway_secs: vexil_jwt::DEFAULT_LEEWAY.as_secs(),
            require_exp: true,
            audiences: Vec::new(),
            issuers: Vec::new(),
            role_claim: "vexil_role".into(),
            environments_claim: "vexil_environments".into(),
        }
    }
}

impl JwtConfig {
    /// The key sources this configuration names.
    fn key_sources(&self) -> KeySources<'_> {
        KeySources {
            hs256_secret: self.hs256_secret.as_deref().map(str::as_bytes),
            hs256_secret_file: self.hs256_secret_file.as_ref(),
            rs256_public_key: self.rs256_public_key.as_ref(),
            es256_public_key: self.es256_public_key.as_ref(),
            jwks_file: self.jwks_file.as_ref(),
            jwks_url: self.jwks_url.as_deref(),
        }
    }

    /// True when some key is configured (JWTs are accepted only then).
    pub fn has_key(&self) -> bool {
        self.key_sources().any()
    }

    /// The verifier settings, each key source labelled with its `[jwt]` key.
    pub fn verifier_config(&self) -> VerifierConfig {
        let keys = self.key_sources().specs(|name| format!("jwt.{name}"));
        VerifierConfig {
            keys,
            leeway: Duration::from_secs(self.leeway_secs),
            require_exp: self.require_exp,
            audiences: self.audiences.clone(),
            issuers: self.issuers.clone(),
            jwks_refresh: Duration::from_secs(self.jwks_refresh_secs),
            jwks_ca_file: self.jwks_ca_file.clone(),
            ..VerifierConfig::default()
        }
    }
}

/// The JWT side of the authenticator: the verifier and the claims it maps to a principal.
struct JwtAuth {
    verifier: Verifier,
    role_claim: String,
    environments_claim: String,
}

/// Checks bearer tokens.
pub struct Authenticator {
    store: Store,
    jwt: Option<JwtAuth>,
    /// The latest use of each token since the last flush: authentication writes nothing to the
    /// store, so it never waits for the writer (SQLite has one) nor holds a pool connection for a
    /// write; a background task writes these in one transaction.
    uses: Mutex<HashMap<i64, Millis>>,
    failures: FailureLimiter,
}

impl Authenticator {
    /// An authenticator over `store`'s tokens, and JWTs when `jwt` is set: loads its keys (reads
    /// the key files, fetches a JWKS URL, then refreshes JWKS sources in the background).
    pub fn new(store: Store, jwt: Option<&JwtConfig>) -> Result<Self, LoadError> {
        let jwt = match jwt {
            Some(cfg) => Some(JwtAuth {
                verifier: Verifier::new(&cfg.verifier_config())?,
                role_claim: cfg.role_claim.clone(),
                environments_claim: cfg.environments_claim.clone(),
            }),
            None => None,
        };
        Ok(Authenticator {
            store,
            jwt,
            uses: Mutex::new(HashMap::new()),
            failures: FailureLimiter::new(DEFAULT_FAILURE_BURST, DEFAULT_FAILURE_REFILL),
        })
    }

    /// Limits failed authentications per peer (see [`crate::auth_limit`]) to `burst`, one regained
    /// every `refill`; `burst` 0 switches the limit off. The default: 20, one every 6 s.
    pub fn with_failure_limit(mut self, burst: u32, refill: Duration) -> Self {
        self.failures = FailureLimiter::new(burst, refill);
        self
    }

    /// [`Authenticator::authenticate`] for a caller at `peer`: refused at once
    /// ([`AuthError::RateLimited`]) while that peer has used up its failed authentications; a
    /// refused token or JWT spends one. Without a peer (not known), unlimited.
    pub async fn authenticate_from(
        &self,
        peer: Option<IpAddr>,
        header: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if let Some(ip) = peer {
            self.failures
                .check(ip)
                .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        }
        let result = self.authenticate(header).await;
        if let (Some(ip), Err(AuthError::Invalid | AuthError::Jwt(_))) = (peer, &result) {
            self.failures.failed(ip);
        }
        result
    }

    /// Authenticates an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = header
            .and_then(vexil_jwt::bearer_token)
            .ok_or(AuthError::Missing)?;
        if !token.starts_with(TOKEN_PREFIX)
            && let Some(jwt) = &self.jwt
        {
            return jwt.principal(token, vexil_jwt::unix_now());
        }
        let hash = hash_secret(token);
        let record = self
            .store
            .token_by_hash(&hash)
            .await?
            .ok_or(AuthError::Invalid)?;
        // The lookup matched on the hash already; compare again in constant time so no code path
        // depends on how much of a guess was right.
        if !bool::from(record.hash.as_bytes().ct_eq(hash.as_bytes())) || record.is_revoked() {
            return Err(AuthError::Invalid);
        }
        self.touch(record.id);
        let environments = if record.environments.is_empty() {
            Environments::All
        } else {
            // Only the environments that are still the ones it was given (same incarnation).
            Environments::Only(self.store.live_environments(&record).await?)
        };
        Ok(Principal {
            name: record.name,
            role: record.role,
            environments,
        })
    }

    /// Notes that token `id` was used now; [`Authenticator::flush_uses`] writes it.
    fn touch(&self, id: i64) {
        self.uses
            .lock()
            .expect("token uses")
            .insert(id, now_millis());
    }

    /// Writes the token uses noted since the last flush (`last_used_at`) in one transaction. When
    /// the store refuses, they are kept for the next flush (a later use of a token wins).
    pub async fn flush_uses(&self) {
        let uses = std::mem::take(&mut *self.uses.lock().expect("token uses"));
        if uses.is_empty() {
            return;
        }
        let list: Vec<(i64, Millis)> = uses.iter().map(|(id, at)| (*id, *at)).collect();
        if let Err(e) = self.store.touch_tokens(&list).await {
            tracing::warn!(tokens = list.len(), error = %e,
                "could not record token uses; keeping them for the next flush");
            let mut pending = self.uses.lock().expect("token uses");
            for (id, at) in uses {
                let latest = pending.entry(id).or_insert(at);
                *latest = (*latest).max(at);
            }
        }
    }

    /// Flushes token uses every [`USE_FLUSH_INTERVAL`] until `cancel`, and once more then.
    pub async fn run_use_flush(&self, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(USE_FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => self.flush_uses().await,
            }
        }
        self.flush_uses().await;
    }
}

impl JwtAuth {
    /// Verifies `token` at `now` (seconds) and maps its claims to a principal.
    fn principal(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        let claims = self.verifier.verify_at(token, now)?;
        let role_claim = || Cow::Owned(self.role_claim.clone());
        let role = match claims.get(&self.role_claim) {
            None => {
                return Err(JwtError::InvalidClaim {
                    claim: role_claim(),
                    reason: "is missing (it holds the role)",
                }
                .into());
            }
            Some(v) => v
                .as_str()
                .and_then(Role::parse)
                .ok_or_else(|| JwtError::InvalidClaim {
                    claim: role_claim(),
                    reason: "must be one of \"admin\", \"editor\", \"viewer\", \"sidecar\"",
                })?,
        };
        let environments = match claims.string_list(&self.environments_claim)? {
            ListClaim::Absent => Environments::All,
            ListClaim::Values(list) => {
                Environments::Only(list.into_iter().map(String::from).collect())
            }
        };
        let subject = claims.subject().unwrap_or("unknown");
        Ok(Principal {
            name: format!("jwt:{subject}"),
            role,
            environments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};
    use vexil_jwt::{Algorithm, KeySource};

    const NOW: i64 = 1_700_000_000;

    fn sign(secret: &str, header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let sig = ring::hmac::sign(&key, format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn hs(claims: &Value) -> String {
        sign("s3cret", &json!({"alg": "HS256", "typ": "JWT"}), claims)
    }

    fn auth() -> JwtAuth {
        let cfg = JwtConfig {
            hs256_secret: Some("s3cret".into()),
            ..JwtConfig::default()
        };
        JwtAuth {
            verifier: Verifier::new(&cfg.verifier_config()).unwrap(),
            role_claim: cfg.role_claim,
            environments_claim: cfg.environments_claim,
        }
    }

    fn verify(claims: Value) -> Result<Principal, String> {
        auth()
            .principal(&hs(&claims), NOW)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn hs256_jwts_map_to_principals() {
        let p = verify(json!({"sub": "ada", "vexil_role": "editor",
            "vexil_environments": ["dev"], "exp": NOW + 60}))
        .unwrap();
        assert_eq!(p.name, "jwt:ada");
        assert_eq!(p.role, Role::Editor);
        assert_eq!(p.environments, Environments::Only(vec!["dev".into()]));
        assert!(p.allows_environment("dev") && !p.allows_environment("prod"));
        // Wrong key, expired, no exp, unknown role, no role, alg none: refused.
        let claims = json!({"sub": "ada", "vexil_role": "admin", "exp": NOW + 60});
        let a = auth();
        let other = sign("other", &json!({"alg": "HS256"}), &claims);
        assert!(a.principal(&other, NOW).is_err());
        let none = sign("s3cret", &json!({"alg": "none"}), &claims);
        assert!(a.principal(&none, NOW).is_err());
        let e = verify(json!({"sub": "ada", "vexil_role": "admin", "exp": 1})).unwrap_err();
        assert_eq!(e, "invalid JWT: token expired");
        let e = verify(json!({"sub": "ada", "vexil_role": "admin"})).unwrap_err();
        assert_eq!(e, "invalid JWT: missing claim \"exp\"");
        let e = verify(json!({"sub": "ada", "vexil_role": "admin", "exp": "2099"})).unwrap_err();
        assert!(
            e.starts_with("invalid JWT: claim \"exp\" must be an integer"),
            "{e}"
        );
        let e = verify(json!({"sub": "ada", "vexil_role": "root", "exp": NOW + 60})).unwrap_err();
        assert!(e.contains("\"vexil_role\" must be one of"), "{e}");
        let e = verify(json!({"sub": "ada", "exp": NOW + 60})).unwrap_err();
        assert!(e.contains("\"vexil_role\" is missing"), "{e}");
        let e = verify(json!({"sub": "ada", "vexil_role": 1, "exp": NOW + 60})).unwrap_err();
        assert!(e.contains("\"vexil_role\" must be one of"), "{e}");
    }

    /// The environments claim: only a token without it is unrestricted.
    #[test]
    fn environments_claim_shapes() {
        let with = |envs: Option<Value>| {
            let mut c = json!({"sub": "ada", "vexil_role": "viewer", "exp": NOW + 60});
            if let Some(e) = envs {
                c["vexil_environments"] = e;
            }
            verify(c)
        };
        let p = with(None).unwrap();
        assert_eq!(p.environments, Environments::All);
        assert!(p.allows_environment("anything") && !p.is_limited());
        let p = with(Some(json!("prod"))).unwrap();
        assert_eq!(p.environments, Environments::Only(vec!["prod".into()]));
        assert!(p.allows_environment("prod") && !p.allows_environment("dev"));
        let p = with(Some(json!(["a", "b"]))).unwrap();
        assert!(p.allows_environment("b") && !p.allows_environment("c"));
        // An empty list grants no environment (and is limited: no global administration).
        let p = with(Some(json!([]))).unwrap();
        assert_eq!(p.environments, Environments::Only(vec![]));
        assert!(p.is_limited() && !p.allows_environment("prod"));
        // Any other shape refuses the token; it is never read as unrestricted.
        for bad in [
            json!(null),
            json!(1),
            json!({"prod": true}),
            json!(["prod", 2]),
            json!(false),
        ] {
            let e = with(Some(bad.clone())).unwrap_err();
            assert_eq!(
                e,
                "invalid JWT: claim \"vexil_environments\" must be a string or an array of strings",
                "{bad}"
            );
        }
    }

    /// A signature that is right but for its last byte, its first byte, or its length is refused:
    /// the whole tag is compared (in constant time, by `ring::hmac::verify`), not a prefix.
    #[test]
    fn hs256_signatures_must_match_in_full() {
        let claims = json!({"sub": "ada", "vexil_role": "admin", "exp": NOW + 60});
        let token = hs(&claims);
        assert!(auth().principal(&token, NOW).is_ok());
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let with = |sig: &[u8]| format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig));
        let mut last = sig.clone();
        *last.last_mut().unwrap() ^= 1;
        let mut first = sig.clone();
        first[0] ^= 0x80;
        for forged in [
            with(&last),
            with(&first),
            with(&sig[..sig.len() - 1]),
            with(&sig[..16]),
            with(&[sig.as_slice(), &[0]].concat()),
            with(&[]),
        ] {
            assert!(auth().principal(&forged, NOW).is_err(), "{forged}");
        }
    }

    #[test]
    fn rs256_jwts_are_verified_with_the_public_key() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let pk8 = std::fs::read(format!("{fixtures}/jwt-rs256-private.pk8")).unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&pk8).unwrap();
        let cfg = JwtConfig {
            rs256_public_key: Some(format!("{fixtures}/jwt-rs256-public.pem").into()),
            ..JwtConfig::default()
        };
        let a = JwtAuth {
            verifier: Verifier::new(&cfg.verifier_config()).unwrap(),
            role_claim: cfg.role_claim,
            environments_claim: cfg.environments_claim,
        };
        let sign_rs = |claims: &Value| {
            let h = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string());
            let c = URL_SAFE_NO_PAD.encode(claims.to_string());
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                format!("{h}.{c}").as_bytes(),
                &mut sig,
            )
            .unwrap();
            format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig))
        };
        let claims = json!({"sub": "ci", "vexil_role": "viewer", "exp": NOW + 60});
        let token = sign_rs(&claims);
        assert_eq!(a.principal(&token, NOW).unwrap().role, Role::Viewer);
        // A tampered payload, and an HS256 token when only RS256 is configured: refused.
        let tampered = {
            let mut parts: Vec<&str> = token.split('.').collect();
            let other = URL_SAFE_NO_PAD
                .encode(json!({"sub": "ci", "vexil_role": "admin", "exp": NOW + 60}).to_string());
            parts[1] = &other;
            parts.join(".")
        };
        assert!(a.principal(&tampered, NOW).is_err());
        assert!(a.principal(&hs(&claims), NOW).is_err());
        // The public key's PEM used as an HMAC secret: refused.
        let pem = std::fs::read_to_string(format!("{fixtures}/jwt-rs256-public.pem")).unwrap();
        let forged = sign(&pem, &json!({"alg": "HS256"}), &claims);
        assert_eq!(
            a.principal(&forged, NOW).unwrap_err().to_string(),
            "invalid JWT: no key is configured for HS256"
        );
    }

    #[test]
    fn every_key_option_becomes_a_labelled_source() {
        let cfg = JwtConfig {
            hs256_secret: Some("s".into()),
            hs256_secret_file: Some("/s".into()),
            rs256_public_key: Some("/r.pem".into()),
            es256_public_key: Some("/e.pem".into()),
            jwks_file: Some("/j.json".into()),
            jwks_url: Some("https://idp/jwks".into()),
            leeway_secs: 5,
            require_exp: false,
            audiences: vec!["vexil".into()],
            issuers: vec!["https://idp".into()],
            ..JwtConfig::default()
        };
        assert!(cfg.has_key());
        assert!(!JwtConfig::default().has_key());
        let v = cfg.verifier_config();
        let labels: Vec<&str> = v.keys.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "jwt.hs256_secret",
                "jwt.hs256_secret_file",
                "jwt.rs256_public_key",
                "jwt.es256_public_key",
                "jwt.jwks_file",
                "jwt.jwks_url"
            ]
        );
        assert_eq!(
            v.keys[2].source,
            KeySource::PublicKeyFile {
                path: "/r.pem".into(),
                algorithm: Some(Algorithm::RS256)
            }
        );
        assert_eq!(v.leeway, Duration::from_secs(5));
        assert!(!v.require_exp);
        assert_eq!(v.audiences, ["vexil"]);
        assert_eq!(v.issuers, ["https://idp"]);
        // A missing key file is reported with its `[jwt]` key.
        let e = Verifier::new(
            &JwtConfig {
                rs256_public_key: Some("/nonexistent.pem".into()),
                ..JwtConfig::default()
            }
            .verifier_config(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("jwt.rs256_public_key: /nonexistent.pem:"),
            "{e}"
        );
    }

    #[test]
    fn admin_secrets_that_could_never_authenticate_are_refused() {
        assert_eq!(check_admin_secret(&generate_secret(), true), Ok(()));
        assert_eq!(
            check_admin_secret("vxl_compose-admin_token-09", false),
            Ok(())
        );
        let e = check_admin_secret("s3cret-admin", true).unwrap_err();
        assert!(e.contains("verified as a JWT"), "{e}");
        let e = check_admin_secret("s3cret-admin", false).unwrap_err();
        assert!(
            e.starts_with("does not start with vxl_: Vexil tokens are"),
            "{e}"
        );
        assert_eq!(
            check_admin_secret("vxl_", false).unwrap_err(),
            "has nothing after vxl_"
        );
        let e = check_admin_secret("vxl_abc\n", false).unwrap_err();
        assert!(e.starts_with("has a line break at position 7:"), "{e}");
        let e = check_admin_secret("vxl_a b", false).unwrap_err();
        assert!(e.starts_with("has a space at position 5:"), "{e}");
        let e = check_admin_secret("vxl_abc.def", false).unwrap_err();
        assert!(e.starts_with("has '.' at position 7:"), "{e}");
        let e = check_admin_secret("vxl_é", false).unwrap_err();
        assert!(
            e.starts_with("has a character outside printable ASCII"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_random_prefixed_and_hashed() {
        let a = generate_secret();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_ne!(a, generate_secret());
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), a);
    }

    #[test]
    fn roles_grant_what_the_design_says() {
        use Permission::*;
        assert!(Role::Admin.grants(Admin));
        assert!(Role::Editor.grants(WriteFlags) && !Role::Editor.grants(Admin));
        assert!(Role::Viewer.grants(Read) && !Role::Viewer.grants(WriteFlags));
        assert!(!Role::Sidecar.grants(Read));
    }
}
