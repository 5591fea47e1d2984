//! Encoding decisions as headers (docs/headers.md).
//!
//! `vexil-flags` is an RFC 8941 dictionary, one member per decision:
//!
//! | flag value | member | note |
//! |---|---|---|
//! | `true` / `false` | `key=?1` / `key=?0` | `?1` is written out, as docs/headers.md shows; RFC 8941 parsers read it exactly like the canonical bare `key` |
//! | integer | `key=20` | RFC 8941 integers have at most 15 digits; a larger value is not sent |
//! | float | `key=0.5` | a decimal: rounded to 3 fractional digits, at most 12 integer digits, else not sent |
//! | string | `key="dark"` | printable ASCII only; another string is not sent |
//! | object / array | `key=variant` | the variant's name as a token, or as a string when it is not a valid token |
//!
//! A value that cannot be carried faithfully is left out (and logged once per flag set) rather
//! than sent as another type: the downstream then uses its code default, as it would for a missing
//! decision. Members are serialized with `sfv` once per flag set and variant (see
//! [`plan`](crate::dataplane::plan)), never per request.
//!
//! [`FlagsBuilder`] appends members under the byte limit: a member that does not fit is left out
//! whole and counted, and later (shorter) members may still fit. Decisions already present on the
//! request are kept verbatim ([`dictionary_keys`] finds them without allocating per member);
//! [`members_except`] rebuilds the dictionary when a route overrides them.

use serde_json::Value;
use sfv::visitor::{DictionaryVisitor, EntryVisitor, Ignored};
use sfv::{
    Decimal, DictSerializer, Dictionary, Integer, ItemSerializer, KeyRef, Parser, RefBareItem,
    StringRef, TokenRef,
};

/// The decision header.
pub const FLAGS_HEADER: &str = "vexil-flags";
/// The snapshot header: `<environment>@<revision>`.
pub const REVISION_HEADER: &str = "vexil-revision";
/// W3C baggage.
pub const BAGGAGE_HEADER: &str = "baggage";
/// W3C baggage limit on the whole header (bytes).
pub const BAGGAGE_MAX_BYTES: usize = 8192;

/// The RFC 8941 bare-item text for a flag value (`?1`, `20`, `0.5`, `"dark"`, `variant`), or why
/// it cannot be sent.
pub(crate) fn item_text(value: &Value, variant: &str) -> Result<String, &'static str> {
    let item = match value {
        Value::Bool(true) => return Ok("?1".into()),
        Value::Bool(false) => return Ok("?0".into()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => {
                let i = Integer::try_from(i).map_err(|_| "integer beyond 15 digits")?;
                RefBareItem::Integer(i)
            }
            None => {
                let f = n.as_f64().ok_or("number out of range")?;
                let d = Decimal::try_from(f).map_err(|_| "decimal beyond 12 integer digits")?;
                RefBareItem::Decimal(d)
            }
        },
        Value::String(s) => {
            RefBareItem::String(StringRef::from_str(s).map_err(|_| "string not printable ASCII")?)
        }
        Value::Object(_) | Value::Array(_) => match TokenRef::from_str(variant) {
            Ok(t) => RefBareItem::Token(t),
            Err(_) => RefBareItem::String(
                StringRef::from_str(variant).map_err(|_| "variant name not printable ASCII")?,
            ),
        },
        Value::Null => return Err("null value"),
    };
    Ok(ItemSerializer::new().bare_item(item).finish())
}

/// The W3C baggage value (percent-encoded) for a flag value: `true`, `20`, `0.5`, `dark`, or the
/// variant name for objects.
pub(crate) fn baggage_value(value: &Value, variant: &str) -> Option<String> {
    let plain = match value {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Object(_) | Value::Array(_) => variant.to_owned(),
        Value::Null => return None,
    };
    Some(percent_encode_baggage(&plain))
}

/// Percent-encodes everything outside W3C `baggage-octet` (and `%` itself).
fn percent_encode_baggage(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain =
            matches!(b, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        if plain {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

/// Collects the member keys of a dictionary, borrowing them from the input.
struct Keys<'de>(Vec<&'de str>);

impl<'de> DictionaryVisitor<'de> for Keys<'de> {
    type Out = Vec<&'de str>;
    type Error = std::convert::Infallible;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        self.0.push(key.as_str());
        Ok(Ignored)
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.0)
    }
}

/// The keys of an incoming `vexil-flags` dictionary, or `None` when it is not a valid RFC 8941
/// dictionary.
pub(crate) fn dictionary_keys(text: &str) -> Option<Vec<&str>> {
    Parser::new(text)
        .parse_dictionary_with_visitor(Keys(Vec::with_capacity(16)))
        .ok()
}

