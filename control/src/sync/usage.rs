//! Flag usage from the sidecars: each session hands the `UsageReport`s of its sidecar to this
//! replica's [`UsageAggregator`], which checks them, adds them up in memory by environment, flag,
//! variant and hour, and is written to the store every `flush_interval` in one transaction
//! ([`run_flusher`], `Store::record_usage`) — so 10,000 sidecars reporting every 10 s cost the
//! database one transaction every few seconds, not a thousand a second (ADR 0034, docs/usage.md).
//!
//! A report control cannot take whole is refused — counted in `vexil_control_usage_reports_total`
//! by reason and logged — and its counts are lost; the stream goes on. Reasons: more entries than
//! `Welcome.usage_max_entries`, an invalid flag key or variant name, a duplicate, a count of 0 or
//! above [`MAX_EVALUATIONS`], more entries in a minute than a session may send, or more entries
//! pending in memory than the replica keeps (the database is not keeping up).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vexil_proto::outcomes::{LATENCY_BUCKETS, NO_ANSWER, STATUS_CLASSES};
use vexil_proto::sync::v1::{Outcomes, UsageReport};

use crate::guards::{BUCKETS, Counts, Look};
use crate::metrics::Metrics;
use crate::model::Millis;
use crate::store::{OutcomeRow, Store, StoreError, UsageRow, WriteLimits, hour_of, within};

/// The largest count one entry of one report may carry: a sidecar deciding a million times a
/// second for twelve days between two reports. More is a broken or hostile sidecar.
pub const MAX_EVALUATIONS: u64 = 1_000_000_000_000;

/// The longest flag key or variant name a report may carry (bytes).
pub const MAX_NAME_BYTES: usize = 1024;

/// The longest one write of the flag usage may take before it counts as failed.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Settings of the usage intake.
#[derive(Clone, Debug)]
pub struct UsageSettings {
    /// Entries per report a sidecar may send (`Welcome.usage_max_entries`); 0: reports are not
    /// taken (sidecars send none).
    pub max_entries: u32,
    /// How often the sums are written to the store.
    pub flush_interval: Duration,
    /// Entries (environment, flag, variant, hour) kept in memory at most; a report that would add
    /// more is refused (`overloaded`).
    pub max_pending: usize,
    /// Entries one session may send per minute; more are refused (`rate_limited`).
    pub max_entries_per_minute: u64,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            max_entries: 5000,
            flush_interval: Duration::from_secs(5),
            max_pending: 1_000_000,
            max_entries_per_minute: 100_000,
        }
    }
}

/// Why a report was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageRefusal {
    /// More entries than `Welcome.usage_max_entries`.
    #[error("the report has {count} entries; at most {max} are taken")]
    TooManyEntries {
        /// Entries in the report.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A key, name or count that cannot be right.
    #[error("{0}")]
    Invalid(String),
    /// A count above [`MAX_EVALUATIONS`].
    #[error(
        "flags[{flag:?}].variants[{variant:?}]: {count} evaluations in one report is above {MAX_EVALUATIONS}"
    )]
    AbsurdCount {
        /// The flag.
        flag: String,
        /// The variant (`None`: no value).
        variant: Option<String>,
        /// The count.
        count: u64,
    },
    /// The session sent more entries in a minute than it may.
    #[error("more than {0} entries in a minute from this sidecar")]
    RateLimited(u64),
    /// The replica holds as many entries as it keeps: the store is not keeping up.
    #[error("{0} usage entries are waiting for the store already")]
    Overloaded(usize),
}

impl UsageRefusal {
    /// The `result` label of `vexil_control_usage_reports_total`.
    pub fn label(&self) -> &'static str {
        match self {
            UsageRefusal::TooManyEntries { .. } => "too_many_entries",
            UsageRefusal::Invalid(_) => "invalid",
            UsageRefusal::AbsurdCount { .. } => "absurd_count",
            UsageRefusal::RateLimited(_) => "rate_limited",
            UsageRefusal::Overloaded(_) => "overloaded",
        }
    }
}

/// A session's allowance of entries per minute.
#[derive(Debug)]
pub struct Budget {
    since: Instant,
    used: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            since: Instant::now(),
            used: 0,
        }
    }
}

/// One entry of a report after checking.
pub struct Entry<'r> {
    /// The flag key.
    pub flag: &'r str,
    /// The variant (`None`: no value).
    pub variant: Option<&'r str>,
    /// Evaluations (0 when the entry carries outcomes only).
    pub evaluations: u64,
    /// The outcomes of the requests that carried the decision (guarded flags).
    pub outcomes: Option<Counts>,
}

