//! Every shape of token: algorithms and keys, time claims, audience and issuer, list claims,
//! sizes and malformed input.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use vexil_jwt::{
    Algorithm, JwtError, KeySource, KeySpec, Limits, ListClaim, Verifier, VerifierConfig,
    bearer_token,
};

const SECRET: &[u8] = b"an-hs256-secret-of-32-bytes-or-more";
const NOW: i64 = 1_700_000_000;

fn config(sources: Vec<KeySource>) -> VerifierConfig {
    VerifierConfig {
        keys: sources
            .into_iter()
            .enumerate()
            .map(|(i, s)| KeySpec::new(format!("key{i}"), s))
            .collect(),
        ..VerifierConfig::default()
    }
}

fn hs_verifier() -> Verifier {
    Verifier::new(&config(vec![KeySource::HmacSecret(SECRET.to_vec())])).unwrap()
}

fn jwks_verifier(dir: &TempDir, keys: Vec<Value>) -> Verifier {
    let path = dir.write("jwks.json", json!({ "keys": keys }).to_string());
    Verifier::new(&config(vec![KeySource::JwksFile(path)])).unwrap()
}

fn pem_verifier(dir: &TempDir, pem: &str, alg: Option<Algorithm>) -> Verifier {
    let path = dir.write("key.pem", pem);
    Verifier::new(&config(vec![KeySource::PublicKeyFile {
        path,
        algorithm: alg,
    }]))
    .unwrap()
}

/// Claims valid at [`NOW`].
fn claims() -> Value {
    json!({"sub": "ada", "exp": NOW + 600})
}

fn hs(claims: &Value) -> String {
    token(&Hmac(SECRET.to_vec()), None, claims)
}

#[test]
fn hs256_accepted_and_signatures_must_match_in_full() {
    let v = hs_verifier();
    let good = hs(&claims());
    assert_eq!(v.verify_at(&good, NOW).unwrap().subject(), Some("ada"));
    let (signed, sig) = good.rsplit_once('.').unwrap();
    let sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    let with = |s: &[u8]| format!("{signed}.{}", b64(s));
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
        assert_eq!(v.verify_at(&forged, NOW), Err(JwtError::BadSignature));
    }
    let other_key = token(&Hmac(b"another-secret".to_vec()), None, &claims());
    assert_eq!(v.verify_at(&other_key, NOW), Err(JwtError::BadSignature));
    // A tampered payload.
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(json!({"sub": "root", "exp": NOW + 600}).to_string()),
        parts[2]
    );
    assert_eq!(v.verify_at(&tampered, NOW), Err(JwtError::BadSignature));
}

#[test]
fn alg_none_and_unconfigured_algorithms_are_refused() {
    let v = hs_verifier();
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string())
    );
    let e = v.verify_at(&none, NOW).unwrap_err();
    assert!(
        matches!(e, JwtError::AlgorithmRefused(a) if a.as_str() == "none"),
        "{e}"
    );
    assert_eq!(e.to_string(), "algorithm none is not accepted");
    // Signed with the right secret, but the header claims another algorithm.
    for alg in ["HS512", "hs256", "RS256 ", "PS256", "EdDSA", "NONE"] {
        let t = token_with_header(&Hmac(SECRET.to_vec()), &json!({"alg": alg}), &claims());
        let e = v.verify_at(&t, NOW).unwrap_err();
        assert!(
            matches!(
                e,
                JwtError::AlgorithmRefused(_) | JwtError::NoKeyForAlgorithm(_)
            ),
            "{alg}: {e}"
        );
    }
    // RS256 and ES256 are known algorithms, but no key of theirs is configured.
    let rs = token(&rsa_keys()[0], None, &claims());
    assert_eq!(
        v.verify_at(&rs, NOW),
        Err(JwtError::NoKeyForAlgorithm(Algorithm::RS256))
    );
    let es = token(&Ec::generate(), None, &claims());
    assert_eq!(
        v.verify_at(&es, NOW),
        Err(JwtError::NoKeyForAlgorithm(Algorithm::ES256))
    );
}

