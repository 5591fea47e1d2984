//! Evaluation of a compiled rule against a borrowed context.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;

use serde_json::Value;

use super::{Expr, Fractional, Op, Special, StaticPath, Var, VarPath};
use crate::ops::fractional::{
    FractionalVersion, MAX_TOTAL_WEIGHT, bucket, hash_shorthand, hash_value, parse_weight,
};
use crate::ops::semver::{SemVerOp, Version, compare};
use crate::value::Val;

/// What one evaluation sees besides the rule: the context and flagd's own values.
pub(crate) struct Env<'a> {
    /// The evaluation context, a JSON object.
    pub(crate) root: &'a Value,
    /// `$flagd.flagKey`.
    pub(crate) flag_key: &'a str,
    /// `$flagd.timestamp`, read from the clock the first time a rule asks for it.
    pub(crate) now: Cell<Option<i64>>,
    /// The flag set's `fractional` algorithm.
    pub(crate) fractional: FractionalVersion,
}

impl<'a> Env<'a> {
    /// An environment for evaluating flag `flag_key` against `root`.
    pub(crate) fn new(root: &'a Value, flag_key: &'a str, fractional: FractionalVersion) -> Self {
        Env {
            root,
            flag_key,
            now: Cell::new(None),
            fractional,
        }
    }

    fn timestamp(&self) -> i64 {
        if let Some(t) = self.now.get() {
            return t;
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.now.set(Some(t));
        t
    }
}

/// What `var` reads: the context, or the element an array operator is visiting.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'s, 'a> {
    /// The evaluation context.
    Root,
    /// An element of `map`, `filter`, `all`, `none`, `some`.
    Item(&'s Val<'a>),
    /// A step of `reduce`: `{"current": ..., "accumulator": ...}`.
    Reduce {
        current: &'s Val<'a>,
        accumulator: &'s Val<'a>,
    },
}

/// Evaluates `expr`.
pub(crate) fn eval<'a>(expr: &'a Expr, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match expr {
        Expr::Lit(v) => Val::from_json(v),
        Expr::Array(items) => Val::Array(items.iter().map(|e| eval(e, env, scope)).collect()),
        Expr::Var(var) => eval_var(var, env, scope),
        Expr::Fractional(f) => eval_fractional(f, env, scope),
        Expr::Call(op, args) => eval_call(*op, args, env, scope),
    }
}

/// The truthiness of `expr`, without building its value where only truthiness matters: the
/// conditions of `if`, `!`, `!!` and the boolean operators inside them.
pub(crate) fn truthy<'a>(expr: &'a Expr, env: &Env<'a>, scope: Scope<'_, 'a>) -> bool {
    match expr {
        // `and` yields its first falsy operand or its last: truthy exactly when all are (and there
        // is at least one). `or` likewise, with any.
        Expr::Call(Op::And, args) => !args.is_empty() && args.iter().all(|e| truthy(e, env, scope)),
        Expr::Call(Op::Or, args) => args.iter().any(|e| truthy(e, env, scope)),
        Expr::Call(op, args) if is_predicate(*op) => predicate(*op, args, env, scope),
        _ => eval(expr, env, scope).truthy(),
    }
}

/// Evaluates an argument, `null` when absent.
#[inline]
fn arg<'a>(args: &'a [Expr], i: usize, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    // Literals and variables, the usual operands, without a trip through the dispatcher.
    match args.get(i) {
        Some(Expr::Lit(v)) => Val::from_json(v),
        Some(Expr::Var(var)) => eval_var(var, env, scope),
        Some(e) => eval(e, env, scope),
        None => Val::Null,
    }
}