/// The entries of one report after checking.
type Entries<'r> = Vec<Entry<'r>>;

/// The outcomes of an entry as counts, checked: 6 status classes and 32 latency buckets, no count
/// above [`MAX_EVALUATIONS`], no more answers timed than answered.
fn outcome_counts(o: &Outcomes) -> Result<Counts, String> {
    if o.status_classes.len() != STATUS_CLASSES || o.latency.len() != LATENCY_BUCKETS {
        return Err(format!(
            "{STATUS_CLASSES} status classes and {LATENCY_BUCKETS} latency buckets, got {} and {}",
            o.status_classes.len(),
            o.latency.len()
        ));
    }
    let mut counts = [0u64; BUCKETS];
    for (slot, &n) in counts
        .iter_mut()
        .zip(o.status_classes.iter().chain(&o.latency))
    {
        if n > MAX_EVALUATIONS {
            return Err(format!("a count of {n} is above {MAX_EVALUATIONS}"));
        }
        *slot = n;
    }
    let answered: u64 = counts[..NO_ANSWER].iter().sum();
    let timed: u64 = counts[STATUS_CLASSES..].iter().sum();
    if timed > answered {
        return Err(format!("{timed} answers timed but {answered} answered"));
    }
    Ok(counts)
}

/// Checks a report against `max_entries`; returns its entries.
pub fn check(report: &UsageReport, max_entries: usize) -> Result<Entries<'_>, UsageRefusal> {
    let count: usize = report.flags.iter().map(|f| f.variants.len()).sum();
    if count > max_entries {
        return Err(UsageRefusal::TooManyEntries {
            count,
            max: max_entries,
        });
    }
    let mut flags = HashSet::with_capacity(report.flags.len());
    let mut entries = Vec::with_capacity(count);
    for (i, f) in report.flags.iter().enumerate() {
        let at = || format!("flags[{i}]");
        if f.flag.len() > MAX_NAME_BYTES {
            return Err(UsageRefusal::Invalid(format!(
                "{}.flag: {} bytes; at most {MAX_NAME_BYTES}",
                at(),
                f.flag.len()
            )));
        }
        if let Some(problem) = vexil_engine::header_key_problem(&f.flag) {
            return Err(UsageRefusal::Invalid(format!("{}.flag: {problem}", at())));
        }
        if !flags.insert(f.flag.as_str()) {
            return Err(UsageRefusal::Invalid(format!(
                "{}.flag: {:?} appears twice in the report",
                at(),
                f.flag
            )));
        }
        if f.variants.is_empty() {
            return Err(UsageRefusal::Invalid(format!("{}: no variants", at())));
        }
        let mut variants = HashSet::with_capacity(f.variants.len());
        for (j, v) in f.variants.iter().enumerate() {
            let at = || format!("flags[{i}] ({:?}).variants[{j}]", f.flag);
            let variant = v.variant.as_deref();
            if let Some(name) = variant
                && (name.is_empty() || name.len() > MAX_NAME_BYTES)
            {
                return Err(UsageRefusal::Invalid(format!(
                    "{}.variant: 1 to {MAX_NAME_BYTES} bytes (absent for no value), got {}",
                    at(),
                    name.len()
                )));
            }
            if !variants.insert(variant) {
                return Err(UsageRefusal::Invalid(format!(
                    "{}.variant: {variant:?} appears twice for the flag",
                    at()
                )));
            }
            let outcomes = v
                .outcomes
                .as_ref()
                .map(outcome_counts)
                .transpose()
                .map_err(|e| UsageRefusal::Invalid(format!("{}.outcomes: {e}", at())))?;
            if v.evaluations == 0 && outcomes.is_none() {
                return Err(UsageRefusal::Invalid(format!(
                    "{}.evaluations: must be above 0 (or the entry carry outcomes)",
                    at()
                )));
            }
            if v.evaluations > MAX_EVALUATIONS {
                return Err(UsageRefusal::AbsurdCount {
                    flag: f.flag.clone(),
                    variant: variant.map(str::to_string),
                    count: v.evaluations,
                });
            }
            entries.push(Entry {
                flag: f.flag.as_str(),
                variant,
                evaluations: v.evaluations,
                outcomes,
            });
        }
    }
    Ok(entries)
}

