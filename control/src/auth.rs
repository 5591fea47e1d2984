//! Authentication and authorization of the admin API.
//!
//! A bearer token is either one of ours (`vxl_` + 32 random bytes, base64url; only its SHA-256 is
//! stored, so a database leak reveals no usable secret) or, when a verification key is configured, a
//! JWT whose role comes from a configurable claim. Roles decide what a caller may do; a token can be
//! limited to some environments.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::{Millis, Role, now_millis};
use crate::store::{Store, StoreError};

/// Prefix of every token secret we issue (makes leaked secrets easy to scan for).
pub const TOKEN_PREFIX: &str = "vxl_";

/// How often `last_used_at` is written for one token, at most.
const TOUCH_INTERVAL_MS: Millis = 60_000;

/// A new random token secret.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
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
    /// Environments it is limited to; empty means all.
    pub environments: Vec<String>,
}

impl Principal {
    /// True when the caller may act on environment `env`.
    pub fn allows_environment(&self, env: &str) -> bool {
        self.environments.is_empty() || self.environments.iter().any(|e| e == env)
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
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// JWT verification settings.
#[derive(Clone, Debug, Default)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// The claim holding the role (`admin`, `editor`, `viewer`).
    pub role_claim: String,
    /// The claim holding the environments list (optional in tokens).
    pub environments_claim: String,
}

/// Checks bearer tokens.
pub struct Authenticator {
    store: Store,
    jwt: Option<JwtConfig>,
    last_touch: Mutex<HashMap<i64, Millis>>,
}

impl Authenticator {
    /// An authenticator over `store`'s tokens, and JWTs when `jwt` is set.
    pub fn new(store: Store, jwt: Option<JwtConfig>) -> Self {
        Authenticator {
            store,
            jwt,
            last_touch: Mutex::new(HashMap::new()),
        }
    }

    /// Authenticates an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        if !token.starts_with(TOKEN_PREFIX)
            && let Some(jwt) = &self.jwt
        {
            return verify_jwt(jwt, token).ok_or(AuthError::Invalid);
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
        self.touch(record.id).await;
        Ok(Principal {
            name: record.name,
            role: record.role,
            environments: record.environments,
        })
    }

    /// Writes `last_used_at`, at most once a minute per token.
    async fn touch(&self, id: i64) {
        let now = now_millis();
        {
            let mut seen = self.last_touch.lock().expect("touch map");
            match seen.get(&id) {
                Some(&t) if now - t < TOUCH_INTERVAL_MS => return,
                _ => {
                    seen.insert(id, now);
                }
            }
        }
        if let Err(e) = self.store.touch_token(id, now).await {
            tracing::warn!(token_id = id, error = %e, "could not record token use");
        }
    }
}

/// Verifies an HS256 JWT and maps its claims to a principal.
fn verify_jwt(cfg: &JwtConfig, token: &str) -> Option<Principal> {
    let secret = cfg.hs256_secret.as_ref()?;
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header.get("alg")?.as_str()? != "HS256" {
        return None;
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signed = &token[..token.len() - signature.len() - 1];
    ring::hmac::verify(
        &key,
        signed.as_bytes(),
        &URL_SAFE_NO_PAD.decode(signature).ok()?,
    )
    .ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let now = now_millis() / 1000;
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_some_and(|exp| exp <= now)
        || claims
            .get("nbf")
            .and_then(Value::as_i64)
            .is_some_and(|nbf| nbf > now)
    {
        return None;
    }
    let role = Role::parse(claims.get(&cfg.role_claim)?.as_str()?)?;
    let environments = claims
        .get(&cfg.environments_claim)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    Some(Principal {
        name: format!("jwt:{subject}"),
        role,
        environments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let sig = ring::hmac::sign(&key, format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn cfg() -> JwtConfig {
        JwtConfig {
            hs256_secret: Some("s3cret".into()),
            role_claim: "vexil_role".into(),
            environments_claim: "vexil_environments".into(),
        }
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

    #[test]
    fn hs256_jwts_are_verified() {
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let claims = serde_json::json!({"sub": "ada", "vexil_role": "editor",
            "vexil_environments": ["dev"], "exp": now_millis() / 1000 + 60});
        let p = verify_jwt(&cfg(), &sign("s3cret", &header, &claims)).unwrap();
        assert_eq!(p.name, "jwt:ada");
        assert_eq!(p.role, Role::Editor);
        assert_eq!(p.environments, vec!["dev".to_string()]);
        // Wrong key, expired, unknown role, alg none: refused.
        assert!(verify_jwt(&cfg(), &sign("other", &header, &claims)).is_none());
        let expired = serde_json::json!({"sub": "ada", "vexil_role": "admin", "exp": 1});
        assert!(verify_jwt(&cfg(), &sign("s3cret", &header, &expired)).is_none());
        let bad_role = serde_json::json!({"sub": "ada", "vexil_role": "root"});
        assert!(verify_jwt(&cfg(), &sign("s3cret", &header, &bad_role)).is_none());
        let none = serde_json::json!({"alg": "none"});
        assert!(verify_jwt(&cfg(), &sign("s3cret", &none, &claims)).is_none());
    }
}
