//! Writes the seed corpora (`fuzz/corpus/<target>/seed-*`): a handful of valid inputs per target,
//! built from the repository's own fixtures (`config/flags/demo.json`, the clients' flag file, the
//! shapes the unit tests use). Ignored: run it once to (re)create the seeds, then fuzz from them:
//!
//! ```text
//! cargo test -p vexil-fuzz --test seeds -- --ignored
//! ```

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use vexil_proto::frame::FrameCodec;
use vexil_proto::sync::v1::{
    Ack, ClientFrame, Delta, Entry, Full, Ping, Resync, ServerFrame, Subscribe, Welcome,
    client_frame, server_frame,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = root().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    // Every seed must run cleanly through its target.
    let run = vexil_fuzz::TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .unwrap()
        .1;
    run(data);
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(root().join("..").join(path)).unwrap()
}

fn documents() -> Vec<(&'static str, String)> {
    vec![
        ("demo", fixture("config/flags/demo.json")),
        ("clients", fixture("proxy/tests/clients/flags.json")),
        (
            "operators",
            json!({"flags": {
                "ops": {"state": "ENABLED", "variants": {"a": "a", "b": "b", "c": "c"},
                    "defaultVariant": "a",
                    "targeting": {"if": [
                        {"and": [{"starts_with": [{"var": "email"}, "ada"]},
                                 {"!": {"in": [{"var": "country"}, ["NL", "SE"]]}}]}, "b",
                        {"<": [1, {"var": "age"}, 65]}, "c",
                        {"sem_ver": [{"var": "version"}, "^", "1.2.0"]}, "b",
                        {"==": [{"var": "$flagd.flagKey"}, "ops"]}, "a", null]}},
                "num": {"state": "ENABLED", "variants": {"low": 1, "high": 1e3}, "defaultVariant": "low",
                    "targeting": {"if": [{">": [{"+": [{"var": ["score", 0]}, 5]}, {"var": "$flagd.timestamp"}]},
                        "high", "low"]}}
            }})
            .to_string(),
        ),
        (
            "fractional-v2",
            json!({"metadata": {"vexil.fractional": "v2"},
                "$evaluators": {"seg": {"in": [{"var": "plan"}, ["pro", "team"]]}},
                "flags": {
                "split": {"state": "ENABLED", "variants": {"x": true, "y": false}, "defaultVariant": "y",
                    "targeting": {"if": [{"$ref": "seg"},
                        {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "user.id"}]},
                            ["x", 25], ["y", 75]]}, null]}},
                "off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"}
            }})
            .to_string(),
        ),
        (
            "invalid",
            json!({"flags": {"bad": {"state": "ENABLED", "variants": {"on": true},
                "defaultVariant": "missing", "targeting": {"nope": [1]}}}})
            .to_string(),
        ),
    ]
}

fn server_stream(frames: &[ServerFrame]) -> Vec<u8> {
    let codec = FrameCodec::new(1 << 20, 256);
    let mut out = vec![7u8]; // chunk size selector
    for f in frames {
        out.extend_from_slice(&codec.encode_frame(f).unwrap());
    }
    out
}

fn kind(k: server_frame::Kind) -> ServerFrame {
    ServerFrame { kind: Some(k) }
}

