//! How a setting's value enters: from the text of a flag or a variable, or from a file's TOML value,
//! parsed into its type at once; and how it is shown again (`--print-config`, the documentation).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::problem::Problems;

/// A type a setting can have.
pub trait Value: Sized {
    /// A boolean switch: its flag takes no value (`--dev-tls`).
    const SWITCH: bool = false;
    /// A list: a repeated flag's values are joined with commas.
    const LIST: bool = false;

    /// Parses the text of a flag or an environment variable.
    fn from_text(text: &str) -> Result<Self, Problems>;

    /// Takes a file's value. By default a TOML string, parsed as text.
    fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
        match value {
            toml::Value::String(s) => Self::from_text(s),
            other => Err(expected("a string", other)),
        }
    }

    /// The value as `--print-config` and the documentation show it, in TOML, secrets redacted;
    /// `None` when not set.
    fn show(&self) -> Option<toml::Value>;
}

/// The problem of a file value of the wrong type.
pub fn expected(what: &str, found: &toml::Value) -> Problems {
    let found = match found {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(x) => format!("the number {x}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    };
    Problems::from(format!("expected {what}, found {found}"))
}

/// Prefixes each problem's path with the position of the element it came from: `[2]`, `.name`.
fn nested(problems: Problems, step: &str) -> Problems {
    problems.map_paths(|p| {
        if p.is_empty() {
            step.to_string()
        } else if p.starts_with('[') {
            format!("{step}{p}")
        } else {
            format!("{step}.{p}")
        }
    })
}

/// Parses JSON text (a `--routes` array, a metadata object) into the TOML value it stands for.
pub fn json_to_toml(text: &str) -> Result<toml::Value, Problems> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Problems::from(format!("invalid JSON: {e}")))?;
    toml::Value::try_from(&json).map_err(|_| {
        Problems::from("JSON null has no TOML equivalent: leave the key out instead".to_string())
    })
}

impl Value for String {
    fn from_text(text: &str) -> Result<Self, Problems> {
        Ok(text.to_string())
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl Value for bool {
    const SWITCH: bool = true;

    fn from_text(text: &str) -> Result<Self, Problems> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("expected true or false, found {text:?}").into()),
        }
    }

    fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
        value
            .as_bool()
            .ok_or_else(|| expected("true or false", value))
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn from_text(text: &str) -> Result<Self, Problems> {
                let text = text.trim();
                text.parse().map_err(|_| match text.parse::<i128>() {
                    Ok(n) => format!("{n} is out of range ({} to {})", <$t>::MIN, <$t>::MAX).into(),
                    Err(_) => format!("expected a whole number, found {text:?}").into(),
                })
            }

            fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
                let i = value.as_integer().ok_or_else(|| expected("a whole number", value))?;
                <$t>::try_from(i).map_err(|_| {
                    format!("{i} is out of range ({} to {})", <$t>::MIN, <$t>::MAX).into()
                })
            }

            fn show(&self) -> Option<toml::Value> {
                Some(toml::Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX)))
            }
        }

        impl IsZero for $t {
            fn is_zero(&self) -> bool {
                *self == 0
            }
        }
    )*};
}

integer!(u16, u32, u64, usize, i64);

impl Value for f64 {
    fn from_text(text: &str) -> Result<Self, Problems> {
        let text = text.trim();
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(format!("expected a number, found {text:?}").into()),
        }
    }

    fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
        match value {
            toml::Value::Float(v) if v.is_finite() => Ok(*v),
            toml::Value::Integer(i) => Ok(*i as f64),
            other => Err(expected("a number", other)),
        }
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::Float(*self))
    }
}