fn eval_call<'a>(op: Op, args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let a = |i: usize| arg(args, i, env, scope);
    match op {
        Op::If => eval_if(args, env, scope),
        Op::Or => eval_or_and(args, env, scope, true),
        Op::And => eval_or_and(args, env, scope, false),
        Op::Eq
        | Op::Ne
        | Op::StrictEq
        | Op::StrictNe
        | Op::Not
        | Op::Truthy
        | Op::Lt
        | Op::Le
        | Op::Gt
        | Op::Ge
        | Op::In => Val::Bool(predicate(op, args, env, scope)),
        Op::Max => extremum(args, env, scope, f64::max),
        Op::Min => extremum(args, env, scope, f64::min),
        Op::Add => fold_numbers(args, env, scope, 0.0, |x, y| x + y),
        Op::Mul => fold_numbers(args, env, scope, 1.0, |x, y| x * y),
        Op::Sub => match args.len() {
            1 => Val::Num(-a(0).to_number()),
            _ => Val::Num(a(0).to_number() - a(1).to_number()),
        },
        Op::Div => Val::Num(a(0).to_number() / a(1).to_number()),
        Op::Mod => Val::Num(a(0).to_number() % a(1).to_number()),
        Op::Cat => eval_cat(args, env, scope),
        Op::Substr => eval_substr(&a(0), &a(1), args.get(2).map(|_| a(2))),
        Op::Merge => eval_merge(args, env, scope),
        Op::Missing => eval_missing(args, env, scope),
        Op::MissingSome => eval_missing_some(args, env, scope),
        Op::Map => eval_map(args, env, scope),
        Op::Filter => eval_filter(args, env, scope),
        Op::Reduce => eval_reduce(args, env, scope),
        Op::All => eval_quantifier(args, env, scope, Quantifier::All),
        Op::None => eval_quantifier(args, env, scope, Quantifier::None),
        Op::Some => eval_quantifier(args, env, scope, Quantifier::Some),
        Op::StartsWith => string_test(args, env, scope, |a, b| a.starts_with(b)),
        Op::EndsWith => string_test(args, env, scope, |a, b| a.ends_with(b)),
        Op::SemVer => eval_sem_ver(args, env, scope),
    }
}

fn eval_if<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let mut i = 0;
    while i + 1 < args.len() {
        if truthy(&args[i], env, scope) {
            return eval(&args[i + 1], env, scope);
        }
        i += 2;
    }
    if i < args.len() {
        eval(&args[i], env, scope)
    } else {
        Val::Null
    }
}

/// `or` returns the first truthy value, `and` the first falsy one; each the last value otherwise.
/// The operators that always yield a boolean, evaluated straight to `bool` (conditions are the hot
/// path of targeting: no value is built for their result).
fn predicate<'a>(op: Op, args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> bool {
    let a = |i: usize| arg(args, i, env, scope);
    match op {
        Op::Eq => a(0).loose_eq(&a(1)),
        Op::Ne => !a(0).loose_eq(&a(1)),
        Op::StrictEq => a(0).strict_eq(&a(1)),
        Op::StrictNe => !a(0).strict_eq(&a(1)),
        Op::Not => !args.first().is_some_and(|e| truthy(e, env, scope)),
        Op::Truthy => args.first().is_some_and(|e| truthy(e, env, scope)),
        Op::Lt => compare_chain(args, env, scope, |o| o == Ordering::Less),
        Op::Le => compare_chain(args, env, scope, |o| o != Ordering::Greater),
        Op::Gt => a(0).js_cmp(&a(1)) == Some(Ordering::Greater),
        Op::Ge => matches!(
            a(0).js_cmp(&a(1)),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Op::In => eval_in(&a(0), &a(1)),
        _ => eval_call(op, args, env, scope).truthy(),
    }
}

/// True for the operators [`predicate`] evaluates.
fn is_predicate(op: Op) -> bool {
    matches!(
        op,
        Op::Eq
            | Op::Ne
            | Op::StrictEq
            | Op::StrictNe
            | Op::Not
            | Op::Truthy
            | Op::Lt
            | Op::Le
            | Op::Gt
            | Op::Ge
            | Op::In
    )
}

fn eval_or_and<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>, or: bool) -> Val<'a> {
    let mut last = Val::Null;
    for e in args {
        last = eval(e, env, scope);
        if last.truthy() == or {
            return last;
        }
    }
    last
}

/// `<` and `<=`, with the three-argument "between" form `a < b < c`. As in the reference, a `null`
/// third argument (a missing bound) leaves the two-argument form.
fn compare_chain<'a>(
    args: &'a [Expr],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    holds: fn(Ordering) -> bool,
) -> bool {
    let a = arg(args, 0, env, scope);
    let b = arg(args, 1, env, scope);
    let first = a.js_cmp(&b).is_some_and(holds);
    if args.len() < 3 || !first {
        return first;
    }
    let c = arg(args, 2, env, scope);
    c.is_null() || b.js_cmp(&c).is_some_and(holds)
}

