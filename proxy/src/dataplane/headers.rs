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
//! request are kept only when they could be this sidecar's own (see
//! [`incoming`](crate::dataplane::incoming)), and then written in the sidecar's own spelling.
//!
//! Baggage members whose key starts with the configured prefix are the sidecar's too:
//! [`baggage_without_prefix`] removes them (from untrusted peers, and before the sidecar writes
//! its own), whatever their case or percent-encoding, keeping every other member as it was.

use serde_json::Value;
use sfv::{BareItemFromInput, Decimal, Integer, ItemSerializer, RefBareItem, StringRef, TokenRef};

/// The decision header.
pub const FLAGS_HEADER: &str = "vexil-flags";
/// The snapshot header: `<environment>@<revision>`.
pub const REVISION_HEADER: &str = "vexil-revision";
/// W3C baggage.
pub const BAGGAGE_HEADER: &str = "baggage";
/// W3C baggage limit on the whole header (bytes).
pub const BAGGAGE_MAX_BYTES: usize = 8192;

/// A flag value as it travels in `vexil-flags`: the bare item of its member. Precomputed per
/// variant (see [`plan`](crate::dataplane::plan)), so an incoming member is compared with the
/// variants of its flag without allocating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Carried {
    /// `?1` / `?0`.
    Bool(bool),
    /// An integer of at most 15 digits.
    Integer(Integer),
    /// A decimal (3 fractional digits at most).
    Decimal(Decimal),
    /// A printable-ASCII string.
    String(Box<str>),
    /// A token: the variant name of an object or array flag.
    Token(Box<str>),
}

/// Bit of an item type in [`Carried::kind`] masks.
pub(crate) mod kind {
    /// Boolean.
    pub const BOOL: u8 = 1;
    /// Integer.
    pub const INTEGER: u8 = 2;
    /// Decimal.
    pub const DECIMAL: u8 = 4;
    /// String.
    pub const STRING: u8 = 8;
    /// Token.
    pub const TOKEN: u8 = 16;
}

impl Carried {
    /// How `value` (of variant `variant`) is carried, or why it cannot be.
    pub(crate) fn of(value: &Value, variant: &str) -> Result<Carried, &'static str> {
        Ok(match value {
            Value::Bool(b) => Carried::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => {
                    Carried::Integer(Integer::try_from(i).map_err(|_| "integer beyond 15 digits")?)
                }
                None => {
                    let f = n.as_f64().ok_or("number out of range")?;
                    Carried::Decimal(
                        Decimal::try_from(f).map_err(|_| "decimal beyond 12 integer digits")?,
                    )
                }
            },
            Value::String(s) => {
                StringRef::from_str(s).map_err(|_| "string not printable ASCII")?;
                Carried::String(s.as_str().into())
            }
            Value::Object(_) | Value::Array(_) => match TokenRef::from_str(variant) {
                Ok(_) => Carried::Token(variant.into()),
                Err(_) => {
                    StringRef::from_str(variant).map_err(|_| "variant name not printable ASCII")?;
                    Carried::String(variant.into())
                }
            },
            Value::Null => return Err("null value"),
        })
    }

    /// The RFC 8941 bare-item text (`?1`, `20`, `0.5`, `"dark"`, `variant`).
    pub(crate) fn text(&self) -> String {
        let item = match self {
            Carried::Bool(true) => return "?1".into(),
            Carried::Bool(false) => return "?0".into(),
            Carried::Integer(i) => RefBareItem::Integer(*i),
            Carried::Decimal(d) => RefBareItem::Decimal(*d),
            // Checked in `of`.
            Carried::String(s) => match StringRef::from_str(s) {
                Ok(s) => RefBareItem::String(s),
                Err(_) => return String::new(),
            },
            Carried::Token(t) => match TokenRef::from_str(t) {
                Ok(t) => RefBareItem::Token(t),
                Err(_) => return String::new(),
            },
        };
        ItemSerializer::new().bare_item(item).finish()
    }

    /// The type bit of this value ([`kind`]).
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Carried::Bool(_) => kind::BOOL,
            Carried::Integer(_) => kind::INTEGER,
            Carried::Decimal(_) => kind::DECIMAL,
            Carried::String(_) => kind::STRING,
            Carried::Token(_) => kind::TOKEN,
        }
    }

    /// True when the incoming bare item is this value (same type, same value).
    pub(crate) fn matches(&self, item: &BareItemFromInput<'_>) -> bool {
        match (self, item) {
            (Carried::Bool(a), BareItemFromInput::Boolean(b)) => a == b,
            (Carried::Integer(a), BareItemFromInput::Integer(b)) => a == b,
            (Carried::Decimal(a), BareItemFromInput::Decimal(b)) => a == b,
            (Carried::String(a), BareItemFromInput::String(b)) => **a == *b.as_str(),
            (Carried::Token(a), BareItemFromInput::Token(b)) => **a == *b.as_str(),
            _ => false,
        }
    }
}

