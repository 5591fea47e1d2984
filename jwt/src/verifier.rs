//! The verifier: its settings, and the checks of one token.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::claims::Claims;
use crate::error::{AlgName, JwtError, LoadError};
use crate::key::{Algorithm, KeySet};
use crate::source::{self, KeySpec, Refresher};

/// Default clock skew tolerated on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default interval of the JWKS refresh.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Default bound on one JWKS fetch (connect, TLS, request, body).
pub const DEFAULT_JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Size limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest token (its compact form), in bytes.
    pub max_token_bytes: usize,
    /// Longest decoded header JSON.
    pub max_header_bytes: usize,
    /// Longest decoded payload JSON.
    pub max_payload_bytes: usize,
    /// Most entries in a JWKS document.
    pub max_jwks_keys: usize,
    /// Largest JWKS document (file or fetched body).
    pub max_jwks_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_token_bytes: 8 << 10,
            max_header_bytes: 4 << 10,
            max_payload_bytes: 8 << 10,
            max_jwks_keys: 64,
            max_jwks_bytes: 256 << 10,
        }
    }
}

/// What a [`Verifier`] accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Where the keys come from. At least one for [`Verifier::new`].
    pub keys: Vec<KeySpec>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (whole seconds count).
    pub leeway: Duration,
    /// Refuse tokens without `exp` (the default).
    pub require_exp: bool,
    /// When not empty, `aud` (a string or an array of strings) must name one of these.
    pub audiences: Vec<String>,
    /// When not empty, `iss` must be one of these.
    pub issuers: Vec<String>,
    /// Size limits.
    pub limits: Limits,
    /// How often JWKS sources (files and URLs) are reloaded; zero: only at start (and on
    /// [`Verifier::refresh_now`]).
    pub jwks_refresh: Duration,
    /// Bound on one JWKS URL fetch.
    pub jwks_fetch_timeout: Duration,
    /// For `https` JWKS URLs: trust only the CA certificates of this PEM file instead of the
    /// public web roots.
    pub jwks_ca_file: Option<PathBuf>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            keys: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            require_exp: true,
            audiences: Vec::new(),
            issuers: Vec::new(),
            limits: Limits::default(),
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            jwks_fetch_timeout: DEFAULT_JWKS_FETCH_TIMEOUT,
            jwks_ca_file: None,
        }
    }
}

/// The claim rules, as checked on every token.
struct Rules {
    leeway: i64,
    require_exp: bool,
    audiences: Box<[Box<str>]>,
    issuers: Box<[Box<str>]>,
    limits: Limits,
}

struct Inner {
    rules: Rules,
    /// `None`: signatures are not checked (see [`Verifier::without_signature_check`]).
    keys: Option<Arc<ArcSwap<KeySet>>>,
    /// Dropped with the verifier, which ends the refresh thread.
    refresher: Option<Refresher>,
}

/// Verifies compact JWS tokens (JWTs). Cheap to clone; verification takes no lock (the key set
/// is read through an `ArcSwap`) and allocates only the decoded claims (the header and the
/// signature are decoded on the stack).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Verifier");
        match &self.inner.keys {
            Some(keys) => d.field("keys", &keys.load().keys().len()),
            None => d.field("signatures", &"NOT CHECKED"),
        };
        d.field("refreshing", &self.inner.refresher.is_some())
            .finish()
    }
}

/// The JOSE header fields this verifier reads, borrowed from the decoded header.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

impl Verifier {
    /// A verifier of the keys of `config`: reads the files and fetches the JWKS URLs now
    /// (blocking, up to the fetch timeout), and starts the background refresh of JWKS sources.
    /// Every source that cannot be loaded is reported.
    pub fn new(config: &VerifierConfig) -> Result<Verifier, LoadError> {
        if config.keys.is_empty() {
            return Err(JwtError::key("jwt", "no key is configured").into());
        }
        let rules = Rules::new(config)?;
        let (keys, refresher) = source::start(config)?;
        Ok(Verifier {
            inner: Arc::new(Inner {
                rules,
                keys: Some(keys),
                refresher,
            }),
        })
    }

