//! Guarded rollouts (ADR 0035, docs/guards.md): a guard compares what the upstream answered to the
//! requests that carried a flag's rollout variant with what it answered to those that carried its
//! baseline variant, and when the rollout is worse beyond a threshold — by a test a reviewer would
//! accept, on a minimum sample per arm — control sets the flag to its safe variant or disables it.
//!
//! This module is the pure part: a guard's definition and its checks, and the sequential test
//! ([`look`]). The counts come from the sidecars' usage reports (`VariantUsage.outcomes`), summed
//! in the store per guard and arm since the guard was armed (`store/guards.rs`); the action is a
//! flag write through the one write path, by the actor [`ACTOR`].
//!
//! **The test.** Looking again and again at growing data inflates false alarms, so looks are made
//! only when the smaller arm has doubled: look `k` once both arms hold `min_sample · 2^k` answers
//! (each `k` at most once), at the one-sided level `alpha / 2^(k+1)`. The levels sum to `alpha`,
//! so over a whole rollout the chance that a guard trips although the rollout is no worse than the
//! threshold is at most `alpha` (a union bound over the looks: alpha spending). Per look:
//! - `error_rate`: failures are 5xx answers and requests without an answer. With shares `pa`
//!   (rollout) and `pb` (baseline), H0: `pa - pb <= threshold`; the Wald statistic
//!   `z = (pa - pb - threshold) / sqrt(pa(1-pa)/na + pb(1-pb)/nb)`, tripping when the normal
//!   upper tail of `z` is below the look's level. (Unpooled: with a threshold above 0 the pooled
//!   variance belongs to a different null hypothesis.)
//! - `latency`: `q`, the baseline's `percentile` from its histogram (the upper bound of its
//!   bucket), and `s`, the share of rollout answers at or above `threshold · q` (counting whole
//!   buckets whose lower bound reaches it: never more than are). A rollout no slower than the
//!   baseline has `s <= 1 - percentile`; H0: `s <= 1 - p`, the one-sample binomial
//!   `z = (s - (1-p)) / sqrt(p(1-p)/na)`.
//!
//! Both errors of the bucketed latency test lean towards not tripping.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use vexil_proto::outcomes::{LATENCY_BUCKETS, NO_ANSWER, SERVER_ERROR, STATUS_CLASSES};

/// The actor of a guard's trip in the audit log.
pub const ACTOR: &str = "guard";

/// Counters per arm: the status classes, then the latency buckets.
pub const BUCKETS: usize = vexil_proto::outcomes::COUNTERS;

/// The counts of one arm.
pub type Counts = [u64; BUCKETS];

/// The signal a guard watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The share of failed requests (5xx answers and requests without an answer).
    ErrorRate,
    /// A percentile of the time to the upstream's answer header.
    Latency,
}

/// What a tripped guard does to its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Serve `safe_variant` to everyone: it becomes the default variant and the targeting goes.
    SetVariant,
    /// Disable the flag (`state: DISABLED`): applications use their code default.
    Disable,
}

/// A guard's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// The variant under rollout.
    pub rollout: String,
    /// The variant it is compared with.
    pub baseline: String,
    /// What is compared.
    pub signal: Signal,
    /// `error_rate`: how much higher the rollout's failure share may be, as a share (0 to 0.5;
    /// 0.02 = two percentage points). `latency`: how many times the baseline's percentile the
    /// rollout's may be (1 to 100).
    pub threshold: f64,
    /// `latency` only: the percentile compared (50 to 99.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Answers each arm needs before the first look (10 to 1,000,000,000).
    pub min_sample: u64,
    /// The chance of a false trip over the whole rollout (0 < alpha ≤ 0.2; default 0.01).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// What a trip does.
    pub action: Action,
    /// `set_variant` only: the variant served after a trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_variant: Option<String>,
}

fn default_alpha() -> f64 {
    0.01
}

