//! Bearer-token claims for `jwt:` context sources, verified by `vexil-jwt`.
//!
//! With a key configured, a token counts only when its signature verifies (HS256, RS256 or ES256;
//! keys from a secret, PEM files, or a JWKS file or URL, chosen by `kid`) and its claims hold
//! (`exp` required and an integer, `nbf`, `iat`, leeway, `aud`/`iss` when configured). `alg: none`
//! and every other algorithm are refused. With `jwt_verify = false` the payload is decoded
//! without any signature check, the claim rules still applying (see
//! [`ContextOptions::jwt_verify`]). A refused token counts as absent.
//!
//! This module maps `[context_options]` onto the crate's settings; verification reads the key
//! set without a lock and decodes the header and signature on the stack.
//!
//! [`ContextOptions::jwt_verify`]: crate::dataplane::config::ContextOptions::jwt_verify

use serde_json::{Map, Value};
use vexil_jwt::{KeySources, Limits, Verifier, VerifierConfig};

use vexil_settings::Problems;

use crate::dataplane::config::ContextOptions;

/// Checks bearer tokens and returns their claims.
#[derive(Debug)]
pub(crate) struct JwtVerifier(Verifier);

/// The crate's settings for `opts`, each key source labelled with its `[context_options]` key.
pub(crate) fn verifier_config(opts: &ContextOptions) -> VerifierConfig {
    let keys = KeySources {
        hs256_secret: opts
            .jwt_hs256_secret
            .as_ref()
            .map(|s| s.expose().as_bytes()),
        hs256_secret_file: opts.jwt_hs256_secret_file.as_ref(),
        rs256_public_key: opts.jwt_rs256_public_key.as_ref(),
        es256_public_key: opts.jwt_es256_public_key.as_ref(),
        jwks_file: opts.jwt_jwks_file.as_ref(),
        jwks_url: opts.jwt_jwks_url.as_deref(),
    }
    .specs(|name| format!("context_options.jwt_{name}"));
    let d = Limits::default();
    VerifierConfig {
        keys,
        leeway: opts.jwt_leeway,
        require_exp: opts.jwt_require_exp,
        audiences: opts.jwt_audiences.clone(),
        issuers: opts.jwt_issuers.clone(),
        limits: Limits {
            max_token_bytes: opts.jwt_max_bytes,
            // The payload is at most 3/4 of the token: its cap follows the token's.
            max_payload_bytes: opts.jwt_max_bytes.max(1),
            ..d
        },
        jwks_refresh: opts.jwt_jwks_refresh,
        jwks_ca_file: opts.jwt_jwks_ca_file.clone(),
        ..VerifierConfig::default()
    }
}

impl JwtVerifier {
    /// Loads the configured keys (reads the PEM, secret and JWKS files, fetches a JWKS URL and
    /// then refreshes JWKS sources in the background).
    pub(crate) fn load(opts: &ContextOptions) -> Result<JwtVerifier, Problems> {
        let config = verifier_config(opts);
        let verifier = if opts.jwt_verify {
            Verifier::new(&config)
        } else {
            Verifier::without_signature_check(&config)
        };
        verifier.map(JwtVerifier).map_err(|e| {
            let mut problems = Problems::new();
            for p in &e.problems {
                match p {
                    vexil_jwt::JwtError::Key { label, reason } => problems.push(label, reason),
                    other => problems.push("context_options", other.to_string()),
                }
            }
            problems
        })
    }

    /// The claims of the bearer token in an `Authorization` value, when it is acceptable.
    pub(crate) fn claims_from_authorization(
        &self,
        authorization: &[u8],
    ) -> Option<Map<String, Value>> {
        let value = std::str::from_utf8(authorization).ok()?;
        self.claims(vexil_jwt::bearer_token(value)?, vexil_jwt::unix_now())
    }

