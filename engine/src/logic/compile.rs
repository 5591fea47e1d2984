//! JsonLogic text to [`Expr`]: operator lookup, `$ref` inlining, constant folding and limits.

use serde_json::{Map, Value};

use super::{Expr, FixedBuckets, Fractional, Op, PathSeg, Special, StaticPath, Var, VarPath};
use crate::error::{Path, ValidationError};
use crate::ops::fractional::parse_weight;

/// Most expression nodes one flag's rule may expand to once every `$ref` is inlined; guards against
/// evaluators that reference each other many times over.
const MAX_NODES: usize = 100_000;

/// Compiles rules against one document's shared evaluators (`$evaluators`).
pub(crate) struct Compiler<'d> {
    evaluators: Option<&'d Map<String, Value>>,
    max_depth: usize,
    /// Evaluators being inlined, outermost first (cycle detection).
    ref_stack: Vec<&'d str>,
    nodes: usize,
    errors: Vec<ValidationError>,
}

impl<'d> Compiler<'d> {
    /// A compiler for rules that may reference `evaluators`, nesting at most `max_depth` levels.
    pub(crate) fn new(evaluators: Option<&'d Map<String, Value>>, max_depth: usize) -> Self {
        Compiler {
            evaluators,
            max_depth,
            ref_stack: Vec::new(),
            nodes: 0,
            errors: Vec::new(),
        }
    }

    /// Compiles one rule found at `path`; problems are collected, see [`Compiler::take_errors`].
    pub(crate) fn compile_rule(&mut self, rule: &'d Value, path: &mut Path<'d>) -> Expr {
        self.nodes = 0;
        self.compile(rule, path, 0)
    }

    /// Compiles the evaluator `name` on its own (to report its problems once, at its own path).
    pub(crate) fn compile_evaluator(
        &mut self,
        name: &'d str,
        rule: &'d Value,
        path: &mut Path<'d>,
    ) -> Expr {
        self.ref_stack.push(name);
        let e = self.compile_rule(rule, path);
        self.ref_stack.pop();
        e
    }

    /// The problems found so far, leaving none behind.
    pub(crate) fn take_errors(&mut self) -> Vec<ValidationError> {
        std::mem::take(&mut self.errors)
    }

    fn compile(&mut self, v: &'d Value, path: &mut Path<'d>, depth: usize) -> Expr {
        self.nodes += 1;
        if depth > self.max_depth {
            self.errors
                .push(path.error(format!("rule nested deeper than {} levels", self.max_depth)));
            return Expr::Lit(Value::Null);
        }
        if self.nodes > MAX_NODES {
            if self.nodes == MAX_NODES + 1 {
                self.errors.push(path.error(format!(
                    "rule expands to more than {MAX_NODES} nodes once $ref evaluators are inlined"
                )));
            }
            return Expr::Lit(Value::Null);
        }
        match v {
            Value::Array(items) => self.compile_array(items, path, depth),
            Value::Object(m) if m.len() == 1 => {
                let (name, args) = m.iter().next().expect("one member");
                path.push_key(name);
                let e = self.compile_operator(name, args, path, depth);
                path.pop();
                e
            }
            // Objects with zero or several members are data, as in json-logic-js.
            _ => Expr::Lit(v.clone()),
        }
    }

    fn compile_array(&mut self, items: &'d [Value], path: &mut Path<'d>, depth: usize) -> Expr {
        let exprs = self.compile_list(items, path, depth + 1);
        fold_constants(exprs)
    }

