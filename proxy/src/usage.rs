//! Usage: how often this sidecar decided each variant of each flag, summed off the request path
//! and reported to control over the sync stream (`UsageReport`, docs/usage.md, ADR 0034).
//!
//! - Counting ([`UsageTable::count`]) is on the hot path: every [`Snapshot`] has a table of
//!   counters, one per (flag, variant) plus one per flag for "no value", laid out by the flag's
//!   position in the set and the variant's position in the flag (what the data plane's plan and
//!   [`vexil_engine::Position`] already know): no key is looked up, no lock taken, nothing
//!   allocated per request. The counters are split in [`SHARDS`] shards, each thread counting in
//!   its own (chosen once per thread), so worker threads do not write the same cache lines; a
//!   shard is allocated by the first count of a thread in that snapshot.
//! - Summing ([`Usage::take`]) is off the path: the sync client's report tick moves every shard's
//!   counts (an atomic swap to 0 each) into a [`Tally`] keyed by flag key and variant name.
//! - Snapshot changes: a new revision can renumber flags, so a replaced snapshot is
//!   [retired](Usage::retire) with its flag set and drained under its own names; it is kept for
//!   [`GRACE`] (requests that loaded it just before the swap still count into it), drained again,
//!   then dropped.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use vexil_engine::{FlagSet, Position};
use vexil_proto::outcomes::{COUNTERS, STATUS_CLASSES};
use vexil_proto::sync::v1::{FlagUsage, Outcomes, ShadowUsage, UsageReport, VariantUsage};

use crate::snapshot::Snapshot;

/// Counter shards per table: threads beyond this many share shards (still correct: the counters
/// are atomic).
pub const SHARDS: usize = 16;

/// How long a replaced snapshot's table is kept after the swap for late counts.
pub const GRACE: Duration = Duration::from_secs(1);

/// The most (flag, variant) entries a [`Tally`] holds; counts of further entries are dropped and
/// counted (`vexil_proxy_usage_entries_dropped_total`). Far above any real environment (control
/// allows 100,000 flags), it bounds memory while control does not take reports.
pub const MAX_TALLY_ENTRIES: usize = 1_000_000;

/// The largest encoded `UsageReport` a sidecar sends: below control's 64 KiB client frame limit,
/// with room for the frame's own header.
pub const MAX_REPORT_BYTES: usize = 60 * 1024;

/// Source of each thread's shard.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard (`usize::MAX`: not chosen yet).
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

