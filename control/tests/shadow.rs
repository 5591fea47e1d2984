//! Shadow evaluation (issue 22, ADR 0040): a proposed definition stored beside a live flag,
//! evaluated by the sidecars on a sample of real decisions without changing any, compared
//! ("would change N % of decisions, from A to B"), published in one write. Real control on both
//! databases, real sidecars (`vexil-proxy` processes), a real upstream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use vexil_control::model::now_millis;
use vexil_control::store::{ShadowRow, minute_of};
use vexil_proto::sync::v1::{FlagUsage, ShadowUsage, UsageReport, VariantUsage};
use vexil_testkit::echo::Echo;
use vexil_testkit::proxy::{ProxyCmd, ProxyProcess};

/// `checkout`, live: `off` for everyone (no rule).
fn checkout() -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"})
}

/// The rule proposed: 30 % of users `on`, by their `targetingKey`.
fn thirty_percent() -> Value {
    json!({"fractional": [{"var": "targetingKey"}, ["on", 30], ["off", 70]]})
}

/// The usage intake writes within this: short, so the tests do not wait.
fn fast_flush(c: &mut vexil_control::config::ControlConfig) {
    c.sync.usage_flush_interval = Duration::from_millis(100);
}

fn proposal_path(env: &str, key: &str) -> String {
    format!("{}/proposal", flag_path(env, key))
}

