//! The QUIC sync path end to end: real control replicas (SQLite, PostgreSQL, Redis), real QUIC on
//! loopback, the real sidecar sync client.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use vexil_proxy::snapshot::{Snapshot, SnapshotCell, Source};
use vexil_proxy::sync::{SyncClient, SyncConfig, SyncHandle, SyncState, SyncStatus, persist};
use vexil_testkit::redis::Redis;

// ------------------------------------------------------------------ helpers ----

fn flag(on: bool) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false},
           "defaultVariant": if on { "on" } else { "off" }})
}

/// A sidecar following `env` on `app`.
struct Sidecar {
    cell: Arc<SnapshotCell>,
    handle: SyncHandle,
    /// Every revision applied, in order.
    applied: Arc<Mutex<Vec<i64>>>,
}

fn config(app: &App, env: &str, token: &str, state_dir: Option<PathBuf>) -> SyncConfig {
    let mut c = SyncConfig::new(&app.sync_url(), env, token, app.ca_file());
    c.state_dir = state_dir;
    c.backoff =
        vexil_proxy::sync::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    c.refused_delay = Duration::from_millis(500);
    c
}

fn spawn(mut config: SyncConfig) -> Sidecar {
    let applied = Arc::new(Mutex::new(Vec::new()));
    let log = applied.clone();
    config.on_apply = Some(Arc::new(move |rev| log.lock().unwrap().push(rev)));
    let cell = Arc::new(SnapshotCell::new());
    let handle = SyncClient::new(config).expect("client").spawn(cell.clone());
    Sidecar {
        cell,
        handle,
        applied,
    }
}

impl Sidecar {
    fn revision(&self) -> i64 {
        self.cell.load().map_or(0, |s| s.revision)
    }

    fn status(&self) -> SyncStatus {
        self.handle.status().borrow().clone()
    }

