//! The values an expression evaluates to, and JsonLogic's coercion rules over them.
//!
//! Evaluation borrows wherever it can: a `var` returns a reference into the caller's context, a literal a
//! reference into the compiled rule. Only operators that build something new (`cat`, `map`, `merge`, ...)
//! own their result. The coercions follow json-logic-js (the reference every JsonLogic port, flagd's
//! included, mimics): JavaScript truthiness except that an empty array is falsy, JavaScript's abstract
//! and strict equality, relational comparison and `String()`/`Number()` conversions. Where flagd's
//! own reference (its Python core) answers otherwise for a reason other than a Python artefact, it
//! wins; the operator tests (`tests/operators.rs`) list each such case.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::Value;

/// A value produced while evaluating a rule.
#[derive(Clone, Debug)]
pub(crate) enum Val<'a> {
    /// JSON null, and JavaScript's `undefined` (a missing key).
    Null,
    /// A boolean.
    Bool(bool),
    /// A number computed by an operator (JsonLogic numbers are IEEE doubles).
    Num(f64),
    /// A string, borrowed or built.
    Str(Cow<'a, str>),
    /// A number, array or object borrowed from the context or a literal. Numbers stay here so that
    /// `fractional` hashes integers beyond 2^53 exactly.
    Ref(&'a Value),
    /// An array built by an operator.
    Array(Vec<Val<'a>>),
}

impl<'a> Val<'a> {
    /// Borrows a JSON value.
    pub(crate) fn from_json(v: &'a Value) -> Self {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Number(_) | Value::Array(_) | Value::Object(_) => Val::Ref(v),
        }
    }

    /// True for `null`.
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    /// The string, when this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Number of elements, when this is an array.
    pub(crate) fn array_len(&self) -> Option<usize> {
        match self {
            Val::Array(a) => Some(a.len()),
            Val::Ref(Value::Array(a)) => Some(a.len()),
            _ => None,
        }
    }

    /// Element `i` of an array (borrowed or built).
    pub(crate) fn array_get(&self, i: usize) -> Option<Val<'a>> {
        match self {
            Val::Array(a) => a.get(i).cloned(),
            Val::Ref(Value::Array(a)) => a.get(i).map(Val::from_json),
            _ => None,
        }
    }

    /// The elements of an array, as an iterator of values; `None` when this is not an array.
    pub(crate) fn array_iter(&self) -> Option<ArrayIter<'_, 'a>> {
        match self {
            Val::Array(a) => Some(ArrayIter::Built(a.iter())),
            Val::Ref(Value::Array(a)) => Some(ArrayIter::Borrowed(a.iter())),
            _ => None,
        }
    }

    /// One step of `var`: member `key` of an object; element `key` of an array or character `key` of a
    /// string (in code points, as the reference counts them) when `key` is an index; the `length` of
    /// an array or string.
    pub(crate) fn get(&self, key: &str, index: Option<usize>) -> Option<Val<'a>> {
        let length = |n: usize| (key == "length").then_some(Val::Num(n as f64));
        match self {
            Val::Ref(Value::Object(m)) => m.get(key).map(Val::from_json),
            Val::Ref(Value::Array(a)) => match index {
                Some(i) => a.get(i).map(Val::from_json),
                None => length(a.len()),
            },
            Val::Array(a) => match index {
                Some(i) => a.get(i).cloned(),
                None => length(a.len()),
            },
            Val::Str(s) => match index {
                Some(i) => {
                    let (start, c) = s.char_indices().nth(i)?;
                    Some(Val::Str(match s {
                        Cow::Borrowed(whole) => {
                            let whole: &'a str = whole;
                            Cow::Borrowed(&whole[start..start + c.len_utf8()])
                        }
                        Cow::Owned(_) => Cow::Owned(c.to_string()),
                    }))
                }
                None => length(s.chars().count()),
            },
            _ => None,
        }
    }

    /// JsonLogic truthiness: JavaScript's, except that an empty array is falsy.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(n) => *n != 0.0 && !n.is_nan(),
            Val::Str(s) => !s.is_empty(),
            Val::Array(a) => !a.is_empty(),
            Val::Ref(v) => match v {
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            },
        }
    }

    /// JavaScript's `Number(x)`.
    pub(crate) fn to_number(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Num(n) => *n,
            Val::Str(s) => string_to_number(s),
            Val::Ref(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Val::Ref(_) | Val::Array(_) => match self.to_primitive_string() {
                Some(s) => string_to_number(&s),
                None => f64::NAN,
            },
        }
    }

    /// JavaScript's `parseFloat(x)`, which `+` and `*` use: the longest numeric prefix of the string
    /// form, `NaN` for null and booleans.
    pub(crate) fn parse_float(&self) -> f64 {
        match self {
            Val::Num(n) => *n,
            Val::Ref(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Val::Null | Val::Bool(_) => f64::NAN,
            Val::Str(s) => parse_float_prefix(s),
            Val::Ref(_) | Val::Array(_) => match self.to_primitive_string() {
                Some(s) => parse_float_prefix(&s),
                None => f64::NAN,
            },
        }
    }

    /// JavaScript's `String(x)`.
    pub(crate) fn to_js_string(&self) -> Cow<'a, str> {
        match self {
            Val::Str(s) => s.clone(),
            _ => {
                let mut out = String::new();
                self.write_js_string(&mut out);
                Cow::Owned(out)
            }
        }
    }

    /// Appends JavaScript's `String(x)` to `out`.
    pub(crate) fn write_js_string(&self, out: &mut String) {
        match self {
            Val::Null => out.push_str("null"),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Num(n) => write_js_number(*n, out),
            Val::Str(s) => out.push_str(s),
            Val::Ref(v) => write_json_as_js_string(v, out),
            Val::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if !item.is_null() {
                        item.write_js_string(out);
                    }
                }
            }
        }
    }

    /// The primitive (string) form of an array; `None` for an object, whose primitive form is
    /// `"[object Object]"`, a string that never converts to a number.
    fn to_primitive_string(&self) -> Option<String> {
        match self {
            Val::Ref(Value::Object(_)) => None,
            _ => Some(self.to_js_string().into_owned()),
        }
    }

    /// Kind used by the equality and comparison rules.
    fn kind(&self) -> Kind {
        match self {
            Val::Null => Kind::Null,
            Val::Bool(_) => Kind::Bool,
            Val::Num(_) | Val::Ref(Value::Number(_)) => Kind::Num,
            Val::Str(_) => Kind::Str,
            Val::Ref(Value::Object(_)) => Kind::Object,
            Val::Ref(_) | Val::Array(_) => Kind::Array,
        }
    }

    /// JavaScript's strict equality `===`. Arrays and objects compare by reference, as in
    /// json-logic-js: one is equal only to itself (the same value of the context or of the rule
    /// reached twice), never to an equal-looking copy.
    pub(crate) fn strict_eq(&self, other: &Val<'_>) -> bool {
        if let (Val::Str(a), Val::Str(b)) = (self, other) {
            return a == b;
        }
        match (self.kind(), other.kind()) {
            (Kind::Null, Kind::Null) => true,
            (Kind::Bool, Kind::Bool) => self.truthy() == other.truthy(),
            (Kind::Num, Kind::Num) => self.to_number() == other.to_number(),
            (Kind::Str, Kind::Str) => self.as_str() == other.as_str(),
            (Kind::Array, Kind::Array) | (Kind::Object, Kind::Object) => {
                matches!((self, other), (Val::Ref(a), Val::Ref(b)) if std::ptr::eq(*a, *b))
            }
            _ => false,
        }
    }

    /// JavaScript's abstract equality `==`.
    pub(crate) fn loose_eq(&self, other: &Val<'_>) -> bool {
        use Kind::*;
        if let (Val::Str(a), Val::Str(b)) = (self, other) {
            return a == b;
        }
        match (self.kind(), other.kind()) {
            (a, b) if a == b => self.strict_eq(other),
            // Two objects (an array is one) compare by reference.
            (Array, Object) | (Object, Array) => false,
            (Null, _) | (_, Null) => false,
            (Num, Str) | (Str, Num) | (Bool, _) | (_, Bool) => {
                self.to_number() == other.to_number()
            }
            // An array or object against a primitive compares through its string form.
            (Array | Object, _) | (_, Array | Object) => {
                let (composite, prim) = if matches!(self.kind(), Array | Object) {
                    (self, other)
                } else {
                    (other, self)
                };
                match composite.to_primitive_string() {
                    Some(s) => Val::Str(Cow::Owned(s)).loose_eq(prim),
                    None => Val::Str(Cow::Borrowed("[object Object]")).loose_eq(prim),
                }
            }
            _ => false,
        }
    }

    /// JavaScript's relational comparison: strings compare as strings when both are strings (or one
    /// is a string and the other an array or object), everything else as numbers. `None` when a NaN
    /// is involved (every comparison is then false).
    pub(crate) fn js_cmp(&self, other: &Val<'_>) -> Option<Ordering> {
        match (self, other) {
            (Val::Str(a), Val::Str(b)) => Some(cmp_utf16(a, b)),
            // An array or object against a string compares as its string form (JavaScript's
            // ToPrimitive; the reference's to_string).
            (Val::Str(a), b) if matches!(b.kind(), Kind::Array | Kind::Object) => {
                Some(cmp_utf16(a, &b.to_js_string()))
            }
            (a, Val::Str(b)) if matches!(a.kind(), Kind::Array | Kind::Object) => {
                Some(cmp_utf16(&a.to_js_string(), b))
            }
            _ => self.to_number().partial_cmp(&other.to_number()),
        }
    }

    /// Converts to an owned JSON value (used for results handed back to callers).
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => number_to_json(*n),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Ref(v) => (*v).clone(),
            Val::Array(a) => Value::Array(a.iter().map(Val::to_json).collect()),
        }
    }
}

