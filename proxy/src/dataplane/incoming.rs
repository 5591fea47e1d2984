//! Decisions already on a request: which incoming `vexil-flags` members could be this sidecar's
//! own (docs/headers.md, "Call-chain consistency", ADR 0026).
//!
//! A member is kept only when its key is a flag of the current snapshot that the sidecar gives a
//! value (enabled), and its value is exactly one of that flag's variant values as the sidecar
//! itself writes them: same type (boolean, integer, decimal, string, or the variant name of an
//! object flag as a token), same value, no parameters. Anything else is dropped with a
//! [`DropReason`] and the flag is evaluated anew, so a caller can at most choose among the values
//! the flag could have had, never invent one (`discount-rate=99.0`).
//!
//! [`read`] walks the dictionary with `sfv`'s visitor: keys and items are borrowed from the header,
//! the flag is found by binary search in the [`Plan`] and the value compared with the precomputed
//! [`Carried`](crate::dataplane::headers::Carried) values of its variants, so the check itself
//! allocates nothing (strings with escapes and byte sequences are the parser's own copies).

use std::convert::Infallible;

use sfv::visitor::{
    DictionaryVisitor, EntryVisitor, Ignored, InnerListVisitor, ItemVisitor, ParameterVisitor,
};
use sfv::{BareItemFromInput, KeyRef, Parser};

use crate::dataplane::headers::item_kind;
use crate::dataplane::metrics::DropReason;
use crate::dataplane::plan::Plan;

/// Drops by reason (`drops[reason as usize]`).
pub(crate) type Drops = [u32; DropReason::ALL.len()];

/// Flags kept: 256 flags without allocating, more on the heap.
const INLINE_WORDS: usize = 4;

/// A set of flag indices.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlagBits {
    inline: [u64; INLINE_WORDS],
    spill: Vec<u64>,
}

impl FlagBits {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds `index`; false when it was there already.
    pub(crate) fn insert(&mut self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        let slot = if word < INLINE_WORDS {
            &mut self.inline[word]
        } else {
            let at = word - INLINE_WORDS;
            if self.spill.len() <= at {
                self.spill.resize(at + 1, 0);
            }
            &mut self.spill[at]
        };
        let fresh = *slot & bit == 0;
        *slot |= bit;
        fresh
    }

    /// True when `index` is in the set.
    pub(crate) fn contains(&self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        let w = if word < INLINE_WORDS {
            self.inline[word]
        } else {
            self.spill.get(word - INLINE_WORDS).copied().unwrap_or(0)
        };
        w & bit != 0
    }
}

/// What [`read`] found: the flags whose incoming decision was kept, and the drops by reason.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    /// Flags decided by a kept member (not to be evaluated again).
    pub kept: FlagBits,
    /// Members dropped, by reason.
    pub drops: Drops,
    /// Flags whose key was already seen in the header.
    seen: FlagBits,
}

impl Incoming {
    /// Nothing read yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn drop_member(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

/// Reads an incoming `vexil-flags` value against `plan` (`None`: no snapshot yet, every member is
/// an unknown flag). `keep(flag, variant)` is called, in header order, for each member kept;
/// members of flags `skip` accepts (a route that overrides them) are neither kept nor counted.
/// Returns `false` when the value is not a valid dictionary: then whatever `keep` received must be
/// forgotten, and the caller counts the header as malformed.
pub(crate) fn read(
    text: &str,
    plan: Option<&Plan>,
    skip: impl Fn(u32) -> bool,
    into: &mut Incoming,
    keep: impl FnMut(u32, u32),
) -> bool {
    let reader = Reader {
        plan,
        skip,
        into,
        keep,
    };
    Parser::new(text)
        .parse_dictionary_with_visitor(reader)
        .is_ok()
}

struct Reader<'a, S, K> {
    plan: Option<&'a Plan>,
    skip: S,
    into: &'a mut Incoming,
    keep: K,
}

impl<S: Fn(u32) -> bool, K: FnMut(u32, u32)> Reader<'_, S, K> {
    /// The verdict on a member of flag `flag` with value `item` (parameters are checked after).
    fn judge(&self, flag: u32, item: &BareItemFromInput<'_>) -> Result<u32, DropReason> {
        let Some(plan) = self.plan else {
            return Err(DropReason::UnknownFlag);
        };
        let f = &plan.flags[flag as usize];
        if !f.decided {
            return Err(DropReason::Disabled);
        }
        if f.kinds & item_kind(item) == 0 {
            return Err(DropReason::WrongType);
        }
        f.variants
            .iter()
            .position(|v| v.carried.as_ref().is_some_and(|c| c.matches(item)))
            .map(|v| v as u32)
            .ok_or(DropReason::NotAVariant)
    }

    /// Records the outcome of one member.
    fn record(&mut self, flag: u32, verdict: Result<u32, DropReason>) {
        match verdict {
            Ok(variant) => {
                self.into.kept.insert(flag);
                (self.keep)(flag, variant);
            }
            Err(reason) => self.into.drop_member(reason),
        }
    }
}