    /// Waits until the held snapshot satisfies `pred`.
    async fn wait(&self, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.cell.load()
                && pred(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar never reached: {what}; holds {:?}, status {:?}",
                self.cell.load().map(|s| s.revision),
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `revision` is applied from control (swapped in, persisted, observed).
    async fn wait_revision(&self, revision: i64) -> Arc<Snapshot> {
        let applied = self.applied.clone();
        self.wait(&format!("revision {revision}"), move |s| {
            s.revision == revision && applied.lock().unwrap().last() == Some(&revision)
        })
        .await
    }

    async fn wait_status(&self, what: &str, pred: impl Fn(&SyncStatus) -> bool) -> SyncStatus {
        let mut rx = self.handle.status();
        let wait = rx.wait_for(|s| pred(s));
        match tokio::time::timeout(Duration::from_secs(20), wait).await {
            Ok(Ok(s)) => s.clone(),
            _ => panic!("status never reached: {what}; last {:?}", self.status()),
        }
    }
}

async fn put_flag(app: &App, env: &str, key: &str, on: bool) -> i64 {
    let path = flag_path(env, key);
    let exists = app.get(&path, &app.admin).await.status == 200;
    let mut req = app.req("PUT", &path).token(&app.admin).json(&flag(on));
    if exists {
        req = req.header("if-match", "*");
    }
    let r = req.send().await;
    assert!(r.status == 200 || r.status == 201, "{}", r.text);
    app.store.get_environment(env).await.unwrap().revision
}

/// `GET .../flagset` as the sidecar-visible document.
async fn flagset(app: &App, env: &str) -> Value {
    let r = app
        .get(&format!("/api/v1/environments/{env}/flagset"), &app.admin)
        .await;
    r.expect(200).clone()
}

fn normalized(doc: &Value) -> Value {
    // Empty sections are omitted by one side and present on the other.
    let mut doc = doc.clone();
    if let Some(m) = doc.as_object_mut() {
        m.retain(|k, v| k == "flags" || !v.as_object().is_some_and(|o| o.is_empty()));
    }
    doc
}

/// The value of a metric line (`name{labels} value`) in the replica's exposition.
fn metric(app: &App, line_prefix: &str) -> f64 {
    app.state.sidecars.stats(); // keep the registry warm
    let text = app.state.metrics.render();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// --------------------------------------------------------------------- tests ----

both_backends!(
    a_commit_reaches_a_connected_sidecar,
    |app: App| async move {
        app.create_env("prod").await;
        put_flag(&app, "prod", "checkout", false).await;
        let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
        let sidecar = spawn(config(&app, "prod", &token, None));
        let first = sidecar.wait_revision(1).await;
        assert_eq!(first.source, Source::Control(app.sync_url()));
        assert_eq!(first.flags.len(), 1);
        sidecar
            .wait_status("synced", |s| s.state == SyncState::Synced)
            .await;

        // A flag change, a new flag, a deletion, an evaluator: each arrives as it commits.
        let rev = put_flag(&app, "prod", "checkout", true).await;
        let s = sidecar.wait_revision(rev).await;
        assert_eq!(s.changed, ["checkout"]);
        let on = s.flags.resolve_bool("checkout", &Default::default());
        assert_eq!(on.value, Some(true));
        let rev = put_flag(&app, "prod", "search", true).await;
        sidecar.wait_revision(rev).await;
        app.delete(&flag_path("prod", "search"), &app.admin)
            .await
            .expect(204);
        let s = sidecar.wait_revision(rev + 1).await;
        assert!(s.flags.get("search").is_none());
        app.put_json(
            "/api/v1/environments/prod/evaluators/beta",
            &json!({"in": [{"var": "email"}, ["a@x"]]}),
            &app.admin,
        )
        .await;
        let s = sidecar.wait_revision(rev + 2).await;
        assert!(s.flags.evaluators().contains_key("beta"));
        assert_eq!(
            normalized(&s.document()),
            normalized(&flagset(&app, "prod").await)
        );

        // Control sees it, with its acked revision.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = app.get("/api/v1/sidecars", &app.admin).await;
            let items = list.expect(200)["items"].as_array().unwrap().clone();
            if items.len() == 1 && items[0]["acked_revision"] == rev + 2 {
                assert_eq!(items[0]["environment"], "prod");
                assert_eq!(items[0]["lag"], 0);
                assert!(
                    items[0]["address"]
                        .as_str()
                        .unwrap()
                        .starts_with("127.0.0.1:")
                );
                break;
            }
            assert!(Instant::now() < deadline, "sidecar list: {items:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A viewer scoped to another environment does not see it.
        app.create_env("dev").await;
        let (_, other) = app.token("dev-viewer", "viewer", &["dev"]).await;
        let list = app.get("/api/v1/sidecars", &other).await;
        assert_eq!(list.expect(200)["items"], json!([]));
        let metrics = app.get("/metrics", &app.admin).await.text;
        assert!(
            metrics.contains("vexil_control_sync_sidecars{environment=\"prod\"} 1"),
            "{metrics}"
        );
        assert!(metrics.contains("vexil_control_sync_max_lag_revisions{environment=\"prod\"} 0"));
        // The sequence of applied revisions is strictly increasing and complete.
        let applied = sidecar.applied.lock().unwrap().clone();
        assert_eq!(applied, (1..=rev + 2).collect::<Vec<_>>());
        sidecar.handle.shutdown().await;
    }
);

both_backends!(a_flagset_import_arrives_whole, |app: App| async move {
    app.create_env("prod").await;
    let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
    let sidecar = spawn(config(&app, "prod", &token, None));
    // An empty environment at revision 0: an empty flag set, served and synced.
    let empty = sidecar.wait_revision(0).await;
    assert!(empty.flags.is_empty());
    sidecar
        .wait_status("synced", |s| s.state == SyncState::Synced)
        .await;
    let flags: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("flag-{i:05}"), flag(i % 2 == 0)))
        .collect();
    let doc = json!({"flags": flags, "metadata": {"team": "checkout"}});
    app.put_json("/api/v1/environments/prod/flagset", &doc, &app.admin)
        .await
        .expect(200);
    let s = sidecar.wait_revision(1).await;
    assert_eq!(s.flags.len(), 10_000);
    assert_eq!(s.flags.metadata().get("team"), Some(&json!("checkout")));
    let r = s.flags.resolve_bool("flag-00042", &Default::default());
    assert_eq!(r.value, Some(true));
    // The 10,000-flag snapshot travels compressed, as one Full.
    assert!(metric(&app, "vexil_control_sync_frames_sent_total{kind=\"full\"}") >= 1.0);
    sidecar.handle.shutdown().await;
});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_after_a_control_restart_sends_only_the_missing_deltas() {
    let db = Db::create(Backend::Sqlite).await.unwrap();
    seed_admin(&db.url).await;
    let tls = TempDir::new("vexil-tls");
    let state = TempDir::new("vexil-state");
    let first = start_replica(&db.url, Backend::Sqlite, &tls, &Options::default()).await;
    let app = first.app.clone();
    app.create_env("prod").await;
    put_flag(&app, "prod", "a", true).await;
    let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
    let sidecar = spawn(config(&app, "prod", &token, Some(state.to_path_buf())));
    sidecar.wait_revision(1).await;
    let sync_addr = app.sync_addr;
    first.stop().await;
    sidecar
        .wait_status("stale", |s| s.state == SyncState::Stale)
        .await;

    // Three commits while control is down (written straight to the store).
    let store = vexil_control::store::Store::connect(&db.url).await.unwrap();
    let actor = vexil_control::store::Actor {
        name: "test".into(),
        request_id: None,
    };
    use vexil_control::store::Precondition;
    for (key, on, pre) in [
        ("a", false, Precondition::Any),
        ("b", true, Precondition::None),
        ("c", true, Precondition::None),
    ] {
        store
            .put_flag(&actor, "prod", key, flag(on), pre, Default::default())
            .await
            .unwrap();
    }
    store.close().await;
    assert_eq!(sidecar.revision(), 1, "serves its last snapshot meanwhile");

    let options = Options {
        sync_addr: Some(sync_addr),
        ..Options::default()
    };
    let second = start_replica(&db.url, Backend::Sqlite, &tls, &options).await;
    let s = sidecar.wait_revision(4).await;
    assert_eq!(s.flags.len(), 3);
    sidecar
        .wait_status("synced again", |s| s.state == SyncState::Synced)
        .await;
    let app2 = &second.app;
    assert_eq!(
        metric(app2, "vexil_control_sync_frames_sent_total{kind=\"full\"}"),
        0.0
    );
    assert_eq!(
        metric(app2, "vexil_control_sync_frames_sent_total{kind=\"delta\"}"),
        3.0
    );
    assert_eq!(*sidecar.applied.lock().unwrap(), [1, 2, 3, 4]);
    sidecar.handle.shutdown().await;
    second.stop().await;
    db.destroy().await;
}

both_backends!(
    a_sidecar_too_far_behind_gets_a_full_snapshot,
    options = Options {
        max_catch_up: Some(2),
        ..Options::default()
    },
    |app: App| async move {
        app.create_env("prod").await;
        put_flag(&app, "prod", "a", true).await;
        let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
        let state = TempDir::new("vexil-state");
        let sidecar = spawn(config(&app, "prod", &token, Some(state.to_path_buf())));
        sidecar.wait_revision(1).await;
        sidecar.handle.shutdown().await;
        for i in 0..5 {
            put_flag(&app, "prod", &format!("f{i}"), true).await;
        }
        let fulls = metric(&app, "vexil_control_sync_frames_sent_total{kind=\"full\"}");
        let deltas = metric(&app, "vexil_control_sync_frames_sent_total{kind=\"delta\"}");
        // It restarts from its persisted revision 1, five behind: more than two, so one Full.
        let sidecar = spawn(config(&app, "prod", &token, Some(state.to_path_buf())));
        assert_eq!(
            sidecar.revision(),
            1,
            "serves the persisted snapshot at once"
        );
        assert_eq!(sidecar.cell.load().unwrap().source.kind(), "persisted");
        let s = sidecar.wait_revision(6).await;
        assert_eq!(s.flags.len(), 6);
        assert_eq!(*sidecar.applied.lock().unwrap(), [6]);
        assert_eq!(
            metric(&app, "vexil_control_sync_frames_sent_total{kind=\"full\"}"),
            fulls + 1.0
        );
        assert_eq!(
            metric(&app, "vexil_control_sync_frames_sent_total{kind=\"delta\"}"),
            deltas
        );
        sidecar.handle.shutdown().await;
    }
);

both_backends!(
    refusals_are_typed_and_leave_others_served,
    |app: App| async move {
        app.create_env("prod").await;
        app.create_env("dev").await;
        put_flag(&app, "prod", "a", true).await;
        let (_, prod_token) = app.token("prod-sidecar", "sidecar", &["prod"]).await;
        let (_, viewer) = app.token("viewer", "viewer", &[]).await;
        let good = spawn(config(&app, "prod", &prod_token, None));
        good.wait_revision(1).await;

        let cases = [
            ("prod", "vxl_not-a-token".to_string(), "Unauthenticated"),
            ("dev", prod_token.clone(), "PermissionDenied"),
            ("prod", viewer.clone(), "PermissionDenied"),
            ("nope", app.admin.clone(), "UnknownEnvironment"),
        ];
        for (env, token, code) in cases {
            let bad = spawn(config(&app, env, &token, None));
            let status = bad
                .wait_status(code, |s| {
                    s.last_error.as_deref().is_some_and(|e| e.contains(code))
                })
                .await;
            assert_eq!(status.state, SyncState::Stale);
            assert!(bad.cell.load().is_none());
            // The token never shows in what the client reports.
            assert!(!status.last_error.unwrap().contains(&token));
            bad.handle.shutdown().await;
        }
        assert!(
            metric(
                &app,
                "vexil_control_sync_refused_total{code=\"UNAUTHENTICATED\"}"
            ) >= 1.0
        );

        // The good sidecar was served throughout.
        let rev = put_flag(&app, "prod", "a", false).await;
        good.wait_revision(rev).await;
        good.handle.shutdown().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_ca_is_refused_by_the_client() {
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
    let other = TempDir::new("vexil-other-ca");
    let files = vexil_control::tls::ensure_dev_tls(&other, &[]).unwrap();
    let sidecar = spawn(SyncConfig {
        ca_file: files.ca_cert.clone(),
        ..config(&app, "prod", &token, None)
    });
    let status = sidecar
        .wait_status("a TLS failure", |s| s.last_error.is_some())
        .await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(sidecar.cell.load().is_none());
    assert_eq!(app.state.sidecars.len(), 0);
    sidecar.handle.shutdown().await;
    server.stop().await;
}

/// A raw QUIC client speaking whatever bytes a test wants.
async fn raw_stream(app: &App) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    raw_stream_from(app, [127, 0, 0, 1]).await
}

/// [`raw_stream`] from the local address `ip` (any of 127.0.0.0/8 on Linux: another peer).
async fn raw_stream_from(
    app: &App,
    ip: [u8; 4],
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let config = vexil_proxy::sync::client_config(
        &app.ca_file(),
        None,
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .unwrap();
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
    let conn = endpoint
        .connect_with(config, app.sync_addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    (conn, send, recv)
}

/// Reads server frames until the stream ends; returns them.
async fn read_all(recv: quinn::RecvStream) -> Vec<vexil_proto::sync::v1::ServerFrame> {
    use futures_util::StreamExt;
    use vexil_proto::frame::MessageCodec;
    let mut frames = tokio_util::codec::FramedRead::new(recv, MessageCodec::default());
    let mut out = Vec::new();
    while let Ok(Some(Ok(f))) = tokio::time::timeout(Duration::from_secs(10), frames.next()).await {
        out.push(f);
    }
    out
}

fn error_code(frames: &[vexil_proto::sync::v1::ServerFrame]) -> Option<&'static str> {
    use vexil_proto::sync::v1::{ErrorCode, server_frame::Kind};
    frames.iter().find_map(|f| match &f.kind {
        Some(Kind::Error(e)) => ErrorCode::try_from(e.code).ok().map(|c| c.as_str_name()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_oversized_frames_get_an_error_frame() {
    use vexil_proto::frame::FrameCodec;
    use vexil_proto::sync::v1::{Ack, ClientFrame, client_frame::Kind};
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    put_flag(&app, "prod", "a", true).await;
    let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
    let good = spawn(config(&app, "prod", &token, None));
    good.wait_revision(1).await;

    // Not a protobuf message.
    let (_conn, mut send, recv) = raw_stream(&app).await;
    send.write_all(&[0, 0, 0, 4, 0, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert_eq!(error_code(&read_all(recv).await), Some("MALFORMED_FRAME"));

    // Unknown flag bits.
    let (_conn, mut send, recv) = raw_stream(&app).await;
    send.write_all(&[0, 0, 0, 1, 0x80]).await.unwrap();
    assert_eq!(error_code(&read_all(recv).await), Some("MALFORMED_FRAME"));

    // A first frame that is not a Subscribe.
    let (_conn, mut send, recv) = raw_stream(&app).await;
    let ack = ClientFrame {
        kind: Some(Kind::Ack(Ack {
            revision: 1,
            ..Default::default()
        })),
    };
    send.write_all(&FrameCodec::default().encode_frame(&ack).unwrap())
        .await
        .unwrap();
    assert_eq!(error_code(&read_all(recv).await), Some("MALFORMED_FRAME"));

    // A declared length over the client-frame limit (64 KiB): refused from the header alone.
    let (_conn, mut send, recv) = raw_stream(&app).await;
    send.write_all(&(10u32 << 20).to_be_bytes()).await.unwrap();
    assert_eq!(error_code(&read_all(recv).await), Some("FRAME_TOO_LARGE"));

    // Nothing at all: the handshake times out... the connection just closes, no crash. The
    // well-behaved sidecar is still served.
    let rev = put_flag(&app, "prod", "a", false).await;
    good.wait_revision(rev).await;
    assert_eq!(app.state.sidecars.len(), 1);
    good.handle.shutdown().await;
    server.stop().await;
}

both_backends!(
    a_revoked_token_is_disconnected,
    options = Options {
        reauth_ms: Some(200),
        ..Options::default()
    },
    |app: App| async move {
        app.create_env("prod").await;
        put_flag(&app, "prod", "a", true).await;
        let (id, token) = app.token("sidecar", "sidecar", &["prod"]).await;
        let sidecar = spawn(config(&app, "prod", &token, None));
        sidecar.wait_revision(1).await;
        app.delete(&format!("/api/v1/tokens/{id}"), &app.admin)
            .await
            .expect(200);
        let status = sidecar
            .wait_status("cut off", |s| {
                s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("Unauthenticated"))
            })
            .await;
        assert_eq!(status.state, SyncState::Stale);
        // Still serving what it had.
        assert_eq!(sidecar.revision(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !app.state.sidecars.is_empty() {
            assert!(Instant::now() < deadline, "still registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sidecar.handle.shutdown().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_restarted_with_control_down_serves_its_persisted_snapshot() {
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    put_flag(&app, "prod", "a", true).await;
    put_flag(&app, "prod", "b", false).await;
    let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
    let state = TempDir::new("vexil-state");
    let sidecar = spawn(config(&app, "prod", &token, Some(state.to_path_buf())));
    sidecar.wait_revision(2).await;
    sidecar.handle.shutdown().await;
    let mut cfg = config(&app, "prod", &token, Some(state.to_path_buf()));
    cfg.ca_file = state.join("ca.pem");
    std::fs::copy(app.ca_file(), &cfg.ca_file).unwrap();
    server.stop().await;

    // Control is gone: the new client serves revision 2 from disk, before any connection.
    let restarted = spawn(cfg.clone());
    let s = restarted.cell.load().expect("loaded at spawn");
    assert_eq!(
        (s.revision, s.flags.len(), s.source.kind()),
        (2, 2, "persisted")
    );
    let status = restarted
        .wait_status("stale", |s| s.state == SyncState::Stale)
        .await;
    assert_eq!(status.revision, 2);
    restarted.handle.shutdown().await;

    // A damaged file is detected, set aside, and nothing is served.
    let file = persist::path(&state, "prod");
    let text = std::fs::read(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    let damaged = spawn(cfg);
    assert!(damaged.cell.load().is_none());
    assert!(!file.exists());
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    damaged.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    // The replica trusts client certificates of its own development CA.
    let tls = TempDir::new("vexil-tls");
    let files = vexil_control::tls::ensure_dev_tls(&tls, &[]).unwrap();
    let db = Db::create(Backend::Sqlite).await.unwrap();
    seed_admin(&db.url).await;
    let options = Options {
        client_ca: Some(files.ca_cert.clone()),
        ..Options::default()
    };
    let replica = start_replica(&db.url, Backend::Sqlite, &tls, &options).await;
    let app = replica.app.clone();
    app.create_env("prod").await;
    put_flag(&app, "prod", "a", true).await;
    let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;

    // Without a certificate: refused in the handshake.
    let anonymous = spawn(config(&app, "prod", &token, None));
    let status = anonymous
        .wait_status("a TLS failure", |s| s.last_error.is_some())
        .await;
    assert!(anonymous.cell.load().is_none(), "{status:?}");
    anonymous.handle.shutdown().await;

    // With a certificate from another CA: refused too.
    let other = TempDir::new("vexil-other-ca");
    vexil_control::tls::ensure_dev_tls(&other, &[]).unwrap();
    let foreign = vexil_control::tls::issue_dev_client_cert(&other, "intruder").unwrap();
    let intruder = spawn(SyncConfig {
        client_cert: Some(foreign),
        ..config(&app, "prod", &token, None)
    });
    intruder
        .wait_status("a TLS failure", |s| s.last_error.is_some())
        .await;
    assert!(intruder.cell.load().is_none());
    intruder.handle.shutdown().await;

    // With one from the CA: served.
    let own = vexil_control::tls::issue_dev_client_cert(&tls, "sidecar-1").unwrap();
    let sidecar = spawn(SyncConfig {
        client_cert: Some(own),
        ..config(&app, "prod", &token, None)
    });
    sidecar.wait_revision(1).await;
    sidecar.handle.shutdown().await;
    replica.stop().await;
    db.destroy().await;
}

/// A stand-in control that welcomes a sidecar, then sends whatever bytes the test gives it.
async fn fake_control(tls: &std::path::Path, script: Vec<Vec<u8>>) -> std::net::SocketAddr {
    let files = vexil_control::tls::ensure_dev_tls(tls, &[]).unwrap();
    let server_tls = vexil_control::sync::endpoint::server_tls(&vexil_control::sync::QuicTls {
        cert: files.cert,
        key: files.key,
        client_ca: None,
    })
    .unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap();
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut send, _recv)) = conn.accept_bi().await else {
                    return;
                };
                for bytes in script {
                    if send.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_misbehaving_control_never_replaces_the_held_snapshot() {
    use vexil_proto::frame::FrameCodec;
    use vexil_proto::sync::v1::{Full, ServerFrame, Welcome, server_frame::Kind};
    let codec = FrameCodec::default();
    let welcome = codec
        .encode_frame(&ServerFrame {
            kind: Some(Kind::Welcome(Welcome {
                server_id: "fake".into(),
                revision: 9,
                heartbeat_ms: 1000,
                ..Default::default()
            })),
        })
        .unwrap()
        .to_vec();
    let not_json = codec
        .encode_frame(&ServerFrame {
            kind: Some(Kind::Full(Full {
                revision: 9,
                flag_set: "{not json".into(),
                ..Default::default()
            })),
        })
        .unwrap()
        .to_vec();
    let state = TempDir::new("vexil-state");
    persist::save(
        &state,
        "prod",
        3,
        &json!({"flags": {"a": flag(true)}}).to_string(),
    )
    .unwrap();
    let scripts: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "garbage",
            vec![welcome.clone(), vec![0, 0, 0, 3, 0, 0xff, 0xff]],
        ),
        (
            "oversized",
            vec![welcome.clone(), (100u32 << 20).to_be_bytes().to_vec()],
        ),
        (
            "unknown flags",
            vec![welcome.clone(), vec![0, 0, 0, 1, 0x40]],
        ),
        ("a full that is not JSON", vec![welcome.clone(), not_json]),
    ];
    for (what, script) in scripts {
        let tls = TempDir::new("vexil-fake-tls");
        let addr = fake_control(&tls, script).await;
        let mut cfg = SyncConfig::new(
            &format!("quic://{addr}"),
            "prod",
            "vxl_x",
            tls.join("ca.pem"),
        );
        cfg.server_name = Some("localhost".into());
        cfg.state_dir = Some(state.to_path_buf());
        cfg.max_frame = 1 << 20;
        let sidecar = spawn(cfg);
        let status = sidecar
            .wait_status(what, |s| {
                s.server_id.is_some() && (s.state == SyncState::Stale || s.last_error.is_some())
            })
            .await;
        let held = sidecar.cell.load().expect("persisted snapshot");
        assert_eq!(
            (held.revision, held.source.kind()),
            (3, "persisted"),
            "{what}: {status:?}"
        );
        assert!(sidecar.applied.lock().unwrap().is_empty(), "{what}");
        sidecar.handle.shutdown().await;
    }
}

// ------------------------------------------------------------ replicas, Redis ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_commits_through_redis_and_the_store_poll() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("vexil_control=debug,redis=debug")
        .with_test_writer()
        .try_init();
    let Some(db) = Db::create(Backend::Postgres).await else {
        return;
    };
    let Some(mut redis) = Redis::start() else {
        return;
    };
    seed_admin(&db.url).await;
    let tls = TempDir::new("vexil-tls");
    // B polls the store only every 30 s: what reaches its sidecars sooner came through Redis.
    let redis_url = redis.url();
    let with = |poll_ms| Options {
        redis_url: Some(redis_url.clone()),
        sync_poll_ms: Some(poll_ms),
        ..Options::default()
    };
    let a = start_replica(&db.url, Backend::Postgres, &tls, &with(30_000)).await;
    let b = start_replica(&db.url, Backend::Postgres, &tls, &with(30_000)).await;
    let app_a = a.app.clone();
    app_a.create_env("prod").await;
    put_flag(&app_a, "prod", "a", true).await;
    let (_, token) = app_a.token("sidecar", "sidecar", &["prod"]).await;
    let on_b = spawn(config(&b.app, "prod", &token, None));
    on_b.wait_revision(1).await;

    let started = Instant::now();
    let rev = put_flag(&app_a, "prod", "a", false).await;
    on_b.wait_revision(rev).await;
    let fast = started.elapsed();
    assert!(fast < Duration::from_secs(10), "through redis: {fast:?}");
    eprintln!("write on A -> applied on a sidecar of B through Redis: {fast:?}");

    // Redis down: a replica polling every 300 ms still delivers, B catches up at its next poll
    // or when Redis returns.
    redis.kill();
    let c = start_replica(&db.url, Backend::Postgres, &tls, &with(300)).await;
    let on_c = spawn(config(&c.app, "prod", &token, None));
    on_c.wait_revision(rev).await;
    let rev = put_flag(&app_a, "prod", "b", true).await;
    on_c.wait_revision(rev).await;
    assert!(on_b.revision() < rev || on_b.revision() == rev);

    // Redis back: the fast path resumes (B resubscribes and looks at once).
    assert!(redis.restart());
    on_b.wait_revision(rev).await;
    let rev = put_flag(&app_a, "prod", "c", true).await;
    on_b.wait_revision(rev).await;
    on_c.wait_revision(rev).await;
    for s in [&on_b, &on_c] {
        let applied = s.applied.lock().unwrap().clone();
        assert!(applied.windows(2).all(|w| w[0] < w[1]), "{applied:?}");
    }
    on_b.handle.shutdown().await;
    on_c.handle.shutdown().await;
    for r in [a, b, c] {
        r.stop().await;
    }
    db.destroy().await;
}

// ------------------------------------------------------------------ ordering ----

/// A small deterministic generator (xorshift), seeded per run and printed, so a failure can be
/// replayed with `VEXIL_TEST_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("VEXIL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>)
            | 1;
        eprintln!("ordering property: VEXIL_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

both_backends!(
    every_sidecar_converges_in_order_through_writes_and_reconnects,
    options = Options {
        max_catch_up: Some(5),
        ..Options::default()
    },
    |app: App| async move {
        let envs = ["red", "green", "blue"];
        let mut tokens = Vec::new();
        for env in envs {
            app.create_env(env).await;
            tokens.push(app.token(env, "sidecar", &[env]).await.1);
        }
        let mut rng = Rng::new();
        // Two sidecars per environment, each with its own state directory and one applied-log
        // kept across its restarts.
        struct Slot {
            env: usize,
            dir: TempDir,
            log: Arc<Mutex<Vec<i64>>>,
            sidecar: Option<Sidecar>,
        }
        let mut slots: Vec<Slot> = (0..6)
            .map(|i| {
                let env = i % 3;
                let dir = TempDir::new("vexil-order");
                let log = Arc::new(Mutex::new(Vec::new()));
                Slot {
                    env,
                    dir,
                    log,
                    sidecar: None,
                }
            })
            .collect();
        let launch = |app: &App, slot: &Slot, token: &str| {
            let mut cfg = config(app, envs[slot.env], token, Some(slot.dir.to_path_buf()));
            let log = slot.log.clone();
            cfg.on_apply = Some(Arc::new(move |rev| log.lock().unwrap().push(rev)));
            let cell = Arc::new(SnapshotCell::new());
            let handle = SyncClient::new(cfg).unwrap().spawn(cell.clone());
            Sidecar {
                cell,
                handle,
                applied: slot.log.clone(),
            }
        };
        for slot in &mut slots {
            slot.sidecar = Some(launch(&app, slot, &tokens[slot.env]));
        }
        for _ in 0..120 {
            let env = envs[rng.below(3) as usize];
            let key = format!("f{}", rng.below(6));
            match rng.below(10) {
                0..=5 => {
                    put_flag(&app, env, &key, rng.below(2) == 0).await;
                }
                6 => {
                    let _ = app.delete(&flag_path(env, &key), &app.admin).await;
                }
                7 => {
                    let seg = json!({"in": [{"var": "country"}, [format!("c{}", rng.below(9))]]});
                    app.put_json(
                        &format!("/api/v1/environments/{env}/evaluators/seg"),
                        &seg,
                        &app.admin,
                    )
                    .await;
                }
                8 => {
                    let flags: serde_json::Map<String, Value> = (0..rng.below(4))
                        .map(|i| (format!("f{i}"), flag(rng.below(2) == 0)))
                        .collect();
                    let doc = json!({"flags": flags, "metadata": {"n": rng.below(100)}});
                    app.put_json(
                        &format!("/api/v1/environments/{env}/flagset"),
                        &doc,
                        &app.admin,
                    )
                    .await
                    .expect(200);
                }
                _ => {
                    // A sidecar goes away and comes back, resuming from its persisted revision.
                    let slot = &mut slots[rng.below(6) as usize];
                    if let Some(s) = slot.sidecar.take() {
                        s.handle.shutdown().await;
                    }
                    if rng.below(3) > 0 {
                        slot.sidecar = Some(launch(&app, slot, &tokens[slot.env]));
                    }
                }
            }
        }
        for slot in &mut slots {
            if slot.sidecar.is_none() {
                slot.sidecar = Some(launch(&app, slot, &tokens[slot.env]));
            }
        }
        for slot in &slots {
            let env = envs[slot.env];
            let expected = normalized(&flagset(&app, env).await);
            let revision = app.store.get_environment(env).await.unwrap().revision;
            let sidecar = slot.sidecar.as_ref().unwrap();
            let held = sidecar
                .wait(&format!("{env}@{revision}"), |s| s.revision == revision)
                .await;
            assert_eq!(normalized(&held.document()), expected, "{env}");
            let log = slot.log.lock().unwrap().clone();
            assert!(
                log.windows(2).all(|w| w[0] < w[1]),
                "{env}: revisions not strictly increasing: {log:?}"
            );
        }
        for slot in slots {
            if let Some(s) = slot.sidecar {
                s.handle.shutdown().await;
            }
        }
    }
);

// A never-written environment (revision 0) is an empty, valid flag set: a client holding
// nothing (`last_revision` 0) gets the `Welcome` and a `Full` at revision 0, and may ack it.
both_backends!(
    a_never_written_environment_sends_an_empty_full_at_revision_0,
    |app: App| async move {
        use futures_util::StreamExt;
        use vexil_proto::frame::{FrameCodec, MessageCodec};
        use vexil_proto::sync::v1::{
            Ack, ClientFrame, ServerFrame, client_frame, server_frame::Kind,
        };
        app.create_env("prod").await;
        let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
        let (_conn, mut send, recv) = subscribe_raw(&app, "prod", &token).await;
        let mut frames =
            tokio_util::codec::FramedRead::new(recv, MessageCodec::<ServerFrame>::default());
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), frames.next())
                .await
                .expect("a frame in time")
                .expect("the stream stays open")
                .expect("a valid frame")
                .kind
        };
        match next().await {
            Some(Kind::Welcome(w)) => assert_eq!(w.revision, 0),
            other => panic!("expected Welcome, got {other:?}"),
        }
        match next().await {
            Some(Kind::Full(full)) => {
                assert_eq!(full.revision, 0);
                let doc: Value = serde_json::from_str(&full.flag_set).unwrap();
                assert_eq!(doc["flags"], json!({}));
            }
            other => panic!("expected a Full at revision 0, got {other:?}"),
        }
        let ack = ClientFrame {
            kind: Some(client_frame::Kind::Ack(Ack {
                revision: 0,
                ..Default::default()
            })),
        };
        send.write_all(&FrameCodec::default().encode_frame(&ack).unwrap())
            .await
            .unwrap();
        // Acknowledged, not refused: the next frame is a Ping at revision 0, not an Error.
        match next().await {
            Some(Kind::Ping(p)) => assert_eq!(p.revision, 0),
            other => panic!("expected a Ping, got {other:?}"),
        }
    }
);

// ------------------------------------------------------------ authorization ----

/// Opens a raw stream and sends a `Subscribe` for `env` with `token`.
async fn subscribe_raw(
    app: &App,
    env: &str,
    token: &str,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    subscribe_raw_from(app, [127, 0, 0, 1], env, token).await
}

/// [`subscribe_raw`] from the local address `ip`.
async fn subscribe_raw_from(
    app: &App,
    ip: [u8; 4],
    env: &str,
    token: &str,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    use vexil_proto::frame::FrameCodec;
    use vexil_proto::sync::v1::{ClientFrame, Subscribe, client_frame::Kind};
    let (conn, mut send, recv) = raw_stream_from(app, ip).await;
    let subscribe = ClientFrame {
        kind: Some(Kind::Subscribe(Subscribe {
            token: token.into(),
            environment: env.into(),
            last_revision: 0,
            client_id: "raw-test".into(),
            version: "0.0.0".into(),
            ..Default::default()
        })),
    };
    send.write_all(&FrameCodec::default().encode_frame(&subscribe).unwrap())
        .await
        .unwrap();
    (conn, send, recv)
}

both_backends!(
    sync_tokens_are_checked_for_role_environment_and_revocation,
    |app: App| async move {
        use vexil_proto::sync::v1::server_frame::Kind;
        app.create_env("prod").await;
        app.create_env("dev").await;
        put_flag(&app, "prod", "a", true).await;
        let (_, dev_sidecar) = app.token("dev-sidecar", "sidecar", &["dev"]).await;
        let (_, editor) = app.token("editor", "editor", &[]).await;
        let (_, viewer) = app.token("viewer", "viewer", &["prod"]).await;
        let (_, dev_admin) = app.token("dev-admin", "admin", &["dev"]).await;
        let (revoked_id, revoked) = app.token("gone", "sidecar", &["prod"]).await;
        app.delete(&format!("/api/v1/tokens/{revoked_id}"), &app.admin)
            .await
            .expect(200);
        let (_, prod_sidecar) = app.token("prod-sidecar", "sidecar", &["prod"]).await;
        let cases = [
            (
                "a sidecar token bound to another environment",
                dev_sidecar,
                "PERMISSION_DENIED",
            ),
            ("an editor token", editor, "PERMISSION_DENIED"),
            (
                "a viewer token of the environment",
                viewer,
                "PERMISSION_DENIED",
            ),
            (
                "an admin token bound to another environment",
                dev_admin,
                "PERMISSION_DENIED",
            ),
            ("a revoked sidecar token", revoked, "UNAUTHENTICATED"),
            (
                "an unknown token",
                format!("vxl_{:032x}", rand::random::<u128>()),
                "UNAUTHENTICATED",
            ),
            ("an empty token", String::new(), "UNAUTHENTICATED"),
            (
                "a JWT-shaped token (no JWT key configured)",
                "e30.e30.c2ln".into(),
                "UNAUTHENTICATED",
            ),
            // The stored form of a valid token is not a credential.
            (
                "the stored hash of a valid token",
                vexil_control::auth::hash_secret(&prod_sidecar),
                "UNAUTHENTICATED",
            ),
        ];
        for (what, token, code) in cases {
            let (_conn, _send, recv) = subscribe_raw(&app, "prod", &token).await;
            let frames = read_all(recv).await;
            // Refused before anything about the environment is sent: one Error frame, no Welcome.
            assert_eq!(error_code(&frames), Some(code), "{what}: {frames:?}");
            assert_eq!(frames.len(), 1, "{what}: {frames:?}");
            assert!(
                !frames
                    .iter()
                    .any(|f| matches!(f.kind, Some(Kind::Full(_)) | Some(Kind::Delta(_)))),
                "{what}"
            );
        }
        assert_eq!(app.state.sidecars.len(), 0);
        // The same stream with the right token is served: the refusals above are about the token.
        for token in [prod_sidecar, app.admin.clone()] {
            let (_conn, _send, recv) = subscribe_raw(&app, "prod", &token).await;
            use futures_util::StreamExt;
            let mut frames = tokio_util::codec::FramedRead::new(
                recv,
                vexil_proto::frame::MessageCodec::<vexil_proto::sync::v1::ServerFrame>::default(),
            );
            let first = tokio::time::timeout(Duration::from_secs(20), frames.next())
                .await
                .expect("an answer")
                .expect("a frame")
                .expect("a valid frame");
            assert!(matches!(first.kind, Some(Kind::Welcome(_))), "{first:?}");
        }
    }
);

/// The first frame control answers a `Subscribe` with.
async fn first_frame(recv: quinn::RecvStream) -> vexil_proto::sync::v1::ServerFrame {
    use futures_util::StreamExt;
    let mut frames = tokio_util::codec::FramedRead::new(
        recv,
        vexil_proto::frame::MessageCodec::<vexil_proto::sync::v1::ServerFrame>::default(),
    );
    tokio::time::timeout(Duration::from_secs(20), frames.next())
        .await
        .expect("an answer")
        .expect("a frame")
        .expect("a valid frame")
}

/// Failed `Subscribe`s are limited per peer, with the API's failures (one allowance per address):
/// after `burst` refused tokens, the peer's next `Subscribe`, even with a good token, gets
/// `UNAUTHENTICATED` saying when to retry, and so does its next API call (`429`); a sidecar at
/// another address subscribes; good `Subscribe`s cost nothing; the refusal is counted in
/// `vexil_control_auth_rate_limited_total{listener="sync"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_subscribes_are_limited_per_peer() {
    use vexil_proto::sync::v1::{ErrorCode, server_frame::Kind};
    let options = Options {
        auth_failures: Some((3, Duration::from_secs(60))),
        ..Options::default()
    };
    let Some(server) = start(Backend::Sqlite, options).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    let (_, good) = app.token("sidecar", "sidecar", &["prod"]).await;
    for _ in 0..5 {
        let (_conn, _send, recv) = subscribe_raw(&app, "prod", &good).await;
        let first = first_frame(recv).await;
        assert!(matches!(first.kind, Some(Kind::Welcome(_))), "{first:?}");
    }
    let error = |frame: vexil_proto::sync::v1::ServerFrame| match frame.kind {
        Some(Kind::Error(e)) => e,
        other => panic!("expected an Error frame, got {other:?}"),
    };
    for i in 0..3 {
        let (_conn, _send, recv) = subscribe_raw(&app, "prod", &format!("vxl_guess{i}")).await;
        let e = error(first_frame(recv).await);
        assert_eq!(e.code, ErrorCode::Unauthenticated as i32);
        assert_eq!(e.message, "invalid or revoked token");
    }
    let (_conn, _send, recv) = subscribe_raw(&app, "prod", &good).await;
    let e = error(first_frame(recv).await);
    assert_eq!(e.code, ErrorCode::Unauthenticated as i32, "{e:?}");
    assert!(
        e.message
            .starts_with("too many failed authentications from this address; retry in "),
        "{e:?}"
    );
    assert_problem(&app.get("/api/v1/environments", &app.admin).await, 429);
    // Another address is not affected.
    let (_conn, _send, recv) = subscribe_raw_from(&app, [127, 0, 0, 2], "prod", &good).await;
    let first = first_frame(recv).await;
    assert!(matches!(first.kind, Some(Kind::Welcome(_))), "{first:?}");
    assert_eq!(
        metric(
            &app,
            "vexil_control_auth_rate_limited_total{listener=\"sync\"}"
        ),
        1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_gets_an_unauthenticated_frame_within_the_reauth_interval() {
    use futures_util::StreamExt;
    use vexil_proto::sync::v1::{ErrorCode, ServerFrame, server_frame::Kind};
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
    put_flag(&app, "prod", "a", true).await;
    let (id, token) = app.token("sidecar", "sidecar", &["prod"]).await;
    let (conn, _send, recv) = subscribe_raw(&app, "prod", &token).await;
    let mut frames = tokio_util::codec::FramedRead::new(
        recv,
        vexil_proto::frame::MessageCodec::<ServerFrame>::default(),
    );
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), frames.next())
            .await
            .ok()
            .flatten()
            .map(|f| f.expect("a valid frame"))
    };
    // Served: Welcome, then the Full of revision 1.
    assert!(matches!(next().await.unwrap().kind, Some(Kind::Welcome(_))));
    assert!(matches!(next().await.unwrap().kind, Some(Kind::Full(_))));
    app.delete(&format!("/api/v1/tokens/{id}"), &app.admin)
        .await
        .expect(200);
    let revoked = Instant::now();
    let error = loop {
        match next().await {
            Some(ServerFrame {
                kind: Some(Kind::Error(e)),
            }) => break e,
            Some(ServerFrame {
                kind: Some(Kind::Ping(_)),
            }) => continue,
            other => panic!("expected the stream to be cut with an Error frame, got {other:?}"),
        }
    };
    let took = revoked.elapsed();
    assert_eq!(
        ErrorCode::try_from(error.code).unwrap(),
        ErrorCode::Unauthenticated,
        "{error:?}"
    );
    // One re-check tick at most (plus slack for a loaded machine), not a heartbeat or idle timeout.
    assert!(
        took <= REAUTH + Duration::from_secs(3),
        "cut off after {took:?}"
    );
    assert!(
        next().await.is_none(),
        "the stream ends after the Error frame"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the connection closes");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(1) && c.reason.as_ref() == b"UNAUTHENTICATED"),
        "{closed:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.state.sidecars.is_empty() {
        assert!(Instant::now() < deadline, "still registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

// ------------------------------------------------------------------ TLS ----

/// Replaces the server certificate in a development TLS directory with one from the same CA that
/// is valid for the same names but only between `not_before` and `not_after`.
fn reissue_server_cert(dir: &std::path::Path, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
    // The development CA's name and key: what a certificate it signed names as its issuer.
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Vexil development CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".into(),
        "::1".into(),
    ])
    .unwrap();
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_server_certificate_is_refused_by_the_sidecar() {
    let db = Db::create(Backend::Sqlite).await.unwrap();
    seed_admin(&db.url).await;
    let tls = TempDir::new("vexil-tls");
    vexil_control::tls::ensure_dev_tls(&tls, &[]).unwrap();
    // Expired last year; then, in a second round, valid (same CA, same names): only the dates differ.
    let cases = [
        ("expired", (2020, 1, 1), (2021, 1, 1)),
        ("not yet valid", (2999, 1, 1), (3000, 1, 1)),
        ("valid", (2020, 1, 1), (2999, 1, 1)),
    ];
    for (what, from, to) in cases {
        reissue_server_cert(&tls, from, to);
        let replica = start_replica(&db.url, Backend::Sqlite, &tls, &Options::default()).await;
        let app = replica.app.clone();
        if app
            .get("/api/v1/environments/prod", &app.admin)
            .await
            .status
            == 404
        {
            app.create_env("prod").await;
            put_flag(&app, "prod", "a", true).await;
        }
        let (_, token) = app
            .token(what.replace(' ', "-").as_str(), "sidecar", &["prod"])
            .await;
        let sidecar = spawn(config(&app, "prod", &token, None));
        if what == "valid" {
            sidecar.wait_revision(1).await;
        } else {
            let status = sidecar
                .wait_status("a TLS failure", |s| s.last_error.is_some())
                .await;
            let error = status.last_error.unwrap();
            let lower = error.to_ascii_lowercase().replace(' ', "");
            let expected = if what == "expired" {
                "expired"
            } else {
                "notvalidyet"
            };
            assert!(lower.contains(expected), "{what}: {error}");
            assert!(sidecar.cell.load().is_none(), "{what}");
            assert_eq!(app.state.sidecars.len(), 0, "{what}");
        }
        sidecar.handle.shutdown().await;
        replica.stop().await;
    }
    db.destroy().await;
}

/// A QUIC client trusting `app`'s CA and offering exactly `alpn`.
async fn connect_with_alpn(app: &App, alpn: &[&[u8]]) -> Result<quinn::Connection, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(app.ca_file()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint
        .connect_with(config, app.sync_addr, "localhost")
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(20), connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_refuses_clients_that_do_not_offer_the_vexil_alpn() {
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    for alpn in [
        &[b"h3".as_slice()][..],
        &[b"vexil-sync/2"],
        &[b"http/1.1", b"h2"],
        &[],
    ] {
        let error = connect_with_alpn(&app, alpn)
            .await
            .err()
            .unwrap_or_else(|| panic!("a client offering {alpn:?} was let in"));
        // TLS alert 120 (no_application_protocol) in the handshake.
        assert!(
            error.contains("error 120") && error.contains("handshake"),
            "{alpn:?}: {error}"
        );
    }
    // The right ALPN, also among others, is accepted.
    let conn = connect_with_alpn(&app, &[b"h3", vexil_proto::SYNC_ALPN])
        .await
        .expect("vexil-sync/1 is accepted");
    assert_eq!(
        conn.handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol),
        Some(vexil_proto::SYNC_ALPN.to_vec())
    );
    conn.close(0u32.into(), b"done");
    server.stop().await;
}

/// A sidecar that opens the sync stream and sends half a frame, then stalls, is refused after the
/// handshake timeout (10 s: `Subscribe` must arrive in time) with `MALFORMED_FRAME`, instead of
/// holding its session open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscribe_is_refused_after_the_handshake_timeout() {
    use futures_util::StreamExt;
    use vexil_proto::frame::MessageCodec;
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    let (_conn, mut send, recv) = raw_stream(&app).await;
    let started = std::time::Instant::now();
    send.write_all(&[0, 0]).await.unwrap();
    let mut frames = tokio_util::codec::FramedRead::new(recv, MessageCodec::default());
    let mut got = Vec::new();
    let deadline = started + Duration::from_secs(40);
    while let Ok(Some(Ok(f))) = tokio::time::timeout_at(deadline.into(), frames.next()).await {
        got.push(f);
    }
    let took = started.elapsed();
    assert_eq!(error_code(&got), Some("MALFORMED_FRAME"), "{got:?}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(40),
        "refused after {took:?}"
    );
    assert_eq!(app.state.sidecars.len(), 0);
    server.stop().await;
}

// ------------------------------------------------------------------ incarnations ----

fn flag_keys(s: &Snapshot) -> Vec<String> {
    let doc = s.document();
    let mut keys: Vec<String> = doc["flags"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

// A sidecar that holds revision 3 of an environment that is then deleted and created again under
// the same key, and written up to revision 3 again with other flags, ends up with the new flags:
// whether it was stopped meanwhile (it comes back from its persisted snapshot, which names the old
// incarnation) or stayed connected. Before incarnations, the restarted one was told it was up to
// date and served the deleted flags for ever.
both_backends!(
    a_sidecar_of_a_deleted_environment_takes_the_new_one_created_under_its_key,
    |app: App| async move {
        app.create_env("prod").await;
        for key in ["old-a", "old-b", "old-c"] {
            put_flag(&app, "prod", key, true).await;
        }
        let old = app.store.get_environment("prod").await.unwrap();
        assert_eq!(old.revision, 3);
        let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
        let state = TempDir::new("vexil-state");
        let stopped = spawn(config(&app, "prod", &token, Some(state.to_path_buf())));
        stopped.wait_revision(3).await;
        stopped.handle.shutdown().await;
        let held = persist::load(&state, "prod").unwrap().unwrap();
        assert_eq!(
            (held.revision, held.incarnation.as_str()),
            (3, old.incarnation.as_str())
        );
        // One that stays connected through it all (with an admin token, which outlives the
        // environment; the sidecar token is bound to the old incarnation).
        let connected = spawn(config(&app, "prod", &app.admin, None));
        connected.wait_revision(3).await;

        app.delete("/api/v1/environments/prod?force=true", &app.admin)
            .await
            .expect(204);
        app.create_env("prod").await;
        for key in ["new-x", "new-y", "new-z"] {
            put_flag(&app, "prod", key, false).await;
        }
        let new = app.store.get_environment("prod").await.unwrap();
        assert_eq!(new.revision, 3, "the same revision number");
        assert_ne!(new.incarnation, old.incarnation);
        // The old sidecar token is refused: it was bound to the deleted environment.
        let (_conn, _send, recv) = subscribe_raw(&app, "prod", &token).await;
        assert_eq!(error_code(&read_all(recv).await), Some("PERMISSION_DENIED"));
        let (_, token) = app.token("sidecar-2", "sidecar", &["prod"]).await;
        let expected = ["new-x", "new-y", "new-z"];
        connected
            .wait("the new environment's flags", |s| flag_keys(s) == expected)
            .await;
        // Now that the feed has restated everything to the connected one, the stopped one comes
        // back: only its Subscribe (revision 3 of the old incarnation) tells control what it has.
        let restarted = spawn(config(&app, "prod", &token, Some(state.to_path_buf())));
        let s = restarted
            .cell
            .load()
            .expect("the persisted snapshot at spawn");
        assert_eq!(flag_keys(&s), ["old-a", "old-b", "old-c"]);
        restarted
            .wait("the new environment's flags", |s| flag_keys(s) == expected)
            .await;
        // Persisted (after the swap) with the new incarnation.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let held = persist::load(&state, "prod").unwrap().unwrap();
            if (held.revision, held.incarnation.as_str()) == (3, new.incarnation.as_str()) {
                break;
            }
            assert!(Instant::now() < deadline, "persisted: {held:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Both acknowledged the new document with the digest control computes.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = app.get("/api/v1/sidecars", &app.admin).await;
            // The fleet lists the restarted sidecar's first session too, disconnected.
            let items: Vec<Value> = list.expect(200)["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["connected"] == json!(true))
                .cloned()
                .collect();
            if items.len() == 2
                && items
                    .iter()
                    .all(|i| i["digest_matches"] == json!(true) && i["digest_revision"] == 3)
            {
                break;
            }
            assert!(Instant::now() < deadline, "digests: {items:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        restarted.handle.shutdown().await;
        connected.handle.shutdown().await;
    }
);

// A sidecar whose snapshot has the right revision and incarnation but other content (restored
// from elsewhere, edited) acknowledges its digest at Welcome; control sees the mismatch, counts it
// (`vexil_control_sync_digest_mismatches_total`), and sends a Full: the sidecar ends up with
// control's content and a matching digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_digest_mismatch_is_counted_and_repaired() {
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    put_flag(&app, "prod", "real", true).await;
    let env = app.store.get_environment("prod").await.unwrap();
    let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
    let state = TempDir::new("vexil-state");
    let wrong = json!({"flags": {"forged": flag(true)}});
    persist::save_incarnation(&state, "prod", &env.incarnation, 1, &wrong.to_string()).unwrap();
    assert_eq!(
        metric(&app, "vexil_control_sync_digest_mismatches_total"),
        0.0
    );
    let sidecar = spawn(config(&app, "prod", &token, Some(state.to_path_buf())));
    sidecar
        .wait("control's content", |s| flag_keys(s) == ["real"])
        .await;
    assert_eq!(sidecar.revision(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&app, "vexil_control_sync_digest_mismatches_total") < 1.0 {
        assert!(Instant::now() < deadline, "the mismatch was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, doc) = app.store.export("prod").await.unwrap();
    let expected = vexil_proto::digest::document_digest(&doc);
    loop {
        let list = app.get("/api/v1/sidecars", &app.admin).await;
        let item = list.expect(200)["items"][0].clone();
        if item["digest_matches"] == json!(true) {
            assert_eq!(item["digest"], json!(expected));
            break;
        }
        assert!(Instant::now() < deadline, "{item}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&app, "vexil_control_sync_digest_mismatches_total"),
        1.0
    );
    sidecar.handle.shutdown().await;
    server.stop().await;
}

// After a restore, an operator gives the environment a new incarnation
// (`POST /environments/{env}/incarnation`): revision and flags stay, the sidecar token limited to
// it keeps working, and a connected sidecar takes a Full of the new incarnation (and persists
// it), as does a sidecar coming back with the old one.
both_backends!(
    a_new_incarnation_makes_every_sidecar_take_a_full,
    |app: App| async move {
        app.create_env("prod").await;
        put_flag(&app, "prod", "a", true).await;
        put_flag(&app, "prod", "b", true).await;
        let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
        let before = app.store.get_environment("prod").await.unwrap();
        let state = TempDir::new("vexil-state");
        let connected = spawn(config(&app, "prod", &token, Some(state.to_path_buf())));
        connected.wait_revision(2).await;
        let other_state = TempDir::new("vexil-state-2");
        let stopped = spawn(config(
            &app,
            "prod",
            &token,
            Some(other_state.to_path_buf()),
        ));
        stopped.wait_revision(2).await;
        stopped.handle.shutdown().await;
        let fulls_before = metric(&app, "vexil_control_sync_frames_sent_total{kind=\"full\"}");

        let r = app
            .req("POST", "/api/v1/environments/prod/incarnation")
            .token(&app.admin)
            .send()
            .await;
        let after = r.expect(200).clone();
        assert_eq!(after["revision"], 2);
        let incarnation = after["incarnation"].as_str().unwrap().to_string();
        assert_ne!(incarnation, before.incarnation);
        let audit = app
            .get("/api/v1/audit?environment=prod&limit=1", &app.admin)
            .await;
        assert_eq!(
            audit.expect(200)["items"][0]["action"],
            "environment.incarnation"
        );

        // Both sidecars end up holding revision 2 of the new incarnation, through a Full each
        // (the same document: acknowledged and persisted with its incarnation, not reinstalled).
        wait_persisted(&state, &incarnation).await;
        let back = spawn(config(
            &app,
            "prod",
            &token,
            Some(other_state.to_path_buf()),
        ));
        wait_persisted(&other_state, &incarnation).await;
        assert_eq!(back.revision(), 2);
        back.handle.shutdown().await;
        assert!(
            metric(&app, "vexil_control_sync_frames_sent_total{kind=\"full\"}")
                >= fulls_before + 2.0
        );
        assert_eq!(connected.revision(), 2);
        connected.handle.shutdown().await;
    }
);

/// Waits until the snapshot persisted in `dir` is of `incarnation`.
async fn wait_persisted(dir: &std::path::Path, incarnation: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held = persist::load(dir, "prod").unwrap().unwrap();
        if held.incarnation == incarnation {
            return;
        }
        assert!(Instant::now() < deadline, "persisted: {held:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------- fleet ----

/// `GET /api/v1/sidecars` of `app` as admin (with `query`), its items.
async fn fleet(app: &App, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/sidecars{query}"), &app.admin)
        .await;
    r.expect(200)["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_is_listed_by_every_replica_from_the_store() {
    let Some(db) = Db::create(Backend::Postgres).await else {
        return;
    };
    seed_admin(&db.url).await;
    let tls = TempDir::new("vexil-tls");
    let options = Options {
        sync_poll_ms: Some(200),
        ..Options::default()
    };
    let a = start_replica(&db.url, Backend::Postgres, &tls, &options).await;
    let b = start_replica(&db.url, Backend::Postgres, &tls, &options).await;
    let (app_a, app_b) = (a.app.clone(), b.app.clone());
    app_a.create_env("prod").await;
    app_a.create_env("dev").await;
    let rev = put_flag(&app_a, "prod", "a", true).await;
    let (_, token) = app_a.token("sidecar", "sidecar", &["prod"]).await;
    let mut c = config(&app_a, "prod", &token, None);
    c.client_id = "pod-1".into();
    let sidecar = spawn(c);
    sidecar.wait_revision(rev).await;

    // Connected to A, listed by B, with what A saw: the acknowledged revision and A as replica.
    let replica_a = a.control.hub.settings().server_id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let items = fleet(&app_b, "").await;
        if let [one] = items.as_slice()
            && one["acked_revision"] == rev
        {
            break one.clone();
        }
        assert!(Instant::now() < deadline, "B's list: {items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed["id"], "pod-1", "{listed}");
    assert_eq!(listed["environment"], "prod");
    assert_eq!(listed["replica"], json!(replica_a), "{listed}");
    assert_eq!(listed["connected"], true);
    assert_eq!(listed["stale"], false);
    assert_eq!(listed["disconnected_at"], Value::Null);
    assert_eq!(listed["lag"], 0);
    assert!(listed["session_id"].as_str().is_some_and(|s| s.len() == 32));
    assert!(
        listed["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // A write on B: the acknowledgement, through A, is seen by B.
    let rev = put_flag(&app_b, "prod", "b", true).await;
    sidecar.wait_revision(rev).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet(&app_b, "").await[0]["acked_revision"] != rev {
        assert!(Instant::now() < deadline, "the ack never reached B's list");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Filters and scoping: ?environment=, a token limited to another environment sees nothing,
    // a bad key is a 400 naming the parameter.
    assert_eq!(fleet(&app_b, "?environment=prod").await.len(), 1);
    assert!(fleet(&app_b, "?environment=dev").await.is_empty());
    let (_, dev_viewer) = app_a.token("dev-viewer", "viewer", &["dev"]).await;
    let r = app_b.get("/api/v1/sidecars", &dev_viewer).await;
    assert_eq!(r.expect(200)["items"], json!([]));
    let r = app_b
        .get("/api/v1/sidecars?environment=prod", &dev_viewer)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app_b
        .get("/api/v1/sidecars?environment=Not%20A%20Key", &app_b.admin)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap()
            .starts_with("environment: ")
    );

    // It leaves: B lists it as disconnected, with when.
    sidecar.handle.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let gone = loop {
        let items = fleet(&app_b, "").await;
        if items.len() == 1 && items[0]["disconnected_at"].is_string() {
            break items[0].clone();
        }
        assert!(Instant::now() < deadline, "B's list: {items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(gone["connected"], false, "{gone}");
    assert_eq!(gone["stale"], false, "{gone}");
    assert_eq!(gone["id"], "pod-1");

    // A replica that died leaves its rows "connected": one whose last_seen is older than three
    // heartbeats is listed as stale and disconnected since then.
    let long_ago = vexil_control::model::now_millis() - 60_000;
    app_a
        .store
        .record_sessions(&[vexil_control::store::SessionRow {
            id: "dead-replica-session".into(),
            replica: "dead-replica".into(),
            session: 1,
            environment: "prod".into(),
            client_id: "pod-2".into(),
            version: "0.1.0".into(),
            address: "127.0.0.1:2".into(),
            sent_revision: 1,
            acked_revision: 1,
            digest: None,
            digest_revision: None,
            digest_matches: None,
            connected_since: long_ago - 1000,
            last_seen: long_ago,
            disconnected_at: None,
        }])
        .await
        .unwrap();
    let items = fleet(&app_b, "?environment=prod").await;
    let stale = items.iter().find(|i| i["id"] == "pod-2").expect("listed");
    assert_eq!(stale["stale"], true, "{stale}");
    assert_eq!(stale["connected"], false, "{stale}");
    assert_eq!(stale["disconnected_at"], stale["last_seen"], "{stale}");

    // A replica that stops marks its sessions disconnected.
    let sidecar = spawn(config(&app_b, "prod", &token, None));
    sidecar.wait_revision(rev).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fleet(&app_a, "")
        .await
        .iter()
        .any(|i| i["connected"] == true)
    {
        assert!(Instant::now() < deadline, "the new session is not listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
    let items = fleet(&app_a, "").await;
    assert!(
        items.iter().all(|i| i["connected"] == false),
        "after B stopped: {items:?}"
    );
    sidecar.handle.shutdown().await;
    a.stop().await;
    db.destroy().await;
}

// -------------------------------------------------------------------- ?wait= ----

/// A real `vexil-proxy` following `env` on `app`, named `client_id`.
fn proxy_process(
    app: &App,
    env: &str,
    token: &str,
    client_id: &str,
    state: &std::path::Path,
) -> vexil_testkit::proxy::ProxyProcess {
    vexil_testkit::proxy::ProxyCmd::new()
        .name(client_id)
        .args([
            "--control",
            &app.sync_url(),
            "--environment",
            env,
            "--token",
            token,
            "--client-id",
            client_id,
        ])
        .arg("--ca-file")
        .arg(app.ca_file())
        .arg("--state-dir")
        .arg(state.join(client_id))
        .start()
}

/// Waits until `n` sidecars of `env` are listed connected.
async fn wait_connected(app: &App, env: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let items = fleet(app, &format!("?environment={env}")).await;
        if items.iter().filter(|i| i["connected"] == true).count() == n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} connected wanted: {items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Not `both_backends!`: the body waits on sidecar processes (testkit's readiness waits are not
// `Send`), so it runs on the test's own task.
mod writes_with_wait_answer_once_every_sidecar_acked {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        let Some(server) = start(Backend::Sqlite, Options::default()).await else {
            return;
        };
        writes_with_wait(server.app.clone()).await;
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        let Some(server) = start(Backend::Postgres, Options::default()).await else {
            return;
        };
        writes_with_wait(server.app.clone()).await;
        server.stop().await;
    }
}

async fn writes_with_wait(app: App) {
    {
        app.create_env("prod").await;
        app.create_env("stage").await;
        put_flag(&app, "prod", "seed", true).await;
        let (_, token) = app.token("sidecars", "sidecar", &["prod"]).await;
        let state = TempDir::new("vexil-wait");
        let mut p1 = proxy_process(&app, "prod", &token, "p1", &state);
        let mut p2 = proxy_process(&app, "prod", &token, "p2", &state);
        p1.wait_ready().await;
        p2.wait_ready().await;
        wait_connected(&app, "prod", 2).await;
        let all = json!({"connected": 2, "acked": 2, "lagging": [], "timed_out": false});

        // Every write kind answers with `sync` once both acknowledged its revision.
        let path = flag_path("prod", "a");
        let r = app
            .req("PUT", &format!("{path}?wait=10s"))
            .token(&app.admin)
            .json(&flag(true))
            .send()
            .await;
        assert_eq!(r.expect(201)["sync"], all, "{}", r.text);
        assert_eq!(r.json["key"], "a");
        assert!(r.header("etag").is_some());
        let r = app
            .req("PATCH", &format!("{path}?wait=10s"))
            .token(&app.admin)
            .json(&json!({"state": "DISABLED"}))
            .send()
            .await;
        assert_eq!(r.expect(200)["sync"], all, "{}", r.text);
        let r = app
            .req(
                "PUT",
                "/api/v1/environments/prod/evaluators/beta?wait=5000ms",
            )
            .token(&app.admin)
            .json(&json!({"in": [{"var": "email"}, ["a@example.com"]]}))
            .send()
            .await;
        assert_eq!(r.expect(201)["sync"], all, "{}", r.text);
        let r = app
            .req(
                "DELETE",
                "/api/v1/environments/prod/evaluators/beta?wait=1m",
            )
            .token(&app.admin)
            .send()
            .await;
        assert_eq!(r.expect(200)["sync"], all, "{}", r.text);
        let r = app
            .req("DELETE", &format!("{path}?wait=10s"))
            .token(&app.admin)
            .send()
            .await;
        let body = r.expect(200);
        assert_eq!(body["sync"], all, "{}", r.text);
        let revision = body["revision"].as_i64().expect("the revision");
        assert_eq!(
            revision,
            app.store.get_environment("prod").await.unwrap().revision
        );
        // Without ?wait=, a delete is still 204 and nothing else changed.
        put_flag(&app, "prod", "b", true).await;
        let r = app.delete(&flag_path("prod", "b"), &app.admin).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = app
            .req("PUT", "/api/v1/environments/prod/flagset?wait=10s")
            .token(&app.admin)
            .json(&json!({"flags": {"c": flag(false)}}))
            .send()
            .await;
        assert_eq!(r.expect(200)["sync"], all, "{}", r.text);
        // Promotion waits for the target's sidecars.
        let r = app
            .req("POST", "/api/v1/environments/prod/promote?wait=10s")
            .token(&app.admin)
            .json(&json!({"to": "stage"}))
            .send()
            .await;
        assert_eq!(
            r.expect(200)["sync"],
            json!({"connected": 0, "acked": 0, "lagging": [], "timed_out": false}),
            "{}",
            r.text
        );
        let r = app
            .req("POST", "/api/v1/environments/stage/promote?wait=10s")
            .token(&app.admin)
            .json(&json!({"to": "prod"}))
            .send()
            .await;
        assert_eq!(r.expect(200)["sync"], all, "{}", r.text);

        // A bad duration is a 400 naming the parameter, and nothing is written.
        let before = app.snapshot("prod").await;
        for bad in ["5", "1.5s", "2h", "61s", "soon"] {
            let r = app
                .req("PUT", &format!("{}?wait={bad}", flag_path("prod", "d")))
                .token(&app.admin)
                .json(&flag(true))
                .send()
                .await;
            let p = assert_problem(&r, 400);
            assert!(p["detail"].as_str().unwrap().starts_with("wait: "), "{p}");
        }
        app.assert_unchanged(&before, &app.snapshot("prod").await, "bad ?wait=");

        // A sidecar that cannot acknowledge (stopped): the wait ends at its deadline and names it.
        p2.process.signal("STOP");
        let started = Instant::now();
        let r = app
            .req("PUT", &format!("{}?wait=2s", flag_path("prod", "e")))
            .token(&app.admin)
            .json(&flag(true))
            .send()
            .await;
        let waited = started.elapsed();
        p2.process.signal("CONT");
        assert_eq!(
            r.expect(201)["sync"],
            json!({"connected": 2, "acked": 1, "lagging": ["p2"], "timed_out": true}),
            "{}",
            r.text
        );
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        assert!(waited < Duration::from_secs(8), "{waited:?}");
        // Resumed, it catches up: the next wait is whole again.
        let r = app
            .req("PUT", &format!("{}?wait=20s", flag_path("prod", "f")))
            .token(&app.admin)
            .json(&flag(true))
            .send()
            .await;
        assert_eq!(r.expect(201)["sync"], all, "{}", r.text);
        assert_eq!(p1.process.terminate(15), Some(0));
        assert_eq!(p2.process.terminate(15), Some(0));
    }
}

// ------------------------------------------------------------ change stream ----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How a stream client authenticates.
enum WsAuth<'a> {
    /// `Authorization: Bearer`.
    Header(&'a str),
    /// `Sec-WebSocket-Protocol` values.
    Protocols(&'a [&'a str]),
    None,
}

/// Opens `GET /api/v1/environments/{env}/events{query}` as a WebSocket.
async fn open_stream(
    app: &App,
    env: &str,
    query: &str,
    auth: WsAuth<'_>,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "ws://{}/api/v1/environments/{env}/events{query}",
        app.base.trim_start_matches("http://")
    );
    let mut req = url.into_client_request()?;
    match auth {
        WsAuth::Header(token) => {
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        WsAuth::Protocols(list) => {
            req.headers_mut()
                .insert("sec-websocket-protocol", list.join(", ").parse().unwrap());
        }
        WsAuth::None => {}
    }
    tokio_tungstenite::connect_async(req).await
}

/// The next JSON message of the stream (pings answered, other frames skipped), within 20 s.
async fn next_message(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).unwrap(),
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

/// The next message of `kind` (`type`), skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let m = next_message(ws).await;
        if m["type"] == kind {
            return m;
        }
    }
}

both_backends!(
    the_change_stream_carries_commits_and_resumes,
    |app: App| async move {
        app.create_env("prod").await;
        let r1 = put_flag(&app, "prod", "a", true).await;
        let (mut ws, response) = open_stream(&app, "prod", "", WsAuth::Header(&app.admin))
            .await
            .expect("the stream opens");
        assert_eq!(response.status(), 101);
        let ready = next_message(&mut ws).await;
        assert_eq!(
            ready,
            json!({"type": "ready", "environment": "prod", "revision": r1,
               "incarnation": app.store.get_environment("prod").await.unwrap().incarnation})
        );
        // A flag write arrives as one message, with its actor.
        let r2 = put_flag(&app, "prod", "b", false).await;
        let change = next_of(&mut ws, "change").await;
        assert_eq!(change["revision"], r2, "{change}");
        assert_eq!(change["environment"], "prod");
        assert_eq!(change["kind"], "flag");
        assert_eq!(change["action"], "flag.create");
        assert_eq!(change["keys"], json!(["b"]));
        assert_eq!(change["actor"], "admin");
        assert!(change["time"].as_str().unwrap().ends_with('Z'), "{change}");
        // A whole-set write names every flag it changed.
        let r = app
            .put_json(
                "/api/v1/environments/prod/flagset",
                &json!({"flags": {"a": flag(true), "c": flag(true)}}),
                &app.admin,
            )
            .await;
        r.expect(200);
        let change = next_of(&mut ws, "change").await;
        assert_eq!(change["kind"], "flagset", "{change}");
        assert_eq!(change["action"], "flagset.replace");
        assert_eq!(change["keys"], json!(["b", "c"]), "{change}");
        let r3 = change["revision"].as_i64().unwrap();
        drop(ws);

        // Resume: the changes after r1 first, then ready, then live.
        let (mut ws, _) = open_stream(
            &app,
            "prod",
            &format!("?from_revision={r1}"),
            WsAuth::Header(&app.admin),
        )
        .await
        .unwrap();
        let replayed: Vec<i64> = vec![
            next_message(&mut ws).await["revision"].as_i64().unwrap(),
            next_message(&mut ws).await["revision"].as_i64().unwrap(),
        ];
        assert_eq!(replayed, [r2, r3]);
        assert_eq!(next_message(&mut ws).await["type"], "ready");
        let r4 = put_flag(&app, "prod", "d", true).await;
        assert_eq!(next_of(&mut ws, "change").await["revision"], r4);
        drop(ws);

        // Resume from before what retention kept: reset, with where to go on from.
        app.store
            .prune(
                &vexil_control::store::Retention {
                    changes_max_age: None,
                    changes_max_count: Some(1),
                    audit_max_age: None,
                    audit_max_count: None,
                    sessions_max_age: None,
                    usage_max_age: None,
                },
                vexil_control::model::now_millis(),
            )
            .await
            .unwrap();
        let (mut ws, _) = open_stream(&app, "prod", "?from_revision=1", WsAuth::Header(&app.admin))
            .await
            .unwrap();
        let reset = next_message(&mut ws).await;
        assert_eq!(reset["type"], "reset", "{reset}");
        assert_eq!(reset["revision"], r4);
        assert_eq!(next_message(&mut ws).await["type"], "ready");
        drop(ws);
    }
);

both_backends!(
    the_change_stream_authenticates_like_the_api,
    |app: App| async move {
        use tokio_tungstenite::tungstenite::Error as WsError;
        app.create_env("prod").await;
        app.create_env("dev").await;
        let (_, viewer) = app.token("viewer", "viewer", &["prod"]).await;
        type Opened = (
            Ws,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        );
        let status = |r: Result<Opened, WsError>| match r {
            Err(WsError::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("{e}"),
            Ok((_, response)) => response.status().as_u16(),
        };
        // No token: 401; a token in the query string: 400; another environment: 403.
        assert_eq!(
            status(open_stream(&app, "prod", "", WsAuth::None).await),
            401
        );
        assert_eq!(
            status(open_stream(&app, "prod", &format!("?token={viewer}"), WsAuth::None).await),
            400
        );
        assert_eq!(
            status(open_stream(&app, "dev", "", WsAuth::Header(&viewer)).await),
            403
        );
        assert_eq!(
            status(open_stream(&app, "nope", "", WsAuth::Header(&app.admin)).await),
            404
        );
        // A viewer through the subprotocol (what a browser can do); vexil.events.v1 is chosen when
        // offered, else the token's protocol is echoed.
        let token_protocol = format!("vexil.token.{viewer}");
        let (mut ws, response) = open_stream(
            &app,
            "prod",
            "",
            WsAuth::Protocols(&["vexil.events.v1", &token_protocol]),
        )
        .await
        .expect("a viewer may subscribe");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "vexil.events.v1"
        );
        assert_eq!(next_message(&mut ws).await["type"], "ready");
        let rev = put_flag(&app, "prod", "a", true).await;
        assert_eq!(next_of(&mut ws, "change").await["revision"], rev);
        drop(ws);
        let (_, response) = open_stream(&app, "prod", "", WsAuth::Protocols(&[&token_protocol]))
            .await
            .expect("a viewer may subscribe");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            token_protocol.as_str()
        );
        let bad = "vexil.token.vxl_not-a-token";
        assert_eq!(
            status(open_stream(&app, "prod", "", WsAuth::Protocols(&[bad])).await),
            401
        );
    }
);

both_backends!(the_change_stream_reports_the_fleet, |app: App| async move {
    app.create_env("prod").await;
    let rev = put_flag(&app, "prod", "a", true).await;
    let (mut ws, _) = open_stream(&app, "prod", "", WsAuth::Header(&app.admin))
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "ready");
    let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
    let mut c = config(&app, "prod", &token, None);
    c.client_id = "pod-9".into();
    let sidecar = spawn(c);
    sidecar.wait_revision(rev).await;
    let connected = next_of(&mut ws, "sidecar").await;
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["id"], "pod-9");
    assert_eq!(connected["environment"], "prod");
    // Its first acknowledgement may come with the connection or right after it.
    if connected["revision"] != rev {
        let acked = next_of(&mut ws, "sidecar").await;
        assert_eq!(acked["event"], "acked", "{acked}");
        assert_eq!(acked["revision"], rev);
    }
    let rev = put_flag(&app, "prod", "a", false).await;
    sidecar.wait_revision(rev).await;
    assert_eq!(next_of(&mut ws, "change").await["revision"], rev);
    let acked = next_of(&mut ws, "sidecar").await;
    assert_eq!(acked["event"], "acked", "{acked}");
    assert_eq!(acked["revision"], rev);
    sidecar.handle.shutdown().await;
    let gone = next_of(&mut ws, "sidecar").await;
    assert_eq!(gone["event"], "disconnected", "{gone}");
    assert_eq!(gone["id"], "pod-9");
    assert_eq!(gone["stale"], false);
});

// A client that stops reading is closed once a message has waited 10 s, with a reason naming the
// revision to resume from (after the messages it was sent before).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_stream_client_that_stops_reading_is_closed_with_where_to_resume() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    // Whole-set writes that swap 2,000 flags with long keys: each change message lists 4,000 keys
    // (about 250 KB), so a few dozen fill the socket buffers.
    let set = |prefix: &str| {
        let flags: serde_json::Map<String, Value> = (0..2000)
            .map(|i| (format!("{prefix}-{i:04}-{}", "k".repeat(50)), flag(true)))
            .collect();
        json!({ "flags": flags })
    };
    let (a, b) = (set("a"), set("b"));
    for i in 0..40 {
        let doc = if i % 2 == 0 { &a } else { &b };
        app.put_json("/api/v1/environments/prod/flagset", doc, &app.admin)
            .await
            .expect(200);
    }
    // A client with a small receive buffer that replays everything and reads nothing.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    let mut req = format!("ws://{addr}/api/v1/environments/prod/events?from_revision=0")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", app.admin).parse().unwrap(),
    );
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    .expect("the handshake within 30 s")
    .unwrap();
    // More changes while it reads nothing, so the server has more to send whatever the pace.
    let writer = {
        let app = app.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let doc = if i % 2 == 0 { &b } else { &a };
                app.put_json("/api/v1/environments/prod/flagset", doc, &app.admin)
                    .await
                    .expect(200);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(15)).await;
    writer.abort();
    // Reading on: the changes it was sent, then the close with the reason.
    let (mut last, mut changes) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let close = loop {
        assert!(
            Instant::now() < deadline,
            "not closed within 60 s of reading on: {changes} changes, up to {last}"
        );
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let m: Value = serde_json::from_str(&text).unwrap();
                if m["type"] == "change" {
                    changes += 1;
                    last = m["revision"].as_i64().unwrap();
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => break frame.expect("a close frame"),
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame after {changes} changes: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.contains("too slow"), "{close:?}");
    // The revision named is the last one sent whole; the one whose write timed out may still have
    // arrived: resuming from the named one loses nothing (it may repeat one).
    let named: i64 = close
        .reason
        .rsplit("from_revision=")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{close:?}"));
    assert!(
        named == last || named == last - 1,
        "{close:?} after revision {last}"
    );
    let head = app.store.get_environment("prod").await.unwrap().revision;
    assert!(
        last < head,
        "it was closed before all of them: {last} of {head}"
    );
    server.stop().await;
}

// At most 256 change streams per replica: one more is `503` with `Retry-After`, while the open
// ones go on carrying commits and the REST API answers; when one closes, a new one is accepted.
// The streams share one poller per environment, so 256 of them cost the store no more than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_streams_are_capped_per_replica() {
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    let max = vexil_control::api::events::MAX_STREAMS;
    let mut open = Vec::with_capacity(max);
    for i in 0..max {
        let (mut ws, _) = open_stream(&app, "prod", "", WsAuth::Header(&app.admin))
            .await
            .unwrap_or_else(|e| panic!("stream {i} opens: {e}"));
        assert_eq!(next_message(&mut ws).await["type"], "ready");
        open.push(ws);
    }
    let refused = open_stream(&app, "prod", "", WsAuth::Header(&app.admin)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers()["retry-after"], "1");
        }
        other => panic!(
            "the stream over the cap: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // The REST API still answers, and the open streams (first and last) carry a commit.
    let r = put_flag(&app, "prod", "a", true).await;
    for i in [0, max - 1] {
        assert_eq!(next_of(&mut open[i], "change").await["revision"], r);
    }
    // One closes: a new stream is accepted.
    let first = open.remove(0);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open_stream(&app, "prod", "", WsAuth::Header(&app.admin)).await {
            Ok((mut ws, _)) => {
                assert_eq!(next_message(&mut ws).await["type"], "ready");
                break;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no stream accepted after one closed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(open);
    server.stop().await;
}
