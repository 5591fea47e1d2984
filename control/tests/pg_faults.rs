//! PostgreSQL failure modes, with a real PostgreSQL behind a TCP proxy that can cut the link or
//! freeze it (also in the middle of a transaction): clear `503`s, no request that hangs, recovery
//! without a restart; and conflicts between transactions retried. Under `CI=true` these tests fail
//! when PostgreSQL is missing; elsewhere they say so and pass.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use vexil_control::config::ControlConfig;
use vexil_control::store::{Actor, Precondition, Store, WriteLimits};
use vexil_testkit::FaultProxy;
use vexil_testkit::pg::PgDb;

/// A control replica whose PostgreSQL is behind a [`FaultProxy`], and a direct handle on the same
/// database (not through the proxy) to look behind it.
struct Behind {
    app: App,
    proxy: FaultProxy,
    direct: Store,
    replica: Replica,
    db: PgDb,
    _tls: TempDir,
}

/// `None` outside CI when PostgreSQL is unreachable (the notice says so).
async fn behind_a_proxy(options: Options) -> Option<Behind> {
    let db = PgDb::create("vexil_pgf").await?;
    seed_admin(&db.url()).await;
    let proxy = FaultProxy::start(&db.server_addr());
    let tls = TempDir::new("vexil-tls");
    // In clear, so the proxy can recognise what a client sends.
    let url = db.url_via(proxy.addr());
    let url = format!(
        "{url}{}sslmode=disable",
        if url.contains('?') { '&' } else { '?' }
    );
    let replica = start_replica(&url, Backend::Postgres, &tls, &options).await;
    let direct = Store::connect(&db.url()).await.expect("a direct store");
    Some(Behind {
        app: replica.app.clone(),
        proxy,
        direct,
        replica,
        db,
        _tls: tls,
    })
}

impl Behind {
    async fn stop(self) {
        self.proxy.restore();
        self.replica.stop().await;
        self.direct.close().await;
        self.db.destroy().await;
    }

    async fn revision(&self, env: &str) -> i64 {
        self.direct.get_environment(env).await.unwrap().revision
    }
}

/// A request that must end (with whatever status) within `within`.
async fn ends_within(what: &str, within: Duration, req: Req<'_>) -> (Resp, Duration) {
    let started = Instant::now();
    let r = tokio::time::timeout(within, req.send())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {within:?}"));
    (r, started.elapsed())
}

// The database stops (every connection closed, new ones refused): writes and reads answer a clear
// `503` problem, at once; when it is back, the same replica serves again without a restart, and the
// failed write left nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_database_answers_503_and_recovers() {
    let Some(s) = behind_a_proxy(Options::default()).await else {
        return;
    };
    let app = s.app.clone();
    app.create_env("prod").await;
    app.create_flag("prod", "a", &bool_flag()).await;
    let revision = s.revision("prod").await;

    s.proxy.cut();
    for (what, req) in [
        (
            "a write",
            app.req("PUT", &flag_path("prod", "b"))
                .token(&app.admin)
                .json(&bool_flag()),
        ),
        (
            "a read",
            app.req("GET", "/api/v1/environments/prod")
                .token(&app.admin),
        ),
        ("readiness", app.req("GET", "/readyz")),
    ] {
        let (r, took) = ends_within(what, Duration::from_secs(10), req).await;
        assert_problem(&r, 503);
        assert!(took < Duration::from_secs(7), "{what}: {took:?}");
    }

    s.proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app
            .put_json(&flag_path("prod", "b"), &bool_flag(), &app.admin)
            .await;
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(Instant::now() < deadline, "no recovery: {}", r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        s.revision("prod").await,
        revision + 1,
        "the failed write left nothing"
    );
    s.stop().await;
}

// The database stops answering in the middle of a write transaction (the proxy swallows the
// statement that writes the flag's row, after the environment's row is locked, and freezes,
// closing nothing: a silent partition). Statements are prepared once per connection, so the proxy
// recognises the flag's key among the statement's parameters, not the SQL text. The write still ends, with a
// `503`, at `[database] statement_timeout_ms` (1 s here; before, it waited for ever); PostgreSQL
// ends the orphaned transaction at `idle_in_transaction_timeout_ms` (2 s), so its row lock does not
// block another replica's writes; and once the link is back, this replica writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_hangs_mid_transaction_ends_the_write_at_the_statement_timeout() {
    let options = Options {
        configure: Some(|c| {
            c.database.statement_timeout = Duration::from_secs(1);
            c.database.idle_in_transaction_timeout = Duration::from_secs(2);
        }),
        ..Options::default()
    };
    let Some(s) = behind_a_proxy(options).await else {
        return;
    };
    let app = s.app.clone();
    app.create_env("prod").await;
    app.create_flag("prod", "a", &bool_flag()).await;
    let revision = s.revision("prod").await;

    s.proxy.freeze_when_sent(b"frozen-write");
    let (r, took) = ends_within(
        "a write into a frozen transaction",
        Duration::from_secs(15),
        app.req("PUT", &flag_path("prod", "frozen-write"))
            .token(&app.admin)
            .json(&bool_flag()),
    )
    .await;
    assert_problem(&r, 503);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );

    // Another replica (the direct store) writes the same environment: the orphaned transaction's
    // row lock is released by the server's idle-in-transaction timeout.
    let started = Instant::now();
    let actor = Actor {
        name: "other-replica".into(),
        request_id: None,
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        s.direct.put_flag(
            &actor,
            "prod",
            "c",
            bool_flag(),
            Precondition::None,
            WriteLimits::default(),
        ),
    )
    .await
    .expect("the environment's row lock is released")
    .expect("the other replica's write");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        s.revision("prod").await,
        revision + 1,
        "only the other replica's write"
    );
    assert!(
        s.direct.export("prod").await.unwrap().1["flags"]
            .get("frozen-write")
            .is_none(),
        "the frozen write left nothing"
    );

    s.proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app
            .put_json(&flag_path("prod", "frozen-write"), &bool_flag(), &app.admin)
            .await;
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(Instant::now() < deadline, "no recovery: {}", r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
}

