//! Layered resolution of declared settings: default < file < environment variable < flag. Every
//! layer that gives a value is parsed and checked (a bad value in the file is reported even when a
//! flag overrides it); the highest valid one wins; every problem names the setting and the layer
//! it came from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::problem::Problems;
use crate::value::Value;

/// One setting, as declared (by [`settings!`](crate::settings)).
#[derive(Debug)]
pub struct Setting {
    /// The field that holds it.
    pub name: &'static str,
    /// Its documentation, one line per element.
    pub doc: &'static [&'static str],
    /// Its command-line flag, without `--`.
    pub flag: Option<&'static str>,
    /// Its environment variable.
    pub env: Option<&'static str>,
    /// Its key in the file, relative to the section that holds it.
    pub key: Option<&'static str>,
    /// How the documentation states the default, when the value alone would not say it.
    pub default_doc: Option<&'static str>,
    /// The default, as shown (`None`: not set).
    pub default: fn() -> Option<toml::Value>,
    /// Its flag takes no value.
    pub switch: bool,
    /// Its value is a list.
    pub list: bool,
}

impl Setting {
    /// The documentation as one paragraph.
    pub fn doc_text(&self) -> String {
        self.doc
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A setting where the structure holding it puts it.
#[derive(Debug)]
pub struct Declared {
    /// The setting.
    pub setting: &'static Setting,
    /// The documentation table it belongs to.
    pub group: &'static str,
    /// Its full dotted key in the file (`headers.max_bytes`), if it has one.
    pub key: Option<String>,
}

impl Declared {
    /// `setting` in `group`, in the section at `prefix`.
    pub fn new(prefix: &str, group: &'static str, setting: &'static Setting) -> Self {
        Declared {
            setting,
            group,
            key: setting.key.map(|k| join_key(prefix, k)),
        }
    }
}

/// A structure of settings (made by [`settings!`](crate::settings)).
pub trait Settings: Sized {
    /// Lists every setting, with its key under `prefix`.
    fn declare(prefix: &str, out: &mut Vec<Declared>);

    /// Resolves every setting (and section) from the layers of `r`, problems collected in `r`.
    fn resolve(r: &mut Resolver<'_>, prefix: &str) -> Self;

    /// Checks what no single setting can: combinations (this structure's and its sections').
    fn check(&self, r: &mut Resolver<'_>, prefix: &str);

    /// The settings that have file keys, as a TOML table (sections left out).
    fn show(&self) -> toml::Table;

    /// Every setting, in declaration order.
    fn declared() -> Vec<Declared> {
        let mut out = Vec::new();
        Self::declare("", &mut out);
        out
    }

    /// Runs [`Settings::check`] on a structure built in code.
    fn validate(&self) -> Result<(), Problems> {
        let layers = Layers::new();
        let mut r = Resolver::new(&layers);
        self.check(&mut r, "");
        r.problems.finish(())
    }
}

/// `prefix.key`, or `key` at the top level.
pub fn join_key(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{key}"),
    }
}

/// `path` followed by `rel`, a path inside its value (`[1]`, `name`, `[0].host`).
fn join_path(path: &str, rel: &str) -> String {
    if rel.is_empty() {
        path.to_string()
    } else if path.is_empty() || rel.starts_with('[') {
        format!("{path}{rel}")
    } else {
        format!("{path}.{rel}")
    }
}

/// A dotted file path as a reader finds it: `[headers] max_bytes`, `[context] targetingKey[1]`,
/// `routes[0].host`, `outbound_addr`.
fn pretty(path: &str) -> String {
    match path.find(['.', '[']) {
        Some(i) if path.as_bytes()[i] == b'.' => {
            format!("[{}] {}", &path[..i], &path[i + 1..])
        }
        _ => path.to_string(),
    }
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The declared default.
    Default,
    /// A file key (`line`: where in the file).
    File {
        /// The file as named on the command line.
        name: String,
        /// The line of the key, when known.
        line: Option<usize>,
    },
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File {
                name,
                line: Some(l),
            } => write!(f, "{name}:{l}"),
            Origin::File { name, line: None } => f.write_str(name),
            Origin::Env(name) => f.write_str(name),
            Origin::Flag(flag) => write!(f, "--{flag}"),
        }
    }
}

/// A parsed configuration file, with the line of each key.
#[derive(Clone, Debug, Default)]
pub struct File {
    name: String,
    table: toml::Table,
    lines: BTreeMap<String, usize>,
}

impl File {
    /// Parses `text`, the file named `name` (how problems will name it).
    pub fn parse(name: impl Into<String>, text: &str) -> Result<File, Problems> {
        let name = name.into();
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!(":{}", line_of(text, s.start)))
                .unwrap_or_default();
            Problems::one(format!("{name}{line}"), e.message().trim().to_string())
        })?;
        let mut lines = BTreeMap::new();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            index_lines(text, "", doc.get_ref(), &mut lines);
        }
        Ok(File { name, table, lines })
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<File, Problems> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problems::one(name.as_str(), format!("cannot read {name}: {e}")))?;
        File::parse(name, &text)
    }

    /// A file made of `table` (a record inside another value): problems name only the keys.
    pub fn from_table(table: toml::Table) -> File {
        File {
            table,
            ..File::default()
        }
    }

    /// The file's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value at a dotted key.
    fn get(&self, key: &str) -> Option<&toml::Value> {
        let mut parts = key.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    /// The line of `path`, or of the closest enclosing key that has one.
    fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(l) = self.lines.get(path) {
                return Some(*l);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }

    fn origin(&self, path: &str) -> Origin {
        Origin::File {
            name: self.name.clone(),
            line: self.line(path),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn index_lines(
    text: &str,
    prefix: &str,
    table: &toml::de::DeTable<'_>,
    out: &mut BTreeMap<String, usize>,
) {
    for (k, v) in table {
        let path = join_key(prefix, k.get_ref());
        out.insert(path.clone(), line_of(text, k.span().start));
        index_value(text, &path, v, out);
    }
}

fn index_value(
    text: &str,
    path: &str,
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    out: &mut BTreeMap<String, usize>,
) {
    match value.get_ref() {
        toml::de::DeValue::Table(t) => index_lines(text, path, t, out),
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                out.insert(path.clone(), line_of(text, item.span().start));
                index_value(text, &path, item, out);
            }
        }
        _ => {}
    }
}

/// Looks an environment variable up.
type Env = Box<dyn Fn(&str) -> Option<String>>;

/// The inputs of a resolution, each optional: a file, environment variables and flags.
pub struct Layers {
    file: Option<File>,
    env: Env,
    flags: BTreeMap<String, Vec<String>>,
}

impl Default for Layers {
    fn default() -> Self {
        Layers::new()
    }
}

impl Layers {
    /// Nothing: every setting takes its default.
    pub fn new() -> Self {
        Layers {
            file: None,
            env: Box::new(|_| None),
            flags: BTreeMap::new(),
        }
    }

    /// With this file (instead of the one `--config` or `VEXIL_CONFIG` names).
    pub fn file(mut self, file: File) -> Self {
        self.file = Some(file);
        self
    }

    /// With environment variables looked up through `env`.
    pub fn env(mut self, env: impl Fn(&str) -> Option<String> + 'static) -> Self {
        self.env = Box::new(env);
        self
    }

    /// With this process's environment variables.
    pub fn process_env(self) -> Self {
        self.env(|name| std::env::var(name).ok())
    }

    /// With flag `--name` given `value` (repeat for a list).
    pub fn flag(mut self, name: &str, value: impl Into<String>) -> Self {
        let name = name.trim_start_matches('-').to_string();
        self.flags.entry(name).or_default().push(value.into());
        self
    }

    /// The text of a variable; an empty one counts as not set.
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// Loads the file a top-level `config` setting names (flag, then variable), unless a file
    /// was given already.
    fn load_config(mut self, declared: &[Declared]) -> Result<Layers, Problems> {
        if self.file.is_some() {
            return Ok(self);
        }
        let Some(config) = declared.iter().find(|d| d.setting.name == "config") else {
            return Ok(self);
        };
        let s = config.setting;
        let given = s
            .flag
            .and_then(|f| Some((Origin::Flag(f), self.flags.get(f)?.last()?.clone())))
            .or_else(|| s.env.and_then(|e| Some((Origin::Env(e), self.var(e)?))));
        if let Some((origin, path)) = given {
            if self.config_optional(declared) && !Path::new(&path).exists() {
                return Ok(self);
            }
            // Unreadable: the flag or variable that named it; not TOML: the file and line.
            let file = File::read(Path::new(&path)).map_err(|p| {
                p.map_paths(|at| {
                    if at == path {
                        origin.to_string()
                    } else {
                        at.to_string()
                    }
                })
            })?;
            self.file = Some(file);
        }
        Ok(self)
    }
}

impl Layers {
    /// Whether a declared `config_optional` switch is on (flag, then variable): a `config` file
    /// that does not exist is then no error (one that exists is read and checked as always).
    /// An injected sidecar mounts its namespace's optional ConfigMap this way.
    fn config_optional(&self, declared: &[Declared]) -> bool {
        let Some(d) = declared
            .iter()
            .find(|d| d.setting.name == "config_optional")
        else {
            return false;
        };
        let s = d.setting;
        let text = s
            .flag
            .and_then(|f| self.flags.get(f)?.last().cloned())
            .or_else(|| s.env.and_then(|e| self.var(e)));
        text.is_some_and(|t| bool::from_text(&t).unwrap_or(false))
    }
}

/// What one setting resolved to, for `--print-config`.
#[derive(Clone, Debug)]
pub struct Effective {
    /// The setting.
    pub setting: &'static Setting,
    /// The section holding it.
    pub prefix: String,
    /// Its full file key.
    pub key: Option<String>,
    /// The value, as shown (secrets redacted; `None`: not set).
    pub value: Option<toml::Value>,
    /// Where it came from.
    pub origin: Origin,
}

/// Resolves settings from [`Layers`], collecting every problem.
pub struct Resolver<'a> {
    layers: &'a Layers,
    problems: Problems,
    known_keys: BTreeSet<String>,
    used_flags: BTreeSet<String>,
    failed: BTreeSet<String>,
    effective: Vec<Effective>,
}