/// Counters split in [`SHARDS`] shards, each thread adding into its own (an uncontended atomic
/// add; a shard is allocated by the first count of a thread), summed off the request path: the
/// mechanism of the usage counters and of the shadow-evaluation counters ([`crate::shadow`]).
pub struct Sharded {
    len: usize,
    shards: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl Sharded {
    /// `len` counters (none allocated until a thread counts).
    pub fn new(len: usize) -> Sharded {
        Sharded {
            len,
            shards: (0..SHARDS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The number of counters.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no counters.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds 1 to counter `slot` in this thread's shard (`slot` below [`Sharded::len`]).
    #[inline]
    pub fn add(&self, slot: usize) {
        let shard =
            self.shards[shard()].get_or_init(|| (0..self.len).map(|_| AtomicU64::new(0)).collect());
        if let Some(counter) = shard.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves every count out (each shard's counters swapped to 0): `f(slot, count)` for each
    /// counter above 0, in slot order.
    pub fn drain(&self, mut f: impl FnMut(usize, u64)) {
        let shards: Vec<&[AtomicU64]> = self
            .shards
            .iter()
            .filter_map(|s| s.get())
            .map(|s| &**s)
            .collect();
        if shards.is_empty() {
            return;
        }
        for slot in 0..self.len {
            let n: u64 = shards
                .iter()
                .map(|s| s[slot].swap(0, Ordering::Relaxed))
                .fold(0, u64::saturating_add);
            if n > 0 {
                f(slot, n);
            }
        }
    }
}

/// The evaluation counters of one snapshot.
pub struct UsageTable {
    /// The first counter of each flag (its variants, then "no value"), and the total at the end.
    offsets: Box<[u32]>,
    counters: Sharded,
}

impl std::fmt::Debug for UsageTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageTable")
            .field("counters", &self.len())
            .finish_non_exhaustive()
    }
}

impl UsageTable {
    /// The (zero) counters of `flags`' flags and variants.
    pub fn new(flags: &FlagSet) -> UsageTable {
        let mut offsets = Vec::with_capacity(flags.len() + 1);
        let mut next = 0u32;
        for flag in flags.flags() {
            offsets.push(next);
            next = next.saturating_add(flag.variants().len() as u32 + 1);
        }
        offsets.push(next);
        UsageTable {
            counters: Sharded::new(next as usize),
            offsets: offsets.into(),
        }
    }

    /// The number of counters of a shard.
    fn len(&self) -> usize {
        self.counters.len()
    }

    /// Counts one decision of the flag at `flag` (its index in the set) that gave the variant at
    /// `variant` (`None`: no value). Out-of-range positions are ignored.
    #[inline]
    pub fn count(&self, flag: usize, variant: Option<usize>) {
        let (Some(&start), Some(&end)) = (self.offsets.get(flag), self.offsets.get(flag + 1))
        else {
            return;
        };
        let none = end as usize - 1;
        let slot = match variant {
            Some(v) if start as usize + v < none => start as usize + v,
            _ => none,
        };
        self.counters.add(slot);
    }

    /// Counts a lookup's resolution ([`vexil_engine::Resolution::position`]); a missing flag
    /// (`None`) is not counted.
    #[inline]
    pub fn count_position(&self, position: Option<Position>) {
        if let Some(p) = position {
            self.count(p.flag, p.variant);
        }
    }

    /// Moves the counts (every shard's counters swapped to 0) into `tally`, named after `flags`,
    /// the set the table was made for.
    pub fn drain_into(&self, flags: &FlagSet, tally: &mut Tally) {
        let all: Vec<&vexil_engine::Flag> = flags.flags().collect();
        self.counters.drain(|slot, n| {
            // The flag whose counters hold `slot`: the last whose first counter is at or before it.
            let i = self
                .offsets
                .partition_point(|&start| start as usize <= slot)
                - 1;
            let Some(flag) = all.get(i) else { return };
            let variant = flag
                .variants()
                .nth(slot - self.offsets[i] as usize)
                .map(|(name, _)| name);
            tally.add(flag.key(), variant, n);
        });
    }
}

/// The outcome counters of the guarded flags of one snapshot (ADR 0035): for each variant of each
/// guarded flag, what the upstream answered to the proxied requests that carried the decision
/// ([`COUNTERS`]: status classes, then latency buckets), in [`Sharded`] counters. Flags without a
/// guard have no counters, so they cost nothing.
pub struct OutcomeTable {
    /// The guarded flag keys it was made for.
    keys: Arc<[String]>,
    /// Per flag of the set: the first counter of its first variant, or `u32::MAX` (unguarded).
    first: Box<[u32]>,
    counters: Sharded,
}

impl std::fmt::Debug for OutcomeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeTable")
            .field("guarded", &self.keys)
            .finish_non_exhaustive()
    }
}

/// The decisions one proxied request carried that are counted when its answer comes: the counter
/// slots of the guarded (flag, variant) pairs, at most [`Attributed::MAX`] (more are not counted).
#[derive(Clone, Debug)]
pub struct Attributed {
    table: Arc<OutcomeTable>,
    slots: [u32; Attributed::MAX],
    len: u8,
}

impl Attributed {
    /// Guarded decisions counted per request at most.
    pub const MAX: usize = 8;

    /// Nothing attributed yet, in `table`.
    pub fn new(table: Arc<OutcomeTable>) -> Attributed {
        Attributed {
            table,
            slots: [0; Attributed::MAX],
            len: 0,
        }
    }

    /// Adds the decision of flag `flag` (its index) that gave variant `variant`, when guarded.
    #[inline]
    pub fn push(&mut self, flag: usize, variant: usize) {
        if let Some(slot) = self.table.slot(flag, variant)
            && (self.len as usize) < Attributed::MAX
        {
            self.slots[self.len as usize] = slot;
            self.len += 1;
        }
    }

    /// True when no decision was guarded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts the request's outcome for every decision: the class of the answer
    /// ([`vexil_proto::outcomes::status_class`]) and, when answered, its latency bucket.
    pub fn record(&self, class: usize, latency: Option<usize>) {
        for &slot in &self.slots[..self.len as usize] {
            let base = slot as usize;
            self.table
                .counters
                .add(base + class.min(STATUS_CLASSES - 1));
            if let Some(bucket) = latency {
                self.table
                    .counters
                    .add(base + STATUS_CLASSES + bucket.min(COUNTERS - STATUS_CLASSES - 1));
            }
        }
    }
}

impl OutcomeTable {
    /// The counters of the flags of `flags` named in `guarded`; `None` when none of them is in
    /// the set.
    pub fn new(flags: &FlagSet, guarded: &Arc<[String]>) -> Option<OutcomeTable> {
        let mut first = Vec::with_capacity(flags.len());
        let mut next = 0usize;
        for flag in flags.flags() {
            if guarded.iter().any(|k| k == flag.key()) {
                first.push(u32::try_from(next).ok()?);
                next += flag.variants().len() * COUNTERS;
            } else {
                first.push(u32::MAX);
            }
        }
        (next > 0).then(|| OutcomeTable {
            keys: guarded.clone(),
            first: first.into(),
            counters: Sharded::new(next),
        })
    }

    /// The guarded flag keys it was made for.
    pub fn keys(&self) -> &Arc<[String]> {
        &self.keys
    }

    /// The first counter of variant `variant` of flag `flag`, when the flag is guarded.
    #[inline]
    fn slot(&self, flag: usize, variant: usize) -> Option<u32> {
        let first = *self.first.get(flag)?;
        let slot = first.checked_add(u32::try_from(variant * COUNTERS).ok()?)?;
        (first != u32::MAX && (slot as usize) + COUNTERS <= self.counters.len()).then_some(slot)
    }

    /// Moves the counts into `tally`, named after `flags`, the set the table was made for.
    pub fn drain_into(&self, flags: &FlagSet, tally: &mut Tally) {
        let mut sums: BTreeMap<usize, [u64; COUNTERS]> = BTreeMap::new();
        self.counters.drain(|slot, n| {
            sums.entry(slot - slot % COUNTERS).or_insert([0; COUNTERS])[slot % COUNTERS] += n;
        });
        if sums.is_empty() {
            return;
        }
        for (i, flag) in flags.flags().enumerate() {
            let Some(&first) = self.first.get(i).filter(|&&f| f != u32::MAX) else {
                continue;
            };
            for (v, (name, _)) in flag.variants().enumerate() {
                if let Some(counts) = sums.get(&(first as usize + v * COUNTERS)) {
                    tally.add_outcomes(flag.key(), Some(name), counts);
                }
            }
        }
    }
}

/// A shadow-evaluation count's key: flag, proposal id, live variant, proposed variant.
type ShadowKey = (String, String, Option<String>, Option<String>);

/// Counts by flag key and variant name (`None`: no value), and shadow-evaluation counts by flag,
/// proposal and (live, proposed) variants, as reports carry them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    counts: BTreeMap<(String, Option<String>), u64>,
    /// Outcomes of the requests that carried guarded flags' decisions, by flag and variant.
    outcomes: BTreeMap<(String, Option<String>), Box<[u64; COUNTERS]>>,
    shadow: BTreeMap<ShadowKey, u64>,
    /// Counts left out because the tally was full ([`MAX_TALLY_ENTRIES`]).
    pub dropped: u64,
}

/// Adds `n` at `key` of `map`, unless the tally already holds `held` entries and `key` is new.
fn add_at<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, n: u64, held: usize, dropped: &mut u64) {
    if let Some(count) = map.get_mut(&key) {
        *count = count.saturating_add(n);
    } else if held < MAX_TALLY_ENTRIES {
        map.insert(key, n);
    } else {
        *dropped = dropped.saturating_add(1);
    }
}

