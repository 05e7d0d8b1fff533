//! The probe matrix shared by `golivectl probe` and `preflight`: an app's
//! probes run on one host (declared, then run on the same connection), a
//! host × probe matrix on the terminal, and the verdict of the plan's gate
//! (issue 5 part 2).

use std::io::IsTerminal;

use golive_shared::protocol::{
    DeclaredProbe, PreflightRequest, ProbeReport, ProbeResult, ProbeStatus, Request, Response,
    RunProbesRequest, Severity,
};
use serde_json::{Value, json};

use crate::client::ClientError;
use crate::gate::{Action, Policy};
use crate::output::Out;
use crate::transport::{Link, Session};

/// What the default gate makes of a probe that does not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// critical, high: NO-GO.
    Blocking,
    /// medium: reported as a warning.
    Warning,
    /// low: reported for information.
    Info,
}

/// The default gate (seed 000's matrix: critical and high block).
pub fn gate(severity: Severity) -> Gate {
    gate_with(&Policy::default(), severity)
}

/// What the plan's `[gate]` policy makes of a severity before a deploy:
/// an action that would stop a deployment (rollback, pause) blocks.
pub fn gate_with(policy: &Policy, severity: Severity) -> Gate {
    match policy.action(severity) {
        Action::Rollback | Action::Pause => Gate::Blocking,
        Action::Warn => Gate::Warning,
        Action::Continue => Gate::Info,
    }
}

/// Reasons collected by the gate; GO when nothing blocks.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// The plan's `[gate]`: which severities block.
    pub policy: Policy,
    pub blocking: Vec<String>,
    pub warnings: Vec<String>,
    pub info: Vec<String>,
}

impl Verdict {
    pub fn go(&self) -> bool {
        self.blocking.is_empty()
    }

    /// Files `reason` by the gate's class for `severity`.
    pub fn add(&mut self, severity: Severity, reason: String) {
        match gate_with(&self.policy, severity) {
            Gate::Blocking => self.blocking.push(reason),
            Gate::Warning => self.warnings.push(reason),
            Gate::Info => self.info.push(reason),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "blocking": self.blocking,
            "warnings": self.warnings,
            "info": self.info,
        })
    }

    /// The reasons under the verdict line, most important first.
    pub fn lines(&self, out: Out, color: bool) {
        for (label, list, paint) in [
            ("blocking", &self.blocking, RED),
            ("warning", &self.warnings, YELLOW),
            ("info", &self.info, ""),
        ] {
            for r in list {
                out.line(format!("  {}: {r}", colored(label, paint, color)));
            }
        }
    }
}

/// One host's probes: its declared probes and the report, or why not.
pub struct HostProbes {
    pub host: String,
    pub address: String,
    pub outcome: Result<(Vec<DeclaredProbe>, ProbeReport), String>,
}

impl HostProbes {
    /// The verdict's reasons for this host; `name` says how to call a probe.
    pub fn judge(&self, verdict: &mut Verdict, name: &dyn Fn(&ProbeResult) -> String) {
        match &self.outcome {
            Err(e) => verdict
                .blocking
                .push(format!("host {} could not be probed: {e}", self.host)),
            Ok((declared, report)) => {
                if declared.is_empty() {
                    verdict.warnings.push(format!(
                        "host {} declares no probes for the app: nothing verifies it",
                        self.host
                    ));
                }
                let skipped = report
                    .results
                    .iter()
                    .filter(|r| r.status == ProbeStatus::NotApplicable)
                    .count();
                if skipped > 0 {
                    verdict.info.push(format!(
                        "host {}: nothing live yet, {skipped} probe(s) n/a (they run once the \
                         first release is live, and the gate judges them then)",
                        self.host
                    ));
                }
                for r in report.failures() {
                    verdict.add(
                        r.severity,
                        format!(
                            "{} {} ({}, {}): {}",
                            self.host,
                            name(r),
                            r.severity.as_str(),
                            r.status.as_str(),
                            r.message
                        ),
                    );
                }
            }
        }
    }

    /// `{host, address, ok, results | error}` with every result's value,
    /// threshold, duration, message, severity and tags.
    pub fn json(&self) -> Value {
        match &self.outcome {
            Err(e) => json!({
                "host": self.host,
                "address": self.address,
                "ok": false,
                "error": e,
            }),
            Ok((declared, report)) => json!({
                "host": self.host,
                "address": self.address,
                "ok": true,
                "results": report.results.iter().map(|r| result_json(r, declared)).collect::<Vec<_>>(),
            }),
        }
    }
}

fn result_json(r: &ProbeResult, declared: &[DeclaredProbe]) -> Value {
    let tags = declared
        .iter()
        .find(|d| d.name == r.name)
        .map(|d| d.tags.clone())
        .unwrap_or_default();
    json!({
        "name": r.name,
        "kind": r.kind,
        "severity": r.severity.as_str(),
        "tags": tags,
        "status": r.status.as_str(),
        "value": r.value,
        "threshold": r.threshold,
        "duration_ms": r.duration_ms,
        "message": r.message,
    })
}