impl GuardSpec {
    /// Checks the definition against the flag it guards (`definition`, its flagd JSON); each
    /// problem names its field.
    pub fn check(&self, flag: &str, definition: &Value) -> Result<(), String> {
        let variants: Vec<&str> = definition
            .get("variants")
            .and_then(Value::as_object)
            .map(|v| v.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let has = |field: &str, name: &str| {
            if variants.contains(&name) {
                Ok(())
            } else {
                Err(format!(
                    "{field}: flag {flag:?} has no variant {name:?} (it has: {})",
                    variants.join(", ")
                ))
            }
        };
        has("rollout", &self.rollout)?;
        has("baseline", &self.baseline)?;
        if self.rollout == self.baseline {
            return Err("baseline: must be another variant than rollout".into());
        }
        match self.signal {
            Signal::ErrorRate => {
                if !(0.0..=0.5).contains(&self.threshold) {
                    return Err(format!(
                        "threshold: a share from 0 to 0.5 for error_rate, got {}",
                        self.threshold
                    ));
                }
                if self.percentile.is_some() {
                    return Err("percentile: only for the latency signal".into());
                }
            }
            Signal::Latency => {
                if !(1.0..=100.0).contains(&self.threshold) {
                    return Err(format!(
                        "threshold: a ratio from 1 to 100 for latency, got {}",
                        self.threshold
                    ));
                }
                match self.percentile {
                    Some(p) if (50.0..=99.9).contains(&p) => {}
                    Some(p) => return Err(format!("percentile: 50 to 99.9, got {p}")),
                    None => return Err("percentile: required for the latency signal".into()),
                }
            }
        }
        if !(10..=1_000_000_000).contains(&self.min_sample) {
            return Err(format!(
                "min_sample: 10 to 1000000000, got {}",
                self.min_sample
            ));
        }
        if !(self.alpha > 0.0 && self.alpha <= 0.2) {
            return Err(format!(
                "alpha: above 0 and at most 0.2, got {}",
                self.alpha
            ));
        }
        match (self.action, &self.safe_variant) {
            (Action::SetVariant, Some(safe)) => has("safe_variant", safe)?,
            (Action::SetVariant, None) => {
                return Err("safe_variant: required for the set_variant action".into());
            }
            (Action::Disable, Some(_)) => {
                return Err("safe_variant: only for the set_variant action".into());
            }
            (Action::Disable, None) => {}
        }
        Ok(())
    }

    /// The flag after a trip: `definition` with the action applied.
    pub fn act(&self, definition: &mut Value) {
        let Some(flag) = definition.as_object_mut() else {
            return;
        };
        match (self.action, &self.safe_variant) {
            (Action::SetVariant, Some(safe)) => {
                flag.insert("defaultVariant".into(), Value::from(safe.as_str()));
                flag.remove("targeting");
            }
            _ => {
                flag.insert("state".into(), Value::from("DISABLED"));
            }
        }
    }
}

/// What one arm's counts say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArmFigures {
    /// Requests counted (every status class).
    pub requests: u64,
    /// 5xx answers and requests without an answer.
    pub failures: u64,
    /// `failures / requests` (0 without requests).
    pub failure_share: f64,
    /// Requests with an answer (those in the latency histogram).
    pub answered: u64,
}

impl ArmFigures {
    /// The figures of `counts`.
    pub fn of(counts: &Counts) -> ArmFigures {
        let requests = counts[..STATUS_CLASSES].iter().sum();
        let failures = counts[SERVER_ERROR] + counts[NO_ANSWER];
        ArmFigures {
            requests,
            failures,
            failure_share: share(failures, requests),
            answered: counts[STATUS_CLASSES..].iter().sum(),
        }
    }
}

fn share(part: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        part as f64 / of as f64
    }
}

/// One look of the sequential test, with its figures (kept in the guard's state and, for the look
/// that trips, in the audit entry of the trip).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Look {
    /// The look's number `k` (0 for the first).
    pub k: u32,
    /// Its one-sided significance level, `alpha / 2^(k+1)`.
    pub level: f64,
    /// The rollout arm.
    pub rollout: ArmFigures,
    /// The baseline arm.
    pub baseline: ArmFigures,
    /// `latency`: the baseline's percentile in milliseconds (the upper bound of its bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_percentile_ms: Option<f64>,
    /// `latency`: the share of rollout answers at or above `threshold` times that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_slow_share: Option<f64>,
    /// The test statistic.
    pub z: f64,
    /// The upper tail probability of `z` under the null hypothesis.
    pub p_value: f64,
    /// True when `p_value < level`: the guard trips.
    pub trips: bool,
}