    /// The claims of `token` at time `now` (seconds), when it is acceptable.
    pub(crate) fn claims(&self, token: &str, now: i64) -> Option<Map<String, Value>> {
        match self.0.verify_at(token, now) {
            Ok(claims) => Some(claims.into_map()),
            Err(e) => {
                tracing::debug!(error = %e, "bearer token refused for jwt: sources");
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::signature::RsaPublicKeyComponents;
    use serde_json::json;
    use std::time::Duration;

    /// An HS256 token over `claims`.
    pub(crate) fn hs256(secret: &str, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let sig = ring::hmac::sign(&key, format!("{h}.{c}").as_bytes());
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
        let forged = hs256("other", &json!({"sub": "u1", "exp": now + 60}));
        assert!(v.claims(&forged, now).is_none());
        let expired = hs256("s3cret", &json!({"sub": "u1", "exp": now - 31}));
        assert!(v.claims(&expired, now).is_none());
        let within_leeway = hs256("s3cret", &json!({"sub": "u1", "exp": now - 10}));
        assert!(v.claims(&within_leeway, now).is_some());
        let early = hs256(
            "s3cret",
            &json!({"sub": "u1", "exp": now + 60, "nbf": now + 100}),
        );
        assert!(v.claims(&early, now).is_none());
        let header = format!("Bearer {good}");
        assert!(v.claims_from_authorization(header.as_bytes()).is_none()); // expired in real time
        let fresh = hs256(
            "s3cret",
            &json!({"sub": "u2", "exp": vexil_jwt::unix_now() + 60}),
        );
        let header = format!("bearer {fresh}");
        assert_eq!(
            v.claims_from_authorization(header.as_bytes()).unwrap()["sub"],
            "u2"
        );
        assert!(v.claims_from_authorization(b"Basic abc").is_none());
        assert!(v.claims_from_authorization(b"Bearer \xff").is_none());
        // `exp` is required (unless jwt_require_exp = false) and must be an integer.
        let no_exp = hs256("s3cret", &json!({"sub": "u1"}));
        assert!(v.claims(&no_exp, now).is_none());
        let fractional = hs256("s3cret", &json!({"sub": "u1", "exp": now as f64 + 60.5}));
        assert!(v.claims(&fractional, now).is_none());
        let string = hs256(
            "s3cret",
            &json!({"sub": "u1", "exp": (now + 60).to_string()}),
        );
        assert!(v.claims(&string, now).is_none());
        let optional = verifier(ContextOptions {
            jwt_require_exp: false,
            ..secret_opts()
        });
        assert_eq!(optional.claims(&no_exp, now).unwrap()["sub"], "u1");
        assert!(optional.claims(&string, now).is_none());
    }

    #[test]
    fn alg_none_and_tampering_are_refused() {
        let v = verifier(secret_opts());
        let good = hs256("s3cret", &json!({"sub": "u1", "exp": 60}));
        let parts: Vec<&str> = good.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        assert!(
            v.claims(&format!("{none_header}.{}.", parts[1]), 0)
                .is_none()
        );
        let other_claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin","exp":60}"#);
        assert!(
            v.claims(&format!("{}.{other_claims}.{}", parts[0], parts[2]), 0)
                .is_none()
        );
        assert!(v.claims(&good, 0).is_some());
    }

    #[test]
    fn unverified_mode_decodes_anything() {
        let v = verifier(ContextOptions {
            jwt_verify: false,
            ..ContextOptions::default()
        });
        let forged = hs256("whatever", &json!({"sub": "u9", "tier": 3, "exp": 100}));
        let claims = v.claims(&forged, 0).unwrap();
        assert_eq!(claims["sub"], "u9");
        assert_eq!(claims["tier"], 3);
        // The claim rules still hold.
        assert!(v.claims(&forged, 200).is_none());
    }

    #[test]
    fn rs256_with_pem_and_jwks() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let pk8 = std::fs::read(format!("{fixtures}/jwt-rs256-private.pk8")).unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&pk8).unwrap();
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k1"}"#);
        let c = URL_SAFE_NO_PAD.encode(r#"{"sub":"rsa-user","exp":100}"#);
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

        let components: RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
        let jwks = json!({"keys": [
            {"kty": "EC", "kid": "ignored"},
            {"kty": "RSA", "kid": "k1", "n": URL_SAFE_NO_PAD.encode(&components.n),
             "e": URL_SAFE_NO_PAD.encode(&components.e)}
        ]});
        let dir = std::env::temp_dir().join(format!("vexil-proxy-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jwks.json");
        std::fs::write(&file, jwks.to_string()).unwrap();
        let v = verifier(ContextOptions {
            jwt_jwks_file: Some(file.clone()),
            ..ContextOptions::default()
        });
        assert_eq!(v.claims(&token, 0).unwrap()["sub"], "rsa-user");
        let other = dir.join("jwks-other.json");
        std::fs::write(&other, jwks.to_string().replace("\"k1\"", "\"k2\"")).unwrap();
        let wrong_kid = verifier(ContextOptions {
            jwt_jwks_file: Some(other),
            ..ContextOptions::default()
        });
        assert!(wrong_kid.claims(&token, 0).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_keys_are_reported() {
        let e = JwtVerifier::load(&ContextOptions {
            jwt_rs256_public_key: Some("/nonexistent.pem".into()),
            jwt_es256_public_key: Some("/nonexistent-ec.pem".into()),
            ..ContextOptions::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("context_options.jwt_rs256_public_key: /nonexistent.pem"),
            "{e}"
        );
        assert!(
            e.iter()
                .nth(1)
                .unwrap()
                .to_string()
                .starts_with("context_options.jwt_es256_public_key: /nonexistent-ec.pem"),
            "{e}"
        );
    }

    #[test]
    fn every_option_reaches_the_verifier() {
        let opts = ContextOptions {
            jwt_hs256_secret: Some("s".into()),
            jwt_hs256_secret_file: Some("/s".into()),
            jwt_rs256_public_key: Some("/r.pem".into()),
            jwt_es256_public_key: Some("/e.pem".into()),
            jwt_jwks_file: Some("/j.json".into()),
            jwt_jwks_url: Some("https://idp/jwks".into()),
            jwt_jwks_refresh: Duration::from_secs(7),
            jwt_jwks_ca_file: Some("/ca.pem".into()),
            jwt_leeway: Duration::from_secs(3),
            jwt_max_bytes: 4096,
            jwt_require_exp: false,
            jwt_audiences: vec!["app".into()],
            jwt_issuers: vec!["https://idp".into()],
            ..ContextOptions::default()
        };
        let c = verifier_config(&opts);
        let labels: Vec<&str> = c.keys.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "context_options.jwt_hs256_secret",
                "context_options.jwt_hs256_secret_file",
                "context_options.jwt_rs256_public_key",
                "context_options.jwt_es256_public_key",
                "context_options.jwt_jwks_file",
                "context_options.jwt_jwks_url",
            ]
        );
        assert_eq!(c.leeway, Duration::from_secs(3));
        assert_eq!(c.jwks_refresh, Duration::from_secs(7));
        assert_eq!(c.jwks_ca_file, Some("/ca.pem".into()));
        assert_eq!(c.limits.max_token_bytes, 4096);
        assert!(!c.require_exp);
        assert_eq!(c.audiences, ["app"]);
        assert_eq!(c.issuers, ["https://idp"]);
    }
}
