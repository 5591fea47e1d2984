//! The snapshot every reader of the sidecar evaluates against, and the cell that swaps it.
//!
//! A [`Snapshot`] is immutable: a compiled [`FlagSet`] plus where it came from and at which
//! revision. The [`SnapshotCell`] holds the current one behind an [`ArcSwapOption`]: readers (the
//! proxy's hot path, gRPC, OFREP) load it without a lock and never block; a writer (the sync client,
//! the file watcher) builds the next snapshot aside and publishes it in one atomic swap. Readers that
//! care about changes (gRPC `EventStream`, flagd sync) subscribe to a broadcast of every published
//! snapshot.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use crate::shadow::{Proposals, Shadows};
use crate::signing::SigningKeys;
use crate::usage::{Guards, Tally, Usage, UsageTable};
use arc_swap::ArcSwapOption;
use serde_json::Value;
use tokio::sync::broadcast;
use vexil_engine::{EvaluationContext, Flag, FlagSet, Position};

/// Where a snapshot came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Pushed by control over QUIC (the address it was received from).
    Control(String),
    /// Loaded from the snapshot persisted on disk at start (control not reached yet).
    Persisted(String),
    /// Read from a flagd flag-set file (offline mode).
    File(String),
    /// The `--bootstrap-file` (a flagd document or a persisted snapshot), served until control
    /// delivers, when no snapshot was persisted.
    Bootstrap(String),
    /// No flag set at all: the init timeout passed before any snapshot was loaded, and the sidecar
    /// serves without flags (the location says why). Never persisted; replaced by the first real
    /// snapshot.
    Nothing(String),
}

impl Source {
    /// A short label for logs, metrics and `/debug/snapshot`: `control`, `persisted`, `file`,
    /// `bootstrap` or `none`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Control(_) => "control",
            Source::Persisted(_) => "persisted",
            Source::File(_) => "file",
            Source::Bootstrap(_) => "bootstrap",
            Source::Nothing(_) => "none",
        }
    }

    /// The address or path behind the source (for [`Source::Nothing`], why there is none).
    pub fn location(&self) -> &str {
        match self {
            Source::Control(s)
            | Source::Persisted(s)
            | Source::File(s)
            | Source::Bootstrap(s)
            | Source::Nothing(s) => s,
        }
    }

    /// False only for [`Source::Nothing`]: the sidecar serves without flags.
    pub fn is_flag_set(&self) -> bool {
        !matches!(self, Source::Nothing(_))
    }
}

/// One immutable flag set at one revision.
#[derive(Debug)]
pub struct Snapshot {
    /// The environment it belongs to (the file name in offline mode).
    pub environment: String,
    /// Its revision: control's revision of the environment, or a counter of file reloads.
    pub revision: i64,
    /// The compiled flags.
    pub flags: FlagSet,
    /// Where it came from.
    pub source: Source,
    /// When it was published in this process.
    pub loaded_at: SystemTime,
    /// Keys of the flags that differ from the previous snapshot (added, changed or removed); every
    /// key for the first snapshot.
    pub changed: Vec<String>,
    /// The environment's keys for signing decisions (none from a file or a bootstrap).
    pub signing: Arc<SigningKeys>,
    /// Evaluation counters of this snapshot's flags and variants (reported to control).
    pub usage: UsageTable,
    /// Outcome counters of its guarded flags (set when published, replaced when control changes
    /// the guarded flags).
    pub guards: Guards,
    /// The environment's proposals compiled for this flag set, with their counters (shadow
    /// evaluation; none from a file or a bootstrap).
    pub shadows: Shadows,
}

impl Snapshot {
    /// A snapshot of `flags`; `changed` is filled in when it is published.
    pub fn new(
        environment: impl Into<String>,
        revision: i64,
        flags: FlagSet,
        source: Source,
    ) -> Self {
        Snapshot {
            environment: environment.into(),
            revision,
            usage: UsageTable::new(&flags),
            flags,
            source,
            loaded_at: SystemTime::now(),
            changed: Vec::new(),
            signing: SigningKeys::none(),
            guards: Guards::empty(),
            shadows: Shadows::none(),
        }
    }

    /// The snapshot with the environment's signing keys.
    pub fn with_signing(mut self, signing: Arc<SigningKeys>) -> Self {
        self.signing = signing;
        self
    }

    /// The snapshot with the environment's proposals, compiled for its flags (those that cannot be
    /// shadowed are skipped and counted).
    pub fn with_shadows(mut self, proposals: &Proposals) -> Self {
        self.shadows = Shadows::compile(&self.flags, proposals);
        self
    }

    /// Counts a lookup's decision ([`vexil_engine::Resolution::position`]; a missing flag is not
    /// counted) and, when it is sampled, evaluates the flag's proposal for `ctx` beside it.
    #[inline]
    pub fn decided(&self, position: Option<Position>, ctx: &EvaluationContext) {
        self.usage.count_position(position);
        self.shadows.observe(position, ctx);
    }

