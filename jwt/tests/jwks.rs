//! JWKS sources: files and URLs (a local HTTP(S) server), the refresh that keeps the last good
//! set, the refresh that rotates keys, and the limits of a fetch.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use vexil_jwt::{JwtError, KeySource, KeySpec, Limits, Verifier, VerifierConfig};

fn claims() -> Value {
    json!({"sub": "ada", "exp": now() + 600})
}

fn jwks(keys: Vec<Value>) -> Value {
    json!({ "keys": keys })
}

fn url_config(url: String) -> VerifierConfig {
    VerifierConfig {
        keys: vec![KeySpec::new("jwt.jwks_url", KeySource::JwksUrl(url))],
        jwks_refresh: Duration::ZERO,
        jwks_fetch_timeout: Duration::from_secs(5),
        ..VerifierConfig::default()
    }
}

#[test]
fn jwks_file_skips_foreign_keys_and_refreshes() {
    let dir = TempDir::new("jwks-file");
    let [a, b] = rsa_keys();
    let ec = Ec::generate();
    let doc = jwks(vec![
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "AAAA"}),
        json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AAAA", "y": "AAAA"}),
        json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AAAA", "e": "AQAB"}),
        json!({"kty": "RSA", "kid": "rs512", "alg": "RS512", "n": "AAAA", "e": "AQAB"}),
        a.jwk(Some("a")),
        ec.jwk(Some("e")),
        json!({"kty": "oct", "kid": "h", "k": b64(b"jwks-secret"), "alg": "HS256"}),
    ]);
    let path = dir.write("jwks.json", doc.to_string());
    let v = Verifier::new(&VerifierConfig {
        keys: vec![KeySpec::new("jwks", KeySource::JwksFile(path.clone()))],
        jwks_refresh: Duration::ZERO,
        ..VerifierConfig::default()
    })
    .unwrap();
    assert_eq!(v.key_set().keys().len(), 3);
    assert!(v.verify(&token(a, Some("a"), &claims())).is_ok());
    assert!(v.verify(&token(&ec, Some("e"), &claims())).is_ok());
    let hs = token(&Hmac(b"jwks-secret".to_vec()), Some("h"), &claims());
    assert!(v.verify(&hs).is_ok());
    assert_eq!(
        v.verify(&token(b, Some("b"), &claims())),
        Err(JwtError::UnknownKid)
    );

    // A broken file: the refresh fails, the last good keys stay.
    dir.write("jwks.json", "{not json");
    let e = v.refresh_now().unwrap_err();
    assert!(e.to_string().starts_with("jwks: "), "{e}");
    assert!(v.verify(&token(a, Some("a"), &claims())).is_ok());
    // Rotated: b in, a out.
    dir.write("jwks.json", jwks(vec![b.jwk(Some("b"))]).to_string());
    v.refresh_now().unwrap();
    assert!(v.verify(&token(b, Some("b"), &claims())).is_ok());
    assert_eq!(
        v.verify(&token(a, Some("a"), &claims())),
        Err(JwtError::UnknownKid)
    );
    // Removed: still the last good keys.
    std::fs::remove_file(&path).unwrap();
    assert!(v.refresh_now().is_err());
    assert!(v.verify(&token(b, Some("b"), &claims())).is_ok());
}

