//! The store: environments, flags, evaluators, the change log, tokens and the audit log, on SQLite
//! (an embedded file, the default) or PostgreSQL (production).
//!
//! Both databases run the same SQL through sqlx's `Any` driver; only the migrations differ in syntax.
//! JSON is kept as text and times as Unix milliseconds so nothing above the SQL cares which database
//! it is talking to.
//!
//! Every change of an environment's flag set (flags, evaluators, imports, promotions) goes through
//! the one write path in [`write`], which keeps the invariant: revision + 1 first, precondition,
//! validation of the whole resulting environment, the row, the change-log row, the audit row,
//! commit, announce. Environments and tokens are written in their own transactions with an audit
//! row; they do not move a revision.

mod evaluators;
mod events;
mod flags;
mod flagsets;
mod guards;
mod proposals;
mod retention;
mod schemas;
mod sessions;
mod signing;
mod tokens;
mod usage;
mod write;

use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};
use tokio::sync::broadcast;

use crate::model::{
    AuditEntry, Change, ChangeKind, Environment, Millis, Page, now_millis, rfc3339,
};

pub use events::ChangeEvent;
pub use flags::FlagQuery;
#[cfg(feature = "fuzzing")]
pub(crate) use flags::check_state;
pub use guards::{GuardRecord, OutcomeRow};
pub use proposals::{
    DEFAULT_SAMPLE_RATIO, MAX_COMPARISON_MINUTES, MINUTE_MS, ProposalRecord, ProposedChange,
    ShadowRow, TransitionRow, check_sample_ratio, is_proposal_id, minute_of,
};
pub use retention::{Pruned, Retention};
pub use schemas::{MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH};
pub use sessions::{SessionCursor, SessionRow, SessionState};
pub use signing::{Rotate, SigningKey, SigningKeyInfo};
pub use usage::{FlagUsageRow, HOUR_MS, UsageRow, hour_of};

#[cfg(feature = "fuzzing")]
pub(crate) use write::validate_document;
pub use write::{Precondition, WriteLimits};

/// Which database is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The operation conflicts with the current state (exists already, still in use...).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` named a version that is no longer current.
    #[error("precondition failed: the current version is {current}")]
    PreconditionFailed {
        /// The current version.
        current: i64,
    },
    /// Replacing needs `If-Match`.
    #[error("replacing an existing {0} requires If-Match with its ETag")]
    PreconditionRequired(&'static str),
    /// The definition is invalid; every problem with its JSON path.
    #[error("invalid definition: {0}")]
    Invalid(vexil_engine::ValidationErrors),
    /// Removing the item would break what still uses it: `detail` names the users, `errors` are
    /// the problems the environment would have, with their JSON paths.
    #[error("{detail}")]
    InUse {
        /// What still uses it.
        detail: String,
        /// What would break.
        errors: vexil_engine::ValidationErrors,
    },
    /// The environment the write would leave crosses a whole-environment limit (flag count,
    /// document size): `detail` names each limit and figure, `errors` lists them (and any rule
    /// problem the write also has) with their JSON paths.
    #[error("{detail}")]
    OverLimit {
        /// Each limit crossed, with the figure it would reach and the one it has now.
        detail: String,
        /// The problems, with their JSON paths.
        errors: vexil_engine::ValidationErrors,
    },
    /// Variants of flags that carry a JSON Schema do not validate against it, or a schema is
    /// itself invalid: `detail` says which, `errors` lists every problem with its JSON path
    /// (`flags.config.variants.dark.colors[0]`, or a path into the schema).
    #[error("{detail}")]
    SchemaViolation {
        /// Which flag and variants (or schema).
        detail: String,
        /// The problems, with their JSON paths.
        errors: vexil_engine::ValidationErrors,
    },
    /// The request is well formed but cannot be taken as it is (a proposal that does not fit its
    /// live flag): `detail` says why, `errors` lists every problem with its JSON path.
    #[error("{detail}")]
    Unprocessable {
        /// What cannot be taken.
        detail: String,
        /// The problems, with their JSON paths.
        errors: vexil_engine::ValidationErrors,
    },
    /// A request field is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The database cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// Anything else from the database.
    #[error("store error: {0}")]
    Internal(sqlx::Error),
}

impl StoreError {
    /// The database did not finish a write within `deadline`: unavailable, like a database that
    /// cannot be reached (`503`).
    pub fn timed_out(deadline: Duration) -> StoreError {
        StoreError::Unavailable(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the database did not finish the write within {deadline:?}"),
        )))
    }
}