impl<'a> Resolver<'a> {
    /// A resolver over `layers`.
    pub fn new(layers: &'a Layers) -> Self {
        Resolver {
            layers,
            problems: Problems::new(),
            known_keys: BTreeSet::new(),
            used_flags: BTreeSet::new(),
            failed: BTreeSet::new(),
            effective: Vec::new(),
        }
    }

    /// Where a problem of a value from `origin` at `key` (or of setting `s` without a key) sits.
    fn locate(&self, origin: &Origin, s: &Setting, key: Option<&str>, rel: &str) -> String {
        let with_rel = |base: String| {
            if rel.is_empty() {
                base
            } else {
                format!("{base} {rel}")
            }
        };
        match origin {
            Origin::Flag(_) | Origin::Env(_) => with_rel(origin.to_string()),
            Origin::File { name, .. } => {
                let path = join_path(key.unwrap_or(s.name), rel);
                let origin = self
                    .layers
                    .file
                    .as_ref()
                    .map_or_else(|| origin.clone(), |f| f.origin(&path));
                if name.is_empty() {
                    path
                } else {
                    format!("{origin} {}", pretty(&path))
                }
            }
            Origin::Default => {
                let name = s
                    .flag
                    .map(|f| format!("--{f}"))
                    .or_else(|| key.map(pretty))
                    .or_else(|| s.env.map(String::from))
                    .unwrap_or_else(|| s.name.to_string());
                with_rel(name)
            }
        }
    }

