//! The shadow-evaluation part of the sidecars' usage reports (`UsageReport.shadow`; docs/shadow.md,
//! ADR 0040): checked with the rest of the report ([`check`], a refusal refuses the whole report),
//! added up in memory by environment, flag, proposal, minute and (live, proposed) pair
//! ([`ShadowSums`]), and written to the store with the usage sums (`Store::record_shadow`).
//!
//! Counts of a proposal that is not the flag's current one (replaced, dropped or published while
//! the sidecar was counting, or never there) are left out when written and counted
//! (`vexil_control_shadow_entries_total{result="unknown_proposal"}`): a sidecar legitimately
//! reports an old proposal's last counts after a change, so they cost the report nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use vexil_proto::sync::v1::ShadowUsage;

use super::usage::{MAX_EVALUATIONS, MAX_NAME_BYTES, UsageRefusal};
use crate::model::Millis;
use crate::store::{ShadowRow, is_proposal_id};

/// One checked entry: (flag, proposal, from, to, count).
pub type Entry<'r> = (&'r str, &'r str, Option<&'r str>, Option<&'r str>, u64);

/// (environment, flag, proposal, minute, from, to).
type Key = (
    Arc<str>,
    String,
    String,
    Millis,
    Option<String>,
    Option<String>,
);

/// Checks the shadow entries of a report: valid flag keys, proposal ids and variant names, each
/// (flag, proposal, from, to) once, counts from 1 to [`MAX_EVALUATIONS`].
pub fn check(entries: &[ShadowUsage]) -> Result<Vec<Entry<'_>>, UsageRefusal> {
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let at = || format!("shadow[{i}]");
        if e.flag.len() > MAX_NAME_BYTES {
            return Err(UsageRefusal::Invalid(format!(
                "{}.flag: {} bytes; at most {MAX_NAME_BYTES}",
                at(),
                e.flag.len()
            )));
        }
        if let Some(problem) = vexil_engine::header_key_problem(&e.flag) {
            return Err(UsageRefusal::Invalid(format!("{}.flag: {problem}", at())));
        }
        if !is_proposal_id(&e.proposal) {
            return Err(UsageRefusal::Invalid(format!(
                "{}.proposal: {:?} is not a proposal id (16 lowercase hex digits)",
                at(),
                e.proposal.chars().take(40).collect::<String>()
            )));
        }
        for (field, name) in [("from", &e.from), ("to", &e.to)] {
            if let Some(name) = name
                && (name.is_empty() || name.len() > MAX_NAME_BYTES)
            {
                return Err(UsageRefusal::Invalid(format!(
                    "{}.{field}: 1 to {MAX_NAME_BYTES} bytes (absent for no value), got {}",
                    at(),
                    name.len()
                )));
            }
        }
        let key = (
            e.flag.as_str(),
            e.proposal.as_str(),
            e.from.as_deref(),
            e.to.as_deref(),
        );
        if !seen.insert(key) {
            return Err(UsageRefusal::Invalid(format!(
                "{}: flag {:?}, proposal {}, {:?} -> {:?} appears twice in the report",
                at(),
                e.flag,
                e.proposal,
                e.from,
                e.to
            )));
        }
        if e.evaluations == 0 {
            return Err(UsageRefusal::Invalid(format!(
                "{}.evaluations: must be above 0",
                at()
            )));
        }
        if e.evaluations > MAX_EVALUATIONS {
            return Err(UsageRefusal::AbsurdCount {
                flag: e.flag.clone(),
                variant: e.from.clone(),
                count: e.evaluations,
            });
        }
        out.push((key.0, key.1, key.2, key.3, e.evaluations));
    }
    Ok(out)
}

/// Shadow counts added up in memory, waiting for the store.
#[derive(Debug, Default)]
pub struct ShadowSums {
    sums: HashMap<Key, u64>,
}

impl ShadowSums {
    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Adds checked `entries` of a sidecar of `environment` received in `minute`.
    pub fn add(&mut self, environment: &Arc<str>, entries: Vec<Entry<'_>>, minute: Millis) {
        for (flag, proposal, from, to, n) in entries {
            let key = (
                environment.clone(),
                flag.to_string(),
                proposal.to_string(),
                minute,
                from.map(str::to_string),
                to.map(str::to_string),
            );
            let sum = self.sums.entry(key).or_default();
            *sum = sum.saturating_add(n);
        }
    }

    /// Puts back sums that could not be written (added to what arrived meanwhile).
    pub fn restore(&mut self, other: ShadowSums) {
        for (key, n) in other.sums {
            let sum = self.sums.entry(key).or_default();
            *sum = sum.saturating_add(n);
        }
    }

    /// The sums as rows for the store.
    pub fn rows(&self) -> Vec<ShadowRow> {
        self.sums
            .iter()
            .map(|((env, flag, proposal, minute, from, to), n)| ShadowRow {
                environment: env.to_string(),
                flag: flag.clone(),
                proposal: proposal.clone(),
                minute: *minute,
                from: from.clone(),
                to: to.clone(),
                evaluations: i64::try_from(*n).unwrap_or(i64::MAX),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        flag: &str,
        proposal: &str,
        from: Option<&str>,
        to: Option<&str>,
        n: u64,
    ) -> ShadowUsage {
        ShadowUsage {
            flag: flag.into(),
            proposal: proposal.into(),
            from: from.map(Into::into),
            to: to.map(Into::into),
            evaluations: n,
        }
    }

    const ID: &str = "0123456789abcdef";

    #[test]
    fn entries_are_checked_and_added_up_by_minute() {
        let good = [
            entry("a", ID, Some("off"), Some("on"), 3),
            entry("a", ID, Some("off"), Some("off"), 7),
            entry("a", ID, None, Some("on"), 1),
        ];
        let checked = check(&good).unwrap();
        let mut sums = ShadowSums::default();
        let env: Arc<str> = "prod".into();
        sums.add(&env, checked.clone(), 60_000);
        sums.add(&env, checked, 60_000);
        assert_eq!(sums.len(), 3);
        let rows = sums.rows();
        let row = rows
            .iter()
            .find(|r| r.to.as_deref() == Some("on") && r.from.is_some());
        assert_eq!(row.unwrap().evaluations, 6);
    }

    #[test]
    fn bad_entries_refuse_the_report() {
        let refused = |e: ShadowUsage| check(&[e]).unwrap_err();
        assert_eq!(refused(entry("A", ID, None, None, 1)).label(), "invalid");
        assert_eq!(
            refused(entry("a", "nope", None, None, 1)).label(),
            "invalid"
        );
        assert_eq!(
            refused(entry("a", &ID.to_uppercase(), None, None, 1)).label(),
            "invalid"
        );
        assert_eq!(
            refused(entry("a", ID, Some(""), None, 1)).label(),
            "invalid"
        );
        assert_eq!(refused(entry("a", ID, None, None, 0)).label(), "invalid");
        assert_eq!(
            refused(entry("a", ID, None, None, MAX_EVALUATIONS + 1)).label(),
            "absurd_count"
        );
        let twice = [entry("a", ID, None, None, 1), entry("a", ID, None, None, 2)];
        assert!(check(&twice).unwrap_err().to_string().contains("twice"));
    }
}