fn hs256(secret: &str, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = ring::hmac::sign(&key, format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Writes every target's seeds.
#[test]
#[ignore = "writes fuzz/corpus seeds; run by hand"]
fn write_seeds() {
    let docs = documents();
    for (name, doc) in &docs {
        write("flagset", name, doc.as_bytes());
    }

    // sync_frame: a sidecar's stream (Welcome, Full, Delta, Ping), a compressed Full, an error,
    // and the client frames control reads.
    let flag = json!({"state": "ENABLED", "variants": {"x": "y"}, "defaultVariant": "x"});
    let session = server_stream(&[
        kind(server_frame::Kind::Welcome(Welcome {
            server_id: "control-0".into(),
            revision: 3,
            heartbeat_ms: 5000,
            ..Default::default()
        })),
        kind(server_frame::Kind::Full(Full {
            revision: 3,
            flag_set: docs[0].1.clone(),
            ..Default::default()
        })),
        kind(server_frame::Kind::Delta(Delta {
            from: 3,
            to: 4,
            flag_upserts: vec![Entry {
                key: "b".into(),
                definition: flag.to_string(),
            }],
            flag_removals: vec!["theme".into()],
            evaluator_upserts: vec![Entry {
                key: "seg".into(),
                definition: json!({"in": [1, [1]]}).to_string(),
            }],
            metadata: Some(r#"{"team":"x"}"#.into()),
            ..Delta::default()
        })),
        kind(server_frame::Kind::Ping(Ping { revision: 4 })),
    ]);
    write("sync_frame", "session", &session);
    let big = kind(server_frame::Kind::Full(Full {
        revision: 9,
        flag_set: docs[2].1.clone(),
        ..Default::default()
    }));
    let codec = FrameCodec::new(1 << 20, 64);
    let mut compressed = vec![3u8];
    compressed.extend_from_slice(&codec.encode_frame(&big).unwrap());
    write("sync_frame", "compressed-full", &compressed);
    write(
        "sync_frame",
        "error",
        &server_stream(&[kind(server_frame::Kind::Error(
            vexil_proto::sync::v1::Error {
                code: 2,
                message: "unknown environment".into(),
            },
        ))]),
    );
    let client = |k: client_frame::Kind| ClientFrame { kind: Some(k) };
    let mut clients = vec![1u8];
    for f in [
        client(client_frame::Kind::Subscribe(Subscribe {
            token: "vxl_sidecar".into(),
            environment: "prod".into(),
            last_revision: 3,
            client_id: "pod-1".into(),
            version: "0.1.0".into(),
            ..Default::default()
        })),
        client(client_frame::Kind::Ack(Ack {
            revision: 4,
            ..Default::default()
        })),
        client(client_frame::Kind::Resync(Resync {
            reason: "delta out of step".into(),
        })),
    ] {
        clients.extend_from_slice(&FrameCodec::default().encode_frame(&f).unwrap());
    }
    write("sync_frame", "client", &clients);

    // flags_header: lines are vexil-flags values, then baggage, then x-user.
    for (name, text) in [
        ("kept", "checkout=?0, other=1\n\n\nk=v\nvip"),
        ("params", "a;p=1, b=(1 2);q=\"x\", c=@1700000000\n"),
        ("invalid", "NOT A DICT\n"),
        (
            "split",
            "theme=\"light\"\nlimit=100\nx=?1, y=%\"caf%c3%a9\"\nvexil.limit=5,k=v\nvip",
        ),
        (
            "long",
            "a=\"0123456789012345678901234567890123456789012345678901234567890123\"\n",
        ),
    ] {
        write("flags_header", name, text.as_bytes());
    }

    // context: HTTP/1 request heads.
    let token = hs256(
        vexil_fuzz::FUZZ_JWT_SECRET,
        &json!({"sub": "u1", "tier": 3, "groups": ["beta"], "email": "ada@example.com",
                "exp": 4_000_000_000u64}),
    );
    for (name, head) in [
        (
            "headers",
            "GET /cart?user=ada+l%40x&plan=pro HTTP/1.1\r\nHost: Shop.Internal:8080\r\n\
             X-User-Id: u-header\r\nX-Country: fr\r\n\r\n"
                .to_string(),
        ),
        (
            "cookies",
            "POST /checkout HTTP/1.1\r\nHost: shop\r\nCookie: a=1; uid=\"u-cookie\"\r\n\
             Cookie: session=abc\r\nBaggage: other=1, country=d%C3%A9;p=1, plan=team\r\n\r\n"
                .to_string(),
        ),
        (
            "jwt",
            format!("GET / HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n\r\n"),
        ),
        (
            "jwt-unsigned",
            format!(
                "GET / HTTP/1.1\r\nAuthorization: Bearer {}.{}.\r\n\r\n",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                URL_SAFE_NO_PAD.encode(r#"{"sub":"x","tier":9}"#)
            ),
        ),
    ] {
        write("context", name, head.as_bytes());
    }

    // http1_framing: request heads, chunked bodies and response heads (smuggling shapes too).
    for (name, data) in [
        ("get", "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
        (
            "post",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
        ),
        (
            "cl-te",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        ("bare-lf", "GET / HTTP/1.1\nHost: a\n\n"),
        ("chunked", "5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n"),
        ("chunked-bad", "5\nhello\r\nffffffffffffffffff\r\n"),
        (
            "response",
            "HTTP/1.1 200 OK\r\nConnection: x\r\nX: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "response-1xx",
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        ),
    ] {
        write("http1_framing", name, data.as_bytes());
    }

    // admin_bodies: selector byte (AdminBody::ALL index), key line, body.
    let flag_def = json!({"state": "ENABLED", "variants": {"on": true, "off": false},
        "defaultVariant": "off", "targeting": {"if": [{"$ref": "nope"}, "on"]}});
    let bodies: Vec<(&str, u8, &str, String)> = vec![
        ("flag", 0, "new-checkout", flag_def.to_string()),
        ("state", 1, "", r#"{"state": "DISABLED"}"#.into()),
        (
            "evaluator",
            2,
            "is-staff",
            r#"{"ends_with": [{"var": "email"}, "@x.com"]}"#.into(),
        ),
        ("flagset", 3, "", docs[0].1.clone()),
        (
            "evaluate",
            4,
            "",
            r#"{"context": {"targetingKey": "vip"}, "flag": "checkout"}"#.into(),
        ),
        (
            "environment",
            5,
            "",
            r#"{"key": "staging-2", "name": "Staging 2"}"#.into(),
        ),
        ("rename", 6, "", r#"{"name": "Production"}"#.into()),
        ("promote", 7, "", r#"{"to": "prod"}"#.into()),
        (
            "token",
            8,
            "",
            r#"{"name": "ci", "role": "sidecar", "environments": ["prod"]}"#.into(),
        ),
    ];
    for (name, which, key, body) in bodies {
        let mut data = vec![which];
        data.extend_from_slice(key.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(body.as_bytes());
        write("admin_bodies", name, &data);
    }
}