impl Value for SocketAddr {
    fn from_text(text: &str) -> Result<Self, Problems> {
        text.trim().parse().map_err(|_| {
            format!("invalid socket address {text:?} (expected IP:PORT, like 127.0.0.1:8080)")
                .into()
        })
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl Value for PathBuf {
    fn from_text(text: &str) -> Result<Self, Problems> {
        if text.trim().is_empty() {
            return Err("the path must not be empty".into());
        }
        Ok(PathBuf::from(text))
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
}

impl<T: Value> Value for Option<T> {
    const SWITCH: bool = T::SWITCH;
    const LIST: bool = T::LIST;

    fn from_text(text: &str) -> Result<Self, Problems> {
        T::from_text(text).map(Some)
    }

    fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
        T::from_toml(value).map(Some)
    }

    fn show(&self) -> Option<toml::Value> {
        self.as_ref().and_then(T::show)
    }
}

/// A list: an array in a file; in a flag or a variable, comma-separated values, or a JSON array
/// (text starting with `[`).
impl<T: Value> Value for Vec<T> {
    const LIST: bool = true;

    fn from_text(text: &str) -> Result<Self, Problems> {
        if text.trim_start().starts_with('[') {
            return Self::from_toml(&json_to_toml(text)?);
        }
        let mut problems = Problems::new();
        let mut items = Vec::new();
        for (i, item) in text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            match T::from_text(item) {
                Ok(v) => items.push(v),
                Err(p) => problems.extend(nested(p, &format!("[{i}]"))),
            }
        }
        problems.finish(items)
    }

    fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
        let array = value
            .as_array()
            .ok_or_else(|| expected("an array", value))?;
        let mut problems = Problems::new();
        let mut items = Vec::with_capacity(array.len());
        for (i, item) in array.iter().enumerate() {
            match T::from_toml(item) {
                Ok(v) => items.push(v),
                Err(p) => problems.extend(nested(p, &format!("[{i}]"))),
            }
        }
        problems.finish(items)
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.iter().filter_map(T::show).collect(),
        ))
    }
}

/// A table of named values: a TOML table in a file, a JSON object in a flag or a variable.
impl<V: Value> Value for BTreeMap<String, V> {
    fn from_text(text: &str) -> Result<Self, Problems> {
        Self::from_toml(&json_to_toml(text)?)
    }

    fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
        let table = value.as_table().ok_or_else(|| expected("a table", value))?;
        let mut problems = Problems::new();
        let mut map = BTreeMap::new();
        for (k, v) in table {
            match V::from_toml(v) {
                Ok(v) => {
                    map.insert(k.clone(), v);
                }
                Err(p) => problems.extend(nested(p, k)),
            }
        }
        problems.finish(map)
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::Table(
            self.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.show()?)))
                .collect(),
        ))
    }
}

/// Free-form JSON values (flag metadata to match): a TOML table, or a JSON object as text.
impl Value for serde_json::Map<String, serde_json::Value> {
    fn from_text(text: &str) -> Result<Self, Problems> {
        Self::from_toml(&json_to_toml(text)?)
    }

    fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
        if !value.is_table() {
            return Err(expected("a table", value));
        }
        match serde_json::to_value(value) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err("not representable as JSON".into()),
        }
    }

    fn show(&self) -> Option<toml::Value> {
        toml::Value::try_from(self).ok()
    }
}

/// A duration given in milliseconds (keys and flags ending in `_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub Duration);

/// A duration given in whole seconds (keys and flags ending in `_secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

/// `n` milliseconds.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `n` seconds.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

macro_rules! duration_unit {
    ($t:ident, $from:ident, $to:ident) => {
        impl Value for $t {
            fn from_text(text: &str) -> Result<Self, Problems> {
                u64::from_text(text).map(|n| $t(Duration::$from(n)))
            }

            fn from_toml(value: &toml::Value) -> Result<Self, Problems> {
                u64::from_toml(value).map(|n| $t(Duration::$from(n)))
            }

            fn show(&self) -> Option<toml::Value> {
                (self.0.$to() as u64).show()
            }
        }

        impl From<Duration> for $t {
            fn from(d: Duration) -> Self {
                $t(d)
            }
        }

        impl From<$t> for Duration {
            fn from(d: $t) -> Self {
                d.0
            }
        }

        impl IsZero for $t {
            fn is_zero(&self) -> bool {
                self.0.is_zero()
            }
        }
    };
}

