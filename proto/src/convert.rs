//! JSON ([`serde_json`]) ⇄ `google.protobuf.Struct` / `Value` ([`prost_types`]).
//!
//! flagd's gRPC API carries evaluation contexts, object values and metadata as `Struct`s, whose
//! only number type is a double. The conversions therefore follow protobuf's JSON mapping:
//!
//! - JSON → `Struct`: every number becomes an `f64` (integers beyond ±2^53 lose precision, as
//!   they do in any protobuf client).
//! - `Struct` → JSON: by default ([`NumberMode::Double`]) every number stays an `f64` JSON number,
//!   so `29` sent by a client arrives as `29.0`. This is deliberate: the engine compares numbers by
//!   value (`29.0 == 29`) and normalises whole doubles where it matters (`sem_ver`, `fractional`),
//!   so no guess is made here about which doubles "were" integers. Callers that want integers back
//!   ask for [`NumberMode::WholeAsInteger`]: a finite double without a fractional part that fits
//!   an `i64` becomes a JSON integer.
//! - Non-finite doubles (NaN, ±infinity) have no JSON form and become `null`.
//! - A `Value` without a kind (not valid protobuf JSON, but decodable) becomes `null`.
//!
//! Borrowing (`struct_to_json`) and consuming (`struct_into_json`) forms exist; the consuming
//! ones move strings instead of copying them, for the gRPC hot path.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// How `Struct` numbers (always doubles) are turned into JSON numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NumberMode {
    /// Keep every number an `f64` JSON number (`29.0` stays `29.0`). The default.
    #[default]
    Double,
    /// Turn finite whole doubles that fit an `i64` into JSON integers (`29.0` → `29`); other
    /// numbers stay `f64`.
    WholeAsInteger,
}

/// Converts a `Struct` into a JSON object, keeping numbers as `f64` ([`NumberMode::Double`]).
pub fn struct_to_json(s: &Struct) -> Map<String, Json> {
    struct_to_json_with(s, NumberMode::Double)
}

/// Converts a `Struct` into a JSON object with the given number mode.
pub fn struct_to_json_with(s: &Struct, mode: NumberMode) -> Map<String, Json> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json_with(v, mode)))
        .collect()
}

/// Converts a `Struct` into a JSON object, moving its strings ([`NumberMode::Double`]).
pub fn struct_into_json(s: Struct) -> Map<String, Json> {
    struct_into_json_with(s, NumberMode::Double)
}

/// Converts a `Struct` into a JSON object with the given number mode, moving its strings.
pub fn struct_into_json_with(s: Struct, mode: NumberMode) -> Map<String, Json> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_into_json_with(v, mode)))
        .collect()
}

/// Converts a `Value` into JSON, keeping numbers as `f64` ([`NumberMode::Double`]).
pub fn value_to_json(v: &Value) -> Json {
    value_to_json_with(v, NumberMode::Double)
}

/// Converts a `Value` into JSON with the given number mode.
pub fn value_to_json_with(v: &Value, mode: NumberMode) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n, mode),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json_with(s, mode)),
        Some(Kind::ListValue(l)) => Json::Array(
            l.values
                .iter()
                .map(|v| value_to_json_with(v, mode))
                .collect(),
        ),
    }
}

/// Converts a `Value` into JSON, moving its strings ([`NumberMode::Double`]).
pub fn value_into_json(v: Value) -> Json {
    value_into_json_with(v, NumberMode::Double)
}

/// Converts a `Value` into JSON with the given number mode, moving its strings.
pub fn value_into_json_with(v: Value, mode: NumberMode) -> Json {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::NumberValue(n)) => number_to_json(n, mode),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::StructValue(s)) => Json::Object(struct_into_json_with(s, mode)),
        Some(Kind::ListValue(l)) => Json::Array(
            l.values
                .into_iter()
                .map(|v| value_into_json_with(v, mode))
                .collect(),
        ),
    }
}

/// Converts one `Struct` number into a JSON value: `null` when it is not finite.
pub fn number_to_json(n: f64, mode: NumberMode) -> Json {
    if mode == NumberMode::WholeAsInteger
        && let Some(i) = whole_f64_to_i64(n)
    {
        return Json::Number(Number::from(i));
    }
    Number::from_f64(n).map_or(Json::Null, Json::Number)
}

/// `Some(i)` when `n` is finite, has no fractional part and lies within `i64`'s range.
fn whole_f64_to_i64(n: f64) -> Option<i64> {
    // 2^63 is exactly representable; every whole double in [-2^63, 2^63) fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if n.is_finite() && n.fract() == 0.0 && (-LIMIT..LIMIT).contains(&n) {
        #[allow(clippy::cast_possible_truncation)] // checked: whole and within range
        Some(n as i64)
    } else {
        None
    }
}