impl Tally {
    /// Adds `n` decisions of `variant` of `flag`.
    pub fn add(&mut self, flag: &str, variant: Option<&str>, n: u64) {
        let held = self.len();
        let key = (flag.to_string(), variant.map(str::to_string));
        add_at(&mut self.counts, key, n, held, &mut self.dropped);
    }

    /// Adds the outcomes of requests that carried `variant` of `flag`.
    pub fn add_outcomes(&mut self, flag: &str, variant: Option<&str>, counts: &[u64; COUNTERS]) {
        let key = (flag.to_string(), variant.map(str::to_string));
        if !self.outcomes.contains_key(&key) && self.len() >= MAX_TALLY_ENTRIES {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        let sums = self
            .outcomes
            .entry(key)
            .or_insert_with(|| Box::new([0; COUNTERS]));
        for (s, n) in sums.iter_mut().zip(counts) {
            *s = s.saturating_add(*n);
        }
    }

    /// The outcomes counted for an entry (tests, diagnostics).
    pub fn outcomes(&self, flag: &str, variant: Option<&str>) -> Option<[u64; COUNTERS]> {
        self.outcomes
            .get(&(flag.to_string(), variant.map(str::to_string)))
            .map(|c| **c)
    }

    /// Adds `n` sampled decisions of `flag` on which the live rule chose `from` and proposal
    /// `proposal` chose `to`.
    pub fn add_shadow(
        &mut self,
        flag: &str,
        proposal: &str,
        from: Option<&str>,
        to: Option<&str>,
        n: u64,
    ) {
        let held = self.len();
        let key = (
            flag.to_string(),
            proposal.to_string(),
            from.map(str::to_string),
            to.map(str::to_string),
        );
        add_at(&mut self.shadow, key, n, held, &mut self.dropped);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: Tally) {
        for ((flag, variant), n) in other.counts {
            self.add(&flag, variant.as_deref(), n);
        }
        for ((flag, variant), o) in other.outcomes {
            self.add_outcomes(&flag, variant.as_deref(), &o);
        }
        for ((flag, proposal, from, to), n) in other.shadow {
            self.add_shadow(&flag, &proposal, from.as_deref(), to.as_deref(), n);
        }
        self.dropped = self.dropped.saturating_add(other.dropped);
    }

    /// Adds every count of `report` (a report that could not be sent).
    pub fn add_report(&mut self, report: &UsageReport) {
        for f in &report.flags {
            for v in &f.variants {
                if v.evaluations > 0 {
                    self.add(&f.flag, v.variant.as_deref(), v.evaluations);
                }
                if let Some(o) = &v.outcomes {
                    let mut counts = [0u64; COUNTERS];
                    for (c, n) in counts
                        .iter_mut()
                        .zip(o.status_classes.iter().chain(&o.latency))
                    {
                        *c = *n;
                    }
                    self.add_outcomes(&f.flag, v.variant.as_deref(), &counts);
                }
            }
        }
        for e in &report.shadow {
            self.add_shadow(
                &e.flag,
                &e.proposal,
                e.from.as_deref(),
                e.to.as_deref(),
                e.evaluations,
            );
        }
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.outcomes.is_empty() && self.shadow.is_empty()
    }

    /// The number of entries: (flag, variant) and shadow (flag, proposal, from, to).
    pub fn len(&self) -> usize {
        self.counts.len() + self.outcomes.len() + self.shadow.len()
    }

    /// The shadow-evaluation count of one entry (tests, diagnostics).
    pub fn get_shadow(
        &self,
        flag: &str,
        proposal: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> u64 {
        let key = (
            flag.to_string(),
            proposal.to_string(),
            from.map(str::to_string),
            to.map(str::to_string),
        );
        self.shadow.get(&key).copied().unwrap_or(0)
    }

    /// The count of one entry (tests, diagnostics).
    pub fn get(&self, flag: &str, variant: Option<&str>) -> u64 {
        self.counts
            .get(&(flag.to_string(), variant.map(str::to_string)))
            .copied()
            .unwrap_or(0)
    }

    /// The counts as reports of at most `max_entries` entries and [`MAX_REPORT_BYTES`] each
    /// (a flag with more variants than fit is split over reports). `max_entries` 0 is taken as 1.
    pub fn reports(&self, max_entries: usize) -> Vec<UsageReport> {
        let max_entries = max_entries.max(1);
        let mut reports = Vec::new();
        let mut report = UsageReport::default();
        let mut entries = 0;
        let mut bytes = 0;
        let keys: BTreeSet<&(String, Option<String>)> =
            self.counts.keys().chain(self.outcomes.keys()).collect();
        for key in keys {
            let (flag, variant) = key;
            let n = self.counts.get(key).copied().unwrap_or(0);
            let outcomes = self.outcomes.get(key);
            let same_flag = |r: &UsageReport| r.flags.last().is_some_and(|f| f.flag == *flag);
            let cost = entry_cost(
                flag,
                variant.as_deref(),
                same_flag(&report),
                outcomes.is_some(),
            );
            if entries > 0 && (entries + 1 > max_entries || bytes + cost > MAX_REPORT_BYTES) {
                reports.push(std::mem::take(&mut report));
                entries = 0;
                bytes = 0;
            }
            let entry = VariantUsage {
                variant: variant.clone(),
                evaluations: n,
                outcomes: outcomes.map(|o| Outcomes {
                    status_classes: o[..STATUS_CLASSES].to_vec(),
                    latency: o[STATUS_CLASSES..].to_vec(),
                }),
            };
            bytes += entry_cost(
                flag,
                variant.as_deref(),
                same_flag(&report),
                outcomes.is_some(),
            );
            match report.flags.last_mut() {
                Some(f) if f.flag == *flag => f.variants.push(entry),
                _ => report.flags.push(FlagUsage {
                    flag: flag.clone(),
                    variants: vec![entry],
                }),
            }
            entries += 1;
        }
        for ((flag, proposal, from, to), &n) in &self.shadow {
            let cost = shadow_cost(flag, proposal, from.as_deref(), to.as_deref());
            if entries > 0 && (entries + 1 > max_entries || bytes + cost > MAX_REPORT_BYTES) {
                reports.push(std::mem::take(&mut report));
                entries = 0;
                bytes = 0;
            }
            report.shadow.push(ShadowUsage {
                flag: flag.clone(),
                proposal: proposal.clone(),
                from: from.clone(),
                to: to.clone(),
                evaluations: n,
            });
            bytes += cost;
            entries += 1;
        }
        if entries > 0 {
            reports.push(report);
        }
        reports
    }
}

/// A bound on the bytes a shadow entry adds to an encoded report: its strings and count, plus
/// tags and lengths (6 fields, 3 bytes each at most for these sizes) and a 10-byte varint.
fn shadow_cost(flag: &str, proposal: &str, from: Option<&str>, to: Option<&str>) -> usize {
    flag.len() + proposal.len() + from.map_or(0, str::len) + to.map_or(0, str::len) + 28
}

/// A bound on the bytes an entry adds to an encoded report: the variant's name and count (tags,
/// lengths, a 10-byte varint at most: 20), plus the flag's key and its `FlagUsage` framing (tags
/// and lengths: 8) when the flag is new to the report, plus its outcomes (38 varints of 10 bytes
/// at most and their framing) when it has them.
fn entry_cost(flag: &str, variant: Option<&str>, same_flag: bool, outcomes: bool) -> usize {
    variant.map_or(0, str::len)
        + 20
        + if same_flag { 0 } else { flag.len() + 8 }
        + if outcomes { COUNTERS * 10 + 16 } else { 0 }
}

/// The sidecar's usage: the replaced snapshots still to drain, and the counts not yet reported.
/// Shared by the [`SnapshotCell`](crate::snapshot::SnapshotCell) (which retires snapshots) and
/// the sync client (which reports).
pub struct Usage {
    retired: Mutex<Vec<(Instant, Arc<Snapshot>)>>,
    pending: Mutex<Tally>,
    /// The flags whose outcomes are counted, as control last said (`Welcome` / `Full.guarded`).
    guarded: Mutex<Arc<[String]>>,
    metrics: UsageMetrics,
}

/// The sidecar's usage metrics (registered by the server).
#[derive(Clone, Debug, Default)]
pub struct UsageMetrics {
    /// `UsageReport` frames sent to control.
    pub reports: Counter,
    /// Entries ((flag, variant) counts) sent.
    pub entries: Counter,
    /// Entries dropped because the tally was full.
    pub dropped: Counter,
    /// Proposals a snapshot could not shadow (see [`crate::shadow`]).
    pub shadows_skipped: Counter,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            retired: Mutex::new(Vec::new()),
            pending: Mutex::new(Tally::default()),
            guarded: Mutex::new(Arc::from(Vec::new())),
            metrics: UsageMetrics::default(),
        }
    }
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage").finish_non_exhaustive()
    }
}

