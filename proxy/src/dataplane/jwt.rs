//! Bearer-token claims for `jwt:` context sources.
//!
//! With a key configured, a token counts only when its signature verifies (HS256 with a shared
//! secret, RS256 with a public key; keys from a JWKS file are chosen by `kid`) and `exp`/`nbf` hold
//! (with leeway). `alg: none` and every other algorithm are refused. With `jwt_verify = false` the
//! payload is decoded without any signature check (see [`ContextOptions::jwt_verify`]).
//!
//! [`ContextOptions::jwt_verify`]: crate::dataplane::config::ContextOptions::jwt_verify

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use vexil_settings::Problems;

use crate::dataplane::config::ContextOptions;

/// An RS256 verification key.
enum RsaKey {
    /// `RSAPublicKey` DER (from a PEM `PUBLIC KEY`).
    Der(Vec<u8>),
    /// Modulus and exponent (from a JWK).
    Components { n: Vec<u8>, e: Vec<u8> },
}

impl RsaKey {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            RsaKey::Der(der) => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
                .verify(message, signature)
                .is_ok(),
            RsaKey::Components { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

/// Checks bearer tokens and returns their claims.
pub(crate) struct JwtVerifier {
    verify: bool,
    hmac: Vec<(Option<String>, ring::hmac::Key)>,
    rsa: Vec<(Option<String>, RsaKey)>,
    leeway: u64,
    max_bytes: usize,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("verify", &self.verify)
            .field("hmac_keys", &self.hmac.len())
            .field("rsa_keys", &self.rsa.len())
            .finish()
    }
}

impl JwtVerifier {
    /// Loads the configured keys (reads the PEM and JWKS files).
    pub(crate) fn load(opts: &ContextOptions) -> Result<JwtVerifier, Problems> {
        let mut p = Problems::default();
        let mut v = JwtVerifier {
            verify: opts.jwt_verify,
            hmac: Vec::new(),
            rsa: Vec::new(),
            leeway: opts.jwt_leeway.as_secs(),
            max_bytes: opts.jwt_max_bytes,
        };
        if let Some(secret) = &opts.jwt_hs256_secret {
            v.hmac.push((None, hmac_key(secret.expose().as_bytes())));
        }
        if let Some(path) = &opts.jwt_rs256_public_key {
            match std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|pem| rsa_public_key_from_pem(&pem))
            {
                Ok(der) => v.rsa.push((None, RsaKey::Der(der))),
                Err(e) => p.push("context_options.jwt_rs256_public_key", e),
            }
        }
        if let Some(path) = &opts.jwt_jwks_file {
            let loaded = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|text| v.add_jwks(&text));
            if let Err(e) = loaded {
                p.push("context_options.jwt_jwks_file", e);
            }
        }
        p.finish(v)
    }

    /// Adds the keys of a JWKS document.
    fn add_jwks(&mut self, text: &str) -> Result<(), String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("expected {\"keys\": [...]}")?;
        let b64 = |jwk: &Value, field: &str, i: usize| -> Result<Vec<u8>, String> {
            let s = jwk
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("keys[{i}]: missing \"{field}\""))?;
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|e| format!("keys[{i}].{field}: not base64url: {e}"))
        };
        for (i, jwk) in keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(Value::as_str).map(String::from);
            match jwk.get("kty").and_then(Value::as_str) {
                Some("RSA") => {
                    let key = RsaKey::Components {
                        n: b64(jwk, "n", i)?,
                        e: b64(jwk, "e", i)?,
                    };
                    self.rsa.push((kid, key));
                }
                Some("oct") => self.hmac.push((kid, hmac_key(&b64(jwk, "k", i)?))),
                // Other key types (EC, OKP) cannot verify RS256/HS256 tokens: skipped.
                _ => {}
            }
        }
        if self.rsa.is_empty() && self.hmac.is_empty() {
            return Err("no RSA or oct key in the JWKS".into());
        }
        Ok(())
    }

    /// The claims of the bearer token in an `Authorization` value, when it is acceptable.
    pub(crate) fn claims_from_authorization(
        &self,
        authorization: &[u8],
    ) -> Option<Map<String, Value>> {
        let value = std::str::from_utf8(authorization).ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.claims(token.trim(), unix_now())
    }

    /// The claims of `token` at time `now` (seconds), when it is acceptable.
    pub(crate) fn claims(&self, token: &str, now: u64) -> Option<Map<String, Value>> {
        if token.len() > self.max_bytes {
            return None;
        }
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        if self.verify {
            let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
            self.check_signature(header, signed, signature)?;
        }
        let claims: Map<String, Value> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        self.in_time(&claims, now).then_some(claims)
    }

    fn check_signature(&self, header: &str, signed: &[u8], signature: &str) -> Option<()> {
        let header: Map<String, Value> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let kid = header.get("kid").and_then(Value::as_str);
        let wanted = |k: &Option<String>| kid.is_none() || k.is_none() || k.as_deref() == kid;
        let ok = match header.get("alg").and_then(Value::as_str)? {
            "HS256" => self
                .hmac
                .iter()
                .filter(|(k, _)| wanted(k))
                .any(|(_, key)| ring::hmac::verify(key, signed, &signature).is_ok()),
            "RS256" => self
                .rsa
                .iter()
                .filter(|(k, _)| wanted(k))
                .any(|(_, key)| key.verify(signed, &signature)),
            _ => false,
        };
        ok.then_some(())
    }

    fn in_time(&self, claims: &Map<String, Value>, now: u64) -> bool {
        let secs = |name: &str| claims.get(name).and_then(Value::as_f64);
        let expired = secs("exp").is_some_and(|exp| exp + (self.leeway as f64) <= now as f64);
        let early = secs("nbf").is_some_and(|nbf| nbf - (self.leeway as f64) > now as f64);
        !expired && !early
    }
}