/// Converts a JSON object into a `Struct` (numbers become `f64`).
pub fn json_to_struct(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// Converts a JSON object into a `Struct`, moving its strings (numbers become `f64`).
pub fn json_into_struct(map: Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_into_value(v)))
            .collect(),
    }
}

/// Converts a JSON value into a `Value` (numbers become `f64`).
pub fn json_to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(json_number_to_f64(n)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

/// Converts a JSON value into a `Value`, moving its strings (numbers become `f64`).
pub fn json_into_value(v: Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(json_number_to_f64(&n)),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(json_into_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(json_into_struct(o)),
    };
    Value { kind: Some(kind) }
}

/// A JSON number as `f64`. Every `serde_json::Number` has an `f64` form (integers round to the
/// nearest double); the fallback only guards against a future `Number` representation.
fn json_number_to_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn round_trip_keeps_everything_but_integer_ness() {
        let src = obj(json!({
            "targetingKey": "user-1",
            "age": 29,
            "ratio": 0.25,
            "neg": -7,
            "admin": true,
            "nothing": null,
            "tags": ["a", 1, false, null, {"x": [2.5]}],
            "nested": {"deep": {"deeper": {"s": "ü", "n": 1e300}}},
            "empty_obj": {},
            "empty_list": []
        }));
        let s = json_to_struct(&src);
        assert_eq!(s, json_into_struct(src.clone()));

        // Default: numbers stay doubles; equal as numbers, not as JSON integers.
        let back = struct_to_json(&s);
        assert_eq!(back["age"], json!(29.0));
        assert!(back["age"].is_f64());
        assert_eq!(back["tags"][1], json!(1.0));
        assert_eq!(back, struct_into_json(s.clone()));

        // Asked for: whole doubles come back as integers, and the whole document is identical.
        let exact = struct_to_json_with(&s, NumberMode::WholeAsInteger);
        assert_eq!(exact["ratio"], json!(0.25));
        assert_eq!(exact["nested"]["deep"]["deeper"]["n"], json!(1e300)); // beyond i64: f64
        assert_eq!(exact, src);
        assert_eq!(exact, struct_into_json_with(s, NumberMode::WholeAsInteger));
    }

    #[test]
    fn numbers_become_doubles_in_struct() {
        let v = json_to_value(&json!(29));
        assert_eq!(v.kind, Some(Kind::NumberValue(29.0)));
        let big = json_to_value(&json!(u64::MAX));
        assert_eq!(big.kind, Some(Kind::NumberValue(u64::MAX as f64)));
        assert_eq!(
            json_into_value(json!(-3)).kind,
            Some(Kind::NumberValue(-3.0))
        );
    }

    #[test]
    fn non_finite_and_kindless_values_become_null() {
        for n in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let v = Value {
                kind: Some(Kind::NumberValue(n)),
            };
            assert_eq!(value_to_json(&v), Json::Null);
            assert_eq!(
                value_to_json_with(&v, NumberMode::WholeAsInteger),
                Json::Null
            );
            assert_eq!(value_into_json(v), Json::Null);
        }
        assert_eq!(value_to_json(&Value { kind: None }), Json::Null);
        assert_eq!(
            value_to_json(&Value {
                kind: Some(Kind::NullValue(0))
            }),
            Json::Null
        );
    }

    #[test]
    fn whole_as_integer_bounds() {
        let int = |n: f64| number_to_json(n, NumberMode::WholeAsInteger);
        assert_eq!(int(29.0), json!(29));
        assert!(int(29.0).is_i64());
        assert_eq!(int(-0.0), json!(0));
        assert_eq!(int(29.5), json!(29.5));
        assert_eq!(int(-9_223_372_036_854_775_808.0), json!(i64::MIN));
        // 2^63 does not fit an i64: stays a double.
        assert!(int(9_223_372_036_854_775_808.0).is_f64());
        assert!(number_to_json(29.0, NumberMode::Double).is_f64());
    }

    #[test]
    fn string_and_bool_values() {
        assert_eq!(value_to_json(&json_to_value(&json!("x"))), json!("x"));
        assert_eq!(value_to_json(&json_to_value(&json!(false))), json!(false));
        assert_eq!(
            value_into_json(json_into_value(json!(["a", {"b": null}]))),
            json!(["a", {"b": null}])
        );
    }
}
