//! The deployment record as one self-contained HTML page (issue 15, part 1):
//! a timeline of the hosts and their steps on a time axis (inline SVG, no
//! script, no network), maintenance shaded, gate evaluations, decisions and
//! later actions as marks with who and why, the watchdog's window and what
//! it did, then the same tables as the markdown record (probes before and
//! after, gate, decisions, later actions).
//!
//! A pure function of the journal's [`Deployment`] and what the hosts said
//! of their watchdogs, so a deployment in progress renders as a snapshot.
//! Every text from the journal is escaped: a step detail or a reason can
//! carry anything an agent or an operator wrote.

use std::fmt::Write as _;

use golive_shared::protocol::{UnixMillis, WatchdogInfo};
use golive_shared::timefmt::utc;

use crate::journal::Deployment;

/// A staged deployment's stages, for its page (issue 14): each started
/// stage's own record, and the compiled stages (the release and hosts of a
/// stage that has not started). Empty for one app's deployment.
#[derive(Default)]
pub struct StagesOf {
    pub records: Vec<Deployment>,
    pub planned: Option<crate::deployment::Staged>,
}

/// What one host said of its watchdog, for the page.
pub struct HostWatchdog<'a> {
    pub host: &'a str,
    pub info: &'a WatchdogInfo,
}

/// Escapes text for HTML and SVG (element content and attribute values).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Layout of the timeline.
const LEFT: f64 = 150.0;
const WIDTH: f64 = 1100.0;
const ROW: f64 = 34.0;
const TOP: f64 = 40.0;

/// The colour of a step's bar by its state.
fn colour(state: &str) -> &'static str {
    match state {
        "ok" | "done" => "#2e7d32",
        "failed" | "rollback" => "#c62828",
        "skipped" => "#9e9e9e",
        "pause" | "warn" => "#ef6c00",
        "running" | "" => "#1565c0",
        _ => "#6a1b9a",
    }
}

/// The time span the page shows: the deployment's start to the last thing
/// recorded (or now, for one in progress), and the watchdogs' windows.
fn span(d: &Deployment, watch: &[HostWatchdog], now: UnixMillis) -> (UnixMillis, UnixMillis) {
    let mut end = d.finished_at.unwrap_or(now).max(d.started_at + 1000);
    for s in &d.steps {
        end = end.max(s.finished_at.unwrap_or(s.started_at));
    }
    for a in &d.actions {
        end = end.max(a.at);
    }
    for x in &d.decisions {
        end = end.max(x.at);
    }
    for w in watch {
        end = end.max(w.info.ended_at.unwrap_or(w.info.until));
    }
    (d.started_at, end)
}

