//! Retention of the change log and the audit log: both grow with every write, so both are pruned
//! by age and by count ([`Retention`]), in small batches, by a background task
//! ([`Store::run_retention`]). The same task deletes sidecar sessions that ended (or went stale)
//! longer ago than their bound, flag usage of hours older than its bound, and shadow counts older
//! than the longest comparison window.
//!
//! The change log is only what catch-up reads: a sidecar whose revision is older than the oldest
//! change kept gets one `Full` instead of the deltas (`sync/session.rs` checks that the first change
//! read follows the sidecar's revision), so pruning never leaves a sidecar wrong, only costs it a
//! larger frame. The newest change of an environment is always kept, so a sidecar one revision
//! behind still gets a delta however old that change is.

use std::time::Duration;

use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreResult};
use crate::model::{Millis, now_millis};

/// Rows deleted per statement: a large backlog is pruned in many short transactions, so writers
/// (SQLite has one at a time) never wait long behind the pruning.
const BATCH: i64 = 1000;

/// How much of each log is kept. `None` keeps it whatever its age or count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Changes older than this are pruned (the newest of each environment is kept).
    pub changes_max_age: Option<Duration>,
    /// At most this many changes are kept per environment (the newest).
    pub changes_max_count: Option<i64>,
    /// Audit entries older than this are pruned.
    pub audit_max_age: Option<Duration>,
    /// At most this many audit entries are kept (the newest). Counted by id: where ids have gaps
    /// (a PostgreSQL sequence keeps the ids of rolled-back writes), somewhat fewer are kept.
    pub audit_max_count: Option<i64>,
    /// Sidecar sessions disconnected (or stale) for longer than this are deleted.
    pub sessions_max_age: Option<Duration>,
    /// Flag usage of hours older than this is deleted.
    pub usage_max_age: Option<Duration>,
}

/// What one pruning pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Change-log rows.
    pub changes: u64,
    /// Audit rows.
    pub audit: u64,
    /// Sidecar session rows.
    pub sessions: u64,
    /// Flag usage rows, and shadow counts (docs/shadow.md) of minutes older than the longest
    /// comparison window.
    pub usage: u64,
}

impl Store {
    /// Prunes both logs down to `retention` as of `now` (Unix milliseconds).
    pub async fn prune(&self, retention: &Retention, now: Millis) -> StoreResult<Pruned> {
        let cutoff = |age: Option<Duration>| {
            age.map(|a| now.saturating_sub(i64::try_from(a.as_millis()).unwrap_or(i64::MAX)))
        };
        let mut pruned = Pruned::default();
        let environments = sqlx::query("SELECT id, revision FROM environments")
            .fetch_all(&self.pool)
            .await?;
        for env in environments {
            let (id, revision): (i64, i64) = (env.try_get("id")?, env.try_get("revision")?);
            let by_count = retention
                .changes_max_count
                .map(|count| revision - count.max(1));
            let by_age = match cutoff(retention.changes_max_age) {
                Some(before) => sqlx::query(
                    "SELECT MAX(revision) AS r FROM changes \
                     WHERE environment_id = $1 AND created_at < $2",
                )
                .bind(id)
                .bind(before)
                .fetch_one(&self.pool)
                .await?
                .try_get::<Option<i64>, _>("r")?,
                None => None,
            };
            // Whichever bound prunes more; the newest change stays either way.
            let Some(upto) = by_count.max(by_age).map(|upto| upto.min(revision - 1)) else {
                continue;
            };
            pruned.changes += self
                .delete_in_batches(
                    "SELECT MIN(revision) AS lo FROM changes WHERE environment_id = $1",
                    "DELETE FROM changes WHERE environment_id = $1 AND revision <= $2",
                    Some(id),
                    upto,
                )
                .await?;
        }

        let mut upto: Option<i64> = None;
        if let Some(count) = retention.audit_max_count {
            let max: Option<i64> = sqlx::query("SELECT MAX(id) AS m FROM audit")
                .fetch_one(&self.pool)
                .await?
                .try_get("m")?;
            upto = max.map(|m| m - count);
        }
        if let Some(before) = cutoff(retention.audit_max_age) {
            let aged: Option<i64> = sqlx::query("SELECT MAX(id) AS m FROM audit WHERE at < $1")
                .bind(before)
                .fetch_one(&self.pool)
                .await?
                .try_get("m")?;
            upto = upto.max(aged);
        }
        if let Some(upto) = upto {
            pruned.audit += self
                .delete_in_batches(
                    "SELECT MIN(id) AS lo FROM audit",
                    "DELETE FROM audit WHERE id <= $1",
                    None,
                    upto,
                )
                .await?;
        }
        if let Some(before) = cutoff(retention.sessions_max_age) {
            pruned.sessions = self.prune_sessions(before).await?;
        }
        if let Some(before) = cutoff(retention.usage_max_age) {
            pruned.usage = self.prune_usage(before).await?;
        }
        // Shadow counts older than the longest comparison window can never be read.
        pruned.usage += self
            .prune_shadow(now - super::MAX_COMPARISON_MINUTES * super::MINUTE_MS)
            .await?;
        Ok(pruned)
    }

    /// Deletes the rows whose key (revision or id) is at most `upto`, `BATCH` keys per statement,
    /// each in its own transaction. `lowest` reads the smallest key (`lo`); both statements take the
    /// environment id first when `environment` is given.
    async fn delete_in_batches(
        &self,
        lowest: &'static str,
        delete: &'static str,
        environment: Option<i64>,
        upto: i64,
    ) -> StoreResult<u64> {
        let mut query = sqlx::query(lowest);
        if let Some(id) = environment {
            query = query.bind(id);
        }
        let lo: Option<i64> = query.fetch_one(&self.pool).await?.try_get("lo")?;
        let Some(mut lo) = lo else {
            return Ok(0);
        };
        let mut deleted = 0;
        while lo <= upto {
            let step = (lo + BATCH - 1).min(upto);
            let mut query = sqlx::query(delete);
            if let Some(id) = environment {
                query = query.bind(id);
            }
            deleted += query.bind(step).execute(&self.pool).await?.rows_affected();
            lo = step + 1;
        }
        Ok(deleted)
    }

    /// Prunes both logs every `every` until `cancel`; a failed pass is logged and tried again at the
    /// next tick.
    pub async fn run_retention(
        self,
        retention: Retention,
        every: Duration,
        on_pruned: impl Fn(Pruned) + Send + 'static,
        cancel: CancellationToken,
    ) {
        super::every(every, &cancel, async || {
            match self.prune(&retention, now_millis()).await {
                Ok(pruned) => {
                    if pruned != Pruned::default() {
                        tracing::info!(
                            changes = pruned.changes,
                            audit = pruned.audit,
                            sessions = pruned.sessions,
                            usage = pruned.usage,
                            "pruned the change log, the audit log, ended sidecar sessions and old \
                             flag usage"
                        );
                    }
                    on_pruned(pruned);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the logs failed; trying again later");
                }
            }
        })
        .await;
    }
}