/// (environment, flag, variant, hour).
type Key = (Arc<str>, String, Option<String>, Millis);

/// (environment, flag, variant).
type OutcomeKey = (Arc<str>, String, Option<String>);

/// This replica's intake of usage reports.
pub struct UsageAggregator {
    settings: UsageSettings,
    pending: Mutex<HashMap<Key, u64>>,
    /// Outcomes of guarded flags' decisions, summed until the next write.
    outcomes: Mutex<HashMap<OutcomeKey, Counts>>,
    /// The reports' shadow-evaluation counts (docs/shadow.md).
    shadow: Mutex<super::shadow::ShadowSums>,
    metrics: Arc<Metrics>,
}

impl UsageAggregator {
    /// An empty intake.
    pub fn new(settings: UsageSettings, metrics: Arc<Metrics>) -> UsageAggregator {
        UsageAggregator {
            settings,
            pending: Mutex::new(HashMap::new()),
            outcomes: Mutex::new(HashMap::new()),
            shadow: Mutex::new(Default::default()),
            metrics,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &UsageSettings {
        &self.settings
    }

    /// Entries waiting for the store (usage and shadow counts).
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self.shadow.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes a report of a sidecar of `environment` received at `now`, within the session's
    /// `budget`; counted in the metrics either way. Returns the entries taken.
    pub fn accept(
        &self,
        environment: &Arc<str>,
        report: &UsageReport,
        budget: &mut Budget,
        now: Millis,
    ) -> Result<usize, UsageRefusal> {
        let result = self.take(environment, report, budget, now);
        match &result {
            Ok(n) => self.metrics.usage_report("accepted", *n as u64),
            Err(r) => self.metrics.usage_report(r.label(), 0),
        }
        result
    }

    fn take(
        &self,
        environment: &Arc<str>,
        report: &UsageReport,
        budget: &mut Budget,
        now: Millis,
    ) -> Result<usize, UsageRefusal> {
        if self.settings.max_entries == 0 {
            return Err(UsageRefusal::TooManyEntries {
                count: report.flags.iter().map(|f| f.variants.len()).sum::<usize>()
                    + report.shadow.len(),
                max: 0,
            });
        }
        // Shadow entries share the report's entry allowance.
        let max = self.settings.max_entries as usize;
        let count = report.flags.iter().map(|f| f.variants.len()).sum::<usize>();
        if count + report.shadow.len() > max {
            return Err(UsageRefusal::TooManyEntries {
                count: count + report.shadow.len(),
                max,
            });
        }
        let entries = check(report, max)?;
        let shadow = super::shadow::check(&report.shadow)?;
        if budget.since.elapsed() >= Duration::from_secs(60) {
            *budget = Budget::default();
        }
        let n = (entries.len() + shadow.len()) as u64;
        if budget.used + n > self.settings.max_entries_per_minute {
            return Err(UsageRefusal::RateLimited(
                self.settings.max_entries_per_minute,
            ));
        }
        budget.used += n;
        let hour = hour_of(now);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut shadow_sums = self.shadow.lock().unwrap_or_else(|e| e.into_inner());
        let held = pending.len() + shadow_sums.len();
        if held + entries.len() + shadow.len() > self.settings.max_pending {
            return Err(UsageRefusal::Overloaded(held));
        }
        self.metrics.shadow_entries("accepted", shadow.len() as u64);
        shadow_sums.add(environment, shadow, crate::store::minute_of(now));
        drop(shadow_sums);
        let mut outcomes = Vec::new();
        for e in entries {
            if let Some(counts) = e.outcomes {
                outcomes.push((e.flag, e.variant, counts));
            }
            if e.evaluations == 0 {
                continue;
            }
            let key = (
                environment.clone(),
                e.flag.to_string(),
                e.variant.map(str::to_string),
                hour,
            );
            let sum = pending.entry(key).or_default();
            *sum = sum.saturating_add(e.evaluations);
        }
        drop(pending);
        if !outcomes.is_empty() {
            let mut pending = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
            for (flag, variant, counts) in outcomes {
                let key = (
                    environment.clone(),
                    flag.to_string(),
                    variant.map(str::to_string),
                );
                let sum = pending.entry(key).or_insert([0; BUCKETS]);
                for (s, n) in sum.iter_mut().zip(counts) {
                    *s = s.saturating_add(n);
                }
            }
        }
        Ok(n as usize)
    }

    /// Writes the pending outcomes to the guards they are arms of, then makes the looks of the
    /// guards written to (a look that trips carries out the guard's action with `limits`); on a
    /// failure to write, the outcomes are kept for the next write. Returns the looks made.
    pub async fn flush_outcomes(
        &self,
        store: &Store,
        limits: WriteLimits,
    ) -> Result<Vec<Look>, StoreError> {
        let taken = std::mem::take(&mut *self.outcomes.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<OutcomeRow> = taken
            .iter()
            .map(|((env, flag, variant), counts)| OutcomeRow {
                environment: env.to_string(),
                flag: flag.clone(),
                variant: variant.clone(),
                counts: *counts,
            })
            .collect();
        let written = within(WRITE_DEADLINE, store.record_outcomes(&rows)).await;
        let guards = match written {
            Ok(guards) => guards,
            Err(e) => {
                let mut pending = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
                for (key, counts) in taken {
                    let sum = pending.entry(key).or_insert([0; BUCKETS]);
                    for (s, n) in sum.iter_mut().zip(counts) {
                        *s = s.saturating_add(n);
                    }
                }
                return Err(e);
            }
        };
        let mut looks = Vec::new();
        for id in guards {
            match store.look_at_guard(id, limits).await {
                Ok(Some(look)) => {
                    self.metrics.guard_look(look.trips);
                    looks.push(look);
                }
                Ok(None) => {}
                // The counts are written; the look comes with the next counts.
                Err(e) => tracing::warn!(guard = id, error = %e, "could not look at a guard"),
            }
        }
        Ok(looks)
    }

    /// Writes every pending entry to the store in one transaction; on failure they are kept for
    /// the next write. Returns the rows written.
    pub async fn flush(&self, store: &Store) -> Result<u64, StoreError> {
        self.flush_shadow(store).await?;
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(0);
        }
        let rows: Vec<UsageRow> = taken
            .iter()
            .map(|((env, flag, variant, hour), n)| UsageRow {
                environment: env.to_string(),
                flag: flag.clone(),
                variant: variant.clone(),
                hour: *hour,
                evaluations: i64::try_from(*n).unwrap_or(i64::MAX),
            })
            .collect();
        let started = Instant::now();
        let written = within(WRITE_DEADLINE, store.record_usage(&rows)).await;
        let seconds = started.elapsed().as_secs_f64();
        match written {
            Ok(n) => {
                self.metrics.usage_flushed(Some(n), seconds, self.pending());
                Ok(n)
            }
            Err(e) => {
                // Kept for the next write, added to what arrived meanwhile.
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for (key, n) in taken {
                    let sum = pending.entry(key).or_default();
                    *sum = sum.saturating_add(n);
                }
                let left = pending.len();
                drop(pending);
                self.metrics.usage_flushed(None, seconds, left);
                Err(e)
            }
        }
    }
}

impl UsageAggregator {
    /// Writes the pending shadow counts (in their own transaction, before the usage); on failure
    /// they are kept for the next write.
    async fn flush_shadow(&self, store: &Store) -> Result<(), StoreError> {
        let taken = std::mem::take(&mut *self.shadow.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(());
        }
        let rows = taken.rows();
        let written = within(WRITE_DEADLINE, store.record_shadow(&rows)).await;
        match written {
            Ok((written, unknown)) => {
                self.metrics.shadow_entries("written", written);
                self.metrics.shadow_entries("unknown_proposal", unknown);
                if unknown > 0 {
                    tracing::debug!(
                        rows = unknown,
                        "shadow counts of proposals that are not current were left out"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.shadow
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .restore(taken);
                self.metrics.usage_flushed(None, 0.0, self.pending());
                Err(e)
            }
        }
    }
}

/// Writes the aggregator's sums to the store every `flush_interval` until `cancel`, then once more;
/// guards are looked at after each write of their outcomes.
pub async fn run_flusher(
    store: Store,
    usage: Arc<UsageAggregator>,
    limits: WriteLimits,
    cancel: CancellationToken,
) {
    let every = usage.settings().flush_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Err(e) = usage.flush(&store).await {
            tracing::warn!(error = %e, pending = usage.pending(),
                "could not write the flag usage to the store; trying again");
        }
        if let Err(e) = usage.flush_outcomes(&store, limits).await {
            tracing::warn!(error = %e,
                "could not write the outcomes of guarded flags to the store; trying again");
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_proto::sync::v1::{FlagUsage, VariantUsage};

    fn report(entries: &[(&str, Option<&str>, u64)]) -> UsageReport {
        let mut r = UsageReport::default();
        for (flag, variant, n) in entries {
            let v = VariantUsage {
                variant: variant.map(str::to_string),
                evaluations: *n,
                outcomes: None,
            };
            match r.flags.last_mut() {
                Some(f) if f.flag == *flag => f.variants.push(v),
                _ => r.flags.push(FlagUsage {
                    flag: flag.to_string(),
                    variants: vec![v],
                }),
            }
        }
        r
    }

    fn aggregator(settings: UsageSettings) -> UsageAggregator {
        UsageAggregator::new(settings, Arc::new(Metrics::new()))
    }

    #[test]
    fn reports_add_up_per_environment_flag_variant_and_hour() {
        let usage = aggregator(UsageSettings::default());
        let (prod, dev): (Arc<str>, Arc<str>) = ("prod".into(), "dev".into());
        let mut budget = Budget::default();
        let r = report(&[("a", Some("on"), 3), ("a", None, 1), ("b", Some("x"), 2)]);
        assert_eq!(usage.accept(&prod, &r, &mut budget, 10), Ok(3));
        assert_eq!(usage.accept(&prod, &r, &mut budget, 20), Ok(3));
        assert_eq!(usage.accept(&dev, &r, &mut budget, 20), Ok(3));
        // Another hour: other entries.
        assert_eq!(usage.accept(&prod, &r, &mut budget, 3_600_000), Ok(3));
        let pending = usage.pending.lock().unwrap();
        assert_eq!(pending.len(), 9);
        assert_eq!(
            pending[&(prod.clone(), "a".to_string(), Some("on".to_string()), 0)],
            6
        );
        assert_eq!(pending[&(prod.clone(), "a".to_string(), None, 0)], 2);
    }

    #[test]
    fn bad_reports_are_refused_whole_with_a_reason() {
        let usage = aggregator(UsageSettings {
            max_entries: 3,
            max_entries_per_minute: 5,
            max_pending: 4,
            ..UsageSettings::default()
        });
        let env: Arc<str> = "prod".into();
        let mut budget = Budget::default();
        let refused =
            |r: &UsageReport, budget: &mut Budget| usage.accept(&env, r, budget, 0).unwrap_err();
        let too_many = report(&[
            ("a", Some("1"), 1),
            ("a", Some("2"), 1),
            ("b", None, 1),
            ("c", None, 1),
        ]);
        assert_eq!(refused(&too_many, &mut budget).label(), "too_many_entries");
        assert_eq!(
            refused(&report(&[("A", None, 1)]), &mut budget).label(),
            "invalid"
        );
        assert_eq!(
            refused(&report(&[("", None, 1)]), &mut budget).label(),
            "invalid"
        );
        assert_eq!(
            refused(&report(&[("a", Some(""), 1)]), &mut budget).label(),
            "invalid"
        );
        assert_eq!(
            refused(&report(&[("a", Some("x"), 0)]), &mut budget).label(),
            "invalid"
        );
        let twice = report(&[("a", Some("x"), 1), ("a", Some("x"), 2)]);
        assert!(refused(&twice, &mut budget).to_string().contains("twice"));
        let mut dup_flag = report(&[("a", Some("x"), 1)]);
        dup_flag.flags.push(dup_flag.flags[0].clone());
        assert_eq!(refused(&dup_flag, &mut budget).label(), "invalid");
        let absurd = report(&[("a", Some("x"), MAX_EVALUATIONS + 1)]);
        assert_eq!(refused(&absurd, &mut budget).label(), "absurd_count");
        assert_eq!(usage.pending(), 0, "nothing of a refused report is kept");
        // Budget: 5 entries a minute.
        let three = report(&[("a", Some("1"), 1), ("a", Some("2"), 1), ("b", None, 1)]);
        assert_eq!(usage.accept(&env, &three, &mut budget, 0), Ok(3));
        assert_eq!(refused(&three, &mut budget).label(), "rate_limited");
        // Pending: 4 entries at most.
        let mut other = Budget::default();
        let two_more = report(&[("c", Some("1"), 1), ("d", None, 1)]);
        assert_eq!(refused(&two_more, &mut other).label(), "overloaded");
        // Taking none: every report is refused.
        let off = aggregator(UsageSettings {
            max_entries: 0,
            ..UsageSettings::default()
        });
        assert!(off.accept(&env, &three, &mut Budget::default(), 0).is_err());
    }
}
