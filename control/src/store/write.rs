//! The one write path of an environment's flag set.
//!
//! Every change of an environment's flags, evaluators or whole flag set — a flag put, the kill
//! switch, a flag delete, an evaluator put or delete, an import, a promotion — is an [`EnvWrite`]
//! applied by [`Store::write`], and nothing else writes those rows. An operation only describes its
//! change: which item it is about (its [`Scope`]) and an edit of the environment's set that checks
//! the operation's own precondition. [`Store::write`] keeps the invariant, in this order, in one
//! transaction:
//!
//! 1. **Revision + 1 first.** `UPDATE environments SET revision = revision + 1 ... RETURNING` is the
//!    first statement: it takes the environment's row lock on PostgreSQL (the write lock on SQLite,
//!    see [`Store::begin_write`]) before anything is read, so concurrent writers of an environment
//!    queue up and each sees the previous one's result. An environment that does not exist is
//!    `404` here.
//! 2. **Read, then edit.** The environment's whole set is read inside the lock and handed to the
//!    edit, which checks its precondition (`If-Match` against the current version, the item
//!    existing) and changes the set in memory.
//! 3. **Validate the whole result.** The environment the write would leave is checked as a whole,
//!    with the engine's strict validation and against every limit ([`WriteLimits`]): every rule
//!    compiles and every `$ref` names an evaluator, every flag key is a header dictionary key, at
//!    most `max_flags` flags, at most `max_document_bytes` of JSON (crossing one of these two is
//!    [`StoreError::OverLimit`], `422`; a rule problem is `400`). A write is refused only for what
//!    it would add: a problem the stored set already has (a limit lowered after it was written) does
//!    not block a write that does not add to it, so the kill switch and deletes keep working in
//!    such an environment and can bring it back under its limits.
//! 4. **Write** the item's row (or the whole set's rows), the change-log row of the new revision
//!    (what sidecars follow) and the audit row (who, what, before, after, request id).
//! 5. **Commit**, then **announce** the revision: in-process to this replica's sync hub, which also
//!    publishes it to the other replicas through Redis.
//!
//! Any error before the commit drops the transaction, which rolls everything back: a refused write
//! leaves no revision, change-log row or audit row behind, and revisions have no gaps.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};
use sqlx::Row;
use tracing::Instrument as _;
use vexil_engine::{FlagSet, Limits, ValidationError, ValidationErrors, header_key_problem};

use super::{
    Actor, Store, StoreError, StoreResult, audit, corrupt, environment_id, find_environment,
    json_opt, not_found_env,
};
use crate::model::{ChangeKind, Environment, EvaluatorRecord, FlagRecord, now_millis};

/// A write transaction.
pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// What `If-Match` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match`.
    None,
    /// `If-Match: *`: any current version.
    Any,
    /// `If-Match: "<version>"`.
    Version(i64),
}

impl Precondition {
    /// Checks the precondition against the current version (`None` when the item does not exist).
    /// `required` names the item when replacing it needs `If-Match`.
    pub(crate) fn check(
        self,
        current: Option<i64>,
        required: Option<&'static str>,
    ) -> StoreResult<()> {
        match (self, current) {
            (Precondition::None, Some(_)) => match required {
                Some(what) => Err(StoreError::PreconditionRequired(what)),
                None => Ok(()),
            },
            (Precondition::None, None) => Ok(()),
            (Precondition::Any, Some(_)) => Ok(()),
            (Precondition::Version(v), Some(c)) if v == c => Ok(()),
            (Precondition::Version(_) | Precondition::Any, c) => {
                Err(StoreError::PreconditionFailed {
                    current: c.unwrap_or(0),
                })
            }
        }
    }
}

/// The limits every write is checked against, on the environment it would leave.
#[derive(Clone, Copy, Debug)]
pub struct WriteLimits {
    /// Rule depth and flag count (`[limits] max_rule_depth`, `[limits] max_flags`).
    pub engine: Limits,
    /// Largest flag set an environment may hold, as compact JSON (the export document,
    /// `[limits] max_environment_bytes`): it reaches every sidecar as one snapshot frame, so it
    /// must stay below the frame limit.
    pub max_document_bytes: usize,
}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits {
            engine: Limits::default(),
            max_document_bytes: 16 << 20,
        }
    }
}

/// An environment's flag set: flag and evaluator definitions by key, and the set's metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SetRows {
    /// Flag definitions by key.
    pub flags: Map<String, Value>,
    /// `$evaluators`: shared rules by name.
    pub evaluators: Map<String, Value>,
    /// The flag set's `metadata` (empty when there is none).
    pub metadata: Map<String, Value>,
}

