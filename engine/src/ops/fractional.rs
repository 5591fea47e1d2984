//! flagd's `fractional` bucketing: hash a bucketing value to 32 bits, scale it to the total weight, and
//! walk the cumulative weights.
//!
//! Two hash inputs are supported, selected per flag set ([`FractionalVersion`]): v3, the current
//! flagd specification, hashes the deterministic CBOR encoding of any JSON value (so `1.0` and `1`, or
//! maps with reordered keys, land in the same bucket); v2 hashes the UTF-8 bytes of a string. Both
//! use MurmurHash3 x86_32 with seed 0 and `bucket = (hash * total) >> 32`.

use serde_json::Value;

use super::hash::{Cbor, Murmur3, murmur3_32};
use crate::value::Val;

/// The largest total weight flagd accepts (`i32::MAX`).
pub(crate) const MAX_TOTAL_WEIGHT: u64 = i32::MAX as u64;

/// Which `fractional` bucketing algorithm a flag set uses.
///
/// Selected by the flag-set metadata key [`FRACTIONAL_VERSION_KEY`](crate::FRACTIONAL_VERSION_KEY)
/// (`"v2"` or `"v3"`); v3 when absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FractionalVersion {
    /// MurmurHash3 of the UTF-8 bucketing string (flagd before testbed 3.9); only strings can be
    /// bucketed.
    V2,
    /// MurmurHash3 of the deterministic CBOR encoding of the bucketing value (current flagd).
    #[default]
    V3,
}

/// A bucket weight: an integer, however it arrived: a JSON integer, or an integral double (contexts
/// over protobuf carry every number as a double, so `50.0` must weigh like `50`). Negative weights
/// are clamped to 0. `None` for anything else (a fraction, a string, a boolean), which makes the whole
/// `fractional` yield `null`. (flagd-core also rejects integral doubles written as `50.0` in a rule;
/// we treat numbers by value everywhere.)
pub(crate) fn parse_weight(v: &Val<'_>) -> Option<u64> {
    let w = match v {
        Val::Ref(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                i128::from(i)
            } else if let Some(u) = n.as_u64() {
                i128::from(u)
            } else {
                integral(n.as_f64()?)?
            }
        }
        Val::Num(f) => integral(*f)?,
        _ => return None,
    };
    Some(w.clamp(0, i128::from(u64::MAX)) as u64)
}

fn integral(f: f64) -> Option<i128> {
    (f.is_finite() && f == f.trunc()).then_some(f as i128)
}

/// The hash of a bucketing value under `version`; `None` when that version cannot bucket it (v2 takes
/// only strings).
pub(crate) fn hash_value(version: FractionalVersion, value: &Val<'_>) -> Option<u32> {
    match version {
        FractionalVersion::V2 => value.as_str().map(|s| murmur3_32(s.as_bytes(), 0)),
        FractionalVersion::V3 => {
            let mut h = Murmur3::new(0);
            write_cbor(&mut Cbor::new(&mut h), value);
            Some(h.finish())
        }
    }
}

/// The hash of the shorthand form's bucketing value: `flagKey + targetingKey` for v2, the array
/// `[flagKey, targetingKey]` for v3.
pub(crate) fn hash_shorthand(
    version: FractionalVersion,
    flag_key: &str,
    targeting_key: &str,
) -> u32 {
    let mut h = Murmur3::new(0);
    match version {
        FractionalVersion::V2 => {
            h.write(flag_key.as_bytes());
            h.write(targeting_key.as_bytes());
        }
        FractionalVersion::V3 => {
            let mut cbor = Cbor::new(&mut h);
            cbor.array_header(2);
            cbor.text(flag_key);
            cbor.text(targeting_key);
        }
    }
    h.finish()
}

/// Scales a hash to `[0, total)`.
pub(crate) fn bucket(hash: u32, total: u64) -> u64 {
    (u64::from(hash) * total) >> 32
}

/// Writes a value's CBOR encoding, streaming.
fn write_cbor<S: super::hash::Sink>(cbor: &mut Cbor<'_, S>, value: &Val<'_>) {
    match value {
        Val::Null => cbor.null(),
        Val::Bool(b) => cbor.bool(*b),
        Val::Num(n) => cbor.f64(*n),
        Val::Str(s) => cbor.text(s),
        Val::Ref(v) => cbor.json(v),
        Val::Array(items) => {
            cbor.array_header(items.len());
            for item in items {
                write_cbor(cbor, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn weights() {
        let i = json!(50);
        let neg = json!(-5);
        let f = json!(50.5);
        let t = json!(true);
        assert_eq!(parse_weight(&Val::Ref(&i)), Some(50));
        assert_eq!(parse_weight(&Val::Ref(&neg)), Some(0));
        assert_eq!(parse_weight(&Val::Ref(&f)), None);
        let whole = json!(50.0);
        assert_eq!(parse_weight(&Val::Ref(&whole)), Some(50));
        assert_eq!(parse_weight(&Val::Ref(&t)), None);
        assert_eq!(parse_weight(&Val::Bool(true)), None);
        assert_eq!(parse_weight(&Val::Num(20.0)), Some(20));
        assert_eq!(parse_weight(&Val::Num(20.5)), None);
    }

    #[test]
    fn bucket_scales_the_hash() {
        assert_eq!(bucket(0, 100), 0);
        assert_eq!(bucket(u32::MAX, 100), 99);
        assert_eq!(bucket(1 << 31, 100), 50);
    }

    #[test]
    fn shorthand_v3_equals_hashing_the_array() {
        let arr = json!(["flag", "user"]);
        assert_eq!(
            hash_shorthand(FractionalVersion::V3, "flag", "user"),
            hash_value(FractionalVersion::V3, &Val::Ref(&arr)).unwrap()
        );
        assert_eq!(
            hash_shorthand(FractionalVersion::V2, "flag", "user"),
            murmur3_32(b"flaguser", 0)
        );
    }

    #[test]
    fn v2_buckets_only_strings() {
        assert!(hash_value(FractionalVersion::V2, &Val::Num(1.0)).is_none());
        assert!(hash_value(FractionalVersion::V3, &Val::Num(1.0)).is_some());
    }
}