/// The SVG timeline: one row per host, its steps as bars, maintenance
/// shaded, the watchdog's window as a band, marks for the gate, decisions
/// and later actions. Well-formed XML (checked by a test).
pub fn timeline(d: &Deployment, watch: &[HostWatchdog], now: UnixMillis) -> String {
    let (t0, t1) = span(d, watch, now);
    let x = |t: UnixMillis| LEFT + (t.saturating_sub(t0)) as f64 / (t1 - t0).max(1) as f64 * WIDTH;
    let hosts: Vec<&str> = d.hosts.iter().map(|h| h.host.as_str()).collect();
    // With `[[waves]]`, a first row shows each wave (its `wave-N` step,
    // whose host column names the wave's hosts).
    let waves: Vec<_> = d
        .steps
        .iter()
        .filter(|s| s.step.starts_with("wave-"))
        .collect();
    let offset = usize::from(!waves.is_empty());
    let height = TOP + ROW * (hosts.len() + offset).max(1) as f64 + 70.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="timeline of deployment {id}" font-family="sans-serif" font-size="12">"#,
        w = LEFT + WIDTH + 20.0,
        id = esc(&d.id)
    );
    // The axis: ticks at round steps.
    let total = (t1 - t0).max(1);
    let tick = [
        1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000,
    ]
    .into_iter()
    .find(|t| total / t <= 10)
    .unwrap_or(7_200_000);
    let axis_y = TOP + ROW * (hosts.len() + offset).max(1) as f64 + 10.0;
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#555"/>"##,
        LEFT + WIDTH
    );
    let mut t = 0;
    while t <= total {
        let px = x(t0 + t);
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{axis_y}" stroke="#ddd"/><text x="{px:.1}" y="{}" text-anchor="middle" fill="#555">+{}</text>"##,
            TOP - 10.0,
            axis_y + 15.0,
            esc(&crate::output::span(u64::try_from(t).unwrap_or(0)))
        );
        t += tick;
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{}" fill="#555">{} UTC</text>"##,
        axis_y + 32.0,
        esc(&utc(t0))
    );
    if !waves.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="8" y="{}" font-style="italic" class="waves">waves</text>"##,
            TOP + ROW / 2.0 + 4.0
        );
        for s in &waves {
            let (a, b) = (x(s.started_at), x(s.finished_at.unwrap_or(now.min(t1))));
            let title = format!(
                "{} ({}): {}{}",
                s.step,
                s.host,
                s.state,
                s.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
            let _ = write!(
                svg,
                r##"<rect x="{a:.1}" y="{}" width="{:.1}" height="{}" fill="{}" fill-opacity="0.5" stroke="#333" class="wave"><title>{}</title></rect>"##,
                TOP + 6.0,
                (b - a).max(2.0),
                ROW - 12.0,
                colour(&s.state),
                esc(&title)
            );
        }
    }
    for (row, host) in hosts.iter().enumerate() {
        let y = TOP + ROW * (row + offset) as f64;
        let _ = write!(
            svg,
            r##"<text x="8" y="{}" font-weight="bold" class="host">{}</text>"##,
            y + ROW / 2.0 + 4.0,
            esc(host)
        );
        // Maintenance: from the end of `maintenance-on` to the start of the
        // next `maintenance-off*` (or now).
        let steps: Vec<_> = d.steps.iter().filter(|s| s.host == *host).collect();
        let mut on_since = None;
        for s in &steps {
            if s.step == "maintenance-on" && s.state == "ok" {
                on_since = Some(s.finished_at.unwrap_or(s.started_at));
            } else if s.step.starts_with("maintenance-off")
                && let Some(from) = on_since.take()
            {
                shade(
                    &mut svg,
                    x(from),
                    x(s.finished_at.unwrap_or(s.started_at)),
                    y,
                    "#ffe0b2",
                    "maintenance",
                );
            }
        }
        if let Some(from) = on_since {
            shade(
                &mut svg,
                x(from),
                x(t1),
                y,
                "#ffe0b2",
                "maintenance (still on)",
            );
        }
        // The watchdog's window.
        for w in watch.iter().filter(|w| w.host == *host) {
            let end = w.info.ended_at.unwrap_or(w.info.until).min(t1);
            let title = format!(
                "watchdog {}: armed {} until {}{}",
                w.info.state.as_str(),
                utc(w.info.armed_at),
                utc(w.info.until),
                w.info
                    .reason
                    .as_deref()
                    .map(|r| format!("; {r}"))
                    .unwrap_or_default()
            );
            shade(&mut svg, x(w.info.armed_at), x(end), y, "#e3f2fd", &title);
            if let Some(f) = w.info.fired_at {
                mark(
                    &mut svg,
                    x(f),
                    y,
                    "#c62828",
                    &format!("watchdog fired: {}", w.info.reason.as_deref().unwrap_or("")),
                );
            }
        }
        for s in steps {
            let (a, b) = (x(s.started_at), x(s.finished_at.unwrap_or(now.min(t1))));
            let title = format!(
                "{} {}: {} ({} → {}){}",
                host,
                s.step,
                s.state,
                utc(s.started_at),
                s.finished_at.map(utc).unwrap_or_else(|| "running".into()),
                s.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
            let _ = write!(
                svg,
                r#"<rect x="{a:.1}" y="{}" width="{:.1}" height="{}" fill="{}" class="step"><title>{}</title></rect>"#,
                y + 8.0,
                (b - a).max(2.0),
                ROW - 16.0,
                colour(&s.state),
                esc(&title)
            );
        }
        for g in d.gate.iter().filter(|g| g.host == *host) {
            mark(
                &mut svg,
                x(g.at),
                y,
                colour(&g.action),
                &format!("gate {}: {}", g.action, g.summary),
            );
        }
    }
    // Decisions and later actions concern the deployment: marks on the axis.
    for x_ in &d.decisions {
        let title = format!(
            "{} by {} at {}{}; next: {}",
            x_.decision,
            x_.by,
            utc(x_.at),
            x_.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            x_.next_action
        );
        diamond(&mut svg, x(x_.at), axis_y, "#6a1b9a", &title);
    }
    for a in &d.actions {
        let title = format!("{} by {} at {}: {}", a.action, a.by, utc(a.at), a.detail);
        diamond(&mut svg, x(a.at), axis_y, "#c62828", &title);
    }
    svg.push_str("</svg>");
    svg
}