impl SetRows {
    /// The set as one flagd document: `flags`, and `$evaluators` and `metadata` when not empty.
    pub(crate) fn into_document(self) -> Value {
        let mut doc = Map::new();
        doc.insert("flags".into(), Value::Object(self.flags));
        if !self.evaluators.is_empty() {
            doc.insert("$evaluators".into(), Value::Object(self.evaluators));
        }
        if !self.metadata.is_empty() {
            doc.insert("metadata".into(), Value::Object(self.metadata));
        }
        Value::Object(doc)
    }

    /// The set a flagd document describes (`$schema` is dropped), or the document back when it does
    /// not have a flag set's shape: not an object, an unknown member, a section that is not an
    /// object (validating it says where).
    pub(crate) fn from_document(doc: Value) -> Result<SetRows, Value> {
        let shaped = doc.as_object().is_some_and(|root| {
            root.iter().all(|(name, section)| match name.as_str() {
                "$schema" => true,
                "flags" | "$evaluators" | "metadata" => section.is_object(),
                _ => false,
            })
        });
        let Value::Object(root) = doc else {
            return Err(doc);
        };
        if !shaped {
            return Err(Value::Object(root));
        }
        let mut set = SetRows::default();
        for (name, section) in root {
            if let Value::Object(items) = section {
                match name.as_str() {
                    "flags" => set.flags = items,
                    "$evaluators" => set.evaluators = items,
                    "metadata" => set.metadata = items,
                    _ => {}
                }
            }
        }
        Ok(set)
    }
}

/// The stored version of every flag and evaluator of an environment.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    flags: HashMap<String, i64>,
    evaluators: HashMap<String, i64>,
}

impl Versions {
    /// Flag `key`'s version; `None` when there is no such flag.
    pub(crate) fn flag(&self, key: &str) -> Option<i64> {
        self.flags.get(key).copied()
    }

    /// Evaluator `key`'s version; `None` when there is no such evaluator.
    pub(crate) fn evaluator(&self, key: &str) -> Option<i64> {
        self.evaluators.get(key).copied()
    }
}

/// An environment's set as stored, with each row's version.
pub(crate) struct Stored {
    /// The definitions.
    pub rows: SetRows,
    /// The versions.
    pub versions: Versions,
}

/// Reads environment `environment_id`'s whole set on `conn` (a pool connection or a transaction).
pub(crate) async fn load(
    conn: &mut sqlx::AnyConnection,
    environment_id: i64,
) -> StoreResult<Stored> {
    let mut stored = Stored {
        rows: SetRows::default(),
        versions: Versions::default(),
    };
    for (sql, definitions, versions) in [
        (
            "SELECT key, definition, version FROM flags WHERE environment_id = $1",
            &mut stored.rows.flags,
            &mut stored.versions.flags,
        ),
        (
            "SELECT key, definition, version FROM evaluators WHERE environment_id = $1",
            &mut stored.rows.evaluators,
            &mut stored.versions.evaluators,
        ),
    ] {
        for r in sqlx::query(sql)
            .bind(environment_id)
            .fetch_all(&mut *conn)
            .await?
        {
            let key: String = r.try_get("key")?;
            versions.insert(key.clone(), r.try_get("version")?);
            definitions.insert(
                key,
                json_opt(Some(r.try_get("definition")?))?.unwrap_or(Value::Null),
            );
        }
    }
    let meta: String = sqlx::query("SELECT metadata FROM environments WHERE id = $1")
        .bind(environment_id)
        .fetch_one(&mut *conn)
        .await?
        .try_get("metadata")?;
    if let Some(Value::Object(m)) = json_opt(Some(meta))? {
        stored.rows.metadata = m;
    }
    Ok(stored)
}

/// What a write is about: one flag, one evaluator, or the whole set. It decides the change-log
/// entry (kind, key, definition), the audit entry's target and states, and which rows are written.
#[derive(Clone, Debug)]
pub(crate) enum Scope {
    /// Flag `key`.
    Flag(String),
    /// Evaluator `key`.
    Evaluator(String),
    /// Everything: flags, evaluators, metadata.
    FlagSet,
}

/// What an edit works on.
pub(crate) struct Draft {
    /// The set the write will leave. A one-item write starts from the stored set and changes its
    /// item; a whole-set write starts from an empty set and fills it.
    pub set: SetRows,
    versions: Versions,
    source: Option<SetRows>,
    previous_revision: i64,
    proposal: Option<super::proposals::Pending>,
}