impl Usage {
    /// The metrics, for registration.
    pub fn metrics(&self) -> &UsageMetrics {
        &self.metrics
    }

    /// Keeps `replaced` (the snapshot a publication replaced) for draining under its own names;
    /// drains and drops those retired longer than [`GRACE`] ago.
    pub fn retire(&self, replaced: Arc<Snapshot>) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.push((Instant::now(), replaced));
        self.settle(&mut retired, false);
    }

    /// Drains retired snapshots into the pending counts: all of them with `all`, else only those
    /// past their grace; those past their grace are dropped.
    fn settle(&self, retired: &mut Vec<(Instant, Arc<Snapshot>)>, all: bool) {
        if retired.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = pending.dropped;
        retired.retain(|(at, snapshot)| {
            let due = at.elapsed() >= GRACE;
            if due || all {
                snapshot.drain_counts(&mut pending);
            }
            !due
        });
        self.metrics.dropped.inc_by(pending.dropped - dropped);
    }

    /// Every count not reported yet (the current snapshot's, the retired ones', and any put back
    /// by [`Usage::restore`]), taken: the pending counts start again from zero.
    pub fn take(&self, current: Option<&Snapshot>) -> Tally {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        self.settle(&mut retired, true);
        drop(retired);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(snapshot) = current {
            let dropped = pending.dropped;
            snapshot.drain_counts(&mut pending);
            self.metrics.dropped.inc_by(pending.dropped - dropped);
        }
        let mut taken = std::mem::take(&mut *pending);
        taken.dropped = 0;
        taken
    }

    /// Puts back counts that could not be sent (the connection broke): the next report carries
    /// them.
    pub fn restore(&self, tally: Tally) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = pending.dropped;
        pending.merge(tally);
        self.metrics.dropped.inc_by(pending.dropped - dropped);
    }

    /// The outcome counters for `flags` under the guarded flags held (`None`: none guarded).
    pub fn outcome_table(&self, flags: &FlagSet) -> Option<Arc<OutcomeTable>> {
        let guarded = self
            .guarded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        OutcomeTable::new(flags, &guarded).map(Arc::new)
    }

    /// Takes control's list of guarded flags; when it differs from the one held, `current` (the
    /// snapshot served) gets new outcome counters, its old ones drained into the pending counts.
    pub fn set_guarded(&self, flags: Vec<String>, current: Option<&Snapshot>) {
        let flags: Arc<[String]> = flags.into();
        {
            let mut held = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
            if **held == *flags {
                return;
            }
            *held = flags.clone();
        }
        if let Some(snapshot) = current {
            let table = OutcomeTable::new(&snapshot.flags, &flags).map(Arc::new);
            if let Some(old) = snapshot.guards.swap(table) {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                old.drain_into(&snapshot.flags, &mut pending);
            }
        }
    }

    /// Counts a report of `entries` entries as sent.
    pub fn sent(&self, entries: usize) {
        self.metrics.reports.inc();
        self.metrics.entries.inc_by(entries as u64);
    }
}