    fn report(&mut self, origin: &Origin, s: &Setting, key: Option<&str>, problems: Problems) {
        for p in problems {
            let path = self.locate(origin, s, key, &p.path);
            self.problems.push(path, p.message);
        }
    }

    /// Resolves setting `s` of the section at `prefix`: the flag, else the variable, else the file
    /// key, else `default`. Every value given is parsed and passed to `check`.
    pub fn get<P: Value>(
        &mut self,
        s: &'static Setting,
        prefix: &str,
        default: impl FnOnce() -> P,
        check: impl Fn(&P) -> Result<(), String>,
    ) -> P {
        let parse =
            |r: Result<P, Problems>| r.and_then(|v| check(&v).map(|()| v).map_err(Problems::from));
        let problems_before = self.problems.len();
        let key = s.key.map(|k| join_key(prefix, k));
        let mut chosen: Option<(P, Origin)> = None;
        if let Some(k) = &key {
            self.known_keys.insert(k.clone());
            if let Some(value) = self.layers.file.as_ref().and_then(|f| f.get(k)) {
                let origin = self
                    .layers
                    .file
                    .as_ref()
                    .map_or(Origin::Default, |f| f.origin(k));
                match parse(P::from_toml(value)) {
                    Ok(v) => chosen = Some((v, origin)),
                    Err(p) => self.report(&origin, s, Some(k), p),
                }
            }
        }
        if let Some(name) = s.env
            && let Some(text) = self.layers.var(name)
        {
            let origin = Origin::Env(name);
            match parse(P::from_text(&text)) {
                Ok(v) => chosen = Some((v, origin)),
                Err(p) => self.report(&origin, s, key.as_deref(), p),
            }
        }
        if let Some(flag) = s.flag
            && let Some(values) = self.layers.flags.get(flag)
        {
            self.used_flags.insert(flag.to_string());
            let origin = Origin::Flag(flag);
            if values.len() > 1 && !P::LIST {
                self.report(
                    &origin,
                    s,
                    key.as_deref(),
                    format!("given {} times; give it once", values.len()).into(),
                );
            } else {
                match parse(P::from_text(&values.join(","))) {
                    Ok(v) => chosen = Some((v, origin)),
                    Err(p) => self.report(&origin, s, key.as_deref(), p),
                }
            }
        }
        if self.problems.len() > problems_before {
            self.failed.insert(join_key(prefix, s.name));
        }
        let (value, origin) = chosen.unwrap_or_else(|| (default(), Origin::Default));
        self.effective.push(Effective {
            setting: s,
            prefix: prefix.to_string(),
            key,
            value: value.show(),
            origin,
        });
        value
    }