/// Where a member stands once its key is read.
enum Start {
    /// Judge its value.
    Judge(u32),
    /// Already decided: drop it for this reason.
    Drop(DropReason),
    /// A flag the route overrides: ignore it.
    Skip,
}

impl<'de, S: Fn(u32) -> bool, K: FnMut(u32, u32)> DictionaryVisitor<'de> for Reader<'_, S, K> {
    type Out = ();
    type Error = Infallible;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        let start = match self.plan.and_then(|p| p.find(key.as_str())) {
            None => Start::Drop(DropReason::UnknownFlag),
            Some(flag) if (self.skip)(flag) => Start::Skip,
            Some(flag) if !self.into.seen.insert(flag) => Start::Drop(DropReason::Duplicate),
            Some(flag) => Start::Judge(flag),
        };
        Ok(Entry {
            reader: self,
            start,
        })
    }

    fn finish(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct Entry<'r, 'a, S, K> {
    reader: &'r mut Reader<'a, S, K>,
    start: Start,
}

impl<'de, S: Fn(u32) -> bool, K: FnMut(u32, u32)> EntryVisitor<'de> for Entry<'_, '_, S, K> {
    type Error = Infallible;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        Ok(self)
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        match self.start {
            Start::Skip => {}
            Start::Drop(reason) => self.reader.into.drop_member(reason),
            Start::Judge(_) => self.reader.into.drop_member(DropReason::Malformed),
        }
        Ok(Ignored)
    }
}

impl<'de, S: Fn(u32) -> bool, K: FnMut(u32, u32)> ItemVisitor<'de> for Entry<'_, '_, S, K> {
    type Out = ();
    type Error = Infallible;

    fn bare_item(
        self,
        item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = ()>, Self::Error> {
        let verdict = match self.start {
            Start::Judge(flag) => Some((flag, self.reader.judge(flag, &item))),
            Start::Drop(reason) => {
                self.reader.into.drop_member(reason);
                None
            }
            Start::Skip => None,
        };
        Ok(Params {
            reader: self.reader,
            verdict,
            parameters: false,
        })
    }
}

/// The parameters of a member being judged: a member with any is not a sidecar's.
struct Params<'r, 'a, S, K> {
    reader: &'r mut Reader<'a, S, K>,
    verdict: Option<(u32, Result<u32, DropReason>)>,
    parameters: bool,
}

impl<'de, S: Fn(u32) -> bool, K: FnMut(u32, u32)> ParameterVisitor<'de> for Params<'_, '_, S, K> {
    type Out = ();
    type Error = Infallible;

    fn parameter(
        &mut self,
        _key: &'de KeyRef,
        _value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        self.parameters = true;
        Ok(())
    }

