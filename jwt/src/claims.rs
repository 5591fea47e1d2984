//! The claims of a verified token, and the helpers that read them.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::error::JwtError;

/// The payload of an accepted token: a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    map: Map<String, Value>,
}

/// A claim that should hold a list of strings (e.g. the environments a token is limited to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListClaim<'a> {
    /// The token does not have the claim at all. Only this case may mean "unrestricted", and only
    /// where the caller documents it so.
    Absent,
    /// The claim's strings. An empty list grants nothing. A claim holding one string counts as a
    /// list of that one string.
    Values(Vec<&'a str>),
}

impl Claims {
    pub(crate) fn new(map: Map<String, Value>) -> Claims {
        Claims { map }
    }

    /// The claim `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// The claim `name` when it is a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.map.get(name).and_then(Value::as_str)
    }

    /// `sub`, when it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.str("sub")
    }

    /// Reads claim `name` as a list of strings: an array of strings, or one string (a list of
    /// one). Anything else (a number, `null`, an object, an array holding a non-string) is an
    /// error, never an empty or absent list.
    pub fn string_list(&self, name: &str) -> Result<ListClaim<'_>, JwtError> {
        let invalid = || JwtError::InvalidClaim {
            claim: Cow::Owned(name.to_string()),
            reason: "must be a string or an array of strings",
        };
        match self.map.get(name) {
            None => Ok(ListClaim::Absent),
            Some(Value::String(s)) => Ok(ListClaim::Values(vec![s.as_str()])),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(invalid))
                .collect::<Result<Vec<_>, _>>()
                .map(ListClaim::Values),
            Some(_) => Err(invalid()),
        }
    }

    /// The claims as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The claims as a JSON object, owned.
    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }
}