/// The type bit of an incoming bare item ([`kind`]); 0 for types a sidecar never writes (byte
/// sequences, dates, display strings).
pub(crate) fn item_kind(item: &BareItemFromInput<'_>) -> u8 {
    match item {
        BareItemFromInput::Boolean(_) => kind::BOOL,
        BareItemFromInput::Integer(_) => kind::INTEGER,
        BareItemFromInput::Decimal(_) => kind::DECIMAL,
        BareItemFromInput::String(_) => kind::STRING,
        BareItemFromInput::Token(_) => kind::TOKEN,
        _ => 0,
    }
}

/// The RFC 8941 bare-item text for a flag value (`?1`, `20`, `0.5`, `"dark"`, `variant`), or why
/// it cannot be sent.
#[cfg(test)]
pub(crate) fn item_text(value: &Value, variant: &str) -> Result<String, &'static str> {
    Carried::of(value, variant).map(|c| c.text())
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

/// True when the key of baggage member `member` starts with `prefix`, compared
/// case-insensitively and after percent-decoding (some baggage libraries decode keys, so
/// `VEXIL.x` or `vexil%2Ex` must not pass for a foreign member).
pub(crate) fn baggage_key_has_prefix(member: &str, prefix: &str) -> bool {
    let key = member.split(['=', ';']).next().unwrap_or("").trim();
    let mut bytes = key.bytes();
    for want in prefix.bytes() {
        let b = match bytes.next() {
            Some(b'%') => {
                let hex = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
                match (hex(bytes.next()), hex(bytes.next())) {
                    (Some(h), Some(l)) => (h * 16 + l) as u8,
                    _ => return false,
                }
            }
            Some(b) => b,
            None => return false,
        };
        if !b.eq_ignore_ascii_case(&want) {
            return false;
        }
    }
    true
}

