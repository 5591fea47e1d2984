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

/// JWT verification settings. A token is accepted when it is signed with a configured algorithm:
/// HS256 with the shared secret, or RS256 with the public key.
#[derive(Clone, Debug, Default)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// RS256 public key: the PKCS#1 `RSAPublicKey` DER (see [`rsa_public_key_from_pem`]).
    pub rs256_public_key: Option<Vec<u8>>,
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

/// Verifies an HS256 or RS256 JWT and maps its claims to a principal.
fn verify_jwt(cfg: &JwtConfig, token: &str) -> Option<Principal> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    let signed = &token.as_bytes()[..token.len() - signature.len() - 1];
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    // Signatures are checked by ring: `hmac::verify` recomputes the tag and compares it in
    // constant time (ring's `constant_time::verify_slices_are_equal`), so how much of a forged HS256
    // signature was right never shows in the timing; RS256 verification works on the public key and
    // holds no secret to leak. No signature is ever compared with `==` here.
    match header.get("alg")?.as_str()? {
        "HS256" => {
            let key = ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                cfg.hs256_secret.as_ref()?.as_bytes(),
            );
            ring::hmac::verify(&key, signed, &signature).ok()?;
        }
        "RS256" => {
            let key = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                cfg.rs256_public_key.as_ref()?,
            );
            key.verify(signed, &signature).ok()?;
        }
        _ => return None,
    }
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

/// The `RSAPublicKey` DER inside a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as ring verifies with.
pub fn rsa_public_key_from_pem(pem: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let body = pem
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(b, _)| b)
        .ok_or("expected a PEM \"PUBLIC KEY\" block")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("PEM body is not base64: {e}"))?;
    spki_subject_public_key(&der).ok_or_else(|| "not a DER SubjectPublicKeyInfo".to_string())
}

/// SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE, subjectPublicKey BIT STRING }: returns the
/// bit string's content (after its unused-bits byte).
fn spki_subject_public_key(der: &[u8]) -> Option<Vec<u8>> {
    let (tag, spki, _) = der_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = der_tlv(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, bits, _) = der_tlv(rest)?;
    match (tag, bits.split_first()) {
        (0x03, Some((0, key))) => Some(key.to_vec()),
        _ => None,
    }
}

/// One DER tag-length-value: (tag, value, what follows).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
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
            rs256_public_key: None,
            role_claim: "vexil_role".into(),
            environments_claim: "vexil_environments".into(),
        }
    }

    /// A signature that is right but for its last byte, its first byte, or its length is refused:
    /// the whole tag is compared (in constant time, by `ring::hmac::verify`), not a prefix.
    #[test]
    fn hs256_signatures_must_match_in_full() {
        let header = serde_json::json!({"alg": "HS256"});
        let claims = serde_json::json!({"sub": "ada", "vexil_role": "admin"});
        let token = sign("s3cret", &header, &claims);
        assert!(verify_jwt(&cfg(), &token).is_some());
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
            assert!(verify_jwt(&cfg(), &forged).is_none(), "{forged}");
        }
    }

    #[test]
    fn rs256_jwts_are_verified_with_the_public_key() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let pem = std::fs::read_to_string(format!("{fixtures}/jwt-rs256-public.pem")).unwrap();
        let pk8 = std::fs::read(format!("{fixtures}/jwt-rs256-private.pk8")).unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&pk8).unwrap();
        let cfg = JwtConfig {
            hs256_secret: None,
            rs256_public_key: Some(rsa_public_key_from_pem(&pem).unwrap()),
            ..cfg()
        };
        let sign_rs = |claims: &Value| {
            let h = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "RS256"}).to_string());
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
        let claims = serde_json::json!({"sub": "ci", "vexil_role": "viewer"});
        let token = sign_rs(&claims);
        assert_eq!(verify_jwt(&cfg, &token).unwrap().role, Role::Viewer);
        // A tampered payload, and an HS256 token when only RS256 is configured: refused.
        let tampered = {
            let mut parts: Vec<&str> = token.split('.').collect();
            let other = URL_SAFE_NO_PAD
                .encode(serde_json::json!({"sub": "ci", "vexil_role": "admin"}).to_string());
            parts[1] = &other;
            parts.join(".")
        };
        assert!(verify_jwt(&cfg, &tampered).is_none());
        let hs = sign("s3cret", &serde_json::json!({"alg": "HS256"}), &claims);
        assert!(verify_jwt(&cfg, &hs).is_none());
        assert!(rsa_public_key_from_pem("not a key").is_err());
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