    /// Moves this snapshot's counts, usage and shadow evaluation, into `tally`.
    pub fn drain_counts(&self, tally: &mut Tally) {
        self.usage.drain_into(&self.flags, tally);
        self.shadows.drain_into(&self.flags, tally);
        if let Some(t) = self.guards.load().as_ref() {
            t.drain_into(&self.flags, tally);
        }
    }

    /// The empty stand-in published when the init timeout passes with nothing loaded: no flags,
    /// revision 0, source [`Source::Nothing`] with `why`.
    pub fn nothing(environment: impl Into<String>, why: impl Into<String>) -> Self {
        let flags = FlagSet::from_json(&serde_json::json!({"flags": {}}))
            .expect("the empty flag set is valid");
        Snapshot::new(environment, 0, flags, Source::Nothing(why.into()))
    }

    /// True when this is a flag set (possibly empty), not the stand-in of [`Snapshot::nothing`].
    pub fn is_flag_set(&self) -> bool {
        self.source.is_flag_set()
    }

    /// The whole flag set as one flagd document (for flagd sync and persistence).
    pub fn document(&self) -> Value {
        self.flags.to_document()
    }
}

/// Keys of the flags that differ between two sets, sorted: added, removed, or evaluating
/// differently. A flag evaluates differently when its definition changed, when its effective
/// metadata changed (the set's metadata is overlaid on it), when a shared rule (`$evaluators`) it
/// references with `$ref` changed, or when the `fractional` algorithm changed and it has targeting.
pub fn changed_keys(before: Option<&FlagSet>, after: &FlagSet) -> Vec<String> {
    let Some(before) = before else {
        return after.flags().map(|f| f.key().to_string()).collect();
    };
    let rules_changed = before.evaluators() != after.evaluators();
    let fractional_changed = before.fractional_version() != after.fractional_version();
    let same = |old: &Flag, flag: &Flag| {
        // The same compiled flag, shared by `FlagSet::with_changes`, which keeps the set's
        // rules and metadata: unchanged without comparing definitions.
        std::ptr::eq(old, flag)
            || (old.definition_json() == flag.definition_json()
                && old.metadata() == flag.metadata()
                && !(rules_changed && mentions_ref(&flag.definition()))
                && !(fractional_changed && (flag.is_targeted() || old.is_targeted())))
    };
    // Both sets list their flags sorted by key: walk them side by side, no hashing. The keys a
    // delta left alone are shared with the set before it, so most compare by address.
    let mut keys = Vec::new();
    let (mut olds, mut news) = (before.flags().peekable(), after.flags().peekable());
    loop {
        let order = match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(old), Some(new)) if std::ptr::eq(old.key(), new.key()) => Ordering::Equal,
            (Some(old), Some(new)) => old.key().cmp(new.key()),
        };
        match order {
            Ordering::Less => keys.extend(olds.next().map(|removed| removed.key().to_string())),
            Ordering::Greater => keys.extend(news.next().map(|added| added.key().to_string())),
            Ordering::Equal => {
                let (old, new) = (olds.next().expect("peeked"), news.next().expect("peeked"));
                if !same(old, new) {
                    keys.push(new.key().to_string());
                }
            }
        }
    }
    keys
}

/// True when `v` contains a `{"$ref": ...}` anywhere.
fn mentions_ref(v: &Value) -> bool {
    match v {
        Value::Object(map) => map.contains_key("$ref") || map.values().any(mentions_ref),
        Value::Array(items) => items.iter().any(mentions_ref),
        _ => false,
    }
}

/// Holds the current snapshot; cheap to share (`Arc<SnapshotCell>`).
pub struct SnapshotCell {
    current: ArcSwapOption<Snapshot>,
    published: broadcast::Sender<Arc<Snapshot>>,
    /// The evaluation counts: a replaced snapshot is retired there, to be counted under its names.
    usage: Arc<Usage>,
}

impl Default for SnapshotCell {
    fn default() -> Self {
        SnapshotCell {
            current: ArcSwapOption::empty(),
            published: broadcast::channel(64).0,
            usage: Arc::new(Usage::default()),
        }
    }
}

impl SnapshotCell {
    /// An empty cell: not ready until the first snapshot is published.
    pub fn new() -> Self {
        Self::default()
    }