fn shade(svg: &mut String, a: f64, b: f64, y: f64, fill: &str, title: &str) {
    let _ = write!(
        svg,
        r#"<rect x="{a:.1}" y="{}" width="{:.1}" height="{}" fill="{fill}"><title>{}</title></rect>"#,
        y + 2.0,
        (b - a).max(1.0),
        ROW - 4.0,
        esc(title)
    );
}

fn mark(svg: &mut String, px: f64, y: f64, fill: &str, title: &str) {
    let _ = write!(
        svg,
        r#"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{}" stroke="{fill}" stroke-width="2"><title>{}</title></line>"#,
        y + 2.0,
        y + ROW - 2.0,
        esc(title)
    );
}

fn diamond(svg: &mut String, px: f64, y: f64, fill: &str, title: &str) {
    let _ = write!(
        svg,
        r#"<path d="M {px:.1} {} l 6 6 l -6 6 l -6 -6 z" fill="{fill}"><title>{}</title></path>"#,
        y - 6.0,
        esc(title)
    );
}

/// The whole page.
pub fn page(d: &Deployment, stages: &StagesOf, watch: &[HostWatchdog], now: UnixMillis) -> String {
    let mut h = String::new();
    let title = format!("golive deployment {} — {} {}", d.id, d.app, d.release);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p class=\"state state-{}\">{}{}</p>",
        esc(&title),
        esc(&d.state),
        esc(&d.state),
        d.message
            .as_deref()
            .map(|m| format!(" — {}", esc(m)))
            .unwrap_or_default()
    );
    let source = match (&d.git_ref, &d.git_commit) {
        (Some(r), Some(c)) => format!("git {r} at commit {c}"),
        (Some(r), None) => format!("git {r}"),
        _ => format!("sha256 {}", d.artifact_sha256),
    };
    let rows = [
        ("app", d.app.clone()),
        ("release", format!("{} ({source})", d.release)),
        ("operator", d.operator.clone()),
        ("started", utc(d.started_at)),
        (
            "finished",
            d.finished_at
                .map(utc)
                .unwrap_or_else(|| format!("(in progress; snapshot at {})", utc(now))),
        ),
        ("hotfix", d.hotfix_reason.clone().unwrap_or_default()),
        ("forced", d.forced_reason.clone().unwrap_or_default()),
    ];
    h.push_str("<table class=\"facts\">");
    for (k, v) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        let _ = write!(h, "<tr><th>{k}</th><td>{}</td></tr>", esc(v));
    }
    h.push_str("</table>");
    if let Some(of) = &d.stage_of {
        // A stage's page leads back to its staged deployment's.
        let _ = write!(
            h,
            "<p class=\"stage-of\">Stage {}/{} ({}) of staged deployment <a href=\"{id}.html\">{id}</a>.</p>",
            of.position,
            of.of,
            esc(&of.name),
            id = esc(&of.parent)
        );
    }
    if !d.stages.is_empty() {
        stages_table(&mut h, d, stages);
    }
    h.push_str("<h2>Timeline</h2><p class=\"legend\"><span style=\"background:#2e7d32\"></span>ok <span style=\"background:#c62828\"></span>failed <span style=\"background:#9e9e9e\"></span>skipped <span style=\"background:#ef6c00\"></span>pause/warn <span style=\"background:#ffe0b2\"></span>maintenance <span style=\"background:#e3f2fd\"></span>watchdog window; ◆ decisions and later actions (hover for who and why)</p>");
    h.push_str("<div class=\"timeline\">");
    h.push_str(&timeline(d, watch, now));
    h.push_str("</div>");

    table(
        &mut h,
        "Hosts",
        &["host", "address", "release before", "state"],
        d.hosts.iter().map(|x| {
            vec![
                x.host.clone(),
                x.address.clone(),
                x.previous_release
                    .clone()
                    .unwrap_or_else(|| "(none)".into()),
                x.state.clone(),
            ]
        }),
    );
    if !d.probes.is_empty() {
        let mut seen = std::collections::BTreeSet::new();
        let mut rows = Vec::new();
        for r in &d.probes {
            if !seen.insert((r.host.clone(), r.probe.clone())) {
                continue;
            }
            let find = |phase: &str| {
                d.probes
                    .iter()
                    .rev()
                    .find(|p| p.host == r.host && p.probe == r.probe && p.phase == phase)
                    .map(|p| {
                        format!("{} {}", p.status, p.value.as_deref().unwrap_or(""))
                            .trim()
                            .to_string()
                    })
                    .unwrap_or_else(|| "—".into())
            };
            rows.push(vec![
                r.host.clone(),
                r.probe.clone(),
                r.severity.clone(),
                find("before"),
                find("after"),
            ]);
        }
        table(
            &mut h,
            "Probes before and after",
            &["host", "probe", "severity", "before", "after"],
            rows.into_iter(),
        );
    }
    if !d.gate.is_empty() {
        table(
            &mut h,
            "Gate",
            &["host", "at", "action", "why"],
            d.gate.iter().map(|g| {
                vec![
                    g.host.clone(),
                    utc(g.at),
                    g.action.clone(),
                    g.summary.clone(),
                ]
            }),
        );
    }
    if !d.decisions.is_empty() {
        table(
            &mut h,
            "Decisions",
            &["at", "by", "decision", "reason", "next action"],
            d.decisions.iter().map(|x| {
                vec![
                    utc(x.at),
                    x.by.clone(),
                    x.decision.clone(),
                    x.reason.clone().unwrap_or_default(),
                    x.next_action.clone(),
                ]
            }),
        );
    }
    if !watch.is_empty() {
        table(
            &mut h,
            "Watchdog",
            &["host", "state", "armed", "until", "fired", "why"],
            watch.iter().map(|w| {
                vec![
                    w.host.to_string(),
                    w.info.state.as_str().to_string(),
                    utc(w.info.armed_at),
                    utc(w.info.until),
                    w.info.fired_at.map(utc).unwrap_or_default(),
                    w.info.reason.clone().unwrap_or_default(),
                ]
            }),
        );
        for w in watch.iter().filter(|w| !w.info.events.is_empty()) {
            table(
                &mut h,
                &format!("Watchdog events on {}", w.host),
                &["at", "event", "line"],
                w.info
                    .events
                    .iter()
                    .map(|e| vec![utc(e.at), e.kind.clone(), e.line.clone()]),
            );
        }
    }
    if !d.actions.is_empty() {
        table(
            &mut h,
            "Later actions",
            &["at", "by", "action", "detail"],
            d.actions
                .iter()
                .map(|a| vec![utc(a.at), a.by.clone(), a.action.clone(), a.detail.clone()]),
        );
    }
    table(
        &mut h,
        "Steps",
        &["host", "step", "started", "ended", "result", "detail"],
        d.steps.iter().map(|s| {
            vec![
                s.host.clone(),
                s.step.clone(),
                utc(s.started_at),
                s.finished_at.map(utc).unwrap_or_default(),
                s.state.clone(),
                s.detail.clone().unwrap_or_default(),
            ]
        }),
    );
    if !d.events.is_empty() {
        // The event stream as it was printed (issue 14), in order.
        table(
            &mut h,
            "Events",
            &["at", "event", "host", "what"],
            d.events.iter().map(|e| {
                vec![
                    utc(e.at),
                    e.kind.clone(),
                    e.event["host"].as_str().unwrap_or_default().to_string(),
                    event_text(&e.event),
                ]
            }),
        );
    }
    let _ = writeln!(
        h,
        "<p class=\"foot\">Written by golivectl {} at {} from the controller's journal.</p></body></html>",
        esc(golive_shared::GOLIVE_VERSION),
        esc(&utc(now))
    );
    h
}

