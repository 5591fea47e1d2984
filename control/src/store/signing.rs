//! Each environment's keys for signing decisions (docs/headers.md, "Signed decisions").
//!
//! Sidecars of an environment sign the `vexil-flags` they write with an HMAC-SHA256 key control
//! generates, and a sidecar in inbound mode keeps the decisions of any peer whose signature
//! verifies. The keys live in `environments.signing_keys` (JSON, newest first, at most
//! [`KEPT`]): the current key signs, the one before it is still accepted, so a rotation never
//! refuses a signature made a moment before. A rotation is a revision of the environment with a
//! change-log row of kind `signing_keys` (no secret in it): the sync feed answers it with a `Full`,
//! which carries the keys.

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use super::write::{SideChange, bump_revision};
use super::{Actor, Store, StoreResult, corrupt, environment_from_row, not_found_env};
use crate::model::{ChangeKind, Environment, now_millis};

/// Keys kept per environment: the current one and the one before it.
const KEPT: usize = 2;

/// When [`Store::rotate_signing_key`] rotates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotate {
    /// In any case (an operator asked).
    Always,
    /// Only when the environment has no key yet.
    IfNone,
    /// Only when the current key is still the one named (so replicas rotating an old key at the
    /// same moment rotate it once).
    IfCurrent(String),
}

/// One signing key as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// 8 hex digits, named in every signature made with it.
    pub id: String,
    /// The 32-byte secret, as 64 hex digits.
    pub secret: String,
    /// When it was created (Unix milliseconds).
    pub created_at: i64,
}

impl SigningKey {
    fn generate(now: i64) -> SigningKey {
        let rng = SystemRandom::new();
        let mut id = [0u8; 4];
        let mut secret = [0u8; 32];
        // The system's random source does not fail on the platforms control runs on.
        rng.fill(&mut id).expect("system random source");
        rng.fill(&mut secret).expect("system random source");
        SigningKey {
            id: hex::encode(id),
            secret: hex::encode(secret),
            created_at: now,
        }
    }

    /// The secret's bytes.
    pub fn secret_bytes(&self) -> Vec<u8> {
        hex::decode(&self.secret).unwrap_or_default()
    }
}

/// What the API shows of a key: never the secret.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SigningKeyInfo {
    /// The key's id, as signatures name it.
    pub id: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// True for the key sidecars sign with now; the other is still accepted.
    pub current: bool,
}

/// The keys of a new environment (JSON text for `environments.signing_keys`).
pub(super) fn first_keys(now: i64) -> String {
    json!([SigningKey::generate(now)]).to_string()
}

fn parse(text: &str) -> StoreResult<Vec<SigningKey>> {
    serde_json::from_str(text).map_err(|_| corrupt("environments.signing_keys"))
}

fn infos(keys: &[SigningKey]) -> Vec<SigningKeyInfo> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| SigningKeyInfo {
            id: k.id.clone(),
            created_at: crate::model::rfc3339(k.created_at),
            current: i == 0,
        })
        .collect()
}

impl Store {
    /// Environment `env`'s signing keys, newest first (secrets included: for the sync stream only).
    pub async fn signing_keys(&self, env: &str) -> StoreResult<Vec<SigningKey>> {
        let row = sqlx::query("SELECT signing_keys FROM environments WHERE key = $1")
            .bind(env)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found_env(env))?;
        parse(&row.try_get::<String, _>("signing_keys")?)
    }

    /// What the API shows of environment `env`'s signing keys.
    pub async fn signing_key_infos(&self, env: &str) -> StoreResult<Vec<SigningKeyInfo>> {
        Ok(infos(&self.signing_keys(env).await?))
    }

    /// Gives environment `env` a new signing key: the previous current key is kept (still
    /// accepted), older ones are dropped. One revision, a change-log row of kind `signing_keys`,
    /// an audit row naming the key ids (never the secrets). `Ok(None)` when `when` did not hold
    /// (nothing changed).
    pub async fn rotate_signing_key(
        &self,
        actor: &Actor,
        env: &str,
        when: Rotate,
    ) -> StoreResult<Option<(Environment, Vec<SigningKeyInfo>)>> {
        let mut tx = self.begin_write().await?;
        let (id, revision) = bump_revision(&mut tx, env).await?;
        let old: String = sqlx::query("SELECT signing_keys FROM environments WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("signing_keys")?;
        let old = parse(&old)?;
        let holds = match &when {
            Rotate::Always => true,
            Rotate::IfNone => old.is_empty(),
            Rotate::IfCurrent(id) => old.first().is_some_and(|k| &k.id == id),
        };
        if !holds {
            // Dropping the transaction rolls the revision back.
            return Ok(None);
        }
        let now = now_millis();
        let mut keys = vec![SigningKey::generate(now)];
        keys.extend(old.iter().take(KEPT - 1).cloned());
        let row = sqlx::query(
            "UPDATE environments SET signing_keys = $1, updated_at = $2 WHERE id = $3 \
             RETURNING key, name, revision, incarnation, metadata, created_at, updated_at",
        )
        .bind(json!(keys).to_string())
        .bind(now)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let environment = environment_from_row(&row)?;
        let (before, after) = (infos(&old), infos(&keys));
        let change = SideChange {
            kind: ChangeKind::SigningKeys,
            action: "environment.signing_key.rotate",
            key: None,
            before: json!({ "signing_keys": before }),
            after: json!({ "signing_keys": after }),
        };
        self.commit_side_change(tx, actor, (env, id, revision), change)
            .await?;
        Ok(Some((environment, after)))
    }

    /// Environments created before signing keys existed (migration 3) get their first key, once,
    /// when the store opens: a rotation, so their sidecars receive it.
    pub(super) async fn give_signing_keys(&self) -> StoreResult<()> {
        let rows = sqlx::query("SELECT key FROM environments WHERE signing_keys = '[]'")
            .fetch_all(&self.pool)
            .await?;
        let actor = Actor {
            name: "control".into(),
            request_id: None,
        };
        for row in rows {
            let env: String = row.try_get("key")?;
            self.rotate_signing_key(&actor, &env, Rotate::IfNone)
                .await?;
        }
        Ok(())
    }

    /// Rotates the signing key of every environment whose current key is older than `max_age`
    /// (milliseconds); returns how many were rotated.
    pub async fn rotate_old_signing_keys(&self, actor: &Actor, max_age: i64) -> StoreResult<usize> {
        let rows = sqlx::query("SELECT key, signing_keys FROM environments")
            .fetch_all(&self.pool)
            .await?;
        let now = now_millis();
        let mut rotated = 0;
        for row in rows {
            let env: String = row.try_get("key")?;
            let keys = parse(&row.try_get::<String, _>("signing_keys")?)?;
            if let Some(current) = keys.first().filter(|k| now - k.created_at >= max_age)
                && self
                    .rotate_signing_key(actor, &env, Rotate::IfCurrent(current.id.clone()))
                    .await?
                    .is_some()
            {
                rotated += 1;
            }
        }
        Ok(rotated)
    }

    /// Rotates the keys older than `max_age` (milliseconds) every `every` until `cancel`; a failed
    /// pass is logged and tried again at the next tick.
    pub async fn run_signing_key_rotation(
        self,
        max_age: i64,
        every: std::time::Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let actor = Actor {
            name: "control".into(),
            request_id: None,
        };
        super::every(every, &cancel, async || {
            match self.rotate_old_signing_keys(&actor, max_age).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(environments = n, "rotated signing keys"),
                Err(e) => {
                    tracing::warn!(error = %e, "rotating signing keys failed; trying again later");
                }
            }
        })
        .await;
    }
}
