//! The sequencer's unit tests (issue 14, part 8): `run_deployment` driven
//! whole against scripted agents behind the transport seam
//! ([`super::fake_agent`]), on paused tokio time, so a host's deadline, a
//! wave's soak and a hung agent take no wall-clock time. The journal is a
//! real one in a temporary directory; the plan is loaded from TOML (with a
//! real test PKI) and its hosts' links replaced by the fakes.

use std::time::Duration;

use super::error::Outcome;
use super::fake_agent::{FakeAgent, Script};
use crate::deployment::downtime::{Downtime, Unavailable};
use crate::deployment::sequencer::run_deployment;
use crate::deployment::{self, Executor};
use crate::journal::Journal;
use crate::output::{Exit, Format, Out};
use crate::plan::Plan;

/// Scripted hosts `web1..`, all running v1, and a plan deploying v2 to them.
struct Fleet {
    _tmp: tempfile::TempDir,
    state: std::path::PathBuf,
    plan: Plan,
    agents: Vec<FakeAgent>,
}

fn fleet(scripts: Vec<Script>, deploy: &str) -> Fleet {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    crate::pki::ca_init(&pki, 30).unwrap();
    crate::pki::issue_operator(&pki, "alice", golive_shared::identity::Role::Operator, 10).unwrap();
    std::fs::create_dir_all(tmp.path().join("dist")).unwrap();
    std::fs::write(tmp.path().join("dist/shop.tar.gz"), b"x").unwrap();
    let mut text = "app = \"shop\"\n\n\
                    [release]\nid = \"v2\"\nartifact = \"dist/shop.tar.gz\"\n\n\
                    [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/operators/alice.crt\"\n\
                    key = \"pki/operators/alice.key\"\n\n"
        .to_string();
    for i in 1..=scripts.len() {
        text.push_str(&format!(
            "[[hosts]]\nname = \"web{i}\"\naddress = \"127.0.0.1:{}\"\n\n",
            7440 + i
        ));
    }
    text.push_str(&format!(
        "[deploy]\nlock_ttl_secs = 30\nhost_timeout_secs = 5\n\n{deploy}"
    ));
    let path = tmp.path().join("golive.toml");
    std::fs::write(&path, text).unwrap();
    let mut plan = crate::plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let agents: Vec<FakeAgent> = scripts
        .into_iter()
        .enumerate()
        .map(|(i, script)| FakeAgent::new(&format!("web{}", i + 1), Some("v1"), script))
        .collect();
    for (host, agent) in plan.hosts.iter_mut().zip(&agents) {
        host.client = agent.link(&host.address);
    }
    let state = tmp.path().join("state");
    Fleet {
        _tmp: tmp,
        state,
        plan,
        agents,
    }
}

/// Records deployment D1 as `golivectl deploy` does, runs it to its end;
/// the outcome and how long it took on the (paused) clock.
async fn deploy(f: &Fleet) -> (Outcome, Duration) {
    record(f);
    run(f).await
}

/// Records deployment D1 (compiled, stored) as `golivectl deploy` does
/// before anything changes.
fn record(f: &Fleet) {
    let (plan, id) = (&f.plan, "D1");
    let previous: Vec<Option<String>> = f.agents.iter().map(FakeAgent::current).collect();
    let journal = Journal::open(&f.state).unwrap();
    journal
        .create_deployment(id, "golive.toml", &plan.app, "v2", "sha", &plan.operator)
        .unwrap();
    let compiled = deployment::compile(&deployment::Input::from_plan(
        plan, id, "plansha", "sha", 1, &previous,
    ));
    journal
        .store_compiled(id, "plansha", &serde_json::to_string(&compiled).unwrap())
        .unwrap();
    for (host, prev) in plan.hosts.iter().zip(&previous) {
        journal
            .set_host(id, &host.name, &host.address, prev.as_deref(), "pending")
            .unwrap();
    }
}

/// Runs recorded deployment D1 from its stored compiled deployment, as
/// `deploy` and `deploy --resume` do: the outcome and how long it took.
async fn run(f: &Fleet) -> (Outcome, Duration) {
    let (plan, id) = (&f.plan, "D1");
    let journal = Journal::open(&f.state).unwrap();
    let (_, text) = journal.compiled(id).unwrap().expect("compiled");
    let compiled: deployment::Deployment = serde_json::from_str(&text).unwrap();
    let previous: Vec<Option<String>> = compiled.hosts.iter().map(|h| h.previous.clone()).collect();
    journal.interrupt_steps(id).unwrap();
    let exec = Executor::new(&journal, &compiled);
    let (mut downtime, mut unavailable, mut watched) =
        (Downtime::None, Unavailable::default(), Vec::new());
    let started = tokio::time::Instant::now();
    let outcome = run_deployment(
        Out {
            format: Format::Json,
        },
        &journal,
        &exec,
        plan,
        id,
        &previous,
        &mut downtime,
        &mut unavailable,
        &mut watched,
    )
    .await;
    (outcome, started.elapsed())
}

