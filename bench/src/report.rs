//! The result of a scenario: `bench/results/<scenario>.json` (every figure, machine-readable) and
//! `bench/results/<scenario>.md` (the same as tables, with the machine, the versions, the exact
//! configuration, each figure next to its baseline and the ratio, and the budgets).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::sys::{Machine, Pinning, Versions};

/// A table of a report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Table {
    /// Column titles.
    pub headers: Vec<String>,
    /// Rows, as many cells as headers.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn markdown(&self, out: &mut String) {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.headers));
        out.push_str(&line(&vec!["---".to_string(); self.headers.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
    }
}

/// A titled part of a report: paragraphs and a table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// Paragraphs before the table.
    pub text: Vec<String>,
    /// The table, if any.
    pub table: Option<Table>,
}

/// A budget (docs/architecture.md#budgets) checked against a figure.
#[derive(Clone, Debug, Serialize)]
pub struct Budget {
    /// What is budgeted.
    pub name: String,
    /// The budget as docs/architecture.md states it.
    pub budget: String,
    /// The figure measured.
    pub figure: String,
    /// Met (`Some(true)`), missed (`Some(false)`) or not measured (`None`).
    pub met: Option<bool>,
    /// Conditions, caveats.
    pub note: String,
}

impl Budget {
    fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        }
    }
}

/// One scenario's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Whether this was a smoke run (tiny loads: the figures mean nothing).
    pub smoke: bool,
    /// When it ran (UTC, RFC 3339).
    pub started_at: String,
    /// Seconds it took.
    pub seconds: f64,
    /// The machine.
    pub machine: Machine,
    /// Versions.
    pub versions: Versions,
    /// Who ran on which core.
    pub pinning: Pinning,
    /// The exact configuration (scenario-specific).
    pub config: Value,
    /// Remarks: availability of baselines, machine noise, what could not run and why.
    pub notes: Vec<String>,
    /// Budgets (docs/architecture.md#budgets) this scenario checks.
    pub budgets: Vec<Budget>,
    /// Presentation of the figures.
    pub sections: Vec<Section>,
    /// Every figure, machine-readable.
    pub data: Value,
}

impl Report {
    /// An empty report of `scenario`.
    pub fn new(scenario: &str, smoke: bool, pinning: &Pinning) -> Report {
        Report {
            scenario: scenario.into(),
            smoke,
            started_at: now_rfc3339(),
            seconds: 0.0,
            machine: Machine::detect(),
            versions: Versions::detect(),
            pinning: pinning.clone(),
            config: Value::Null,
            notes: Vec::new(),
            budgets: Vec::new(),
            sections: Vec::new(),
            data: Value::Null,
        }
    }

    /// Adds a note.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Adds a budget check (never judged in a smoke run).
    pub fn budget(
        &mut self,
        name: &str,
        budget: &str,
        figure: String,
        met: Option<bool>,
        note: &str,
    ) {
        let (met, note) = if self.smoke {
            (None, format!("smoke run, not judged; {note}"))
        } else {
            (met, note.to_string())
        };
        self.budgets.push(Budget {
            name: name.into(),
            budget: budget.into(),
            figure,
            met,
            note,
        });
    }

    /// Writes `<dir>/<scenario>.json` and `<dir>/<scenario>.md`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join(format!("{}.json", self.scenario));
        let md = dir.join(format!("{}.md", self.scenario));
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(&md, self.markdown())?;
        Ok((json, md))
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmark `{}`\n", self.scenario);
        if self.smoke {
            out.push_str(
                "**Smoke run**: tiny loads to check the harness; these figures mean nothing.\n\n",
            );
        }
        self.setup(&mut out);
        if !self.budgets.is_empty() {
            out.push_str("## Budgets (docs/architecture.md)\n\n");
            let mut t = Table::new(&["budget", "design", "figure", "verdict", "conditions"]);
            for b in &self.budgets {
                t.row(vec![
                    b.name.clone(),
                    b.budget.clone(),
                    b.figure.clone(),
                    b.verdict().into(),
                    b.note.clone(),
                ]);
            }
            t.markdown(&mut out);
            out.push('\n');
        }
        for s in &self.sections {
            let _ = writeln!(out, "## {}\n", s.title);
            for p in &s.text {
                let _ = writeln!(out, "{p}\n");
            }
            if let Some(t) = &s.table {
                t.markdown(&mut out);
                out.push('\n');
            }
        }
        if !self.notes.is_empty() {
            out.push_str("## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
            out.push('\n');
        }
        out
    }

    fn setup(&self, out: &mut String) {
        let m = &self.machine;
        let v = &self.versions;
        out.push_str("## Setup\n\n| | |\n|---|---|\n");
        let _ = writeln!(
            out,
            "| started | {} ({:.0} s) |",
            self.started_at, self.seconds
        );
        let _ = writeln!(
            out,
            "| machine | {} cores, {}, {} MiB RAM, Linux {} |",
            m.cores, m.cpu_model, m.memory_mib, m.kernel
        );
        let _ = writeln!(out, "| load average at start | {} |", m.load_average);
        let _ = writeln!(out, "| rustc | {} |", v.rustc);
        let _ = writeln!(
            out,
            "| git commit | `{}` ({} build) |",
            v.git_commit, v.profile
        );
        let _ = writeln!(out, "| pinning | {} |", self.pinning.describe());
        let _ = writeln!(
            out,
            "\nConfiguration:\n\n```json\n{}\n```\n",
            serde_json::to_string_pretty(&self.config).unwrap_or_default()
        );
    }
}

/// The current UTC time as RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `a / b` as `1.23×`, or `—` when either side is missing or zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => {
            format!("{:.2}×", a / b)
        }
        _ => "—".into(),
    }
}

/// A rate in requests per second: `12,345/s`.
pub fn fmt_rate(rps: f64) -> String {
    let n = rps.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out + "/s"
}

/// KiB as `12.3 MiB`.
pub fn fmt_kib(kib: f64) -> String {
    if kib >= 1024.0 {
        format!("{:.1} MiB", kib / 1024.0)
    } else {
        format!("{kib:.0} KiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_numbers_format() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(fmt_rate(1234567.4), "1,234,567/s");
        assert_eq!(fmt_rate(999.0), "999/s");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50×");
        assert_eq!(ratio(Some(3.0), None), "—");
        assert_eq!(fmt_kib(2048.0), "2.0 MiB");
    }

    #[test]
    fn the_markdown_has_setup_budgets_and_tables() {
        let mut r = Report::new("x", false, &Pinning::plan(false));
        r.budget("b", "≤ 1", "2".into(), Some(false), "c");
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["1".into(), "2".into()]);
        r.sections.push(Section {
            title: "T".into(),
            text: vec!["p".into()],
            table: Some(t),
        });
        let md = r.markdown();
        assert!(md.contains("## Setup"), "{md}");
        assert!(md.contains("**missed**"), "{md}");
        assert!(md.contains("| 1 | 2 |"), "{md}");
    }
}