#[test]
fn an_rsa_public_key_is_never_an_hmac_secret() {
    let dir = TempDir::new("confusion");
    let rsa = &rsa_keys()[0];
    let v = pem_verifier(&dir, &rsa.spki_pem, None);
    assert_eq!(
        v.verify_at(&token(rsa, None, &claims()), NOW)
            .unwrap()
            .subject(),
        Some("ada")
    );
    // The classic attack: HS256 "signed" with the public key's bytes in any form.
    for secret in [
        rsa.spki_pem.as_bytes().to_vec(),
        rsa.pkcs1_der.clone(),
        rsa.n.clone(),
        rsa.pkcs1_pem.as_bytes().to_vec(),
    ] {
        let forged = token(&Hmac(secret), None, &claims());
        assert_eq!(
            v.verify_at(&forged, NOW),
            Err(JwtError::NoKeyForAlgorithm(Algorithm::HS256))
        );
    }
    // The same through a JWKS whose RSA key is named: the kid picks an RS256 key, the token says
    // HS256.
    let v = jwks_verifier(&dir, vec![rsa.jwk(Some("rsa-1"))]);
    let forged = token(&Hmac(rsa.n.clone()), Some("rsa-1"), &claims());
    assert_eq!(
        v.verify_at(&forged, NOW),
        Err(JwtError::KeyAlgorithmMismatch {
            key: Algorithm::RS256,
            token: Algorithm::HS256
        })
    );
    // And an HS256 key in a JWKS does not verify an RS256 token of the same kid.
    let v = jwks_verifier(
        &dir,
        vec![json!({"kty": "oct", "kid": "k", "k": b64(SECRET)})],
    );
    let rs = token(rsa, Some("k"), &claims());
    assert!(matches!(
        v.verify_at(&rs, NOW),
        Err(JwtError::KeyAlgorithmMismatch { .. })
    ));
}

#[test]
fn rs256_from_spki_pkcs1_and_jwk() {
    let dir = TempDir::new("rs256");
    let [rsa, other] = rsa_keys();
    let t = token(rsa, None, &claims());
    for v in [
        pem_verifier(&dir, &rsa.spki_pem, Some(Algorithm::RS256)),
        pem_verifier(&dir, &rsa.pkcs1_pem, Some(Algorithm::RS256)),
        jwks_verifier(&dir, vec![rsa.jwk(None)]),
    ] {
        assert_eq!(v.verify_at(&t, NOW).unwrap().subject(), Some("ada"));
        let wrong = token(other, None, &claims());
        assert_eq!(v.verify_at(&wrong, NOW), Err(JwtError::BadSignature));
    }
    // The PEM of an RSA key given where an ES256 key is expected: refused at load.
    let path = dir.write("rsa.pem", &rsa.spki_pem);
    let e = Verifier::new(&config(vec![KeySource::PublicKeyFile {
        path,
        algorithm: Some(Algorithm::ES256),
    }]))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("a RS256 key, where a ES256 key is expected"),
        "{e}"
    );
}

#[test]
fn es256_good_and_bad_signatures() {
    let dir = TempDir::new("es256");
    let ec = Ec::generate();
    let t = token(&ec, None, &claims());
    for v in [
        pem_verifier(&dir, &ec.spki_pem, Some(Algorithm::ES256)),
        pem_verifier(&dir, &ec.spki_pem, None),
        jwks_verifier(&dir, vec![ec.jwk(Some("ec-1"))]),
    ] {
        assert_eq!(v.verify_at(&t, NOW).unwrap().subject(), Some("ada"));
        // Another key's signature, a flipped bit, a truncated signature.
        let other = token(&Ec::generate(), None, &claims());
        assert_eq!(v.verify_at(&other, NOW), Err(JwtError::BadSignature));
        let (signed, sig) = t.rsplit_once('.').unwrap();
        let mut raw_sig =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        raw_sig[10] ^= 4;
        let flipped = format!("{signed}.{}", b64(&raw_sig));
        assert_eq!(v.verify_at(&flipped, NOW), Err(JwtError::BadSignature));
        let short = format!("{signed}.{}", b64(&raw_sig[..63]));
        assert_eq!(v.verify_at(&short, NOW), Err(JwtError::BadSignature));
    }
    // An ASN.1 (DER) ECDSA signature is not the JWS form (r || s): refused.
    let v = pem_verifier(&dir, &ec.spki_pem, None);
    struct Asn1<'a>(&'a Ec);
    impl Signer for Asn1<'_> {
        fn alg(&self) -> &'static str {
            "ES256"
        }
        fn sign(&self, message: &[u8]) -> Vec<u8> {
            let _ = self.0;
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &rng,
            )
            .unwrap();
            let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                pkcs8.as_ref(),
                &rng,
            )
            .unwrap();
            pair.sign(&rng, message).unwrap().as_ref().to_vec()
        }
    }
    let der = token(&Asn1(&ec), None, &claims());
    assert_eq!(v.verify_at(&der, NOW), Err(JwtError::BadSignature));
}