    /// A verifier that does **not** check signatures: anyone can make a token it accepts. The
    /// claim rules (`exp`, `nbf`, `iat`, `aud`, `iss`, sizes) still apply; `config.keys` is
    /// ignored. Only for development, or behind a gateway that verified the token already.
    pub fn without_signature_check(config: &VerifierConfig) -> Result<Verifier, LoadError> {
        Ok(Verifier {
            inner: Arc::new(Inner {
                rules: Rules::new(config)?,
                keys: None,
                refresher: None,
            }),
        })
    }

    /// The claims of `token` when it is acceptable now.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        self.verify_at(token, unix_now())
    }

    /// The claims of `token` when it is acceptable at `now` (seconds since the Unix epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let rules = &self.inner.rules;
        let limits = &rules.limits;
        if token.len() > limits.max_token_bytes {
            return Err(JwtError::TooLarge {
                what: "token",
                limit: limits.max_token_bytes,
            });
        }
        const SEGMENTS: JwtError = JwtError::Malformed("expected three dot-separated segments");
        let (header_b64, rest) = token.split_once('.').ok_or(SEGMENTS)?;
        let (payload_b64, signature_b64) = rest.split_once('.').ok_or(SEGMENTS)?;
        if signature_b64.contains('.') {
            return Err(SEGMENTS);
        }

        let mut stack = [0u8; 512];
        let mut heap = Vec::new();
        let header_json = decode(
            header_b64,
            &mut stack,
            &mut heap,
            limits.max_header_bytes,
            "header",
        )?;
        const HEADER: JwtError =
            JwtError::Malformed("the header is not a JSON object with a string \"alg\"");
        // A derived struct would also take a JSON array (`["HS256"]`): objects only.
        if header_json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(HEADER);
        }
        let header: Header<'_> = serde_json::from_slice(header_json).map_err(|_| HEADER)?;
        if header.crit.is_some() {
            return Err(JwtError::CriticalHeader);
        }
        if let Some(keys) = &self.inner.keys {
            let alg = Algorithm::from_name(&header.alg)
                .ok_or_else(|| JwtError::AlgorithmRefused(AlgName::of(&header.alg)))?;
            let keys = keys.load();
            let key = keys.select(alg, header.kid.as_deref())?;
            // RSA-8192 signatures have 1024 bytes (base64's estimate is up to 2 more); ES256 64,
            // HS256 32.
            let mut signature = [0u8; 1032];
            let len = if signature_b64.len().div_ceil(4) * 3 > signature.len() {
                return Err(JwtError::BadSignature);
            } else {
                URL_SAFE_NO_PAD
                    .decode_slice(signature_b64, &mut signature)
                    .map_err(|_| JwtError::Malformed("the signature is not base64url"))?
            };
            let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
            if !key.verify(signed, &signature[..len]) {
                return Err(JwtError::BadSignature);
            }
        }

        let mut stack = [0u8; 2048];
        let mut heap = Vec::new();
        let payload = decode(
            payload_b64,
            &mut stack,
            &mut heap,
            limits.max_payload_bytes,
            "payload",
        )?;
        let claims: Map<String, Value> = serde_json::from_slice(payload)
            .map_err(|_| JwtError::Malformed("the payload is not a JSON object"))?;
        rules.check(&claims, now)?;
        Ok(Claims::new(claims))
    }

    /// The current key set (empty without signature checks).
    pub fn key_set(&self) -> Arc<KeySet> {
        match &self.inner.keys {
            Some(keys) => keys.load_full(),
            None => Arc::new(KeySet::default()),
        }
    }

    /// Reloads the JWKS sources now (waiting for it). A source that fails keeps its last good
    /// keys, and is reported. Without JWKS sources, there is nothing to do.
    pub fn refresh_now(&self) -> Result<(), LoadError> {
        match &self.inner.refresher {
            Some(r) => r.refresh_now(),
            None => Ok(()),
        }
    }
}

