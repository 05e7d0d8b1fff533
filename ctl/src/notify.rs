//! The plan's `[[notify]]` (issue 15, part 2): webhooks told of a
//! deployment as seed 000's templates tell the team channel: started,
//! paused for a decision, completed (live, or live and watched), go-live
//! confirmed, rolled back (by the controller or reported by a host's
//! watchdog), failed. Slack-compatible JSON (`{"text": ...}` plus fields),
//! or the fields alone (`format = "json"`) for other receivers.
//!
//! A deployment's notices are derived from its event stream ([`derive()`],
//! [`Notifier`], subscribed by `crate::deployment::subscribers`), the
//! watchdog's reports found later too: `crate::watchdog::sync` emits them
//! as events (`host_report`, `settled`).
//!
//! Each notice is posted on its own task with the watchdog's delivery code,
//! [`golive_shared::notify::deliver`] (bounded attempts, backoff, a 4xx not
//! retried); the command waits for them at its end, never longer than the
//! plan's bound, and records each outcome in the deployment's record. A notice never fails or holds up a
//! deployment. The URL is a secret: only `scheme://host/***` is ever shown.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use golive_shared::config::NotifyConfig;
use golive_shared::protocol::UnixMillis;
use serde::Deserialize;
use serde_json::json;

use crate::deployment::events::Event;
use crate::journal::Journal;

/// `[[notify]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub webhook: String,
    /// `slack` (default: `text` plus fields) or `json` (the fields).
    pub format: Option<String>,
    /// Which events: `started`, `wave_done`, `paused`, `completed`, `confirmed`,
    /// `rolled_back`, `failed`; default all.
    pub events: Option<Vec<String>>,
    pub timeout_secs: Option<u64>,
    pub attempts: Option<u32>,
    pub ca_file: Option<PathBuf>,
    /// A link to the record, `{id}` replaced by the deployment id (e.g.
    /// where `golivectl history --format html` output is published).
    pub record_url: Option<String>,
}

/// What happened, in seed 000's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Started,
    WaveDone,
    Paused,
    Completed,
    Confirmed,
    RolledBack,
    Failed,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Started,
        Kind::WaveDone,
        Kind::Paused,
        Kind::Completed,
        Kind::Confirmed,
        Kind::RolledBack,
        Kind::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Started => "started",
            Kind::WaveDone => "wave_done",
            Kind::Paused => "paused",
            Kind::Completed => "completed",
            Kind::Confirmed => "confirmed",
            Kind::RolledBack => "rolled_back",
            Kind::Failed => "failed",
        }
    }

    fn headline(self) -> &'static str {
        match self {
            Kind::Started => "Deploy STARTED",
            Kind::WaveDone => "Wave DONE",
            Kind::Paused => "Deploy PAUSED: a decision is needed",
            Kind::Completed => "Deploy COMPLETED",
            Kind::Confirmed => "GO-LIVE CONFIRMED",
            Kind::RolledBack => "ROLLBACK EXECUTED",
            Kind::Failed => "Deploy FAILED",
        }
    }
}

/// One validated `[[notify]]`.
#[derive(Debug, Clone)]
pub struct Notify {
    pub cfg: NotifyConfig,
    pub slack: bool,
    pub events: Vec<Kind>,
    pub record_url: Option<String>,
}

impl Notify {
    /// How long one notice may take, every attempt and pause included.
    pub fn bound(&self) -> Duration {
        let pauses: u64 = (2..=self.cfg.attempts)
            .map(|a| 1u64 << (a - 2).min(5))
            .sum();
        Duration::from_secs(self.cfg.timeout_secs * u64::from(self.cfg.attempts) + pauses)
    }
}