/// `call`, or [`StoreError::timed_out`] once `deadline` has passed.
pub async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::timed_out(deadline)))
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            // The conversation broke off, e.g. a server (or a proxy in front of it) that accepts
            // and closes at once: sqlx reads the EOF as "unexpected response from SSLRequest".
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e),
            sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
                StoreError::Unavailable(e)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict("already exists".into())
            }
            _ => StoreError::Internal(e),
        }
    }
}

/// PostgreSQL error codes that mean "not now" rather than "wrong": connection exceptions (class
/// 08), a server shutting down or starting up (57P01-57P03), too many connections (53300), a
/// statement cancelled by `statement_timeout` (57014, e.g. a write queued too long behind others
/// for an environment's row lock), a lock not available (55P03).
fn is_unavailable_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.starts_with("08")
            || matches!(c, "57P01" | "57P02" | "57P03" | "53300" | "57014" | "55P03")
    })
}

/// A write the database refused because of a conflict with another transaction, which succeeds
/// when tried again: a serialization failure (`40001`) or a deadlock (`40P01`).
pub(crate) fn is_retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Internal(sqlx::Error::Database(db))
        if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// How the store talks to its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// PostgreSQL: `statement_timeout` of every connection, and the deadline of a whole write
    /// transaction on control's side (a server that stops answering cannot enforce its own).
    pub statement_timeout: Duration,
    /// PostgreSQL: `idle_in_transaction_session_timeout` of every connection: the server ends a
    /// transaction whose client went silent, releasing its locks.
    pub idle_in_transaction_timeout: Duration,
    /// PostgreSQL: TCP keepalive of the server's end of every connection (`tcp_keepalives_idle`;
    /// probes every `idle / 3`, 3 of them), so the server drops connections of a vanished
    /// replica.
    pub keepalive_idle: Duration,
    /// How often a write refused for a serialization failure or a deadlock is tried again.
    pub write_retries: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            statement_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(15),
            keepalive_idle: Duration::from_secs(30),
            write_retries: 3,
        }
    }
}

impl StoreOptions {
    /// The deadline of one write transaction on control's side: PostgreSQL's statement timeout
    /// (SQLite is local: its writer lock wait is bounded by `busy_timeout`).
    pub(crate) fn write_deadline(&self, backend: Backend) -> Option<Duration> {
        (backend == Backend::Postgres).then_some(self.statement_timeout)
    }

    /// The `SET` statements every PostgreSQL connection starts with.
    fn postgres_session(&self) -> String {
        let secs = self.keepalive_idle.as_secs().max(1);
        format!(
            "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
             SET tcp_keepalives_idle = {secs}; SET tcp_keepalives_interval = {}; \
             SET tcp_keepalives_count = 3;",
            self.statement_timeout.as_millis().max(1),
            self.idle_in_transaction_timeout.as_millis().max(1),
            (secs / 3).max(1),
        )
    }
}

/// What a write of one item stored.
#[derive(Clone, Debug)]
pub struct Saved<T> {
    /// The item as stored.
    pub record: T,
    /// It did not exist before.
    pub created: bool,
    /// The environment's revision the write made.
    pub revision: i64,
}

/// Who is writing, for the audit log.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The token name, or `jwt:<subject>`.
    pub name: String,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
}

/// A committed revision, announced to the sync hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The environment key.
    pub environment: String,
    /// Its new revision.
    pub revision: i64,
}

/// Filters of the audit query.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this flag (or evaluator, or token) name.
    pub target: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only the entry of the request with this `x-request-id` (after a lost answer: did it
    /// commit?).
    pub request_id: Option<String>,
    /// Not before (Unix ms).
    pub since: Option<Millis>,
    /// Not after (Unix ms).
    pub until: Option<Millis>,
    /// Entries older than this id (the cursor).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: i64,
    /// Byte budget of a page (the entries' text): a page stops before the entry that would take it
    /// past this (it always holds at least one entry) and still gives a cursor. `None`: rows only.
    pub max_bytes: Option<usize>,
}

/// The store. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    committed: broadcast::Sender<Committed>,
    options: StoreOptions,
}