/// The members of `text` whose key `drop` rejects, re-serialized (for a route that overrides
/// existing decisions); `None` when `text` is not a valid dictionary.
pub(crate) fn members_except(text: &str, drop: impl Fn(&str) -> bool) -> Option<String> {
    let dict: Dictionary = Parser::new(text).parse().ok()?;
    let mut ser = DictSerializer::new();
    ser.members(dict.iter().filter(|(k, _)| !drop(k.as_str())));
    Some(ser.finish().unwrap_or_default())
}

/// Builds a dictionary header value member by member under a byte limit.
#[derive(Debug)]
pub(crate) struct FlagsBuilder {
    buf: String,
    limit: usize,
    /// Members left out because they did not fit.
    pub dropped: u32,
}

impl FlagsBuilder {
    /// Starts from `existing` members (kept verbatim, even beyond the limit).
    pub(crate) fn new(existing: &str, limit: usize, capacity_hint: usize) -> Self {
        let mut buf = String::with_capacity(existing.len() + capacity_hint.min(limit));
        buf.push_str(existing.trim());
        FlagsBuilder {
            buf,
            limit,
            dropped: 0,
        }
    }

    /// Appends `member` (`key=value`) when it fits; counts it as dropped otherwise.
    pub(crate) fn push(&mut self, member: &str) -> bool {
        let sep = if self.buf.is_empty() { 0 } else { 2 };
        if self.buf.len() + sep + member.len() > self.limit {
            self.dropped += 1;
            return false;
        }
        if sep > 0 {
            self.buf.push_str(", ");
        }
        self.buf.push_str(member);
        true
    }

    /// The header value so far.
    pub(crate) fn as_str(&self) -> &str {
        &self.buf
    }

    /// The header value.
    pub(crate) fn finish(self) -> String {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_per_type() {
        assert_eq!(item_text(&json!(true), "on").unwrap(), "?1");
        assert_eq!(item_text(&json!(false), "off").unwrap(), "?0");
        assert_eq!(item_text(&json!(20), "v").unwrap(), "20");
        assert_eq!(item_text(&json!(-7), "v").unwrap(), "-7");
        assert_eq!(item_text(&json!(0.5), "v").unwrap(), "0.5");
        assert_eq!(item_text(&json!(1.0), "v").unwrap(), "1.0");
        assert_eq!(item_text(&json!(0.12345), "v").unwrap(), "0.123");
        assert_eq!(item_text(&json!("dark"), "v").unwrap(), "\"dark\"");
        assert_eq!(item_text(&json!("a\"b\\c"), "v").unwrap(), r#""a\"b\\c""#);
        assert_eq!(item_text(&json!({"a": 1}), "layout-b").unwrap(), "layout-b");
        assert_eq!(item_text(&json!([1]), "2col").unwrap(), "\"2col\"");
        assert!(item_text(&json!("café"), "v").is_err());
        assert!(item_text(&json!(1_000_000_000_000_000i64), "v").is_err());
        assert!(item_text(&json!(1e13), "v").is_err());
        assert!(item_text(&json!({"a": 1}), "é").is_err());
    }

    #[test]
    fn baggage_values() {
        assert_eq!(baggage_value(&json!(true), "on").unwrap(), "true");
        assert_eq!(baggage_value(&json!(2.5), "x").unwrap(), "2.5");
        assert_eq!(
            baggage_value(&json!("a b,c;d%é"), "x").unwrap(),
            "a%20b%2Cc%3Bd%25%C3%A9"
        );
        assert_eq!(baggage_value(&json!({}), "blue").unwrap(), "blue");
    }

    #[test]
    fn keys_of_incoming_dictionaries() {
        assert_eq!(
            dictionary_keys("checkout=?1, theme=\"dark\", limit=20, flag;p=1").unwrap(),
            ["checkout", "theme", "limit", "flag"]
        );
        assert_eq!(dictionary_keys("").unwrap(), Vec::<&str>::new());
        assert!(dictionary_keys("Checkout=1").is_none());
        assert!(dictionary_keys("a=\"unterminated").is_none());
    }

    #[test]
    fn override_keeps_other_members() {
        assert_eq!(
            members_except("a=?1, b=2, c=\"x\"", |k| k == "b").unwrap(),
            "a, c=\"x\""
        );
        assert_eq!(members_except("a=?1", |_| true).unwrap(), "");
        assert!(members_except("A=1", |_| true).is_none());
    }

    #[test]
    fn builder_drops_whole_members_that_do_not_fit() {
        let mut b = FlagsBuilder::new("", 20, 64);
        assert!(b.push("a=?1"));
        assert!(b.push("long=\"0123456\""));
        assert_eq!(b.as_str(), "a=?1, long=\"0123456\"");
        assert!(!b.push("c=?0"));
        assert_eq!(b.dropped, 1);
        let mut b = FlagsBuilder::new("x=1", 12, 64);
        assert!(!b.push("verylong=?1"));
        assert!(b.push("y=2"));
        assert_eq!(b.finish(), "x=1, y=2");
    }
}
