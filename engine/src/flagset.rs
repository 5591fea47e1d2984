//! The flag-set document (flagd's format), its validation and compilation into a [`FlagSet`].

use std::sync::Arc;

use rustc_hash::FxHashMap;

use serde_json::{Map, Value};

use crate::error::{Path, ValidationError, ValidationErrors};
use crate::logic::Expr;
use crate::logic::compile::Compiler;
use crate::ops::fractional::FractionalVersion;

/// Flag or flag-set metadata: string, number and boolean values by key.
pub type Metadata = Map<String, Value>;

/// The flag-set metadata key that selects the `fractional` algorithm: `"v3"` (the default, current
/// flagd) or `"v2"` (flagd before testbed 3.9, for fleets sharing buckets with older flagd).
pub const FRACTIONAL_VERSION_KEY: &str = "vexil.fractional";

/// Limits applied while compiling a document (docs/architecture.md#limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest JsonLogic nesting accepted in a rule, `$ref` evaluators included.
    pub max_depth: usize,
    /// Most flags one document may hold.
    pub max_flags: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_flags: 100_000,
        }
    }
}

/// How a document with problems is treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Any problem rejects the whole document (what the control plane does before storing).
    #[default]
    Strict,
    /// Problems in a flag make only that flag fail at evaluation (`PARSE_ERROR`), as flagd does with a
    /// file it loads; the problems are kept in [`FlagSet::problems`]. A document that is not a flag set
    /// at all is still rejected.
    Lenient,
}

/// Options for [`FlagSet::compile`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CompileOptions {
    /// Size and depth limits.
    pub limits: Limits,
    /// Strict or lenient handling of problems.
    pub mode: Mode,
}

/// Whether a flag is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlagState {
    /// Evaluated normally.
    Enabled,
    /// Answers the caller's default with reason `DISABLED` (the kill switch).
    Disabled,
}

/// The type of a flag's values, from its variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `true` / `false`.
    Boolean,
    /// Strings.
    String,
    /// Numbers that are all integers.
    Integer,
    /// Numbers, at least one with a fraction.
    Float,
    /// Objects (or arrays).
    Object,
}

impl ValueKind {
    /// The kind of one JSON value; `None` for null.
    pub fn of(v: &Value) -> Option<ValueKind> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(_) => ValueKind::Boolean,
            Value::String(_) => ValueKind::String,
            Value::Number(n) if n.is_f64() => ValueKind::Float,
            Value::Number(_) => ValueKind::Integer,
            Value::Array(_) | Value::Object(_) => ValueKind::Object,
        })
    }

    /// Lower-case name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Boolean => "boolean",
            ValueKind::String => "string",
            ValueKind::Integer => "integer",
            ValueKind::Float => "float",
            ValueKind::Object => "object",
        }
    }

    /// Integers and floats are both numbers; anything else mixes only with itself.
    fn family(self) -> u8 {
        match self {
            ValueKind::Boolean => 0,
            ValueKind::String => 1,
            ValueKind::Integer | ValueKind::Float => 2,
            ValueKind::Object => 3,
        }
    }
}

/// How a flag picks its variant.
#[derive(Clone, Debug)]
pub(crate) enum Targeting {
    /// No rule (absent, or `{}`): the default variant, reason `STATIC`.
    Static,
    /// A compiled rule.
    Rule(Expr),
    /// The definition had problems (lenient mode only): evaluation answers `PARSE_ERROR`.
    Broken(Box<str>),
}

/// One compiled flag.
#[derive(Clone, Debug)]
pub struct Flag {
    /// Shared with the set's index (an `Arc`, so indexing a set costs no key copies).
    pub(crate) key: Arc<str>,
    pub(crate) state: FlagState,
    pub(crate) variants: Box<[(Box<str>, Value)]>,
    pub(crate) default_variant: Option<usize>,
    pub(crate) targeting: Targeting,
    pub(crate) kind: Option<ValueKind>,
    /// Flag-set metadata overlaid with the flag's own.
    pub(crate) metadata: Metadata,
    /// The definition as compact JSON text. Kept as text, not as a `Value`: a `Value` costs about
    /// 4 KB per flag (every JSON object is a `BTreeMap` node of 640 bytes), twenty times the text,
    /// and it is only read when the set is turned back into a document or compared.
    pub(crate) definition: Box<str>,
}

impl Flag {
    /// The flag's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Enabled or disabled.
    pub fn state(&self) -> FlagState {
        self.state
    }