/// The sum of `vexil_control_<name>{result=...}`.
fn counted(app: &App, name: &str, result: &str) -> u64 {
    let text = app.state.metrics.render();
    let prefix = format!("vexil_control_{name}{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

both_backends!(
    proposals_are_checked_compared_and_published,
    |app: App| async move {
        app.create_env("prod").await;
        app.create_flag("prod", "checkout", &checkout())
            .await
            .expect(201);
        let editor = app.token("editor", "editor", &["prod"]).await.1;
        let viewer = app.token("viewer", "viewer", &["prod"]).await.1;
        let path = proposal_path("prod", "checkout");
        app.get(&path, &viewer).await.expect(404);

        // Bad proposals, each refused with what is wrong and where.
        let r = app
            .put_json(
                &path,
                &json!({"targeting": {"if": [{"$ref": "beta"}, "on", "off"]}}),
                &editor,
            )
            .await;
        let p = assert_problem(&r, 400);
        assert!(
            p.to_string().contains("beta"),
            "names the missing evaluator: {p}"
        );
        assert!(
            p["errors"][0]["path"]
                .as_str()
                .unwrap()
                .starts_with("flags.checkout.targeting"),
            "{p}"
        );
        let r = app
            .put_json(&path, &json!({"targeting": {"nope": [1]}}), &editor)
            .await;
        assert!(assert_problem(&r, 400).to_string().contains("nope"));
        let renamed = json!({"state": "ENABLED", "variants": {"yes": true, "off": false}, "defaultVariant": "off"});
        let r = app
            .put_json(&path, &json!({"definition": renamed}), &editor)
            .await;
        let p = assert_problem(&r, 422);
        assert_eq!(p["errors"][0]["path"], "flags.checkout.variants", "{p}");
        for (body, what) in [
            (
                json!({"targeting": thirty_percent(), "sample_ratio": 0}),
                "sample_ratio",
            ),
            (
                json!({"targeting": thirty_percent(), "sample_ratio": 1.5}),
                "sample_ratio",
            ),
            (
                json!({"targeting": {}, "definition": checkout()}),
                "not both",
            ),
            (json!({"sample_ratio": 0.5}), "missing"),
            (json!({"targeting": {}, "ratio": 1}), "unknown field"),
        ] {
            let r = app.put_json(&path, &body, &editor).await;
            assert!(
                assert_problem(&r, 400).to_string().contains(what),
                "{body}: {}",
                r.text
            );
        }
        app.put_json(
            &proposal_path("prod", "nope"),
            &json!({"targeting": {}}),
            &editor,
        )
        .await
        .expect(404);
        // Viewers read, editors write.
        app.put_json(&path, &json!({"targeting": thirty_percent()}), &viewer)
            .await
            .expect(403);

        // A proposal: the live flag with the new rule, at 1 % by default.
        let r = app
            .put_json(&path, &json!({"targeting": thirty_percent()}), &editor)
            .await;
        let first = r.expect(201).clone();
        let etag = r.etag();
        assert_eq!(first["sample_ratio"], 0.01);
        assert_eq!(first["definition"]["targeting"], thirty_percent());
        assert_eq!(first["definition"]["variants"], checkout()["variants"]);
        assert_eq!(first["proposed_by"], "editor");
        let read = app.get(&path, &viewer).await;
        assert_eq!(read.expect(200)["id"], first["id"]);
        assert_eq!(read.etag(), etag);
        // The live flag did not change.
        let live = app.get(&flag_path("prod", "checkout"), &viewer).await;
        assert_eq!(live.expect(200)["definition"], checkout());

        // Replacing needs If-Match; each write is a new proposal (a new id).
        app.put_json(&path, &json!({"targeting": thirty_percent()}), &editor)
            .await
            .expect(428);
        let r = app
            .put_json_if(
                &path,
                &json!({"targeting": thirty_percent(), "sample_ratio": 1}),
                &editor,
                &etag,
            )
            .await;
        let second = r.expect(200).clone();
        let etag = r.etag();
        assert_ne!(second["id"], first["id"]);
        let id = second["id"].as_str().unwrap().to_string();

        // Counts: the current proposal's only, by (from, to); the old proposal's are left out.
        let minute = minute_of(now_millis());
        let row = |proposal: &str, from: &str, to: &str, n: i64| ShadowRow {
            environment: "prod".into(),
            flag: "checkout".into(),
            proposal: proposal.into(),
            minute,
            from: Some(from.into()),
            to: Some(to.into()),
            evaluations: n,
        };
        let old = first["id"].as_str().unwrap();
        let (written, left_out) = app
            .store
            .record_shadow(&[
                row(&id, "off", "on", 30),
                row(&id, "off", "off", 70),
                row(old, "off", "on", 1000),
                row(&id, "off", "on", 2),
            ])
            .await
            .unwrap();
        assert_eq!((written, left_out), (2, 1));
        let c = app
            .get(&format!("{path}/comparison?minutes=5"), &viewer)
            .await
            .expect(200)
            .clone();
        assert_eq!(c["proposal"], id.as_str());
        assert_eq!(
            (c["samples"].as_i64(), c["changed"].as_i64()),
            (Some(102), Some(32))
        );
        assert_eq!(c["transitions"][0]["from"], "off");
        assert_eq!(c["transitions"][0]["to"], "on");
        assert_eq!(c["transitions"][0]["changed"], true);
        assert_eq!(
            c["summary"],
            "would change 31.4 % of decisions in the last 5 minutes (102 sampled): off → on 31.4 %"
        );
        for bad in ["minutes=0", "minutes=10081", "minutes=x", "window=3"] {
            let r = app.get(&format!("{path}/comparison?{bad}"), &viewer).await;
            assert_problem(&r, 400);
        }

        // Publishing: If-Match required and must name the proposal; viewers may not.
        app.req("POST", &format!("{path}/publish"))
            .token(&editor)
            .send()
            .await
            .expect(428);
        app.req("POST", &format!("{path}/publish"))
            .token(&viewer)
            .header("if-match", &etag)
            .send()
            .await
            .expect(403);
        app.req("POST", &format!("{path}/publish"))
            .token(&editor)
            .header("if-match", "\"1\"")
            .send()
            .await
            .expect(412);
        // A live change since the proposal: publishing would undo it.
        let flag = app.get(&flag_path("prod", "checkout"), &editor).await;
        let mut changed = checkout();
        changed["metadata"] = json!({"owner": "web"});
        app.put_json_if(
            &flag_path("prod", "checkout"),
            &changed,
            &editor,
            &flag.etag(),
        )
        .await
        .expect(200);
        let r = app
            .req("POST", &format!("{path}/publish"))
            .token(&editor)
            .header("if-match", &etag)
            .send()
            .await;
        assert!(
            assert_problem(&r, 409)
                .to_string()
                .contains("changed since"),
            "{}",
            r.text
        );
        // Proposed again against the current flag, then published: one write, the proposal gone.
        let r = app
            .put_json_if(
                &path,
                &json!({"targeting": thirty_percent(), "sample_ratio": 1}),
                &editor,
                &etag,
            )
            .await;
        let etag = r.etag();
        assert_eq!(
            r.expect(200)["definition"]["metadata"],
            json!({"owner": "web"})
        );
        let before = app
            .get("/api/v1/environments/prod", &viewer)
            .await
            .expect(200)["revision"]
            .as_i64()
            .unwrap();
        let r = app
            .req("POST", &format!("{path}/publish"))
            .token(&editor)
            .header("if-match", &etag)
            .send()
            .await;
        let published = r.expect(200).clone();
        assert_eq!(published["definition"]["targeting"], thirty_percent());
        let after = app
            .get("/api/v1/environments/prod", &viewer)
            .await
            .expect(200)["revision"]
            .as_i64()
            .unwrap();
        assert_eq!(after, before + 1, "one write");
        app.get(&path, &viewer).await.expect(404);
        app.get(&format!("{path}/comparison"), &viewer)
            .await
            .expect(404);

        // Dropping: a proposal, then none.
        app.put_json(&path, &json!({"targeting": {}}), &editor)
            .await
            .expect(201);
        app.delete(&path, &viewer).await.expect(403);
        app.delete(&path, &editor).await.expect(204);
        app.delete(&path, &editor).await.expect(404);

        // A proposal goes with its flag, or when the flag's variants change (it no longer fits).
        app.put_json(&path, &json!({"targeting": {}}), &editor)
            .await
            .expect(201);
        let flag = app.get(&flag_path("prod", "checkout"), &editor).await;
        let mut three = flag.json["definition"].clone();
        three["variants"]["maybe"] = json!(false);
        app.put_json_if(
            &flag_path("prod", "checkout"),
            &three,
            &editor,
            &flag.etag(),
        )
        .await
        .expect(200);
        app.get(&path, &viewer).await.expect(404);
        app.create_flag("prod", "banner", &bool_flag())
            .await
            .expect(201);
        let banner = proposal_path("prod", "banner");
        app.put_json(&banner, &json!({"targeting": {}}), &editor)
            .await
            .expect(201);
        app.delete(&flag_path("prod", "banner"), &editor)
            .await
            .expect(204);
        app.create_flag("prod", "banner", &bool_flag())
            .await
            .expect(201);
        app.get(&banner, &viewer).await.expect(404);

        // Every proposal change is audited.
        let audit = app
            .get("/api/v1/audit?environment=prod&target=checkout", &app.admin)
            .await
            .expect(200)
            .clone();
        let actions: Vec<&str> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for action in [
            "flag.proposal.set",
            "flag.proposal.publish",
            "flag.proposal.drop",
        ] {
            assert!(actions.contains(&action), "{action} in {actions:?}");
        }
        let publish = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "flag.proposal.publish")
            .unwrap();
        assert_eq!(publish["before"]["metadata"], json!({"owner": "web"}));
        assert_eq!(publish["after"]["targeting"], thirty_percent());
        let dropped: Vec<&Value> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "flag.proposal.drop" && e["after"]["dropped"].is_string())
            .map(|e| &e["after"]["dropped"])
            .collect();
        assert_eq!(
            dropped,
            [
                &json!("its flag was deleted"),
                &json!("its flag's variants changed")
            ],
            "{audit}"
        );
    }
);