/// Forgets D1's journaled steps named in `steps`, as if the controller had
/// been killed before they ran (a raw connection, as a crash leaves it).
fn forget(f: &Fleet, steps: &[&str]) {
    let db = rusqlite::Connection::open(f.state.join("golivectl.db")).unwrap();
    for step in steps {
        db.execute(
            "DELETE FROM steps WHERE deployment = 'D1' AND step = ?1",
            [step],
        )
        .unwrap();
    }
}

fn probe_runs(a: &FakeAgent) -> usize {
    a.calls().iter().filter(|c| *c == "probe.run").count()
}

fn jobs(a: &FakeAgent) -> Vec<String> {
    a.jobs()
}

const THREE_WAVES: &str = "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\n\n\
                           [[waves]]\npercent = 50\n\n[[waves]]\npercent = 100\n";

#[tokio::test(start_paused = true)]
async fn issue14_a_failing_canary_stops_the_rollout_and_rolls_the_canary_back() {
    let canary = Script {
        probes_fail_after_switch: true,
        ..Script::default()
    };
    let f = fleet(
        vec![
            canary,
            Script::default(),
            Script::default(),
            Script::default(),
        ],
        THREE_WAVES,
    );
    let (outcome, _) = deploy(&f).await;
    let message = outcome.message();
    assert_eq!(outcome.exit(), Exit::RolledBack, "{message}");
    assert!(
        message.starts_with(
            "wave 1/3 (canary) failed: 1 of 1 host(s) failed (web1), 0 allowed by max_fail = 0: \
             the gate rolled back on web1:"
        ),
        "{message}"
    );
    assert!(
        message.contains("; switched back to the previous release"),
        "{message}"
    );
    assert_eq!(
        jobs(&f.agents[0]),
        ["stage", "activate", "host.rollback"],
        "the canary went live, then back"
    );
    assert_eq!(f.agents[0].current().as_deref(), Some("v1"));
    for a in &f.agents[1..] {
        // Staged with the others, never asked to switch; the staged release
        // is given back so its id can be used again.
        assert_eq!(jobs(a), ["stage", "release.discard"]);
        assert_eq!(a.current().as_deref(), Some("v1"));
    }
}

#[tokio::test(start_paused = true)]
async fn issue14_a_host_that_never_answers_fails_within_its_deadline_and_the_wave_decides() {
    let hung = Script {
        hangs_at_activate: true,
        ..Script::default()
    };
    let f = fleet(
        vec![Script::default(), Script::default(), hung],
        "[[waves]]\npercent = 100\nmax_fail = 50\n",
    );
    let (outcome, took) = deploy(&f).await;
    let message = outcome.message();
    assert_eq!(outcome.exit(), Exit::Done, "{message}");
    assert!(
        message.starts_with(
            "release v2 is live on 2 of 3 host(s); failed within their wave's max_fail: web3 \
             (activation on web3 failed: agent web3 at 127.0.0.1:7443: web3 unreachable for 5 s \
             (deadline host_timeout_secs); not switched back: it did not answer"
        ),
        "{message}"
    );
    for a in &f.agents[..2] {
        assert_eq!(a.current().as_deref(), Some("v2"));
        assert_eq!(jobs(a), ["stage", "activate"]);
    }
    // Its activation, its switch-back and the check that it is lost each
    // waited the 5 s deadline, never the client's own 90 s: the wave went
    // on without it. Lost, its lock is not released (no 10 s wait): it is
    // left to run out, and the outcome says so.
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert!(
        message.contains("LOST mid-deployment: web3 (") && message.contains("(30 s)"),
        "{message}"
    );
    let unlock = journaled(&f, "unlock");
    assert!(
        unlock.contains(&(
            "web3".into(),
            "skipped".into(),
            Some("D1:web3:unlock".into())
        )),
        "{unlock:?}"
    );
    assert!(!f.agents[2].calls().contains(&"lock.release".to_string()));
}

