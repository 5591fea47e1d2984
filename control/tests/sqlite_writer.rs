//! SQLite has one writer: nothing in the authentication path may wait for it. A request's token
//! use is noted in memory and written later by a background flush, so requests are authenticated
//! and served while a long write holds the writer lock.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authentication_does_not_wait_for_the_sqlite_writer() {
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    // Tokens never used yet: recording their first use would be a write.
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(app.token(&format!("reader-{i}"), "viewer", &[]).await.1);
    }

    // Another process's long write: the writer lock held for 4 s.
    sqlx::any::install_default_drivers();
    let mut writer = sqlx::AnyConnection::connect(&app.db_url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    let held = Instant::now();

    // Eight requests at once (twice the pool's four connections), each with its own token: all
    // served while the writer is held, none waits for it.
    let requests = tokens.iter().map(|token| {
        let app = app.clone();
        let token = token.clone();
        async move {
            let started = Instant::now();
            let r = app.get("/api/v1/environments/prod", &token).await;
            (r.status, started.elapsed())
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (status, took) in &answers {
        assert_eq!(*status, 200);
        assert!(*took < Duration::from_secs(2), "took {took:?}: {answers:?}");
    }
    assert!(
        held.elapsed() < Duration::from_secs(4),
        "answered while the writer was held"
    );
    // A flush started meanwhile waits for the writer, in the background: no request waits.
    let flush = tokio::spawn({
        let app = app.clone();
        async move { app.state.auth.flush_uses().await }
    });
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(held.elapsed())).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut writer)
        .await
        .unwrap();
    writer.close().await.unwrap();
    flush.await.unwrap();
    app.state.auth.flush_uses().await;

    // Every use was recorded once the writer was free.
    let list = app.get("/api/v1/tokens", &app.admin).await;
    let items = list.expect(200)["items"].as_array().unwrap().clone();
    for item in items
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("reader-"))
    {
        assert!(item["last_used_at"].is_string(), "{item}");
    }
    server.stop().await;
}
