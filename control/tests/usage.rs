//! Flag usage (issue 22, ADR 0034): sidecars count their decisions per flag and variant and report
//! them over the sync stream; control adds them up per environment, flag, variant and hour and
//! reports the share of each variant, the flags nobody evaluates and the targeted flags that serve
//! one variant. Real control on both databases, real sidecars (`vexil-proxy` processes), a real
//! upstream; rows in the past are written through the store with explicit hours.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use vexil_control::model::now_millis;
use vexil_control::store::{HOUR_MS, Pruned, Retention, UsageRow, hour_of};
use vexil_proto::sync::v1::{FlagUsage, UsageReport, VariantUsage};
use vexil_testkit::echo::Echo;
use vexil_testkit::proxy::{ProxyCmd, ProxyProcess};

/// `checkout`: `on` for the user `vip`, `off` for anyone else.
fn checkout() -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"if": [{"==": [{"var": "targetingKey"}, "vip"]}, "on", "off"]}})
}

/// `legacy`: targeted, but only for a user nobody is: always `off`.
fn legacy() -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"if": [{"==": [{"var": "targetingKey"}, "nobody"]}, "on", "off"]}})
}

/// The usage API's writes land within this: short, so the tests do not wait.
fn fast_flush(c: &mut vexil_control::config::ControlConfig) {
    c.sync.usage_flush_interval = Duration::from_millis(100);
}

fn row(env: &str, flag: &str, variant: Option<&str>, hour: i64, n: i64) -> UsageRow {
    UsageRow {
        environment: env.into(),
        flag: flag.into(),
        variant: variant.map(str::to_string),
        hour,
        evaluations: n,
    }
}