duration_unit!(Millis, from_millis, as_millis);
duration_unit!(Seconds, from_secs, as_secs);

const REDACTED: &str = "<redacted>";

/// A secret (a token, a shared key): never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the code that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Surrounding white space is not part of a secret; an empty one is refused.
impl Value for Secret {
    fn from_text(text: &str) -> Result<Self, Problems> {
        let secret = text.trim();
        if secret.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Secret(secret.to_string()))
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(REDACTED.into()))
    }
}

/// A file holding a secret (a mounted Kubernetes Secret): read when the setting is resolved, its
/// content trimmed; shown as its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFile {
    /// The file.
    pub path: PathBuf,
    /// Its content, trimmed.
    pub secret: Secret,
}

impl Value for SecretFile {
    fn from_text(text: &str) -> Result<Self, Problems> {
        let path = PathBuf::from_text(text)?;
        let content = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let secret = Secret::from_text(&content)
            .map_err(|_| format!("the file {} is empty", path.display()))?;
        Ok(SecretFile { path, secret })
    }

    fn show(&self) -> Option<toml::Value> {
        self.path.show()
    }
}

/// A URL that may hold a password (`postgres://user:password@host/db`): shown with the password
/// redacted, by `Debug` and `Display` too.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL, password included, for the code that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `<redacted>`: the one in the userinfo
    /// (`user:password@`) and any query parameter that names one (`?password=`, `sslpassword=`,
    /// `pass=`, `pwd=`, in any case), which libpq-style URLs accept too.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return url.clone();
        };
        let authority_end = url[scheme_end..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| scheme_end + i);
        let authority = &url[scheme_end..authority_end];
        let mut out = match authority.rfind('@') {
            Some(at) => match authority[..at].split_once(':') {
                Some((user, _password)) => format!(
                    "{}{user}:{REDACTED}{}",
                    &url[..scheme_end],
                    &url[scheme_end + at..authority_end]
                ),
                None => url[..authority_end].to_string(),
            },
            None => url[..authority_end].to_string(),
        };
        let rest = &url[authority_end..];
        let (before_fragment, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
        match before_fragment.split_once('?') {
            Some((path, query)) => {
                out.push_str(path);
                out.push('?');
                for (i, pair) in query.split('&').enumerate() {
                    if i > 0 {
                        out.push('&');
                    }
                    match pair.split_once('=') {
                        Some((key, _)) if names_a_password(key) => {
                            out.push_str(key);
                            out.push('=');
                            out.push_str(REDACTED);
                        }
                        _ => out.push_str(pair),
                    }
                }
            }
            None => out.push_str(before_fragment),
        }
        out.push_str(fragment);
        out
    }
}

/// Query parameters that carry a password.
fn names_a_password(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key == "pass" || key == "pwd"
}

impl std::ops::Deref for SecretUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        SecretUrl(s.to_string())
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        SecretUrl(s)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Value for SecretUrl {
    fn from_text(text: &str) -> Result<Self, Problems> {
        let url = text.trim();
        if !url.contains("://") {
            return Err(format!("{:?} is not a URL (SCHEME://...)", SecretUrl::from(url)).into());
        }
        Ok(SecretUrl(url.to_string()))
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.redacted()))
    }
}

/// Values that can be zero, for [`nonzero`].
pub trait IsZero {
    /// True when zero.
    fn is_zero(&self) -> bool;
}

/// A check: at least 1.
pub fn nonzero<T: IsZero>(v: &T) -> Result<(), String> {
    if v.is_zero() {
        Err("must be at least 1".into())
    } else {
        Ok(())
    }
}

/// A check: from `low` to `high`, both included.
pub fn between<T: PartialOrd + fmt::Display + Copy>(
    low: T,
    high: T,
) -> impl Fn(&T) -> Result<(), String> {
    move |v| {
        if *v < low || *v > high {
            Err(format!("{v} is not between {low} and {high}"))
        } else {
            Ok(())
        }
    }
}