fn extremum<'a>(
    args: &'a [Expr],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    pick: fn(f64, f64) -> f64,
) -> Val<'a> {
    let mut acc: Option<f64> = None;
    for e in args {
        let n = eval(e, env, scope).to_number();
        if n.is_nan() {
            return Val::Num(f64::NAN);
        }
        acc = Some(acc.map_or(n, |a| pick(a, n)));
    }
    // `max` and `min` of nothing are NaN, as in the reference.
    Val::Num(acc.unwrap_or(f64::NAN))
}

/// `+` and `*` convert with `parseFloat`; a single `+` argument is a cast to number.
fn fold_numbers<'a>(
    args: &'a [Expr],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    init: f64,
    f: fn(f64, f64) -> f64,
) -> Val<'a> {
    let mut acc = init;
    for e in args {
        acc = f(acc, eval(e, env, scope).parse_float());
    }
    Val::Num(acc)
}

/// `in`: substring of a string, or strict membership in an array.
fn eval_in(needle: &Val<'_>, haystack: &Val<'_>) -> bool {
    if let Some(h) = haystack.as_str() {
        return h.contains(&*needle.to_js_string());
    }
    match haystack.array_iter() {
        Some(mut items) => items.any(|item| item.strict_eq(needle)),
        None => false,
    }
}

fn eval_cat<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    if let [single] = args {
        return Val::Str(eval(single, env, scope).to_js_string());
    }
    let mut out = String::new();
    for e in args {
        eval(e, env, scope).write_js_string(&mut out);
    }
    Val::Str(Cow::Owned(out))
}

/// `substr`: JavaScript's `substr(start, length)`, where a negative start counts from the end and a
/// negative length stops that many characters before the end.
fn eval_substr<'a>(source: &Val<'a>, start: &Val<'_>, len: Option<Val<'_>>) -> Val<'a> {
    let s = source.to_js_string();
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len() as i64;
    let start = start.to_number();
    let start = if start.is_nan() { 0 } else { start as i64 };
    let from = if start < 0 {
        (n + start).max(0)
    } else {
        start.min(n)
    };
    let to = match len.map(|l| l.to_number()) {
        None => n,
        Some(l) if l.is_nan() => from,
        Some(l) if l < 0.0 => (n + l as i64).max(from),
        Some(l) => (from + l as i64).min(n),
    };
    Val::Str(Cow::Owned(
        chars[from as usize..to as usize].iter().collect(),
    ))
}

fn eval_merge<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let mut out = Vec::new();
    for e in args {
        let v = eval(e, env, scope);
        match v.array_iter() {
            Some(items) => out.extend(items),
            None => out.push(v),
        }
    }
    Val::Array(out)
}

/// `missing`: the keys (from the arguments, or from a first argument that is an array) whose value
/// is absent, `null` or `""`.
fn eval_missing<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let first = arg(args, 0, env, scope);
    let keys: Vec<Val<'a>> = match first.array_iter() {
        Some(items) => items.collect(),
        None => args.iter().map(|e| eval(e, env, scope)).collect(),
    };
    Val::Array(missing_keys(keys, env, scope))
}

fn missing_keys<'a>(keys: Vec<Val<'a>>, env: &Env<'a>, scope: Scope<'_, 'a>) -> Vec<Val<'a>> {
    keys.into_iter()
        .filter(|k| {
            let path = super::compile::static_path(&k.to_json());
            match lookup_static(&path, env, scope) {
                None | Some(Val::Null) => true,
                Some(v) => v.as_str() == Some(""),
            }
        })
        .collect()
}

/// `missing_some`: `[]` when at least `need` of the keys are present, otherwise the missing ones.
fn eval_missing_some<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let need = arg(args, 0, env, scope).to_number();
    let keys: Vec<Val<'a>> = arg(args, 1, env, scope)
        .array_iter()
        .map(|it| it.collect())
        .unwrap_or_default();
    let total = keys.len();
    let missing = missing_keys(keys, env, scope);
    if (total - missing.len()) as f64 >= need {
        Val::Array(Vec::new())
    } else {
        Val::Array(missing)
    }
}

fn eval_map<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let items = arg(args, 0, env, scope);
    let Some(iter) = items.array_iter() else {
        return Val::Array(Vec::new());
    };
    let Some(logic) = args.get(1) else {
        return Val::Array(iter.map(|_| Val::Null).collect());
    };
    Val::Array(
        iter.map(|item| eval(logic, env, Scope::Item(&item)))
            .collect(),
    )
}