    fn finish(self) -> Result<(), Self::Error> {
        if let Some((flag, verdict)) = self.verdict {
            let verdict = if self.parameters {
                Err(DropReason::Malformed)
            } else {
                verdict
            };
            self.reader.record(flag, verdict);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::config::DataPlaneConfig;
    use crate::dataplane::metrics::DataPlaneMetrics;
    use crate::dataplane::plan::{Route, Router};
    use crate::snapshot::{Snapshot, Source};
    use serde_json::json;
    use std::sync::Arc;
    use vexil_engine::FlagSet;

    fn plan() -> Plan {
        let set = FlagSet::from_json(&json!({"flags": {
            "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                "defaultVariant": "off"},
            "discount-rate": {"state": "ENABLED", "variants": {"none": 0.0, "some": 0.15},
                "defaultVariant": "none"},
            "layout": {"state": "ENABLED", "variants": {"grid": {"cols": 3}, "list": {"cols": 1}},
                "defaultVariant": "grid"},
            "limit": {"state": "ENABLED", "variants": {"low": 20, "high": 100},
                "defaultVariant": "low"},
            "off-flag": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
            "theme": {"state": "ENABLED", "variants": {"dark": "dark", "light": "light"},
                "defaultVariant": "dark"}
        }}))
        .unwrap();
        let snapshot = Arc::new(Snapshot::new("prod", 1, set, Source::File("f".into())));
        let config = DataPlaneConfig::from_toml_str("").unwrap();
        Plan::build(
            snapshot,
            &Router::new(&config),
            &config.headers,
            &DataPlaneMetrics::unregistered(),
        )
    }

    /// Kept members as the sidecar writes them, and drops by reason label.
    type Read = (Vec<String>, Vec<(&'static str, u32)>);

    /// What [`read`] keeps and drops, or `None` when the header is invalid.
    fn read_all(plan: Option<&Plan>, text: &str, skip: impl Fn(u32) -> bool) -> Option<Read> {
        let mut kept = Vec::new();
        let mut incoming = Incoming::new();
        let ok = read(text, plan, skip, &mut incoming, |f, v| {
            let p = plan.unwrap();
            kept.push(
                p.flags[f as usize].variants[v as usize]
                    .member
                    .as_deref()
                    .unwrap()
                    .to_owned(),
            );
        });
        let drops = DropReason::ALL
            .iter()
            .filter(|r| incoming.drops[**r as usize] > 0)
            .map(|r| (r.as_str(), incoming.drops[*r as usize]))
            .collect();
        ok.then_some((kept, drops))
    }

    #[test]
    fn keeps_only_variant_values_of_known_flags() {
        let plan = plan();
        let (kept, drops) = read_all(
            Some(&plan),
            "checkout=?1, discount-rate=99.0, limit=100, theme=\"blue\", layout=list, other=5",
            |_| false,
        )
        .unwrap();
        assert_eq!(kept, ["checkout=?1", "limit=100", "layout=list"]);
        assert_eq!(drops, [("unknown_flag", 1), ("not_a_variant", 2)]);
    }

    #[test]
    fn the_forged_discount_is_not_a_variant_and_the_real_ones_are() {
        let plan = plan();
        let read = |t| read_all(Some(&plan), t, |_| false).unwrap();
        assert_eq!(read("discount-rate=99.0").1, [("not_a_variant", 1)]);
        assert_eq!(read("discount-rate=0.15").0, ["discount-rate=0.15"]);
        // Another spelling of a variant value is that value, written the sidecar's way.
        assert_eq!(read("discount-rate=0.150").0, ["discount-rate=0.15"]);
        assert_eq!(read("discount-rate=0.0").0, ["discount-rate=0.0"]);
        // A bare key is `?1`.
        assert_eq!(read("checkout").0, ["checkout=?1"]);
    }

    #[test]
    fn wrong_types_are_dropped() {
        let plan = plan();
        for forged in [
            "discount-rate=0",
            "discount-rate=\"0.0\"",
            "checkout=1",
            "checkout=\"true\"",
            "limit=20.0",
            "limit=\"20\"",
            "theme=dark",
            "layout=\"list\"",
            "theme=:ZGFyaw==:",
            "limit=@1700000000",
            "theme=%\"dark\"",
        ] {
            let (kept, drops) = read_all(Some(&plan), forged, |_| false).unwrap();
            assert!(kept.is_empty(), "{forged}");
            assert_eq!(drops, [("wrong_type", 1)], "{forged}");
        }
    }

    #[test]
    fn parameters_inner_lists_duplicates_and_disabled_flags_are_dropped() {
        let plan = plan();
        let (kept, drops) = read_all(
            Some(&plan),
            "checkout=?1;by=attacker, limit=(20 100), theme=\"dark\", theme=\"light\", off-flag",
            |_| false,
        )
        .unwrap();
        assert_eq!(kept, ["theme=\"dark\""]);
        assert_eq!(drops, [("malformed", 2), ("disabled", 1), ("duplicate", 1)]);
        // A duplicate of a dropped member does not get a second chance.
        let (kept, drops) = read_all(Some(&plan), "limit=7, limit=100", |_| false).unwrap();
        assert!(kept.is_empty());
        assert_eq!(drops, [("not_a_variant", 1), ("duplicate", 1)]);
    }

    #[test]
    fn invalid_dictionaries_and_no_snapshot() {
        let plan = plan();
        assert!(read_all(Some(&plan), "Checkout=1", |_| false).is_none());
        assert!(read_all(Some(&plan), "a=\"unterminated", |_| false).is_none());
        assert_eq!(
            read_all(Some(&plan), "", |_| false).unwrap(),
            (vec![], vec![])
        );
        let (kept, drops) = read_all(None, "checkout=?1, limit=20", |_| false).unwrap();
        assert!(kept.is_empty());
        assert_eq!(drops, [("unknown_flag", 2)]);
    }

    #[test]
    fn overridden_flags_are_skipped_and_others_kept() {
        let plan = plan();
        let limit = plan.find("limit").unwrap();
        let (kept, drops) = read_all(
            Some(&plan),
            "checkout=?1, limit=100, theme=\"light\"",
            |f| f == limit,
        )
        .unwrap();
        assert_eq!(kept, ["checkout=?1", "theme=\"light\""]);
        assert!(drops.is_empty());
        assert!(plan.selects(Route::Default, limit));
        assert!(!plan.selects(Route::Unmatched, limit));
    }

    #[test]
    fn flag_bits_spill_past_the_inline_words() {
        let mut bits = FlagBits::new();
        assert!(bits.insert(3));
        assert!(!bits.insert(3));
        assert!(bits.insert(1000));
        assert!(bits.contains(3) && bits.contains(1000));
        assert!(!bits.contains(4) && !bits.contains(999) && !bits.contains(70_000));
    }
}
