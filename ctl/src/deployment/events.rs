//! The deployment's event stream (issue 14): one typed [`Event`] per thing
//! that happens, emitted once through [`crate::output::Out::emit`] and fanned
//! out by [`crate::progress`] to whichever view the command runs with:
//! NDJSON (`--output json`, one object per line, the field names below are
//! the stable schema), plain lines, or the live per-host lines on a terminal.
//!
//! The wire names (`"event"` and every field) are a public interface:
//! scripts parse them. Add fields and variants; never rename or remove one.
//! README "Output" documents them.
//!
//! No variant carries a secret: hosts, step names, states, the agents' own
//! detail texts (which already omit secrets) and byte counts only.

use serde::Serialize;

/// One thing that happened during a deployment (or a rollback).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The deployment started (after preflight and the window).
    Start {
        deployment: String,
        app: String,
        release: String,
        /// The artifact's sha256 (artifact sources).
        sha256: Option<String>,
        /// The git ref (git sources).
        git_ref: Option<String>,
        hosts: Vec<String>,
    },
    /// A wave started (`state` "running") or ended (its verdict and why).
    Wave {
        /// 1-based.
        wave: usize,
        of: usize,
        name: Option<String>,
        hosts: Vec<String>,
        state: String,
        /// Why it ended as it did; `null` while running.
        detail: Option<String>,
        /// The wave's max-fail share in percent; `null` on its end.
        max_fail: Option<u32>,
        soak_secs: Option<u64>,
    },
    /// A host-changing step is about to be sent (its intent is journaled).
    StepStarted { host: String, step: String },
    /// Progress of a running step; today the artifact upload's bytes.
    StepProgress {
        host: String,
        step: String,
        /// Bytes sent so far.
        bytes: u64,
        /// Bytes in all.
        total: u64,
        /// Mean rate since the step started.
        bytes_per_sec: u64,
        elapsed_ms: u64,
    },
    /// A step ended on a host.
    Step {
        host: String,
        step: String,
        /// "ok", "failed", "skipped", "kept", "warn", "pause", "rollback",
        /// a decision ("go", "no-go"), ...
        state: String,
        detail: String,
        /// Since the step's `step_started`, or for a step that sends
        /// nothing to the host (probes, the gate) since the host's previous
        /// event in this deployment.
        elapsed_ms: u64,
    },
    /// The gate's verdict on a host's probes.
    Gate {
        host: String,
        /// "continue", "warn", "pause", "rollback".
        action: String,
        summary: String,
        reasons: serde_json::Value,
    },
    /// A decision taken by a rule (the gate policy, a wave's soak).
    Decision {
        by: String,
        decision: String,
        reason: String,
    },
    /// A probe's result on a host (`phase` "before" the switch or "after").
    Probe {
        phase: String,
        host: String,
        probe: String,
        kind: String,
        severity: String,
        status: String,
        value: Option<String>,
        threshold: Option<String>,
        message: String,
        duration_ms: u64,
    },
    /// The gate paused the deployment on a host: it waits for `go` / `no-go`.
    Paused {
        deployment: String,
        host: String,
        summary: String,
        timeout_secs: u64,
    },
    /// A host's watchdog was armed (issue 13).
    Watchdog {
        host: String,
        state: String,
        detail: String,
    },
    /// The commit every host staged a git ref at.
    Git {
        deployment: String,
        git_ref: String,
        commit: String,
    },
    /// A line of a host job's output (hooks, commands), as the agent sent it.
    Log {
        host: String,
        job: u64,
        line: String,
    },
    /// An agent job's own progress (a backup's bytes, ...).
    Progress {
        host: String,
        job: u64,
        step: String,
        done: u64,
        total: u64,
    },
    /// `deploy --resume`: the deployment carries on under this controller.
    Resume {
        deployment: String,
        app: String,
        release: String,
        interrupted_steps: usize,
    },
    /// A rollback of a recorded deployment started (`golivectl rollback`,
    /// a `no-go`): the hosts it switches back, newest first.
    Rollback {
        deployment: String,
        app: String,
        release: String,
        hosts: Vec<String>,
    },
    /// A person's decision on a paused or watched deployment (`go`,
    /// `no-go`), as recorded, and what happens next.
    #[serde(rename = "decision")]
    Decided {
        deployment: String,
        decision: String,
        by: String,
        reason: Option<String>,
        next_action: String,
        /// Whether a paused deploy process waits for it (acts on it).
        #[serde(skip_serializing_if = "Option::is_none")]
        waiting_deploy: Option<bool>,
    },
    /// `golivectl maintenance on|off`: one host's outcome.
    Maintenance {
        host: String,
        on: bool,
        ok: bool,
        /// Whether the state changed (false: it already was).
        changed: Option<bool>,
        already: Option<bool>,
        downtime_ms: Option<u64>,
        error: Option<String>,
    },
    /// The end of `golivectl maintenance on|off` (its own `result`).
    #[serde(rename = "result")]
    MaintenanceResult {
        app: String,
        on: bool,
        ok: bool,
        hosts: serde_json::Value,
        downtime_ms: Option<u64>,
        message: String,
        exit: u8,
    },
    /// The deployment's end: its state, message and exit code (SPEC §7).
    Result {
        deployment: String,
        state: String,
        message: String,
        exit: u8,
        downtime_ms: Option<u64>,
        maintenance: serde_json::Value,
        unavailable_ms: Option<u64>,
        unavailable: serde_json::Value,
    },
    /// A staged deployment (issue 11) started: its stages, in order.
    Stages {
        deployment: String,
        stages: serde_json::Value,
    },
    /// A stage starts (or, `resume`, carries on) as its own deployment
    /// `stage_deployment`.
    Stage {
        deployment: String,
        /// 1-based.
        stage: usize,
        name: String,
        app: String,
        stage_deployment: String,
        resume: bool,
    },
    /// A stage ended and passed; the next one starts.
    StageDone {
        deployment: String,
        stage: usize,
        state: String,
    },
    /// A stage is being rolled back (a later stage failed, or `rollback`).
    StageRollback {
        stage: u32,
        name: String,
        stage_deployment: String,
    },
    /// `deploy --resume` of a staged deployment: from this stage on.
    #[serde(rename = "resume")]
    StagesResume {
        deployment: String,
        from_stage: usize,
    },
    /// A staged deployment's end (its own `result`); `state` is absent on
    /// the end of its `rollback`.
    #[serde(rename = "result")]
    StagesResult {
        deployment: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        message: String,
        exit: u8,
    },
    /// A hotfix deploys outside the plan's window.
    Window { hotfix: bool, note: String },
    /// A host already has a release of this id (a redeploy).
    ReusedId {
        host: String,
        release: String,
        note: String,
    },
    /// Preflight's verdict before anything changes (issue 12).
    Preflight {
        ready: bool,
        blocking: serde_json::Value,
        warnings: serde_json::Value,
        forced: bool,
    },
    /// `deploy --dry-run`: the window's and preflight's verdicts, the
    /// parallel limit and what a failed wave sends back.
    DryRun {
        window: String,
        preflight: String,
        parallel: usize,
        on_wave_failure: String,
    },
    /// `deploy --dry-run`: the compiled deployment (waves, hosts, steps,
    /// keys and requests), as stored in the journal when it runs.
    #[serde(rename = "deployment")]
    Compiled { deployment: Box<super::Deployment> },
    /// `deploy --dry-run`: one wave as it would run.
    WouldWave {
        /// 1-based.
        wave: usize,
        of: usize,
        name: Option<String>,
        hosts: Vec<String>,
        max_fail: u32,
        allowed_failures: usize,
        soak_secs: Option<u64>,
    },
    /// `deploy --dry-run`: one host's steps in order, those run after a
    /// failure, and the host-changing steps' idempotency keys.
    Would {
        host: String,
        steps: Vec<String>,
        on_failure: Vec<String>,
        keys: Vec<String>,
    },
    /// The end of `deploy --dry-run` (its own `result`): nothing changed.
    #[serde(rename = "result")]
    DryRunResult {
        dry_run: bool,
        release: String,
        /// The artifact's sha256; empty for a git source.
        sha256: String,
        git_ref: Option<String>,
        hosts: usize,
        parallel: usize,
        exit: u8,
    },
    /// `deploy STAGES.toml --dry-run`: the staged deployment's stages, in
    /// order (each stage's own dry run follows).
    #[serde(rename = "stages")]
    StagesDryRun {
        dry_run: bool,
        stages: Box<super::Staged>,
    },
    /// What a host did to a live deployment on its own, learned afterwards
    /// from the host by `show`, `go` or `no-go` (issue 13): its watchdog
    /// rolled it back or committed it, or `golive-agent rollback` ran
    /// there. `action`: "rollback", "rollback-failed", "commit",
    /// "commit-failed"; `by`: who did it. Emitted once per host.
    HostReport {
        deployment: String,
        host: String,
        action: String,
        by: String,
        detail: String,
    },
    /// A live deployment's state followed what its hosts did, once no
    /// watchdog watched any more: `state` "succeeded" (every watched host
    /// committed: the go-live is confirmed), "rolled_back", "partial" or
    /// "failed"; `was` its state before. Emitted once.
    Settled {
        deployment: String,
        state: String,
        was: String,
        reason: String,
    },
}

