//! Flag keys as header dictionary keys (docs/adr/0012-vexil-flags-structured-field-dictionary.md).
//!
//! Decisions travel in the `vexil-flags` header, an RFC 8941 dictionary, whose keys are
//! `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`. A flag whose key does not fit is
//! refused when it is saved, never mangled on the wire.

/// Why `key` cannot be a `vexil-flags` dictionary key, or `None` when it can.
pub fn header_key_problem(key: &str) -> Option<String> {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return Some("a flag key must not be empty".into());
    };
    if !(first.is_ascii_lowercase() || first == '*') {
        return Some(format!(
            "flag key {key:?} must start with a lowercase letter or '*' to be a header dictionary key (RFC 8941)"
        ));
    }
    if let Some(bad) = key.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | '*'))
    }) {
        return Some(format!(
            "flag key {key:?} contains {bad:?}; header dictionary keys (RFC 8941) allow only lowercase letters, digits, '_', '-', '.' and '*'"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::header_key_problem;

    #[test]
    fn accepts_dictionary_keys() {
        for k in ["checkout", "new-checkout", "a.b_c-1", "*x", "theme2"] {
            assert_eq!(header_key_problem(k), None, "{k}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        assert!(header_key_problem("").unwrap().contains("empty"));
        assert!(
            header_key_problem("Checkout")
                .unwrap()
                .contains("lowercase")
        );
        assert!(header_key_problem("1flag").unwrap().contains("start"));
        assert!(header_key_problem("new checkout").unwrap().contains("' '"));
        assert!(header_key_problem("flag-A").unwrap().contains("'A'"));
    }
}