    /// Variant names and values, in document order.
    pub fn variants(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.variants.iter().map(|(k, v)| (&**k, v))
    }

    /// The value of variant `name`.
    pub fn variant(&self, name: &str) -> Option<&Value> {
        self.variant_index(name).map(|i| &self.variants[i].1)
    }

    /// The default variant's name, when there is one.
    pub fn default_variant(&self) -> Option<&str> {
        self.default_variant.map(|i| &*self.variants[i].0)
    }

    /// The type of the flag's values; `None` only for a broken flag kept in lenient mode.
    pub fn kind(&self) -> Option<ValueKind> {
        self.kind
    }

    /// Metadata as resolutions report it: the flag set's, overlaid with the flag's own.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The flag's definition exactly as it was in the document (before `$ref` inlining), parsed
    /// from [`Flag::definition_json`] on each call.
    pub fn definition(&self) -> Value {
        serde_json::from_str(&self.definition).expect("a definition serialized by serde_json")
    }

    /// The flag's definition as compact JSON text (object keys sorted). Two flags have equal
    /// definitions exactly when these texts are equal.
    pub fn definition_json(&self) -> &str {
        &self.definition
    }

    /// True when the definition had problems (lenient mode) and evaluation answers `PARSE_ERROR`.
    pub fn is_broken(&self) -> bool {
        matches!(self.targeting, Targeting::Broken(_))
    }

    /// True when the flag has a targeting rule.
    pub fn is_targeted(&self) -> bool {
        matches!(self.targeting, Targeting::Rule(_))
    }

    /// The top-level context attributes the flag's evaluation can read, sorted: its result is a
    /// function of their values alone (and of the flag set). `None` when that cannot be known
    /// from the rule: a `var` with a computed path or of the whole context, `$flagd.timestamp`
    /// (the clock), `missing` and `missing_some` (computed names). A flag without a rule reads
    /// nothing. The sidecar keys its decision cache on these values.
    pub fn context_reads(&self) -> Option<Vec<&str>> {
        let mut out = std::collections::BTreeSet::new();
        match &self.targeting {
            Targeting::Rule(expr) => crate::logic::reads(expr, &mut out).then_some(())?,
            Targeting::Static | Targeting::Broken(_) => {}
        }
        Some(out.into_iter().collect())
    }

    pub(crate) fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|(k, _)| &**k == name)
    }
}

/// A compiled, immutable flag set: what every evaluation reads. Cheap to share (`Send + Sync`, no
/// interior mutability); a new revision is a new `FlagSet` swapped in whole.
#[derive(Clone, Debug)]
pub struct FlagSet {
    /// Flags sorted by key. Each behind an `Arc` so that [`FlagSet::with_changes`] shares the flags a
    /// change leaves alone with the set it started from instead of compiling them again.
    pub(crate) flags: Box<[Arc<Flag>]>,
    /// Flag index by key. Fx hashing: keys come from operators, not from callers, and a lookup is
    /// on every evaluation's path.
    pub(crate) index: FxHashMap<Arc<str>, usize>,
    pub(crate) metadata: Metadata,
    pub(crate) evaluators: Map<String, Value>,
    pub(crate) fractional: FractionalVersion,
    pub(crate) problems: ValidationErrors,
}

impl Default for FlagSet {
    fn default() -> Self {
        FlagSet {
            flags: Box::new([]),
            index: FxHashMap::default(),
            metadata: Metadata::new(),
            evaluators: Map::new(),
            fractional: FractionalVersion::default(),
            problems: ValidationErrors::default(),
        }
    }
}

impl FlagSet {
    /// Parses and compiles a document strictly with the default limits.
    pub fn from_json(doc: &Value) -> Result<FlagSet, ValidationErrors> {
        Self::compile(doc, &CompileOptions::default())
    }

    /// Parses JSON text, then compiles it strictly with the default limits. A syntax error is reported
    /// with its line and column.
    pub fn from_json_str(text: &str) -> Result<FlagSet, ValidationErrors> {
        let doc = parse_json(text)?;
        Self::from_json(&doc)
    }

    /// Compiles a document. In [`Mode::Strict`] any problem is an error and every problem is listed;
    /// in [`Mode::Lenient`] only a document that is not a flag set at all is an error.
    pub fn compile(doc: &Value, options: &CompileOptions) -> Result<FlagSet, ValidationErrors> {
        let (set, problems) = build(doc, options)?;
        if options.mode == Mode::Strict && !problems.is_empty() {
            return Err(ValidationErrors(problems));
        }
        Ok(FlagSet {
            problems: ValidationErrors(problems),
            ..set
        })
    }