fn hmac_key(secret: &[u8]) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `RSAPublicKey` DER inside a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as ring verifies with.
pub(crate) fn rsa_public_key_from_pem(pem: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let body = pem
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(b, _)| b)
        .ok_or("expected a PEM \"PUBLIC KEY\" block")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| format!("PEM body is not base64: {e}"))?;
    spki_subject_public_key(&der).ok_or_else(|| "not a DER SubjectPublicKeyInfo".to_string())
}

/// SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE, subjectPublicKey BIT STRING }: the bit
/// string's content (after its unused-bits byte).
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
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// An HS256 token over `claims`.
    pub(crate) fn hs256(secret: &str, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = ring::hmac::sign(&hmac_key(secret.as_bytes()), format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn verifier(opts: ContextOptions) -> JwtVerifier {
        JwtVerifier::load(&opts).unwrap()
    }

    fn secret_opts() -> ContextOptions {
        ContextOptions {
            jwt_hs256_secret: Some("s3cret".into()),
            ..ContextOptions::default()
        }
    }

    #[test]
    fn hs256_verified_and_timed() {
        let v = verifier(secret_opts());
        let now = 1_000_000;
        let good = hs256("s3cret", &json!({"sub": "u1", "exp": now + 60}));
        assert_eq!(v.claims(&good, now).unwrap()["sub"], "u1");
        let forged = hs256("other", &json!({"sub": "u1"}));
        assert!(v.claims(&forged, now).is_none());
        let expired = hs256("s3cret", &json!({"sub": "u1", "exp": now - 31}));
        assert!(v.claims(&expired, now).is_none());
        let within_leeway = hs256("s3cret", &json!({"sub": "u1", "exp": now - 10}));
        assert!(v.claims(&within_leeway, now).is_some());
        let early = hs256("s3cret", &json!({"sub": "u1", "nbf": now + 100}));
        assert!(v.claims(&early, now).is_none());
        let header = format!("Bearer {good}");
        assert!(v.claims_from_authorization(header.as_bytes()).is_none()); // expired in real time
        let fresh = hs256("s3cret", &json!({"sub": "u2"}));
        let header = format!("bearer {fresh}");
        assert_eq!(
            v.claims_from_authorization(header.as_bytes()).unwrap()["sub"],
            "u2"
        );
        assert!(v.claims_from_authorization(b"Basic abc").is_none());
    }

    #[test]
    fn alg_none_and_tampering_are_refused() {
        let v = verifier(secret_opts());
        let good = hs256("s3cret", &json!({"sub": "u1"}));
        let parts: Vec<&str> = good.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        assert!(
            v.claims(&format!("{none_header}.{}.", parts[1]), 0)
                .is_none()
        );
        let other_claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#);
        assert!(
            v.claims(&format!("{}.{other_claims}.{}", parts[0], parts[2]), 0)
                .is_none()
        );
    }

    #[test]
    fn unverified_mode_decodes_anything() {
        let v = verifier(ContextOptions {
            jwt_verify: false,
            ..ContextOptions::default()
        });
        let forged = hs256("whatever", &json!({"sub": "u9", "tier": 3}));
        let claims = v.claims(&forged, 0).unwrap();
        assert_eq!(claims["sub"], "u9");
        assert_eq!(claims["tier"], 3);
    }

    #[test]
    fn rs256_with_pem_and_jwks() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let pk8 = std::fs::read(format!("{fixtures}/jwt-rs256-private.pk8")).unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&pk8).unwrap();
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k1"}"#);
        let c = URL_SAFE_NO_PAD.encode(r#"{"sub":"rsa-user"}"#);
        let signed = format!("{h}.{c}");
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut sig,
        )
        .unwrap();
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig));

        let pem = verifier(ContextOptions {
            jwt_rs256_public_key: Some(format!("{fixtures}/jwt-rs256-public.pem").into()),
            ..ContextOptions::default()
        });
        assert_eq!(pem.claims(&token, 0).unwrap()["sub"], "rsa-user");

        use ring::signature::KeyPair as _;
        let components: RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
        let _ = pair.public_key();
        let jwks = json!({"keys": [
            {"kty": "EC", "kid": "ignored"},
            {"kty": "RSA", "kid": "k1", "n": URL_SAFE_NO_PAD.encode(&components.n),
             "e": URL_SAFE_NO_PAD.encode(&components.e)}
        ]});
        let mut v = verifier(ContextOptions {
            jwt_verify: true,
            ..ContextOptions::default()
        });
        v.add_jwks(&jwks.to_string()).unwrap();
        assert_eq!(v.claims(&token, 0).unwrap()["sub"], "rsa-user");
        let mut wrong_kid = verifier(ContextOptions::default());
        let jwks_other = jwks.to_string().replace("\"k1\"", "\"k2\"");
        wrong_kid.add_jwks(&jwks_other).unwrap();
        assert!(wrong_kid.claims(&token, 0).is_none());
    }

    #[test]
    fn unreadable_keys_are_reported() {
        let e = JwtVerifier::load(&ContextOptions {
            jwt_rs256_public_key: Some("/nonexistent.pem".into()),
            ..ContextOptions::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("context_options.jwt_rs256_public_key: /nonexistent.pem")
        );
    }
}
