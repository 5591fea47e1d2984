//! flagd's `sem_ver` custom operator: `{"sem_ver": [version, op, version]}`.
//!
//! Versions are parsed without allocating, straight from the `&str`, with
//! flagd's lenient normalisation (an optional `v`/`V` prefix, partial versions
//! padded with zeros) in front of strict SemVer 2.0.0. Comparison follows
//! SemVer 2.0.0 precedence, except that `^` and `~` only compare the major
//! (and minor) numbers, exactly as flagd does.

use std::cmp::Ordering;

/// A comparison operator of `sem_ver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SemVerOp {
    /// `=`: equal precedence.
    Eq,
    /// `!=`: different precedence.
    Ne,
    /// `<`: lower precedence.
    Lt,
    /// `<=`: lower or equal precedence.
    Le,
    /// `>`: higher precedence.
    Gt,
    /// `>=`: higher or equal precedence.
    Ge,
    /// `^`: same major number.
    Caret,
    /// `~`: same major and minor numbers.
    Tilde,
}

impl SemVerOp {
    /// "=", "!=", "<", "<=", ">", ">=", "^", "~"; anything else (e.g. "===") is None.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "=" => Some(Self::Eq),
            "!=" => Some(Self::Ne),
            "<" => Some(Self::Lt),
            "<=" => Some(Self::Le),
            ">" => Some(Self::Gt),
            ">=" => Some(Self::Ge),
            "^" => Some(Self::Caret),
            "~" => Some(Self::Tilde),
            _ => None,
        }
    }
}

/// A parsed version borrowing its pre-release text. Build metadata is accepted and ignored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Version<'a> {
    /// The major number.
    pub(crate) major: u64,
    /// The minor number (0 when the input omitted it).
    pub(crate) minor: u64,
    /// The patch number (0 when the input omitted it).
    pub(crate) patch: u64,
    /// The pre-release identifiers without the leading `-`; empty for a release.
    pub(crate) pre: &'a str,
}

impl<'a> Version<'a> {
    /// Lenient flagd parsing: optional leading `v` or `V`; partial versions padded (`1` → 1.0.0, `1.2` → 1.2.0, also `1-beta` → 1.0.0-beta);
    /// otherwise strict SemVer 2.0.0 (no leading zeros in numeric parts or numeric pre-release identifiers, identifiers [0-9A-Za-z-] non-empty,
    /// at most three numeric parts: `2.0.0.0` is invalid, empty string invalid).
    ///
    /// Numeric parts that do not fit in a `u64` are rejected (the Python
    /// reference accepts arbitrarily large integers).
    pub(crate) fn parse(s: &'a str) -> Option<Self> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let (core, suffix) = s.split_at(s.find(['-', '+']).unwrap_or(s.len()));
        let (major, minor, patch) = parse_core(core)?;
        let pre = parse_suffix(suffix)?;
        Some(Self {
            major,
            minor,
            patch,
            pre,
        })
    }
}

/// Parses `major[.minor[.patch]]`, padding the missing parts with zeros.
fn parse_core(core: &str) -> Option<(u64, u64, u64)> {
    let mut parts = core.split('.');
    let major = parse_number(parts.next()?)?;
    let minor = parts.next().map_or(Some(0), parse_number)?;
    let patch = parts.next().map_or(Some(0), parse_number)?;
    match parts.next() {
        Some(_) => None,
        None => Some((major, minor, patch)),
    }
}

