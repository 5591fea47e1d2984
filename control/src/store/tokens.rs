//! API tokens: only the SHA-256 of a secret is ever stored.

use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use std::collections::BTreeMap;

use super::{Actor, Store, StoreError, StoreResult, audit, find_environment, to_value};
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
        incarnations: serde_json::from_str(&r.try_get::<String, _>("incarnations")?)
            .map_err(|_| super::corrupt("tokens.incarnations"))?,
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
        let mut incarnations = BTreeMap::new();
        for env in environments {
            incarnations.insert(
                env.clone(),
                find_environment(&mut tx, env).await?.incarnation,
            );
        }
        let row = sqlx::query(
            "INSERT INTO tokens (name, hash, role, environments, incarnations, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             RETURNING id, name, hash, role, environments, incarnations, created_at, last_used_at, revoked_at",
        )
        .bind(name)
        .bind(hash)
        .bind(role.as_str())
        .bind(json!(environments).to_string())
        .bind(json!(incarnations).to_string())
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
        let sql = "SELECT id, name, hash, role, environments, incarnations, created_at, last_used_at, revoked_at \
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
            "SELECT id, name, hash, role, environments, incarnations, created_at, last_used_at, revoked_at \
             FROM tokens WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }

    /// Of the environments a token was limited to, those that still have the incarnation they had
    /// when it was created (a deleted one, or one created again under the same key, drops out).
    pub async fn live_environments(&self, token: &TokenRecord) -> StoreResult<Vec<String>> {
        let mut live = Vec::new();
        let mut conn = self.pool.acquire().await?;
        for env in &token.environments {
            let current = sqlx::query("SELECT incarnation FROM environments WHERE key = $1")
                .bind(env)
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| r.try_get::<String, _>("incarnation"))
                .transpose()?;
            if current.is_some() && current.as_ref() == token.incarnations.get(env) {
                live.push(env.clone());
            }
        }
        Ok(live)
    }

    /// Tokens limited to environments but created before incarnations existed (migration 2) are
    /// bound to the environments' incarnations of now, once, when the store opens.
    pub(super) async fn bind_token_incarnations(&self) -> StoreResult<()> {
        let rows = sqlx::query(
            "SELECT id, environments FROM tokens WHERE incarnations = '{}' AND environments <> '[]'",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let envs: Vec<String> =
                serde_json::from_str(&row.try_get::<String, _>("environments")?)
                    .map_err(|_| super::corrupt("tokens.environments"))?;
            let mut incarnations = BTreeMap::new();
            let mut conn = self.pool.acquire().await?;
            for env in envs {
                if let Ok(e) = find_environment(&mut conn, &env).await {
                    incarnations.insert(env, e.incarnation);
                }
            }
            sqlx::query(
                "UPDATE tokens SET incarnations = $1 WHERE id = $2 AND incarnations = '{}'",
            )
            .bind(json!(incarnations).to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
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

    /// Revokes token `id` (it stays listed, marked revoked). Of several revocations racing, one
    /// wins and the others find it revoked (`Conflict`): the update itself only matches a token
    /// not revoked yet, so a second transaction that read "not revoked" before the first committed
    /// (PostgreSQL, read committed) re-checks the row after waiting for its lock and changes
    /// nothing. One revocation, one audit row.
    pub async fn revoke_token(&self, actor: &Actor, id: i64) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             RETURNING id, name, hash, role, environments, incarnations, created_at, last_used_at, revoked_at",
        )
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let exists = sqlx::query("SELECT 1 FROM tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                Some(_) => StoreError::Conflict(format!("token {id} is already revoked")),
                None => StoreError::NotFound(format!("token {id}")),
            });
        };
        let after = token_from_row(&row)?;
        let before = TokenRecord {
            revoked_at: None,
            ..after.clone()
        };
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