/// A snapshot's outcome counters, replaced when control changes the guarded flags.
pub type Guards = ArcSwapOption<OutcomeTable>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{SnapshotCell, Source};
    use serde_json::json;

    fn set(doc: serde_json::Value) -> FlagSet {
        FlagSet::from_json(&doc).unwrap()
    }

    fn two_flags() -> FlagSet {
        set(json!({"flags": {
            "a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "b": {"state": "ENABLED", "variants": {"x": 1, "y": 2, "z": 3}, "defaultVariant": "x"}
        }}))
    }

    #[test]
    fn counts_by_position_are_named_when_drained() {
        let flags = two_flags();
        let table = UsageTable::new(&flags);
        // The set lists variants by name: "off", "on"; "x", "y", "z".
        table.count(0, Some(1));
        table.count(0, Some(1));
        table.count(0, None);
        table.count(1, Some(2));
        // Out of range: ignored, or "no value" for a variant past the flag's.
        table.count(7, Some(0));
        table.count(1, Some(9));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        table.count(1, Some(1));
                    }
                });
            }
        });
        let mut tally = Tally::default();
        table.drain_into(&flags, &mut tally);
        assert_eq!(tally.get("a", Some("on")), 2);
        assert_eq!(tally.get("a", None), 1);
        assert_eq!(tally.get("a", Some("off")), 0);
        assert_eq!(tally.get("b", Some("z")), 1);
        assert_eq!(tally.get("b", None), 1);
        assert_eq!(tally.get("b", Some("y")), 4000);
        assert_eq!(tally.len(), 5);
        // Drained: nothing the second time.
        let mut again = Tally::default();
        table.drain_into(&flags, &mut again);
        assert!(again.is_empty());
    }

    #[test]
    fn a_replaced_snapshot_is_drained_under_its_own_names() {
        let cell = SnapshotCell::new();
        let first = cell.publish(Snapshot::new(
            "prod",
            1,
            two_flags(),
            Source::File("f".into()),
        ));
        first.usage.count(1, Some(0)); // b=x
        // Revision 2 adds a flag before "b": "b" moves from position 1 to 2, and its variants
        // are others.
        let second = cell.publish(Snapshot::new(
            "prod",
            2,
            set(json!({"flags": {
                "a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
                "aa": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
                "b": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x"}
            }})),
            Source::File("f".into()),
        ));
        // A request that loaded the first snapshot before the swap counts after it.
        first.usage.count(1, Some(0));
        second.usage.count(2, Some(1)); // b=y
        second.usage.count(1, None); // aa: disabled
        let tally = cell.usage().take(cell.load().as_deref());
        assert_eq!(tally.get("b", Some("x")), 2);
        assert_eq!(tally.get("b", Some("y")), 1);
        assert_eq!(tally.get("aa", None), 1);
        assert_eq!(tally.len(), 3);
        // Taken: the next take starts from zero, and a put-back count comes again.
        assert!(cell.usage().take(cell.load().as_deref()).is_empty());
        cell.usage().restore(tally.clone());
        assert_eq!(cell.usage().take(None), tally);
    }

    #[test]
    fn reports_are_bounded_by_entries_and_bytes() {
        let mut tally = Tally::default();
        for f in 0..10 {
            for v in 0..3 {
                tally.add(&format!("flag-{f}"), Some(&format!("v{v}")), 1 + v);
            }
        }
        tally.add("flag-0", None, 5);
        let reports = tally.reports(7);
        let entries: Vec<usize> = reports
            .iter()
            .map(|r| r.flags.iter().map(|f| f.variants.len()).sum())
            .collect();
        assert!(entries.iter().all(|&n| n <= 7), "{entries:?}");
        assert_eq!(entries.iter().sum::<usize>(), 31);
        // Each flag at most once per report; every count carried once.
        let mut total = 0;
        for r in &reports {
            let mut keys: Vec<&str> = r.flags.iter().map(|f| f.flag.as_str()).collect();
            keys.dedup();
            assert_eq!(keys.len(), r.flags.len());
            total += r
                .flags
                .iter()
                .flat_map(|f| &f.variants)
                .map(|v| v.evaluations)
                .sum::<u64>();
        }
        assert_eq!(total, 10 * (1 + 2 + 3) + 5);
        // Long keys: split by bytes before the frame limit.
        let mut big = Tally::default();
        let long = "k".repeat(200);
        for f in 0..1000 {
            big.add(&format!("{long}-{f}"), Some(&"v".repeat(100)), 1);
        }
        let reports = big.reports(100_000);
        assert!(reports.len() > 1);
        for r in &reports {
            use vexil_proto::prost::Message;
            assert!(r.encoded_len() <= MAX_REPORT_BYTES, "{}", r.encoded_len());
        }
    }

    #[test]
    fn outcomes_are_counted_for_guarded_flags_only_and_reported_with_the_usage() {
        use vexil_proto::outcomes::{LATENCY_BUCKETS, SERVER_ERROR};
        let cell = SnapshotCell::new();
        // Guarded before the snapshot: it is published with counters for `b` only.
        cell.usage().set_guarded(vec!["b".into()], None);
        let snap = cell.publish(Snapshot::new(
            "prod",
            1,
            two_flags(),
            Source::File("f".into()),
        ));
        let table = snap.guards.load_full().expect("b is guarded");
        let mut carried = Attributed::new(table.clone());
        carried.push(0, 0); // a: not guarded, not counted
        carried.push(1, 2); // b=z
        assert!(!carried.is_empty());
        carried.record(1, Some(3));
        carried.record(SERVER_ERROR, Some(40)); // past the last bucket: the last
        carried.record(vexil_proto::outcomes::NO_ANSWER, None);
        snap.usage.count(1, Some(2));
        let tally = cell.usage().take(cell.load().as_deref());
        assert_eq!(tally.get("b", Some("z")), 1);
        let o = tally.outcomes("b", Some("z")).unwrap();
        assert_eq!(o[..STATUS_CLASSES], [0, 1, 0, 0, 1, 1]);
        assert_eq!(o[STATUS_CLASSES + 3], 1);
        assert_eq!(o[COUNTERS - 1], 1);
        assert_eq!(tally.outcomes("a", Some("on")), None);
        let reports = tally.reports(10);
        let v = &reports[0].flags[0].variants[0];
        let outcomes = v.outcomes.as_ref().unwrap();
        assert_eq!(outcomes.status_classes.len(), STATUS_CLASSES);
        assert_eq!(outcomes.latency.len(), LATENCY_BUCKETS);
        // Unguarded: the current snapshot loses its counters (drained first); nothing else counts.
        carried.record(1, Some(0));
        cell.usage().set_guarded(Vec::new(), cell.load().as_deref());
        assert!(snap.guards.load().is_none());
        let tally = cell.usage().take(cell.load().as_deref());
        assert_eq!(tally.outcomes("b", Some("z")).unwrap()[1], 1);
        // More than MAX guarded decisions on one request: the rest are not counted.
        let mut many = Attributed::new(table);
        for _ in 0..Attributed::MAX + 3 {
            many.push(1, 0);
        }
        many.record(1, None);
        let mut t = Tally::default();
        many.table.drain_into(&snap.flags, &mut t);
        assert_eq!(
            t.outcomes("b", Some("x")).unwrap()[1],
            Attributed::MAX as u64
        );
    }

    #[test]
    fn a_full_tally_drops_and_counts() {
        let mut tally = Tally::default();
        tally.add("a", Some("on"), u64::MAX);
        tally.add("a", Some("on"), 5);
        assert_eq!(tally.get("a", Some("on")), u64::MAX);
    }
}
