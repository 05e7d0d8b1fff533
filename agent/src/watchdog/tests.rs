//! The watchdog's loop driven whole under paused tokio time (its timers
//! are events): a real journal, real release directories and the real
//! rollback and commit jobs; only what the probes answer is scripted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use golive_shared::config::AgentConfig;
use golive_shared::protocol::*;

use super::sample::{BoxFuture, Sampler};
use super::*;
use crate::journal::Journal;
use crate::revocation::DenyList;

/// What the app's `health` probe answers, set by the test.
struct Script {
    status: Mutex<ProbeStatus>,
    calls: AtomicUsize,
}

impl Script {
    fn new() -> Arc<Script> {
        Arc::new(Script {
            status: Mutex::new(ProbeStatus::Pass),
            calls: AtomicUsize::new(0),
        })
    }

    fn set(&self, s: ProbeStatus) {
        *self.status.lock().unwrap() = s;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Sampler for Script {
    fn verdict(&self, _app: &str, probe: &str) -> BoxFuture<ProbeResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let status = *self.status.lock().unwrap();
        let probe = probe.to_string();
        Box::pin(async move {
            ProbeResult {
                name: probe,
                kind: "http".into(),
                severity: Severity::Critical,
                status,
                value: Some(format!("{status:?}")),
                threshold: None,
                duration_ms: 1,
                message: format!("scripted {status:?}"),
            }
        })
    }

    fn log(
        &self,
        _app: &str,
        _probe: &str,
    ) -> BoxFuture<Result<crate::accesslog::WindowStats, String>> {
        Box::pin(async { Err("no log in this test".to_string()) })
    }
}

struct World {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    db: std::path::PathBuf,
    config: AgentConfig,
}

/// An app `shop` with releases v1 then v2 live (v1 is the rollback
/// target), a probe `health` (tcp: no http probe, so the rollback job
/// samples no availability), and `extra` appended to its table.
fn world(extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let config: AgentConfig = toml::from_str(&format!(
        "[agent]\nname = \"web1\"\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\n\
         [tls]\nca = \"/x\"\ncert = \"/x\"\nkey = \"/x\"\n\
         [apps.shop]\nroot = {root:?}\n{extra}\n\
         [[apps.shop.probes]]\nkind = \"tcp\"\nname = \"health\"\naddress = \"127.0.0.1:1\"\n"
    ))
    .unwrap();
    let layout = AppLayout::new(&root);
    layout.ensure_dirs().unwrap();
    let db = state.join("journal.db");
    let journal = Journal::open(&db).unwrap();
    for (i, id) in ["v1", "v2"].iter().enumerate() {
        std::fs::create_dir_all(layout.release_dir(id)).unwrap();
        journal
            .record_staged("shop", id, None, None, i as i64)
            .unwrap();
        // v2 is deployment d1's: its rollback point, as an activation
        // under the deployment's lock records it.
        if *id == "v2" {
            let activate = ActivateRelease {
                app: "shop".into(),
                release: "v2".into(),
                rollback: RollbackPolicy::default(),
            };
            crate::rollback::record_point(&config, &journal, &activate, "d1", Some("v1"), &|_| {})
                .unwrap();
        }
        let previous = layout.activate(id).unwrap();
        journal
            .record_activation("shop", id, previous.as_deref(), "activate", 10 + i as i64)
            .unwrap();
    }
    crate::rollback::point_live(&journal, "shop", "d1").unwrap();
    World {
        _dir: dir,
        root,
        db,
        config,
    }
}

impl World {
    /// An agent on the world's journal, its loop running on `script`,
    /// reading `start_ms` as now.
    fn agent(&self, script: &Arc<Script>, start_ms: UnixMillis) -> Arc<Agent> {
        let journal = Journal::open(&self.db).unwrap();
        let agent = Arc::new(Agent::new(
            self.config.clone(),
            journal,
            Arc::new(DenyList::none()),
        ));
        // As the agent starts: unfinished host rollbacks first.
        crate::jobs::resume(&agent, None);
        start_with(&agent, script.clone(), Clock::at(start_ms));
        agent
    }

