//! What the declarations render: the effective configuration (`--print-config`) and the option
//! tables of the documentation.

use std::fmt::Write as _;

use crate::resolve::{Declared, Effective};

/// A TOML value as the documentation writes it: strings without quotes.
fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn names(e: &Effective) -> String {
    let s = e.setting;
    match (s.flag, s.env) {
        (Some(f), Some(v)) => format!("--{f} / {v}"),
        (Some(f), None) => format!("--{f}"),
        (None, Some(v)) => v.to_string(),
        (None, None) => s.name.to_string(),
    }
}

fn line(out: &mut String, key: &str, e: &Effective) {
    match &e.value {
        Some(v) => {
            let _ = writeln!(out, "{key} = {v}  # {}", e.origin);
        }
        None => {
            let _ = writeln!(out, "# {key}: not set");
        }
    }
}

fn is_array_of_tables(v: &toml::Value) -> bool {
    v.as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(toml::Value::is_table))
}

/// The effective configuration as a TOML document: each value with where it came from in a
/// comment (`default`, the file and line, the variable, the flag), secrets redacted; settings that
/// have no file key as comments.
pub fn print_config(effective: &[Effective], title: &str) -> String {
    let mut out = format!(
        "# {title}: the effective configuration. After each value, where it came from; secrets \
         are redacted.\n"
    );
    let mut top = String::new();
    let mut tables = String::new();
    let mut sections: Vec<(&str, String)> = Vec::new();
    for e in effective {
        let Some(key) = &e.key else {
            let _ = match &e.value {
                Some(v) => writeln!(out, "# {} = {v}  # {} (no file key)", names(e), e.origin),
                None => writeln!(out, "# {}: not set (no file key)", names(e)),
            };
            continue;
        };
        if let Some((section, k)) = key.rsplit_once('.') {
            let i = match sections.iter().position(|(s, _)| *s == section) {
                Some(i) => i,
                None => {
                    sections.push((section, String::new()));
                    sections.len() - 1
                }
            };
            line(&mut sections[i].1, k, e);
            continue;
        }
        match &e.value {
            Some(toml::Value::Table(t)) => {
                let _ = writeln!(tables, "\n[{key}]  # {}", e.origin);
                for (k, v) in t {
                    let _ = writeln!(tables, "{k} = {v}");
                }
            }
            Some(v) if is_array_of_tables(v) => {
                for item in v.as_array().into_iter().flatten() {
                    let _ = writeln!(tables, "\n[[{key}]]  # {}", e.origin);
                    for (k, v) in item.as_table().into_iter().flatten() {
                        let _ = writeln!(tables, "{k} = {v}");
                    }
                }
            }
            _ => line(&mut top, key, e),
        }
    }
    out.push_str(&top);
    out.push_str(&tables);
    for (section, lines) in sections {
        let _ = write!(out, "\n[{section}]\n{lines}");
    }
    out
}

/// The Markdown table of the settings of documentation group `group`: flag, variable, key in
/// `file`, default and meaning; only key, default and meaning when none has a flag or a variable
/// (a section of the file). Keys in a table are written `[table] key`.
pub fn doc_table(declared: &[Declared], group: &str, file: &str) -> String {
    let rows: Vec<&Declared> = declared.iter().filter(|d| d.group == group).collect();
    let cli = rows
        .iter()
        .any(|d| d.setting.flag.is_some() || d.setting.env.is_some());
    let code = |s: &str| format!("`{s}`");
    let mut out = if cli {
        format!("| flag | variable | `{file}` | default | meaning |\n|---|---|---|---|---|\n")
    } else {
        "| key | default | meaning |\n|---|---|---|\n".to_string()
    };
    for d in rows {
        let s = d.setting;
        let default = match (s.default_doc, (s.default)()) {
            (Some(text), _) => text.to_string(),
            (None, Some(v)) => code(&plain(&v)),
            (None, None) => "none".into(),
        };
        let meaning = s.doc_text().replace('|', "\\|");
        if cli {
            let key = d.key.as_deref().map(|k| code(&pretty_key(k)));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {default} | {meaning} |",
                s.flag.map(|f| code(&format!("--{f}"))).unwrap_or_default(),
                s.env.map(code).unwrap_or_default(),
                key.unwrap_or_default(),
            );
        } else {
            let key = d.key.as_deref().map(|k| code(&pretty_key(k)));
            let _ = writeln!(
                out,
                "| {} | {default} | {meaning} |",
                key.unwrap_or_default()
            );
        }
    }
    out
}

/// `sync.poll_interval_ms` as `[sync] poll_interval_ms`.
fn pretty_key(key: &str) -> String {
    match key.rsplit_once('.') {
        Some((section, k)) => format!("[{section}] {k}"),
        None => key.to_string(),
    }
}

const BEGIN: &str = "<!-- settings: ";
const END: &str = "<!-- /settings -->";

/// `text` (a Markdown document) with the content of each `<!-- settings: ID -->` ...
/// `<!-- /settings -->` block replaced by `table(ID)`; an error names an unknown ID or a block
/// left open.
pub fn update_docs(text: &str, table: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let close = after
            .find("-->")
            .ok_or_else(|| format!("unclosed comment after {BEGIN:?}"))?;
        let id = after[..close].trim();
        let body = &after[close + 3..];
        let end = body
            .find(END)
            .ok_or_else(|| format!("settings block {id:?} has no {END}"))?;
        let rendered = table(id).ok_or_else(|| format!("no settings table {id:?}"))?;
        out.push_str(&rest[..start + BEGIN.len() + close + 3]);
        out.push('\n');
        out.push_str(&rendered);
        out.push_str(END);
        rest = &body[end + END.len()..];
    }
    out.push_str(rest);
    Ok(out)
}