    /// Checks a document strictly and lists every problem (empty when it is valid).
    pub fn validate(doc: &Value, limits: Limits) -> ValidationErrors {
        let options = CompileOptions {
            limits,
            mode: Mode::Strict,
        };
        match build(doc, &options) {
            Ok((_, problems)) => ValidationErrors(problems),
            Err(e) => e,
        }
    }

    /// This set with some flags added, replaced (`upserts`: key and definition) or removed
    /// (`removals`), compiled as [`FlagSet::compile`] would compile the whole changed document.
    ///
    /// Only the upserted flags are compiled; every other flag is shared with `self`, so applying a
    /// one-flag change to a set of thousands costs about one flag's compilation rather than the
    /// whole set's. That is what a sidecar does with each sync delta. The set's metadata,
    /// `$evaluators` and `fractional` version are `self`'s: when those change, compile the whole
    /// document instead. A key both upserted and removed is upserted. In [`Mode::Strict`] a
    /// problem in an upserted flag is an error; in [`Mode::Lenient`] the flag is kept broken and
    /// its problems replace the ones `self` listed for that key.
    pub fn with_changes<'d>(
        &self,
        upserts: impl IntoIterator<Item = (&'d str, &'d Value)>,
        removals: impl IntoIterator<Item = &'d str>,
        options: &CompileOptions,
    ) -> Result<FlagSet, ValidationErrors> {
        // A key upserted twice: its last definition, as inserting into the document would give.
        let upserts: FxHashMap<&str, &Value> = upserts.into_iter().collect();
        let mut dropped: rustc_hash::FxHashSet<&str> = removals.into_iter().collect();
        dropped.extend(upserts.keys().copied());

        let mut problems = Vec::new();
        let mut path = Path::default();
        path.push_key("flags");
        let mut compiler = Compiler::new(Some(&self.evaluators), options.limits.max_depth);
        let compiled: Vec<Arc<Flag>> = upserts
            .iter()
            .map(|(&key, &def)| {
                Arc::new(compile_flag(
                    key,
                    def,
                    &self.metadata,
                    &mut compiler,
                    &mut path,
                    &mut problems,
                    options.mode,
                ))
            })
            .collect();
        // The usual delta replaces flags that exist and removes none: the order and the index
        // stay as they are, so only the replaced slots change (no sort, no re-indexing).
        let replaces_only =
            dropped.len() == upserts.len() && upserts.keys().all(|k| self.index.contains_key(*k));
        let (flags, index) = if replaces_only {
            let mut flags = self.flags.to_vec();
            for flag in compiled {
                let slot = self.index[&*flag.key];
                flags[slot] = flag;
            }
            (flags, Some(self.index.clone()))
        } else {
            let mut flags: Vec<Arc<Flag>> = Vec::with_capacity(self.flags.len() + compiled.len());
            flags.extend(
                self.flags
                    .iter()
                    .filter(|f| !dropped.contains(&*f.key))
                    .cloned(),
            );
            flags.extend(compiled);
            (flags, None)
        };
        problems.extend(compiler.take_errors());
        if flags.len() > options.limits.max_flags {
            problems.push(ValidationError {
                path: "flags".into(),
                message: format!(
                    "{} flags, more than the limit of {}",
                    flags.len(),
                    options.limits.max_flags
                ),
            });
        }
        if options.mode == Mode::Strict && !problems.is_empty() {
            return Err(ValidationErrors(problems));
        }
        let prefixes: Vec<String> = dropped.iter().map(|k| flag_path(k)).collect();
        let mut kept: Vec<ValidationError> = self
            .problems
            .0
            .iter()
            .filter(|p| {
                p.path != "flags" && !prefixes.iter().any(|prefix| is_under(&p.path, prefix))
            })
            .cloned()
            .collect();
        kept.extend(problems);
        let set = FlagSet {
            flags: Box::new([]),
            index: FxHashMap::default(),
            metadata: self.metadata.clone(),
            evaluators: self.evaluators.clone(),
            fractional: self.fractional,
            problems: ValidationErrors(kept),
        };
        Ok(match index {
            Some(index) => FlagSet {
                flags: flags.into(),
                index,
                ..set
            },
            None => set.with_flags(flags),
        })
    }

    /// This set holding `flags` (in any order; sorted and indexed here).
    fn with_flags(mut self, mut flags: Vec<Arc<Flag>>) -> FlagSet {
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        self.index = flags
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key.clone(), i))
            .collect();
        self.flags = flags.into();
        self
    }

    /// The flag `key`.
    pub fn get(&self, key: &str) -> Option<&Flag> {
        self.index.get(key).map(|&i| &*self.flags[i])
    }

    /// The position of flag `key` in [`FlagSet::flags`] order (what [`FlagSet::variant_at`] takes).
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Every flag, sorted by key.
    pub fn flags(&self) -> impl ExactSizeIterator<Item = &Flag> {
        self.flags.iter().map(|f| &**f)
    }

    /// The number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// True when the set holds no flag.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// The flag-set metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The shared rules (`$evaluators`) as written.
    pub fn evaluators(&self) -> &Map<String, Value> {
        &self.evaluators
    }

    /// The `fractional` algorithm in force.
    pub fn fractional_version(&self) -> FractionalVersion {
        self.fractional
    }

    /// Problems tolerated in [`Mode::Lenient`] (always empty for a strictly compiled set).
    pub fn problems(&self) -> &ValidationErrors {
        &self.problems
    }

    /// The set as one flagd document: `flags`, `$evaluators` (when any) and `metadata` (when any).
    pub fn to_document(&self) -> Value {
        let mut doc = Map::new();
        let flags: Map<String, Value> = self
            .flags
            .iter()
            .map(|f| (f.key.to_string(), f.definition()))
            .collect();
        doc.insert("flags".into(), Value::Object(flags));
        if !self.evaluators.is_empty() {
            doc.insert("$evaluators".into(), Value::Object(self.evaluators.clone()));
        }
        if !self.metadata.is_empty() {
            doc.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        Value::Object(doc)
    }
}

