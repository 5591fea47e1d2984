//! Guarded rollouts (issue 22, ADR 0035): a guard compares the upstream's answers to requests that
//! carried a flag's rollout variant with those that carried its baseline, as real sidecars report
//! them, and switches the flag when the rollout is worse beyond its threshold. Real control on
//! both databases, real sidecars (`vexil-proxy` processes), a real upstream that fails on purpose.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::{Value, json};
use vexil_control::store::OutcomeRow;
use vexil_testkit::proxy::{ProxyCmd, ProxyProcess};

/// `checkout`: a 50 % rollout of `new` against `old`, by user.
fn checkout() -> Value {
    json!({"state": "ENABLED", "variants": {"new": "new", "old": "old"}, "defaultVariant": "old",
        "targeting": {"fractional": [{"var": "targetingKey"}, ["new", 50], ["old", 50]]}})
}

/// The guard of the tests: the rollout's failure share may be 5 points above the baseline's,
/// looked at from 100 answers per arm, a false trip at most 1 % likely.
fn guard() -> Value {
    json!({"rollout": "new", "baseline": "old", "signal": "error_rate", "threshold": 0.05,
        "min_sample": 100, "alpha": 0.01, "action": "set_variant", "safe_variant": "old"})
}

/// The guard's and sidecars' reports land within this.
fn fast_flush(c: &mut vexil_control::config::ControlConfig) {
    c.sync.usage_flush_interval = Duration::from_millis(100);
}

fn fast() -> Options {
    Options {
        configure: Some(fast_flush),
        ..Options::default()
    }
}