#[test]
fn exp_is_required_and_must_be_an_integer() {
    let v = hs_verifier();
    let no_exp = hs(&json!({"sub": "ada"}));
    assert_eq!(
        v.verify_at(&no_exp, NOW),
        Err(JwtError::MissingClaim("exp"))
    );
    let optional = Verifier::new(&VerifierConfig {
        require_exp: false,
        ..config(vec![KeySource::HmacSecret(SECRET.to_vec())])
    })
    .unwrap();
    assert!(optional.verify_at(&no_exp, NOW).is_ok());
    // Fractional, float, string, null, boolean, object: refused (never ignored), even when
    // `exp` is optional.
    for exp in [
        json!(NOW as f64 + 600.5),
        json!(1.0e10),
        json!((NOW + 600) as f64),
        json!((NOW + 600).to_string()),
        json!(null),
        json!(true),
        json!({"at": NOW + 600}),
    ] {
        let t = hs(&json!({"sub": "ada", "exp": exp}));
        for v in [&v, &optional] {
            let e = v.verify_at(&t, NOW).unwrap_err();
            assert!(
                matches!(&e, JwtError::InvalidClaim { claim, .. } if claim == "exp"),
                "{exp}: {e}"
            );
        }
    }
    // Past, and beyond i64: far future.
    let past = hs(&json!({"sub": "ada", "exp": NOW - 3600}));
    assert_eq!(v.verify_at(&past, NOW), Err(JwtError::Expired));
    let huge = hs(&json!({"sub": "ada", "exp": u64::MAX}));
    assert!(v.verify_at(&huge, NOW).is_ok());
    let negative = hs(&json!({"sub": "ada", "exp": -1}));
    assert_eq!(v.verify_at(&negative, NOW), Err(JwtError::Expired));
}

#[test]
fn leeway_edges_on_exp_nbf_and_iat() {
    let leeway = 30;
    let v = hs_verifier(); // default leeway: 30 s
    let at = |c: Value| v.verify_at(&hs(&c), NOW);
    // exp: accepted while now < exp + leeway.
    assert_eq!(at(json!({"exp": NOW - leeway})), Err(JwtError::Expired));
    assert!(at(json!({"exp": NOW - leeway + 1})).is_ok());
    assert!(at(json!({"exp": NOW})).is_ok());
    // nbf: accepted once now + leeway >= nbf.
    assert!(at(json!({"exp": NOW + 600, "nbf": NOW + leeway})).is_ok());
    assert_eq!(
        at(json!({"exp": NOW + 600, "nbf": NOW + leeway + 1})),
        Err(JwtError::NotYetValid)
    );
    assert_eq!(
        at(json!({"exp": NOW + 600, "nbf": NOW + 3600})),
        Err(JwtError::NotYetValid)
    );
    assert!(matches!(
        at(json!({"exp": NOW + 600, "nbf": "soon"})),
        Err(JwtError::InvalidClaim { .. })
    ));
    assert!(matches!(
        at(json!({"exp": NOW + 600, "nbf": 1.5})),
        Err(JwtError::InvalidClaim { .. })
    ));
    // iat: not ahead of now + leeway.
    assert!(at(json!({"exp": NOW + 600, "iat": NOW + leeway})).is_ok());
    assert_eq!(
        at(json!({"exp": NOW + 600, "iat": NOW + leeway + 1})),
        Err(JwtError::IssuedInFuture)
    );
    assert!(matches!(
        at(json!({"exp": NOW + 600, "iat": "yesterday"})),
        Err(JwtError::InvalidClaim { .. })
    ));

    // Leeway zero, and a larger one.
    for (secs, ok_exp, bad_exp) in [(0, NOW + 1, NOW), (120, NOW - 119, NOW - 120)] {
        let v = Verifier::new(&VerifierConfig {
            leeway: Duration::from_secs(secs),
            ..config(vec![KeySource::HmacSecret(SECRET.to_vec())])
        })
        .unwrap();
        assert!(v.verify_at(&hs(&json!({"exp": ok_exp})), NOW).is_ok());
        assert_eq!(
            v.verify_at(&hs(&json!({"exp": bad_exp})), NOW),
            Err(JwtError::Expired)
        );
    }
    // Real time: `verify` uses the clock.
    let fresh = hs(&json!({"exp": now() + 60}));
    assert!(v.verify(&fresh).is_ok());
    assert_eq!(
        v.verify(&hs(&json!({"exp": now() - 3600}))),
        Err(JwtError::Expired)
    );
}

