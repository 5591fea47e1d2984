//! Concurrent writers: revisions stay gapless and unique, `If-Match` lets exactly one of two racing
//! replacements win, and no writer fails because another one holds the database.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use tokio::sync::Barrier;

const WRITERS: usize = 8;
const WRITES_EACH: usize = 10;

both_backends!(
    concurrent_writers_make_gapless_revisions,
    |app: App| async move {
        app.create_env("prod").await;
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let app = app.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                for j in 0..WRITES_EACH {
                    let r = app
                        .put_json(
                            &flag_path("prod", &format!("w{w}-f{j}")),
                            &bool_flag(),
                            &app.admin,
                        )
                        .await;
                    assert_eq!(r.status, 201, "writer {w}, write {j}: {}", r.text);
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }

        let n = (WRITERS * WRITES_EACH) as i64;
        let changes = app.store.changes_since("prod", 0, 10_000).await.unwrap();
        let revisions: Vec<i64> = changes.iter().map(|c| c.revision).collect();
        assert_eq!(
            revisions,
            (1..=n).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
        let mut keys: Vec<_> = changes.iter().map(|c| c.key.clone().unwrap()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len() as i64, n, "every write is its own change");
        assert_eq!(app.store.get_environment("prod").await.unwrap().revision, n);
        let r = app
            .get("/api/v1/environments/prod/flagset", &app.admin)
            .await;
        assert_eq!(r.expect(200)["flags"].as_object().unwrap().len() as i64, n);
        assert_eq!(r.header("vexil-revision"), Some(n.to_string().as_str()));
        let audit = app
            .get("/api/v1/audit?environment=prod&limit=1000", &app.admin)
            .await;
        let creates = audit.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "flag.create")
            .count();
        assert_eq!(creates as i64, n);
    }
);

both_backends!(racing_replacements_with_one_etag, |app: App| async move {
    app.create_env("prod").await;
    let path = flag_path("prod", "checkout");
    app.create_flag("prod", "checkout", &bool_flag()).await;
    for round in 0..6 {
        let etag = app.get(&path, &app.admin).await.etag();
        let revision = app.store.get_environment("prod").await.unwrap().revision;
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = ["on", "off"]
            .into_iter()
            .map(|default| {
                let (app, path, etag, barrier) =
                    (app.clone(), path.clone(), etag.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut def = bool_flag();
                    def["defaultVariant"] = json!(default);
                    barrier.wait().await;
                    let r = app.put_json_if(&path, &def, &app.admin, &etag).await;
                    (r.status, default, r)
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for r in racers {
            outcomes.push(r.await.unwrap());
        }
        outcomes.sort_by_key(|(status, _, _)| *status);
        let statuses: Vec<u16> = outcomes.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(statuses, [200, 412], "round {round}: {outcomes:?}");
        assert_problem(&outcomes[1].2, 412);
        // The winner's definition is what is stored, and only one revision was made.
        let winner = outcomes[0].1;
        let stored = app.get(&path, &app.admin).await;
        assert_eq!(stored.json["definition"]["defaultVariant"], winner);
        assert_eq!(stored.etag(), outcomes[0].2.etag());
        assert_eq!(
            app.store.get_environment("prod").await.unwrap().revision,
            revision + 1,
            "round {round}"
        );
    }
});

// Writes of every kind at once: flag writes, renames of the environment, new environments, token
// creation and revocation, promotions. None may fail because another holds the database.
both_backends!(mixed_concurrent_writes_all_succeed, |app: App| async move {
    app.create_env("prod").await;
    app.create_env("stage").await;
    let tasks = 8;
    let barrier = Arc::new(Barrier::new(tasks));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let app = app.clone();
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let admin = app.admin.clone();
            for j in 0..6 {
                let r = match t % 4 {
                    0 => {
                        app.put_json(
                            &flag_path("prod", &format!("t{t}-{j}")),
                            &bool_flag(),
                            &admin,
                        )
                        .await
                    }
                    1 => {
                        app.patch_json(
                            "/api/v1/environments/prod",
                            &json!({"name": format!("Prod {t}-{j}")}),
                            &admin,
                        )
                        .await
                    }
                    2 => {
                        app.post_json(
                            "/api/v1/environments",
                            &json!({"key": format!("env-{t}-{j}"), "name": "x"}),
                            &admin,
                        )
                        .await
                    }
                    _ => {
                        let r = app
                            .post_json(
                                "/api/v1/tokens",
                                &json!({"name": format!("tok-{t}-{j}"), "role": "viewer"}),
                                &admin,
                            )
                            .await;
                        assert_eq!(r.status, 201, "task {t}: {}", r.text);
                        let id = r.json["id"].as_i64().unwrap();
                        app.delete(&format!("/api/v1/tokens/{id}"), &admin).await
                    }
                };
                assert!(
                    r.status < 300,
                    "task {t} write {j} failed: {} {}",
                    r.status,
                    r.text
                );
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let changes = app.store.changes_since("prod", 0, 10_000).await.unwrap();
    let n = changes.len() as i64;
    assert_eq!(n, 12, "two flag writers × 6");
    assert_eq!(
        changes.iter().map(|c| c.revision).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(app.store.get_environment("prod").await.unwrap().revision, n);
});

// An environment deletion without `force` racing a flag write: either the write lands first and the
// deletion is refused, or the deletion wins and the write finds no environment; never both succeed
// (which would silently drop the new flag). The test plays the flag write itself, holding the
// environment's lock the way a write transaction does, and commits while the deletion waits.
both_backends!(
    deleting_an_environment_waits_for_writes_in_flight,
    |app: App| async move {
        use sqlx::Connection as _;
        app.create_env("prod").await;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&app.db_url).await.unwrap();
        let mut tx = match app.backend {
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await.unwrap(),
            Backend::Postgres => conn.begin().await.unwrap(),
        };
        // What `put_flag` does first: bump the revision (locking the row), then write the flag.
        let id: i64 = sqlx::Row::get(
            &sqlx::query(
                "UPDATE environments SET revision = revision + 1 WHERE key = 'prod' RETURNING id",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap(),
            "id",
        );
        sqlx::query(
        "INSERT INTO flags (environment_id, key, state, definition, version, created_at, updated_at) \
         VALUES ($1, 'late', 'ENABLED', $2, 1, 0, 0)",
    )
    .bind(id)
    .bind(bool_flag().to_string())
    .execute(&mut *tx)
    .await
    .unwrap();

        let deleting = {
            let app = app.clone();
            tokio::spawn(async move { app.delete("/api/v1/environments/prod", &app.admin).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        tx.commit().await.unwrap();
        let _ = conn.close().await;

        let r = deleting.await.unwrap();
        assert_problem(&r, 409);
        let flag = app.get(&flag_path("prod", "late"), &app.admin).await;
        assert_eq!(
            flag.status, 200,
            "the flag written meanwhile is still there: {}",
            flag.text
        );
    }
);
