//! API tokens: only the SHA-256 of a secret is ever stored.

use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Actor, Store, StoreError, StoreResult, audit, to_value};
use crate::model::{Millis, Role, TokenRecord, now_millis, rfc3339};

fn token_from_row(r: &AnyRow) -> StoreResult<TokenRecord> {
    let role: String = r.try_get("role")?;
    let envs: String = r.try_get("environments")?;
    Ok(TokenRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        hash: r.try_get("hash")?,
        role: Role::parse(&role).ok_or_else(|| super::corrupt("tokens.role"))?,
        environments: serde_json::from_str(&envs)
            .map_err(|_| super::corrupt("tokens.environments"))?,
        created_at: rfc3339(r.try_get("created_at")?),
        last_used_at: r.try_get::<Option<i64>, _>("last_used_at")?.map(rfc3339),
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(rfc3339),
    })
}

impl Store {
    /// Stores a new token by the hash of its secret. `actor` is `None` for the bootstrap token.
    pub async fn create_token(
        &self,
        actor: Option<&Actor>,
        name: &str,
        role: Role,
        environments: &[String],
        hash: &str,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO tokens (name, hash, role, environments, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, name, hash, role, environments, created_at, last_used_at, revoked_at",
        )
        .bind(name)
        .bind(hash)
        .bind(role.as_str())
        .bind(json!(environments).to_string())
        .bind(now_millis())
        .fetch_one(&mut *tx)
        .await?;
        let token = token_from_row(&row)?;
        let bootstrap = Actor {
            name: "bootstrap".into(),
            request_id: None,
        };
        audit(
            &mut tx,
            actor.unwrap_or(&bootstrap),
            "token.create",
            None,
            Some(name),
            serde_json::Value::Null,
            to_value(&token),
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Every token (never the secrets), newest first.
    pub async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let sql = "SELECT id, name, hash, role, environments, created_at, last_used_at, revoked_at \
                   FROM tokens ORDER BY id DESC";
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(token_from_row).collect()
    }

    /// How many tokens exist (revoked ones included).
    pub async fn count_tokens(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM tokens")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// The token whose secret hashes to `hash`.
    pub async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        sqlx::query(
            "SELECT id, name, hash, role, environments, created_at, last_used_at, revoked_at \
             FROM tokens WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }

    /// Records that each token `id` was used at `at` (a later use already recorded stays), in
    /// one transaction.
    pub async fn touch_tokens(&self, uses: &[(i64, Millis)]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for (id, at) in uses {
            sqlx::query(
                "UPDATE tokens SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(*id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Revokes token `id` (it stays listed, marked revoked).
    pub async fn revoke_token(&self, actor: &Actor, id: i64) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let before = sqlx::query(
            "SELECT id, name, hash, role, environments, created_at, last_used_at, revoked_at \
             FROM tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        let before = token_from_row(&before)?;
        if before.is_revoked() {
            return Err(StoreError::Conflict(format!(
                "token {id} is already revoked"
            )));
        }
        let row = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 \
             RETURNING id, name, hash, role, environments, created_at, last_used_at, revoked_at",
        )
        .bind(now_millis())
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let after = token_from_row(&row)?;
        audit(
            &mut tx,
            actor,
            "token.revoke",
            None,
            Some(&after.name),
            to_value(&before),
            to_value(&after),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }
}