/// A staged deployment's stages in run order: each stage's app, release,
/// hosts and outcome, and a link to its own page (`ID.html` beside this
/// one, as `history --format html` writes them).
fn stages_table(h: &mut String, d: &Deployment, stages: &StagesOf) {
    h.push_str(
        "<h2>Stages</h2><table class=\"stages\"><tr><th>stage</th><th>app</th><th>release</th>\
         <th>hosts</th><th>outcome</th><th>record</th></tr>",
    );
    let of = d.stages.len();
    for st in &d.stages {
        let record = st
            .deployment
            .as_ref()
            .and_then(|id| stages.records.iter().find(|r| &r.id == id));
        let planned = stages
            .planned
            .as_ref()
            .and_then(|p| p.stages.iter().find(|s| s.position == st.position));
        let release = record
            .map(|r| r.release.clone())
            .or_else(|| planned.map(|p| p.release.clone()))
            .unwrap_or_default();
        let hosts = match record.filter(|r| !r.hosts.is_empty()) {
            Some(r) => r
                .hosts
                .iter()
                .map(|x| format!("{} ({})", x.host, x.state))
                .collect::<Vec<_>>()
                .join(", "),
            None => planned.map(|p| p.hosts.join(", ")).unwrap_or_default(),
        };
        let (state, message) = match record {
            Some(r) => (r.state.as_str(), r.message.as_deref()),
            None => (st.state.as_str(), None),
        };
        let link = match &st.deployment {
            Some(id) if record.is_some() => {
                format!("<a href=\"{id}.html\">{id}</a>", id = esc(id))
            }
            Some(id) => format!("{} (not started)", esc(id)),
            None => "(not started)".to_string(),
        };
        let _ = write!(
            h,
            "<tr><td>{}/{of} {}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"state-{s}\">{s}{}</td><td>{link}</td></tr>",
            st.position,
            esc(&st.name),
            esc(&st.app),
            esc(&release),
            esc(&hosts),
            message
                .map(|m| format!(" — {}", esc(m)))
                .unwrap_or_default(),
            s = esc(state),
        );
    }
    h.push_str("</table>");
}

