//! Printing answers: aligned columns for people, the API's JSON for scripts.

use serde_json::Value;

use crate::Output;

/// Prints `rows` of `items` as a table (the `columns`, each a JSON field) or `json` whole.
pub fn list(output: Output, json: &Value, items: &[Value], columns: &[&str]) {
    match output {
        Output::Json => println!("{}", pretty(json)),
        Output::Table => {
            let cells: Vec<Vec<String>> = items
                .iter()
                .map(|item| columns.iter().map(|c| cell(&item[*c])).collect())
                .collect();
            table(columns, &cells);
        }
    }
}

/// Prints one object: `field  value` lines, or the JSON.
pub fn one(output: Output, json: &Value) {
    match output {
        Output::Json => println!("{}", pretty(json)),
        Output::Table => {
            let Some(map) = json.as_object() else {
                println!("{}", pretty(json));
                return;
            };
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                println!("{k:width$}  {}", cell(v));
            }
        }
    }
}

/// Prints a short confirmation (table) or the JSON.
pub fn done(output: Output, json: &Value, message: &str) {
    match output {
        Output::Json => println!("{}", pretty(json)),
        Output::Table => println!("{message}"),
    }
}

pub fn pretty(json: &Value) -> String {
    serde_json::to_string_pretty(json).unwrap_or_default()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn table(columns: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(
        columns
            .iter()
            .map(|c| c.to_uppercase())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
