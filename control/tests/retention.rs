//! Retention: the change log and the audit log are pruned by age and count, catch-up falls back to a
//! `Full` beyond what is kept, and `/audit` pages are bounded in bytes as well as rows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use vexil_control::model::now_millis;
use vexil_control::store::{AuditQuery, Pruned, Retention, SessionRow};
use vexil_proto::sync::v1::server_frame::Kind;

const KEEP_ALL: Retention = Retention {
    changes_max_age: None,
    changes_max_count: None,
    audit_max_age: None,
    audit_max_count: None,
    sessions_max_age: None,
    usage_max_age: None,
};

/// Writes flag `key` of `env` (created or replaced); returns the new revision.
async fn put(app: &App, env: &str, key: &str) -> i64 {
    let r = app
        .req("PUT", &flag_path(env, key))
        .token(&app.admin)
        .header("if-match", "*")
        .json(&bool_flag())
        .send()
        .await;
    if r.status == 412 {
        app.create_flag(env, key, &bool_flag()).await;
    } else {
        r.expect(200);
    }
    app.store.get_environment(env).await.unwrap().revision
}

/// The revisions in `env`'s change log.
async fn logged(app: &App, env: &str) -> Vec<i64> {
    app.store
        .changes_since(env, 0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.revision)
        .collect()
}

both_backends!(
    pruning_keeps_the_newest_changes_and_audit_entries,
    |app: App| async move {
        app.create_env("prod").await;
        app.create_env("dev").await;
        for _ in 0..10 {
            put(&app, "prod", "a").await;
        }
        put(&app, "dev", "a").await;
        let audit = app.audit_ids().await;
        // The seeded admin token, two environments, eleven writes.
        assert_eq!(audit.len(), 1 + 2 + 11, "{audit:?}");

        // Nothing to do: nothing pruned.
        let none = app.store.prune(&KEEP_ALL, now_millis()).await.unwrap();
        assert_eq!(none, Pruned::default());

        // By count: the newest 3 changes of each environment, the newest 5 audit entries.
        let by_count = Retention {
            changes_max_count: Some(3),
            audit_max_count: Some(5),
            ..KEEP_ALL
        };
        let pruned = app.store.prune(&by_count, now_millis()).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                changes: 7,
                audit: 9,
                ..Pruned::default()
            }
        );
        assert_eq!(logged(&app, "prod").await, [8, 9, 10]);
        assert_eq!(logged(&app, "dev").await, [1]);
        assert_eq!(app.audit_ids().await, audit[..5]);
        // Again: already within bounds.
        let again = app.store.prune(&by_count, now_millis()).await.unwrap();
        assert_eq!(again, Pruned::default());

        // By age, an hour later: every change older than a minute goes but the newest of each
        // environment; every audit entry goes.
        let by_age = Retention {
            changes_max_age: Some(Duration::from_secs(60)),
            audit_max_age: Some(Duration::from_secs(60)),
            ..KEEP_ALL
        };
        let later = now_millis() + 3_600_000;
        let pruned = app.store.prune(&by_age, later).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                changes: 2,
                audit: 5,
                ..Pruned::default()
            }
        );
        assert_eq!(logged(&app, "prod").await, [10]);
        assert_eq!(logged(&app, "dev").await, [1]);
        assert!(app.audit_ids().await.is_empty());

        // The environments are whole and writable; revisions go on.
        assert_eq!(put(&app, "prod", "b").await, 11);
        assert_eq!(logged(&app, "prod").await, [10, 11]);
    }
);

/// Subscribes raw holding `last_revision`; returns the frames up to and including the first `Full`
/// or `Delta` that reaches `until`.
async fn catch_up_frames(
    app: &App,
    env: &str,
    token: &str,
    last_revision: i64,
    until: i64,
) -> Vec<Kind> {
    let (conn, _send, mut frames) = subscribe_stream(app, env, token, last_revision).await;
    let mut out = Vec::new();
    loop {
        let kind = next_frame(&mut frames).await.expect("the stream goes on");
        let done = match &kind {
            Kind::Full(f) => f.revision == until,
            Kind::Delta(d) => d.to == until,
            Kind::Error(e) => panic!("refused: {e:?}"),
            _ => false,
        };
        out.push(kind);
        if done {
            conn.close(0u32.into(), b"done");
            return out;
        }
    }
}

