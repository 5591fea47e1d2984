//! Shadow evaluation (docs/shadow.md, ADR 0040): control's proposals for some flags, evaluated
//! beside the live rules on a sample of decisions, without changing any; the sidecar counts how
//! often the live rule chose one variant and the proposal another, and reports the counts with
//! its usage (`UsageReport.shadow`).
//!
//! - The proposals arrive in the `Full` frame (`Full.shadows`), are held and persisted beside the
//!   snapshot ([`Proposals`]), and are compiled for each snapshot against its flag set
//!   ([`Shadows::compile`]): as flags of a set with the live set's `$evaluators` and metadata, so
//!   `$ref`s, `$flagd.flagKey` and the `fractional` algorithm mean what they mean live. A proposal
//!   that does not compile, names a flag the set does not have, has other variants than the live
//!   flag (their positions must mean the same variants) or does not fit the counters' budget is
//!   skipped and counted ([`Shadows::skipped`]); it never breaks the snapshot.
//! - On the hot path, [`Shadows::sample`] draws one number per decision point from a per-thread
//!   generator (no lock, no allocation) and compares it with the largest sample ratio; an
//!   unsampled request costs that and nothing else. A sampled decision of a flag with a proposal
//!   evaluates the proposal with the same context ([`Shadows::evaluate`]) and adds 1 to the
//!   (live, proposed) counter of a matrix per proposal, in [`Sharded`] counters like the usage's.
//! - The counts are drained with the usage ([`Shadows::drain_into`]) and named by flag, proposal id
//!   and variant names.

use std::cell::Cell;
use std::sync::Arc;

use serde_json::{Map, Value};
use vexil_engine::{CompileOptions, EvaluationContext, FlagSet, Mode, Position};

use crate::usage::{Sharded, Tally};

/// Counters a snapshot's proposals may use in all ((variants + 1)² each): bounds the memory of a
/// shard (8 bytes a counter) whatever control sends.
pub const MAX_COUNTERS: usize = 1 << 16;

/// A proposal as control sent it (held and persisted as received; checked when compiled).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    /// The live flag's key.
    pub flag: String,
    /// Its id, named in reports.
    pub id: String,
    /// The proposed definition, JSON text.
    pub definition: String,
    /// The share of decisions it is evaluated on, in (0, 1].
    pub sample_ratio: f64,
}

/// An environment's proposals, as held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proposals(pub Vec<Proposal>);

impl Proposals {
    /// No proposals.
    pub fn none() -> Arc<Proposals> {
        Arc::new(Proposals::default())
    }

    /// The proposals of a `Full` frame.
    pub fn from_proto(shadows: &vexil_proto::sync::v1::Shadows) -> Proposals {
        Proposals(
            shadows
                .proposals
                .iter()
                .map(|p| Proposal {
                    flag: p.flag.clone(),
                    id: p.id.clone(),
                    definition: p.definition.clone(),
                    sample_ratio: p.sample_ratio,
                })
                .collect(),
        )
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One shadowed flag of a snapshot.
#[derive(Debug)]
struct Entry {
    /// The proposal's id.
    id: Box<str>,
    /// The proposal's position in [`Shadows::set`].
    shadow: usize,
    /// Sampled when the draw is below this (`sample_ratio` × 2⁵³).
    threshold: u64,
    /// Its first counter: `(live variant) × width + (proposed variant)`, "no value" last.
    offset: usize,
    /// The flag's variants + 1.
    width: usize,
}

/// A snapshot's compiled proposals and their counters.
pub struct Shadows {
    /// The proposals, compiled as flags of a set with the live set's rules and metadata.
    set: FlagSet,
    /// Per live flag position: its entry + 1, 0 for none. Empty when nothing is shadowed.
    by_flag: Box<[u32]>,
    entries: Box<[Entry]>,
    counters: Sharded,
    /// The largest threshold: a draw at or above it samples nothing (0: nothing is shadowed).
    threshold: u64,
    /// Proposals received but not shadowed (see the module's documentation).
    pub skipped: usize,
}

impl std::fmt::Debug for Shadows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadows")
            .field("entries", &self.entries)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

/// A sampled request's draw: which proposals it samples.
#[derive(Clone, Copy, Debug)]
pub struct Sample(u64);

thread_local! {
    /// This thread's generator state (xorshift64*; 0: not seeded yet).
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A uniform 53-bit number from this thread's generator: a few instructions, no lock.
#[inline]
fn draw() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = rand::random::<u64>() | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11
    })
}

/// The threshold of a sample ratio in (0, 1]: a 53-bit draw below it is sampled.
fn threshold(ratio: f64) -> u64 {
    (ratio * (1u64 << 53) as f64) as u64
}

impl Shadows {
    /// Nothing shadowed.
    pub fn none() -> Shadows {
        Shadows {
            set: FlagSet::default(),
            by_flag: Box::new([]),
            entries: Box::new([]),
            counters: Sharded::new(0),
            threshold: 0,
            skipped: 0,
        }
    }

