//! Bounded requests: a request body has a deadline, the connections served at once have a cap, and a
//! sync stream whose sidecar stops reading is ended within the re-authentication interval. Normal
//! clients are served meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vexil_proto::sync::v1::server_frame::Kind;

/// Reads until the server closes the connection; what it sent.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer));
    let _ = read.await.expect("the server closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

// A body sent a byte at a time (every 100 ms, 200 bytes announced: 20 s) is cut off with `408` at
// the read timeout (1 s), not when it would have finished; other requests are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trickled_body_gets_408_at_the_read_timeout() {
    let options = Options {
        read_timeout_ms: Some(1000),
        ..Options::default()
    };
    let Some(server) = start(Backend::Sqlite, options).await else {
        return;
    };
    let app = server.app.clone();
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/environments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n",
        app.admin
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Meanwhile: normal requests.
    for _ in 0..3 {
        app.get("/api/v1/environments", &app.admin)
            .await
            .expect(200);
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "answered after {took:?}"
    );
    trickle.abort();
    app.get("/api/v1/environments", &app.admin)
        .await
        .expect(200);
    server.stop().await;
}

// At most `[limits] max_connections` connections are served at once: with the cap taken by silent
// clients, one more gets `503` with `Retry-After` at once; under the cap, a normal request is
// served while the silent clients wait for their head deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_the_cap_get_503_and_the_rest_are_served() {
    let options = Options {
        configure: Some(|c| c.limits.max_connections = 4),
        ..Options::default()
    };
    let Some(server) = start(Backend::Sqlite, options).await else {
        return;
    };
    let app = server.app.clone();
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The fourth slot: served. (reqwest keeps the connection: close it with the client.)
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .get(format!("{}/api/v1/environments", app.base))
        .bearer_auth(&app.admin)
        .header("connection", "close")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    silent.push(TcpStream::connect(&addr).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(&addr).await.unwrap();
    let answer = until_closed(&mut over).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    // A slot freed: served again.
    drop(silent.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.get("/api/v1/environments", &app.admin)
        .await
        .expect(200);
    drop(silent);
    server.stop().await;
}

// A sidecar that stops reading: QUIC flow control blocks control's writes to it. The write has a
// deadline (the re-authentication interval), so its stream ends, and a revoked token's stream with
// it, instead of staying open for ever behind a write that never completes. A reading sidecar of
// the same environment gets every revision meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sidecar_that_stops_reading_is_cut_off_within_the_reauth_interval() {
    const REAUTH: Duration = Duration::from_secs(2);
    let options = Options {
        reauth_ms: Some(REAUTH.as_millis() as u64),
        ..Options::default()
    };
    let Some(server) = start(Backend::Sqlite, options).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    app.create_flag("prod", "a", &bool_flag()).await;
    let (id, stalled_token) = app.token("stalled", "sidecar", &["prod"]).await;
    let (_, reading_token) = app.token("reading", "sidecar", &["prod"]).await;

    let (stalled, _send, mut stalled_frames) =
        subscribe_stream(&app, "prod", &stalled_token, 0).await;
    assert!(matches!(
        next_frame(&mut stalled_frames).await,
        Some(Kind::Welcome(_))
    ));
    assert!(matches!(
        next_frame(&mut stalled_frames).await,
        Some(Kind::Full(_))
    ));
    // From here on the stalled sidecar reads nothing.
    let (_reading, _send2, mut reading_frames) =
        subscribe_stream(&app, "prod", &reading_token, 0).await;
    assert!(matches!(
        next_frame(&mut reading_frames).await,
        Some(Kind::Welcome(_))
    ));
    assert!(matches!(
        next_frame(&mut reading_frames).await,
        Some(Kind::Full(_))
    ));
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while let Some(kind) = next_frame(&mut reading_frames).await {
            match kind {
                Kind::Delta(d) => last = d.to,
                Kind::Full(f) => last = f.revision,
                Kind::Ping(_) => {}
                other => panic!("the reading sidecar got {other:?}"),
            }
            if last == 11 {
                return last;
            }
        }
        last
    });

    // Ten deltas of ~900 kB of incompressible text each: far more than the stream's flow-control
    // window, so control's writes to the stalled sidecar block.
    for i in 0..10 {
        let noise: String = (0..450_000)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let mut flag = bool_flag();
        flag["metadata"] = json!({ "noise": noise });
        app.put_json_if(
            &flag_path("prod", "a"),
            &flag,
            &app.admin,
            &format!("\"{}\"", i + 1),
        )
        .await
        .expect(200);
    }
    let written = Instant::now();
    app.delete(&format!("/api/v1/tokens/{id}"), &app.admin)
        .await
        .expect(200);
    tokio::time::timeout(Duration::from_secs(20), stalled.closed())
        .await
        .expect("the stalled sidecar's connection is closed");
    let took = written.elapsed();
    // One blocked write's deadline (plus the deltas still queued before it, and slack).
    assert!(
        took <= REAUTH * 3 + Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .expect("the reading sidecar is served")
            .unwrap(),
        11
    );
    assert!(
        app.state
            .metrics
            .render()
            .contains("vexil_control_sync_write_timeouts_total 1"),
        "the ended stream is counted"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.sidecars.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the stalled sidecar is still registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