const MIGRATIONS_SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "incarnation",
        include_str!("../../migrations/sqlite/0002_incarnation.sql"),
    ),
    (
        3,
        "signing_keys",
        include_str!("../../migrations/sqlite/0003_signing_keys.sql"),
    ),
    (
        4,
        "sidecar sessions",
        include_str!("../../migrations/sqlite/0004_sidecar_sessions.sql"),
    ),
    (
        5,
        "change audit",
        include_str!("../../migrations/sqlite/0005_change_audit.sql"),
    ),
    (
        6,
        "flag usage",
        include_str!("../../migrations/sqlite/0006_flag_usage.sql"),
    ),
    (
        8,
        "flag schemas",
        include_str!("../../migrations/sqlite/0008_flag_schemas.sql"),
    ),
    (
        9,
        "guards",
        include_str!("../../migrations/sqlite/0009_guards.sql"),
    ),
    (
        10,
        "flag proposals",
        include_str!("../../migrations/sqlite/0010_flag_proposals.sql"),
    ),
];
const MIGRATIONS_POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "incarnation",
        include_str!("../../migrations/postgres/0002_incarnation.sql"),
    ),
    (
        3,
        "signing_keys",
        include_str!("../../migrations/postgres/0003_signing_keys.sql"),
    ),
    (
        4,
        "sidecar sessions",
        include_str!("../../migrations/postgres/0004_sidecar_sessions.sql"),
    ),
    (
        5,
        "change audit",
        include_str!("../../migrations/postgres/0005_change_audit.sql"),
    ),
    (
        6,
        "flag usage",
        include_str!("../../migrations/postgres/0006_flag_usage.sql"),
    ),
    (
        8,
        "flag schemas",
        include_str!("../../migrations/postgres/0008_flag_schemas.sql"),
    ),
    (
        9,
        "guards",
        include_str!("../../migrations/postgres/0009_guards.sql"),
    ),
    (
        10,
        "flag proposals",
        include_str!("../../migrations/postgres/0010_flag_proposals.sql"),
    ),
];