impl Event {
    /// A finished step; its `elapsed_ms` is stamped when it is emitted.
    pub fn step(host: &str, step: &str, state: &str, detail: &str) -> Event {
        Event::Step {
            host: host.into(),
            step: step.into(),
            state: state.into(),
            detail: detail.into(),
            elapsed_ms: 0,
        }
    }

    /// The host the event is about, if one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Event::StepStarted { host, .. }
            | Event::StepProgress { host, .. }
            | Event::Step { host, .. }
            | Event::Gate { host, .. }
            | Event::Probe { host, .. }
            | Event::Paused { host, .. }
            | Event::Watchdog { host, .. }
            | Event::Log { host, .. }
            | Event::Progress { host, .. }
            | Event::Maintenance { host, .. }
            | Event::ReusedId { host, .. }
            | Event::Would { host, .. }
            | Event::HostReport { host, .. } => Some(host),
            _ => None,
        }
    }

    /// Its wire name, the `"event"` field (`result` for both ends).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Start { .. } => "start",
            Event::Wave { .. } => "wave",
            Event::StepStarted { .. } => "step_started",
            Event::StepProgress { .. } => "step_progress",
            Event::Step { .. } => "step",
            Event::Gate { .. } => "gate",
            Event::Decision { .. } | Event::Decided { .. } => "decision",
            Event::Probe { .. } => "probe",
            Event::Paused { .. } => "paused",
            Event::Watchdog { .. } => "watchdog",
            Event::Git { .. } => "git",
            Event::Log { .. } => "log",
            Event::Progress { .. } => "progress",
            Event::Resume { .. } | Event::StagesResume { .. } => "resume",
            Event::Rollback { .. } => "rollback",
            Event::Maintenance { .. } => "maintenance",
            Event::MaintenanceResult { .. }
            | Event::Result { .. }
            | Event::StagesResult { .. }
            | Event::DryRunResult { .. } => "result",
            Event::Stages { .. } | Event::StagesDryRun { .. } => "stages",
            Event::Stage { .. } => "stage",
            Event::StageDone { .. } => "stage_done",
            Event::StageRollback { .. } => "stage_rollback",
            Event::Window { .. } => "window",
            Event::ReusedId { .. } => "reused_id",
            Event::Preflight { .. } => "preflight",
            Event::DryRun { .. } => "dry_run",
            Event::Compiled { .. } => "deployment",
            Event::WouldWave { .. } => "would_wave",
            Event::Would { .. } => "would",
            Event::HostReport { .. } => "host_report",
            Event::Settled { .. } => "settled",
        }
    }

    /// Every wire name, for the README's table and the tests.
    pub const KINDS: [&'static str; 30] = [
        "start",
        "wave",
        "step_started",
        "step_progress",
        "step",
        "gate",
        "decision",
        "probe",
        "paused",
        "watchdog",
        "git",
        "log",
        "progress",
        "resume",
        "rollback",
        "maintenance",
        "result",
        "stages",
        "stage",
        "stage_done",
        "stage_rollback",
        "window",
        "reused_id",
        "preflight",
        "dry_run",
        "deployment",
        "would_wave",
        "would",
        "host_report",
        "settled",
    ];

    /// One NDJSON line (without its newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn keys(e: &Event) -> Vec<String> {
        let v: Value = serde_json::from_str(&e.to_json_line()).unwrap();
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    /// The NDJSON schema is a public interface: these names are what README
    /// "Output" documents and what scripts parse.
    #[test]
    fn issue14_ndjson_schema_is_stable() {
        let start = Event::Start {
            deployment: "d1".into(),
            app: "shop".into(),
            release: "v2".into(),
            sha256: Some("ab".into()),
            git_ref: None,
            hosts: vec!["web1".into()],
        };
        assert_eq!(
            keys(&start),
            [
                "app",
                "deployment",
                "event",
                "git_ref",
                "hosts",
                "release",
                "sha256"
            ]
        );
        let progress = Event::StepProgress {
            host: "web1".into(),
            step: "upload".into(),
            bytes: 65536,
            total: 1 << 20,
            bytes_per_sec: 1000,
            elapsed_ms: 65,
        };
        let v: Value = serde_json::from_str(&progress.to_json_line()).unwrap();
        assert_eq!(
            v,
            json!({"event": "step_progress", "host": "web1", "step": "upload", "bytes": 65536,
                   "total": 1048576, "bytes_per_sec": 1000, "elapsed_ms": 65})
        );
        let step = Event::step("web1", "stage", "ok", "");
        assert_eq!(
            keys(&step),
            ["detail", "elapsed_ms", "event", "host", "state", "step"]
        );
        let started = Event::StepStarted {
            host: "web1".into(),
            step: "stage".into(),
        };
        assert_eq!(
            started.to_json_line(),
            r#"{"event":"step_started","host":"web1","step":"stage"}"#
        );
        let wave = Event::Wave {
            wave: 1,
            of: 2,
            name: Some("canary".into()),
            hosts: vec!["web1".into()],
            state: "running".into(),
            detail: None,
            max_fail: Some(0),
            soak_secs: None,
        };
        assert_eq!(
            keys(&wave),
            [
                "detail",
                "event",
                "hosts",
                "max_fail",
                "name",
                "of",
                "soak_secs",
                "state",
                "wave"
            ]
        );
        let result = Event::Result {
            deployment: "d1".into(),
            state: "succeeded".into(),
            message: "live".into(),
            exit: 0,
            downtime_ms: None,
            maintenance: Value::Null,
            unavailable_ms: Some(3),
            unavailable: json!({"ms": 3}),
        };
        assert_eq!(
            keys(&result),
            [
                "deployment",
                "downtime_ms",
                "event",
                "exit",
                "maintenance",
                "message",
                "state",
                "unavailable",
                "unavailable_ms"
            ]
        );
        // The commands' own events keep the names scripts parsed before
        // they were typed (issue 14): rollback, go / no-go, maintenance.
        let decided = Event::Decided {
            deployment: "d1".into(),
            decision: "go".into(),
            by: "ana".into(),
            reason: None,
            next_action: "continue".into(),
            waiting_deploy: None,
        };
        assert_eq!(
            keys(&decided),
            [
                "by",
                "decision",
                "deployment",
                "event",
                "next_action",
                "reason"
            ]
        );
        assert_eq!(decided.kind(), "decision");
        let m = Event::MaintenanceResult {
            app: "shop".into(),
            on: true,
            ok: true,
            hosts: json!([]),
            downtime_ms: None,
            message: "on".into(),
            exit: 0,
        };
        let v: Value = serde_json::from_str(&m.to_json_line()).unwrap();
        assert_eq!(v["event"], "result");
        assert_eq!(m.kind(), "result");
        let rb = Event::Rollback {
            deployment: "d1".into(),
            app: "shop".into(),
            release: "v2".into(),
            hosts: vec!["web1".into()],
        };
        // A staged deployment's own lines and the pre-start lines keep the
        // names they had as untyped JSON (issue 14).
        let stage = Event::Stage {
            deployment: "p1".into(),
            stage: 1,
            name: "db".into(),
            app: "shop".into(),
            stage_deployment: "s1".into(),
            resume: false,
        };
        assert_eq!(
            keys(&stage),
            [
                "app",
                "deployment",
                "event",
                "name",
                "resume",
                "stage",
                "stage_deployment"
            ]
        );
        let done = Event::StageDone {
            deployment: "p1".into(),
            stage: 1,
            state: "succeeded".into(),
        };
        assert_eq!(keys(&done), ["deployment", "event", "stage", "state"]);
        let back = Event::StageRollback {
            stage: 1,
            name: "db".into(),
            stage_deployment: "s1".into(),
        };
        assert_eq!(keys(&back), ["event", "name", "stage", "stage_deployment"]);
        let stages = Event::Stages {
            deployment: "p1".into(),
            stages: json!([]),
        };
        assert_eq!(keys(&stages), ["deployment", "event", "stages"]);
        let sresume = Event::StagesResume {
            deployment: "p1".into(),
            from_stage: 2,
        };
        assert_eq!(
            sresume.to_json_line(),
            r#"{"event":"resume","deployment":"p1","from_stage":2}"#
        );
        let sresult = Event::StagesResult {
            deployment: "p1".into(),
            state: Some("succeeded".into()),
            message: "m".into(),
            exit: 0,
        };
        assert_eq!(
            keys(&sresult),
            ["deployment", "event", "exit", "message", "state"]
        );
        let rolled = Event::StagesResult {
            deployment: "p1".into(),
            state: None,
            message: "m".into(),
            exit: 0,
        };
        assert_eq!(keys(&rolled), ["deployment", "event", "exit", "message"]);
        let window = Event::Window {
            hotfix: true,
            note: "n".into(),
        };
        assert_eq!(keys(&window), ["event", "hotfix", "note"]);
        let reused = Event::ReusedId {
            host: "web1".into(),
            release: "v2".into(),
            note: "n".into(),
        };
        assert_eq!(keys(&reused), ["event", "host", "note", "release"]);
        let pre = Event::Preflight {
            ready: true,
            blocking: json!([]),
            warnings: json!([]),
            forced: false,
        };
        assert_eq!(
            keys(&pre),
            ["blocking", "event", "forced", "ready", "warnings"]
        );
        for e in [
            &start, &progress, &step, &started, &wave, &result, &decided, &m, &rb, &stage, &done,
            &back, &stages, &sresume, &sresult, &rolled, &window, &reused, &pre,
        ] {
            let v: Value = serde_json::from_str(&e.to_json_line()).unwrap();
            assert_eq!(v["event"], e.kind(), "{v}");
            assert!(Event::KINDS.contains(&e.kind()), "{v}");
        }
        let line = result.to_json_line();
        assert!(!line.contains('\n'), "one line per event: {line}");
        assert_eq!(step.host(), Some("web1"));
        assert_eq!(result.host(), None);
    }

    /// The dry run's lines keep the names they had as untyped JSON, and
    /// what `show` learns from the hosts has its own kinds (issue 14).
    #[test]
    fn issue14_dry_run_and_learned_events_keep_their_wire_names() {
        let dry = Event::DryRun {
            window: "open".into(),
            preflight: "READY".into(),
            parallel: 4,
            on_wave_failure: "rollback-all".into(),
        };
        assert_eq!(
            keys(&dry),
            [
                "event",
                "on_wave_failure",
                "parallel",
                "preflight",
                "window"
            ]
        );
        let wave = Event::WouldWave {
            wave: 1,
            of: 2,
            name: None,
            hosts: vec!["web1".into()],
            max_fail: 0,
            allowed_failures: 0,
            soak_secs: Some(30),
        };
        assert_eq!(
            keys(&wave),
            [
                "allowed_failures",
                "event",
                "hosts",
                "max_fail",
                "name",
                "of",
                "soak_secs",
                "wave"
            ]
        );
        let would = Event::Would {
            host: "web1".into(),
            steps: vec!["lock".into()],
            on_failure: vec![],
            keys: vec!["ID:web1:stage".into()],
        };
        assert_eq!(
            keys(&would),
            ["event", "host", "keys", "on_failure", "steps"]
        );
        let end = Event::DryRunResult {
            dry_run: true,
            release: "v2".into(),
            sha256: "ab".into(),
            git_ref: None,
            hosts: 2,
            parallel: 4,
            exit: 0,
        };
        assert_eq!(
            keys(&end),
            [
                "dry_run", "event", "exit", "git_ref", "hosts", "parallel", "release", "sha256"
            ]
        );
        let report = Event::HostReport {
            deployment: "d1".into(),
            host: "web1".into(),
            action: "rollback".into(),
            by: "watchdog on web1".into(),
            detail: "x".into(),
        };
        let settled = Event::Settled {
            deployment: "d1".into(),
            state: "succeeded".into(),
            was: "watching".into(),
            reason: "r".into(),
        };
        assert_eq!(
            keys(&settled),
            ["deployment", "event", "reason", "state", "was"]
        );
        for (e, kind) in [
            (&dry, "dry_run"),
            (&wave, "would_wave"),
            (&would, "would"),
            (&end, "result"),
            (&report, "host_report"),
            (&settled, "settled"),
        ] {
            let v: Value = serde_json::from_str(&e.to_json_line()).unwrap();
            assert_eq!(v["event"], kind);
            assert_eq!(e.kind(), kind);
            assert!(Event::KINDS.contains(&kind));
        }
        assert_eq!(would.host(), Some("web1"));
        assert_eq!(report.host(), Some("web1"));
        // Every kind once in KINDS.
        let mut kinds = Event::KINDS.to_vec();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), Event::KINDS.len());
    }
}