impl Draft {
    /// The stored versions, for preconditions.
    pub(crate) fn versions(&self) -> &Versions {
        &self.versions
    }

    /// The environment's revision before this write: the version (ETag) of its whole flag set,
    /// for the preconditions of whole-set writes.
    pub(crate) fn previous_revision(&self) -> i64 {
        self.previous_revision
    }

    /// The set of the environment named by [`EnvWrite::copying`] (read in the same transaction).
    pub(crate) fn take_source(&mut self) -> SetRows {
        self.source.take().unwrap_or_default()
    }

    /// The flag's proposal, read in the same transaction, of a write made
    /// [`publishing`](EnvWrite::publishing) it (`None` otherwise).
    pub(crate) fn proposal(&self) -> Option<&super::proposals::Pending> {
        self.proposal.as_ref()
    }
}

/// An operation's edit: checks its precondition against the draft, changes `draft.set`, and names
/// the audit action. It may run more than once: a write the database refuses for a serialization
/// failure or a deadlock is tried again from the start, with a fresh draft.
type Edit<'a> = Box<dyn FnMut(&mut Draft) -> StoreResult<&'static str> + Send + 'a>;

/// How an operation explains a refusal by validation, given the set the write would have left
/// (by default: `400` with the problems).
type Explain<'a> = Box<dyn FnOnce(&SetRows, ValidationErrors) -> StoreError + Send + 'a>;

/// One write of an environment's flag set, as an operation describes it; [`Store::write`] applies it.
pub(crate) struct EnvWrite<'a> {
    environment: &'a str,
    scope: Scope,
    source: Option<&'a str>,
    publishing: bool,
    edit: Edit<'a>,
    explain: Option<Explain<'a>>,
    claim: Option<Claim>,
}

/// A guard's trip claimed by the write that carries out its action (ADR 0035): in the write's
/// transaction the guard goes from `armed` to `tripped`, or the write is refused (another replica
/// tripped it first), and the audit entry gets the figures as its note.
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    /// The guard's row id.
    pub guard: i64,
    /// The figures that tripped it (the guard's `trip` and the audit entry's note).
    pub figures: Value,
}

impl<'a> EnvWrite<'a> {
    /// A write of `environment` about `scope`, made by `edit`.
    pub(crate) fn new(
        environment: &'a str,
        scope: Scope,
        edit: impl FnMut(&mut Draft) -> StoreResult<&'static str> + Send + 'a,
    ) -> Self {
        EnvWrite {
            environment,
            scope,
            source: None,
            publishing: false,
            edit: Box::new(edit),
            explain: None,
            claim: None,
        }
    }

    /// Makes the write the action of a guard's trip ([`Claim`]).
    pub(crate) fn claiming(mut self, claim: Claim) -> Self {
        self.claim = Some(claim);
        self
    }

    /// Hands the edit environment `source`'s set ([`Draft::take_source`]), read inside the
    /// transaction; the audit entry names `source` as its target.
    pub(crate) fn copying(mut self, source: &'a str) -> Self {
        self.source = Some(source);
        self
    }

    /// Publishes the proposal of the write's flag ([`Scope::Flag`]): the edit finds it in
    /// [`Draft::proposal`] (read inside the transaction; no proposal is `404`), and the write
    /// deletes it with its shadow counts and logs a change of kind `proposals`, which sidecars
    /// take as a `Full` (it carries the proposals left).
    pub(crate) fn publishing(mut self) -> Self {
        self.publishing = true;
        self
    }

    /// Explains a refusal by validation with `explain` instead of listing the problems as a `400`.
    pub(crate) fn explain_refusal(
        mut self,
        explain: impl FnOnce(&SetRows, ValidationErrors) -> StoreError + Send + 'a,
    ) -> Self {
        self.explain = Some(Box::new(explain));
        self
    }
}

/// What a write stored.
pub(crate) struct Written {
    /// The item did not exist before (a creation).
    pub created: bool,
    /// The flag row written (scope [`Scope::Flag`], unless deleted).
    pub flag: Option<FlagRecord>,
    /// The evaluator row written (scope [`Scope::Evaluator`], unless deleted).
    pub evaluator: Option<EvaluatorRecord>,
    /// The environment at its new revision.
    pub environment: Environment,
}

