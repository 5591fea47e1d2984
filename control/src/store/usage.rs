//! Flag usage: how many times an environment's sidecars decided each variant of each flag, per hour
//! (`flag_usage`, migration 0006; docs/usage.md).
//!
//! Each replica adds the sidecars' reports up in memory (`sync/usage.rs`) and writes them here every
//! few seconds with [`Store::record_usage`]: one transaction, many rows per statement, each row
//! added to what is there (other replicas write the same rows). Counts of flags the environment
//! does not have (deleted meanwhile, or never there) are not kept. Retention deletes hours older
//! than its bound ([`Store::prune_usage`]).

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::{Store, StoreResult};
use crate::model::Millis;

/// One hour in milliseconds.
pub const HOUR_MS: Millis = 3_600_000;

/// Rows per `INSERT` statement (five parameters each: far below both databases' limits).
const ROWS_PER_STATEMENT: usize = 200;

/// The start of the hour (UTC) holding `at` (Unix milliseconds).
pub fn hour_of(at: Millis) -> Millis {
    at - at.rem_euclid(HOUR_MS)
}

/// Evaluations of one variant of one flag of one environment in one hour, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The environment key.
    pub environment: String,
    /// The flag key.
    pub flag: String,
    /// The variant (`None`: evaluations that gave no value).
    pub variant: Option<String>,
    /// The hour ([`hour_of`]).
    pub hour: Millis,
    /// How many; added to what the row holds.
    pub evaluations: i64,
}

/// Evaluations of one variant of one flag over a window, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagUsageRow {
    /// The flag key.
    pub flag: String,
    /// The variant (`None`: no value).
    pub variant: Option<String>,
    /// Evaluations in the window.
    pub evaluations: i64,
    /// The latest hour with evaluations in the window.
    pub last_hour: Millis,
}

fn variant_column(variant: Option<&str>) -> String {
    variant.unwrap_or_default().to_string()
}

fn variant_of(column: String) -> Option<String> {
    (!column.is_empty()).then_some(column)
}

impl Store {
    /// Adds `rows` to the usage table in one transaction (rows naming the same environment, flag,
    /// variant and hour are added together first); returns how many rows were written: rows of
    /// an unknown environment or flag are left out.
    pub async fn record_usage(&self, rows: &[UsageRow]) -> StoreResult<u64> {
        let mut merged: BTreeMap<(&str, &str, String, Millis), i64> = BTreeMap::new();
        for r in rows {
            let n = merged
                .entry((
                    &r.environment,
                    &r.flag,
                    variant_column(r.variant.as_deref()),
                    r.hour,
                ))
                .or_default();
            *n = n.saturating_add(r.evaluations);
        }
        if merged.is_empty() {
            return Ok(0);
        }
        let merged: Vec<_> = merged.into_iter().collect();
        let mut written = 0;
        let mut tx = self.begin_write().await?;
        for chunk in merged.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| {
                    let b = i * 5;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            // The VALUES columns are column1..column5 on both databases; the joins leave out
            // rows of an unknown environment or flag.
            let sql = format!(
                "INSERT INTO flag_usage (environment_id, flag, variant, hour, evaluations) \
                 SELECT f.environment_id, v.column2, v.column3, v.column4, v.column5 \
                 FROM (VALUES {values}) AS v \
                 JOIN environments e ON e.key = v.column1 \
                 JOIN flags f ON f.environment_id = e.id AND f.key = v.column2 \
                 WHERE true \
                 ON CONFLICT (environment_id, flag, variant, hour) \
                 DO UPDATE SET evaluations = flag_usage.evaluations + excluded.evaluations"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((env, flag, variant, hour), n) in chunk {
                query = query
                    .bind(env.to_string())
                    .bind(flag.to_string())
                    .bind(variant.clone())
                    .bind(*hour)
                    .bind(*n);
            }
            written += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// The evaluations of `environment` since `since` (an hour, inclusive) by flag and variant,
    /// sorted by flag and variant.
    pub async fn usage(&self, environment: &str, since: Millis) -> StoreResult<Vec<FlagUsageRow>> {
        let env = super::environment_id(&mut *self.pool.acquire().await?, environment).await?;
        let rows = sqlx::query(
            "SELECT flag, variant, CAST(SUM(evaluations) AS BIGINT) AS n, MAX(hour) AS last \
             FROM flag_usage WHERE environment_id = $1 AND hour >= $2 \
             GROUP BY flag, variant ORDER BY flag, variant",
        )
        .bind(env)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FlagUsageRow {
                    flag: r.try_get("flag")?,
                    variant: variant_of(r.try_get("variant")?),
                    evaluations: r.try_get("n")?,
                    last_hour: r.try_get("last")?,
                })
            })
            .collect()
    }

    /// The latest hour each flag of `environment` was evaluated in, as far back as the table goes
    /// (its retention).
    pub async fn last_usage(&self, environment: &str) -> StoreResult<HashMap<String, Millis>> {
        let env = super::environment_id(&mut *self.pool.acquire().await?, environment).await?;
        let rows = sqlx::query(
            "SELECT flag, MAX(hour) AS last FROM flag_usage WHERE environment_id = $1 \
             GROUP BY flag",
        )
        .bind(env)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("flag")?, r.try_get("last")?)))
            .collect()
    }

    /// When each flag of `environment` was created, by key.
    pub async fn flag_creation_times(
        &self,
        environment: &str,
    ) -> StoreResult<HashMap<String, Millis>> {
        let rows = sqlx::query(
            "SELECT f.key, f.created_at FROM flags f JOIN environments e \
             ON e.id = f.environment_id WHERE e.key = $1",
        )
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            // No flags, or no environment: tell them apart.
            super::environment_id(&mut *self.pool.acquire().await?, environment).await?;
        }
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("created_at")?)))
            .collect()
    }

    /// Deletes the usage of hours before `before`, an hour per statement.
    pub async fn prune_usage(&self, before: Millis) -> StoreResult<u64> {
        self.prune_by_time("flag_usage", "hour", before).await
    }

    /// Deletes the rows of `table` whose time column `column` is before `before`, one value of
    /// the column per statement (short statements beside the writers of the same table).
    pub(super) async fn prune_by_time(
        &self,
        table: &'static str,
        column: &'static str,
        before: Millis,
    ) -> StoreResult<u64> {
        let lowest = format!("SELECT MIN({column}) AS lo FROM {table} WHERE {column} < $1");
        let delete = format!("DELETE FROM {table} WHERE {column} = $1");
        let mut deleted = 0;
        loop {
            let lo: Option<Millis> = sqlx::query(sqlx::AssertSqlSafe(lowest.clone()))
                .bind(before)
                .fetch_one(&self.pool)
                .await?
                .try_get("lo")?;
            let Some(lo) = lo else {
                return Ok(deleted);
            };
            deleted += sqlx::query(sqlx::AssertSqlSafe(delete.clone()))
                .bind(lo)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_start_on_the_hour() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(HOUR_MS - 1), 0);
        assert_eq!(hour_of(HOUR_MS * 5 + 17), HOUR_MS * 5);
        assert_eq!(hour_of(-1), -HOUR_MS);
    }
}