// A link that goes silent in the middle of a read (here the token lookup of authentication, whose
// parameter is the token's hash) still ends the request: `503` after the read timeout plus twice
// the statement timeout (a backstop: the server's timeout cannot end a query whose answer never
// arrives).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_hangs_mid_read_still_ends_the_request() {
    let options = Options {
        read_timeout_ms: Some(1000),
        configure: Some(|c| c.database.statement_timeout = Duration::from_secs(1)),
        ..Options::default()
    };
    let Some(s) = behind_a_proxy(options).await else {
        return;
    };
    let app = s.app.clone();
    app.create_env("prod").await;
    let (_, token) = app.token("reader", "viewer", &[]).await;
    s.proxy
        .freeze_when_sent(vexil_control::auth::hash_secret(&token).as_bytes());
    let (r, took) = ends_within(
        "a read into a frozen query",
        Duration::from_secs(15),
        app.req("GET", "/api/v1/environments/prod").token(&token),
    )
    .await;
    let p = assert_problem(&r, 503);
    assert!(
        p["detail"].as_str().unwrap().contains("did not answer"),
        "{p}"
    );
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "answered after {took:?}"
    );
    s.stop().await;
}

/// `count` writers at once, `rounds` times, each writing its own flag of `env`; the statuses.
async fn concurrent_writes(app: &App, env: &str, count: usize, rounds: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for round in 0..rounds {
        let writes = (0..count).map(|w| {
            let app = app.clone();
            let path = flag_path(env, &format!("w{w}"));
            async move {
                let mut flag = bool_flag();
                flag["metadata"] = json!({ "round": round });
                app.req("PUT", &path)
                    .token(&app.admin)
                    .header("if-match", "*")
                    .json(&flag)
                    .send()
                    .await
                    .status
            }
        });
        statuses.extend(futures_util::future::join_all(writes).await);
    }
    statuses
}

/// Makes every transaction of the database REPEATABLE READ (new connections only): concurrent
/// writers of one environment then fail with a serialization failure (`40001`) instead of
/// waiting for each other.
async fn repeatable_read(db: &PgDb) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} SET default_transaction_isolation TO 'repeatable read'",
        db.name()
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

// Serialization failures are retried (a bounded number of times): concurrent writers of one
// environment under REPEATABLE READ all succeed, each write counted once. Without retries
// (`write_retries = 0`) the same load gets `500`s: the failure is real.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serialization_failures_are_retried() {
    for (retries, expect_all_ok) in [(0u32, false), (3, true)] {
        let Some(db) = PgDb::create("vexil_pgr").await else {
            return;
        };
        repeatable_read(&db).await;
        seed_admin(&db.url()).await;
        let tls = TempDir::new("vexil-tls");
        let configure: fn(&mut ControlConfig) = if retries == 0 {
            |c| c.database.write_retries = 0
        } else {
            |c| c.database.write_retries = 3
        };
        let options = Options {
            configure: Some(configure),
            ..Options::default()
        };
        let replica = start_replica(&db.url(), Backend::Postgres, &tls, &options).await;
        let app = replica.app.clone();
        app.create_env("prod").await;
        for w in 0..4 {
            app.create_flag("prod", &format!("w{w}"), &bool_flag())
                .await;
        }
        let before = app.store.get_environment("prod").await.unwrap().revision;
        let statuses = concurrent_writes(&app, "prod", 4, 5).await;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let after = app.store.get_environment("prod").await.unwrap().revision;
        assert_eq!(
            after - before,
            ok as i64,
            "one revision per 200: {statuses:?}"
        );
        if expect_all_ok {
            assert_eq!(ok, statuses.len(), "with retries: {statuses:?}");
        } else {
            assert!(
                statuses.contains(&500),
                "without retries some writes fail: {statuses:?}"
            );
        }
        replica.stop().await;
        db.destroy().await;
    }
}