impl Store {
    /// Applies `write` with the invariant described in this module: revision + 1, read and edit,
    /// validate the whole result against `limits`, write the rows, the change-log row and the audit
    /// row, commit, announce.
    ///
    /// On PostgreSQL the whole transaction has a deadline (`statement_timeout`): a database that
    /// stops answering mid-transaction (a silent partition) ends the write with
    /// [`StoreError::Unavailable`] instead of holding the request for ever; the server rolls the
    /// transaction back (`idle_in_transaction_session_timeout`). A serialization failure (`40001`)
    /// or a deadlock (`40P01`) is retried, from the start, up to `write_retries` times.
    pub(crate) async fn write(
        &self,
        actor: &Actor,
        limits: WriteLimits,
        write: EnvWrite<'_>,
    ) -> StoreResult<Written> {
        let EnvWrite {
            environment: env,
            scope,
            source,
            publishing,
            mut edit,
            mut explain,
            claim,
        } = write;
        // The write's span (a trace of the request that made it, when traces are on).
        let span = tracing::info_span!(
            "store.write",
            environment = env,
            revision = tracing::field::Empty,
            attempts = tracing::field::Empty
        );
        let result = async {
            let mut attempt = 0;
            loop {
                let once = self.write_once(
                    actor,
                    limits,
                    env,
                    scope.clone(),
                    source,
                    publishing,
                    &mut edit,
                    &mut explain,
                    claim.as_ref(),
                );
                let result = match self.options.write_deadline(self.backend) {
                    Some(deadline) => super::within(deadline, once).await,
                    None => once.await,
                };
                match result {
                    Err(e) if attempt < self.options.write_retries && super::is_retryable(&e) => {
                        attempt += 1;
                        tracing::info!(environment = env, attempt, error = %e,
                            "write refused by the database for a conflict; trying again");
                        // A short, growing, jittered pause, so the writers in conflict do not meet
                        // again at once.
                        let pause = 5 * u64::from(attempt) + rand::random::<u64>() % 10;
                        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                    }
                    result => {
                        tracing::Span::current().record("attempts", attempt + 1);
                        return result;
                    }
                }
            }
        }
        .instrument(span.clone())
        .await;
        if let Ok(w) = &result {
            span.record("revision", w.environment.revision);
        }
        result
    }