/// An upstream that answers 200 after `delay` to requests carrying `checkout="new"`, at once to
/// the others.
async fn slow_upstream(delay: Duration) -> SocketAddr {
    let app = axum::Router::new().fallback(move |headers: HeaderMap| async move {
        let flags = headers
            .get("vexil-flags")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if flags.contains("checkout=\"new\"") {
            tokio::time::sleep(delay).await;
        }
        (StatusCode::OK, flags)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An upstream that answers 500 to every fifth request carrying `checkout="new"` (and, with
/// `both`, to every fifth carrying `checkout="old"` too), 200 otherwise; it counts its 500s.
async fn failing_upstream(both: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let seen = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let failures = Arc::new(AtomicU64::new(0));
    let f = failures.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let (seen, failures) = (seen.clone(), f.clone());
        async move {
            let flags = headers
                .get("vexil-flags")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let arm = if flags.contains("checkout=\"new\"") {
                Some(0)
            } else if both && flags.contains("checkout=\"old\"") {
                Some(1)
            } else {
                None
            };
            let fail = arm.is_some_and(|a| seen[a].fetch_add(1, Ordering::SeqCst) % 5 == 4);
            if fail {
                failures.fetch_add(1, Ordering::SeqCst);
                (StatusCode::INTERNAL_SERVER_ERROR, flags.to_string())
            } else {
                (StatusCode::OK, flags.to_string())
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, failures)
}

/// A sidecar following `prod`, deciding `checkout` by `x-user-id`, reporting every second.
fn sidecar(app: &App, token: &str, dir: &TempDir) -> ProxyCmd {
    let toml = dir.path().join("proxy.toml");
    std::fs::write(
        &toml,
        "[context]\ntargetingKey = [\"header:x-user-id\"]\n\n[[routes]]\nflags = [\"checkout\"]\n",
    )
    .unwrap();
    ProxyCmd::new()
        .args(["--control", &app.sync_url(), "--environment", "prod"])
        .arg("--ca-file")
        .arg(app.ca_file())
        .arg("--state-dir")
        .arg(dir.sub("state"))
        .arg("--config")
        .arg(&toml)
        .args(["--usage-interval-secs", "1"])
        .env("VEXIL_TOKEN", token)
        .grace_secs(1)
}

/// Sends `n` requests of new users (numbered from `first`) through the sidecar at `outbound`;
/// returns how many were answered 500, and the `vexil-flags` values the upstream saw.
async fn requests(
    proxy: &ProxyProcess,
    upstream: SocketAddr,
    first: u64,
    n: u64,
) -> (u64, Vec<String>) {
    let client = proxy.client();
    let (mut failed, mut flags) = (0, Vec::new());
    for i in first..first + n {
        let r = client
            .get(format!("http://{upstream}/pay"))
            .header("x-user-id", format!("user-{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == 500 {
            failed += 1;
        }
        flags.push(r.text().await.unwrap());
    }
    (failed, flags)
}

/// What [`guard_until`] waits for.
#[derive(Clone, Copy)]
enum Want {
    /// This many requests counted (both arms), or the guard tripped.
    CountedOrTripped(u64),
    /// This many requests counted.
    Counted(u64),
    /// Anything: read it once.
    Now,
}

/// The guard's record, polled until `want` holds (at most 30 s). (Owned arguments: a future
/// holding references does not satisfy the test runner's `Send` bound.)
/// Sends requests through `proxy` in steps of `step`, each waited for in the guard's counts,
/// until the guard trips (fails after `most` requests); the tripped guard.
async fn until_tripped(
    app: &App,
    proxy: &ProxyProcess,
    upstream: SocketAddr,
    step: u64,
    most: u64,
) -> Value {
    let mut sent = 0;
    loop {
        requests(proxy, upstream, sent, step).await;
        sent += step;
        let g = guard_until(app.clone(), Want::CountedOrTripped(sent)).await;
        if g["state"] == "tripped" {
            return g;
        }
        assert!(sent < most, "no trip after {sent} requests: {g}");
    }
}

async fn guard_until(app: App, want: Want) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = app
            .get("/api/v1/environments/prod/flags/checkout/guard", &app.admin)
            .await
            .expect(200)
            .clone();
        let done = match want {
            Want::CountedOrTripped(n) => g["state"] == "tripped" || counted(&g) == n,
            Want::Counted(n) => counted(&g) == n,
            Want::Now => true,
        };
        if done {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "the guard never showed the counts: {g}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn counted(g: &Value) -> u64 {
    g["rollout"]["requests"].as_u64().unwrap() + g["baseline"]["requests"].as_u64().unwrap()
}

/// An upstream failing 20 % of the requests that carry the new variant, a 50 % rollout: the guard
/// trips at its first look (100 answers per arm: z = 3.75 against 2.58), the flag is switched
/// to `old` by the actor `guard`, the audit entry holds the figures, and the failures stop.
async fn a_failing_rollout_is_switched_off(backend: Backend) {
    // Not `run`: a spawned body holding these futures does not satisfy its `Send` bound.
    let Some(server) = start(backend, fast()).await else {
        return;
    };
    let app = server.app.clone();
    {
        app.create_env("prod").await;
        app.create_flag("prod", "checkout", &checkout()).await;
        let armed = app
            .put_json(
                "/api/v1/environments/prod/flags/checkout/guard",
                &guard(),
                &app.admin,
            )
            .await
            .expect(200)
            .clone();
        assert_eq!(armed["state"], "armed", "{armed}");
        let (_, token) = app.token("sidecars", "sidecar", &["prod"]).await;
        let (upstream, failures) = failing_upstream(false).await;
        let dir = TempDir::new("vexil-guards");
        let mut proxy = sidecar(&app, &token, &dir).start();
        proxy.wait_ready().await;

        // Steps of 40 requests, each waited for in the guard's counts, until it trips: the look
        // that trips is the first (both arms between 100 and 200 answers).
        let tripped = until_tripped(&app, &proxy, upstream, 40, 600).await;
        let look = &tripped["trip"]["look"];
        assert_eq!(look["k"], 0, "{tripped}");
        assert!(look["trips"].as_bool().unwrap());
        let n = look["rollout"]["requests"].as_u64().unwrap();
        assert!((100..200).contains(&n), "{look}");
        assert!(
            look["rollout"]["failure_share"].as_f64().unwrap() >= 0.15,
            "{look}"
        );
        assert_eq!(look["baseline"]["failures"], 0);

        // The flag: everyone gets `old` now, written by `guard`, with the figures in the audit.
        let flag = app
            .get(&flag_path("prod", "checkout"), &app.admin)
            .await
            .expect(200)
            .clone();
        assert_eq!(flag["definition"]["defaultVariant"], "old");
        assert!(flag["definition"].get("targeting").is_none(), "{flag}");
        let audit = app
            .get("/api/v1/audit?actor=guard", &app.admin)
            .await
            .expect(200)
            .clone();
        let entry = &audit["items"][0];
        assert_eq!(entry["action"], "flag.guard.trip", "{audit}");
        assert_eq!(entry["target"], "checkout");
        assert_eq!(entry["note"]["look"]["z"], look["z"], "{entry}");
        assert_eq!(entry["note"]["guard"]["rollout"], "new");

        // The change reaches the sidecar like any other: the failures stop.
        let revision = flag_revision(app.clone()).await;
        wait_for_revision(proxy.admin.clone(), revision).await;
        let before = failures.load(Ordering::SeqCst);
        let (failed, seen) = requests(&proxy, upstream, 10_000, 100).await;
        assert_eq!(failed, 0);
        assert_eq!(failures.load(Ordering::SeqCst), before);
        assert!(
            seen.iter().all(|f| f.contains("checkout=\"old\"")),
            "{seen:?}"
        );
        // Tripped stays tripped: more traffic makes no new look.
        let g = guard_until(app.clone(), Want::Now).await;
        assert_eq!(g["state"], "tripped");
        assert_eq!(g["looks"], 1);
        proxy.process.assert_running();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_rollout_is_switched_off_sqlite() {
    a_failing_rollout_is_switched_off(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_rollout_is_switched_off_postgres() {
    a_failing_rollout_is_switched_off(Backend::Postgres).await;
}

async fn flag_revision(app: App) -> i64 {
    app.get("/api/v1/environments/prod", &app.admin)
        .await
        .expect(200)["revision"]
        .as_i64()
        .unwrap()
}

/// Waits until the sidecar whose admin address is `admin` holds `revision`.
async fn wait_for_revision(admin: String, revision: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snap: Value = reqwest::get(format!("{admin}/debug/snapshot"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if snap["revision"].as_i64() >= Some(revision) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar never held {revision}: {snap}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The latency signal: the new variant's answers take 40 ms, the old one's a few; a guard on the
/// 90th percentile with a ratio of 2 trips at its first look (every rollout answer is slower than
/// twice the baseline's p90: a share of 1 against 0.1) and switches the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_rollout_is_switched_off() {
    let Some(server) = start(Backend::Sqlite, fast()).await else {
        return;
    };
    let app = server.app.clone();
    {
        app.create_env("prod").await;
        app.create_flag("prod", "checkout", &checkout()).await;
        let mut latency = guard();
        latency["signal"] = json!("latency");
        latency["percentile"] = json!(90.0);
        latency["threshold"] = json!(2.0);
        latency["min_sample"] = json!(30);
        app.put_json(
            "/api/v1/environments/prod/flags/checkout/guard",
            &latency,
            &app.admin,
        )
        .await
        .expect(200);
        let (_, token) = app.token("sidecars", "sidecar", &["prod"]).await;
        let upstream = slow_upstream(Duration::from_millis(40)).await;
        let dir = TempDir::new("vexil-guards");
        let mut proxy = sidecar(&app, &token, &dir).start();
        proxy.wait_ready().await;
        let tripped = until_tripped(&app, &proxy, upstream, 20, 300).await;
        let look = &tripped["trip"]["look"];
        assert_eq!(look["k"], 0, "{tripped}");
        assert_eq!(look["rollout_slow_share"], 1.0, "{look}");
        assert!(
            look["baseline_percentile_ms"].as_f64().unwrap() < 20.0,
            "{look}"
        );
        let flag = app
            .get(&flag_path("prod", "checkout"), &app.admin)
            .await
            .expect(200)
            .clone();
        assert_eq!(flag["definition"]["defaultVariant"], "old");
        proxy.process.assert_running();
    }
    server.stop().await;
}

/// Both arms fail alike (20 %): over 800 requests (about 400 answers per arm: looks at 100, 200
/// and 400) the guard never trips, and the flag is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arms_that_fail_alike_never_trip() {
    let Some(server) = start(Backend::Sqlite, fast()).await else {
        return;
    };
    let app = server.app.clone();
    {
        app.create_env("prod").await;
        app.create_flag("prod", "checkout", &checkout()).await;
        app.put_json(
            "/api/v1/environments/prod/flags/checkout/guard",
            &guard(),
            &app.admin,
        )
        .await
        .expect(200);
        let (_, token) = app.token("sidecars", "sidecar", &["prod"]).await;
        let (upstream, failures) = failing_upstream(true).await;
        let dir = TempDir::new("vexil-guards");
        let mut proxy = sidecar(&app, &token, &dir).start();
        proxy.wait_ready().await;
        let (failed, _) = requests(&proxy, upstream, 0, 800).await;
        assert!(failed >= 150, "{failed}");
        assert_eq!(failures.load(Ordering::SeqCst), failed);
        let g = guard_until(app.clone(), Want::Counted(800)).await;
        assert_eq!(g["state"], "armed", "{g}");
        assert!(g["looks"].as_u64().unwrap() >= 2, "{g}");
        assert_eq!(g["last_look"]["trips"], false, "{g}");
        assert!(g["rollout"]["failures"].as_u64().unwrap() > 50, "{g}");
        let flag = app
            .get(&flag_path("prod", "checkout"), &app.admin)
            .await
            .expect(200)
            .clone();
        assert_eq!(flag["definition"], checkout());
        proxy.process.assert_running();
    }
    server.stop().await;
}

both_backends!(
    guards_are_checked_audited_and_delivered,
    |app: App| async move {
        app.create_env("prod").await;
        app.create_flag("prod", "checkout", &checkout()).await;
        let path = "/api/v1/environments/prod/flags/checkout/guard";
        // Bad definitions: 400 naming the field.
        for (change, field) in [
            (json!({"rollout": "nope"}), "rollout"),
            (json!({"baseline": "new"}), "baseline"),
            (json!({"threshold": 0.9}), "threshold"),
            (json!({"min_sample": 1}), "min_sample"),
            (json!({"alpha": 0.5}), "alpha"),
            (json!({"safe_variant": "gone"}), "safe_variant"),
            (json!({"signal": "latency", "threshold": 2.0}), "percentile"),
        ] {
            let mut body = guard();
            for (k, v) in change.as_object().unwrap() {
                body[k] = v.clone();
            }
            let r = app.put_json(path, &body, &app.admin).await;
            let p = assert_problem(&r, 400);
            assert!(
                p["detail"].as_str().unwrap().starts_with(field),
                "{field}: {p}"
            );
        }
        let mut unknown = guard();
        unknown["extra"] = json!(1);
        assert_problem(&app.put_json(path, &unknown, &app.admin).await, 400);
        assert_problem(
            &app.put_json(
                "/api/v1/environments/prod/flags/missing/guard",
                &guard(),
                &app.admin,
            )
            .await,
            404,
        );
        assert_problem(&app.get(path, &app.admin).await, 404);
        // Viewers read, editors write.
        let viewer = app.token("viewer", "viewer", &["prod"]).await.1;
        assert_problem(&app.put_json(path, &guard(), &viewer).await, 403);
        let before = flag_revision(app.clone()).await;
        app.put_json(path, &guard(), &app.admin).await.expect(200);
        // Arming is a revision: sidecars learn the guarded flags.
        assert_eq!(flag_revision(app.clone()).await, before + 1);
        let list = app
            .get("/api/v1/environments/prod/guards", &viewer)
            .await
            .expect(200)
            .clone();
        assert_eq!(list[0]["flag"], "checkout", "{list}");
        assert_eq!(list[0]["guard"]["alpha"], 0.01);
        assert_eq!(app.store.guarded_flags("prod").await.unwrap(), ["checkout"]);

        // Counts written by two "replicas" add up; outcomes of other variants or flags are not kept.
        let row = |variant: &str, ok: u64, failed: u64| {
            let mut counts = [0u64; vexil_control::guards::BUCKETS];
            counts[1] = ok;
            counts[4] = failed;
            counts[6] = ok + failed;
            OutcomeRow {
                environment: "prod".into(),
                flag: "checkout".into(),
                variant: Some(variant.into()),
                counts,
            }
        };
        let limits = vexil_control::store::WriteLimits::default();
        let ids = app
            .store
            .record_outcomes(&[row("new", 40, 10), row("old", 50, 0), row("x", 9, 9)])
            .await
            .unwrap();
        assert_eq!(ids.len(), 1);
        // Below the sample: no look.
        assert!(
            app.store
                .look_at_guard(ids[0], limits)
                .await
                .unwrap()
                .is_none()
        );
        app.store
            .record_outcomes(&[row("new", 40, 10), row("old", 50, 0)])
            .await
            .unwrap();
        let g = app.get(path, &app.admin).await.expect(200).clone();
        assert_eq!(g["rollout"]["requests"], 100);
        assert_eq!(g["rollout"]["failures"], 20);
        assert_eq!(g["baseline"]["requests"], 100);
        // Two replicas look at once: one look, one trip, one write by `guard`.
        let (a, b) = tokio::join!(
            app.store.look_at_guard(ids[0], limits),
            app.store.look_at_guard(ids[0], limits)
        );
        let looks: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
        assert_eq!(looks.len(), 1, "{looks:?}");
        assert!(looks[0].trips);
        let g = app.get(path, &app.admin).await.expect(200).clone();
        assert_eq!(g["state"], "tripped", "{g}");
        let audit = app
            .get("/api/v1/audit?actor=guard", &app.admin)
            .await
            .expect(200)
            .clone();
        assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
        // Tripped: counts are no longer taken.
        assert!(
            app.store
                .record_outcomes(&[row("new", 40, 10)])
                .await
                .unwrap()
                .is_empty()
        );
        // A person resets it: armed, from zero, audited; the flag stays as the trip left it.
        assert_problem(
            &app.post_json(&format!("{path}/reset"), &json!({}), &viewer)
                .await,
            403,
        );
        let reset = app
            .post_json(&format!("{path}/reset"), &json!({}), &app.admin)
            .await
            .expect(200)
            .clone();
        assert_eq!(reset["state"], "armed");
        assert_eq!(reset["rollout"]["requests"], 0);
        assert_eq!(reset["looks"], 0);
        let flag = app
            .get(&flag_path("prod", "checkout"), &app.admin)
            .await
            .expect(200)
            .clone();
        assert_eq!(flag["definition"]["defaultVariant"], "old");
        // Removed: a revision, and no guarded flags.
        let before = flag_revision(app.clone()).await;
        assert_eq!(app.delete(path, &app.admin).await.status, 204);
        assert_eq!(flag_revision(app.clone()).await, before + 1);
        assert!(app.store.guarded_flags("prod").await.unwrap().is_empty());
        assert_problem(&app.delete(path, &app.admin).await, 404);
        let actions: Vec<String> = app
            .get("/api/v1/audit?target=checkout", &app.admin)
            .await
            .expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        for action in [
            "flag.guard.put",
            "flag.guard.trip",
            "flag.guard.reset",
            "flag.guard.delete",
        ] {
            assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
        }
    }
);
