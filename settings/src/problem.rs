//! The one error style of Vexil's validations: a list of problems, each saying where and what.

use std::fmt;

/// One problem: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Where the problem is. In a document, a JSON path such as `flags.checkout.targeting.if[1]`
    /// (empty: the whole document). In a configuration, the setting and where its value came from:
    /// `proxy.toml:12 [context] targetingKey[1]`, `--outbound-addr`, `VEXIL_THREADS`.
    pub path: String,
    /// What is wrong, in a sentence fragment such as `unknown operator "iff"`.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, in the order found; displayed one per line. Validation never stops at the
/// first.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// No problem yet.
    pub fn new() -> Self {
        Problems(Vec::new())
    }

    /// One problem at `path`.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problems(vec![Problem::new(path, message)])
    }

    /// True when no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// Adds a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    /// Adds every problem of `other`.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `value` when no problem was found, else the problems.
    pub fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// The same problems with `f` applied to each path (to say where a nested value sits).
    pub fn map_paths(self, mut f: impl FnMut(&str) -> String) -> Problems {
        Problems(
            self.0
                .into_iter()
                .map(|p| Problem {
                    path: f(&p.path),
                    message: p.message,
                })
                .collect(),
        )
    }
}

/// A single problem without a path (the caller knows where).
impl From<String> for Problems {
    fn from(message: String) -> Self {
        Problems::one("", message)
    }
}

impl From<&str> for Problems {
    fn from(message: &str) -> Self {
        Problems::one("", message)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_line_with_the_path_first() {
        let mut p = Problems::new();
        assert!(p.is_empty());
        p.push("--outbound-addr", "invalid socket address \"x\"");
        p.push("", "not an object");
        assert_eq!(
            p.to_string(),
            "--outbound-addr: invalid socket address \"x\"\n(document): not an object"
        );
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"[{"path":"--outbound-addr","message":"invalid socket address \"x\""},{"path":"","message":"not an object"}]"#
        );
        let nested = Problems::one("[1]", "bad").map_paths(|p| format!("x{p}"));
        assert_eq!(nested.to_string(), "x[1]: bad");
        assert_eq!(Problems::new().finish(3), Ok(3));
    }
}