/// The app's declared probes on one host (a `Preflight` that runs no check).
pub async fn declared(client: &Link, app: &str) -> Result<Vec<DeclaredProbe>, ClientError> {
    declared_in(&mut client.session(), app).await
}

/// [`declared`] on a session's connection.
pub(crate) async fn declared_in(
    session: &mut Session,
    app: &str,
) -> Result<Vec<DeclaredProbe>, ClientError> {
    let req = Request::Preflight(PreflightRequest {
        app: app.into(),
        backup: false,
        probes_only: true,
    });
    match session.call(&req).await? {
        Response::Preflight(r) => Ok(r.probes),
        other => Err(session.client().unexpected(&other)),
    }
}

/// Runs the app's probes (those carrying one of `tags`; all when empty).
pub async fn run(client: &Link, app: &str, tags: &[String]) -> Result<ProbeReport, ClientError> {
    run_in(&mut client.session(), app, tags).await
}

/// [`run`] on a session's connection.
pub(crate) async fn run_in(
    session: &mut Session,
    app: &str,
    tags: &[String],
) -> Result<ProbeReport, ClientError> {
    let req = Request::RunProbes(RunProbesRequest {
        app: app.into(),
        tags: tags.to_vec(),
    });
    match session.call(&req).await? {
        Response::Probes(r) => Ok(r),
        other => Err(session.client().unexpected(&other)),
    }
}