    fn find(&self, prefix: &str, name: &str) -> Option<&Effective> {
        self.effective
            .iter()
            .find(|e| e.prefix == prefix && e.setting.name == name)
    }

    /// Where setting `name` of the section at `prefix` got its value, as problems name it
    /// (`--inbound-addr`, `proxy.toml:3 inbound_addr`); its flag, key or variable when it was not
    /// set.
    pub fn location(&self, prefix: &str, name: &str) -> String {
        self.location_in(prefix, name, "")
    }

    /// Like [`Resolver::location`], for `rel` inside the value (`targetingKey`, `[2]`).
    pub fn location_in(&self, prefix: &str, name: &str, rel: &str) -> String {
        match self.find(prefix, name) {
            Some(e) => self.locate(&e.origin, e.setting, e.key.as_deref(), rel),
            // A structure built in code: only the name is known.
            None => join_path(&join_key(prefix, name), rel),
        }
    }

    /// True when setting `name` of the section at `prefix` was given (not its default).
    pub fn is_given(&self, prefix: &str, name: &str) -> bool {
        self.find(prefix, name)
            .is_some_and(|e| e.origin != Origin::Default)
    }

    /// True when a value given for setting `name` of the section at `prefix` was refused (a check
    /// of combinations should then not also call it missing).
    pub fn failed(&self, prefix: &str, name: &str) -> bool {
        self.failed.contains(&join_key(prefix, name))
    }

    /// Reports a problem of setting `name` (of the section at `prefix`), at `rel` inside its value.
    pub fn problem(&mut self, prefix: &str, name: &str, rel: &str, message: impl Into<String>) {
        let at = self.location_in(prefix, name, rel);
        self.problems.push(at, message);
    }