    /// One attempt of [`Store::write`].
    #[allow(clippy::too_many_arguments)]
    async fn write_once(
        &self,
        actor: &Actor,
        limits: WriteLimits,
        env: &str,
        scope: Scope,
        source: Option<&str>,
        publishing: bool,
        edit: &mut Edit<'_>,
        explain: &mut Option<Explain<'_>>,
        claim: Option<&Claim>,
    ) -> StoreResult<Written> {
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        if let Some(claim) = claim {
            super::guards::claim(&mut tx, claim).await?;
        }

        let Stored { rows, versions } = load(&mut tx, env_id).await?;
        let source_rows = match source {
            Some(from) => {
                let from_id = environment_id(&mut tx, from).await?;
                Some(load(&mut tx, from_id).await?.rows)
            }
            None => None,
        };
        // What the scope covers as stored: for the audit entry, and to rebuild the stored set
        // should validation need it (the set itself is handed to the edit, not copied).
        let (set, covered) = match scope {
            Scope::Flag(key) => {
                let old = rows.flags.get(&key).cloned();
                (rows, Covered::Flag(key, old))
            }
            Scope::Evaluator(key) => {
                let old = rows.evaluators.get(&key).cloned();
                (rows, Covered::Evaluator(key, old))
            }
            Scope::FlagSet => (SetRows::default(), Covered::FlagSet(rows.into_document())),
        };
        let proposal = match (&covered, publishing) {
            (Covered::Flag(key, _), true) => {
                Some(super::proposals::pending(&mut tx, env, env_id, key).await?)
            }
            _ => None,
        };
        let mut draft = Draft {
            set,
            versions,
            source: source_rows,
            previous_revision: revision - 1,
            proposal,
        };
        let action = edit(&mut draft)?;
        let Draft {
            set,
            versions,
            proposal,
            ..
        } = draft;

        let doc = set.into_document();
        let stored_doc = || match &covered {
            Covered::Flag(key, old) => with_item(&doc, |s| &mut s.flags, key, old),
            Covered::Evaluator(key, old) => with_item(&doc, |s| &mut s.evaluators, key, old),
            Covered::FlagSet(stored) => stored.clone(),
        };
        if let Err(problems) = check(&doc, &stored_doc, limits) {
            return Err(match explain.take() {
                Some(explain) if problems.over_limit.is_empty() => explain(
                    &SetRows::from_document(doc).unwrap_or_default(),
                    ValidationErrors(problems.rules),
                ),
                _ => problems.into_error(),
            });
        }
        let after = SetRows::from_document(doc).map_err(|_| corrupt("the flag set written"))?;
        // The variants against their flags' JSON Schemas (an evaluator write changes none).
        let schemas = match &covered {
            Covered::Flag(key, _) => {
                super::schemas::check_variants(&mut tx, env_id, Some(key), &after).await?
            }
            Covered::FlagSet(_) => {
                super::schemas::check_variants(&mut tx, env_id, None, &after).await?
            }
            Covered::Evaluator(..) => Default::default(),
        };

        // Proposals the result no longer fits (flag gone, other variants) go with this write; the
        // published one goes below.
        let unfit = match &covered {
            Covered::Evaluator(..) => 0,
            Covered::Flag(key, _) if proposal.is_some() => {
                super::proposals::drop_unfit(&mut tx, actor, env, env_id, &after, Some(key)).await?
            }
            _ => super::proposals::drop_unfit(&mut tx, actor, env, env_id, &after, None).await?,
        };
        let created = matches!(
            covered,
            Covered::Flag(_, None) | Covered::Evaluator(_, None)
        );
        let (mut flag, mut evaluator) = (None, None);
        let (kind, key, old, new) = match covered {
            Covered::Flag(key, old) => {
                let new = after.flags.get(&key).cloned();
                flag = match &new {
                    Some(definition) => {
                        let mut record = super::flags::upsert_row(
                            &mut tx,
                            env_id,
                            &key,
                            definition,
                            versions.flag(&key),
                        )
                        .await?;
                        record.schema = schemas.get(&key).cloned();
                        Some(record)
                    }
                    None => {
                        super::flags::delete_row(&mut tx, env_id, &key).await?;
                        None
                    }
                };
                (ChangeKind::Flag, Some(key), old, new)
            }
            Covered::Evaluator(key, old) => {
                let new = after.evaluators.get(&key).cloned();
                evaluator = match &new {
                    Some(definition) => Some(
                        super::evaluators::upsert_row(
                            &mut tx,
                            env_id,
                            &key,
                            definition,
                            versions.evaluator(&key),
                        )
                        .await?,
                    ),
                    None => {
                        super::evaluators::delete_row(&mut tx, env_id, &key).await?;
                        None
                    }
                };
                (ChangeKind::Evaluator, Some(key), old, new)
            }
            Covered::FlagSet(old) => {
                super::flagsets::replace_rows(&mut tx, env_id, &after, &versions).await?;
                (
                    ChangeKind::FlagSet,
                    None,
                    Some(old),
                    Some(after.into_document()),
                )
            }
        };
        let key = key.as_deref();
        let (kind, definition) = match (&proposal, key) {
            // Published: the proposal goes too, and sidecars need the store's Full (the flag and
            // the proposals left).
            (Some(published), Some(key)) => {
                super::proposals::delete_row(&mut tx, env_id, key, &published.id).await?;
                (ChangeKind::Proposals, None)
            }
            // Proposals dropped: likewise.
            _ if unfit > 0 => (ChangeKind::Proposals, None),
            _ => (kind, new.as_ref().map(Value::to_string)),
        };
        let audit_id = audit(
            &mut tx,
            actor,
            action,
            Some(env),
            source.or(key),
            old.unwrap_or(Value::Null),
            new.unwrap_or(Value::Null),
        )
        .await?;
        if let Some(claim) = claim {
            sqlx::query("UPDATE audit SET note = $1 WHERE id = $2")
                .bind(claim.figures.to_string())
                .bind(audit_id)
                .execute(&mut *tx)
                .await?;
        }
        let change = NewChange {
            revision,
            kind,
            key,
            definition,
            audit_id: Some(audit_id),
        };
        record_change_audited(&mut tx, env_id, &change).await?;
        let environment = find_environment(&mut tx, env).await?;
        tx.commit().await?;
        self.announce(env, revision);
        Ok(Written {
            created,
            flag,
            evaluator,
            environment,
        })
    }
}

/// Bumps `environment`'s revision inside `tx`: the first statement of every write, so the write
/// lock is taken before anything is read. Returns the environment's id and its new revision.
pub(super) async fn bump_revision(tx: &mut Tx, environment: &str) -> StoreResult<(i64, i64)> {
    let row = sqlx::query(
        "UPDATE environments SET revision = revision + 1, updated_at = $1 WHERE key = $2 \
         RETURNING id, revision",
    )
    .bind(now_millis())
    .bind(environment)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| not_found_env(environment))?;
    Ok((row.try_get("id")?, row.try_get("revision")?))
}