#[test]
fn bad_jwks_documents_are_refused() {
    let dir = TempDir::new("jwks-bad");
    let [a, _] = rsa_keys();
    let load = |doc: String, limits: Limits| {
        let path = dir.write("jwks.json", doc);
        Verifier::new(&VerifierConfig {
            keys: vec![KeySpec::new("jwks", KeySource::JwksFile(path))],
            limits,
            ..VerifierConfig::default()
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let d = Limits::default;
    let cases = [
        ("not JSON", "[".to_string(), "not JSON"),
        ("no keys", "{}".to_string(), "expected a JWKS document"),
        (
            "no usable key",
            jwks(vec![json!({"kty": "OKP", "x": "AA"})]).to_string(),
            "no RS256, ES256 or HS256 key",
        ),
        (
            "duplicate kid",
            jwks(vec![a.jwk(Some("x")), a.jwk(Some("x"))]).to_string(),
            "keys[1]: a kid used by an earlier key",
        ),
        (
            "RSA without n",
            jwks(vec![json!({"kty": "RSA", "e": "AQAB"})]).to_string(),
            "keys[0]: missing \"n\"",
        ),
        (
            "small RSA key",
            jwks(vec![
                json!({"kty": "RSA", "n": b64([0xffu8; 128]), "e": "AQAB"}),
            ])
            .to_string(),
            "1024 bits",
        ),
        (
            "EC point of the wrong size",
            jwks(vec![
                json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
            ])
            .to_string(),
            "not 32 bytes",
        ),
        (
            "kid not a string",
            jwks(vec![json!({"kty": "oct", "k": "AAAA", "kid": 5})]).to_string(),
            "\"kid\" is not a string",
        ),
    ];
    for (what, doc, expected) in cases {
        let e = load(doc, d()).unwrap_err();
        assert!(e.contains(expected), "{what}: {e}");
    }
    let many = jwks((0..5).map(|i| a.jwk(Some(&i.to_string()))).collect()).to_string();
    let e = load(
        many.clone(),
        Limits {
            max_jwks_keys: 4,
            ..d()
        },
    )
    .unwrap_err();
    assert!(e.contains("5 keys; at most 4"), "{e}");
    let e = load(
        many,
        Limits {
            max_jwks_bytes: 1000,
            ..d()
        },
    )
    .unwrap_err();
    assert!(e.contains("over the limit of 1000 bytes"), "{e}");
}

#[test]
fn jwks_url_failed_refresh_keeps_the_last_good_set_and_rotation_works() {
    let [a, b] = rsa_keys();
    let server = Server::start(Answer::json(&jwks(vec![a.jwk(Some("a"))])), None);
    let v = Verifier::new(&url_config(server.url("http", "/.well-known/jwks.json"))).unwrap();
    assert_eq!(server.requests(), 1);
    assert!(v.verify(&token(a, Some("a"), &claims())).is_ok());

    // The endpoint fails in every way: each refresh reports it, a's key stays.
    for (answer, expected) in [
        (Answer::status(500), "answered 500"),
        (Answer::status(302), "redirects are not followed"),
        (
            Answer::Send {
                status: 200,
                headers: Vec::new(),
                body: b"<html>".to_vec(),
                close_delimited: false,
            },
            "not JSON",
        ),
        (Answer::json(&json!({"keys": []})), "no RS256"),
    ] {
        server.set(answer);
        let e = v.refresh_now().unwrap_err();
        assert!(
            e.to_string().starts_with("jwt.jwks_url: http://") && e.to_string().contains(expected),
            "{e}"
        );
        assert!(v.verify(&token(a, Some("a"), &claims())).is_ok());
    }
    // Rotation: the endpoint now publishes b only.
    server.set(Answer::json(&jwks(vec![b.jwk(Some("b"))])));
    v.refresh_now().unwrap();
    assert!(v.verify(&token(b, Some("b"), &claims())).is_ok());
    assert_eq!(
        v.verify(&token(a, Some("a"), &claims())),
        Err(JwtError::UnknownKid)
    );
    // And the server gone altogether: b stays.
    let url_requests = server.requests();
    drop(server);
    assert!(v.refresh_now().is_err());
    assert!(v.verify(&token(b, Some("b"), &claims())).is_ok());
    assert_eq!(url_requests, 6);
}

#[test]
fn jwks_url_is_refreshed_in_the_background_until_the_verifier_is_dropped() {
    let [a, b] = rsa_keys();
    let server = Server::start(Answer::json(&jwks(vec![a.jwk(Some("a"))])), None);
    let v = Verifier::new(&VerifierConfig {
        jwks_refresh: Duration::from_millis(100),
        ..url_config(server.url("http", "/jwks"))
    })
    .unwrap();
    server.set(Answer::status(503));
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests() < 3 {
        assert!(Instant::now() < deadline, "no background refresh");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(v.verify(&token(a, Some("a"), &claims())).is_ok());
    server.set(Answer::json(&jwks(vec![
        a.jwk(Some("a")),
        b.jwk(Some("b")),
    ])));
    while v.verify(&token(b, Some("b"), &claims())).is_err() {
        assert!(Instant::now() < deadline, "the rotated keys never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A clone shares the keys; dropping every clone ends the refresh.
    let clone = v.clone();
    drop(v);
    assert!(clone.verify(&token(b, Some("b"), &claims())).is_ok());
    drop(clone);
    std::thread::sleep(Duration::from_millis(300));
    let after = server.requests();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.requests(), after, "refresh went on after the drop");
}

#[test]
fn jwks_url_fetch_is_bounded_in_time_and_size() {
    let [a, _] = rsa_keys();
    // No answer: the start fails after the timeout.
    let server = Server::start(Answer::Hang, None);
    let started = Instant::now();
    let e = Verifier::new(&VerifierConfig {
        jwks_fetch_timeout: Duration::from_millis(300),
        ..url_config(server.url("http", "/jwks"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("no complete answer within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Too large, announced (Content-Length) or not (read until the connection closes).
    let big = jwks(vec![a.jwk(Some("a"))]).to_string();
    let limits = Limits {
        max_jwks_bytes: big.len() - 1,
        ..Limits::default()
    };
    for close_delimited in [false, true] {
        server.set(Answer::Send {
            status: 200,
            headers: Vec::new(),
            body: big.clone().into_bytes(),
            close_delimited,
        });
        let e = Verifier::new(&VerifierConfig {
            limits: limits.clone(),
            ..url_config(server.url("http", "/jwks"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
        // At the limit it loads.
        let v = Verifier::new(&VerifierConfig {
            limits: Limits {
                max_jwks_bytes: big.len(),
                ..Limits::default()
            },
            ..url_config(server.url("http", "/jwks"))
        })
        .unwrap();
        assert!(v.verify(&token(a, Some("a"), &claims())).is_ok());
    }

    // Unreachable and unusable URLs.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for (url, expected) in [
        (format!("http://{closed}/jwks"), "connecting"),
        ("ftp://example/jwks".to_string(), "http:// or https://"),
        ("not a url".to_string(), "not a URL"),
        ("http://user:pw@127.0.0.1/".to_string(), "credentials"),
    ] {
        let e = Verifier::new(&url_config(url.clone())).unwrap_err();
        assert!(e.to_string().contains(expected), "{url}: {e}");
    }
}

#[test]
fn jwks_over_https_with_a_configured_ca() {
    let [a, _] = rsa_keys();
    let dir = TempDir::new("jwks-https");
    let (ca_pem, tls) = tls_server();
    let server = Server::start(Answer::json(&jwks(vec![a.jwk(Some("a"))])), Some(tls));
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}/jwks", server.addr.port());
        let v = Verifier::new(&VerifierConfig {
            jwks_ca_file: Some(dir.write("ca.pem", &ca_pem)),
            ..url_config(url.clone())
        })
        .unwrap();
        assert!(v.verify(&token(a, Some("a"), &claims())).is_ok());
        // With the public roots only, the private CA is not trusted.
        let e = Verifier::new(&url_config(url)).unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
    }
    // A CA file without certificates is a configuration error.
    let e = Verifier::new(&VerifierConfig {
        jwks_ca_file: Some(dir.write("empty.pem", "")),
        ..url_config(server.url("https", "/jwks"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_can_be_built_inside_a_tokio_runtime() {
    let [a, _] = rsa_keys();
    let server = Server::start(Answer::json(&jwks(vec![a.jwk(Some("a"))])), None);
    let v = Verifier::new(&url_config(server.url("http", "/jwks"))).unwrap();
    assert!(v.verify(&token(a, Some("a"), &claims())).is_ok());
    v.refresh_now().unwrap();
    drop(v);
}
