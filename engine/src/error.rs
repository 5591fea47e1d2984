//! Validation errors that name the JSON path of what is wrong.

use std::fmt;

/// One problem in a flag-set document, at a JSON path such as `flags.checkout.targeting.if[1]`
/// (`path`: dotted object keys and `[i]` array indices from the document root, keys that are not
/// plain identifiers written `["key"]`; empty for the whole document) with what is wrong
/// (`message`, a sentence fragment such as `unknown operator "iff"`). The one problem type of
/// Vexil, shared with the configuration of both binaries.
pub use vexil_settings::Problem as ValidationError;

/// Every problem found in a document, in document order, displayed one per line. Validation never
/// stops at the first.
pub use vexil_settings::Problems as ValidationErrors;

/// One step of a JSON path.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Seg<'a> {
    /// An object member.
    Key(&'a str),
    /// An array element.
    Index(usize),
}

/// The path being walked while validating, kept as a stack and formatted only when an error is
/// reported.
#[derive(Default, Debug)]
pub(crate) struct Path<'a> {
    segs: Vec<Seg<'a>>,
}

impl<'a> Path<'a> {
    /// Descends into member `key`.
    pub(crate) fn push_key(&mut self, key: &'a str) {
        self.segs.push(Seg::Key(key));
    }

    /// Descends into element `i`.
    pub(crate) fn push_index(&mut self, i: usize) {
        self.segs.push(Seg::Index(i));
    }

    /// Goes back up one step.
    pub(crate) fn pop(&mut self) {
        self.segs.pop();
    }

    /// The error `message` at this path.
    pub(crate) fn error(&self, message: impl Into<String>) -> ValidationError {
        ValidationError {
            path: self.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segs.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{}]", serde_json::Value::from(*k))?,
            }
        }
        Ok(())
    }
}

/// Keys written bare in a path: letters, digits, `_`, `-` and `$`.
fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_format_keys_and_indices() {
        let mut p = Path::default();
        p.push_key("flags");
        p.push_key("new-checkout");
        p.push_key("targeting");
        p.push_key("if");
        p.push_index(1);
        assert_eq!(p.to_string(), "flags.new-checkout.targeting.if[1]");
        p.pop();
        p.pop();
        p.push_key("a.b c");
        assert_eq!(p.to_string(), r#"flags.new-checkout.targeting["a.b c"]"#);
        let e = p.error("boom");
        assert_eq!(
            e.to_string(),
            r#"flags.new-checkout.targeting["a.b c"]: boom"#
        );
    }
}