/// Parses JSON text into a value, reporting a syntax error with its position.
pub fn parse_json(text: &str) -> Result<Value, ValidationErrors> {
    serde_json::from_str(text).map_err(|e| {
        ValidationErrors(vec![ValidationError {
            path: String::new(),
            message: format!(
                "invalid JSON at line {} column {}: {}",
                e.line(),
                e.column(),
                e
            ),
        }])
    })
}

const DOCUMENT_FIELDS: &[&str] = &["$schema", "flags", "$evaluators", "metadata"];
const FLAG_FIELDS: &[&str] = &[
    "state",
    "variants",
    "defaultVariant",
    "targeting",
    "metadata",
];

/// Builds a set, collecting every problem. `Err` only when the document is not a flag set at all.
fn build(
    doc: &Value,
    options: &CompileOptions,
) -> Result<(FlagSet, Vec<ValidationError>), ValidationErrors> {
    let fatal = |message: &str| {
        ValidationErrors(vec![ValidationError {
            path: String::new(),
            message: message.into(),
        }])
    };
    let Value::Object(root) = doc else {
        return Err(fatal("a flag set must be a JSON object"));
    };
    let mut problems = Vec::new();
    let mut path = Path::default();
    check_fields(root, DOCUMENT_FIELDS, &mut path, &mut problems);

    let metadata = section_metadata(root, &mut path, &mut problems);
    let fractional = fractional_version(&metadata, &mut problems);
    let evaluators = match object_member(root, "$evaluators", &mut path, &mut problems) {
        Some(e) => e.clone(),
        None => Map::new(),
    };
    let mut compiler = Compiler::new(Some(&evaluators), options.limits.max_depth);
    path.push_key("$evaluators");
    for (name, rule) in &evaluators {
        path.push_key(name);
        compiler.compile_evaluator(name, rule, &mut path);
        path.pop();
    }
    path.pop();
    problems.extend(compiler.take_errors());

    let flag_docs = match root.get("flags") {
        None => &Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(fatal("flags: must be an object of flag definitions by key")),
    };
    if flag_docs.len() > options.limits.max_flags {
        problems.push(ValidationError {
            path: "flags".into(),
            message: format!(
                "{} flags, more than the limit of {}",
                flag_docs.len(),
                options.limits.max_flags
            ),
        });
    }
    let mut flags = Vec::with_capacity(flag_docs.len());
    path.push_key("flags");
    for (key, def) in flag_docs {
        let flag = compile_flag(
            key,
            def,
            &metadata,
            &mut compiler,
            &mut path,
            &mut problems,
            options.mode,
        );
        flags.push(Arc::new(flag));
    }
    let set = FlagSet {
        flags: Box::new([]),
        index: FxHashMap::default(),
        metadata,
        evaluators,
        fractional,
        problems: ValidationErrors::default(),
    }
    .with_flags(flags);
    Ok((set, problems))
}

