//! The evaluation context of a proxied request, built from the configured mapping: which request
//! attributes an application's flags target is configuration, not code.
//!
//! Each attribute lists sources; the first one present on the request gives the value. Sources
//! are parsed where the configuration enters ([`ContextSource`]); extraction reads borrowed slices of the request
//! and allocates only the attribute values it keeps (and, for `jwt:` sources, the decoded claims,
//! once per request). Values longer than `max_value_bytes` count as absent.
//!
//! | source | value |
//! |---|---|
//! | `header:NAME` | first `NAME` header (UTF-8) |
//! | `cookie:NAME` | cookie `NAME` (quotes removed) |
//! | `query:NAME` | query parameter `NAME` (percent- and `+`-decoded) |
//! | `jwt:CLAIM` | top-level claim of the `Authorization: Bearer` token, as its JSON value |
//! | `baggage:KEY` | W3C `baggage` member `KEY` (percent-decoded) |
//! | `request:method`, `request:path`, `request:host`, `request:scheme` | the request's |
//! | `peer:ip` | the connecting peer's address |
//! | `static:VALUE` | `VALUE` |

use std::net::IpAddr;

use http::{HeaderMap, header};
use serde_json::{Map, Value};
use vexil_engine::EvaluationContext;

use vexil_settings::Problems;

use crate::dataplane::config::{ContextSource as Source, DataPlaneConfig};
use crate::dataplane::jwt::JwtVerifier;

/// What extraction reads from a request. Borrowed from the proxy's request header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestView<'a> {
    pub headers: &'a HeaderMap,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The target host without port (absolute-form authority, else `Host`).
    pub host: Option<&'a str>,
    pub scheme: &'a str,
    pub peer: Option<IpAddr>,
}

struct Attribute {
    name: Box<str>,
    sources: Box<[Source]>,
}

/// The compiled `[context]` mapping.
pub(crate) struct ContextMapping {
    attributes: Box<[Attribute]>,
    jwt: Option<JwtVerifier>,
    max_value_bytes: usize,
}

impl std::fmt::Debug for ContextMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextMapping")
            .field("attributes", &self.attributes.len())
            .field("jwt", &self.jwt)
            .finish()
    }
}

/// Claims of the request's bearer token, decoded at most once per request.
enum Claims {
    NotRead,
    Absent,
    Read(Map<String, Value>),
}

impl ContextMapping {
    /// Compiles the mapping of a validated configuration and loads the JWT keys it needs.
    pub(crate) fn new(config: &DataPlaneConfig) -> Result<ContextMapping, Problems> {
        let attributes: Box<[Attribute]> = config
            .context
            .iter()
            .map(|(name, sources)| Attribute {
                name: name.as_str().into(),
                sources: sources.clone().into(),
            })
            .collect();
        let uses_jwt = attributes
            .iter()
            .any(|a| a.sources.iter().any(Source::is_jwt));
        let jwt = if uses_jwt {
            Some(JwtVerifier::load(&config.context_options)?)
        } else {
            None
        };
        Ok(ContextMapping {
            attributes,
            jwt,
            max_value_bytes: config.context_options.max_value_bytes,
        })
    }

    /// True when no attribute is configured (every context is empty).
    pub(crate) fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// Builds the evaluation context of `req`.
    pub(crate) fn extract(&self, req: &RequestView<'_>) -> EvaluationContext {
        let mut map = Map::new();
        let mut claims = Claims::NotRead;
        for attr in self.attributes.iter() {
            if let Some(value) = attr
                .sources
                .iter()
                .find_map(|s| self.lookup(s, req, &mut claims))
            {
                map.insert(attr.name.to_string(), value);
            }
        }
        EvaluationContext::from_map(map)
    }

    /// The index of attribute `name`, when the mapping has it and it can be part of a decision
    /// cache key (`Err(())`: it has a `jwt:` source, whose claims are only known once the token is
    /// verified, and whose validity depends on the clock).
    pub(crate) fn key_attribute(&self, name: &str) -> Result<Option<usize>, ()> {
        match self.attributes.iter().position(|a| &*a.name == name) {
            Some(i) if self.attributes[i].sources.iter().any(Source::is_jwt) => Err(()),
            found => Ok(found),
        }
    }

