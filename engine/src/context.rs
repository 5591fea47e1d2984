//! The evaluation context: the attributes a rule reads with `var`.

use serde_json::{Map, Value};

/// Attributes of the subject of an evaluation (user, request, device...), a JSON object.
///
/// `targetingKey` is an ordinary attribute here, as it is in flagd's rules. Build one per request and
/// lend it to every resolution of that request.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluationContext(Value);

impl Default for EvaluationContext {
    fn default() -> Self {
        EvaluationContext(Value::Object(Map::new()))
    }
}

impl EvaluationContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context holding `attributes`.
    pub fn from_map(attributes: Map<String, Value>) -> Self {
        EvaluationContext(Value::Object(attributes))
    }

    /// A context from a JSON value, which must be an object (`null` is taken as empty).
    pub fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Object(_) => Ok(EvaluationContext(value)),
            Value::Null => Ok(Self::default()),
            other => Err(other),
        }
    }

    /// Sets attribute `key`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.attributes_mut().insert(key.into(), value.into());
        self
    }

    /// Sets `targetingKey`.
    pub fn set_targeting_key(&mut self, key: impl Into<String>) -> &mut Self {
        self.insert("targetingKey", Value::String(key.into()))
    }

    /// Attribute `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// `targetingKey`, when it is a string.
    pub fn targeting_key(&self) -> Option<&str> {
        self.0.get("targetingKey").and_then(Value::as_str)
    }

    /// The number of attributes.
    pub fn len(&self) -> usize {
        self.attributes().len()
    }

    /// True when there is no attribute.
    pub fn is_empty(&self) -> bool {
        self.attributes().is_empty()
    }

    /// The attributes.
    pub fn attributes(&self) -> &Map<String, Value> {
        match &self.0 {
            Value::Object(m) => m,
            _ => unreachable!("an EvaluationContext always holds an object"),
        }
    }

    /// The context as a JSON object.
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    fn attributes_mut(&mut self) -> &mut Map<String, Value> {
        match &mut self.0 {
            Value::Object(m) => m,
            _ => unreachable!("an EvaluationContext always holds an object"),
        }
    }
}

impl From<Map<String, Value>> for EvaluationContext {
    fn from(m: Map<String, Value>) -> Self {
        Self::from_map(m)
    }
}