    /// Compiles each element of a list of arguments.
    fn compile_list(&mut self, items: &'d [Value], path: &mut Path<'d>, depth: usize) -> Vec<Expr> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                path.push_index(i);
                let e = self.compile(item, path, depth);
                path.pop();
                e
            })
            .collect()
    }

    /// Compiles an operator's arguments: an array is the argument list, anything else a single argument.
    fn compile_args(&mut self, args: &'d Value, path: &mut Path<'d>, depth: usize) -> Vec<Expr> {
        match args {
            Value::Array(items) => self.compile_list(items, path, depth + 1),
            single => vec![self.compile(single, path, depth + 1)],
        }
    }

    fn compile_operator(
        &mut self,
        name: &'d str,
        args: &'d Value,
        path: &mut Path<'d>,
        depth: usize,
    ) -> Expr {
        match name {
            "$ref" => self.inline_ref(args, path, depth),
            "var" => self.compile_var(args, path, depth),
            "fractional" => self.compile_fractional(args, path, depth),
            _ => match Op::from_name(name) {
                Some(op) => Expr::Call(op, self.compile_args(args, path, depth).into()),
                None => {
                    path.pop();
                    self.errors
                        .push(path.error(format!("unknown operator {}", Value::from(name))));
                    path.push_key(name);
                    Expr::Lit(Value::Null)
                }
            },
        }
    }

    /// `{"$ref": "name"}`: the shared evaluator's rule, compiled in place.
    fn inline_ref(&mut self, args: &'d Value, path: &mut Path<'d>, depth: usize) -> Expr {
        let Some(name) = args.as_str() else {
            self.errors
                .push(path.error("$ref must be the name of an evaluator (a string)"));
            return Expr::Lit(Value::Null);
        };
        let Some(rule) = self.evaluators.and_then(|e| e.get(name)) else {
            self.errors.push(path.error(format!(
                "unknown evaluator {} (not in $evaluators)",
                Value::from(name)
            )));
            return Expr::Lit(Value::Null);
        };
        if let Some(pos) = self.ref_stack.iter().position(|n| *n == name) {
            let mut cycle: Vec<&str> = self.ref_stack[pos..].to_vec();
            cycle.push(name);
            self.errors.push(path.error(format!(
                "$ref cycle: {}",
                cycle
                    .iter()
                    .map(|n| Value::from(*n).to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            )));
            return Expr::Lit(Value::Null);
        }
        // Problems inside the evaluator are reported at its own path when it is validated; here they
        // become one error at the reference.
        let outer_errors = std::mem::take(&mut self.errors);
        let mut inner_path = Path::default();
        inner_path.push_key("$evaluators");
        inner_path.push_key(name);
        self.ref_stack.push(name);
        let expr = self.compile(rule, &mut inner_path, depth);
        self.ref_stack.pop();
        let inner_errors = std::mem::replace(&mut self.errors, outer_errors);
        if let Some(first) = inner_errors.first() {
            self.errors.push(path.error(format!(
                "evaluator {} is invalid ({first})",
                Value::from(name)
            )));
        }
        expr
    }

    /// `{"var": path}`, `{"var": [path, default]}`.
    fn compile_var(&mut self, args: &'d Value, path: &mut Path<'d>, depth: usize) -> Expr {
        let mut list = self.compile_args(args, path, depth).into_iter();
        let path_expr = list.next().unwrap_or(Expr::Lit(Value::Null));
        let default = list.next();
        let path = match path_expr {
            Expr::Lit(lit) => VarPath::Static(static_path(&lit)),
            dynamic => VarPath::Dynamic(dynamic),
        };
        Expr::Var(Box::new(Var { path, default }))
    }

    /// `{"fractional": [bucketBy?, [variant, weight]...]}`.
    fn compile_fractional(&mut self, args: &'d Value, path: &mut Path<'d>, depth: usize) -> Expr {
        let mut list = self.compile_args(args, path, depth);
        // The shorthand form starts with a bucket (an array); otherwise the first argument is the
        // bucketing value.
        let shorthand = matches!(
            list.first(),
            Some(Expr::Array(_)) | Some(Expr::Lit(Value::Array(_)))
        );
        let bucket_by = if shorthand || list.is_empty() {
            None
        } else {
            Some(list.remove(0))
        };
        let fixed = fixed_buckets(&list);
        Expr::Fractional(Box::new(Fractional {
            bucket_by,
            buckets: list.into(),
            fixed,
        }))
    }
}

/// Folds an array of constants into one constant.
fn fold_constants(exprs: Vec<Expr>) -> Expr {
    if exprs.iter().all(|e| matches!(e, Expr::Lit(_))) {
        Expr::Lit(Value::Array(
            exprs
                .into_iter()
                .map(|e| match e {
                    Expr::Lit(v) => v,
                    _ => unreachable!("checked above"),
                })
                .collect(),
        ))
    } else {
        Expr::Array(exprs.into())
    }
}

/// A literal `var` path: `String(path)` split at dots (`null`, `""` and `[]` mean the whole data).
pub(crate) fn static_path(lit: &Value) -> StaticPath {
    let text = match lit {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => String::new(),
        other => crate::value::Val::from_json(other)
            .to_js_string()
            .into_owned(),
    };
    let segs: Box<[PathSeg]> = if text.is_empty() {
        Box::new([])
    } else {
        text.split('.').map(PathSeg::new).collect()
    };
    let special = match &*segs {
        [a, b] if &*a.key == "$flagd" && &*b.key == "flagKey" => Some(Special::FlagKey),
        [a, b] if &*a.key == "$flagd" && &*b.key == "timestamp" => Some(Special::Timestamp),
        _ => None,
    };
    StaticPath { segs, special }
}

/// Resolves `fractional` buckets once when all are literals.
fn fixed_buckets(buckets: &[Expr]) -> Option<Result<FixedBuckets, ()>> {
    let mut out = Vec::with_capacity(buckets.len());
    for b in buckets {
        let Expr::Lit(Value::Array(pair)) = b else {
            return None;
        };
        let weight = match pair.len() {
            1 => 1,
            2 => match parse_weight(&crate::value::Val::from_json(&pair[1])) {
                Some(w) => w,
                None => return Some(Err(())),
            },
            _ => return Some(Err(())),
        };
        out.push((pair[0].clone(), weight));
    }
    // Saturating, as at evaluation: weights are clamped to u64, so a plain sum can overflow (and
    // wrap into a total that looks valid).
    let total = out.iter().fold(0u64, |sum, (_, w)| sum.saturating_add(*w));
    Some(Ok(FixedBuckets {
        buckets: out.into(),
        total,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{EvaluationContext, FlagSet};

    /// Fixed `fractional` weights whose sum overflows u64 (found by the `flagset` fuzz target)
    /// neither panic nor wrap into a small valid-looking total: the total saturates, is over the
    /// limit, and the rule yields null (the default variant), exactly as when the same weights are
    /// computed at evaluation time.
    #[test]
    fn fixed_weights_that_overflow_saturate() {
        let huge = json!(7_666_666_666_666_666_666_666_666_666_666_665.0);
        for weights in [
            json!([["x", 24], ["y", huge]]),
            json!([["x", {"+": [24, 0]}], ["y", huge]]),
        ] {
            let mut rule = vec![json!({"var": "targetingKey"})];
            rule.extend(weights.as_array().unwrap().iter().cloned());
            let set = FlagSet::from_json(&json!({"flags": {"f": {
                "state": "ENABLED", "variants": {"x": "x", "y": "y", "d": "d"}, "defaultVariant": "d",
                "targeting": {"fractional": rule}}}}))
            .unwrap();
            let mut ctx = EvaluationContext::new();
            ctx.insert("targetingKey", "user-1");
            let r = set.resolve("f", &ctx);
            assert_eq!(r.value, Some(&json!("d")), "{weights}");
        }
    }
}