    /// Appends to `key` the value attribute `index` takes on `req` exactly as [`Self::extract`]
    /// would find it (the first source present, within `max_value_bytes`), length-prefixed, or a
    /// marker for "absent". Borrows from the request; allocates only for decoded cookies, query
    /// parameters and baggage members. Not for attributes [`Self::key_attribute`] refused.
    pub(crate) fn write_key(&self, index: usize, req: &RequestView<'_>, key: &mut Vec<u8>) {
        let attribute = &self.attributes[index];
        for source in attribute.sources.iter() {
            if let Source::PeerIp = source {
                if let Some(ip) = req.peer {
                    key.push(b'i');
                    match ip {
                        IpAddr::V4(v4) => key.extend_from_slice(&v4.octets()),
                        IpAddr::V6(v6) => key.extend_from_slice(&v6.octets()),
                    }
                    return;
                }
                continue;
            }
            if let Some(text) = self.text(source, req) {
                key.push(b's');
                key.extend_from_slice(&(text.len() as u32).to_le_bytes());
                key.extend_from_slice(text.as_bytes());
                return;
            }
        }
        key.push(b'-');
    }

    fn lookup(&self, source: &Source, req: &RequestView<'_>, claims: &mut Claims) -> Option<Value> {
        match source {
            Source::Jwt(claim) => return self.claim(claim, req, claims),
            Source::PeerIp => return req.peer.map(|ip| Value::String(ip.to_string())),
            _ => {}
        }
        self.text(source, req)
            .map(|text| Value::String(text.into_owned()))
    }

    /// The text of a source that is not `jwt:` or `peer:ip`, when present and within
    /// `max_value_bytes`.
    fn text<'a>(
        &self,
        source: &'a Source,
        req: &RequestView<'a>,
    ) -> Option<std::borrow::Cow<'a, str>> {
        let text: std::borrow::Cow<'a, str> = match source {
            Source::Header(name) => req.headers.get(name)?.to_str().ok()?.into(),
            Source::Cookie(name) => cookie(req.headers, name)?.into(),
            Source::Query(name) => query_param(req.query?, name)?,
            Source::Baggage(key) => baggage_member(req.headers, key)?,
            Source::Method => req.method.into(),
            Source::Path => req.path.into(),
            Source::Host => req.host?.into(),
            Source::Scheme => req.scheme.into(),
            Source::Static(v) => v.as_ref().into(),
            Source::Jwt(_) | Source::PeerIp => return None,
        };
        (text.len() <= self.max_value_bytes).then_some(text)
    }

    fn claim(&self, name: &str, req: &RequestView<'_>, claims: &mut Claims) -> Option<Value> {
        if let Claims::NotRead = claims {
            *claims = req
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|auth| {
                    self.jwt
                        .as_ref()?
                        .claims_from_authorization(auth.as_bytes())
                })
                .map_or(Claims::Absent, Claims::Read);
        }
        let Claims::Read(map) = claims else {
            return None;
        };
        let value = map.get(name)?;
        match value {
            Value::Null => None,
            Value::String(s) if s.len() > self.max_value_bytes => None,
            v => Some(v.clone()),
        }
    }
}

/// Cookie `name` from every `Cookie` header (`a=1; b="2"`).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

/// Query parameter `name` (the first one), decoded.
fn query_param<'q>(query: &'q str, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true)? == name).then(|| percent_decode(v, true))?
    })
}

/// Member `key` of the W3C `baggage` headers (`k1=v1;prop, k2=v2`), percent-decoded.
fn baggage_member<'h>(headers: &'h HeaderMap, key: &str) -> Option<std::borrow::Cow<'h, str>> {
    headers
        .get_all("baggage")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|member| {
            let kv = member.split(';').next()?;
            let (k, v) = kv.split_once('=')?;
            (k.trim() == key).then(|| percent_decode(v.trim(), false))?
        })
}