impl Rules {
    fn new(config: &VerifierConfig) -> Result<Rules, LoadError> {
        let l = &config.limits;
        if l.max_token_bytes == 0
            || l.max_header_bytes == 0
            || l.max_payload_bytes == 0
            || l.max_jwks_keys == 0
            || l.max_jwks_bytes == 0
        {
            return Err(JwtError::key("jwt", "every size limit must be at least 1").into());
        }
        let strings = |v: &[String]| v.iter().map(|s| s.as_str().into()).collect();
        Ok(Rules {
            leeway: i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX),
            require_exp: config.require_exp,
            audiences: strings(&config.audiences),
            issuers: strings(&config.issuers),
            limits: config.limits.clone(),
        })
    }

    fn check(&self, claims: &Map<String, Value>, now: i64) -> Result<(), JwtError> {
        match numeric_date(claims, "exp")? {
            Some(exp) if now >= exp.saturating_add(self.leeway) => return Err(JwtError::Expired),
            None if self.require_exp => return Err(JwtError::MissingClaim("exp")),
            _ => {}
        }
        if numeric_date(claims, "nbf")?.is_some_and(|nbf| now.saturating_add(self.leeway) < nbf) {
            return Err(JwtError::NotYetValid);
        }
        if numeric_date(claims, "iat")?.is_some_and(|iat| now.saturating_add(self.leeway) < iat) {
            return Err(JwtError::IssuedInFuture);
        }
        if !self.audiences.is_empty() {
            let accepted = |s: &str| self.audiences.iter().any(|a| **a == *s);
            let ok = match claims.get("aud") {
                None => return Err(JwtError::MissingClaim("aud")),
                Some(Value::String(s)) => accepted(s),
                Some(Value::Array(items)) => {
                    let mut any = false;
                    for item in items {
                        let s = item.as_str().ok_or_else(|| {
                            JwtError::invalid("aud", "must be a string or an array of strings")
                        })?;
                        any |= accepted(s);
                    }
                    any
                }
                Some(_) => {
                    return Err(JwtError::invalid(
                        "aud",
                        "must be a string or an array of strings",
                    ));
                }
            };
            if !ok {
                return Err(JwtError::AudienceMismatch);
            }
        }
        if !self.issuers.is_empty() {
            match claims.get("iss") {
                None => return Err(JwtError::MissingClaim("iss")),
                Some(Value::String(s)) if self.issuers.iter().any(|i| **i == **s) => {}
                Some(Value::String(_)) => return Err(JwtError::IssuerMismatch),
                Some(_) => return Err(JwtError::invalid("iss", "must be a string")),
            }
        }
        Ok(())
    }
}

/// A NumericDate claim: a JSON integer (seconds). A fraction, a float, a string or `null` is an
/// error, never ignored. Integers beyond `i64` count as `i64::MAX` (far future).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => Ok(Some(v)),
            None if n.is_u64() => Ok(Some(i64::MAX)),
            None => Err(JwtError::invalid(
                name,
                "must be an integer number of seconds (no fraction)",
            )),
        },
        Some(_) => Err(JwtError::invalid(
            name,
            "must be an integer number of seconds (a JSON number)",
        )),
    }
}

/// Decodes a base64url segment of at most `max` decoded bytes, into `stack` when it fits.
fn decode<'b>(
    b64: &str,
    stack: &'b mut [u8],
    heap: &'b mut Vec<u8>,
    max: usize,
    what: &'static str,
) -> Result<&'b [u8], JwtError> {
    let malformed = || {
        JwtError::Malformed(if what == "header" {
            "the header is not base64url"
        } else {
            "the payload is not base64url"
        })
    };
    if b64.len() / 4 * 3 + (b64.len() % 4).saturating_sub(1) > max {
        return Err(JwtError::TooLarge { what, limit: max });
    }
    if b64.len() / 4 * 3 + 3 <= stack.len() {
        let n = URL_SAFE_NO_PAD
            .decode_slice(b64, stack)
            .map_err(|_| malformed())?;
        Ok(&stack[..n])
    } else {
        *heap = URL_SAFE_NO_PAD.decode(b64).map_err(|_| malformed())?;
        Ok(heap.as_slice())
    }
}

/// The token of an `Authorization` value `Bearer <token>` (the scheme in any case).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