/// The look due for `spec` after `looks_done` looks, given each arm's counts; `None` when no look
/// is due (an arm below the next look's sample).
pub fn look(
    spec: &GuardSpec,
    looks_done: u32,
    rollout: &Counts,
    baseline: &Counts,
) -> Option<Look> {
    let (a, b) = (ArmFigures::of(rollout), ArmFigures::of(baseline));
    let (na, nb) = match spec.signal {
        Signal::ErrorRate => (a.requests, b.requests),
        Signal::Latency => (a.answered, b.answered),
    };
    let smaller = na.min(nb);
    if smaller < spec.min_sample {
        return None;
    }
    // The largest k with min_sample · 2^k <= smaller: the look the data has reached.
    let k = (smaller / spec.min_sample).ilog2();
    if k < looks_done {
        return None;
    }
    let level = spec.alpha / 2f64.powi(k as i32 + 1);
    let (z, percentile_ms, slow_share) = match spec.signal {
        Signal::ErrorRate => {
            let (pa, pb) = (a.failure_share, b.failure_share);
            let var = pa * (1.0 - pa) / na as f64 + pb * (1.0 - pb) / nb as f64;
            (statistic(pa - pb - spec.threshold, var), None, None)
        }
        Signal::Latency => {
            let p = spec.percentile.unwrap_or(99.0) / 100.0;
            let hist = |c: &Counts| -> [u64; LATENCY_BUCKETS] {
                let mut h = [0; LATENCY_BUCKETS];
                h.copy_from_slice(&c[STATUS_CLASSES..]);
                h
            };
            let (ha, hb) = (hist(rollout), hist(baseline));
            // The baseline's percentile: the first bucket where the cumulative count reaches it.
            let wanted = (p * nb as f64).ceil() as u64;
            let mut seen = 0;
            let bucket = hb
                .iter()
                .position(|&n| {
                    seen += n;
                    seen >= wanted.max(1)
                })
                .unwrap_or(LATENCY_BUCKETS - 1);
            let q = vexil_proto::outcomes::upper_bound(bucket)
                .unwrap_or(vexil_proto::outcomes::lower_bound(bucket));
            let slow_from = q.mul_f64(spec.threshold);
            let slow: u64 = (0..LATENCY_BUCKETS)
                .filter(|&k| vexil_proto::outcomes::lower_bound(k) >= slow_from)
                .map(|k| ha[k])
                .sum();
            let s = share(slow, na);
            let var = p * (1.0 - p) / na as f64;
            (
                statistic(s - (1.0 - p), var),
                Some(q.as_secs_f64() * 1000.0),
                Some(s),
            )
        }
    };
    let p_value = upper_tail(z);
    Some(Look {
        k,
        level,
        rollout: a,
        baseline: b,
        baseline_percentile_ms: percentile_ms,
        rollout_slow_share: slow_share,
        z,
        p_value,
        trips: p_value < level,
    })
}

/// `difference / sqrt(variance)`; with no variance (every request alike in both arms) the sign
/// of the difference decides, as an infinitely sure result would.
fn statistic(difference: f64, variance: f64) -> f64 {
    if variance > 0.0 {
        difference / variance.sqrt()
    } else if difference > 0.0 {
        f64::INFINITY
    } else {
        f64::NEG_INFINITY
    }
}

