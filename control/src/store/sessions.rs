//! Fleet sessions: one row per sidecar sync session, on every replica (`sidecar_sessions`,
//! migration 0004), so any replica can list the whole fleet and wait for its acknowledgements.
//!
//! The replica serving a session writes its row ([`Store::record_sessions`], from
//! `sync/fleet.rs`, batched and off the stream's path), refreshes `last_seen` of all its connected
//! rows every heartbeat ([`Store::touch_sessions`]), and marks them disconnected when they end. A
//! replica that dies leaves its rows "connected": readers treat a row whose `last_seen` is older
//! than three heartbeats as disconnected (stale). Disconnected rows are deleted by retention
//! ([`Store::prune_sessions`]).

use sqlx::Row;

use super::{Store, StoreResult};
use crate::model::Millis;

/// A session as the replica serving it writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// Unique across replicas (random).
    pub id: String,
    /// The serving replica's server id.
    pub replica: String,
    /// The replica's own number for the session.
    pub session: i64,
    /// The environment it follows.
    pub environment: String,
    /// `Subscribe.client_id`.
    pub client_id: String,
    /// The sidecar's software version.
    pub version: String,
    /// Its address as the replica sees it.
    pub address: String,
    /// Latest revision written on its stream.
    pub sent_revision: i64,
    /// Latest revision it acknowledged.
    pub acked_revision: i64,
    /// Digest of the latest acknowledged document that carried one.
    pub digest: Option<String>,
    /// The revision of that digest.
    pub digest_revision: Option<i64>,
    /// Whether it matched control's document (`None`: not checked).
    pub digest_matches: Option<bool>,
    /// When it subscribed.
    pub connected_since: Millis,
    /// When the replica last vouched for it.
    pub last_seen: Millis,
    /// When it ended (`None`: connected).
    pub disconnected_at: Option<Millis>,
}

/// Where a page of sessions ends: the sort key of its last row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionCursor {
    /// The row's environment.
    pub environment: String,
    /// Its client id.
    pub client_id: String,
    /// When it connected.
    pub connected_since: Millis,
    /// Its session id.
    pub id: String,
}

/// A session as read back, with its environment's current revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// The row.
    pub row: SessionRow,
    /// The environment's revision now (`None`: the environment is gone).
    pub current_revision: Option<i64>,
}

impl SessionState {
    /// Connected, and vouched for within `stale_after` of `now`.
    pub fn is_live(&self, now: Millis, stale_after: std::time::Duration) -> bool {
        self.row.disconnected_at.is_none() && !self.is_stale(now, stale_after)
    }