fn eval_filter<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let items = arg(args, 0, env, scope);
    let Some(iter) = items.array_iter() else {
        return Val::Array(Vec::new());
    };
    let Some(logic) = args.get(1) else {
        return Val::Array(Vec::new());
    };
    Val::Array(
        iter.filter(|item| truthy(logic, env, Scope::Item(item)))
            .collect(),
    )
}

fn eval_reduce<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let items = arg(args, 0, env, scope);
    let mut acc = arg(args, 2, env, scope);
    let (Some(iter), Some(logic)) = (items.array_iter(), args.get(1)) else {
        return acc;
    };
    for current in iter {
        acc = eval(
            logic,
            env,
            Scope::Reduce {
                current: &current,
                accumulator: &acc,
            },
        );
    }
    acc
}

#[derive(Clone, Copy)]
enum Quantifier {
    All,
    None,
    Some,
}

/// `all` (false on an empty array), `none` and `some`.
fn eval_quantifier<'a>(
    args: &'a [Expr],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    q: Quantifier,
) -> Val<'a> {
    let items = arg(args, 0, env, scope);
    let (iter, logic) = match (items.array_iter(), args.get(1)) {
        (Some(iter), Some(logic)) => (iter, logic),
        _ => return Val::Bool(matches!(q, Quantifier::None)),
    };
    let mut iter = iter.peekable();
    let test = |item: Val<'a>| truthy(logic, env, Scope::Item(&item));
    Val::Bool(match q {
        Quantifier::All => iter.peek().is_some() && iter.all(test),
        Quantifier::None => !iter.any(test),
        Quantifier::Some => iter.any(test),
    })
}

/// `starts_with` / `ends_with`: exactly two string arguments, otherwise `null`.
fn string_test<'a>(
    args: &'a [Expr],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    test: fn(&str, &str) -> bool,
) -> Val<'a> {
    if args.len() != 2 {
        return Val::Null;
    }
    let (a, b) = (arg(args, 0, env, scope), arg(args, 1, env, scope));
    match (a.as_str(), b.as_str()) {
        (Some(a), Some(b)) => Val::Bool(test(a, b)),
        _ => Val::Null,
    }
}

/// `sem_ver`: `[version, operator, version]`; `null` when anything does not parse.
fn eval_sem_ver<'a>(args: &'a [Expr], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    if args.len() != 3 {
        return Val::Null;
    }
    let (a, op, b) = (
        arg(args, 0, env, scope),
        arg(args, 1, env, scope),
        arg(args, 2, env, scope),
    );
    let Some(op) = op.as_str().and_then(SemVerOp::parse) else {
        return Val::Null;
    };
    let (a, b) = (version_text(&a), version_text(&b));
    match (
        a.as_deref().and_then(Version::parse),
        b.as_deref().and_then(Version::parse),
    ) {
        (Some(a), Some(b)) => Val::Bool(compare(&a, op, &b)),
        _ => Val::Null,
    }
}

/// The text of a version: a string as is, a number in its decimal form (`1.2`, `2`).
fn version_text<'v>(v: &'v Val<'_>) -> Option<Cow<'v, str>> {
    match v {
        Val::Str(s) => Some(Cow::Borrowed(s)),
        Val::Num(_) | Val::Ref(Value::Number(_)) => Some(v.to_js_string()),
        _ => None,
    }
}

fn eval_var<'a>(var: &'a Var, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let found = match &var.path {
        VarPath::Static(path) => lookup_static(path, env, scope),
        VarPath::Dynamic(e) => {
            // A computed `null` path, like a literal one, means the whole data.
            let key = match eval(e, env, scope) {
                Val::Null => Cow::Borrowed(""),
                key => key.to_js_string(),
            };
            lookup_static(
                &super::compile::static_path(&Value::from(&*key)),
                env,
                scope,
            )
        }
    };
    // As in the reference (flagd's Python core, and flagd's Go JsonLogic), the default answers for a
    // missing value, one under a missing or null parent, and a value that is present but null.
    match (found, &var.default) {
        (Some(v), _) if !v.is_null() => v,
        (_, Some(d)) => eval(d, env, scope),
        (_, None) => Val::Null,
    }
}