both_backends!(
    proposals_reach_sidecars_and_bad_shadow_reports_are_refused,
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
        assert!(matches!(
            next_frame(&mut frames).await,
            Some(Kind::Welcome(_))
        ));
        let Some(Kind::Full(full)) = next_frame(&mut frames).await else {
            panic!("a Full first");
        };
        assert_eq!(full.shadows.unwrap().proposals.len(), 0, "present, empty");
        // A proposal is a revision answered with a Full that carries it.
        let proposal = app
            .put_json(
                &proposal_path("prod", "checkout"),
                &json!({"targeting": thirty_percent(), "sample_ratio": 0.25}),
                &app.admin,
            )
            .await
            .expect(201)
            .clone();
        let id = proposal["id"].as_str().unwrap().to_string();
        let Some(Kind::Full(full)) = next_frame(&mut frames).await else {
            panic!("a Full for the proposal");
        };
        let shadows = full.shadows.unwrap().proposals;
        assert_eq!(shadows.len(), 1);
        assert_eq!(
            (shadows[0].flag.as_str(), shadows[0].id.as_str()),
            ("checkout", id.as_str())
        );
        assert_eq!(shadows[0].sample_ratio, 0.25);
        let definition: Value = serde_json::from_str(&shadows[0].definition).unwrap();
        assert_eq!(definition["targeting"], thirty_percent());
        // A flag change is still a Delta: the sidecar keeps its proposals.
        app.create_flag("prod", "other", &bool_flag()).await;
        assert!(matches!(
            next_frame(&mut frames).await,
            Some(Kind::Delta(_))
        ));

        let entry = |proposal: &str, from: Option<&str>, n: u64| ShadowUsage {
            flag: "checkout".into(),
            proposal: proposal.into(),
            from: from.map(Into::into),
            to: Some("on".into()),
            evaluations: n,
        };
        let report = |entries: Vec<ShadowUsage>| UsageReport {
            shadow: entries,
            ..UsageReport::default()
        };
        let send_report = async |send: &mut quinn::SendStream, r: UsageReport| {
            let frame = ClientFrame {
                kind: Some(client_frame::Kind::Usage(r)),
            };
            send.write_all(&FrameCodec::default().encode_frame(&frame).unwrap())
                .await
                .unwrap();
        };
        let unknown = "00000000deadbeef";
        for bad in [
            report(vec![entry(&id, Some("off"), 1u64 << 60)]),
            report(vec![entry("not-an-id", Some("off"), 1)]),
            report(vec![entry(&id, Some(""), 1)]),
            report(vec![entry(&id, Some("off"), 1), entry(&id, Some("off"), 2)]),
            // Shadow entries count towards the report's allowance (5000): 4999 + 2.
            UsageReport {
                flags: vec![FlagUsage {
                    flag: "checkout".into(),
                    variants: (0..4999)
                        .map(|i| VariantUsage {
                            variant: Some(format!("v{i}")),
                            evaluations: 1,
                            outcomes: None,
                        })
                        .collect(),
                }],
                shadow: vec![entry(&id, Some("off"), 1), entry(&id, Some("on"), 1)],
            },
        ] {
            send_report(&mut send, bad).await;
        }
        // Well formed: the current proposal's counts land, an unknown one's are left out.
        send_report(
            &mut send,
            report(vec![
                entry(&id, Some("off"), 3),
                entry(unknown, Some("off"), 9),
            ]),
        )
        .await;
        let path = proposal_path("prod", "checkout");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let c = app
                .get(&format!("{path}/comparison"), &app.admin)
                .await
                .expect(200)
                .clone();
            if c["samples"] == 3 && counted(&app, "shadow_entries_total", "unknown_proposal") == 1 {
                assert_eq!(c["changed"], 3);
                break;
            }
            assert!(Instant::now() < deadline, "the counts never landed: {c}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(counted(&app, "usage_reports_total", "absurd_count"), 1);
        assert_eq!(counted(&app, "usage_reports_total", "invalid"), 3);
        assert_eq!(counted(&app, "usage_reports_total", "too_many_entries"), 1);
        assert_eq!(counted(&app, "usage_reports_total", "accepted"), 1);
        assert_eq!(counted(&app, "shadow_entries_total", "written"), 1);
        // A proposal whose flag is deleted goes with it: a Full without it.
        app.create_flag("prod", "other-2", &bool_flag()).await;
        assert!(matches!(
            next_frame(&mut frames).await,
            Some(Kind::Delta(_))
        ));
        app.put_json(
            &proposal_path("prod", "other-2"),
            &json!({"targeting": {}}),
            &app.admin,
        )
        .await
        .expect(201);
        let Some(Kind::Full(full)) = next_frame(&mut frames).await else {
            panic!("a Full for the proposal");
        };
        assert_eq!(full.shadows.unwrap().proposals.len(), 2);
        app.delete(&flag_path("prod", "other-2"), &app.admin)
            .await
            .expect(204);
        let Some(Kind::Full(full)) = next_frame(&mut frames).await else {
            panic!("a Full for the flag deleted with its proposal");
        };
        assert_eq!(full.shadows.unwrap().proposals.len(), 1);
        // The stream goes on: dropping the proposal is a Full without it.
        app.delete(&path, &app.admin).await.expect(204);
        let Some(Kind::Full(full)) = next_frame(&mut frames).await else {
            panic!("a Full for the drop");
        };
        assert!(full.shadows.unwrap().proposals.is_empty());
    }
);