/// P(Z > z) for a standard normal Z.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, to a relative error below 1.2e-7 (a Chebyshev fit after
/// Numerical Recipes' `erfcc`): ten lines instead of a statistics crate for one function, and far
/// more precise than the levels it is compared with need.
fn erfc(x: f64) -> f64 {
    if x.is_infinite() {
        return if x > 0.0 { 0.0 } else { 2.0 };
    }
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use serde_json::json;

    fn spec(threshold: f64, min_sample: u64, alpha: f64) -> GuardSpec {
        GuardSpec {
            rollout: "on".into(),
            baseline: "off".into(),
            signal: Signal::ErrorRate,
            threshold,
            percentile: None,
            min_sample,
            alpha,
            action: Action::SetVariant,
            safe_variant: Some("off".into()),
        }
    }

    fn counts(ok: u64, failed: u64) -> Counts {
        let mut c = [0; BUCKETS];
        c[1] = ok;
        c[SERVER_ERROR] = failed;
        c[STATUS_CLASSES + 3] = ok + failed;
        c
    }

    #[test]
    fn upper_tail_matches_known_quantiles() {
        for (z, p) in [
            (0.0, 0.5),
            (1.644_853_6, 0.05),
            (2.326_347_9, 0.01),
            (3.090_232, 0.001),
        ] {
            assert!(
                (upper_tail(z) - p).abs() < 1e-7 * 10.0,
                "{z}: {}",
                upper_tail(z)
            );
            assert!((upper_tail(-z) - (1.0 - p)).abs() < 1e-6);
        }
        assert_eq!(upper_tail(f64::INFINITY), 0.0);
    }

    #[test]
    fn definitions_are_checked_against_the_flag() {
        let flag = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"});
        assert_eq!(spec(0.02, 100, 0.01).check("f", &flag), Ok(()));
        let bad = |f: &dyn Fn(&mut GuardSpec)| {
            let mut s = spec(0.02, 100, 0.01);
            f(&mut s);
            s.check("f", &flag).unwrap_err()
        };
        assert!(
            bad(&|s| s.rollout = "x".into())
                .starts_with("rollout: flag \"f\" has no variant \"x\" (it has: ")
        );
        assert!(bad(&|s| s.baseline = "on".into()).starts_with("baseline:"));
        assert!(bad(&|s| s.threshold = 0.9).starts_with("threshold:"));
        assert!(bad(&|s| s.min_sample = 5).starts_with("min_sample:"));
        assert!(bad(&|s| s.alpha = 0.0).starts_with("alpha:"));
        assert!(bad(&|s| s.safe_variant = None).starts_with("safe_variant:"));
        assert!(bad(&|s| s.percentile = Some(99.0)).starts_with("percentile:"));
        assert!(
            bad(&|s| {
                s.signal = Signal::Latency;
                s.threshold = 1.5;
            })
            .starts_with("percentile: required")
        );
        assert!(
            bad(&|s| {
                s.action = Action::Disable;
            })
            .starts_with("safe_variant: only")
        );
    }

    #[test]
    fn actions_change_the_flag() {
        let mut flag = json!({"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "on", "targeting": {"if": [true, "on", "off"]}});
        spec(0.0, 10, 0.01).act(&mut flag);
        assert_eq!(flag["defaultVariant"], "off");
        assert!(flag.get("targeting").is_none());
        let mut s = spec(0.0, 10, 0.01);
        s.action = Action::Disable;
        s.safe_variant = None;
        s.act(&mut flag);
        assert_eq!(flag["state"], "DISABLED");
    }

    #[test]
    fn looks_happen_when_the_smaller_arm_doubles() {
        let s = spec(0.0, 100, 0.01);
        assert_eq!(look(&s, 0, &counts(99, 0), &counts(500, 0)), None);
        let first = look(&s, 0, &counts(100, 0), &counts(150, 0)).unwrap();
        assert_eq!((first.k, first.level), (0, 0.005));
        assert!(!first.trips);
        // Look 0 done: nothing until 200 in each arm; then look 1 at alpha/4.
        assert_eq!(look(&s, 1, &counts(190, 0), &counts(400, 0)), None);
        let second = look(&s, 1, &counts(200, 0), &counts(400, 0)).unwrap();
        assert_eq!((second.k, second.level), (1, 0.0025));
        // A jump past several looks makes only the latest.
        assert_eq!(look(&s, 1, &counts(1000, 0), &counts(900, 0)).unwrap().k, 3);
    }

    #[test]
    fn a_failing_rollout_trips_at_its_first_look() {
        // 20 % failures against none, threshold 5 points, 100 answers each: z = 0.15 / 0.04.
        let s = spec(0.05, 100, 0.01);
        let l = look(&s, 0, &counts(80, 20), &counts(100, 0)).unwrap();
        assert!((l.z - 3.75).abs() < 1e-9, "{}", l.z);
        assert!(l.trips, "{l:?}");
        assert_eq!(l.rollout.failures, 20);
        // Within the threshold: no trip.
        let l = look(&s, 0, &counts(96, 4), &counts(100, 0)).unwrap();
        assert!(!l.trips, "{l:?}");
    }

    #[test]
    fn latency_compares_the_rollouts_tail_with_the_baselines_percentile() {
        let mut s = spec(1.5, 100, 0.01);
        s.signal = Signal::Latency;
        s.percentile = Some(90.0);
        let hist = |buckets: &[(usize, u64)]| {
            let mut c = [0; BUCKETS];
            for &(k, n) in buckets {
                c[1] += n;
                c[STATUS_CLASSES + k] += n;
            }
            c
        };
        // Baseline: 90 % in bucket 5, 10 % in bucket 6. Rollout alike: no trip.
        let base = hist(&[(5, 900), (6, 100)]);
        let l = look(&s, 0, &hist(&[(5, 900), (6, 100)]), &base).unwrap();
        assert!(!l.trips, "{l:?}");
        // Bucket 5's upper bound: 1 ms × 1.5^5 (to the microsecond).
        assert!(
            (l.baseline_percentile_ms.unwrap() - 1.5f64.powi(5)).abs() < 0.001,
            "{l:?}"
        );
        // Rollout: 40 % far slower (bucket 9: above 1.5 × bucket 5's bound): trips.
        let l = look(&s, 0, &hist(&[(5, 600), (9, 400)]), &base).unwrap();
        assert!(l.trips, "{l:?}");
        assert_eq!(l.rollout_slow_share, Some(0.4));
    }

    /// Many rollouts where both arms fail alike (5 %), watched until each arm holds 256 times the
    /// minimum sample (9 looks): the share that trips stays within alpha.
    #[test]
    fn false_trips_stay_within_alpha() {
        let mut rng = StdRng::seed_from_u64(7);
        let s = spec(0.0, 50, 0.05);
        let runs = 400;
        let mut tripped = 0;
        for _ in 0..runs {
            let (mut a, mut b) = ([0u64; BUCKETS], [0u64; BUCKETS]);
            let mut looks = 0;
            let mut n = 0;
            while n < 50 * 256 {
                // 25 requests per arm at a time (a report).
                for c in [&mut a, &mut b] {
                    for _ in 0..25 {
                        let class = if rng.random::<f64>() < 0.05 {
                            SERVER_ERROR
                        } else {
                            1
                        };
                        c[class] += 1;
                    }
                }
                n += 25;
                if let Some(l) = look(&s, looks, &a, &b) {
                    looks = l.k + 1;
                    if l.trips {
                        tripped += 1;
                        break;
                    }
                }
            }
        }
        let share = tripped as f64 / runs as f64;
        // alpha 0.05 over 400 runs: about 20 at most expected; the bound allows noise of 2 sd.
        assert!(
            share <= 0.05 + 2.0 * (0.05f64 * 0.95 / runs as f64).sqrt(),
            "{tripped} of {runs}"
        );
    }

    /// A rollout 10 points worse than its baseline (15 % against 5 %) with a 2-point threshold
    /// trips every time, mostly within 4 times the minimum sample.
    #[test]
    fn real_regressions_trip() {
        let mut rng = StdRng::seed_from_u64(11);
        let s = spec(0.02, 100, 0.01);
        let mut trips = Vec::new();
        for _ in 0..50 {
            let (mut a, mut b) = ([0u64; BUCKETS], [0u64; BUCKETS]);
            let mut looks = 0;
            let mut at = None;
            for n in 1..=100 * 16 {
                a[if rng.random::<f64>() < 0.15 {
                    SERVER_ERROR
                } else {
                    1
                }] += 1;
                b[if rng.random::<f64>() < 0.05 {
                    SERVER_ERROR
                } else {
                    1
                }] += 1;
                if let Some(l) = look(&s, looks, &a, &b) {
                    looks = l.k + 1;
                    if l.trips {
                        at = Some(n);
                        break;
                    }
                }
            }
            trips.push(at.expect("a regression of 10 points trips by 16 times the sample"));
        }
        let early = trips.iter().filter(|&&n| n <= 400).count();
        assert!(
            early >= 40,
            "tripped by 400 answers per arm in {early} of 50: {trips:?}"
        );
    }
}