    /// Reports file keys no setting declares and flags no setting has.
    fn unknown(&mut self) {
        if let Some(file) = &self.layers.file {
            let mut found = Vec::new();
            walk_unknown(&file.table, "", &self.known_keys, &mut found);
            for (path, message) in found {
                let at = if file.name.is_empty() {
                    path
                } else {
                    format!("{} {}", file.origin(&path), pretty(&path))
                };
                self.problems.push(at, message);
            }
        }
        for flag in self.layers.flags.keys() {
            if !self.used_flags.contains(flag) {
                self.problems.push(format!("--{flag}"), "no such flag");
            }
        }
    }
}

fn walk_unknown(
    table: &toml::Table,
    prefix: &str,
    known: &BTreeSet<String>,
    found: &mut Vec<(String, String)>,
) {
    for (k, v) in table {
        let path = join_key(prefix, k);
        if known.contains(&path) {
            continue;
        }
        let inside = format!("{path}.");
        if known.iter().any(|k| k.starts_with(&inside)) {
            match v.as_table() {
                Some(t) => walk_unknown(t, &path, known, found),
                None => found.push((path, "expected a table of settings".into())),
            }
            continue;
        }
        let siblings = known.iter().filter_map(|k| {
            let rest = if prefix.is_empty() {
                k.as_str()
            } else {
                k.strip_prefix(&format!("{prefix}."))?
            };
            Some(rest.split('.').next().unwrap_or(rest))
        });
        let hint = siblings
            .filter(|s| edit_distance(s, k) <= 2)
            .min_by_key(|s| edit_distance(s, k))
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        found.push((path, format!("unknown key{hint}")));
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A resolved structure of settings, with where each value came from.
#[derive(Debug)]
pub struct Resolved<S> {
    /// The settings.
    pub settings: S,
    /// Each setting's value and origin, in declaration order.
    pub effective: Vec<Effective>,
}

/// Resolves `S` from `layers` (loading the file its `config` setting names, if any): the settings,
/// or every problem found.
pub fn resolve<S: Settings>(layers: Layers) -> Result<Resolved<S>, Problems> {
    let layers = layers.load_config(&S::declared())?;
    let mut r = Resolver::new(&layers);
    let settings = S::resolve(&mut r, "");
    settings.check(&mut r, "");
    r.unknown();
    let effective = std::mem::take(&mut r.effective);
    r.problems.finish(Resolved {
        settings,
        effective,
    })
}

/// Resolves a record (one element of a list value, a table) from `table`: problems are named by
/// their keys inside it.
pub fn resolve_record<S: Settings>(table: &toml::Table) -> Result<S, Problems> {
    let layers = Layers::new().file(File::from_table(table.clone()));
    let mut r = Resolver::new(&layers);
    let record = S::resolve(&mut r, "");
    record.check(&mut r, "");
    r.unknown();
    r.problems.finish(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_paths() {
        assert_eq!(join_key("", "a"), "a");
        assert_eq!(join_key("a", ""), "a");
        assert_eq!(join_key("a", "b"), "a.b");
        assert_eq!(join_path("context", "x[1]"), "context.x[1]");
        assert_eq!(join_path("routes", "[0].host"), "routes[0].host");
        assert_eq!(pretty("headers.max_bytes"), "[headers] max_bytes");
        assert_eq!(
            pretty("context.targetingKey[1]"),
            "[context] targetingKey[1]"
        );
        assert_eq!(pretty("routes[0].host"), "routes[0].host");
        assert_eq!(pretty("threads"), "threads");
        assert_eq!(edit_distance("grpc_adr", "grpc_addr"), 1);
    }

    #[test]
    fn files_know_their_lines() {
        let f = File::parse(
            "p.toml",
            "a = 1\n\n[context]\nx = [\"h\",\n  \"y\"]\n[[routes]]\nhost = \"h\"\n",
        )
        .unwrap();
        assert_eq!(f.line("a"), Some(1));
        assert_eq!(f.line("context.x"), Some(4));
        assert_eq!(f.line("context.x[1]"), Some(5));
        assert_eq!(f.line("routes[0].host"), Some(7));
        assert_eq!(f.line("routes[0].nothing"), f.line("routes[0]"));
        let e = File::parse("p.toml", "a = 1\nb = [\n").unwrap_err();
        assert!(e.to_string().starts_with("p.toml:"), "{e}");
    }
}
