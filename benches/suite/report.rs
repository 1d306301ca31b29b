//! The results table (Markdown) and the raw numbers (JSON).
#![allow(dead_code)] // the smoke test uses a part of this module

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::harness::Res;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    /// The measured value, with its unit.
    pub measured: String,
    /// Floor or baseline measured in the same run, with its unit ("" when there is none).
    pub baseline: String,
    /// measured / baseline, when that means something.
    pub ratio: Option<f64>,
    /// The target in words ("" when there is none, e.g. in a smoke run).
    pub target: String,
    /// `None`: informational, or no targets in this run.
    pub pass: Option<bool>,
    /// The number behind `measured`, for checks.
    pub value: f64,
}

impl Row {
    pub fn new(scenario: &str, metric: &str, measured: String, value: f64) -> Row {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            measured,
            baseline: String::new(),
            ratio: None,
            target: String::new(),
            pass: None,
            value,
        }
    }

    pub fn baseline(mut self, baseline: String, ratio: Option<f64>) -> Row {
        self.baseline = baseline;
        self.ratio = ratio.filter(|r| r.is_finite());
        self
    }

    /// Sets the target; `pass` is only recorded when targets apply to this run.
    pub fn target(mut self, targets: bool, target: &str, pass: bool) -> Row {
        if targets {
            self.target = target.into();
            self.pass = Some(pass);
        }
        self
    }

    /// A scenario that could not run to the end.
    pub fn error(scenario: &str, reason: &str) -> Row {
        let mut r = Row::new(
            scenario,
            "error",
            reason.lines().next().unwrap_or("").into(),
            f64::NAN,
        );
        r.pass = Some(false);
        r
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scale: String,
    pub started: String,
    pub wall_seconds: f64,
    pub machine: Value,
    pub settings: Value,
    pub rows: Vec<Row>,
    /// Per-scenario raw numbers: write breakdowns, CPU seconds, samples.
    pub details: serde_json::Map<String, Value>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "Run {} ({} scale), {:.0} s wall time. Machine: {} cores ({}), {} GiB RAM, Linux {}; load average at start {}.\n",
            self.started,
            self.scale,
            self.wall_seconds,
            m["nproc"],
            m["cpu"].as_str().unwrap_or("?"),
            m["mem_gib"],
            m["kernel"].as_str().unwrap_or("?"),
            m["loadavg_at_start"].as_str().unwrap_or("?"),
        );
        s.push_str("| scenario | metric | measured | floor / baseline | ratio | target | result |\n");
        s.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        for r in &self.rows {
            let ratio = r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default();
            let pass = match r.pass {
                Some(true) => "pass",
                Some(false) => "**FAIL**",
                None => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.metric,
                r.measured.replace('|', "/"),
                r.baseline.replace('|', "/"),
                ratio,
                r.target.replace('|', "/"),
                pass
            );
        }
        if !self.errors.is_empty() {
            s.push_str("\nErrors:\n\n");
            for e in &self.errors {
                let _ = writeln!(s, "- {}", e.lines().next().unwrap_or(""));
            }
        }
        s
    }

    /// Writes `results.md` and `results.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Res<()> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("results.md"), self.markdown()).map_err(|e| e.to_string())?;
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("results.json"), json).map_err(|e| e.to_string())
    }
}