    /// Compiles `proposals` for the snapshot of `live`. Never fails: what cannot be shadowed is
    /// skipped, logged and counted.
    pub fn compile(live: &FlagSet, proposals: &Proposals) -> Shadows {
        if proposals.is_empty() {
            return Shadows::none();
        }
        let mut skipped = 0;
        let skip = |skipped: &mut usize, p: &Proposal, why: &str| {
            tracing::warn!(flag = %p.flag, proposal = %p.id, why, "proposal not shadowed");
            *skipped += 1;
        };
        // The usable proposals' definitions, by flag key (one per flag: the last given).
        let mut definitions = Map::new();
        let mut wanted: Vec<&Proposal> = Vec::new();
        for p in &proposals.0 {
            if live.index_of(&p.flag).is_none() {
                skip(&mut skipped, p, "the flag is not in the snapshot");
                continue;
            }
            if !(p.sample_ratio.is_finite() && p.sample_ratio > 0.0 && p.sample_ratio <= 1.0) {
                skip(&mut skipped, p, "its sample ratio is not in (0, 1]");
                continue;
            }
            match serde_json::from_str::<Value>(&p.definition) {
                Ok(definition @ Value::Object(_)) => {
                    if definitions.insert(p.flag.clone(), definition).is_some() {
                        wanted.retain(|w| w.flag != p.flag);
                        skipped += 1;
                    }
                    wanted.push(p);
                }
                _ => skip(&mut skipped, p, "its definition is not a JSON object"),
            }
        }
        let mut doc = Map::new();
        doc.insert("flags".into(), Value::Object(definitions));
        if !live.evaluators().is_empty() {
            doc.insert(
                "$evaluators".into(),
                Value::Object(live.evaluators().clone()),
            );
        }
        if !live.metadata().is_empty() {
            doc.insert("metadata".into(), Value::Object(live.metadata().clone()));
        }
        let options = CompileOptions {
            mode: Mode::Lenient,
            ..CompileOptions::default()
        };
        let set = match FlagSet::compile(&Value::Object(doc), &options) {
            Ok(set) => set,
            Err(e) => {
                for p in wanted {
                    skip(&mut skipped, p, &e.to_string());
                }
                return Shadows {
                    skipped,
                    ..Shadows::none()
                };
            }
        };
        let mut by_flag = vec![0u32; live.len()];
        let mut entries = Vec::with_capacity(wanted.len());
        let mut offset = 0;
        let mut max = 0;
        let all: Vec<&vexil_engine::Flag> = live.flags().collect();
        for p in wanted {
            let (Some(at), Some(shadow)) = (live.index_of(&p.flag), set.index_of(&p.flag)) else {
                skip(&mut skipped, p, "not compiled");
                continue;
            };
            let proposed = set.flags().nth(shadow).expect("an index of the set");
            if proposed.is_broken() {
                skip(&mut skipped, p, "it does not compile");
                continue;
            }
            if !proposed.variants().eq(all[at].variants()) {
                skip(&mut skipped, p, "its variants are not the live flag's");
                continue;
            }
            let width = proposed.variants().len() + 1;
            if offset + width * width > MAX_COUNTERS {
                skip(
                    &mut skipped,
                    p,
                    "the proposals need more counters than a snapshot may use",
                );
                continue;
            }
            let t = threshold(p.sample_ratio);
            max = max.max(t);
            entries.push(Entry {
                id: p.id.as_str().into(),
                shadow,
                threshold: t,
                offset,
                width,
            });
            by_flag[at] = entries.len() as u32;
            offset += width * width;
        }
        if entries.is_empty() {
            return Shadows {
                skipped,
                ..Shadows::none()
            };
        }
        Shadows {
            set,
            by_flag: by_flag.into(),
            entries: entries.into(),
            counters: Sharded::new(offset),
            threshold: max,
            skipped,
        }
    }