/// Compiles flag `key` under `path` (which ends at `flags`). In lenient mode a flag with problems is
/// kept, broken: it answers `PARSE_ERROR` with its first problem.
fn compile_flag<'d>(
    key: &'d str,
    def: &'d Value,
    set_metadata: &Metadata,
    compiler: &mut Compiler<'d>,
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
    mode: Mode,
) -> Flag {
    path.push_key(key);
    let before = problems.len();
    let mut flag = build_flag(key, def, set_metadata, compiler, path, problems);
    if problems.len() > before && mode == Mode::Lenient {
        flag.targeting = Targeting::Broken(problems[before].to_string().into());
    }
    path.pop();
    flag
}

/// The path prefix of every problem found in flag `key`, as [`Path`] formats it.
fn flag_path(key: &str) -> String {
    let mut path = Path::default();
    path.push_key("flags");
    path.push_key(key);
    path.to_string()
}

/// True when a problem at `problem` lies within `prefix` (the path itself or below it).
fn is_under(problem: &str, prefix: &str) -> bool {
    problem
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Reports members of `obj` that are not in `known`.
fn check_fields<'d>(
    obj: &'d Map<String, Value>,
    known: &[&str],
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
) {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            path.push_key(key);
            problems.push(path.error(format!(
                "unknown field; expected one of {}",
                known.join(", ")
            )));
            path.pop();
        }
    }
}

/// Member `key` when it is an object; a problem when it is present and something else.
fn object_member<'d>(
    obj: &'d Map<String, Value>,
    key: &'d str,
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
) -> Option<&'d Map<String, Value>> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            path.push_key(key);
            problems.push(path.error(format!("must be an object, found {}", type_name(other))));
            path.pop();
            None
        }
    }
}

/// The `metadata` member of a document or flag, checked: values must be strings, numbers or booleans.
fn section_metadata<'d>(
    obj: &'d Map<String, Value>,
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
) -> Metadata {
    let Some(m) = object_member(obj, "metadata", path, problems) else {
        return Metadata::new();
    };
    path.push_key("metadata");
    for (k, v) in m {
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            path.push_key(k);
            problems.push(path.error(format!(
                "metadata values must be strings, numbers or booleans, found {}",
                type_name(v)
            )));
            path.pop();
        }
    }
    path.pop();
    m.clone()
}

fn fractional_version(
    metadata: &Metadata,
    problems: &mut Vec<ValidationError>,
) -> FractionalVersion {
    match metadata.get(FRACTIONAL_VERSION_KEY) {
        None => FractionalVersion::V3,
        Some(Value::String(s)) if s == "v3" => FractionalVersion::V3,
        Some(Value::String(s)) if s == "v2" => FractionalVersion::V2,
        Some(_) => {
            let mut path = Path::default();
            path.push_key("metadata");
            path.push_key(FRACTIONAL_VERSION_KEY);
            problems.push(path.error("must be \"v2\" or \"v3\""));
            FractionalVersion::V3
        }
    }
}

/// Validates and compiles one flag; problems are appended, and a usable (possibly partial) flag is
/// always returned.
fn build_flag<'d>(
    key: &'d str,
    def: &'d Value,
    set_metadata: &Metadata,
    compiler: &mut Compiler<'d>,
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
) -> Flag {
    let mut flag = Flag {
        key: key.into(),
        state: FlagState::Enabled,
        variants: Box::new([]),
        default_variant: None,
        targeting: Targeting::Static,
        kind: None,
        metadata: set_metadata.clone(),
        definition: def.to_string().into(),
    };
    if key.is_empty() {
        problems.push(path.error("flag key must not be empty"));
    }
    let Value::Object(obj) = def else {
        problems.push(path.error(format!(
            "a flag must be an object, found {}",
            type_name(def)
        )));
        return flag;
    };
    check_fields(obj, FLAG_FIELDS, path, problems);
    flag.state = flag_state(obj, path, problems);
    let (variants, kind) = flag_variants(obj, path, problems);
    flag.variants = variants;
    flag.kind = kind;
    flag.default_variant = default_variant(obj, &flag, path, problems);
    flag.targeting = flag_targeting(obj, compiler, path, problems);
    for (k, v) in section_metadata(obj, path, problems) {
        flag.metadata.insert(k, v);
    }
    flag
}

