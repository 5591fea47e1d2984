//! Targeting rules: JsonLogic with flagd's operators, compiled once into a typed expression tree.
//!
//! [`compile`](compile::Compiler) turns a rule into an [`Expr`], resolving every `$ref` to a shared
//! evaluator by inlining it, checking operators, nesting depth and size, and reporting problems with
//! their JSON path. [`eval`](eval::eval) walks the tree against a borrowed context; it has no failure
//! mode of its own (as in JsonLogic, a type problem yields `null` or a coerced value), never touches
//! JSON text and allocates only where an operator builds a new string or array.

pub(crate) mod compile;
pub(crate) mod eval;

use serde_json::Value;

/// A compiled rule.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    /// A constant: a literal, or an array of literals folded at compile time.
    Lit(Value),
    /// An array literal with at least one computed element.
    Array(Box<[Expr]>),
    /// A `var` lookup.
    Var(Box<Var>),
    /// flagd's `fractional`.
    Fractional(Box<Fractional>),
    /// Any other operator with its (unevaluated) arguments.
    Call(Op, Box<[Expr]>),
}

/// Collects into `out` the first path segment of every context `var` that `expr` can read; false
/// when what it reads cannot be known from the rule ([`crate::Flag::context_reads`]). A `var`
/// inside `map`, `filter`, `reduce`, `all`, `none` or `some` may read the item rather than the
/// context: its name is collected all the same (a superset is safe), and a whole-item `var` (empty
/// path) counts as unknown.
pub(crate) fn reads<'e>(expr: &'e Expr, out: &mut std::collections::BTreeSet<&'e str>) -> bool {
    match expr {
        Expr::Lit(_) => true,
        Expr::Array(items) => items.iter().all(|e| reads(e, out)),
        Expr::Var(var) => {
            let path = match &var.path {
                VarPath::Dynamic(_) => return false,
                VarPath::Static(path) => path,
            };
            match (path.special, path.segs.first()) {
                (Some(Special::Timestamp), _) | (None, None) => return false,
                (Some(Special::FlagKey), _) => {}
                (None, Some(first)) => {
                    out.insert(&first.key);
                }
            }
            var.default.as_ref().is_none_or(|d| reads(d, out))
        }
        Expr::Fractional(f) => {
            if f.bucket_by.is_none() {
                // The shorthand buckets by flag key and `targetingKey`.
                out.insert("targetingKey");
            }
            f.bucket_by.as_ref().is_none_or(|e| reads(e, out))
                && f.buckets.iter().all(|e| reads(e, out))
        }
        Expr::Call(Op::Missing | Op::MissingSome, _) => false,
        Expr::Call(_, args) => args.iter().all(|e| reads(e, out)),
    }
}

/// The operators, besides `var` and `fractional` which have their own nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    If,
    Eq,
    StrictEq,
    Ne,
    StrictNe,
    Not,
    Truthy,
    Or,
    And,
    Lt,
    Le,
    Gt,
    Ge,
    Max,
    Min,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    In,
    Cat,
    Substr,
    Merge,
    Missing,
    MissingSome,
    Map,
    Filter,
    Reduce,
    All,
    None,
    Some,
    StartsWith,
    EndsWith,
    SemVer,
}

impl Op {
    /// The operator named `name`, as JsonLogic and flagd spell it.
    pub(crate) fn from_name(name: &str) -> Option<Op> {
        Some(match name {
            "if" | "?:" => Op::If,
            "==" => Op::Eq,
            "===" => Op::StrictEq,
            "!=" => Op::Ne,
            "!==" => Op::StrictNe,
            "!" => Op::Not,
            "!!" => Op::Truthy,
            "or" => Op::Or,
            "and" => Op::And,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "max" => Op::Max,
            "min" => Op::Min,
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "in" => Op::In,
            "cat" => Op::Cat,
            "substr" => Op::Substr,
            "merge" => Op::Merge,
            "missing" => Op::Missing,
            "missing_some" => Op::MissingSome,
            "map" => Op::Map,
            "filter" => Op::Filter,
            "reduce" => Op::Reduce,
            "all" => Op::All,
            "none" => Op::None,
            "some" => Op::Some,
            "starts_with" => Op::StartsWith,
            "ends_with" => Op::EndsWith,
            "sem_ver" => Op::SemVer,
            _ => return None,
        })
    }
}

/// A compiled `var`.
#[derive(Clone, Debug)]
pub(crate) struct Var {
    /// Where to look.
    pub(crate) path: VarPath,
    /// What to answer when nothing is there.
    pub(crate) default: Option<Expr>,
}

/// The path of a `var`: known at compile time (almost always) or computed.
#[derive(Clone, Debug)]
pub(crate) enum VarPath {
    /// A literal path, split at dots once.
    Static(StaticPath),
    /// A path computed by an expression, split at run time.
    Dynamic(Expr),
}

/// A literal `var` path.
#[derive(Clone, Debug)]
pub(crate) struct StaticPath {
    /// The dotted path's parts; empty means "the whole data".
    pub(crate) segs: Box<[PathSeg]>,
    /// `$flagd.flagKey` and `$flagd.timestamp`, which flagd injects into the root context.
    pub(crate) special: Option<Special>,
}

/// One part of a dotted `var` path.
#[derive(Clone, Debug)]
pub(crate) struct PathSeg {
    /// The member name.
    pub(crate) key: Box<str>,
    /// The same part as an array index, when it is one.
    pub(crate) index: Option<usize>,
}

impl PathSeg {
    /// A path part from its text. As in JavaScript, "01" or "+1" name a property, not an element.
    pub(crate) fn new(key: &str) -> Self {
        PathSeg {
            key: key.into(),
            index: key
                .parse()
                .ok()
                .filter(|_| key == "0" || !key.starts_with(['0', '+'])),
        }
    }
}

/// Context values flagd provides itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// `$flagd.flagKey`: the key of the flag being evaluated.
    FlagKey,
    /// `$flagd.timestamp`: the current Unix time in seconds.
    Timestamp,
}

/// A compiled `fractional`.
#[derive(Clone, Debug)]
pub(crate) struct Fractional {
    /// The bucketing value; `None` for the shorthand form, which buckets by flag key and targeting key.
    pub(crate) bucket_by: Option<Expr>,
    /// The `[variant, weight]` arguments.
    pub(crate) buckets: Box<[Expr]>,
    /// The buckets resolved at compile time when every one is a literal: `(variant, weight)`, with the
    /// weights already validated and clamped, or `Err(())` when a literal bucket is malformed.
    pub(crate) fixed: Option<Result<FixedBuckets, ()>>,
}

/// Literal buckets of a `fractional`, resolved once.
#[derive(Clone, Debug)]
pub(crate) struct FixedBuckets {
    /// Each variant with its weight (negative weights clamped to 0).
    pub(crate) buckets: Box<[(Value, u64)]>,
    /// The sum of the weights.
    pub(crate) total: u64,
}