    /// True when no flag is shadowed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.threshold == 0
    }

    /// Flags shadowed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A draw for one request (or one lookup), when it samples any proposal; `None` (the common
    /// case) when it samples none, or nothing is shadowed.
    #[inline]
    pub fn sample(&self) -> Option<Sample> {
        if self.threshold == 0 {
            return None;
        }
        let d = draw();
        (d < self.threshold).then_some(Sample(d))
    }

    /// Whether the flag at `flag` (its position in the live set) has a proposal `sample` samples.
    #[inline]
    pub fn samples(&self, sample: Sample, flag: usize) -> bool {
        match self.by_flag.get(flag) {
            Some(&e) if e > 0 => sample.0 < self.entries[e as usize - 1].threshold,
            _ => false,
        }
    }

    /// Evaluates the proposal of the flag at `flag`, when `sample` samples it, for `ctx`, and
    /// counts the pair with the live decision `live` (its variant position; `None`: no value).
    #[inline]
    pub fn evaluate(
        &self,
        sample: Sample,
        flag: usize,
        live: Option<usize>,
        ctx: &EvaluationContext,
    ) {
        let Some(&e) = self.by_flag.get(flag) else {
            return;
        };
        let Some(entry) = (e as usize)
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
        else {
            return;
        };
        if sample.0 >= entry.threshold {
            return;
        }
        let proposed = self.set.variant_at(entry.shadow, ctx);
        let none = entry.width - 1;
        let (from, to) = (live.unwrap_or(none), proposed.unwrap_or(none));
        if from < entry.width && to < entry.width {
            self.counters.add(entry.offset + from * entry.width + to);
        }
    }

    /// A lookup's decision ([`vexil_engine::Resolution::position`]): sampled and evaluated as
    /// [`Shadows::evaluate`] does.
    #[inline]
    pub fn observe(&self, position: Option<Position>, ctx: &EvaluationContext) {
        if let (Some(p), Some(sample)) = (position, self.sample()) {
            self.evaluate(sample, p.flag, p.variant, ctx);
        }
    }

    /// Moves the counts into `tally`, named after `live` (the set the shadows were compiled for).
    pub fn drain_into(&self, live: &FlagSet, tally: &mut Tally) {
        if self.entries.is_empty() {
            return;
        }
        let all: Vec<&vexil_engine::Flag> = live.flags().collect();
        let mut owner = Vec::with_capacity(self.entries.len());
        for (at, &e) in self.by_flag.iter().enumerate() {
            if e > 0 {
                owner.push((e as usize - 1, at));
            }
        }
        owner.sort_unstable();
        self.counters.drain(|slot, n| {
            let i = self
                .entries
                .partition_point(|entry| entry.offset <= slot)
                .saturating_sub(1);
            let (entry, Some(&(_, at))) = (&self.entries[i], owner.get(i)) else {
                return;
            };
            let flag = all[at];
            let pair = slot - entry.offset;
            let name = |v: usize| flag.variants().nth(v).map(|(name, _)| name);
            tally.add_shadow(
                flag.key(),
                &entry.id,
                name(pair / entry.width),
                name(pair % entry.width),
                n,
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live() -> FlagSet {
        FlagSet::from_json(&json!({
            "$evaluators": {"beta": {"in": [{"var": "plan"}, ["beta"]]}},
            "flags": {
                "a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
                "b": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x"},
                "c": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x"}
            }
        }))
        .unwrap()
    }

    fn proposal(flag: &str, id: &str, definition: Value, ratio: f64) -> Proposal {
        Proposal {
            flag: flag.into(),
            id: id.into(),
            definition: definition.to_string(),
            sample_ratio: ratio,
        }
    }

    #[test]
    fn proposals_are_evaluated_beside_the_live_rule_and_counted_by_pair() {
        let live = live();
        let a_on_for_beta = json!({"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "off", "targeting": {"if": [{"$ref": "beta"}, "on", "off"]}});
        let shadows = Shadows::compile(
            &live,
            &Proposals(vec![
                proposal("a", "00000000000000aa", a_on_for_beta, 1.0),
                // Not shadowed: another flag's variants, a missing flag, broken JSON, a rule
                // that does not compile.
                proposal(
                    "b",
                    "00000000000000bb",
                    json!({"state": "ENABLED", "variants": {"z": 1}, "defaultVariant": "z"}),
                    1.0,
                ),
                proposal("gone", "00000000000000cc", json!({}), 1.0),
                Proposal {
                    definition: "{nope".into(),
                    ..proposal("c", "00000000000000dd", json!({}), 1.0)
                },
            ]),
        );
        assert_eq!((shadows.len(), shadows.skipped), (1, 3));
        let a = live.index_of("a").unwrap();
        let mut beta = EvaluationContext::new();
        beta.insert("plan", "beta");
        let free = EvaluationContext::new();
        for _ in 0..3 {
            let s = shadows.sample().expect("ratio 1 samples every request");
            assert!(shadows.samples(s, a) && !shadows.samples(s, a + 1));
            // Live: "off" (position 0: variants sorted by name, "off", "on").
            shadows.evaluate(s, a, Some(0), &beta);
            shadows.evaluate(s, a, Some(0), &free);
            shadows.evaluate(s, a + 1, Some(0), &free); // "b": no proposal, nothing counted
        }
        let mut tally = Tally::default();
        shadows.drain_into(&live, &mut tally);
        assert_eq!(
            tally.get_shadow("a", "00000000000000aa", Some("off"), Some("on")),
            3
        );
        assert_eq!(
            tally.get_shadow("a", "00000000000000aa", Some("off"), Some("off")),
            3
        );
        assert_eq!(tally.len(), 2);
    }

    #[test]
    fn the_sample_ratio_is_honoured_and_nothing_is_drawn_without_proposals() {
        assert!(Shadows::none().sample().is_none());
        let live = live();
        let same = |ratio| {
            Shadows::compile(
                &live,
                &Proposals(vec![proposal(
                    "b",
                    "0000000000000001",
                    json!({"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "y"}),
                    ratio,
                )]),
            )
        };
        let shadows = same(0.01);
        let n = 200_000;
        let sampled = (0..n).filter(|_| shadows.sample().is_some()).count();
        let share = sampled as f64 / n as f64;
        assert!((0.008..0.012).contains(&share), "{share}");
    }
}