/// Decodes `%XX` (and `+` as a space when `plus` is set); `None` when the result is not UTF-8 or
/// an escape is malformed. Borrows when there is nothing to decode.
pub(crate) fn percent_decode(s: &str, plus: bool) -> Option<std::borrow::Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || (plus && b == b'+')) {
        return Some(s.into());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::jwt::tests::hs256;
    use http::HeaderName;
    use serde_json::json;

    fn mapping(toml: &str) -> ContextMapping {
        ContextMapping::new(&DataPlaneConfig::from_toml_str(toml).unwrap()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn view<'a>(h: &'a HeaderMap, query: Option<&'a str>) -> RequestView<'a> {
        RequestView {
            headers: h,
            method: "GET",
            path: "/cart",
            query,
            host: Some("shop.internal"),
            scheme: "http",
            peer: Some("10.1.2.3".parse().unwrap()),
        }
    }

    #[test]
    fn first_present_source_wins() {
        let m = mapping(
            r#"[context]
targetingKey = ["header:x-user-id", "cookie:uid", "query:user", "static:anonymous"]
country = ["baggage:country", "header:x-country"]
"#,
        );
        let h = headers(&[("x-user-id", "u-header"), ("cookie", "uid=u-cookie")]);
        let ctx = m.extract(&view(&h, None));
        assert_eq!(ctx.targeting_key(), Some("u-header"));
        assert_eq!(ctx.get("country"), None);

        let h = headers(&[
            ("cookie", "a=1; uid=\"u-cookie\""),
            ("baggage", "other=1, country=d%C3%A9;p=1"),
            ("x-country", "fr"),
        ]);
        let ctx = m.extract(&view(&h, None));
        assert_eq!(ctx.targeting_key(), Some("u-cookie"));
        assert_eq!(ctx.get("country"), Some(&json!("dé")));

        let h = headers(&[]);
        let ctx = m.extract(&view(&h, Some("x=1&user=ada+l%40x")));
        assert_eq!(ctx.targeting_key(), Some("ada l@x"));
        let ctx = m.extract(&view(&h, None));
        assert_eq!(ctx.targeting_key(), Some("anonymous"));
    }

    #[test]
    fn request_and_peer_sources() {
        let m = mapping(
            r#"[context]
method = ["request:method"]
path = ["request:path"]
host = ["request:host"]
scheme = ["request:scheme"]
ip = ["peer:ip"]
"#,
        );
        let h = headers(&[]);
        let ctx = m.extract(&view(&h, None));
        assert_eq!(
            ctx.as_value(),
            &json!({"method": "GET", "path": "/cart", "host": "shop.internal",
                    "scheme": "http", "ip": "10.1.2.3"})
        );
    }

    #[test]
    fn jwt_claims_keep_their_json_type() {
        let m = mapping(
            r#"[context]
targetingKey = ["jwt:sub"]
tier = ["jwt:tier"]
groups = ["jwt:groups"]
[context_options]
jwt_hs256_secret = "k"
"#,
        );
        let exp = 4_000_000_000u64; // `exp` is required (jwt_require_exp)
        let token = hs256(
            "k",
            &json!({"sub": "u1", "tier": 3, "groups": ["a", "b"], "exp": exp}),
        );
        let auth = format!("Bearer {token}");
        let h = headers(&[("authorization", &auth)]);
        let ctx = m.extract(&view(&h, None));
        assert_eq!(
            ctx.as_value(),
            &json!({"targetingKey": "u1", "tier": 3, "groups": ["a", "b"]})
        );
        let bad = format!(
            "Bearer {}",
            hs256("wrong", &json!({"sub": "u1", "exp": exp}))
        );
        let h = headers(&[("authorization", &bad)]);
        assert!(m.extract(&view(&h, None)).is_empty());
    }

    #[test]
    fn oversized_values_fall_through() {
        let m = mapping(
            r#"[context]
id = ["header:x-id", "static:fb"]
[context_options]
max_value_bytes = 4
"#,
        );
        let h = headers(&[("x-id", "12345")]);
        assert_eq!(m.extract(&view(&h, None)).get("id"), Some(&json!("fb")));
        let h = headers(&[("x-id", "1234")]);
        assert_eq!(m.extract(&view(&h, None)).get("id"), Some(&json!("1234")));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b", false).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert!(percent_decode("%zz", false).is_none());
        assert!(percent_decode("%ff", false).is_none());
        assert!(percent_decode("%4", false).is_none());
    }
}