/// Validates `[[notify]]`; errors are `(dotted key, message)`, the URL never
/// quoted.
pub fn parse(list: &[RawNotify]) -> Result<Vec<Notify>, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        let key = format!("notify.{i}");
        let cfg = NotifyConfig {
            webhook: raw.webhook.clone(),
            timeout_secs: raw.timeout_secs.unwrap_or(5),
            attempts: raw.attempts.unwrap_or(3),
            ca_file: raw.ca_file.clone(),
        };
        golive_shared::config::validate_notify(&key, &cfg, &mut |k, m| problems.push((k, m)));
        let slack = match raw.format.as_deref() {
            None | Some("slack") => true,
            Some("json") => false,
            Some(other) => {
                problems.push((
                    format!("{key}.format"),
                    format!("{other:?} is not one of \"slack\" or \"json\""),
                ));
                true
            }
        };
        let events = match &raw.events {
            None => Kind::ALL.to_vec(),
            Some(names) => {
                let mut kinds = Vec::new();
                for n in names {
                    match Kind::ALL.iter().find(|k| k.as_str() == n) {
                        Some(k) => kinds.push(*k),
                        None => problems.push((
                            format!("{key}.events"),
                            format!(
                                "{n:?} is not an event; use {}",
                                Kind::ALL.map(Kind::as_str).join(", ")
                            ),
                        )),
                    }
                }
                kinds
            }
        };
        if let Some(u) = &raw.record_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            problems.push((
                format!("{key}.record_url"),
                "an http(s) URL, {id} replaced by the deployment id".into(),
            ));
        }
        out.push(Notify {
            cfg,
            slack,
            events,
            record_url: raw.record_url.clone(),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// What a notice says.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: Kind,
    pub deployment: String,
    pub app: String,
    pub release: String,
    pub commit: Option<String>,
    pub operator: String,
    pub hosts: Vec<String>,
    /// The deployment's state ("running", "succeeded", "watching", ...).
    pub status: String,
    /// Why (a rollback's or pause's reason, the outcome line).
    pub reason: Option<String>,
    /// "0 ms not answering, 1.2 s in maintenance".
    pub downtime: Option<String>,
    pub at: UnixMillis,
}

/// The body posted for one receiver. `zone`: the plan's window time zone
/// (the time is said as the team reads it), else UTC.
pub fn body(n: &Notice, notify: &Notify, zone: Option<&jiff::tz::TimeZone>) -> serde_json::Value {
    let time = local_time(n.at, zone);
    let record = notify
        .record_url
        .as_ref()
        .map(|u| u.replace("{id}", &n.deployment))
        .unwrap_or_else(|| format!("golivectl show {}", n.deployment));
    let mut lines = vec![
        format!("[GO-LIVE] {} — {} {}", n.kind.headline(), n.app, n.release),
        format!("Time: {time}"),
        format!("Operator: {}", n.operator),
    ];
    if let Some(c) = &n.commit {
        lines.push(format!("Commit: {c}"));
    }
    lines.push(format!("Status: {}", n.status));
    if let Some(r) = &n.reason {
        lines.push(format!("Reason: {r}"));
    }
    if let Some(d) = &n.downtime {
        lines.push(format!("Downtime: {d}"));
    }
    lines.push(format!("Hosts: {}", n.hosts.join(", ")));
    lines.push(format!("Record: {record} (deployment {})", n.deployment));
    let mut v = json!({
        "event": n.kind.as_str(),
        "deployment": n.deployment,
        "app": n.app,
        "release": n.release,
        "commit": n.commit,
        "operator": n.operator,
        "status": n.status,
        "reason": n.reason,
        "downtime": n.downtime,
        "hosts": n.hosts,
        "time": time,
        "record": record,
    });
    if notify.slack {
        v["text"] = json!(lines.join("\n"));
    }
    v
}

/// "2026-12-07 11:42:05 CET" in the zone, "2026-12-07T10:42:05Z" without.
fn local_time(at: UnixMillis, zone: Option<&jiff::tz::TimeZone>) -> String {
    match (zone, jiff::Timestamp::from_millisecond(at)) {
        (Some(z), Ok(ts)) => ts
            .to_zoned(z.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        _ => golive_shared::timefmt::utc(at),
    }
}

/// What an event tells the team channel (issue 14: the notices are derived
/// from the event stream, not sent from points in the sequencer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub kind: Kind,
    pub reason: Option<String>,
    pub downtime: Option<String>,
    /// The hosts, when the event names them (the start: before the
    /// journal has its host rows).
    pub hosts: Option<Vec<String>>,
}

/// The notice an event makes, if one: the start; each wave that ended well
/// but the last (the deployment's end says that one); the gate's pause;
/// the end of a deployment (completed, rolled back, failed) or of a
/// rollback (rolled back, or failed when incomplete); what a host did on
/// its own, learned later (its rollback, or a rollback that failed); and a
/// watched deployment every host committed (confirmed). A pure function.
pub fn derive(event: &Event) -> Option<Derived> {
    let d = |kind, reason: Option<String>| Derived {
        kind,
        reason,
        downtime: None,
        hosts: None,
    };
    match event {
        Event::Start { hosts, .. } => Some(Derived {
            hosts: Some(hosts.clone()),
            ..d(Kind::Started, None)
        }),
        Event::Wave {
            wave,
            of,
            name,
            state,
            detail: Some(detail),
            ..
        } if state == "ok" && wave < of => {
            let label = match name {
                Some(n) => format!("wave {wave}/{of} ({n})"),
                None => format!("wave {wave}/{of}"),
            };
            Some(d(Kind::WaveDone, Some(format!("{label}: {detail}"))))
        }
        Event::Paused { host, summary, .. } => {
            Some(d(Kind::Paused, Some(format!("{host}: {summary}"))))
        }
        Event::Result {
            state,
            message,
            downtime_ms,
            maintenance,
            unavailable_ms,
            ..
        } => {
            let kind = match state.as_str() {
                "succeeded" | "watching" => Kind::Completed,
                "rolled_back" => Kind::RolledBack,
                "failed" => Kind::Failed,
                _ => return None,
            };
            // A deployment's end counts both; a rollback (no maintenance
            // of its own: `maintenance` null) what the users saw.
            let downtime = if maintenance.is_null() {
                unavailable_ms.map(|ms| format!("{ms} ms not answering"))
            } else {
                Some(format!(
                    "{} ms not answering, {} ms in maintenance",
                    unavailable_ms.unwrap_or(0),
                    downtime_ms.unwrap_or(0)
                ))
            };
            Some(Derived {
                downtime,
                ..d(kind, Some(message.clone()))
            })
        }
        Event::HostReport {
            action, by, detail, ..
        } => {
            let kind = match action.as_str() {
                "rollback" => Kind::RolledBack,
                "rollback-failed" => Kind::Failed,
                _ => return None,
            };
            Some(d(kind, Some(format!("reported by {by}: {detail}"))))
        }
        Event::Settled { state, reason, .. } if state == "succeeded" => {
            Some(d(Kind::Confirmed, Some(reason.clone())))
        }
        _ => None,
    }
}

/// The notices of one deployment's events (a [`crate::progress::Subscriber`]):
/// each notice an event derives is filled from the journal's view of the
/// deployment (its release, commit, operator, hosts, state) and posted.
pub struct Notifier {
    pub deployment: String,
    pub list: Vec<Notify>,
    pub zone: Option<jiff::tz::TimeZone>,
    /// The subscribers' own connection to the controller journal.
    pub journal: std::sync::Arc<Mutex<Journal>>,
}

impl crate::progress::Subscriber for Notifier {
    fn event(&self, event: &Event, _line: &str) -> rusqlite::Result<()> {
        let Some(derived) = derive(event) else {
            return Ok(());
        };
        if !self.list.iter().any(|n| n.events.contains(&derived.kind)) {
            return Ok(());
        }
        let d = {
            let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            journal.deployment(&self.deployment)
        };
        // The record's read failing must not stop a deployment; the notice
        // goes without what the journal would have added.
        let d = d.ok().flatten();
        let notice = Notice {
            kind: derived.kind,
            deployment: self.deployment.clone(),
            app: d.as_ref().map(|d| d.app.clone()).unwrap_or_default(),
            release: d.as_ref().map(|d| d.release.clone()).unwrap_or_default(),
            commit: d.as_ref().and_then(|d| d.git_commit.clone()),
            operator: d.as_ref().map(|d| d.operator.clone()).unwrap_or_default(),
            hosts: derived.hosts.unwrap_or_else(|| {
                d.as_ref()
                    .map(|d| d.hosts.iter().map(|h| h.host.clone()).collect())
                    .unwrap_or_default()
            }),
            status: d.as_ref().map(|d| d.state.clone()).unwrap_or_default(),
            reason: derived.reason,
            downtime: derived.downtime,
            at: golive_shared::protocol::now_millis(),
        };
        send(&self.list, self.zone.as_ref(), &notice);
        Ok(())
    }
}

/// A delivery under way.
struct Pending {
    deployment: String,
    /// "webhook https://host/*** (completed)".
    label: String,
    /// Its bound from when it was sent, and a second of slack.
    deadline: tokio::time::Instant,
    bound: Duration,
    task: tokio::task::JoinHandle<String>,
}

static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

/// Posts `notice` to every receiver that wants its kind, each on its own
/// task; [`flush`] waits for them and records the outcomes.
pub fn send(list: &[Notify], zone: Option<&jiff::tz::TimeZone>, notice: &Notice) {
    for n in list.iter().filter(|n| n.events.contains(&notice.kind)) {
        let body = body(notice, n, zone).to_string().into_bytes();
        let cfg = n.cfg.clone();
        let kind = notice.kind.as_str();
        let label = format!("webhook {} ({kind})", cfg.redacted_url());
        let task = {
            let label = label.clone();
            tokio::spawn(async move {
                let (line, _) = golive_shared::notify::deliver(&cfg, body).await;
                format!("{label}: {line}")
            })
        };
        if let Ok(mut p) = PENDING.lock() {
            p.push(Pending {
                deployment: notice.deployment.clone(),
                label,
                deadline: tokio::time::Instant::now() + n.bound() + Duration::from_secs(1),
                bound: n.bound(),
                task,
            });
        }
    }
}

/// Waits for the deliveries under way, each at most its bound from when
/// it was sent, and records each outcome as a later action of its
/// deployment (by `golivectl`). One past its bound is recorded as such and
/// left behind.
pub async fn flush(journal: &Journal) {
    let pending: Vec<Pending> = match PENDING.lock() {
        Ok(mut p) => p.drain(..).collect(),
        Err(_) => return,
    };
    for p in pending {
        let line = match tokio::time::timeout_at(p.deadline, p.task).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => format!("{}: the delivery task stopped: {e}", p.label),
            Err(_) => format!(
                "{}: not delivered within its bound of {} s; the deployment went on",
                p.label,
                p.bound.as_secs()
            ),
        };
        let _ = journal.add_action(&p.deployment, "golivectl", "notify", &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Vec<RawNotify> {
        #[derive(Deserialize)]
        struct W {
            notify: Vec<RawNotify>,
        }
        toml::from_str::<W>(text).unwrap().notify
    }

    /// The notices come from the events: the start (with its hosts), a
    /// wave that ended well but not the last, the pause, and the ends of a
    /// deployment or a rollback; nothing else makes one.
    #[test]
    fn issue14_notices_are_derived_from_events() {
        let start = Event::Start {
            deployment: "d1".into(),
            app: "shop".into(),
            release: "v2".into(),
            sha256: None,
            git_ref: None,
            hosts: vec!["web1".into(), "web2".into()],
        };
        let s = derive(&start).unwrap();
        assert_eq!(
            (s.kind, s.hosts),
            (Kind::Started, Some(vec!["web1".into(), "web2".into()]))
        );
        let wave = |wave, state: &str, detail: Option<&str>| Event::Wave {
            wave,
            of: 3,
            name: (wave == 1).then(|| "canary".to_string()),
            hosts: vec!["web1".into()],
            state: state.into(),
            detail: detail.map(str::to_string),
            max_fail: None,
            soak_secs: None,
        };
        let done = derive(&wave(1, "ok", Some("1 of 1 host(s) validated"))).unwrap();
        assert_eq!(done.kind, Kind::WaveDone);
        assert_eq!(
            done.reason.as_deref(),
            Some("wave 1/3 (canary): 1 of 1 host(s) validated")
        );
        assert_eq!(derive(&wave(1, "running", None)), None, "a wave's start");
        assert_eq!(derive(&wave(3, "ok", Some("x"))), None, "the last wave");
        assert_eq!(
            derive(&wave(2, "failed", Some("x"))),
            None,
            "the end says it"
        );
        let paused = Event::Paused {
            deployment: "d1".into(),
            host: "web1".into(),
            summary: "p95 high".into(),
            timeout_secs: 60,
        };
        assert_eq!(
            derive(&paused).unwrap().reason.as_deref(),
            Some("web1: p95 high")
        );
        let result = |state: &str, maintenance: serde_json::Value| Event::Result {
            deployment: "d1".into(),
            state: state.into(),
            message: "why".into(),
            exit: 0,
            downtime_ms: Some(40),
            maintenance,
            unavailable_ms: Some(3),
            unavailable: serde_json::Value::Null,
        };
        let end = derive(&result("watching", json!("off"))).unwrap();
        assert_eq!(end.kind, Kind::Completed);
        assert_eq!(
            end.downtime.as_deref(),
            Some("3 ms not answering, 40 ms in maintenance")
        );
        let back = derive(&result("rolled_back", serde_json::Value::Null)).unwrap();
        assert_eq!(
            (back.kind, back.downtime.as_deref()),
            (Kind::RolledBack, Some("3 ms not answering"))
        );
        assert_eq!(
            derive(&result("failed", json!("none"))).unwrap().kind,
            Kind::Failed
        );
        for quiet in ["paused", "partial", "refused", "committed"] {
            assert_eq!(derive(&result(quiet, json!("none"))), None, "{quiet}");
        }
        assert_eq!(derive(&Event::step("web1", "stage", "ok", "")), None);
    }

    /// What `show` / `go` learn from the hosts later makes its notice from
    /// its event: a host's own rollback (or its failure), and a watched
    /// deployment that every host committed; a commit alone, or a state
    /// that follows a rollback already told, makes none.
    #[test]
    fn issue14_the_watchdogs_reports_make_their_notices_from_events() {
        let report = |action: &str| Event::HostReport {
            deployment: "d1".into(),
            host: "web1".into(),
            action: action.into(),
            by: "watchdog on web1".into(),
            detail: "web1: rolled back from v2 to v1: trigger health-failing held".into(),
        };
        let back = derive(&report("rollback")).unwrap();
        assert_eq!(back.kind, Kind::RolledBack);
        assert_eq!(
            back.reason.as_deref(),
            Some(
                "reported by watchdog on web1: web1: rolled back from v2 to v1: trigger \
                 health-failing held"
            )
        );
        assert_eq!(
            derive(&report("rollback-failed")).unwrap().kind,
            Kind::Failed
        );
        assert_eq!(derive(&report("commit")), None);
        assert_eq!(derive(&report("commit-failed")), None);
        let settled = |state: &str| Event::Settled {
            deployment: "d1".into(),
            state: state.into(),
            was: "watching".into(),
            reason: "go by bob; every watched host committed the release".into(),
        };
        let confirmed = derive(&settled("succeeded")).unwrap();
        assert_eq!(confirmed.kind, Kind::Confirmed);
        assert_eq!(
            confirmed.reason.as_deref(),
            Some("go by bob; every watched host committed the release")
        );
        for quiet in ["rolled_back", "partial", "failed"] {
            assert_eq!(derive(&settled(quiet)), None, "{quiet}");
        }
    }

    #[test]
    fn issue15_notify_tables_are_checked_without_quoting_the_url() {
        let e = parse(&raw(
            "[[notify]]\nwebhook = \"ftp://hooks.example/T0/SECRET\"\nformat = \"xml\"\n\
             events = [\"started\", \"exploded\"]\ntimeout_secs = 0\n",
        ))
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "notify.0.webhook",
                "notify.0.timeout_secs",
                "notify.0.format",
                "notify.0.events"
            ],
            "{e:?}"
        );
        assert!(e.iter().all(|(_, m)| !m.contains("SECRET")), "{e:?}");
        let ok = parse(&raw(
            "[[notify]]\nwebhook = \"https://hooks.example/T0/SECRET\"\ntimeout_secs = 2\nattempts = 3\n",
        ))
        .unwrap();
        // 2 s a try, three tries, 1 s and 2 s between them.
        assert_eq!(ok[0].bound(), Duration::from_secs(9));
        assert_eq!(ok[0].events.len(), 7);
    }

    #[test]
    fn issue15_the_body_says_what_seed_000s_templates_say() {
        let n = Notice {
            kind: Kind::RolledBack,
            deployment: "d1".into(),
            app: "shop".into(),
            release: "v2".into(),
            commit: Some("abc123".into()),
            operator: "alice".into(),
            hosts: vec!["web1".into()],
            status: "rolled_back".into(),
            reason: Some("checkout answers 500".into()),
            downtime: Some("0 ms".into()),
            at: 1_796_643_725_000,
        };
        let notify = &parse(&raw("[[notify]]\nwebhook = \"https://h.example/x\"\nrecord_url = \"https://ops.example/{id}.html\"\n")).unwrap()[0];
        let zone = jiff::tz::TimeZone::get("Europe/Madrid").unwrap();
        let b = body(&n, notify, Some(&zone));
        let text = b["text"].as_str().unwrap();
        assert!(
            text.starts_with("[GO-LIVE] ROLLBACK EXECUTED — shop v2\nTime: 2026-12-07 "),
            "{text}"
        );
        assert!(text.contains(" CET\n"), "{text}");
        for part in [
            "Operator: alice",
            "Commit: abc123",
            "Reason: checkout answers 500",
            "Record: https://ops.example/d1.html",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert_eq!(b["event"], "rolled_back");
        let mut plain = notify.clone();
        plain.slack = false;
        assert!(body(&n, &plain, None)["text"].is_null());
    }
}