impl Store {
    /// Connects to `url` (`sqlite://path`, `postgres://...`) with the default [`StoreOptions`] and
    /// applies pending migrations.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Connects to `url` with `options` and applies pending migrations.
    pub async fn connect_with(url: &str, options: StoreOptions) -> StoreResult<Store> {
        let store_options = options;
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadRequest(format!(
                "unsupported database URL (expected sqlite:// or postgres://): {}",
                redact_url(url)
            )));
        };
        let url = match backend {
            // Create the file on first start.
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(5));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            });
        }
        if backend == Backend::Postgres {
            let session = store_options.postgres_session();
            options = options.after_connect(move |conn, _| {
                let session = session.clone();
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(session))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let store = Store {
            pool,
            backend,
            committed: broadcast::channel(1024).0,
            options: store_options,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let list = match self.backend {
            Backend::Sqlite => MIGRATIONS_SQLITE,
            Backend::Postgres => MIGRATIONS_POSTGRES,
        };
        let migrations: Vec<Migration> = list
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let migrator = Migrator {
            migrations: migrations.into(),
            ..Migrator::DEFAULT
        };
        // On a connection of its own without the statement timeout (a migration of a large table
        // may take longer), closed afterwards rather than returned to the pool.
        let mut conn = self.pool.acquire().await?.detach();
        if self.backend == Backend::Postgres {
            sqlx::raw_sql("SET statement_timeout = 0")
                .execute(&mut conn)
                .await?;
        }
        let migrated = migrator
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Internal(sqlx::Error::Migrate(Box::new(e))));
        let _ = sqlx::Connection::close(conn).await;
        migrated?;
        self.bind_token_incarnations().await?;
        self.give_signing_keys().await
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`,
    /// queueing behind other writers for up to `busy_timeout`): a deferred transaction that reads
    /// before it writes cannot upgrade its lock once another writer has committed, and fails with
    /// `SQLITE_BUSY` at once instead of waiting.
    pub(crate) async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The statement timeout when the database is PostgreSQL (a remote server that can go silent),
    /// `None` on SQLite: the bound a caller adds for the store's part of its work.
    pub fn statement_deadline(&self) -> Option<Duration> {
        self.options.write_deadline(self.backend)
    }

    /// Checks the database answers (readiness).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Committed revisions, as they happen (for the sync hub).
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.committed.subscribe()
    }

    fn announce(&self, environment: &str, revision: i64) {
        // No subscriber is fine: nobody is waiting.
        let _ = self.committed.send(Committed {
            environment: environment.to_string(),
            revision,
        });
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- environments ----

    /// Every environment, by key.
    pub async fn list_environments(&self) -> StoreResult<Vec<Environment>> {
        let rows = sqlx::query(
            "SELECT key, name, revision, incarnation, metadata, created_at, updated_at \
             FROM environments ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(environment_from_row).collect()
    }

    /// The environment `key`.
    pub async fn get_environment(&self, key: &str) -> StoreResult<Environment> {
        find_environment(&mut *self.pool.acquire().await?, key).await
    }

    /// Creates an environment at revision 0, with a new incarnation (also when an environment of
    /// the same key existed before: its revisions, tokens and sidecars' snapshots are not this
    /// one's).
    pub async fn create_environment(
        &self,
        actor: &Actor,
        key: &str,
        name: &str,
    ) -> StoreResult<Environment> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM environments WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "environment {key:?} already exists"
            )));
        }
        let row = sqlx::query(
            "INSERT INTO environments (key, name, revision, incarnation, metadata, created_at, updated_at, signing_keys) \
             VALUES ($1, $2, 0, $3, '{}', $4, $5, $6) \
             RETURNING key, name, revision, incarnation, metadata, created_at, updated_at",
        )
        .bind(key)
        .bind(name)
        .bind(new_incarnation())
        .bind(now)
        .bind(now)
        .bind(signing::first_keys(now))
        .fetch_one(&mut *tx)
        .await?;
        let env = environment_from_row(&row)?;
        audit(
            &mut tx,
            actor,
            "environment.create",
            Some(key),
            None,
            Value::Null,
            to_value(&env),
        )
        .await?;
        tx.commit().await?;
        Ok(env)
    }

    /// Renames an environment.
    pub async fn update_environment(
        &self,
        actor: &Actor,
        key: &str,
        name: &str,
    ) -> StoreResult<Environment> {
        let mut tx = self.begin_write().await?;
        let before = find_environment(&mut tx, key).await?;
        let row = sqlx::query(
            "UPDATE environments SET name = $1, updated_at = $2 WHERE key = $3 \
             RETURNING key, name, revision, incarnation, metadata, created_at, updated_at",
        )
        .bind(name)
        .bind(now_millis())
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let env = environment_from_row(&row)?;
        audit(
            &mut tx,
            actor,
            "environment.update",
            Some(key),
            None,
            to_value(&before),
            to_value(&env),
        )
        .await?;
        tx.commit().await?;
        Ok(env)
    }

    /// Gives environment `key` a new incarnation, keeping its revision, flags and history: after a
    /// restore from a backup or a failover to a replica that lost commits, the revision numbers
    /// sidecars hold may name other contents than the store's, so every sidecar is made to take a
    /// Full (its incarnation no longer matches). Tokens limited to the environment move to the new
    /// incarnation with it (they were given this environment, not a deleted one).
    pub async fn rotate_incarnation(&self, actor: &Actor, key: &str) -> StoreResult<Environment> {
        let mut tx = self.begin_write().await?;
        let before = find_environment(&mut tx, key).await?;
        let incarnation = new_incarnation();
        let row = sqlx::query(
            "UPDATE environments SET incarnation = $1, updated_at = $2 WHERE key = $3 \
             RETURNING key, name, revision, incarnation, metadata, created_at, updated_at",
        )
        .bind(&incarnation)
        .bind(now_millis())
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let env = environment_from_row(&row)?;
        let tokens = sqlx::query("SELECT id, incarnations FROM tokens WHERE incarnations LIKE $1")
            .bind(format!("%{}%", before.incarnation))
            .fetch_all(&mut *tx)
            .await?;
        for token in tokens {
            let id: i64 = token.try_get("id")?;
            let mut map: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&token.try_get::<String, _>("incarnations")?)
                    .map_err(|_| corrupt("tokens.incarnations"))?;
            if map.get(key) == Some(&before.incarnation) {
                map.insert(key.to_string(), incarnation.clone());
                sqlx::query("UPDATE tokens SET incarnations = $1 WHERE id = $2")
                    .bind(serde_json::json!(map).to_string())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        audit(
            &mut tx,
            actor,
            "environment.incarnation",
            Some(key),
            None,
            to_value(&before),
            to_value(&env),
        )
        .await?;
        tx.commit().await?;
        Ok(env)
    }

    /// Deletes an environment; refused while it has flags unless `force`.
    pub async fn delete_environment(
        &self,
        actor: &Actor,
        key: &str,
        force: bool,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        // A no-op update first: it takes the row lock (PostgreSQL), so a flag write in flight
        // commits before the flags are counted, or waits and then finds no environment.
        let row = sqlx::query(
            "UPDATE environments SET updated_at = updated_at WHERE key = $1 \
             RETURNING id, key, name, revision, incarnation, metadata, created_at, updated_at",
        )
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found_env(key))?;
        let id: i64 = row.try_get("id")?;
        let env = environment_from_row(&row)?;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM flags WHERE environment_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if count > 0 && !force {
            return Err(StoreError::Conflict(format!(
                "environment {key:?} still has {count} flags; delete them first or pass ?force=true"
            )));
        }
        for sql in [
            "DELETE FROM flags WHERE environment_id = $1",
            "DELETE FROM evaluators WHERE environment_id = $1",
            "DELETE FROM changes WHERE environment_id = $1",
            "DELETE FROM environments WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        audit(
            &mut tx,
            actor,
            "environment.delete",
            Some(key),
            None,
            to_value(&env),
            Value::Null,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- change log ----

    /// The changes of `environment` after `revision`, oldest first, at most `limit`.
    pub async fn changes_since(
        &self,
        environment: &str,
        revision: i64,
        limit: i64,
    ) -> StoreResult<Vec<Change>> {
        self.changes_in(environment, None, revision, limit).await
    }

    /// [`Store::changes_since`] of the incarnation `incarnation` of `environment` only: none when
    /// the environment has another incarnation now (it was created again), so deltas of one
    /// incarnation are never read as the continuation of another's revisions.
    pub async fn changes_in(
        &self,
        environment: &str,
        incarnation: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> StoreResult<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT c.revision, c.kind, c.key, c.definition FROM changes c \
             JOIN environments e ON e.id = c.environment_id \
             WHERE e.key = $1 AND ($2 IS NULL OR e.incarnation = $2) AND c.revision > $3 \
             ORDER BY c.revision LIMIT $4",
        )
        .bind(environment)
        .bind(incarnation.map(str::to_string))
        .bind(revision)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(Change {
                    revision: r.try_get("revision")?,
                    kind: ChangeKind::parse(&kind).ok_or_else(|| corrupt("changes.kind"))?,
                    key: r.try_get("key")?,
                    definition: json_opt(r.try_get("definition")?)?,
                })
            })
            .collect()
    }

    // ---- audit ----

    /// Audit entries, newest first: at most `q.limit`, and no more than `q.max_bytes` of text
    /// beyond the first. Rows are read as a stream and the read stops with the page, so a page of
    /// large entries (whole flag sets before and after) is never all in memory.
    pub async fn audit(&self, q: &AuditQuery) -> StoreResult<Page<AuditEntry>> {
        use futures_util::TryStreamExt;
        // Optional filters as `($n IS NULL OR column = $n)`, so the statement text stays fixed.
        let mut rows = sqlx::query(
            "SELECT id, at, actor, action, environment, target, before, after, request_id, note \
             FROM audit WHERE ($1 IS NULL OR environment = $1) AND ($2 IS NULL OR target = $2) \
             AND ($3 IS NULL OR actor = $3) AND ($4 IS NULL OR at >= $4) \
             AND ($5 IS NULL OR at <= $5) AND ($6 IS NULL OR id < $6) \
             AND ($7 IS NULL OR request_id = $7) \
             ORDER BY id DESC LIMIT $8",
        )
        .bind(q.environment.clone())
        .bind(q.target.clone())
        .bind(q.actor.clone())
        .bind(q.since)
        .bind(q.until)
        .bind(q.before_id)
        .bind(q.request_id.clone())
        .bind(q.limit + 1)
        .fetch(&self.pool);
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        while let Some(r) = rows.try_next().await? {
            let before: Option<String> = r.try_get("before")?;
            let after: Option<String> = r.try_get("after")?;
            let entry = AuditEntry {
                id: r.try_get("id")?,
                at: rfc3339(r.try_get("at")?),
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                environment: r.try_get("environment")?,
                target: r.try_get("target")?,
                before: Value::Null,
                after: Value::Null,
                request_id: r.try_get("request_id")?,
                note: json_opt(r.try_get("note")?)?,
            };
            let size = entry_size(&entry)
                + entry.note.as_ref().map_or(0, |n| n.to_string().len())
                + before.as_ref().map_or(0, String::len)
                + after.as_ref().map_or(0, String::len);
            let full = items.len() as i64 >= q.limit
                || q.max_bytes
                    .is_some_and(|max| !items.is_empty() && bytes + size > max);
            if full {
                more = true;
                break;
            }
            bytes += size;
            items.push(AuditEntry {
                before: json_opt(before)?.unwrap_or(Value::Null),
                after: json_opt(after)?.unwrap_or(Value::Null),
                ..entry
            });
        }
        let next_cursor = more
            .then(|| items.last().map(|e: &AuditEntry| e.id.to_string()))
            .flatten();
        Ok(Page { items, next_cursor })
    }
}

/// The bytes of an audit entry's fields other than `before` and `after`, with room for the JSON
/// around them.
fn entry_size(e: &AuditEntry) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    128 + e.at.len()
        + e.actor.len()
        + e.action.len()
        + text(&e.environment)
        + text(&e.target)
        + text(&e.request_id)
}

/// Appends an audit entry; returns its id.
pub(crate) async fn audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    actor: &Actor,
    action: &str,
    environment: Option<&str>,
    target: Option<&str>,
    before: Value,
    after: Value,
) -> StoreResult<i64> {
    let text = |v: Value| (!v.is_null()).then(|| v.to_string());
    let row = sqlx::query(
        "INSERT INTO audit (at, actor, action, environment, target, before, after, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(now_millis())
    .bind(actor.name.clone())
    .bind(action.to_string())
    .bind(environment.map(str::to_string))
    .bind(target.map(str::to_string))
    .bind(text(before))
    .bind(text(after))
    .bind(actor.request_id.clone())
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("id")?)
}

/// The id of environment `key`, read on `conn` (a pool connection or a transaction).
pub(crate) async fn environment_id(conn: &mut sqlx::AnyConnection, key: &str) -> StoreResult<i64> {
    sqlx::query("SELECT id FROM environments WHERE key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| not_found_env(key))?
        .try_get("id")
        .map_err(Into::into)
}

/// Environment `key`, read on `conn` (a pool connection or a transaction).
pub(crate) async fn find_environment(
    conn: &mut sqlx::AnyConnection,
    key: &str,
) -> StoreResult<Environment> {
    let row = sqlx::query(
        "SELECT key, name, revision, incarnation, metadata, created_at, updated_at \
         FROM environments WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found_env(key))?;
    environment_from_row(&row)
}

pub(crate) fn environment_from_row(r: &AnyRow) -> StoreResult<Environment> {
    Ok(Environment {
        key: r.try_get("key")?,
        name: r.try_get("name")?,
        revision: r.try_get("revision")?,
        incarnation: r.try_get("incarnation")?,
        metadata: json_opt(Some(r.try_get("metadata")?))?.unwrap_or(Value::Null),
        created_at: rfc3339(r.try_get("created_at")?),
        updated_at: rfc3339(r.try_get("updated_at")?),
    })
}

/// A new incarnation id: 128 random bits, 32 lowercase hex digits.
/// Runs `pass` every `every` (the first at once; a late tick is not made up for) until `cancel`:
/// the store's background tasks (retention, signing-key rotation).
pub(crate) async fn every<F: std::future::Future<Output = ()>>(
    every: Duration,
    cancel: &tokio_util::sync::CancellationToken,
    mut pass: impl FnMut() -> F,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        pass().await;
    }
}

pub(crate) fn new_incarnation() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) fn not_found_env(key: &str) -> StoreError {
    StoreError::NotFound(format!("environment {key:?}"))
}

pub(crate) fn json_opt(text: Option<String>) -> StoreResult<Option<Value>> {
    text.map(|t| serde_json::from_str(&t).map_err(|_| corrupt("a JSON column")))
        .transpose()
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(sqlx::Error::Decode(
        format!("unreadable value in {what}").into(),
    ))
}

pub(crate) fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A database URL without its password (userinfo or query), for messages: one redaction for the
/// whole code base, `vexil_settings::SecretUrl`'s.
pub fn redact_url(url: &str) -> String {
    vexil_settings::SecretUrl::from(url).redacted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_database_is_unavailable_not_internal() {
        let unavailable =
            |e: sqlx::Error| matches!(StoreError::from(e), StoreError::Unavailable(_));
        assert!(unavailable(sqlx::Error::PoolTimedOut));
        assert!(unavailable(sqlx::Error::Io(
            std::io::ErrorKind::ConnectionReset.into()
        )));
        assert!(unavailable(sqlx::Error::Protocol(
            "unexpected response from SSLRequest: 0x00".into()
        )));
        assert!(!unavailable(sqlx::Error::RowNotFound));
        assert!(is_unavailable_code(Some("08006")));
        assert!(is_unavailable_code(Some("57P03")));
        assert!(is_unavailable_code(Some("57014")), "statement timeout");
        assert!(!is_unavailable_code(Some("23505")));
        assert!(!is_unavailable_code(None));
    }
}