both_backends!(
    a_sidecar_older_than_the_oldest_kept_change_gets_a_full,
    |app: App| async move {
        app.create_env("prod").await;
        for _ in 0..6 {
            put(&app, "prod", "a").await;
        }
        let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
        let keep_two = Retention {
            changes_max_count: Some(2),
            ..KEEP_ALL
        };
        app.store.prune(&keep_two, now_millis()).await.unwrap();
        assert_eq!(logged(&app, "prod").await, [5, 6]);

        // Revision 4 is followed by kept changes: the deltas 5 and 6.
        let frames = catch_up_frames(&app, "prod", &token, 4, 6).await;
        let deltas: Vec<(i64, i64)> = frames
            .iter()
            .filter_map(|k| match k {
                Kind::Delta(d) => Some((d.from, d.to)),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, [(4, 5), (5, 6)], "{frames:?}");
        assert!(
            !frames.iter().any(|k| matches!(k, Kind::Full(_))),
            "{frames:?}"
        );

        // Revision 2 is older than the oldest change kept (5): one Full of revision 6.
        for held in [1, 2, 3] {
            let frames = catch_up_frames(&app, "prod", &token, held, 6).await;
            assert!(matches!(frames[0], Kind::Welcome(_)), "{frames:?}");
            assert!(
                matches!(&frames[1..], [Kind::Full(f)] if f.revision == 6),
                "from {held}: {frames:?}"
            );
        }
    }
);

// The background task prunes on its own, every `[retention] interval_secs`, and counts it.
both_backends!(
    the_retention_task_prunes_in_the_background,
    options = Options {
        configure: Some(|c| {
            c.retention.changes_max_count = 2;
            c.retention.interval = Duration::from_millis(200);
        }),
        ..Options::default()
    },
    |app: App| async move {
        app.create_env("prod").await;
        for _ in 0..5 {
            put(&app, "prod", "a").await;
        }
        // The rows go, then the pass is counted: wait for both.
        let pruned = || {
            let metrics = app.state.metrics.render();
            metrics
                .lines()
                .find(|l| l.starts_with("vexil_control_log_rows_pruned_total{log=\"changes\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while logged(&app, "prod").await.len() > 2 || pruned() < 3.0 {
            assert!(
                Instant::now() < deadline,
                "{:?}, {} counted",
                logged(&app, "prod").await,
                pruned()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(logged(&app, "prod").await, [4, 5]);
        let pruned = pruned();
        assert!(pruned >= 3.0, "{pruned}");
    }
);

// A page of `/audit` stops before the entry that would take it past `[limits]
// max_audit_page_bytes` (4 MiB), and its cursor leads on to the rest: every entry is seen once.
both_backends!(audit_pages_are_bounded_in_bytes, |app: App| async move {
    app.create_env("prod").await;
    let mut flag = bool_flag();
    flag["metadata"] = json!({"note": "n".repeat(900_000)});
    for i in 0..6 {
        app.create_flag("prod", &format!("f{i}"), &flag).await;
    }
    let budget = vexil_control::api::ApiConfig::default().max_audit_page_bytes;
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit?limit=1000&cursor={c}"),
            None => "/api/v1/audit?limit=1000".to_string(),
        };
        let r = app.get(&path, &app.admin).await;
        let page = r.expect(200);
        let items = page["items"].as_array().unwrap();
        assert!(
            !items.is_empty(),
            "a page with a cursor before it has entries"
        );
        assert!(r.text.len() <= budget + 64 * 1024, "{} bytes", r.text.len());
        pages.push(items.len());
        seen.extend(items.iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    // 900 kB each: four fit in 4 MiB, a fifth does not.
    assert_eq!(
        pages,
        [4, 4],
        "eight entries (six flags, one environment, the seeded token)"
    );
    assert_eq!(seen, app.audit_ids().await);
    // Without a byte budget (the store's own callers), rows only.
    let all = app
        .store
        .audit(&AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 8);
    assert_eq!(all.next_cursor, None);
    // A row limit still ends a page with a cursor.
    let r = app.get("/api/v1/audit?limit=2", &app.admin).await;
    let page = r.expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_cursor"], json!(seen[1].to_string()));
});

// After a lost answer (a 503 while the commit may have happened), the client finds out whether its
// write committed by its own `x-request-id`.
both_backends!(
    an_audit_entry_is_found_by_request_id,
    |app: App| async move {
        app.create_env("prod").await;
        let r = app
            .req("PUT", &flag_path("prod", "a"))
            .token(&app.admin)
            .header("x-request-id", "client-chosen-42")
            .json(&bool_flag())
            .send()
            .await;
        r.expect(201);
        app.create_flag("prod", "b", &bool_flag()).await;
        let found = app
            .get("/api/v1/audit?request_id=client-chosen-42", &app.admin)
            .await;
        let items = found.expect(200)["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0]["target"], "a");
        assert_eq!(items[0]["action"], "flag.create");
        let none = app
            .get("/api/v1/audit?request_id=never-sent", &app.admin)
            .await;
        assert_eq!(none.expect(200)["items"], json!([]));
    }
);

both_backends!(
    ended_and_stale_sidecar_sessions_are_pruned_after_their_bound,
    |app: App| async move {
        let now = now_millis();
        let day = 86_400_000;
        let session = |id: &str, last_seen: i64, disconnected_at: Option<i64>| SessionRow {
            id: id.to_string(),
            replica: "gone-replica".into(),
            session: 1,
            environment: "prod".into(),
            client_id: id.to_string(),
            version: "0.1.0".into(),
            address: "127.0.0.1:1".into(),
            sent_revision: 0,
            acked_revision: 0,
            digest: None,
            digest_revision: None,
            digest_matches: None,
            connected_since: last_seen - 1000,
            last_seen,
            disconnected_at,
        };
        app.store
            .record_sessions(&[
                session("connected", now, None),
                session("ended-recently", now - 1000, Some(now - 1000)),
                session("ended-long-ago", now - 2 * day, Some(now - 2 * day)),
                session("stale-long-ago", now - 2 * day, None),
            ])
            .await
            .unwrap();
        let keep = Retention {
            sessions_max_age: Some(Duration::from_secs(86_400)),
            ..KEEP_ALL
        };
        let pruned = app.store.prune(&keep, now).await.unwrap();
        // The test server's own retention pass (24 h, its first pass at start, asynchronous) may
        // have pruned the two old sessions first under load: what is left is what counts.
        assert!(pruned.sessions <= 2, "{pruned:?}");
        let left: Vec<String> = app
            .store
            .sessions(None)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.row.id)
            .collect();
        assert_eq!(left, ["connected", "ended-recently"]);
        // A late update never brings an ended session back.
        app.store
            .record_sessions(&[session("ended-recently", now, None)])
            .await
            .unwrap();
        let back = app.store.sessions(Some("prod")).await.unwrap();
        assert_eq!(back[1].row.disconnected_at, Some(now - 1000), "{back:?}");
    }
);