/// A check: not empty.
pub fn not_empty(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_toml_values_parse_into_their_types() {
        assert_eq!(u64::from_text(" 42 ").unwrap(), 42);
        assert!(u16::from_text("70000").is_err());
        assert_eq!(
            usize::from_toml(&toml::Value::String("8".into()))
                .unwrap_err()
                .to_string(),
            "(document): expected a whole number, found the string \"8\""
        );
        assert!(bool::from_text("TRUE").unwrap());
        assert_eq!(
            Millis::from_text("250").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(Seconds(secs(25)).show(), Some(toml::Value::Integer(25)));
        assert_eq!(
            Vec::<String>::from_text("a, b,,c").unwrap(),
            vec!["a", "b", "c"]
        );
        let e = Vec::<SocketAddr>::from_text("127.0.0.1:1,x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "[1]: invalid socket address \"x\" (expected IP:PORT, like 127.0.0.1:8080)"
        );
        let doc: toml::Value = toml::from_str("a = [1, 2]\nb = [3, \"x\"]").unwrap();
        let e = BTreeMap::<String, Vec<u16>>::from_toml(&doc).unwrap_err();
        assert_eq!(
            e.to_string(),
            "b[1]: expected a whole number, found the string \"x\""
        );
        let meta = serde_json::Map::from_text(r#"{"team": "x", "n": 2}"#).unwrap();
        assert_eq!(meta["n"], 2);
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::from_text(" vxl_abc \n").unwrap();
        assert_eq!(s.expose(), "vxl_abc");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.show().unwrap().as_str(), Some("<redacted>"));
        assert!(Secret::from_text("  ").is_err());

        let url = SecretUrl::from_text("postgres://vexil:hunter2@db:5432/vexil?x=1").unwrap();
        assert_eq!(url.expose(), "postgres://vexil:hunter2@db:5432/vexil?x=1");
        assert_eq!(
            url.show().unwrap().as_str(),
            Some("postgres://vexil:<redacted>@db:5432/vexil?x=1")
        );
        assert!(!format!("{url:?} {url}").contains("hunter2"));
        for plain in [
            "sqlite://vexil.db",
            "redis://127.0.0.1:6379",
            "postgres://u@h/d",
        ] {
            assert_eq!(SecretUrl::from(plain).redacted(), plain);
        }
        assert!(SecretUrl::from_text("vexil.db").is_err());
    }

    #[test]
    fn passwords_in_the_query_are_redacted_too() {
        for (url, shown) in [
            (
                "postgres://db/vexil?user=vexil&password=hunter2&sslmode=require",
                "postgres://db/vexil?user=vexil&password=<redacted>&sslmode=require",
            ),
            (
                "postgres://u:p@db/v?sslpassword=hunter2#frag",
                "postgres://u:<redacted>@db/v?sslpassword=<redacted>#frag",
            ),
            (
                "redis://h:6379/0?PASSWORD=hunter2",
                "redis://h:6379/0?PASSWORD=<redacted>",
            ),
            (
                "postgres://db?pwd=hunter2&pass=hunter2",
                "postgres://db?pwd=<redacted>&pass=<redacted>",
            ),
            (
                "postgres://db/v?passport=x&application_name=a",
                "postgres://db/v?passport=x&application_name=a",
            ),
        ] {
            let u = SecretUrl::from(url);
            assert_eq!(u.redacted(), shown);
            assert!(!format!("{u} {u:?}").contains("hunter2"));
        }
    }

    #[test]
    fn checks() {
        assert!(nonzero(&0u64).is_err());
        assert!(nonzero(&Millis(ms(1))).is_ok());
        let range = between(64usize, 65_536);
        assert_eq!(range(&10).unwrap_err(), "10 is not between 64 and 65536");
        assert!(range(&64).is_ok());
        assert!(not_empty(" ").is_err());
    }
}