/// An event's fields but its name and host, "key: value; ...", capped.
fn event_text(event: &serde_json::Value) -> String {
    let Some(fields) = event.as_object() else {
        return event.to_string();
    };
    let mut parts = Vec::new();
    for (k, v) in fields {
        if k == "event" || k == "host" || v.is_null() {
            continue;
        }
        match v {
            serde_json::Value::String(t) if t.is_empty() => {}
            serde_json::Value::String(t) => parts.push(format!("{k}: {t}")),
            other => parts.push(format!("{k}: {other}")),
        }
    }
    let mut text = parts.join("; ");
    if text.len() > 400 {
        let mut cut = 400;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn table(h: &mut String, title: &str, head: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let _ = write!(h, "<h2>{}</h2><table><tr>", esc(title));
    for c in head {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for row in rows {
        h.push_str("<tr>");
        for c in row {
            let _ = write!(h, "<td>{}</td>", esc(&c));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// The list of deployments, each a link to its record file `ID.html`.
pub fn index(app: Option<&str>, deployments: &[Deployment], now: UnixMillis) -> String {
    let mut h = String::new();
    let title = match app {
        Some(a) => format!("golive deployments of {a}"),
        None => "golive deployments".to_string(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><table><tr><th>deployment</th><th>started</th><th>app</th><th>release</th><th>state</th><th>operator</th></tr>",
        t = esc(&title)
    );
    for d in deployments {
        let _ = write!(
            h,
            "<tr><td><a href=\"{id}.html\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"state-{s}\">{s}</td><td>{}</td></tr>",
            esc(&utc(d.started_at)),
            esc(&d.app),
            esc(&d.release),
            esc(&d.operator),
            id = esc(&d.id),
            s = esc(&d.state)
        );
    }
    let _ = writeln!(
        h,
        "</table><p class=\"foot\">Written at {}.</p></body></html>",
        esc(&utc(now))
    );
    h
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse;font-size:13px;margin-top:6px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.facts th{width:90px}.state{font-size:15px;font-weight:bold}.state-succeeded,.state-watching{color:#2e7d32}\
.state-failed,.state-rolled_back{color:#c62828}.state-paused,.state-partial{color:#ef6c00}.timeline{overflow-x:auto;border:1px solid #ddd;padding:4px}\
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:middle}.foot{color:#777;font-size:12px;margin-top:24px}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue15_text_from_the_journal_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{1b}b"), "a\u{fffd}b");
    }

    /// A staged deployment's page lists its stages in order: each one's
    /// app, release, hosts and outcome, and a link to its own page (a stage
    /// not started yet: its planned release and hosts, no link); a stage's
    /// page links back to it. Text from the journal is escaped.
    #[test]
    fn issue14_a_staged_deployments_page_lists_its_stages() {
        let tmp = tempfile::tempdir().unwrap();
        let j = crate::journal::Journal::open(tmp.path()).unwrap();
        j.create_deployment("p1", "stages.toml", "db, web", "2 stages", "ab", "alice")
            .unwrap();
        j.add_stage("p1", 1, "db", "db", "db.toml").unwrap();
        j.add_stage("p1", 2, "web<x>", "web", "web.toml").unwrap();
        j.set_stage_deployment("p1", 1, "s1").unwrap();
        j.set_stage_deployment("p1", 2, "s2").unwrap();
        j.create_deployment("s1", "db.toml", "db", "v7", "cd", "alice")
            .unwrap();
        j.set_host("s1", "db1", "127.0.0.1:1", Some("v6"), "active")
            .unwrap();
        j.finish_deployment("s1", "succeeded", Some("release v7 is live on 1 host(s)"))
            .unwrap();
        let planned = crate::deployment::compile_stages(
            "p1",
            "ab",
            &[
                crate::deployment::StageInput {
                    name: "db",
                    app: "db",
                    release: "v7",
                    plan: "db.toml".into(),
                    deployment: "s1",
                    hosts: vec!["db1".into()],
                },
                crate::deployment::StageInput {
                    name: "web<x>",
                    app: "web",
                    release: "v3",
                    plan: "web.toml".into(),
                    deployment: "s2",
                    hosts: vec!["web1".into(), "web2".into()],
                },
            ],
        );
        let parent = j.deployment("p1").unwrap().unwrap();
        let stages = StagesOf {
            records: vec![j.deployment("s1").unwrap().unwrap()],
            planned: Some(planned),
        };
        let html = page(&parent, &stages, &[], 0);
        let table = &html[html.find("<h2>Stages</h2>").expect("a stages table")..];
        let first = table.find("<td>1/2 db</td>").expect("stage 1");
        let second = table
            .find("<td>2/2 web&lt;x&gt;</td>")
            .expect("stage 2, escaped");
        assert!(first < second, "in order");
        let row1 = &table[first..second];
        for part in [
            "<td>db</td>",
            "<td>v7</td>",
            "<td>db1 (active)</td>",
            "succeeded — release v7 is live on 1 host(s)",
            "<a href=\"s1.html\">s1</a>",
        ] {
            assert!(row1.contains(part), "{part}: {row1}");
        }
        let row2 = &table[second..table.find("</table>").unwrap()];
        for part in [
            "<td>web</td>",
            "<td>v3</td>",
            "<td>web1, web2</td>",
            "s2 (not started)",
        ] {
            assert!(row2.contains(part), "{part}: {row2}");
        }
        assert!(!row2.contains("<a "), "no page yet: {row2}");
        // One app's page has no stages table; a stage's leads back.
        let stage = j.deployment("s1").unwrap().unwrap();
        let own = page(&stage, &StagesOf::default(), &[], 0);
        assert!(!own.contains("<h2>Stages</h2>"));
        assert!(
            own.contains("Stage 1/2 (db) of staged deployment <a href=\"p1.html\">p1</a>"),
            "{own}"
        );
    }

    /// The record's events table says each event's fields, escaped by
    /// `table`, without its name, host or empty fields, capped.
    #[test]
    fn issue14_event_text() {
        let v = serde_json::json!({"event": "step", "host": "web1", "step": "stage",
            "state": "ok", "detail": "", "elapsed_ms": 12, "x": null});
        assert_eq!(event_text(&v), "elapsed_ms: 12; state: ok; step: stage");
        let long = serde_json::json!({"event": "log", "line": "é".repeat(300)});
        assert!(event_text(&long).ends_with('…'));
    }
}