/// `(variant, evaluations)` of `flag` in a usage report, most evaluated first.
fn variants_of(report: &Value, flag: &str) -> Vec<(Option<String>, i64)> {
    let f = report["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["flag"] == flag)
        .unwrap_or_else(|| panic!("no {flag} in {report}"));
    f["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["variant"].as_str().map(str::to_string),
                v["evaluations"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn keys(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| f["flag"].as_str().unwrap())
        .collect()
}

both_backends!(
    the_usage_report_and_stale_flags_from_rows_in_the_past,
    |app: App| async move {
        app.create_env("prod").await;
        app.create_env("dev").await;
        for (key, def) in [
            ("checkout", checkout()),
            ("legacy", legacy()),
            ("banner", bool_flag()),
            ("old", checkout()),
            ("never", bool_flag()),
        ] {
            app.create_flag("prod", key, &def).await;
        }
        app.create_flag("dev", "checkout", &checkout()).await;
        let now = now_millis();
        let hour = hour_of(now);
        let days_ago = |d: i64| hour - d * 24 * HOUR_MS;
        // Two replicas write the same rows: they add up. A flag the environment does not have,
        // and an environment that does not exist, are not kept.
        let rows = [
            row("prod", "checkout", Some("on"), hour, 30),
            row("prod", "checkout", Some("off"), hour - HOUR_MS, 60),
            row("prod", "checkout", None, days_ago(3), 10),
            row("prod", "legacy", Some("off"), days_ago(2), 500),
            row("prod", "banner", Some("on"), hour - 25 * HOUR_MS, 7),
            row("prod", "old", Some("on"), days_ago(40), 9),
            row("prod", "deleted-meanwhile", Some("on"), hour, 1),
            row("nowhere", "checkout", Some("on"), hour, 1),
            row("dev", "checkout", Some("on"), hour, 1000),
        ];
        assert_eq!(app.store.record_usage(&rows).await.unwrap(), 7);
        app.store.record_usage(&rows[..3]).await.unwrap();

        let viewer = app.token("viewer", "viewer", &["prod"]).await.1;
        let report = app
            .get("/api/v1/environments/prod/usage?days=7", &viewer)
            .await
            .expect(200)
            .clone();
        assert_eq!(report["days"], 7);
        assert_eq!(
            variants_of(&report, "checkout"),
            [
                (Some("off".into()), 120),
                (Some("on".into()), 60),
                (None, 20)
            ]
        );
        let c = &report["flags"].as_array().unwrap()[1];
        assert_eq!(c["flag"], "checkout", "flags by key: {report}");
        assert_eq!(c["evaluations"], 200);
        assert_eq!(c["targeted"], true);
        assert_eq!(c["variants"][0]["share"], 0.6);
        assert_eq!(c["last_evaluated"], vexil_control::model::rfc3339(hour));
        // Every flag is there, evaluated or not; a window of one day leaves out the older rows.
        assert_eq!(
            keys(&report["flags"]),
            ["banner", "checkout", "legacy", "never", "old"]
        );
        assert!(variants_of(&report, "never").is_empty());
        assert!(variants_of(&report, "old").is_empty());
        let day = app
            .get("/api/v1/environments/prod/usage?days=1", &viewer)
            .await
            .expect(200)
            .clone();
        assert_eq!(
            variants_of(&day, "checkout"),
            [(Some("off".into()), 120), (Some("on".into()), 60)]
        );

        // Stale: no evaluation in 30 days (with the last one before, if any), and targeted flags
        // serving one variant. `banner` serves one variant too, but has no rule.
        let stale = app
            .get("/api/v1/environments/prod/usage/stale?days=30", &viewer)
            .await
            .expect(200)
            .clone();
        assert_eq!(keys(&stale["unused"]), ["never", "old"], "{stale}");
        assert_eq!(stale["unused"][0]["last_evaluated"], Value::Null);
        assert_eq!(
            stale["unused"][1]["last_evaluated"],
            vexil_control::model::rfc3339(days_ago(40))
        );
        assert!(stale["unused"][0]["created_at"].is_string());
        assert_eq!(keys(&stale["constant"]), ["legacy"], "{stale}");
        assert_eq!(stale["constant"][0]["variant"], "off");
        assert_eq!(stale["constant"][0]["evaluations"], 500);
        // Within a day, `legacy` was not evaluated at all.
        let stale = app
            .get("/api/v1/environments/prod/usage/stale?days=1", &viewer)
            .await
            .expect(200)
            .clone();
        assert_eq!(keys(&stale["unused"]), ["banner", "legacy", "never", "old"]);
        assert_eq!(keys(&stale["constant"]), Vec::<&str>::new());

        // Bad windows, other environments, unknown ones.
        for bad in ["days=0", "days=401", "days=x", "window=3"] {
            let r = app
                .get(&format!("/api/v1/environments/prod/usage?{bad}"), &viewer)
                .await;
            assert_problem(&r, 400);
        }
        app.get("/api/v1/environments/dev/usage", &viewer)
            .await
            .expect(403);
        app.get("/api/v1/environments/nope/usage/stale", &app.admin)
            .await
            .expect(404);

        // Retention: hours older than the bound go.
        let pruned = app
            .store
            .prune(
                &Retention {
                    changes_max_age: None,
                    changes_max_count: None,
                    audit_max_age: None,
                    audit_max_count: None,
                    sessions_max_age: None,
                    usage_max_age: Some(Duration::from_secs(10 * 86_400)),
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!(
            pruned,
            Pruned {
                usage: 1,
                ..Pruned::default()
            }
        );
        assert!(
            !app.store
                .last_usage("prod")
                .await
                .unwrap()
                .contains_key("old")
        );
        // An environment's usage goes with it.
        app.delete("/api/v1/environments/dev?force=true", &app.admin)
            .await
            .expect(204);
        app.create_env("dev").await;
        app.create_flag("dev", "checkout", &checkout()).await;
        assert!(app.store.last_usage("dev").await.unwrap().is_empty());
    }
);

/// The sum of `vexil_control_usage_reports_total{result=...}`.
fn reports_counted(app: &App, result: &str) -> u64 {
    let text = app.state.metrics.render();
    let prefix = format!("vexil_control_usage_reports_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

both_backends!(
    bad_reports_are_refused_and_the_stream_goes_on,
    options = Options {
        configure: Some(fast_flush),
        ..Options::default()
    },
    |app: App| async move {
        use vexil_proto::frame::FrameCodec;
        use vexil_proto::sync::v1::server_frame::Kind;
        use vexil_proto::sync::v1::{ClientFrame, client_frame};
        app.create_env("prod").await;
        app.create_flag("prod", "checkout", &checkout()).await;
        let (_, token) = app.token("sidecars", "sidecar", &["prod"]).await;
        let (_conn, mut send, mut frames) = subscribe_stream(&app, "prod", &token, 0).await;
        let Some(Kind::Welcome(welcome)) = next_frame(&mut frames).await else {
            panic!("a Welcome first");
        };
        assert_eq!(welcome.usage_max_entries, 5000);
        assert!(matches!(next_frame(&mut frames).await, Some(Kind::Full(_))));
        let report = |flag: &str, variants: Vec<(Option<&str>, u64)>| UsageReport {
            flags: vec![FlagUsage {
                flag: flag.into(),
                variants: variants
                    .into_iter()
                    .map(|(v, n)| VariantUsage {
                        variant: v.map(str::to_string),
                        evaluations: n,
                        outcomes: None,
                    })
                    .collect(),
            }],
            ..UsageReport::default()
        };
        let mut too_many = report("checkout", vec![]);
        too_many.flags[0].variants = (0..5001)
            .map(|i| VariantUsage {
                variant: Some(format!("v{i}")),
                evaluations: 1,
                outcomes: None,
            })
            .collect();
        // Outcomes that are not 6 status classes and 32 latency buckets.
        let mut short_outcomes = report("checkout", vec![(Some("on"), 1)]);
        short_outcomes.flags[0].variants[0].outcomes = Some(vexil_proto::sync::v1::Outcomes {
            status_classes: vec![1; 5],
            latency: vec![0; 32],
        });
        let bad = [
            (short_outcomes, "invalid"),
            (report("Checkout", vec![(Some("on"), 1)]), "invalid"),
            (report("checkout", vec![(Some("on"), 0)]), "invalid"),
            (
                report("checkout", vec![(Some("on"), 1), (Some("on"), 2)]),
                "invalid",
            ),
            (report("checkout", vec![(None, 1u64 << 60)]), "absurd_count"),
            (too_many, "too_many_entries"),
        ];
        let good = report("checkout", vec![(Some("on"), 4), (None, 1)]);
        let send_report = async |send: &mut quinn::SendStream, r: UsageReport| {
            let frame = ClientFrame {
                kind: Some(client_frame::Kind::Usage(r)),
            };
            let codec = FrameCodec::default();
            send.write_all(&codec.encode_frame(&frame).unwrap())
                .await
                .unwrap();
        };
        for (r, _) in bad.iter().cloned() {
            send_report(&mut send, r).await;
        }
        send_report(&mut send, good).await;
        // The good report lands; each bad one is counted by its reason; the stream is alive.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let usage = app.store.usage("prod", 0).await.unwrap();
            if usage.len() == 2 {
                assert_eq!(usage[0].variant, None);
                assert_eq!(usage[0].evaluations, 1);
                assert_eq!(usage[1].variant.as_deref(), Some("on"));
                assert_eq!(usage[1].evaluations, 4);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the good report never landed: {usage:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(reports_counted(&app, "invalid"), 4);
        assert_eq!(reports_counted(&app, "absurd_count"), 1);
        assert_eq!(reports_counted(&app, "too_many_entries"), 1);
        assert_eq!(reports_counted(&app, "accepted"), 1);
        app.create_flag("prod", "more", &bool_flag()).await;
        assert!(
            matches!(next_frame(&mut frames).await, Some(Kind::Delta(_))),
            "the stream goes on after refused reports"
        );
    }
);

/// A sidecar following `prod`, reporting its usage every `interval` seconds.
fn sidecar(app: &App, token: &str, dir: &TempDir, name: &str, interval: u64) -> ProxyCmd {
    let toml = dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &toml,
        "[context]\ntargetingKey = [\"header:x-user-id\"]\n\n\
         [[routes]]\nflags = [\"checkout\", \"banner\", \"legacy\"]\n",
    )
    .unwrap();
    ProxyCmd::new()
        .args(["--control", &app.sync_url(), "--environment", "prod"])
        .arg("--ca-file")
        .arg(app.ca_file())
        .arg("--state-dir")
        .arg(dir.sub(&format!("{name}-state")))
        .arg("--config")
        .arg(&toml)
        .args(["--usage-interval-secs", &interval.to_string()])
        .env("VEXIL_TOKEN", token)
        .name(name)
        .grace_secs(1)
}

async fn ofrep(proxy: &ProxyProcess, flag: &str, user: &str) -> Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/ofrep/v1/evaluate/flags/{flag}", proxy.ofrep))
        .json(&json!({"context": {"targetingKey": user}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the usage report until each `(flag, evaluations)` of `want` holds (at most 30 s).
async fn report_until(app: App, want: Vec<(&'static str, i64)>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app
            .get("/api/v1/environments/prod/usage?days=1", &app.admin)
            .await
            .expect(200)
            .clone();
        if want.iter().all(|(flag, n)| total(&r, flag) == *n) {
            return r;
        }
        assert!(Instant::now() < deadline, "the usage never showed: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn total(report: &Value, flag: &str) -> i64 {
    variants_of(report, flag).iter().map(|(_, n)| n).sum()
}

/// Requests through a real sidecar's data plane and OFREP lookups on it show in the report; a
/// sidecar that stops cleanly sends what it counted since its last report.
async fn through_real_sidecars(backend: Backend) {
    let options = Options {
        configure: Some(fast_flush),
        ..Options::default()
    };
    let Some(server) = start(backend, options).await else {
        return;
    };
    let app = server.app.clone();
    {
        app.create_env("prod").await;
        for (key, def) in [
            ("checkout", checkout()),
            ("legacy", legacy()),
            ("banner", bool_flag()),
            ("unused", bool_flag()),
        ] {
            app.create_flag("prod", key, &def).await;
        }
        let (_, token) = app.token("sidecars", "sidecar", &["prod"]).await;
        let upstream = Echo::new().start().await;
        let dir = TempDir::new("vexil-usage");
        let mut a = sidecar(&app, &token, &dir, "a", 1).start();
        // B reports only when it stops.
        let mut b = sidecar(&app, &token, &dir, "b", 3600).start();
        a.wait_ready().await;
        b.wait_ready().await;

        // Through A's data plane: three requests of `vip`, two of `alice` (the second of each is
        // served from the decision cache: still decisions); each decides the route's three flags.
        let via_a = a.client();
        for user in ["vip", "vip", "vip", "alice", "alice"] {
            let r = via_a
                .get(format!("http://{}/x", upstream.addr()))
                .header("x-user-id", user)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let seen: Value = r.json().await.unwrap();
            let flags = seen["headers"]["vexil-flags"].as_str().unwrap().to_string();
            assert!(flags.contains("checkout="), "{flags}");
        }
        // And two OFREP lookups on A, and one of a flag that does not exist (not counted).
        let on = ofrep(&a, "checkout", "vip").await;
        assert_eq!(on["variant"], "on");
        let off = ofrep(&a, "checkout", "bob").await;
        assert_eq!(off["variant"], "off");
        let missing = ofrep(&a, "nope", "bob").await;
        assert_eq!(missing["errorCode"], "FLAG_NOT_FOUND");

        let report = report_until(app.clone(), vec![("checkout", 7), ("legacy", 5)]).await;
        assert_eq!(
            variants_of(&report, "checkout"),
            [(Some("on".into()), 4), (Some("off".into()), 3)],
            "{report}"
        );
        assert_eq!(variants_of(&report, "banner"), [(Some("on".into()), 5)]);
        assert_eq!(variants_of(&report, "legacy"), [(Some("off".into()), 5)]);
        assert!(variants_of(&report, "unused").is_empty());

        // B's lookups reach control when B stops cleanly: its last report.
        for _ in 0..4 {
            let r = ofrep(&b, "banner", "x").await;
            assert_eq!(r["variant"], "on");
        }
        b.process.signal("TERM");
        b.process.wait(20);
        let report = report_until(app.clone(), vec![("banner", 9)]).await;
        assert_eq!(variants_of(&report, "banner"), [(Some("on".into()), 9)]);

        let stale = app
            .get("/api/v1/environments/prod/usage/stale?days=1", &app.admin)
            .await
            .expect(200)
            .clone();
        assert_eq!(keys(&stale["unused"]), ["unused"], "{stale}");
        assert_eq!(keys(&stale["constant"]), ["legacy"], "{stale}");

        // Both sides count what they sent and took.
        let metrics = reqwest::get(format!("{}/metrics", a.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let sent = metrics
            .lines()
            .find_map(|l| l.strip_prefix("vexil_proxy_usage_reports_sent_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(sent >= 1, "{metrics}");
        assert!(reports_counted(&app, "accepted") >= 2);
        assert_eq!(reports_counted(&app, "invalid"), 0);
        a.process.assert_running();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_and_lookups_through_real_sidecars_show_in_the_report_sqlite() {
    through_real_sidecars(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_and_lookups_through_real_sidecars_show_in_the_report_postgres() {
    through_real_sidecars(Backend::Postgres).await;
}