/// `value` (a `baggage` header, possibly several lines joined) without the members whose key starts
/// with `prefix`; `None` when there is none. The other members are kept as they were.
pub(crate) fn baggage_without_prefix(value: &str, prefix: &str) -> Option<String> {
    if !value.split(',').any(|m| baggage_key_has_prefix(m, prefix)) {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    for member in value.split(',').map(str::trim) {
        if member.is_empty() || baggage_key_has_prefix(member, prefix) {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
    }
    Some(out)
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

/// Builds a dictionary header value member by member under a byte limit.
#[derive(Debug)]
pub(crate) struct FlagsBuilder {
    buf: String,
    limit: usize,
    /// Members left out because they did not fit.
    pub dropped: u32,
}

impl FlagsBuilder {
    /// An empty header value (`capacity_hint` bytes reserved, at most the limit).
    pub(crate) fn new(limit: usize, capacity_hint: usize) -> Self {
        FlagsBuilder {
            buf: String::with_capacity(capacity_hint.min(limit)),
            limit,
            dropped: 0,
        }
    }

    /// Appends a member kept from the incoming request, even beyond the limit.
    pub(crate) fn push_kept(&mut self, member: &str) {
        if !self.buf.is_empty() {
            self.buf.push_str(", ");
        }
        self.buf.push_str(member);
    }

    /// Forgets every member (an incoming header that turned out invalid).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
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
    #[cfg(test)]
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
    fn carried_values_match_incoming_items_of_their_type_only() {
        use std::borrow::Cow;
        let dec = |f: f64| BareItemFromInput::Decimal(Decimal::try_from(f).unwrap());
        let int = |i: i64| BareItemFromInput::Integer(Integer::try_from(i).unwrap());
        let string = |s: &'static str| {
            BareItemFromInput::String(Cow::Borrowed(StringRef::from_str(s).unwrap()))
        };
        let token = |t: &'static str| BareItemFromInput::Token(TokenRef::from_str(t).unwrap());
        let rate = Carried::of(&json!(0.0), "none").unwrap();
        assert_eq!(rate.kind(), kind::DECIMAL);
        assert!(rate.matches(&dec(0.0)));
        assert!(!rate.matches(&dec(99.0)));
        assert!(!rate.matches(&int(0)), "an integer is not a decimal");
        let on = Carried::of(&json!(true), "on").unwrap();
        assert!(on.matches(&BareItemFromInput::Boolean(true)));
        assert!(!on.matches(&BareItemFromInput::Boolean(false)));
        assert!(!on.matches(&int(1)));
        let theme = Carried::of(&json!("dark"), "d").unwrap();
        assert!(theme.matches(&string("dark")));
        assert!(!theme.matches(&token("dark")), "a token is not a string");
        let layout = Carried::of(&json!({"cols": 2}), "two-col").unwrap();
        assert_eq!(layout, Carried::Token("two-col".into()));
        assert!(layout.matches(&token("two-col")));
        assert!(!layout.matches(&string("two-col")));
        let limit = Carried::of(&json!(20), "low").unwrap();
        assert!(limit.matches(&int(20)));
        assert!(!limit.matches(&dec(20.0)));
        assert_eq!(item_kind(&int(20)), kind::INTEGER);
        assert_eq!(item_kind(&BareItemFromInput::ByteSequence(vec![1])), 0);
    }

    #[test]
    fn baggage_members_with_the_prefix() {
        for ours in [
            "vexil.a=1",
            " vexil.a = 1",
            "VEXIL.a=1",
            "Vexil.a=1;p",
            "vexil%2Ea=1",
            "vexil%2ea=1",
            "%76exil.a=1",
            "vexil.",
        ] {
            assert!(baggage_key_has_prefix(ours, "vexil."), "{ours}");
        }
        for foreign in ["vexila=1", "x.vexil.a=1", "vexil=1", "vexil%2", "k=vexil.a"] {
            assert!(!baggage_key_has_prefix(foreign, "vexil."), "{foreign}");
        }
        assert_eq!(
            baggage_without_prefix("k=v, vexil.a=1,VEXIL.b=2;p, other=vexil.x;q=1", "vexil."),
            Some("k=v,other=vexil.x;q=1".into())
        );
        assert_eq!(
            baggage_without_prefix("vexil.a=1", "vexil.").as_deref(),
            Some("")
        );
        assert_eq!(baggage_without_prefix("k=v,l=w", "vexil."), None);
    }

    #[test]
    fn builder_drops_whole_members_that_do_not_fit() {
        let mut b = FlagsBuilder::new(20, 64);
        assert!(b.push("a=?1"));
        assert!(b.push("long=\"0123456\""));
        assert_eq!(b.as_str(), "a=?1, long=\"0123456\"");
        assert!(!b.push("c=?0"));
        assert_eq!(b.dropped, 1);
        let mut b = FlagsBuilder::new(12, 64);
        b.push_kept("x=1");
        assert!(!b.push("verylong=?1"));
        assert!(b.push("y=2"));
        assert_eq!(b.finish(), "x=1, y=2");
    }
}