    fn current(&self) -> Option<String> {
        AppLayout::new(&self.root).current().unwrap()
    }
}

fn spec(window_secs: u64, for_secs: u64, condition: Condition) -> WatchdogSpec {
    WatchdogSpec {
        window_secs,
        interval_ms: 1000,
        triggers: vec![Trigger {
            name: "health".into(),
            probe: "health".into(),
            condition,
            for_secs,
        }],
        error_limit: 3,
        confirm_within_secs: None,
        restore_allowed: false,
    }
}

async fn arm_it(agent: &Arc<Agent>, spec: WatchdogSpec) -> WatchdogInfo {
    arm(
        agent,
        "alice",
        ArmWatchdog {
            app: "shop".into(),
            deployment: "d1".into(),
            spec,
        },
    )
    .await
    .unwrap()
}

fn state(agent: &Agent) -> WatchdogInfo {
    status(
        agent,
        &WatchdogStatusRequest {
            app: "shop".into(),
            deployment: None,
        },
    )
    .unwrap()
    .expect("a watchdog")
}

/// Advances paused time in 100 ms steps until the watchdog is in a final
/// state (at most `secs`).
async fn until_final(agent: &Agent, secs: u64) -> WatchdogInfo {
    for _ in 0..secs * 10 {
        let s = state(agent);
        if s.state.is_final() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no final state within {secs} s: {:#?}", state(agent));
}

const T0: UnixMillis = 1_800_000_000_000;

#[tokio::test(start_paused = true)]
async fn issue13_one_bad_sample_does_not_fire_a_sustained_failure_does() {
    let w = world("");
    let script = Script::new();
    let agent = w.agent(&script, T0);
    let armed = arm_it(&agent, spec(600, 5, Condition::Failing)).await;
    assert_eq!(armed.state, WatchdogState::Armed);
    assert_eq!(armed.until, T0 + 600_000);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    // One bad sample, and two more later apart: never five seconds long.
    script.set(ProbeStatus::Fail);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    script.set(ProbeStatus::Pass);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    script.set(ProbeStatus::Fail);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    script.set(ProbeStatus::Pass);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let s = state(&agent);
    assert_eq!(s.state, WatchdogState::Armed, "{s:#?}");
    assert_eq!(w.current().as_deref(), Some("v2"));
    let transitions = s.events.iter().filter(|e| e.kind == "trigger").count();
    assert_eq!(transitions, 4, "{:#?}", s.events);
    // About one sample a second, not more.
    let samples = script.calls();
    assert!((12..=15).contains(&samples), "{samples} samples in 13.5 s");

    // Now it stays failing: it fires when the condition has held 5 s.
    script.set(ProbeStatus::Fail);
    let started = tokio::time::Instant::now();
    let s = until_final(&agent, 30).await;
    assert_eq!(s.state, WatchdogState::RolledBack, "{s:#?}");
    let true_at = s
        .events
        .iter()
        .rev()
        .find(|e| e.line.contains("condition true"))
        .unwrap()
        .at;
    assert_eq!(s.fired_at.unwrap() - true_at, 5000, "{s:#?}");
    assert!(started.elapsed() <= Duration::from_secs(7));
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .starts_with("trigger health held"),
        "{s:#?}"
    );
    assert_eq!(s.rollback_to.as_deref(), Some("v1"));
    assert_eq!(w.current().as_deref(), Some("v1"));
    let job = agent.journal.job(s.rollback_job.unwrap()).unwrap().unwrap();
    assert_eq!(job.submitted_by, SUBMITTER);
    assert_eq!(job.idempotency_key, "rollback:d1:web1");
    assert_eq!(job.state, JobState::Succeeded);
    // Nothing armed any more: no timer, no samples.
    let calls = script.calls();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(script.calls(), calls);
    stop(&agent).await;
}

#[tokio::test(start_paused = true)]
async fn issue13_errors_below_the_limit_do_not_fire_past_it_they_do() {
    let w = world("");
    let script = Script::new();
    let agent = w.agent(&script, T0);
    arm_it(&agent, spec(600, 2, Condition::Failing)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Two errors (the limit is three), a pass, two errors: never counted.
    for _ in 0..2 {
        script.set(ProbeStatus::Error);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        script.set(ProbeStatus::Pass);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert_eq!(state(&agent).state, WatchdogState::Armed);
    script.set(ProbeStatus::Error);
    let s = until_final(&agent, 30).await;
    assert_eq!(s.state, WatchdogState::RolledBack, "{s:#?}");
    assert!(
        s.events
            .iter()
            .any(|e| e.line.contains("3 probe errors in a row count")),
        "{:#?}",
        s.events
    );
    stop(&agent).await;
}

/// A trigger true past its duration whose next samples are errors (below
/// the limit) does not fire on them, and the loop keeps its interval.
#[tokio::test(start_paused = true)]
async fn issue13_an_error_sample_never_fires_a_trigger_nor_speeds_the_loop() {
    let w = world("");
    let script = Script::new();
    let agent = w.agent(&script, T0);
    arm_it(&agent, spec(600, 2, Condition::Failing)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    script.set(ProbeStatus::Fail);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // True since T0 + 1 s; the samples at T0 + 2 s and + 3 s (its due
    // time) are errors (the limit is three).
    script.set(ProbeStatus::Error);
    let calls = script.calls();
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert_eq!(state(&agent).state, WatchdogState::Armed);
    assert_eq!(script.calls() - calls, 2, "one sample a second");
    // The condition shows again: true since T0 + 1 s, so it fires at once.
    script.set(ProbeStatus::Fail);
    let s = until_final(&agent, 5).await;
    assert_eq!(s.state, WatchdogState::RolledBack, "{s:#?}");
    assert_eq!(s.fired_at, Some(T0 + 4000));
    stop(&agent).await;
}

#[tokio::test(start_paused = true)]
async fn issue13_a_quiet_window_commits_and_the_dead_man_fires_without_a_go() {
    // No migrations declared: the commit has nothing to run.
    let w = world("");
    let script = Script::new();
    let agent = w.agent(&script, T0);
    arm_it(&agent, spec(20, 3, Condition::Failing)).await;
    let s = until_final(&agent, 40).await;
    assert_eq!(s.state, WatchdogState::Committed, "{s:#?}");
    assert_eq!(s.committed_at, Some(T0 + 20_000));
    assert_eq!(s.commit_job, None);
    assert_eq!(w.current().as_deref(), Some("v2"));

    // The dead-man: no go within 5 s, with a healthy app.
    let mut dead = spec(60, 3, Condition::Failing);
    dead.confirm_within_secs = Some(5);
    let armed = arm(
        &agent,
        "alice",
        ArmWatchdog {
            app: "shop".into(),
            deployment: "d2".into(),
            spec: dead.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(armed.confirm_by, Some(armed.armed_at + 5000));
    let s = until_final(&agent, 30).await;
    assert_eq!(s.state, WatchdogState::RolledBack, "{s:#?}");
    assert_eq!(s.fired_at, Some(armed.armed_at + 5000));
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("no go before the deadline")
    );
    assert_eq!(w.current().as_deref(), Some("v1"));
    stop(&agent).await;
}

#[tokio::test(start_paused = true)]
async fn issue13_a_go_commits_at_once_and_disarms_the_dead_man() {
    let w = world("");
    let script = Script::new();
    let agent = w.agent(&script, T0);
    let mut dead = spec(60, 3, Condition::Failing);
    dead.confirm_within_secs = Some(5);
    arm_it(&agent, dead).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let go = ConfirmWatchdog {
        app: "shop".into(),
        deployment: "d1".into(),
        by: "carol".into(),
    };
    confirm(&agent, "alice", go.clone()).await.unwrap();
    let s = until_final(&agent, 5).await;
    assert_eq!(s.state, WatchdogState::Committed, "{s:#?}");
    assert!(
        s.events
            .iter()
            .any(|e| e.line.contains("go from carol (certificate alice)"))
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(state(&agent).state, WatchdogState::Committed);
    assert_eq!(w.current().as_deref(), Some("v2"));
    // A repeated go answers the same; a disarm after it is refused.
    assert_eq!(
        confirm(&agent, "alice", go).await.unwrap().state,
        WatchdogState::Committed
    );
    let e = disarm(
        &agent,
        "alice",
        DisarmWatchdog {
            app: "shop".into(),
            deployment: "d1".into(),
            reason: "x".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{e}");
    stop(&agent).await;
}

#[tokio::test(start_paused = true)]
async fn issue13_disarm_and_replace_stop_watching_without_rolling_back() {
    let w = world("");
    let script = Script::new();
    let agent = w.agent(&script, T0);
    let first = arm_it(&agent, spec(600, 3, Condition::Failing)).await;
    // The same again (a controller that lost the answer): the same watchdog.
    let again = arm_it(&agent, spec(600, 3, Condition::Failing)).await;
    assert_eq!(again.armed_at, first.armed_at);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = arm(
        &agent,
        "alice",
        ArmWatchdog {
            app: "shop".into(),
            deployment: "d2".into(),
            spec: spec(600, 3, Condition::Failing),
        },
    )
    .await
    .unwrap();
    assert_eq!(second.deployment, "d2");
    let old = status(
        &agent,
        &WatchdogStatusRequest {
            app: "shop".into(),
            deployment: Some("d1".into()),
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(old.state, WatchdogState::Disarmed);
    assert_eq!(old.reason.as_deref(), Some("replaced by deployment d2"));
    let s = disarm(
        &agent,
        "alice",
        DisarmWatchdog {
            app: "shop".into(),
            deployment: "d2".into(),
            reason: "planned test".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(s.state, WatchdogState::Disarmed);
    script.set(ProbeStatus::Fail);
    let calls = script.calls();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(script.calls(), calls, "a disarmed watchdog still samples");
    assert_eq!(w.current().as_deref(), Some("v2"));
    stop(&agent).await;
}

/// Another release went live meanwhile (a controller's rollback): the
/// dead-man's deadline then stops the watchdog instead of rolling back a
/// release it never watched.
#[tokio::test(start_paused = true)]
async fn issue13_a_release_no_longer_live_is_not_rolled_back_by_its_watchdog() {
    let w = world("");
    let script = Script::new();
    let agent = w.agent(&script, T0);
    let mut dead = spec(60, 3, Condition::Failing);
    dead.confirm_within_secs = Some(5);
    dead.interval_ms = 60_000;
    arm_it(&agent, dead).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    AppLayout::new(&w.root).activate("v1").unwrap();
    script.set(ProbeStatus::Fail);
    let s = until_final(&agent, 10).await;
    assert_eq!(s.state, WatchdogState::Disarmed, "{s:#?}");
    assert_eq!(
        s.reason.as_deref(),
        Some("release v2 is no longer live (v1 is); nothing of it left to watch")
    );
    assert_eq!(s.rollback_job, None);
    assert_eq!(w.current().as_deref(), Some("v1"));
    stop(&agent).await;
}

/// The loop with nothing armed has no due time, so `run` waits on its
/// channel alone (ARCHITECTURE.md: the idle agent runs no timers).
#[tokio::test(start_paused = true)]
async fn issue13_nothing_armed_means_no_timer() {
    let w = world("");
    let script = Script::new();
    let journal = Journal::open(&w.db).unwrap();
    let agent = Arc::new(Agent::new(
        w.config.clone(),
        journal,
        Arc::new(DenyList::none()),
    ));
    let mut lp = Loop {
        tx: agent.watchdog.tx.clone(),
        agent: Arc::clone(&agent),
        sampler: script.clone(),
        clock: Clock::at(T0),
        watches: BTreeMap::new(),
        generations: 0,
    };
    lp.resume();
    assert_eq!(lp.next_wake(), None);
    let (reply, answer) = oneshot::channel();
    lp.handle(Event::Arm {
        req: ArmWatchdog {
            app: "shop".into(),
            deployment: "d1".into(),
            spec: spec(60, 3, Condition::Failing),
        },
        spec: spec(60, 3, Condition::Failing),
        release: "v2".into(),
        by: "alice".into(),
        reply,
    });
    answer.await.unwrap().unwrap();
    assert_eq!(lp.next_wake(), Some((T0, "shop".to_string())));
    let (reply, answer) = oneshot::channel();
    lp.handle(Event::Disarm {
        req: DisarmWatchdog {
            app: "shop".into(),
            deployment: "d1".into(),
            reason: "done".into(),
        },
        peer: "alice".into(),
        reply,
    });
    answer.await.unwrap().unwrap();
    assert_eq!(lp.next_wake(), None);
}

#[tokio::test(start_paused = true)]
async fn issue13_a_restart_rearms_with_the_remaining_window_and_finishes_a_rollback() {
    let w = world("");
    let script = Script::new();
    let agent = w.agent(&script, T0);
    let armed = arm_it(&agent, spec(120, 3, Condition::Failing)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop(&agent).await;
    drop(agent);

    // Back 20 s later: 90 s of the window remain, and it still fires.
    let agent = w.agent(&script, T0 + 30_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = state(&agent);
    assert_eq!(s.state, WatchdogState::Armed);
    assert_eq!(s.until, armed.until);
    assert!(
        s.events
            .iter()
            .any(|e| e.line.contains("90 s of the window remain")),
        "{:#?}",
        s.events
    );
    script.set(ProbeStatus::Fail);
    let s = until_final(&agent, 30).await;
    assert_eq!(s.state, WatchdogState::RolledBack, "{s:#?}");
    stop(&agent).await;
    drop(agent);

    // A window that ended while the agent was down is watched a while
    // longer before it commits: nothing watched it.
    let w = world("");
    script.set(ProbeStatus::Pass);
    let agent = w.agent(&script, T0);
    arm_it(&agent, spec(20, 3, Condition::Failing)).await;
    stop(&agent).await;
    drop(agent);
    let agent = w.agent(&script, T0 + 600_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = state(&agent);
    assert_eq!(s.state, WatchdogState::Armed, "{s:#?}");
    assert_eq!(s.until, T0 + 600_000 + 3000 + 1000);
    let s = until_final(&agent, 30).await;
    assert_eq!(s.state, WatchdogState::Committed, "{s:#?}");
    stop(&agent).await;
    drop(agent);

    // Fired, and the host rollback interrupted by a stop: resumed at start
    // under its one key, switched once.
    let w = world("");
    let agent = w.agent(&script, T0);
    arm_it(&agent, spec(60, 3, Condition::Failing)).await;
    stop(&agent).await;
    let journal = Journal::open(&w.db).unwrap();
    let id = journal.watchdog_of("shop", None).unwrap().unwrap().id;
    journal
        .watchdog_fired(id, "trigger health held", Some("v1"), T0 + 5000)
        .unwrap();
    let spec_rb = JobSpec::HostRollback(HostRollback {
        app: "shop".into(),
        deployment: Some("d1".into()),
        to: None,
        reason: "watchdog".into(),
        requested_by: RollbackRequester::Watchdog,
        force: false,
        restore: None,
    });
    let (job, _) = journal
        .insert_job("rollback:d1:web1", &spec_rb, SUBMITTER, T0 + 5000)
        .unwrap();
    journal.set_job_deployment(job.id, "d1").unwrap();
    journal.watchdog_job(id, false, job.id, 1).unwrap();
    journal.set_job_running(job.id).unwrap();
    let recovery = journal.recover(T0 + 6000).unwrap();
    assert_eq!(recovery.resumed_jobs, [job.id]);
    drop(agent);
    let agent = w.agent(&script, T0 + 10_000);
    let s = until_final(&agent, 30).await;
    assert_eq!(s.state, WatchdogState::RolledBack, "{s:#?}");
    let again = agent.journal.job(s.rollback_job.unwrap()).unwrap().unwrap();
    assert_eq!(again.id, job.id);
    assert_eq!(again.idempotency_key, "rollback:d1:web1");
    assert_eq!(w.current().as_deref(), Some("v1"));
    let switches: i64 = rusqlite::Connection::open(&w.db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM activations WHERE cause = 'rollback'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(switches, 1);
    stop(&agent).await;
}