fn flag_state<'d>(
    obj: &'d Map<String, Value>,
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
) -> FlagState {
    match obj.get("state").and_then(Value::as_str) {
        Some("ENABLED") => FlagState::Enabled,
        Some("DISABLED") => FlagState::Disabled,
        _ if !obj.contains_key("state") => {
            problems.push(path.error("missing field \"state\" (\"ENABLED\" or \"DISABLED\")"));
            FlagState::Enabled
        }
        _ => {
            path.push_key("state");
            problems.push(path.error("must be \"ENABLED\" or \"DISABLED\""));
            path.pop();
            FlagState::Enabled
        }
    }
}

type Variants = Box<[(Box<str>, Value)]>;

fn flag_variants<'d>(
    obj: &'d Map<String, Value>,
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
) -> (Variants, Option<ValueKind>) {
    let variants = match obj.get("variants") {
        None => {
            problems.push(path.error("missing field \"variants\""));
            return (Box::new([]), None);
        }
        Some(Value::Object(m)) => m,
        Some(other) => {
            path.push_key("variants");
            problems.push(path.error(format!("must be an object, found {}", type_name(other))));
            path.pop();
            return (Box::new([]), None);
        }
    };
    path.push_key("variants");
    if variants.is_empty() {
        problems.push(path.error("empty"));
    }
    let mut kind: Option<(ValueKind, &str)> = None;
    for (name, value) in variants {
        let Some(k) = ValueKind::of(value) else {
            path.push_key(name);
            problems.push(path.error("a variant value must not be null"));
            path.pop();
            continue;
        };
        match kind {
            None => kind = Some((k, name)),
            Some((first, first_name)) if first.family() != k.family() => {
                problems.push(path.error(format!(
                    "variants of mixed types: {} is {}, {} is {}",
                    Value::from(first_name),
                    first.name(),
                    Value::from(name.as_str()),
                    k.name()
                )));
            }
            Some((first, first_name)) if k == ValueKind::Float && first == ValueKind::Integer => {
                kind = Some((k, first_name));
            }
            Some(_) => {}
        }
    }
    path.pop();
    let list = variants
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.clone()))
        .collect();
    (list, kind.map(|(k, _)| k))
}

fn default_variant<'d>(
    obj: &'d Map<String, Value>,
    flag: &Flag,
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
) -> Option<usize> {
    let name = match obj.get("defaultVariant") {
        None | Some(Value::Null) => return None,
        Some(Value::String(s)) if s.is_empty() => return None,
        Some(Value::String(s)) => s,
        Some(other) => {
            path.push_key("defaultVariant");
            problems.push(path.error(format!(
                "must be a variant name (a string) or null, found {}",
                type_name(other)
            )));
            path.pop();
            return None;
        }
    };
    let index = flag.variant_index(name);
    if index.is_none() && !flag.variants.is_empty() {
        path.push_key("defaultVariant");
        let names: Vec<String> = flag
            .variants
            .iter()
            .map(|(k, _)| Value::from(&**k).to_string())
            .collect();
        problems.push(path.error(format!(
            "{} is not a variant (variants: {})",
            Value::from(name.as_str()),
            names.join(", ")
        )));
        path.pop();
    }
    index
}

fn flag_targeting<'d>(
    obj: &'d Map<String, Value>,
    compiler: &mut Compiler<'d>,
    path: &mut Path<'d>,
    problems: &mut Vec<ValidationError>,
) -> Targeting {
    match obj.get("targeting") {
        None | Some(Value::Null) => Targeting::Static,
        Some(Value::Object(m)) if m.is_empty() => Targeting::Static,
        Some(rule @ Value::Object(_)) => {
            path.push_key("targeting");
            let expr = compiler.compile_rule(rule, path);
            path.pop();
            let errors = compiler.take_errors();
            match errors.first() {
                Some(first) => {
                    let t = Targeting::Broken(first.to_string().into());
                    problems.extend(errors);
                    t
                }
                None => Targeting::Rule(expr),
            }
        }
        Some(other) => {
            path.push_key("targeting");
            let e = path.error(format!(
                "must be a JsonLogic rule (an object), found {}",
                type_name(other)
            ));
            path.pop();
            let t = Targeting::Broken(e.to_string().into());
            problems.push(e);
            t
        }
    }
}

/// The JSON type of `v`, for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