    /// Marked connected, but its replica has not vouched for it within `stale_after`: the replica
    /// died or lost the database. Read as disconnected.
    pub fn is_stale(&self, now: Millis, stale_after: std::time::Duration) -> bool {
        self.row.disconnected_at.is_none()
            && now.saturating_sub(self.row.last_seen)
                > i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Rows deleted per statement by retention.
const BATCH: i64 = 1000;

impl Store {
    /// Writes `rows` (new sessions, acknowledgements, ends) in one transaction. A row already
    /// marked disconnected stays so: a late update cannot bring a session back.
    pub async fn record_sessions(&self, rows: &[SessionRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO sidecar_sessions (id, replica, session, environment, client_id, \
                 version, address, sent_revision, acked_revision, acked_digest, digest_revision, \
                 digest_matches, connected_since, last_seen, disconnected_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (id) DO UPDATE SET sent_revision = excluded.sent_revision, \
                 acked_revision = excluded.acked_revision, acked_digest = excluded.acked_digest, \
                 digest_revision = excluded.digest_revision, \
                 digest_matches = excluded.digest_matches, last_seen = excluded.last_seen, \
                 disconnected_at = excluded.disconnected_at \
                 WHERE sidecar_sessions.disconnected_at IS NULL",
            )
            .bind(r.id.clone())
            .bind(r.replica.clone())
            .bind(r.session)
            .bind(r.environment.clone())
            .bind(r.client_id.clone())
            .bind(r.version.clone())
            .bind(r.address.clone())
            .bind(r.sent_revision)
            .bind(r.acked_revision)
            .bind(r.digest.clone())
            .bind(r.digest_revision)
            .bind(r.digest_matches.map(i64::from))
            .bind(r.connected_since)
            .bind(r.last_seen)
            .bind(r.disconnected_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Refreshes `last_seen` of every connected session of `replica`: it still serves them.
    pub async fn touch_sessions(&self, replica: &str, now: Millis) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE sidecar_sessions SET last_seen = $1 \
             WHERE replica = $2 AND disconnected_at IS NULL",
        )
        .bind(now)
        .bind(replica)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Marks every connected session of `replica` disconnected at `now` (the replica stops).
    pub async fn end_replica_sessions(&self, replica: &str, now: Millis) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE sidecar_sessions SET disconnected_at = $1, last_seen = $1 \
             WHERE replica = $2 AND disconnected_at IS NULL",
        )
        .bind(now)
        .bind(replica)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Every session row (of `environment` when given), connected or not, with its environment's
    /// current revision; sorted by environment, client id, connection time and session id.
    pub async fn sessions(&self, environment: Option<&str>) -> StoreResult<Vec<SessionState>> {
        self.sessions_page(environment, None, i64::MAX).await
    }

    /// At most `limit` session rows (of `environment` when given) after the one at `after` (the
    /// environment, client id, connection time and session id of the last row of the previous
    /// page), in the order
    /// of [`Store::sessions`].
    pub async fn sessions_page(
        &self,
        environment: Option<&str>,
        after: Option<&SessionCursor>,
        limit: i64,
    ) -> StoreResult<Vec<SessionState>> {
        let rows = sqlx::query(
            "SELECT s.id, s.replica, s.session, s.environment, s.client_id, s.version, s.address, \
             s.sent_revision, s.acked_revision, s.acked_digest, s.digest_revision, \
             s.digest_matches, s.connected_since, s.last_seen, s.disconnected_at, \
             e.revision AS current_revision \
             FROM sidecar_sessions s LEFT JOIN environments e ON e.key = s.environment \
             WHERE ($1 IS NULL OR s.environment = $1) \
             AND ($2 IS NULL OR (s.environment, s.client_id, s.connected_since, s.id) > ($2, $3, $4, $5)) \
             ORDER BY s.environment, s.client_id, s.connected_since, s.id LIMIT $6",
        )
        .bind(environment.map(str::to_string))
        .bind(after.map(|c| c.environment.clone()))
        .bind(after.map(|c| c.client_id.clone()))
        .bind(after.map(|c| c.connected_since))
        .bind(after.map(|c| c.id.clone()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionState {
                    row: SessionRow {
                        id: r.try_get("id")?,
                        replica: r.try_get("replica")?,
                        session: r.try_get("session")?,
                        environment: r.try_get("environment")?,
                        client_id: r.try_get("client_id")?,
                        version: r.try_get("version")?,
                        address: r.try_get("address")?,
                        sent_revision: r.try_get("sent_revision")?,
                        acked_revision: r.try_get("acked_revision")?,
                        digest: r.try_get("acked_digest")?,
                        digest_revision: r.try_get("digest_revision")?,
                        digest_matches: r
                            .try_get::<Option<i64>, _>("digest_matches")?
                            .map(|m| m != 0),
                        connected_since: r.try_get("connected_since")?,
                        last_seen: r.try_get("last_seen")?,
                        disconnected_at: r.try_get("disconnected_at")?,
                    },
                    current_revision: r.try_get("current_revision")?,
                })
            })
            .collect()
    }

    /// Deletes the sessions that ended (or went stale: last seen) before `before`, in batches.
    pub async fn prune_sessions(&self, before: Millis) -> StoreResult<u64> {
        let mut deleted = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM sidecar_sessions WHERE id IN (SELECT id FROM sidecar_sessions \
                 WHERE (disconnected_at IS NOT NULL AND disconnected_at < $1) \
                 OR (disconnected_at IS NULL AND last_seen < $1) LIMIT $2)",
            )
            .bind(before)
            .bind(BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += n;
            if n < BATCH as u64 {
                return Ok(deleted);
            }
        }
    }
}