/// Parses a numeric part: ASCII digits, no leading zero, fits in a `u64`.
fn parse_number(s: &str) -> Option<u64> {
    if !is_numeric(s) || has_leading_zero(s) {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Validates `[-pre][+build]` and returns the pre-release text (empty if none).
fn parse_suffix(suffix: &str) -> Option<&str> {
    let (pre, build) = suffix
        .split_once('+')
        .map_or((suffix, None), |(pre, build)| (pre, Some(build)));
    let pre = match pre {
        "" => pre,
        _ => pre.strip_prefix('-').filter(|pre| valid_pre_release(pre))?,
    };
    build.is_none_or(valid_build).then_some(pre)
}

/// Whether `pre` is a non-empty dot-separated list of valid pre-release identifiers.
fn valid_pre_release(pre: &str) -> bool {
    pre.split('.')
        .all(|id| is_identifier(id) && !(is_numeric(id) && has_leading_zero(id)))
}

/// Whether `build` is a non-empty dot-separated list of valid build identifiers.
fn valid_build(build: &str) -> bool {
    build.split('.').all(is_identifier)
}

/// Whether `s` is a non-empty run of `[0-9A-Za-z-]`.
fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether `s` is a non-empty run of ASCII digits.
fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the numeric string `s` has a superfluous leading zero.
fn has_leading_zero(s: &str) -> bool {
    s.len() > 1 && s.starts_with('0')
}

/// SemVer 2.0.0 precedence (pre-release lower than release; identifiers compared numerically when both numeric, numeric < alphanumeric, shorter list lower when all equal), build metadata ignored.
pub(crate) fn precedence(a: &Version<'_>, b: &Version<'_>) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| compare_pre_releases(a.pre, b.pre))
}

/// Orders pre-release texts, an empty one (a release) above any other.
fn compare_pre_releases(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => compare_identifier_lists(a, b),
    }
}

/// Orders dot-separated identifier lists field by field, a proper prefix first.
fn compare_identifier_lists(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) => match compare_identifiers(x, y) {
                Ordering::Equal => {}
                unequal => return unequal,
            },
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (None, None) => return Ordering::Equal,
        }
    }
}