    /// The evaluation counts of the snapshots this cell served.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// The current snapshot, if any. Lock-free; the returned `Arc` keeps it alive while in use.
    pub fn load(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// True once a snapshot has been published (readiness), the stand-in of
    /// [`Snapshot::nothing`] included.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// True when a flag set is served (not nothing, not the stand-in of [`Snapshot::nothing`]).
    pub fn has_flag_set(&self) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|s| s.is_flag_set())
    }

    /// Publishes `next` only when nothing was published yet (the init timeout's stand-in must never
    /// replace a snapshot that arrived meanwhile); true when it was.
    pub fn publish_if_empty(&self, mut next: Snapshot) -> bool {
        next.changed = changed_keys(None, &next.flags);
        let next = Arc::new(next);
        let before = self
            .current
            .compare_and_swap(&None::<Arc<Snapshot>>, Some(next.clone()));
        if before.is_some() {
            return false;
        }
        let _ = self.published.send(next);
        true
    }

    /// Publishes `next` (computing its changed keys against the current one) and announces it.
    pub fn publish(&self, mut next: Snapshot) -> Arc<Snapshot> {
        let before = self.load();
        next.changed = changed_keys(before.as_deref().map(|s| &s.flags), &next.flags);
        next.guards = Guards::new(self.usage.outcome_table(&next.flags));
        let next = Arc::new(next);
        if let Some(replaced) = self.current.swap(Some(next.clone())) {
            self.usage.retire(replaced);
        }
        // Nobody listening is fine.
        let _ = self.published.send(next.clone());
        next
    }

    /// Every snapshot published from now on. A receiver that lags behind gets
    /// `RecvError::Lagged` and should treat every flag as changed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(doc: Value) -> FlagSet {
        FlagSet::from_json(&doc).unwrap()
    }

    fn flag(on: &str) -> Value {
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": on})
    }

    #[test]
    fn publish_swaps_and_reports_changed_keys() {
        let cell = SnapshotCell::new();
        assert!(!cell.is_loaded());
        let mut rx = cell.subscribe();
        let first = cell.publish(Snapshot::new(
            "prod",
            1,
            set(json!({"flags": {"a": flag("on"), "b": flag("on")}})),
            Source::File("f.json".into()),
        ));
        assert_eq!(first.changed, ["a", "b"]);
        let second = cell.publish(Snapshot::new(
            "prod",
            2,
            set(json!({"flags": {"a": flag("on"), "b": flag("off"), "c": flag("on")}})),
            Source::File("f.json".into()),
        ));
        assert_eq!(second.changed, ["b", "c"]);
        let third = cell.publish(Snapshot::new(
            "prod",
            3,
            set(json!({"flags": {"c": flag("on")}})),
            Source::File("f.json".into()),
        ));
        assert_eq!(third.changed, ["a", "b"]);
        // As many flags as before, but not the same keys: one removed, one added.
        let fourth = cell.publish(Snapshot::new(
            "prod",
            4,
            set(json!({"flags": {"d": flag("on")}})),
            Source::File("f.json".into()),
        ));
        assert_eq!(fourth.changed, ["c", "d"]);
        assert_eq!(cell.load().unwrap().revision, 4);
        assert_eq!(rx.try_recv().unwrap().revision, 1);
        assert_eq!(rx.try_recv().unwrap().revision, 2);
    }

    #[test]
    fn the_stand_in_is_published_only_into_an_empty_cell() {
        let cell = SnapshotCell::new();
        assert!(cell.publish_if_empty(Snapshot::nothing("prod", "init timeout")));
        assert!(cell.is_loaded() && !cell.has_flag_set());
        assert_eq!(cell.load().unwrap().source.kind(), "none");
        let real = cell.publish(Snapshot::new(
            "prod",
            3,
            set(json!({"flags": {"a": flag("on")}})),
            Source::Control("c".into()),
        ));
        assert_eq!(real.changed, ["a"]);
        assert!(cell.has_flag_set());
        assert!(!cell.publish_if_empty(Snapshot::nothing("prod", "late")));
        assert_eq!(cell.load().unwrap().revision, 3);
    }

    #[test]
    fn a_replacing_delta_changes_only_the_flags_it_redefines() {
        let before = set(json!({"flags": {"a": flag("on"), "b": flag("on"), "c": flag("on")}}));
        let options = vexil_engine::CompileOptions::default();
        let (off, on) = (flag("off"), flag("on"));
        let after = before
            .with_changes([("b", &off)], std::iter::empty(), &options)
            .unwrap();
        assert_eq!(changed_keys(Some(&before), &after), ["b"]);
        let rewritten = before
            .with_changes([("c", &on)], std::iter::empty(), &options)
            .unwrap();
        assert!(changed_keys(Some(&before), &rewritten).is_empty());
    }

    #[test]
    fn shared_rules_and_set_metadata_count_as_changes() {
        let rule = |v: &str| json!({"in": [v, {"var": "country"}]});
        let doc = |country: &str, team: &str| {
            json!({
                "$evaluators": {"eu": rule(country)},
                "metadata": {"team": team},
                "flags": {
                    "uses-ref": {"state": "ENABLED", "variants": {"on": true, "off": false},
                        "defaultVariant": "off",
                        "targeting": {"if": [{"$ref": "eu"}, "on", null]}},
                    "plain": flag("on"),
                    "own-team": {"state": "ENABLED", "variants": {"on": true, "off": false},
                        "defaultVariant": "on", "metadata": {"team": "mine"}}
                }
            })
        };
        let before = set(doc("de", "a"));
        assert!(changed_keys(Some(&before), &set(doc("de", "a"))).is_empty());
        assert_eq!(
            changed_keys(Some(&before), &set(doc("fr", "a"))),
            ["uses-ref"]
        );
        assert_eq!(
            changed_keys(Some(&before), &set(doc("de", "b"))),
            ["plain", "uses-ref"]
        );
    }
}