/// A change-log entry to append.
struct NewChange<'a> {
    revision: i64,
    kind: ChangeKind,
    key: Option<&'a str>,
    /// The new definition as JSON text (`None`: deleted).
    definition: Option<String>,
    /// The write's audit entry (who, when, before and after; the change stream reads it).
    audit_id: Option<i64>,
}

/// A revision made outside [`Store::write`], of something beside the flags (a guard, a proposal,
/// the signing keys): what the audit log and the change log keep of it.
pub(super) struct SideChange<'a> {
    /// The change log's kind (what sidecars are sent for it).
    pub kind: ChangeKind,
    /// The audit action (`flag.guard.put`, ...).
    pub action: &'static str,
    /// The flag it is about, when it is about one.
    pub key: Option<&'a str>,
    /// What the audit entry keeps from before and after.
    pub before: Value,
    pub after: Value,
}

impl Store {
    /// Ends the write `tx` that made `revision` of `env` (id `env_id`) by `change`: audited,
    /// appended to the change log (what sidecars follow) linked to its audit entry (the change
    /// stream names its actor), committed, and announced to the replica's subscribers.
    pub(super) async fn commit_side_change(
        &self,
        mut tx: Tx,
        actor: &Actor,
        (env, env_id, revision): (&str, i64, i64),
        change: SideChange<'_>,
    ) -> StoreResult<()> {
        let audit_id = audit(
            &mut tx,
            actor,
            change.action,
            Some(env),
            change.key,
            change.before,
            change.after,
        )
        .await?;
        let entry = NewChange {
            revision,
            kind: change.kind,
            key: change.key,
            definition: None,
            audit_id: Some(audit_id),
        };
        record_change_audited(&mut tx, env_id, &entry).await?;
        tx.commit().await?;
        self.announce(env, revision);
        Ok(())
    }
}