/// Orders two identifiers: numerically if both are numeric (without a size
/// limit), numeric below alphanumeric, otherwise by ASCII order.
fn compare_identifiers(a: &str, b: &str) -> Ordering {
    match (is_numeric(a), is_numeric(b)) {
        (true, true) => {
            let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// Evaluate an operator: `^` = same major; `~` = same major and minor (exactly flagd's semantics, not npm's); the others by precedence.
pub(crate) fn compare(a: &Version<'_>, op: SemVerOp, b: &Version<'_>) -> bool {
    match op {
        SemVerOp::Eq => precedence(a, b).is_eq(),
        SemVerOp::Ne => precedence(a, b).is_ne(),
        SemVerOp::Lt => precedence(a, b).is_lt(),
        SemVerOp::Le => precedence(a, b).is_le(),
        SemVerOp::Gt => precedence(a, b).is_gt(),
        SemVerOp::Ge => precedence(a, b).is_ge(),
        SemVerOp::Caret => a.major == b.major,
        SemVerOp::Tilde => a.major == b.major && a.minor == b.minor,
    }
}

#[cfg(test)]
mod tests {
    //! Table tests. Expected results were generated with the reference
    //! evaluator, Python `openfeature-flagd-core` 2.0.0 (python-semver 3.1.1),
    //! and cover every version/op pair of flagd-testbed's `@semver` scenarios.

    use super::*;

    /// Evaluates `{"sem_ver": [a, op, b]}` the way the engine does; None is null.
    fn sem_ver(a: &str, op: &str, b: &str) -> Option<bool> {
        let op = SemVerOp::parse(op)?;
        Some(compare(&Version::parse(a)?, op, &Version::parse(b)?))
    }

    /// The parts of a parsed version, for comparing with the tables.
    fn parts(s: &str) -> Option<(u64, u64, u64, &str)> {
        Version::parse(s).map(|v| (v.major, v.minor, v.patch, v.pre))
    }

    #[test]
    fn parse_table() {
        for &(input, expected) in PARSE_CASES {
            assert_eq!(parts(input), expected, "parse {input:?}");
        }
    }

    #[test]
    fn numbers_beyond_u64_are_invalid() {
        for &input in OVERFLOW_CASES {
            assert_eq!(parts(input), None, "parse {input:?}");
        }
        assert_eq!(parts("18446744073709551615").map(|v| v.0), Some(u64::MAX));
    }

    #[test]
    fn sem_ver_table() {
        for &(a, op, b, expected) in SEM_VER_CASES {
            assert_eq!(
                sem_ver(a, op, b),
                expected,
                "sem_ver [{a:?}, {op:?}, {b:?}]"
            );
        }
    }

    #[test]
    fn operators_parse() {
        let ops = ["=", "!=", "<", "<=", ">", ">=", "^", "~"];
        let parsed = ops.map(SemVerOp::parse);
        let expected = [
            SemVerOp::Eq,
            SemVerOp::Ne,
            SemVerOp::Lt,
            SemVerOp::Le,
            SemVerOp::Gt,
            SemVerOp::Ge,
            SemVerOp::Caret,
            SemVerOp::Tilde,
        ];
        assert_eq!(parsed, expected.map(Some));
    }

    #[test]
    fn spec_example_is_strictly_increasing() {
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ]
        .map(|s| Version::parse(s).expect(s));
        for (i, a) in chain.iter().enumerate() {
            for (j, b) in chain.iter().enumerate() {
                assert_eq!(precedence(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn precedence_is_antisymmetric_over_the_table() {
        let versions: Vec<Version<'_>> = PARSE_CASES
            .iter()
            .filter_map(|&(s, _)| Version::parse(s))
            .collect();
        for a in &versions {
            for b in &versions {
                assert_eq!(
                    precedence(a, b),
                    precedence(b, a).reverse(),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    /// A `Version::parse` case: input, expected (major, minor, patch, pre) or None.
    type ParseCase = (&'static str, Option<(u64, u64, u64, &'static str)>);

    /// `Version::parse` cases.
    const PARSE_CASES: &[ParseCase] = &[
        ("1.2.3", Some((1, 2, 3, ""))),
        ("0.0.0", Some((0, 0, 0, ""))),
        ("v1.2.3", Some((1, 2, 3, ""))),
        ("V1.2.3", Some((1, 2, 3, ""))),
        ("vv1.2.3", None),
        ("v", None),
        ("V", None),
        ("", None),
        ("v1.0.0", Some((1, 0, 0, ""))),
        ("V1.0.0", Some((1, 0, 0, ""))),
        ("1", Some((1, 0, 0, ""))),
        ("2", Some((2, 0, 0, ""))),
        ("1.2", Some((1, 2, 0, ""))),
        ("1.0", Some((1, 0, 0, ""))),
        ("v1", Some((1, 0, 0, ""))),
        ("V1.2", Some((1, 2, 0, ""))),
        ("1-beta", Some((1, 0, 0, "beta"))),
        ("1.2-rc.1", Some((1, 2, 0, "rc.1"))),
        ("1+build", Some((1, 0, 0, ""))),
        ("1.2+build", Some((1, 2, 0, ""))),
        ("1-beta+build", Some((1, 0, 0, "beta"))),
        ("1-0", Some((1, 0, 0, "0"))),
        ("1-01", None),
        ("v1-beta", Some((1, 0, 0, "beta"))),
        ("1.2.3.4", None),
        ("2.0.0.0", None),
        ("a.b.c", None),
        ("1..2", None),
        ("1.", None),
        ("1.2.", None),
        (".1", None),
        (".", None),
        ("-", None),
        ("+", None),
        ("-beta", None),
        ("not-a-version", None),
        ("1.2.x", None),
        ("1.2.3a", None),
        ("1.2.3-", None),
        ("1.2.3+", None),
        ("1.2.3-+b", None),
        ("1.2.3-a+", None),
        ("1-", None),
        ("1+", None),
        ("01.2.3", None),
        ("1.02.3", None),
        ("1.2.03", None),
        ("00.0.0", None),
        ("01", None),
        ("1.02", None),
        ("1.2.3-01", None),
        ("1.2.3-0", Some((1, 2, 3, "0"))),
        ("1.2.3-0a", Some((1, 2, 3, "0a"))),
        ("1.2.3-00a", Some((1, 2, 3, "00a"))),
        ("1.2.3-alpha.01", None),
        ("1.2.3-alpha.0", Some((1, 2, 3, "alpha.0"))),
        ("1.2.3+build.01", Some((1, 2, 3, ""))),
        ("1.2.3+001", Some((1, 2, 3, ""))),
        ("1.2.3-alpha..1", None),
        ("1.2.3-.alpha", None),
        ("1.2.3-alpha.", None),
        ("1.2.3-alpha-1", Some((1, 2, 3, "alpha-1"))),
        ("1.2.3--", Some((1, 2, 3, "-"))),
        ("1.2.3-a_b", None),
        ("1.2.3-v", Some((1, 2, 3, "v"))),
        ("1.2.3-DEV", Some((1, 2, 3, "DEV"))),
        ("1.2.3+build..1", None),
        ("1.2.3+a+b", None),
        ("1.2.3+-", Some((1, 2, 3, ""))),
        ("1.2.3-alpha+build-1.x", Some((1, 2, 3, "alpha"))),
        ("1.0.0+other", Some((1, 0, 0, ""))),
        ("2.0.0-alpha", Some((2, 0, 0, "alpha"))),
        ("1.0.0-x.7.z.92", Some((1, 0, 0, "x.7.z.92"))),
        (" 1.2.3", None),
        ("1.2.3 ", None),
        ("1.2.3\n", None),
        ("+1.2.3", None),
        ("-1.2.3", None),
        ("1.-2.3", None),
        ("1.2.3-\u{3b1}", None),
        ("\u{ff11}.2.3", None),
        ("1.2.3-\u{661}", None),
        (
            "18446744073709551615.18446744073709551615.18446744073709551615",
            Some((
                18446744073709551615,
                18446744073709551615,
                18446744073709551615,
                "",
            )),
        ),
        (
            "1.2.3-99999999999999999999",
            Some((1, 2, 3, "99999999999999999999")),
        ),
    ];

    /// Accepted by the Python reference but beyond `u64`: deliberately None here.
    const OVERFLOW_CASES: &[&str] = &[
        "18446744073709551616.0.0",
        "1.18446744073709551616.0",
        "1.2.18446744073709551616",
        "99999999999999999999",
    ];

    /// `sem_ver` cases: version, op, version, expected result (None = null).
    const SEM_VER_CASES: &[(&str, &str, &str, Option<bool>)] = &[
        // flagd-testbed semver.feature / testkit-flags.json and custom-ops.json pairs
        ("2.0.0", "=", "2.0.0", Some(true)),
        ("2.0.0", ">", "2.0.0", Some(false)),
        ("2.0.0", "<", "2.0.0", Some(false)),
        ("2.0.0", "=", "2.0.0.0", None),
        ("2.1.0", "=", "2.0.0", Some(false)),
        ("2.1.0", ">", "2.0.0", Some(true)),
        ("2.1.0", "<", "2.0.0", Some(false)),
        ("2.1.0", "=", "2.0.0.0", None),
        ("1.9.0", "=", "2.0.0", Some(false)),
        ("1.9.0", ">", "2.0.0", Some(false)),
        ("1.9.0", "<", "2.0.0", Some(true)),
        ("1.9.0", "=", "2.0.0.0", None),
        ("2.0.0-alpha", "=", "2.0.0", Some(false)),
        ("2.0.0-alpha", ">", "2.0.0", Some(false)),
        ("2.0.0-alpha", "<", "2.0.0", Some(true)),
        ("2.0.0-alpha", "=", "2.0.0.0", None),
        ("2.0.0.0", "=", "2.0.0", None),
        ("2.0.0.0", ">", "2.0.0", None),
        ("2.0.0.0", "<", "2.0.0", None),
        ("2.0.0.0", "=", "2.0.0.0", None),
        ("3.0.1", "~", "3.0.0", Some(true)),
        ("3.0.1", "^", "3.0.0", Some(true)),
        ("3.1.0", "~", "3.0.0", Some(false)),
        ("3.1.0", "^", "3.0.0", Some(true)),
        ("4.0.0", "~", "3.0.0", Some(false)),
        ("4.0.0", "^", "3.0.0", Some(false)),
        ("not-a-version", "=", "1.0.0", None),
        ("1.0.0", "===", "1.0.0", None),
        ("1.0.0", "=", "v1.0.0", Some(true)),
        ("v1.0.0", "=", "v1.0.0", Some(true)),
        ("V1.0.0", "=", "v1.0.0", Some(true)),
        ("2.0.0", "=", "v1.0.0", Some(false)),
        ("1.5.0", "^", "1", Some(true)),
        ("1.0.0", "^", "1", Some(true)),
        ("1.0", "^", "1", Some(true)),
        ("1", "^", "1", Some(true)),
        ("1.2", "^", "1", Some(true)),
        ("2.0.0", "^", "1", Some(false)),
        ("1.2", ">", "1.1", Some(true)),
        ("1.1", ">", "1.1", Some(false)),
        ("2", ">", "1.1", Some(true)),
        ("1", ">", "1.1", Some(false)),
        ("1.0.0", "=", "1.0.0+build", Some(true)),
        ("1.0.0+other", "=", "1.0.0+build", Some(true)),
        ("2.0.0", "=", "1.0.0+build", Some(false)),
        // invalid operators
        ("1.0.0", "==", "1.0.0", None),
        ("1.0.0", "", "1.0.0", None),
        ("1.0.0", " =", "1.0.0", None),
        ("1.0.0", "= ", "1.0.0", None),
        ("1.0.0", "=>", "1.0.0", None),
        ("1.0.0", "=<", "1.0.0", None),
        ("1.0.0", "<>", "1.0.0", None),
        ("1.0.0", "!", "1.0.0", None),
        ("1.0.0", "~>", "1.0.0", None),
        ("1.0.0", "^=", "1.0.0", None),
        ("1.0.0", "eq", "1.0.0", None),
        ("1.0.0", "~=", "1.0.0", None),
        ("1.0.0", "!==", "1.0.0", None),
        // every operator on a few pairs
        ("1.2.3", "=", "1.2.3", Some(true)),
        ("1.2.3", "!=", "1.2.3", Some(false)),
        ("1.2.3", "<", "1.2.3", Some(false)),
        ("1.2.3", "<=", "1.2.3", Some(true)),
        ("1.2.3", ">", "1.2.3", Some(false)),
        ("1.2.3", ">=", "1.2.3", Some(true)),
        ("1.2.3", "^", "1.2.3", Some(true)),
        ("1.2.3", "~", "1.2.3", Some(true)),
        ("1.2.3", "=", "1.2.4", Some(false)),
        ("1.2.3", "!=", "1.2.4", Some(true)),
        ("1.2.3", "<", "1.2.4", Some(true)),
        ("1.2.3", "<=", "1.2.4", Some(true)),
        ("1.2.3", ">", "1.2.4", Some(false)),
        ("1.2.3", ">=", "1.2.4", Some(false)),
        ("1.2.3", "^", "1.2.4", Some(true)),
        ("1.2.3", "~", "1.2.4", Some(true)),
        ("1.2.4", "=", "1.2.3", Some(false)),
        ("1.2.4", "!=", "1.2.3", Some(true)),
        ("1.2.4", "<", "1.2.3", Some(false)),
        ("1.2.4", "<=", "1.2.3", Some(false)),
        ("1.2.4", ">", "1.2.3", Some(true)),
        ("1.2.4", ">=", "1.2.3", Some(true)),
        ("1.2.4", "^", "1.2.3", Some(true)),
        ("1.2.4", "~", "1.2.3", Some(true)),
        ("1.3.0", "=", "1.2.9", Some(false)),
        ("1.3.0", "!=", "1.2.9", Some(true)),
        ("1.3.0", "<", "1.2.9", Some(false)),
        ("1.3.0", "<=", "1.2.9", Some(false)),
        ("1.3.0", ">", "1.2.9", Some(true)),
        ("1.3.0", ">=", "1.2.9", Some(true)),
        ("1.3.0", "^", "1.2.9", Some(true)),
        ("1.3.0", "~", "1.2.9", Some(false)),
        ("2.0.0", "=", "1.9.9", Some(false)),
        ("2.0.0", "!=", "1.9.9", Some(true)),
        ("2.0.0", "<", "1.9.9", Some(false)),
        ("2.0.0", "<=", "1.9.9", Some(false)),
        ("2.0.0", ">", "1.9.9", Some(true)),
        ("2.0.0", ">=", "1.9.9", Some(true)),
        ("2.0.0", "^", "1.9.9", Some(false)),
        ("2.0.0", "~", "1.9.9", Some(false)),
        ("1.2.3-alpha", "=", "1.2.3", Some(false)),
        ("1.2.3-alpha", "!=", "1.2.3", Some(true)),
        ("1.2.3-alpha", "<", "1.2.3", Some(true)),
        ("1.2.3-alpha", "<=", "1.2.3", Some(true)),
        ("1.2.3-alpha", ">", "1.2.3", Some(false)),
        ("1.2.3-alpha", ">=", "1.2.3", Some(false)),
        ("1.2.3-alpha", "^", "1.2.3", Some(true)),
        ("1.2.3-alpha", "~", "1.2.3", Some(true)),
        ("1.2.3", "=", "1.2.3-alpha", Some(false)),
        ("1.2.3", "!=", "1.2.3-alpha", Some(true)),
        ("1.2.3", "<", "1.2.3-alpha", Some(false)),
        ("1.2.3", "<=", "1.2.3-alpha", Some(false)),
        ("1.2.3", ">", "1.2.3-alpha", Some(true)),
        ("1.2.3", ">=", "1.2.3-alpha", Some(true)),
        ("1.2.3", "^", "1.2.3-alpha", Some(true)),
        ("1.2.3", "~", "1.2.3-alpha", Some(true)),
        ("1.0.0+build", "=", "1.0.0+other", Some(true)),
        ("1.0.0+build", "!=", "1.0.0+other", Some(false)),
        ("1.0.0+build", "<", "1.0.0+other", Some(false)),
        ("1.0.0+build", "<=", "1.0.0+other", Some(true)),
        ("1.0.0+build", ">", "1.0.0+other", Some(false)),
        ("1.0.0+build", ">=", "1.0.0+other", Some(true)),
        ("1.0.0+build", "^", "1.0.0+other", Some(true)),
        ("1.0.0+build", "~", "1.0.0+other", Some(true)),
        ("0.2.0", "=", "0.1.0", Some(false)),
        ("0.2.0", "!=", "0.1.0", Some(true)),
        ("0.2.0", "<", "0.1.0", Some(false)),
        ("0.2.0", "<=", "0.1.0", Some(false)),
        ("0.2.0", ">", "0.1.0", Some(true)),
        ("0.2.0", ">=", "0.1.0", Some(true)),
        ("0.2.0", "^", "0.1.0", Some(true)),
        ("0.2.0", "~", "0.1.0", Some(false)),
        ("1.2.3", "=", "1.2.3.4", None),
        ("1.2.3", "!=", "1.2.3.4", None),
        ("1.2.3", "<", "1.2.3.4", None),
        ("1.2.3", "<=", "1.2.3.4", None),
        ("1.2.3", ">", "1.2.3.4", None),
        ("1.2.3", ">=", "1.2.3.4", None),
        ("1.2.3", "^", "1.2.3.4", None),
        ("1.2.3", "~", "1.2.3.4", None),
        // precedence: the SemVer spec example chain, then more orderings
        ("1.0.0-alpha", "<", "1.0.0-alpha.1", Some(true)),
        ("1.0.0-alpha.1", ">", "1.0.0-alpha", Some(true)),
        ("1.0.0-alpha", "=", "1.0.0-alpha.1", Some(false)),
        ("1.0.0-alpha.1", "<", "1.0.0-alpha.beta", Some(true)),
        ("1.0.0-alpha.beta", ">", "1.0.0-alpha.1", Some(true)),
        ("1.0.0-alpha.1", "=", "1.0.0-alpha.beta", Some(false)),
        ("1.0.0-alpha.beta", "<", "1.0.0-beta", Some(true)),
        ("1.0.0-beta", ">", "1.0.0-alpha.beta", Some(true)),
        ("1.0.0-alpha.beta", "=", "1.0.0-beta", Some(false)),
        ("1.0.0-beta", "<", "1.0.0-beta.2", Some(true)),
        ("1.0.0-beta.2", ">", "1.0.0-beta", Some(true)),
        ("1.0.0-beta", "=", "1.0.0-beta.2", Some(false)),
        ("1.0.0-beta.2", "<", "1.0.0-beta.11", Some(true)),
        ("1.0.0-beta.11", ">", "1.0.0-beta.2", Some(true)),
        ("1.0.0-beta.2", "=", "1.0.0-beta.11", Some(false)),
        ("1.0.0-beta.11", "<", "1.0.0-rc.1", Some(true)),
        ("1.0.0-rc.1", ">", "1.0.0-beta.11", Some(true)),
        ("1.0.0-beta.11", "=", "1.0.0-rc.1", Some(false)),
        ("1.0.0-rc.1", "<", "1.0.0", Some(true)),
        ("1.0.0", ">", "1.0.0-rc.1", Some(true)),
        ("1.0.0-rc.1", "=", "1.0.0", Some(false)),
        ("1.0.0", "<", "2.0.0", Some(true)),
        ("1.0.0", ">", "2.0.0", Some(false)),
        ("2.0.0", "<", "2.1.0", Some(true)),
        ("2.0.0", ">", "2.1.0", Some(false)),
        ("2.1.0", "<", "2.1.1", Some(true)),
        ("2.1.0", ">", "2.1.1", Some(false)),
        ("1.9.0", "<", "1.10.0", Some(true)),
        ("1.9.0", ">", "1.10.0", Some(false)),
        ("1.0.0-2", "<", "1.0.0-10", Some(true)),
        ("1.0.0-2", ">", "1.0.0-10", Some(false)),
        ("1.0.0-alpha.2", "<", "1.0.0-alpha.10", Some(true)),
        ("1.0.0-alpha.2", ">", "1.0.0-alpha.10", Some(false)),
        ("1.0.0-alpha10", "<", "1.0.0-alpha2", Some(true)),
        ("1.0.0-alpha10", ">", "1.0.0-alpha2", Some(false)),
        ("1.0.0-1", "<", "1.0.0-a", Some(true)),
        ("1.0.0-1", ">", "1.0.0-a", Some(false)),
        ("1.0.0-a", "<", "1.0.0-b", Some(true)),
        ("1.0.0-a", ">", "1.0.0-b", Some(false)),
        ("1.0.0-A", "<", "1.0.0-a", Some(true)),
        ("1.0.0-A", ">", "1.0.0-a", Some(false)),
        ("1.0.0-1", "<", "1.0.0-0a", Some(true)),
        ("1.0.0-1", ">", "1.0.0-0a", Some(false)),
        ("1.0.0-Z", "<", "1.0.0--", Some(false)),
        ("1.0.0-Z", ">", "1.0.0--", Some(true)),
        (
            "1.0.0-18446744073709551615",
            "<",
            "1.0.0-99999999999999999999",
            Some(true),
        ),
        (
            "1.0.0-18446744073709551615",
            ">",
            "1.0.0-99999999999999999999",
            Some(false),
        ),
        ("1.0.0-alpha", "<", "1.0.0-alpha.0", Some(true)),
        ("1.0.0-alpha", ">", "1.0.0-alpha.0", Some(false)),
        ("1.0.0-a.b", "<", "1.0.0-a.b.c", Some(true)),
        ("1.0.0-a.b", ">", "1.0.0-a.b.c", Some(false)),
        ("1.0.0-0", "<", "1.0.0", Some(true)),
        ("1.0.0-0", ">", "1.0.0", Some(false)),
        ("0.9.9", "<", "1.0.0-0", Some(true)),
        ("0.9.9", ">", "1.0.0-0", Some(false)),
        // build metadata ignored
        ("1.0.0-rc.1+b1", "=", "1.0.0-rc.1+b2", Some(true)),
        ("1.0.0+b", "=", "1.0.0", Some(true)),
        ("1.0.0+1", "<", "1.0.0+2", Some(false)),
        // lenient forms
        ("v1", "=", "1.0.0", Some(true)),
        ("V1.2", "=", "1.2.0", Some(true)),
        ("1-beta", "=", "1.0.0-beta", Some(true)),
        ("2", "=", "2.0.0", Some(true)),
        ("1.2", "=", "1.2.0", Some(true)),
        ("1+build", "=", "1.0.0", Some(true)),
        ("v1.2.3", "=", "V1.2.3", Some(true)),
        ("1-beta", "<", "1", Some(true)),
        ("1.2-rc.1", "<", "1.2", Some(true)),
        // ^ and ~ are flagd's, not npm's
        ("1.9.9", "^", "1.0.0", Some(true)),
        ("1.0.0", "^", "1.9.9", Some(true)),
        ("2.0.0", "^", "1.0.0", Some(false)),
        ("1.0.0", "^", "2.0.0", Some(false)),
        ("1.0.0-alpha", "^", "1.0.0", Some(true)),
        ("1.2.9", "~", "1.2.0", Some(true)),
        ("1.3.0", "~", "1.2.0", Some(false)),
        ("0.0.1", "~", "0.0.2", Some(true)),
        ("1.2.0-rc.1", "~", "1.2.5", Some(true)),
        ("2.2.0", "~", "1.2.0", Some(false)),
        // invalid versions on either side
        ("", "=", "", None),
        ("", "!=", "", None),
        ("", "^", "", None),
        ("", "=", "1.0.0", None),
        ("", "!=", "1.0.0", None),
        ("", "^", "1.0.0", None),
        ("1.0.0", "=", "", None),
        ("1.0.0", "!=", "", None),
        ("1.0.0", "^", "", None),
        ("a.b.c", "=", "a.b.c", None),
        ("a.b.c", "!=", "a.b.c", None),
        ("a.b.c", "^", "a.b.c", None),
        ("01.2.3", "=", "1.2.3", None),
        ("01.2.3", "!=", "1.2.3", None),
        ("01.2.3", "^", "1.2.3", None),
        ("1.2.3-01", "=", "1.2.3", None),
        ("1.2.3-01", "!=", "1.2.3", None),
        ("1.2.3-01", "^", "1.2.3", None),
        ("1.2.3", "=", "1.2.3-", None),
        ("1.2.3", "!=", "1.2.3-", None),
        ("1.2.3", "^", "1.2.3-", None),
        ("1.2.3+", "=", "1.2.3", None),
        ("1.2.3+", "!=", "1.2.3", None),
        ("1.2.3+", "^", "1.2.3", None),
        ("1..2", "=", "1.0.2", None),
        ("1..2", "!=", "1.0.2", None),
        ("1..2", "^", "1.0.2", None),
        ("1.2.3.4", "=", "1.2.3.4", None),
        ("1.2.3.4", "!=", "1.2.3.4", None),
        ("1.2.3.4", "^", "1.2.3.4", None),
    ];
}