/// Colors only for a person at a terminal (and never with `NO_COLOR`).
pub fn use_color(out: Out) -> bool {
    !out.json() && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub const RED: &str = "\x1b[31m";
pub const GREEN: &str = "\x1b[32m";
pub const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

pub fn colored(text: &str, paint: &str, color: bool) -> String {
    if color && !paint.is_empty() {
        format!("{paint}{text}{RESET}")
    } else {
        text.to_string()
    }
}

/// What a not-applicable probe shows, wherever its result is printed.
pub const NOT_APPLICABLE: &str = "n/a (nothing live yet)";

/// A matrix cell: `pass status 200`, `FAIL status 503`, `ERROR`,
/// `n/a (nothing live yet)`, and its color.
fn cell(r: &ProbeResult) -> (String, &'static str) {
    let word = match r.status {
        ProbeStatus::Pass => "pass",
        ProbeStatus::Fail => "FAIL",
        ProbeStatus::Error => "ERROR",
        ProbeStatus::NotApplicable => return (NOT_APPLICABLE.into(), ""),
    };
    let text = match &r.value {
        Some(v) => format!("{word} {v}"),
        None => word.to_string(),
    };
    let paint = match (r.status, gate(r.severity)) {
        (ProbeStatus::Pass, _) => GREEN,
        (_, Gate::Blocking) => RED,
        (_, Gate::Warning) => YELLOW,
        (_, Gate::Info) => "",
    };
    (text, paint)
}

/// Prints hosts × probes: one column per probe name (first seen first),
/// `-` where a host does not run that probe, and one line per host that
/// could not be probed, naming its address and why. `label` renames a
/// probe kind in the header (preflight calls tls probes the TLS expiry check).
pub fn print_matrix(
    out: Out,
    rows: &[HostProbes],
    color: bool,
    label: &dyn Fn(&ProbeResult) -> String,
) {
    let mut columns: Vec<(String, String)> = Vec::new();
    for row in rows {
        if let Ok((_, report)) = &row.outcome {
            for r in &report.results {
                if !columns.iter().any(|(n, _)| *n == r.name) {
                    columns.push((r.name.clone(), label(r)));
                }
            }
        }
    }
    let host_w = rows
        .iter()
        .map(|r| r.host.chars().count())
        .chain(["host".len()])
        .max()
        .unwrap_or(4);
    let mut cells: Vec<Vec<(String, &str)>> = Vec::new();
    for row in rows {
        let Ok((_, report)) = &row.outcome else {
            cells.push(Vec::new());
            continue;
        };
        cells.push(
            columns
                .iter()
                .map(|(name, _)| {
                    report
                        .results
                        .iter()
                        .find(|r| r.name == *name)
                        .map(cell)
                        .unwrap_or_else(|| ("-".into(), ""))
                })
                .collect(),
        );
    }
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, head))| {
            cells
                .iter()
                .filter_map(|c| c.get(i))
                .map(|(t, _)| t.chars().count())
                .chain([head.chars().count()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut head = pad("host", host_w);
    for ((_, h), w) in columns.iter().zip(&widths) {
        head.push_str("  ");
        head.push_str(&pad(h, *w));
    }
    out.line(head.trim_end());
    for (row, row_cells) in rows.iter().zip(&cells) {
        let mut line = pad(&row.host, host_w);
        match &row.outcome {
            Err(e) => {
                line.push_str("  ");
                line.push_str(&colored(
                    &format!("UNREACHABLE {}: {e}", row.address),
                    RED,
                    color,
                ));
            }
            Ok(_) => {
                for ((text, paint), w) in row_cells.iter().zip(&widths) {
                    line.push_str("  ");
                    line.push_str(&colored(&pad(text, *w), paint, color));
                }
            }
        }
        out.line(line.trim_end());
    }
}

/// `health (critical)`.
pub fn plain_label(r: &ProbeResult) -> String {
    format!("{} ({})", r.name, r.severity.as_str())
}

/// `verdict: GO` / `verdict: GO with 2 warning(s)` / `verdict: NO-GO (N blocking)`, then the reasons.
pub fn print_verdict(out: Out, verdict: &Verdict, color: bool, yes: &str, no: &str) {
    let line = if !verdict.go() {
        colored(
            &format!("verdict: {no} ({} blocking)", verdict.blocking.len()),
            RED,
            color,
        )
    } else if !verdict.warnings.is_empty() {
        colored(
            &format!("verdict: {yes} with {} warning(s)", verdict.warnings.len()),
            YELLOW,
            color,
        )
    } else {
        colored(&format!("verdict: {yes}"), GREEN, color)
    };
    out.line(line);
    verdict.lines(out, color);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        name: &str,
        severity: Severity,
        status: ProbeStatus,
        value: Option<&str>,
    ) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            kind: "http".into(),
            severity,
            status,
            value: value.map(str::to_string),
            threshold: None,
            duration_ms: 3,
            message: format!("{name} said so"),
        }
    }

    #[test]
    fn the_default_gate_blocks_critical_and_high_only() {
        let report = ProbeReport {
            app: "shop".into(),
            results: vec![
                result(
                    "health",
                    Severity::Critical,
                    ProbeStatus::Pass,
                    Some("status 200"),
                ),
                result(
                    "agro",
                    Severity::Medium,
                    ProbeStatus::Fail,
                    Some("status 404"),
                ),
                result("docs", Severity::Low, ProbeStatus::Error, None),
            ],
        };
        let row = HostProbes {
            host: "web1".into(),
            address: "10.0.0.5:7443".into(),
            outcome: Ok((Vec::new(), report.clone())),
        };
        let mut v = Verdict::default();
        row.judge(&mut v, &|p| p.name.clone());
        assert!(v.go(), "{v:?}");
        assert_eq!(v.warnings.len(), 2, "{v:?}"); // agro + no declared probes
        assert_eq!(v.info.len(), 1);
        let mut failing = report;
        failing.results[0].status = ProbeStatus::Fail;
        let row = HostProbes {
            outcome: Ok((Vec::new(), failing)),
            ..row
        };
        let mut v = Verdict::default();
        row.judge(&mut v, &|p| p.name.clone());
        assert!(!v.go());
        assert!(
            v.blocking[0].starts_with("web1 health (critical, fail)"),
            "{v:?}"
        );
    }

    #[test]
    fn cells_carry_the_value_and_color_only_when_asked() {
        let (t, p) = cell(&result(
            "h",
            Severity::High,
            ProbeStatus::Fail,
            Some("status 503"),
        ));
        assert_eq!((t.as_str(), p), ("FAIL status 503", RED));
        assert_eq!(colored("x", RED, false), "x");
        assert_eq!(colored("x", RED, true), "\x1b[31mx\x1b[0m");
        let (t, p) = cell(&result("h", Severity::Low, ProbeStatus::Error, None));
        assert_eq!((t.as_str(), p), ("ERROR", ""));
    }

    /// Issue 12: a probe that is not applicable (nothing live) never
    /// blocks, is shown as such, and is counted for information.
    #[test]
    fn issue12_not_applicable_probes_never_block() {
        let na = result(
            "health",
            Severity::Critical,
            ProbeStatus::NotApplicable,
            None,
        );
        let (t, p) = cell(&na);
        assert_eq!((t.as_str(), p), ("n/a (nothing live yet)", ""));
        let row = HostProbes {
            host: "web1".into(),
            address: "10.0.0.5:7443".into(),
            outcome: Ok((
                Vec::new(),
                ProbeReport {
                    app: "shop".into(),
                    results: vec![
                        na,
                        result("disk", Severity::High, ProbeStatus::Pass, Some("50 %")),
                    ],
                },
            )),
        };
        let mut v = Verdict::default();
        row.judge(&mut v, &|p| p.name.clone());
        assert!(v.go(), "{v:?}");
        assert!(v.info.iter().any(|i| i.contains("1 probe(s) n/a")), "{v:?}");
    }
}