/// Walks a dotted path from the scope's data; `None` when something along it is missing.
fn lookup_static<'a>(path: &StaticPath, env: &Env<'a>, scope: Scope<'_, 'a>) -> Option<Val<'a>> {
    let segs = &path.segs[..];
    match scope {
        Scope::Root => match path.special {
            Some(Special::FlagKey) => Some(Val::Str(Cow::Borrowed(env.flag_key))),
            Some(Special::Timestamp) => Some(Val::Num(env.timestamp() as f64)),
            None => walk_json(env.root, segs),
        },
        Scope::Item(item) => walk(item.clone(), segs),
        Scope::Reduce {
            current,
            accumulator,
        } => {
            let (first, rest) = segs.split_first()?;
            let start = match &*first.key {
                "current" => current.clone(),
                "accumulator" => accumulator.clone(),
                _ => return None,
            };
            walk(start, rest)
        }
    }
}

/// Walks a path through borrowed JSON, wrapping the result once; the rare steps JSON cannot take by
/// reference (`length`, a character of a string) continue through [`walk`].
fn walk_json<'a>(mut cur: &'a Value, segs: &[super::PathSeg]) -> Option<Val<'a>> {
    for (i, seg) in segs.iter().enumerate() {
        cur = match (cur, seg.index) {
            (Value::Object(m), _) => member(m, &seg.key)?,
            (Value::Array(a), Some(ix)) => a.get(ix)?,
            (Value::Array(_) | Value::String(_), _) => {
                return walk(Val::from_json(cur), &segs[i..]);
            }
            _ => return None,
        };
    }
    Some(Val::from_json(cur))
}

/// Member `key` of a context object. Contexts are small: comparing for equality (length first) over
/// a few members beats the ordered search of the map, which pays a full comparison per step.
#[inline]
fn member<'a>(m: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    if m.len() <= 8 {
        m.iter().find_map(|(k, v)| (k.as_str() == key).then_some(v))
    } else {
        m.get(key)
    }
}

fn walk<'a>(mut cur: Val<'a>, segs: &[super::PathSeg]) -> Option<Val<'a>> {
    for seg in segs {
        cur = cur.get(&seg.key, seg.index)?;
    }
    Some(cur)
}

fn eval_fractional<'a>(f: &'a Fractional, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let Some(hash) = fractional_hash(f, env, scope) else {
        return Val::Null;
    };
    match &f.fixed {
        Some(Ok(fixed)) => {
            if fixed.total == 0 || fixed.total > MAX_TOTAL_WEIGHT {
                return Val::Null;
            }
            let target = bucket(hash, fixed.total);
            let mut end = 0;
            for (variant, weight) in &*fixed.buckets {
                end += weight;
                if target < end {
                    return Val::from_json(variant);
                }
            }
            Val::Null
        }
        Some(Err(())) => Val::Null,
        None => dynamic_buckets(f, env, scope, hash),
    }
}

/// The bucketing value's hash; `None` when there is no usable value.
fn fractional_hash(f: &Fractional, env: &Env<'_>, scope: Scope<'_, '_>) -> Option<u32> {
    match &f.bucket_by {
        Some(e) => {
            let v = eval(e, env, scope);
            if v.is_null() {
                return None;
            }
            hash_value(env.fractional, &v)
        }
        None => {
            let key = env.root.get("targetingKey")?.as_str()?;
            if key.is_empty() {
                return None;
            }
            Some(hash_shorthand(env.fractional, env.flag_key, key))
        }
    }
}

/// Buckets with computed variants or weights: evaluated once, then walked.
fn dynamic_buckets<'a>(
    f: &'a Fractional,
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    hash: u32,
) -> Val<'a> {
    let mut resolved = Vec::with_capacity(f.buckets.len());
    let mut total: u64 = 0;
    for b in &*f.buckets {
        let pair = eval(b, env, scope);
        let (variant, weight) = match pair.array_len() {
            Some(1) => (pair.array_get(0), Some(1)),
            Some(2) => (
                pair.array_get(0),
                pair.array_get(1).as_ref().and_then(parse_weight),
            ),
            _ => return Val::Null,
        };
        let (Some(variant), Some(weight)) = (variant, weight) else {
            return Val::Null;
        };
        total = total.saturating_add(weight);
        resolved.push((variant, weight));
    }
    if total == 0 || total > MAX_TOTAL_WEIGHT {
        return Val::Null;
    }
    let target = bucket(hash, total);
    let mut end = 0;
    for (variant, weight) in resolved {
        end += weight;
        if target < end {
            return variant;
        }
    }
    Val::Null
}