/// A sidecar following `prod`, reporting every second; `checkout` on every route.
fn sidecar(app: &App, token: &str, dir: &TempDir, name: &str) -> ProxyCmd {
    let toml = dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &toml,
        "[context]\ntargetingKey = [\"header:x-user-id\"]\n\n\
         [[routes]]\nflags = [\"checkout\"]\n",
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
        .args(["--usage-interval-secs", "1"])
        .env("VEXIL_TOKEN", token)
        .name(name)
        .grace_secs(1)
}

async fn ofrep(proxy: &ProxyProcess, user: &str) -> Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/ofrep/v1/evaluate/flags/checkout", proxy.ofrep))
        .json(&json!({"context": {"targetingKey": user}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What the proposal decides for `user`, by the engine itself.
fn proposed_for(user: &str) -> bool {
    let mut proposed = checkout();
    proposed["targeting"] = thirty_percent();
    let set = vexil_engine::FlagSet::from_json(&json!({"flags": {"checkout": proposed}})).unwrap();
    let mut ctx = vexil_engine::EvaluationContext::new();
    ctx.set_targeting_key(user);
    set.resolve_bool("checkout", &ctx).value.unwrap()
}

/// Live everyone `off`, a proposal of 30 % `on` sampled at 1.0; 300 users twice through a real
/// sidecar's data plane (the second time from its decision cache) and 100 by OFREP: every live
/// decision stays `off`, and the comparison reports exactly the pairs the engine decides for those
/// users (30 % ± 5 points off → on). A restarted sidecar shadows from its state directory. Then
/// publishing: the sidecar's decisions follow.
async fn through_a_real_sidecar(backend: Backend) {
    let options = Options {
        configure: Some(fast_flush),
        ..Options::default()
    };
    let Some(server) = start(backend, options).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    app.create_flag("prod", "checkout", &checkout()).await;
    let (_, token) = app.token("sidecars", "sidecar", &["prod"]).await;
    let upstream = Echo::new().start().await;
    let dir = TempDir::new("vexil-shadow");
    let mut a = sidecar(&app, &token, &dir, "a").start();
    a.wait_ready().await;
    let path = proposal_path("prod", "checkout");
    let r = app
        .put_json(
            &format!("{path}?wait=10s"),
            &json!({"targeting": thirty_percent(), "sample_ratio": 1.0}),
            &app.admin,
        )
        .await;
    let proposal = r.expect(201).clone();
    let etag = r.etag();
    // Until the sidecar shadows it (the fleet may not list a sidecar that just connected yet).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let debug: Value = reqwest::get(format!("{}/debug/snapshot", a.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if debug["shadows"]["proposals"] == 1 {
            assert_eq!(debug["shadows"]["skipped"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "never shadowed: {debug}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let via_a = a.client();
    let decision = async |user: &str| flags_seen(&via_a, upstream.addr(), user).await;
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    for _ in 0..2 {
        for user in &users {
            assert_eq!(
                decision(user).await,
                "checkout=?0",
                "the live decision never changes"
            );
        }
    }
    let lookups: Vec<String> = (0..100).map(|i| format!("lookup-{i}")).collect();
    for user in &lookups {
        let r = ofrep(&a, user).await;
        assert_eq!(
            (r["variant"].as_str(), r["value"].as_bool()),
            (Some("off"), Some(false))
        );
    }
    let on = 2 * users.iter().filter(|u| proposed_for(u)).count()
        + lookups.iter().filter(|u| proposed_for(u)).count();
    let samples = 2 * users.len() + lookups.len();

    let deadline = Instant::now() + Duration::from_secs(30);
    let comparison = loop {
        let c = app
            .get(&format!("{path}/comparison?minutes=10"), &app.admin)
            .await
            .expect(200)
            .clone();
        if c["samples"].as_u64() == Some(samples as u64) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the samples never all showed: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        comparison["changed"].as_u64(),
        Some(on as u64),
        "{comparison}"
    );
    let share = comparison["share_changed"].as_f64().unwrap();
    assert!((0.25..=0.35).contains(&share), "about 30 %: {comparison}");
    let t = &comparison["transitions"];
    assert_eq!(
        (t[0]["from"].as_str(), t[0]["to"].as_str()),
        (Some("off"), Some("on"))
    );
    assert_eq!(t[1]["from"], "off");
    assert_eq!(t[1]["to"], "off");
    assert!(
        comparison["summary"]
            .as_str()
            .unwrap()
            .starts_with("would change "),
        "{comparison}"
    );
    // The proposals are kept beside the snapshot, for a restarted sidecar.
    let saved = std::fs::read_to_string(dir.sub("a-state").join("proposals-prod.json")).unwrap();
    assert!(saved.contains(proposal["id"].as_str().unwrap()), "{saved}");

    // A restarted sidecar shadows from that file: it holds the current revision, so control sends
    // it no Full (nothing but the Welcome).
    a.process.signal("TERM");
    a.process.wait(20);
    let mut a = sidecar(&app, &token, &dir, "a").start();
    a.wait_ready().await;
    let debug: Value = reqwest::get(format!("{}/debug/snapshot", a.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(debug["shadows"]["proposals"], 1, "{debug}");
    let again: Vec<String> = (0..20).map(|i| format!("again-{i}")).collect();
    for user in &again {
        assert_eq!(ofrep(&a, user).await["variant"], "off");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = app
            .get(&format!("{path}/comparison?minutes=10"), &app.admin)
            .await
            .expect(200)
            .clone();
        if c["samples"].as_u64() == Some((samples + again.len()) as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted sidecar's samples never showed: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let via_a = a.client();
    let decision = async |user: &str| flags_seen(&via_a, upstream.addr(), user).await;

    // Publishing: the sidecar's decisions follow the proposal.
    app.req("POST", &format!("{path}/publish?wait=10s"))
        .token(&app.admin)
        .header("if-match", &etag)
        .send()
        .await
        .expect(200);
    for user in users.iter().take(50) {
        let want = if proposed_for(user) {
            "checkout=?1"
        } else {
            "checkout=?0"
        };
        assert_eq!(decision(user).await, want, "{user}");
    }
    assert!(!dir.sub("a-state").join("proposals-prod.json").exists());
    a.process.assert_running();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_is_compared_on_real_decisions_then_published_sqlite() {
    through_a_real_sidecar(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_is_compared_on_real_decisions_then_published_postgres() {
    through_a_real_sidecar(Backend::Postgres).await;
}

/// The `vexil-flags` the echo upstream at `upstream` saw on a request of `user` sent `via` a
/// sidecar.
async fn flags_seen(via: &reqwest::Client, upstream: std::net::SocketAddr, user: &str) -> String {
    let r = via
        .get(format!("http://{upstream}/x"))
        .header("x-user-id", user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    seen["headers"]["vexil-flags"].as_str().unwrap().to_string()
}