/// Iterator over the elements of a borrowed or built array.
pub(crate) enum ArrayIter<'v, 'a> {
    /// Elements of a built array.
    Built(std::slice::Iter<'v, Val<'a>>),
    /// Elements of a borrowed JSON array.
    Borrowed(std::slice::Iter<'a, Value>),
}

impl<'a> Iterator for ArrayIter<'_, 'a> {
    type Item = Val<'a>;

    fn next(&mut self) -> Option<Val<'a>> {
        match self {
            ArrayIter::Built(it) => it.next().cloned(),
            ArrayIter::Borrowed(it) => it.next().map(Val::from_json),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Num,
    Str,
    Array,
    Object,
}

/// JavaScript compares strings by UTF-16 code units; this differs from byte order only for
/// characters outside the Basic Multilingual Plane.
fn cmp_utf16(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// JavaScript's `Number(string)`: trimmed, empty is 0, otherwise the whole text must be a number.
fn string_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    if t.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// JavaScript's `parseFloat`: the longest prefix of the trimmed text that is a decimal number.
fn parse_float_prefix(s: &str) -> f64 {
    let t = s.trim_start();
    let bytes = t.as_bytes();
    let mut end = 0;
    let mut best = None;
    let mut seen_digit = false;
    let mut seen_dot = false;
    let mut seen_exp = false;
    while end < bytes.len() {
        let c = bytes[end];
        let ok = match c {
            b'0'..=b'9' => {
                seen_digit = true;
                true
            }
            b'+' | b'-' => end == 0 || matches!(bytes[end - 1], b'e' | b'E'),
            b'.' if !seen_dot && !seen_exp => {
                seen_dot = true;
                true
            }
            b'e' | b'E' if seen_digit && !seen_exp => {
                seen_exp = true;
                true
            }
            _ => false,
        };
        if !ok {
            break;
        }
        end += 1;
        if seen_digit && let Ok(v) = t[..end].parse::<f64>() {
            best = Some(v);
        }
    }
    if best.is_none() && t.starts_with("Infinity") {
        return f64::INFINITY;
    }
    best.unwrap_or(f64::NAN)
}

/// Writes a number the way JavaScript's `String(n)` does for the values JSON can carry.
pub(crate) fn write_js_number(n: f64, out: &mut String) {
    if n.is_nan() {
        out.push_str("NaN");
    } else if n.is_infinite() {
        out.push_str(if n > 0.0 { "Infinity" } else { "-Infinity" });
    } else if n.abs() >= 1e21 || (n != 0.0 && n.abs() < 1e-6) {
        // Exponential form, with an explicit sign on the exponent: `1e+21`, `1.5e-7`.
        let text = format!("{n:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp}");
            }
            _ => out.push_str(&text),
        }
    } else if n == n.trunc() {
        // Integral: no fraction (`-0` prints as `0`).
        if n < 0.0 {
            out.push('-');
        }
        let _ = write!(out, "{}", n.abs() as u128);
    } else {
        let _ = write!(out, "{n}");
    }
}