#[test]
fn audience_and_issuer_when_configured() {
    let v = Verifier::new(&VerifierConfig {
        audiences: vec!["vexil".into(), "vexil-admin".into()],
        issuers: vec!["https://idp.example".into()],
        ..config(vec![KeySource::HmacSecret(SECRET.to_vec())])
    })
    .unwrap();
    let with = |extra: Value| {
        let mut c = json!({"sub": "ada", "exp": NOW + 600});
        for (k, val) in extra.as_object().unwrap() {
            c[k] = val.clone();
        }
        v.verify_at(&hs(&c), NOW)
    };
    let iss = "https://idp.example";
    assert!(with(json!({"aud": "vexil", "iss": iss})).is_ok());
    assert!(with(json!({"aud": ["other", "vexil-admin"], "iss": iss})).is_ok());
    assert_eq!(
        with(json!({"aud": "other", "iss": iss})),
        Err(JwtError::AudienceMismatch)
    );
    assert_eq!(
        with(json!({"aud": [], "iss": iss})),
        Err(JwtError::AudienceMismatch)
    );
    assert_eq!(
        with(json!({"aud": "VEXIL", "iss": iss})),
        Err(JwtError::AudienceMismatch)
    );
    assert_eq!(
        with(json!({"iss": iss})),
        Err(JwtError::MissingClaim("aud"))
    );
    for bad in [json!(5), json!(null), json!(["vexil", 5]), json!({"a": 1})] {
        assert!(
            matches!(
                with(json!({"aud": bad, "iss": iss})),
                Err(JwtError::InvalidClaim { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(
        with(json!({"aud": "vexil", "iss": "https://evil.example"})),
        Err(JwtError::IssuerMismatch)
    );
    assert_eq!(
        with(json!({"aud": "vexil"})),
        Err(JwtError::MissingClaim("iss"))
    );
    assert!(matches!(
        with(json!({"aud": "vexil", "iss": [iss]})),
        Err(JwtError::InvalidClaim { .. })
    ));
    // Not configured: `aud` and `iss` are not looked at.
    let open = hs_verifier();
    assert!(
        open.verify_at(&hs(&json!({"exp": NOW + 1, "aud": 5, "iss": false})), NOW)
            .is_ok()
    );
}

#[test]
fn keys_are_chosen_by_kid() {
    let dir = TempDir::new("kid");
    let [a, b] = rsa_keys();
    let ec = Ec::generate();
    let v = jwks_verifier(
        &dir,
        vec![a.jwk(Some("a")), b.jwk(Some("b")), ec.jwk(Some("e"))],
    );
    assert!(v.verify_at(&token(a, Some("a"), &claims()), NOW).is_ok());
    assert!(v.verify_at(&token(b, Some("b"), &claims()), NOW).is_ok());
    assert!(v.verify_at(&token(&ec, Some("e"), &claims()), NOW).is_ok());
    // The wrong key's id, an unknown id, no id among two RS256 keys.
    assert_eq!(
        v.verify_at(&token(a, Some("b"), &claims()), NOW),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        v.verify_at(&token(a, Some("zzz"), &claims()), NOW),
        Err(JwtError::UnknownKid)
    );
    assert_eq!(
        v.verify_at(&token(a, None, &claims()), NOW),
        Err(JwtError::AmbiguousKey {
            alg: Algorithm::RS256,
            count: 2
        })
    );
    // Without kid, the one ES256 key is used.
    assert!(v.verify_at(&token(&ec, None, &claims()), NOW).is_ok());
    // A kid that is not a string: malformed header.
    let t = token_with_header(a, &json!({"alg": "RS256", "kid": 7}), &claims());
    assert!(matches!(v.verify_at(&t, NOW), Err(JwtError::Malformed(_))));

    // Keys without ids (PEM files, secrets): a token's kid is ignored.
    let path = dir.write("a.pem", &a.spki_pem);
    let v = Verifier::new(&config(vec![
        KeySource::PublicKeyFile {
            path,
            algorithm: None,
        },
        KeySource::HmacSecret(SECRET.to_vec()),
    ]))
    .unwrap();
    assert!(
        v.verify_at(&token(a, Some("anything"), &claims()), NOW)
            .is_ok()
    );
    assert!(v.verify_at(&token(a, None, &claims()), NOW).is_ok());
    assert!(
        v.verify_at(&token(&Hmac(SECRET.to_vec()), Some("x"), &claims()), NOW)
            .is_ok()
    );
    // A PEM key given an id by the configuration is matched by it.
    let path = dir.write("b.pem", &b.spki_pem);
    let mut spec = KeySpec::new(
        "b",
        KeySource::PublicKeyFile {
            path,
            algorithm: None,
        },
    );
    spec.kid = Some("kb".into());
    let v = Verifier::new(&VerifierConfig {
        keys: vec![spec],
        ..VerifierConfig::default()
    })
    .unwrap();
    assert!(v.verify_at(&token(b, Some("kb"), &claims()), NOW).is_ok());
    assert!(v.verify_at(&token(b, None, &claims()), NOW).is_ok());
    assert_eq!(
        v.verify_at(&token(b, Some("other"), &claims()), NOW),
        Err(JwtError::UnknownKid)
    );
}

#[test]
fn list_claims_string_array_empty_missing() {
    let v = hs_verifier();
    let read = |envs: Option<Value>| {
        let mut c = claims();
        if let Some(e) = envs {
            c["envs"] = e;
        }
        v.verify_at(&hs(&c), NOW).unwrap()
    };
    let c = read(Some(json!(["dev", "prod"])));
    assert_eq!(
        c.string_list("envs").unwrap(),
        ListClaim::Values(vec!["dev", "prod"])
    );
    let c = read(Some(json!("prod")));
    assert_eq!(
        c.string_list("envs").unwrap(),
        ListClaim::Values(vec!["prod"])
    );
    let c = read(Some(json!([])));
    assert_eq!(c.string_list("envs").unwrap(), ListClaim::Values(vec![]));
    let c = read(None);
    assert_eq!(c.string_list("envs").unwrap(), ListClaim::Absent);
    for bad in [
        json!(null),
        json!(1),
        json!({"a": "b"}),
        json!(["dev", 1]),
        json!([null]),
        json!(true),
    ] {
        let c = read(Some(bad.clone()));
        let e = c.string_list("envs").unwrap_err();
        assert_eq!(
            e.to_string(),
            "claim \"envs\" must be a string or an array of strings",
            "{bad}"
        );
    }
}

#[test]
fn sizes_are_capped() {
    let v = hs_verifier();
    // Over 8 KiB: refused before anything is decoded.
    let big = hs(&json!({"exp": NOW + 600, "pad": "x".repeat(8 << 10)}));
    assert_eq!(
        v.verify_at(&big, NOW),
        Err(JwtError::TooLarge {
            what: "token",
            limit: 8192
        })
    );
    let junk = format!("{}.x.y", "A".repeat(9000));
    assert!(matches!(
        v.verify_at(&junk, NOW),
        Err(JwtError::TooLarge { what: "token", .. })
    ));
    // The header and the payload have their own caps.
    let v = Verifier::new(&VerifierConfig {
        limits: Limits {
            max_token_bytes: 64 << 10,
            max_header_bytes: 256,
            max_payload_bytes: 1024,
            ..Limits::default()
        },
        ..config(vec![KeySource::HmacSecret(SECRET.to_vec())])
    })
    .unwrap();
    let big_header = token_with_header(
        &Hmac(SECRET.to_vec()),
        &json!({"alg": "HS256", "x5u": "x".repeat(300)}),
        &claims(),
    );
    assert_eq!(
        v.verify_at(&big_header, NOW),
        Err(JwtError::TooLarge {
            what: "header",
            limit: 256
        })
    );
    let big_payload = hs(&json!({"exp": NOW + 600, "pad": "x".repeat(1100)}));
    assert_eq!(
        v.verify_at(&big_payload, NOW),
        Err(JwtError::TooLarge {
            what: "payload",
            limit: 1024
        })
    );
    let fits = hs(&json!({"exp": NOW + 600, "pad": "x".repeat(900)}));
    assert!(v.verify_at(&fits, NOW).is_ok());
    // A header between the stack buffer and the cap still works.
    let v = hs_verifier();
    let long_header = token_with_header(
        &Hmac(SECRET.to_vec()),
        &json!({"alg": "HS256", "x5u": "x".repeat(1500)}),
        &claims(),
    );
    assert!(v.verify_at(&long_header, NOW).is_ok());
    // An oversized signature segment.
    let (signed, _) = hs(&claims())
        .rsplit_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let long_sig = format!("{signed}.{}", b64(vec![0u8; 2000]));
    assert_eq!(v.verify_at(&long_sig, NOW), Err(JwtError::BadSignature));
    // A limit of zero is a configuration error.
    let zero = VerifierConfig {
        limits: Limits {
            max_token_bytes: 0,
            ..Limits::default()
        },
        ..config(vec![KeySource::HmacSecret(SECRET.to_vec())])
    };
    assert!(Verifier::new(&zero).is_err());
}

#[test]
fn malformed_tokens_are_refused_with_a_reason() {
    let v = hs_verifier();
    let good = hs(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let sig = |h: &str, p: &str| {
        let signed = format!("{h}.{p}");
        let s = Hmac(SECRET.to_vec()).sign(signed.as_bytes());
        format!("{signed}.{}", b64(s))
    };
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("one segment", "abc".into()),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{good}.x")),
        ("header not base64url", sig("!!!", parts[1])),
        ("header padded", sig(&format!("{}=", parts[0]), parts[1])),
        (
            "header standard base64",
            sig("eyJhbGciOiJIUzI1NiJ9+/", parts[1]),
        ),
        ("header not JSON", sig(&b64("alg=HS256"), parts[1])),
        ("header an array", sig(&b64(r#"["HS256"]"#), parts[1])),
        (
            "header without alg",
            sig(&b64(r#"{"typ":"JWT"}"#), parts[1]),
        ),
        ("alg not a string", sig(&b64(r#"{"alg":256}"#), parts[1])),
        (
            "alg twice",
            sig(&b64(r#"{"alg":"HS256","alg":"none"}"#), parts[1]),
        ),
        ("payload not base64url", sig(parts[0], "%%%")),
        ("payload not JSON", sig(parts[0], &b64("exp=1"))),
        ("payload an array", sig(parts[0], &b64("[1,2]"))),
        ("payload a string", sig(parts[0], &b64("\"x\""))),
        (
            "signature not base64url",
            format!("{}.{}.***", parts[0], parts[1]),
        ),
    ];
    for (what, t) in cases {
        let e = v.verify_at(&t, NOW).unwrap_err();
        assert!(
            matches!(e, JwtError::Malformed(_) | JwtError::BadSignature),
            "{what}: {e:?}"
        );
    }
    // A header with `crit`: refused.
    let crit = token_with_header(
        &Hmac(SECRET.to_vec()),
        &json!({"alg": "HS256", "crit": ["exp"]}),
        &claims(),
    );
    assert_eq!(v.verify_at(&crit, NOW), Err(JwtError::CriticalHeader));
}

#[test]
fn errors_never_quote_the_token() {
    let v = hs_verifier();
    let marker = "SECRET-MARKER-42";
    let tokens = [
        token_with_header(&Hmac(SECRET.to_vec()), &json!({"alg": marker}), &claims()),
        token_with_header(
            &Hmac(b"x".to_vec()),
            &json!({"alg": "HS256", "kid": marker}),
            &json!({"sub": marker, "exp": NOW + 600}),
        ),
        hs(&json!({"sub": marker, "exp": marker})),
        hs(&json!({"sub": marker})),
        format!("{marker}.{marker}.{marker}"),
        raw(
            &format!("{{\"alg\":\"HS256\",\"x\":\"{marker}\""),
            "{}",
            b"",
        ),
    ];
    for t in tokens {
        let e = v.verify_at(&t, NOW).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(marker), "{shown}");
    }
}

#[test]
fn unverified_mode_skips_only_the_signature() {
    let v = Verifier::without_signature_check(&VerifierConfig::default()).unwrap();
    let forged = token(&Hmac(b"whatever".to_vec()), None, &claims());
    assert_eq!(v.verify_at(&forged, NOW).unwrap().subject(), Some("ada"));
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none"}"#),
        b64(claims().to_string())
    );
    assert_eq!(
        v.verify_at(&none, NOW).unwrap().get("exp"),
        Some(&json!(NOW + 600))
    );
    // Claim rules and sizes still hold.
    let expired = token(&Hmac(b"x".to_vec()), None, &json!({"exp": NOW - 3600}));
    assert_eq!(v.verify_at(&expired, NOW), Err(JwtError::Expired));
    let no_exp = token(&Hmac(b"x".to_vec()), None, &json!({"sub": "x"}));
    assert_eq!(
        v.verify_at(&no_exp, NOW),
        Err(JwtError::MissingClaim("exp"))
    );
    assert!(v.verify_at("a.b", NOW).is_err());
    assert!(v.key_set().is_empty());
}

#[test]
fn bearer_values() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer  abc "), Some("abc"));
    assert_eq!(bearer_token("BEARER abc"), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("Bearerabc"), None);
}

#[test]
fn key_sources_report_their_problems() {
    let dir = TempDir::new("sources");
    // Every failing source is reported, with its label.
    let e = Verifier::new(&VerifierConfig {
        keys: vec![
            KeySpec::new(
                "jwt.rs256_public_key",
                KeySource::PublicKeyFile {
                    path: "/nonexistent.pem".into(),
                    algorithm: Some(Algorithm::RS256),
                },
            ),
            KeySpec::new("jwt.hs256_secret", KeySource::HmacSecret(Vec::new())),
            KeySpec::new(
                "jwt.jwks_file",
                KeySource::JwksFile(dir.write("bad.json", "{\"keys\": 3}")),
            ),
        ],
        ..VerifierConfig::default()
    })
    .unwrap_err();
    assert_eq!(e.problems.len(), 3, "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("jwt.rs256_public_key: /nonexistent.pem: "),
        "{text}"
    );
    assert!(
        text.contains("jwt.hs256_secret: the HMAC secret is empty"),
        "{text}"
    );
    assert!(text.contains("jwt.jwks_file: "), "{text}");
    assert!(Verifier::new(&VerifierConfig::default()).is_err());

    // A secret file: its bytes without the final newline.
    let path = dir.write("secret", [SECRET, b"\n"].concat());
    let v = Verifier::new(&config(vec![KeySource::HmacSecretFile(path)])).unwrap();
    assert!(v.verify_at(&hs(&claims()), NOW).is_ok());
    let path = dir.write("empty", "\n");
    assert!(Verifier::new(&config(vec![KeySource::HmacSecretFile(path)])).is_err());

    // A private key where the public key belongs.
    let path = dir.write(
        "private.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let e = Verifier::new(&config(vec![KeySource::PublicKeyFile {
        path,
        algorithm: None,
    }]))
    .unwrap_err();
    assert!(e.to_string().contains("never the private one"), "{e}");
    // Debug output does not show secrets.
    let c = config(vec![KeySource::HmacSecret(SECRET.to_vec())]);
    assert!(!format!("{c:?}").contains("an-hs256-secret"));
    let v = hs_verifier();
    assert!(!format!("{v:?} {:?}", v.key_set()).contains("an-hs256-secret"));
}