/// Appends the change-log entry of a revision, linked to the write's audit entry.
async fn record_change_audited(
    tx: &mut Tx,
    environment_id: i64,
    change: &NewChange<'_>,
) -> StoreResult<()> {
    let op = if change.definition.is_some() {
        "upsert"
    } else {
        "delete"
    };
    sqlx::query(
        "INSERT INTO changes (environment_id, revision, kind, key, op, definition, created_at, \
         audit_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(environment_id)
    .bind(change.revision)
    .bind(change.kind.as_str())
    .bind(change.key.map(str::to_string))
    .bind(op)
    .bind(change.definition.clone())
    .bind(now_millis())
    .bind(change.audit_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A write's scope with what it covers as stored: the item's definition (`None`: it did not exist),
/// or the whole document.
enum Covered {
    Flag(String, Option<Value>),
    Evaluator(String, Option<Value>),
    FlagSet(Value),
}

/// `doc` with item `key` of one section (chosen by `section`) back to `old` (absent when `None`).
fn with_item(
    doc: &Value,
    section: impl Fn(&mut SetRows) -> &mut Map<String, Value>,
    key: &str,
    old: &Option<Value>,
) -> Value {
    let mut set = SetRows::from_document(doc.clone()).unwrap_or_default();
    let items = section(&mut set);
    match old {
        Some(definition) => items.insert(key.to_string(), definition.clone()),
        None => items.remove(key),
    };
    set.into_document()
}

/// What [`check`] found: the whole-environment limits crossed (flag count, document size) and the
/// rule and key problems.
#[derive(Debug, Default)]
struct Problems {
    over_limit: Vec<ValidationError>,
    rules: Vec<ValidationError>,
}

impl Problems {
    /// The refusal: `400` with the rule problems, or `422` when a limit is crossed.
    fn into_error(self) -> StoreError {
        if self.over_limit.is_empty() {
            return StoreError::Invalid(ValidationErrors(self.rules));
        }
        StoreError::OverLimit {
            detail: format!(
                "the environment would be over its limits: {}",
                self.over_limit
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            errors: ValidationErrors(self.over_limit.into_iter().chain(self.rules).collect()),
        }
    }
}

/// What a write of `definition` as flag `key` into `stored` (an environment's document, as read)
/// would be refused for, checked as [`Store::write`] checks a flag write: the engine's strict
/// validation of the whole result and the environment's limits. For proposals, which are checked
/// as the flag write publishing them would be.
pub(super) fn check_flag_in(
    stored: &Value,
    key: &str,
    definition: &Value,
    limits: WriteLimits,
) -> StoreResult<()> {
    let mut after = stored.clone();
    match after.get_mut("flags").and_then(Value::as_object_mut) {
        Some(flags) => {
            flags.insert(key.to_string(), definition.clone());
        }
        None => return Err(corrupt("the flag set read")),
    }
    check(&after, &|| stored.clone(), limits).map_err(Problems::into_error)
}

impl Store {
    /// What a write of `definition` as flag `key` of `env` would be refused for, without writing
    /// (and without a write transaction: it reads the current flag set and the flag's JSON Schema
    /// and checks the result as [`Store::write`] does). Preconditions aside, `Ok` means the write
    /// would be accepted now.
    pub async fn check_flag(
        &self,
        env: &str,
        key: &str,
        definition: Value,
        limits: WriteLimits,
    ) -> StoreResult<()> {
        let (_, stored) = self.export(env).await?;
        check_flag_in(&stored, key, &definition, limits)?;
        match self.flag_schema(env, key).await? {
            Some(schema) => super::schemas::check_definition(key, &definition, &schema),
            None => Ok(()),
        }
    }
}

/// Checks the document a write would leave (`after`) against `limits`: every problem it has that
/// the stored document (built by `stored` only when needed) did not, or `Ok`.
///
/// The flag count and the document size are problems when over their limit and larger than as
/// stored; a rule or key problem when the stored document did not have it at the same path.
fn check(after: &Value, stored: &dyn Fn() -> Value, limits: WriteLimits) -> Result<(), Problems> {
    let stored_doc = OnceCell::new();
    let stored = || stored_doc.get_or_init(stored);
    let count = |doc: &Value| doc["flags"].as_object().map_or(0, Map::len);
    let mut over_limit = Vec::new();
    let (flags, max_flags) = (count(after), limits.engine.max_flags);
    let held = || count(stored());
    if flags > max_flags && flags > held() {
        over_limit.push(ValidationError {
            path: "flags".into(),
            message: format!(
                "{flags} flags, more than the limit of {max_flags} ([limits] max_flags; it has {} now)",
                held()
            ),
        });
    }
    let (size, max_size) = (json_len(after), limits.max_document_bytes);
    if size > max_size {
        let held = json_len(stored());
        if size > held {
            over_limit.push(ValidationError {
                path: String::new(),
                message: format!(
                    "the flag set would be {size} bytes of JSON, more than the limit of {max_size} \
                     ([limits] max_environment_bytes; it is {held} bytes now)"
                ),
            });
        }
    }
    let mut problems = Vec::new();
    let found = rule_problems(after, limits.engine.max_depth);
    if !found.is_empty() {
        let known = rule_problems(stored(), limits.engine.max_depth);
        let known: BTreeSet<(&str, &str)> = known
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        problems.extend(
            found
                .into_iter()
                .filter(|p| !known.contains(&(p.path.as_str(), p.message.as_str()))),
        );
    }
    if problems.is_empty() && over_limit.is_empty() {
        Ok(())
    } else {
        Err(Problems {
            over_limit,
            rules: problems,
        })
    }
}

/// The engine's strict validation of `doc` without its flag count, plus the header-key rule for
/// every flag key.
fn rule_problems(doc: &Value, max_depth: usize) -> Vec<ValidationError> {
    let limits = Limits {
        max_depth,
        max_flags: usize::MAX,
    };
    let mut problems = FlagSet::validate(doc, limits).0;
    problems.extend(key_problems(doc));
    problems
}

/// A flag key must be usable as a key of the `vexil-flags` header's structured-field dictionary:
/// a problem at `flags["<key>"]` for each one that is not.
fn key_problems(doc: &Value) -> Vec<ValidationError> {
    let Some(flags) = doc.get("flags").and_then(Value::as_object) else {
        return Vec::new();
    };
    flags
        .keys()
        .filter_map(|key| {
            header_key_problem(key).map(|problem| ValidationError {
                path: format!("flags[{}]", Value::from(key.as_str())),
                message: problem,
            })
        })
        .collect()
}

/// Validates a whole document on its own, strictly, plus the header-key rule for every flag key:
/// what a write of exactly this document into an empty environment would be refused for, the
/// document size aside.
pub(crate) fn validate_document(doc: &Value, limits: Limits) -> StoreResult<()> {
    let mut errors = FlagSet::validate(doc, limits).0;
    errors.extend(key_problems(doc));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(ValidationErrors(errors)))
    }
}

/// The length of `v` as compact JSON, without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flag() -> Value {
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"})
    }

    /// A document with flags `keys` (each `flag()`).
    fn doc(keys: &[&str]) -> Value {
        let flags: Map<String, Value> = keys.iter().map(|k| (k.to_string(), flag())).collect();
        json!({ "flags": flags })
    }

    fn limits(max_flags: usize, max_document_bytes: usize) -> WriteLimits {
        WriteLimits {
            engine: Limits {
                max_flags,
                ..Limits::default()
            },
            max_document_bytes,
        }
    }

    fn problems(after: &Value, stored: &Value, limits: WriteLimits) -> Vec<(String, String)> {
        match check(after, &|| stored.clone(), limits) {
            Ok(()) => Vec::new(),
            Err(e) => e
                .over_limit
                .into_iter()
                .chain(e.rules)
                .map(|p| (p.path, p.message))
                .collect(),
        }
    }

    #[test]
    fn the_flag_count_counts_when_over_the_limit_and_growing() {
        let roomy = limits(2, usize::MAX);
        assert!(problems(&doc(&["a", "b"]), &doc(&["a"]), roomy).is_empty());
        assert_eq!(
            problems(&doc(&["a", "b", "c"]), &doc(&["a", "b"]), roomy),
            [(
                "flags".to_string(),
                "3 flags, more than the limit of 2 ([limits] max_flags; it has 2 now)".to_string()
            )]
        );
        // Already over (the limit was lowered): the same count or fewer is no new problem.
        assert!(problems(&doc(&["a", "b", "x"]), &doc(&["a", "b", "c"]), roomy).is_empty());
        assert!(problems(&doc(&["a", "b", "c"]), &doc(&["a", "b", "c", "d"]), roomy).is_empty());
        assert_eq!(
            problems(&doc(&["a", "b", "c", "d"]), &doc(&["a", "b", "c"]), roomy).len(),
            1
        );
    }

    #[test]
    fn the_document_size_counts_when_over_the_limit_and_growing() {
        let two = doc(&["a", "b"]);
        let size = json_len(&two);
        assert_eq!(size, two.to_string().len());
        assert!(problems(&two, &doc(&["a"]), limits(100, size)).is_empty());
        let p = problems(&two, &doc(&["a"]), limits(100, size - 1));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "", "the whole document");
        assert!(
            p[0].1.contains(&format!("{size} bytes"))
                && p[0].1.contains("max_environment_bytes")
                && p[0]
                    .1
                    .contains(&format!("it is {} bytes now", json_len(&doc(&["a"])))),
            "{p:?}"
        );
        // Smaller than stored, though still over: no new problem.
        assert!(problems(&doc(&["a"]), &two, limits(100, 10)).is_empty());
    }

    #[test]
    fn only_the_rule_problems_a_write_adds_are_reported() {
        let mut broken = doc(&["a"]);
        broken["flags"]["a"]["targeting"] = json!({"if": [{"$ref": "gone"}, "on", "off"]});
        let mut after = broken.clone();
        after["flags"]["b"] = flag();
        // Flag "a" was broken before this write: writing "b" is not refused for it.
        assert!(problems(&after, &broken, WriteLimits::default()).is_empty());
        // A broken "b" is.
        after["flags"]["b"]["defaultVariant"] = json!("nope");
        let p = problems(&after, &broken, WriteLimits::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "flags.b.defaultVariant");
        // Into an empty environment, every problem counts, header keys included.
        let p = problems(&doc(&["Bad"]), &doc(&[]), WriteLimits::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "flags[\"Bad\"]");
    }

    #[test]
    fn documents_convert_to_rows_and_back() {
        let input = json!({
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": {"a": flag()},
            "$evaluators": {},
            "metadata": {"owner": "web"}
        });
        let rows = SetRows::from_document(input).expect("a flag set");
        assert_eq!(rows.flags.len(), 1);
        assert_eq!(
            rows.into_document(),
            json!({"flags": {"a": flag()}, "metadata": {"owner": "web"}}),
            "no $schema, no empty section"
        );
        assert_eq!(SetRows::default().into_document(), json!({"flags": {}}));
        for odd in [
            json!([]),
            json!({"flags": 3}),
            json!({"nope": {}}),
            json!({"metadata": []}),
        ] {
            assert_eq!(SetRows::from_document(odd.clone()), Err(odd));
        }
    }
}