/// Host by host, web2 hangs at its activation: the activation fails
/// within `[deploy] host_timeout_secs` (5 s here, as in a wave; not the
/// minute golivectl follows a job through a lost agent elsewhere), and the
/// deployment switches back. web2's switch-back times out and web2 is then
/// known lost (not even a hello): its discard (the release it never made
/// live) and its unlock are skipped at once, journaled `skipped`, rather
/// than each followed up to a minute (the discard) or 10 s (the release);
/// web1 goes back, and the outcome names web2 lost.
#[tokio::test(start_paused = true)]
async fn issue14_a_host_lost_mid_deployment_has_its_later_steps_skipped_at_once() {
    let hung = Script {
        hangs_at_activate: true,
        ..Script::default()
    };
    let f = fleet(vec![Script::default(), hung], "");
    let (outcome, took) = deploy(&f).await;
    let message = outcome.message();
    assert_eq!(outcome.exit(), Exit::Failed, "{message}");
    assert!(message.contains("LOST mid-deployment: web2 ("), "{message}");
    assert_eq!(f.agents[0].current().as_deref(), Some("v1"));
    assert_eq!(jobs(&f.agents[0]), ["stage", "activate", "host.rollback"]);
    assert!(
        message.contains("web2 unreachable for 5 s (deadline host_timeout_secs)"),
        "{message}"
    );
    // The activation, the switch-back and the hello (5 s each), nothing
    // more: no activation followed for a minute, no discard followed for
    // another, no release.
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(20),
        "{took:?}"
    );
    for step in ["discard", "unlock"] {
        let rows = journaled(&f, step);
        assert!(
            rows.contains(&(
                "web2".into(),
                "skipped".into(),
                Some(format!("D1:web2:{step}"))
            )),
            "{step}: {rows:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn issue14_a_wave_over_its_max_fail_share_stops_and_every_switched_host_goes_back() {
    let broken = Script {
        activate_fails: true,
        ..Script::default()
    };
    let f = fleet(
        vec![
            Script::default(),
            broken.clone(),
            broken,
            Script::default(),
            Script::default(),
        ],
        "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\n\n\
         [[waves]]\nhosts = [\"web2\", \"web3\", \"web4\", \"web5\"]\nmax_fail = 25\n",
    );
    let (outcome, _) = deploy(&f).await;
    let message = outcome.message();
    // The wave's first failure is an activation (exit 1), but every host
    // this deployment switched went back: rolled back, exit 3.
    assert_eq!(outcome.exit(), Exit::RolledBack, "{message}");
    assert!(
        message.starts_with(
            "wave 2/2 failed: 2 of 4 host(s) failed (web2, web3), 1 allowed by max_fail = 25: \
             activation on web2 failed: job "
        ),
        "{message}"
    );
    assert!(
        message.contains("; switched back to the previous release"),
        "{message}"
    );
    for a in &f.agents {
        assert_eq!(a.current().as_deref(), Some("v1"), "{message}");
        assert!(
            jobs(a).contains(&"host.rollback".to_string()),
            "{:?}",
            jobs(a)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn issue14_a_failure_within_the_max_fail_share_is_rolled_back_alone() {
    let broken = Script {
        activate_fails: true,
        ..Script::default()
    };
    let f = fleet(
        vec![
            Script::default(),
            broken,
            Script::default(),
            Script::default(),
        ],
        "[[waves]]\npercent = 100\nmax_fail = 25\n",
    );
    let (outcome, _) = deploy(&f).await;
    let message = outcome.message();
    assert_eq!(outcome.exit(), Exit::Done, "{message}");
    assert!(
        message.starts_with(
            "release v2 is live on 3 of 4 host(s); failed within their wave's max_fail: web2 \
             (activation on web2 failed: job "
        ),
        "{message}"
    );
    assert!(message.contains("; rolled back)"), "{message}");
    assert_eq!(jobs(&f.agents[1]), ["stage", "activate", "host.rollback"]);
    assert_eq!(f.agents[1].current().as_deref(), Some("v1"));
    for i in [0, 2, 3] {
        assert_eq!(f.agents[i].current().as_deref(), Some("v2"));
    }
}

const SOAKED_CANARY: &str = "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\nsoak = \"60s\"\n\n\
                             [[waves]]\npercent = 100\n";

#[tokio::test(start_paused = true)]
async fn issue14_a_soak_runs_its_whole_time_before_the_next_wave() {
    let f = fleet(vec![Script::default(), Script::default()], SOAKED_CANARY);
    let (outcome, took) = deploy(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    assert!(took >= Duration::from_secs(60), "{took:?}");
    // Before, after the switch, then a sample every 10 s of the minute.
    let runs = |a: &FakeAgent| a.calls().iter().filter(|c| *c == "probe.run").count();
    assert_eq!(runs(&f.agents[0]), 2 + 6);
    assert_eq!(runs(&f.agents[1]), 2, "the second wave is not soaked");
    assert_eq!(f.agents[1].current().as_deref(), Some("v2"));
}

#[tokio::test(start_paused = true)]
async fn issue14_a_critical_probe_failing_in_the_soak_fails_the_wave_and_rolls_back() {
    // Runs 1 and 2 are the probes before and after the switch; the soak's
    // second sample (run 4) fails.
    let canary = Script {
        probes_fail_from_run: Some(4),
        ..Script::default()
    };
    let f = fleet(vec![canary, Script::default()], SOAKED_CANARY);
    let (outcome, took) = deploy(&f).await;
    let message = outcome.message();
    assert_eq!(outcome.exit(), Exit::RolledBack, "{message}");
    assert!(
        message.starts_with(
            "wave 1/2 (canary) failed: critical probe health failed on web1 during the soak: \
             got 500; switched back to the previous release"
        ),
        "{message}"
    );
    assert!(
        took >= Duration::from_secs(20) && took < Duration::from_secs(60),
        "stopped at the failing sample: {took:?}"
    );
    assert_eq!(jobs(&f.agents[0]), ["stage", "activate", "host.rollback"]);
    assert_eq!(jobs(&f.agents[1]), ["stage", "release.discard"]);
}

const PAUSE: &str = "[gate]\npause_timeout_secs = 120\n";

#[tokio::test(start_paused = true)]
async fn issue14_a_pause_without_a_decision_ends_exit_4_and_leaves_the_hosts_as_they_are() {
    let slow = Script {
        high_probe_fails_after_switch: true,
        ..Script::default()
    };
    let f = fleet(vec![slow, Script::default()], PAUSE);
    let (outcome, took) = deploy(&f).await;
    let message = outcome.message();
    assert_eq!(outcome.exit(), Exit::Paused, "{message}");
    assert!(
        message.starts_with("paused on web1 with no decision within 120 s ("),
        "{message}"
    );
    assert!(took >= Duration::from_secs(120), "{took:?}");
    // Kept as they are, for a later `go` or `no-go`.
    assert_eq!(f.agents[0].current().as_deref(), Some("v2"));
    assert_eq!(jobs(&f.agents[0]), ["stage", "activate"]);
    assert_eq!(jobs(&f.agents[1]), ["stage"]);
}

#[tokio::test(start_paused = true)]
async fn issue14_a_pause_waits_for_go_then_the_rollout_goes_on() {
    let slow = Script {
        high_probe_fails_after_switch: true,
        ..Script::default()
    };
    let f = fleet(vec![slow, Script::default()], PAUSE);
    // `golivectl go` from another shell, 10 s into the pause.
    let go = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let journal = Journal::open(&f.state).unwrap();
        journal
            .add_decision("D1", "bob", "go", None, "continue the deployment")
            .unwrap();
    };
    let ((outcome, took), ()) = tokio::join!(deploy(&f), go);
    let message = outcome.message();
    assert_eq!(outcome.exit(), Exit::Done, "{message}");
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(120),
        "{took:?}"
    );
    for a in &f.agents {
        assert_eq!(a.current().as_deref(), Some("v2"));
    }
}

/// Pending migrations put every host in maintenance before the verified
/// backup and the migration, and take it off after the switch, before the
/// probes (the web server answers 503 while it is on).
#[tokio::test(start_paused = true)]
async fn issue14_maintenance_is_on_around_the_backup_migration_and_switch_and_off_before_the_probes()
 {
    let migrating = Script {
        pending_migration: true,
        ..Script::default()
    };
    let f = fleet(vec![migrating.clone(), migrating], "");
    let (outcome, _) = deploy(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    for a in &f.agents {
        assert_eq!(
            a.job_steps(),
            [
                "stage",
                "maintenance on",
                "backup",
                "migrate",
                "activate",
                "maintenance off"
            ]
        );
        assert_eq!(a.probes_in_maintenance(), 0, "no probe ran behind the page");
        assert_eq!(probe_runs(a), 2, "before and after");
        assert!(!a.in_maintenance());
        assert_eq!(a.current().as_deref(), Some("v2"));
    }
}

/// A migration that fails stops the deployment before any switch, and
/// maintenance goes off again on every host it went on.
#[tokio::test(start_paused = true)]
async fn issue14_a_failed_migration_turns_maintenance_off_again_everywhere() {
    let migrating = Script {
        pending_migration: true,
        ..Script::default()
    };
    let broken = Script {
        migrate_fails: true,
        ..migrating.clone()
    };
    let f = fleet(vec![broken, migrating], "");
    let (outcome, _) = deploy(&f).await;
    let message = outcome.message();
    assert_eq!(outcome.exit(), Exit::Failed, "{message}");
    assert!(message.contains("web1"), "{message}");
    assert_eq!(
        f.agents[0].job_steps(),
        [
            "stage",
            "maintenance on",
            "backup",
            "migrate",
            "maintenance off",
            "release.discard"
        ]
    );
    // web2's backup ran (every host's before any migration), its
    // migration never did.
    assert_eq!(
        f.agents[1].job_steps(),
        [
            "stage",
            "maintenance on",
            "backup",
            "maintenance off",
            "release.discard"
        ]
    );
    for a in &f.agents {
        assert!(!a.in_maintenance());
        assert_eq!(a.current().as_deref(), Some("v1"));
    }
}

/// The controller died right after the switch (its probes after, gate and
/// unlock never journaled): the resume reads the figures before back from
/// the journal, since probing now would take the new release's as the
/// baseline; it probes only after, and sends no job again.
#[tokio::test(start_paused = true)]
async fn issue14_a_resume_reads_back_the_probes_taken_before_the_switch() {
    let f = fleet(vec![Script::default()], "");
    let (outcome, _) = deploy(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    assert_eq!(probe_runs(&f.agents[0]), 2);
    forget(&f, &["probe", "gate", "unlock"]);

    let (outcome, _) = run(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    assert_eq!(
        probe_runs(&f.agents[0]),
        3,
        "only the probes after ran again"
    );
    assert_eq!(
        jobs(&f.agents[0]),
        ["stage", "activate"],
        "no job sent again"
    );
    let journal = Journal::open(&f.state).unwrap();
    let d = journal.deployment("D1").unwrap().unwrap();
    let count = |name: &str| d.steps.iter().filter(|s| s.step == name).count();
    assert_eq!(count("probe-before"), 1, "taken once, read back since");
    assert_eq!(count("probe"), 1);
    assert_eq!(count("gate"), 1);
    assert_eq!(count("lock"), 2, "a lock is live: taken again");
}

/// The probes before are asked for while the release uploads and stages
/// (they read the live release, which staging leaves alone), and still
/// reported and recorded as `probe-before` after the stage, in its
/// compiled place: the journal and the output keep the compiled order.
#[tokio::test(start_paused = true)]
async fn issue14_the_probes_before_are_taken_beside_staging_and_recorded_after_it() {
    let f = fleet(vec![Script::default(), Script::default()], "");
    let (outcome, _) = deploy(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    for a in &f.agents {
        let calls = a.calls();
        let at = |op: &str| calls.iter().position(|c| c == op);
        let (probes, follow) = (at("probe.run"), at("job.events"));
        assert!(
            probes.is_some() && follow.is_some() && probes < follow,
            "the probes before were asked for after the stage was followed: {calls:?}"
        );
        assert_eq!(probe_runs(a), 2, "once before, once after: {calls:?}");
    }
    let journal = Journal::open(&f.state).unwrap();
    let d = journal.deployment("D1").unwrap().unwrap();
    for host in ["web1", "web2"] {
        let order: Vec<&str> = d
            .steps
            .iter()
            .filter(|s| s.host == host)
            .map(|s| s.step.as_str())
            .collect();
        let at = |name: &str| order.iter().position(|s| *s == name);
        assert!(at("stage") < at("probe-before"), "{order:?}");
        assert!(at("probe-before") < at("activate"), "{order:?}");
    }
}

/// Issue 14 (speed): a host's probes before are answered before its upload
/// starts, so both go over its one kept-alive connection (taken during the
/// upload, they opened a second: a TLS handshake more per host on both
/// sides). The other hosts' uploads still run beside them.
#[tokio::test(start_paused = true)]
async fn issue14_a_hosts_probes_before_come_before_its_upload_on_one_connection() {
    // Probes that take a second (paused time): an upload beside them
    // would come first.
    let slow = Script {
        probes_take: Some(Duration::from_secs(1)),
        ..Script::default()
    };
    let f = fleet(vec![slow; 3], "[[waves]]\npercent = 100\n");
    let (outcome, _) = deploy(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    for a in &f.agents {
        let calls = a.calls();
        let at = |op: &str| calls.iter().position(|c| c == op);
        // (probe.run: recorded as answered)
        let (probes, has, upload) = (at("probe.run"), at("artifact.has"), at("artifact.upload"));
        assert!(
            probes.is_some() && has.is_some() && upload.is_some(),
            "a probe, an artifact check and an upload each: {calls:?}"
        );
        assert!(
            probes < has && has < upload,
            "the upload started before the probes before were answered: {calls:?}"
        );
    }
}

/// A finished deployment run again on its journal replays every step:
/// no job, no probe, no soak; the same outcome.
#[tokio::test(start_paused = true)]
async fn issue14_a_second_run_replays_recorded_verdicts_and_soaks_nothing() {
    let f = fleet(vec![Script::default(), Script::default()], SOAKED_CANARY);
    let (first, took) = deploy(&f).await;
    assert_eq!(first.exit(), Exit::Done, "{}", first.message());
    assert!(took >= Duration::from_secs(60), "{took:?}");
    let runs: Vec<usize> = f.agents.iter().map(probe_runs).collect();

    let (again, took) = run(&f).await;
    assert_eq!(again.exit(), Exit::Done, "{}", again.message());
    assert!(
        took < Duration::from_secs(5),
        "the soak was read back: {took:?}"
    );
    assert_eq!(f.agents.iter().map(probe_runs).collect::<Vec<_>>(), runs);
    for a in &f.agents {
        assert_eq!(jobs(a), ["stage", "activate"]);
    }
}

/// A soak the controller started 40 s before it died (its start is
/// journaled) soaks only the 20 s that remain of its minute on resume.
#[tokio::test(start_paused = true)]
async fn issue14_a_resumed_soak_soaks_only_what_remains_of_its_window() {
    let f = fleet(vec![Script::default(), Script::default()], SOAKED_CANARY);
    record(&f);
    let started = golive_shared::protocol::now_millis() - 40_000;
    Journal::open(&f.state)
        .unwrap()
        .set_fact("D1", "soak-start:wave-1", &started.to_string())
        .unwrap();
    let (outcome, took) = run(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    assert!(
        // The wall clock moved on a little since the fact was written.
        took >= Duration::from_secs(19) && took < Duration::from_secs(30),
        "{took:?}"
    );
    // Before, after, then a sample every 10 s of the 20 s left.
    assert_eq!(probe_runs(&f.agents[0]), 2 + 2);
}

/// A soak whose window ran out while the controller was gone is sampled
/// once more before it is judged (nothing watched the probes meanwhile).
#[tokio::test(start_paused = true)]
async fn issue14_a_soak_whose_window_passed_while_the_controller_was_gone_samples_once() {
    let f = fleet(vec![Script::default(), Script::default()], SOAKED_CANARY);
    record(&f);
    let started = golive_shared::protocol::now_millis() - 600_000;
    Journal::open(&f.state)
        .unwrap()
        .set_fact("D1", "soak-start:wave-1", &started.to_string())
        .unwrap();
    let (outcome, took) = run(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert_eq!(probe_runs(&f.agents[0]), 2 + 1);
}

/// Every step name `compile` can emit, over its configurations (artifact
/// or git, maintenance, each backup mode, contract at commit, a watchdog,
/// a first install, waves), has one handler and a resume rule, and every
/// compiled deployment is one the sequencer can run ([`program`]).
#[test]
fn issue14_every_step_compile_can_emit_has_a_handler() {
    use crate::deployment::executor::on_resume;
    use crate::deployment::sequencer::{Phase, handler, program};
    use crate::deployment::{HostInput, Input, SourceInput};
    use crate::plan::PreDeployBackup;

    let spec = golive_shared::protocol::WatchdogSpec::defaults();
    let waves = [crate::waves::Wave {
        name: None,
        hosts: vec![0],
        soak: Some(Duration::from_secs(5)),
        max_fail: 0,
    }];
    let mut seen = std::collections::BTreeSet::new();
    let sources = [
        SourceInput::Artifact {
            sha256: "ab".repeat(32),
            bytes: 1,
        },
        SourceInput::Git {
            git_ref: "main".into(),
            scan: Default::default(),
        },
    ];
    for source in &sources {
        for maintenance in [false, true] {
            for backup in [
                PreDeployBackup::None,
                PreDeployBackup::Before,
                PreDeployBackup::Verified,
            ] {
                for contract_at_commit in [false, true] {
                    for watchdog in [None, Some(&spec)] {
                        for previous in [None, Some("v1".to_string())] {
                            for waves in [&[][..], &waves[..]] {
                                let d = deployment::compile(&Input {
                                    id: "D1",
                                    app: "shop",
                                    release: "v2",
                                    source: source.clone(),
                                    plan_sha256: "cd",
                                    hosts: vec![HostInput {
                                        name: "web1".into(),
                                        address: "127.0.0.1:7441".into(),
                                        previous: previous.clone(),
                                    }],
                                    waves,
                                    parallel: 1,
                                    maintenance,
                                    backup,
                                    contract_at_commit,
                                    restore_allowed: false,
                                    watchdog,
                                });
                                for s in &d.hosts[0].steps {
                                    assert!(
                                        handler(&s.name).is_some(),
                                        "{} has no handler",
                                        s.name
                                    );
                                    assert!(on_resume(&s.name).is_some(), "{} has no rule", s.name);
                                    seen.insert(s.name.clone());
                                }
                                for s in d.waves.iter().flat_map(|w| &w.steps) {
                                    assert!(on_resume(&s.name).is_some(), "{} has no rule", s.name);
                                    seen.insert(format!("wave's {}", s.name));
                                }
                                let phases = program(&d).unwrap_or_else(|e| panic!("{e}"));
                                assert_eq!(phases.first(), Some(&Phase::Lock));
                                assert_eq!(phases.last(), Some(&Phase::Unlock));
                                assert!(
                                    phases.iter().any(|p| matches!(p, Phase::Switch(_))),
                                    "{phases:?}"
                                );
                                // probe-before follows the stage: taken beside it.
                                assert!(phases.contains(&Phase::StageAndProbeBefore), "{phases:?}");
                            }
                        }
                    }
                }
            }
        }
    }
    // The loop above reached every kind of step.
    assert_eq!(seen.len(), 22, "{seen:?}");
}

/// A compiled deployment with a step this golivectl has no handler for
/// (recorded by another version, say) is refused before anything is sent.
#[tokio::test(start_paused = true)]
async fn issue14_a_compiled_step_without_a_handler_runs_nothing() {
    let f = fleet(vec![Script::default()], "");
    record(&f);
    let journal = Journal::open(&f.state).unwrap();
    let (_, text) = journal.compiled("D1").unwrap().unwrap();
    let mut compiled: deployment::Deployment = serde_json::from_str(&text).unwrap();
    let mut extra = compiled.hosts[0].steps[1].clone();
    extra.name = "reboot".into();
    compiled.hosts[0].steps.insert(2, extra);
    journal
        .store_compiled("D1", "plansha", &serde_json::to_string(&compiled).unwrap())
        .unwrap();
    let (outcome, _) = run(&f).await;
    let message = outcome.message();
    assert_ne!(outcome.exit(), Exit::Done, "{message}");
    assert!(
        message.contains("its compiled step reboot: no handler runs it"),
        "{message}"
    );
    assert!(f.agents[0].calls().is_empty(), "{:?}", f.agents[0].calls());
}

/// The steps of D1 named `name` in the journal: (host column, state, key).
fn journaled(f: &Fleet, name: &str) -> Vec<(String, String, Option<String>)> {
    let db = rusqlite::Connection::open(f.state.join("golivectl.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT host, state, idem_key FROM steps WHERE deployment = 'D1' AND step = ?1 \
             ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A pause's decision is the host's `decision` record step (issue 14):
/// journaled under its key with the `go`, and read back by a second run
/// of the deployment, which does not wait again.
#[tokio::test(start_paused = true)]
async fn issue14_a_pause_decision_is_a_record_step_read_back_on_resume() {
    let slow = Script {
        high_probe_fails_after_switch: true,
        ..Script::default()
    };
    let f = fleet(vec![slow, Script::default()], PAUSE);
    let go = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Journal::open(&f.state)
            .unwrap()
            .add_decision("D1", "bob", "go", None, "continue the deployment")
            .unwrap();
    };
    let ((outcome, _), ()) = tokio::join!(deploy(&f), go);
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    assert_eq!(
        journaled(&f, "decision"),
        [("web1".into(), "go".into(), Some("D1:web1:decision".into()))]
    );

    let (again, took) = run(&f).await;
    assert_eq!(again.exit(), Exit::Done, "{}", again.message());
    assert!(took < Duration::from_secs(5), "waited again: {took:?}");
    assert_eq!(journaled(&f, "decision").len(), 1, "read back, not redone");
}

/// The pending-migrations read is each host's `migrations` record step
/// (issue 14): a second run reads the decision its start took back (the
/// migration is applied by then, so a fresh read would find nothing
/// pending) and asks no host again.
#[tokio::test(start_paused = true)]
async fn issue14_the_migrations_decision_is_a_record_step_read_back_on_resume() {
    let migrating = Script {
        pending_migration: true,
        ..Script::default()
    };
    let f = fleet(vec![migrating.clone(), migrating], "");
    let (outcome, _) = deploy(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    let status = |a: &FakeAgent| {
        a.calls()
            .iter()
            .filter(|c| *c == "migration.status")
            .count()
    };
    let asked: Vec<usize> = f.agents.iter().map(status).collect();
    let rows = journaled(&f, "migrations");
    assert_eq!(
        rows,
        [
            (
                "web1".into(),
                "ok".into(),
                Some("D1:web1:migrations".into())
            ),
            (
                "web2".into(),
                "ok".into(),
                Some("D1:web2:migrations".into())
            )
        ]
    );

    let (again, _) = run(&f).await;
    assert_eq!(again.exit(), Exit::Done, "{}", again.message());
    assert_eq!(f.agents.iter().map(status).collect::<Vec<_>>(), asked);
    assert_eq!(journaled(&f, "migrations").len(), 2, "read back");
    for a in &f.agents {
        // The same decision: nothing sent again, maintenance included.
        assert_eq!(
            a.job_steps(),
            [
                "stage",
                "maintenance on",
                "backup",
                "migrate",
                "activate",
                "maintenance off"
            ]
        );
    }
}

/// Each wave's own row is its `wave` record step, `wave-N` in the journal
/// under key `D1:wave-N:wave` beside its soak (issue 14).
#[tokio::test(start_paused = true)]
async fn issue14_a_wave_row_is_a_record_step_of_the_compiled_wave() {
    let f = fleet(vec![Script::default(), Script::default()], SOAKED_CANARY);
    let (outcome, _) = deploy(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    assert_eq!(
        journaled(&f, "wave-1"),
        [("web1".into(), "ok".into(), Some("D1:wave-1:wave".into()))]
    );
    assert_eq!(
        journaled(&f, "wave-2"),
        [("web2".into(), "ok".into(), Some("D1:wave-2:wave".into()))]
    );
    assert_eq!(
        journaled(&f, "soak"),
        [("web1".into(), "ok".into(), Some("D1:wave-1:soak".into()))]
    );
}

/// D1's compiled deployment, changed by `edit` on every host's steps and
/// stored again (as another golivectl, or a hand, might have left it).
fn edit_compiled(f: &Fleet, edit: impl Fn(&mut Vec<deployment::Step>)) {
    let journal = Journal::open(&f.state).unwrap();
    let (_, text) = journal.compiled("D1").unwrap().unwrap();
    let mut compiled: deployment::Deployment = serde_json::from_str(&text).unwrap();
    for h in &mut compiled.hosts {
        edit(&mut h.steps);
    }
    journal
        .store_compiled("D1", "plansha", &serde_json::to_string(&compiled).unwrap())
        .unwrap();
}

/// The steps D1 journaled for `host`, in the order they ran.
fn host_steps(f: &Fleet, host: &str) -> Vec<String> {
    let db = rusqlite::Connection::open(f.state.join("golivectl.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT step FROM steps WHERE deployment = 'D1' AND host = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([host], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

const WATCHDOG: &str = "[watchdog]\nwindow = \"30m\"\ninterval = \"10s\"\n";

/// The switch runs what the compiled deployment lists (issue 14, part d):
/// the plan asks for a watchdog, but a compiled deployment without
/// `watchdog-arm` arms none (nothing asks the agent); with it, every host
/// is armed after its gate.
#[tokio::test(start_paused = true)]
async fn issue14_the_switch_runs_only_the_steps_compiled_for_it() {
    let f = fleet(vec![Script::default(), Script::default()], WATCHDOG);
    record(&f);
    edit_compiled(&f, |steps| steps.retain(|s| s.name != "watchdog-arm"));
    let (outcome, _) = run(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    for a in &f.agents {
        assert!(
            !a.calls().iter().any(|c| c == "watchdog.arm"),
            "{:?}",
            a.calls()
        );
        assert_eq!(a.current().as_deref(), Some("v2"));
    }
    assert!(journaled(&f, "watchdog-arm").is_empty());

    // As compiled: armed on every host, after its gate.
    let f = fleet(vec![Script::default(), Script::default()], WATCHDOG);
    let (outcome, _) = deploy(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    for (i, a) in f.agents.iter().enumerate() {
        assert_eq!(
            a.calls().iter().filter(|c| *c == "watchdog.arm").count(),
            1,
            "{:?}",
            a.calls()
        );
        let steps = host_steps(&f, &format!("web{}", i + 1));
        let at = |n: &str| steps.iter().position(|s| s == n).unwrap();
        assert!(at("activate") < at("probe"), "{steps:?}");
        assert!(at("gate") < at("watchdog-arm"), "{steps:?}");
    }
}

/// The switch's steps run in their compiled order, host by host: a
/// compiled deployment that arms the watchdog right after `activate` arms
/// it before the probes (the agent sees the arm before the probes after
/// the switch), and the next host starts after the first's last step.
#[tokio::test(start_paused = true)]
async fn issue14_the_switch_runs_its_steps_in_their_compiled_order() {
    let f = fleet(vec![Script::default(), Script::default()], WATCHDOG);
    record(&f);
    edit_compiled(&f, |steps| {
        let arm = steps.iter().position(|s| s.name == "watchdog-arm").unwrap();
        let arm = steps.remove(arm);
        let activate = steps.iter().position(|s| s.name == "activate").unwrap();
        steps.insert(activate + 1, arm);
    });
    let (outcome, _) = run(&f).await;
    assert_eq!(outcome.exit(), Exit::Done, "{}", outcome.message());
    for (i, a) in f.agents.iter().enumerate() {
        let steps = host_steps(&f, &format!("web{}", i + 1));
        let switch: Vec<&str> = steps
            .iter()
            .map(String::as_str)
            .skip_while(|s| *s != "activate")
            .take(4)
            .collect();
        assert_eq!(switch, ["activate", "watchdog-arm", "probe", "gate"]);
        let calls = a.calls();
        let arm = calls.iter().position(|c| c == "watchdog.arm").unwrap();
        let probes: Vec<usize> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| *c == "probe.run")
            .map(|(k, _)| k)
            .collect();
        assert_eq!(probes.len(), 2, "before and after: {calls:?}");
        assert!(probes[0] < arm && arm < probes[1], "{calls:?}");
    }
    // Host by host: web2 is activated after web1's last switch step.
    let db = rusqlite::Connection::open(f.state.join("golivectl.db")).unwrap();
    let seq = |host: &str, step: &str| -> i64 {
        db.query_row(
            "SELECT seq FROM steps WHERE deployment = 'D1' AND host = ?1 AND step = ?2",
            [host, step],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(seq("web1", "gate") < seq("web2", "activate"));
}

/// A step the switch has no handler for, or one out of its place in it
/// (the gate before the probes it judges, a backup between the probe and
/// the gate, the decision before the gate), refuses the deployment before
/// anything is sent.
#[tokio::test(start_paused = true)]
async fn issue14_an_unknown_or_out_of_place_step_in_the_switch_refuses_before_anything_is_sent() {
    type Edit = fn(&mut Vec<deployment::Step>);
    let cases: [(Edit, &str); 4] = [
        (
            |steps| {
                let a = steps.iter().position(|s| s.name == "activate").unwrap();
                let mut extra = steps[a].clone();
                extra.name = "reboot".into();
                steps.insert(a + 1, extra);
            },
            "its compiled step reboot: no handler runs it",
        ),
        (
            |steps| {
                let p = steps.iter().position(|s| s.name == "probe").unwrap();
                let g = steps.iter().position(|s| s.name == "gate").unwrap();
                steps.swap(p, g);
            },
            "its compiled step activate: its gate comes before the probes it judges",
        ),
        (
            |steps| {
                let b = steps.iter().position(|s| s.name == "backup").unwrap();
                let backup = steps.remove(b);
                let g = steps.iter().position(|s| s.name == "gate").unwrap();
                steps.insert(g, backup);
            },
            "its compiled step backup: it sits inside the switch",
        ),
        (
            |steps| {
                let g = steps.iter().position(|s| s.name == "gate").unwrap();
                let d = steps.iter().position(|s| s.name == "decision").unwrap();
                steps.swap(g, d);
            },
            "its compiled step activate: its decision comes before the gate it answers",
        ),
    ];
    for (edit, expected) in cases {
        let f = fleet(vec![Script::default(), Script::default()], "");
        record(&f);
        edit_compiled(&f, edit);
        let (outcome, _) = run(&f).await;
        let message = outcome.message();
        assert_ne!(outcome.exit(), Exit::Done, "{message}");
        assert!(message.contains(expected), "{expected}: {message}");
        for a in &f.agents {
            assert!(a.calls().is_empty(), "{expected}: {:?}", a.calls());
        }
    }
}