/// `String(x)` for a borrowed JSON number, array or object.
fn write_json_as_js_string(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                write_js_number(n.as_f64().unwrap_or(f64::NAN), out);
            } else {
                let _ = write!(out, "{n}");
            }
        }
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !item.is_null() {
                    write_json_as_js_string(item, out);
                }
            }
        }
        Value::Object(_) => out.push_str("[object Object]"),
    }
}

/// A computed number as JSON: integral values become integers, NaN and infinities null.
pub(crate) fn number_to_json(n: f64) -> Value {
    if n.is_finite() && n == n.trunc() && n.abs() < 9.007_199_254_740_992e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(v))
    }

    #[test]
    fn truthiness_follows_jsonlogic() {
        let empty = json!([]);
        let one = json!([0]);
        let obj = json!({});
        let zero = json!(0);
        assert!(!Val::Null.truthy());
        assert!(!s("").truthy());
        assert!(s("0").truthy());
        assert!(!Val::Num(0.0).truthy());
        assert!(!Val::Num(f64::NAN).truthy());
        assert!(!Val::Ref(&zero).truthy());
        assert!(!Val::Ref(&empty).truthy());
        assert!(Val::Ref(&one).truthy());
        assert!(Val::Ref(&obj).truthy());
        assert!(!Val::Array(vec![]).truthy());
    }

    #[test]
    fn loose_equality_coerces_like_javascript() {
        let one = json!(1);
        let arr = json!([1]);
        assert!(Val::Ref(&one).loose_eq(&s("1")));
        assert!(Val::Num(1.0).loose_eq(&Val::Bool(true)));
        assert!(!Val::Null.loose_eq(&Val::Num(0.0)));
        assert!(Val::Null.loose_eq(&Val::Null));
        assert!(Val::Ref(&arr).loose_eq(&Val::Num(1.0)));
        assert!(s("").loose_eq(&Val::Num(0.0)));
        assert!(!s("a").loose_eq(&Val::Num(0.0)));
    }

    #[test]
    fn strict_equality_compares_numbers_by_value() {
        let int = json!(29);
        let float = json!(29.0);
        assert!(Val::Ref(&int).strict_eq(&Val::Ref(&float)));
        assert!(!Val::Ref(&int).strict_eq(&s("29")));
    }

    #[test]
    fn comparison_uses_strings_only_when_both_are() {
        assert_eq!(s("10").js_cmp(&s("9")), Some(Ordering::Less));
        assert_eq!(s("10").js_cmp(&Val::Num(9.0)), Some(Ordering::Greater));
        assert_eq!(s("a").js_cmp(&Val::Num(9.0)), None);
        assert_eq!(Val::Null.js_cmp(&Val::Num(0.0)), Some(Ordering::Equal));
    }

    #[test]
    fn js_strings() {
        let arr = json!([1, "a", null, [2, 3]]);
        let f = json!(1.5);
        assert_eq!(Val::Ref(&arr).to_js_string(), "1,a,,2,3");
        assert_eq!(Val::Ref(&f).to_js_string(), "1.5");
        assert_eq!(Val::Num(-3.0).to_js_string(), "-3");
        assert_eq!(Val::Num(-0.0).to_js_string(), "0");
        assert_eq!(Val::Num(0.1 + 0.2).to_js_string(), "0.30000000000000004");
        assert_eq!(Val::Null.to_js_string(), "null");
    }

    #[test]
    fn number_conversions() {
        assert_eq!(s(" 12 ").to_number(), 12.0);
        assert!(s("12abc").to_number().is_nan());
        assert_eq!(s("12abc").parse_float(), 12.0);
        assert_eq!(s("1e3x").parse_float(), 1000.0);
        assert!(s("abc").parse_float().is_nan());
        assert!(Val::Null.parse_float().is_nan());
        assert_eq!(Val::Null.to_number(), 0.0);
        assert_eq!(s("").to_number(), 0.0);
        assert_eq!(number_to_json(2.0), json!(2));
        assert_eq!(number_to_json(f64::NAN), Value::Null);
    }
}
