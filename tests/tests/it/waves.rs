//! Issue 14, waves: `[[waves]]` switch a canary first and alone, then each
//! wave's hosts at once; a failing canary stops the rollout before the
//! next wave and switches it back; a failure within a wave's `max_fail` is
//! rolled back on its own host while the deployment goes on; a critical
//! probe that starts failing during a wave's soak fails the wave.
//!
//! Real agents on loopback addresses in 127.0.15.0/24 (this module's own);
//! the order of the switches is read from the agents' journals, not from
//! wall-clock thresholds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use golive_tests::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

struct World {
    dir: tempfile::TempDir,
    pki: TestPki,
    op: (PathBuf, PathBuf),
    ctl: Ctl,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let op = pki.operator("alice", "operator");
        let ctl = Ctl::new(dir.path());
        World { dir, pki, op, ctl }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self, name: &str) -> PathBuf {
        self.path().join(name).join("srv/shop")
    }

    /// The file whose presence fails `name`'s critical probe.
    fn fail_flag(&self, name: &str) -> PathBuf {
        self.path().join(format!("{name}.fail"))
    }

    /// An agent declaring app `shop` with a critical command probe that
    /// runs `probe` (default: fails while [`World::fail_flag`] exists),
    /// and a `before_activate` hook that sleeps `sleep` seconds, so that
    /// switches that overlap show it in the journal.
    fn agent(&self, name: &str, ip: &str, sleep: u32, probe: Option<String>) -> AgentProc {
        let probe = probe.unwrap_or_else(|| format!("test ! -e {}", s(&self.fail_flag(name))));
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {:?}\nkeep_releases = 3\n\n\
             [[apps.shop.hooks.before_activate]]\ncmd = [\"sleep\", \"{sleep}\"]\n\n\
             [[apps.shop.probes]]\nkind = \"command\"\nname = \"health\"\n\
             cmd = [\"sh\", \"-c\", {probe:?}]\nseverity = \"critical\"\ntimeout_ms = 5000\n\n",
            self.root(name)
        );
        AgentProc::start(self.path(), &self.pki, &spec)
    }

    /// A plan for `release` on `agents`, with `extra` (the waves) appended.
    fn plan(&self, release: &str, agents: &[&AgentProc], extra: &str) -> PathBuf {
        let art = self.path().join(format!("dist/shop-{release}.tar.gz"));
        let body = format!("shop {release}\n");
        artifact(&art, &[("index.html", body.as_bytes())]);
        let path = self.path().join(format!("golive-{release}.toml"));
        write_plan(
            &path,
            &self.pki,
            &self.op,
            "shop",
            Some((release, &art)),
            agents,
        );
        let mut text = std::fs::read_to_string(&path).expect("read plan");
        text.push_str(extra);
        std::fs::write(&path, text).expect("write plan");
        path
    }

    fn current(&self, name: &str) -> PathBuf {
        std::fs::read_link(self.root(name).join("current")).expect("current")
    }

    /// The controller journal's (step, state, detail) of every `wave-N` step.
    fn wave_steps(&self) -> Vec<(String, String, String)> {
        let conn =
            rusqlite::Connection::open(self.ctl.state.join("golivectl.db")).expect("journal");
        let mut stmt = conn
            .prepare(
                "SELECT step, state, COALESCE(detail, '') FROM steps WHERE step LIKE 'wave-%' \
                 AND deployment = (SELECT deployment FROM steps ORDER BY seq DESC LIMIT 1) \
                 ORDER BY seq",
            )
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    }
}

/// The one activate job of `release` on `agent`.
fn activation(agent: &AgentProc, release: &str) -> (i64, i64) {
    let jobs = activations(agent, release);
    assert_eq!(jobs.len(), 1, "{}: {jobs:?}", agent.name);
    jobs[0]
}

/// Four hosts, waves canary (web1) → 50% → the rest: web1 is switched
/// first and alone, web2 and web3 (50% of four) switch at the same time
/// after it, web4 after them; the journal has one ok step per wave and the
/// output names each wave.
#[test]
fn issue14_canary_first_and_alone_then_each_wave_at_once() {
    let w = World::new();
    let agents: Vec<AgentProc> = (1..=4)
        .map(|i| w.agent(&format!("web{i}"), &format!("127.0.15.{i}"), 1, None))
        .collect();
    let refs: Vec<&AgentProc> = agents.iter().collect();
    // The team channel hears of each wave but the last (issue 15).
    let hook = Hook::start("127.0.15.1");
    let plan = w.plan(
        "v1",
        &refs,
        &format!(
            "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\n\n\
             [[waves]]\npercent = 50\n\n[[waves]]\npercent = 100\n\n\
             [[notify]]\nwebhook = \"http://127.0.15.1:{}/hook\"\nevents = [\"wave_done\"]\n",
            hook.port
        ),
    );
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    for a in &agents {
        assert_eq!(w.current(&a.name), Path::new("releases/v1"), "{}", a.name);
    }

    let canary = activation(&agents[0], "v1");
    let second: Vec<(i64, i64)> = agents[1..3].iter().map(|a| activation(a, "v1")).collect();
    let last = activation(&agents[3], "v1");
    // The canary finished before any other host was asked to switch.
    for (start, _) in second.iter().chain([&last]) {
        assert!(
            canary.1 <= *start,
            "canary {canary:?} overlaps {second:?} {last:?}"
        );
    }
    // web2 and web3 overlap: each started before the other finished.
    assert!(
        second[0].0 < second[1].1 && second[1].0 < second[0].1,
        "wave 2 did not overlap: {second:?}"
    );
    // web4 after the whole of wave 2.
    assert!(
        second.iter().all(|&(_, end)| end <= last.0),
        "web4 {last:?} started before wave 2 {second:?} finished"
    );

    for line in [
        "wave 1/3 (canary): web1",
        "wave 2/3: web2, web3",
        "wave 3/3: web4",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing:\n{}",
            run.text()
        );
    }
    let steps = w.wave_steps();
    let names: Vec<(&str, &str)> = steps
        .iter()
        .map(|(s, st, _)| (s.as_str(), st.as_str()))
        .collect();
    assert_eq!(
        names,
        [("wave-1", "ok"), ("wave-2", "ok"), ("wave-3", "ok")],
        "{steps:?}"
    );
    // Delivered before the deploy exited (it waits for its notices).
    let waves: Vec<String> = hook
        .requests()
        .into_iter()
        .filter(|r| r.contains("\"event\":\"wave_done\""))
        .collect();
    assert_eq!(waves.len(), 2, "{waves:#?}");
    // The record page draws the waves in a row of their own (issue 15).
    let id = run
        .stdout
        .split_whitespace()
        .map(|w| w.trim_end_matches(':'))
        .find(|w| w.starts_with('d') && w.len() > 20 && w.contains('T'))
        .expect("the deployment id")
        .to_string();
    let page = w.path().join("record.html");
    let html = w
        .ctl
        .run(&["show", &id, "--format", "html", "--out", s(&page)]);
    assert_eq!(html.code, 0, "{}", html.text());
    let text = std::fs::read_to_string(&page).unwrap();
    assert_eq!(text.matches("class=\"wave\"").count(), 3, "three wave bars");
    assert!(
        text.contains("wave-1 (web1): ok"),
        "the canary's bar names its host"
    );
    assert!(
        waves
            .iter()
            .any(|r| r.contains("Wave DONE") && r.contains("wave 1/3 (canary)")),
        "{waves:#?}"
    );
}

const THREE_WAVES: &str = "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\n\n\
                           [[waves]]\npercent = 50\n\n[[waves]]\npercent = 100\n";

/// v1 everywhere, then v2 whose canary's critical probe fails: exit 3, no
/// other host is asked to switch, the canary is switched back, every host
/// runs v1; the journal's wave-1 failed and there is no wave 2.
#[test]
fn issue14_a_failing_canary_stops_before_wave_two_and_rolls_back() {
    let w = World::new();
    let agents: Vec<AgentProc> = (1..=4)
        .map(|i| w.agent(&format!("web{i}"), &format!("127.0.15.{}", 10 + i), 0, None))
        .collect();
    let refs: Vec<&AgentProc> = agents.iter().collect();
    let v1 = w.plan("v1", &refs, THREE_WAVES);
    let run = w.ctl.run(&["deploy", s(&v1)]);
    assert_eq!(run.code, 0, "{}", run.text());

    std::fs::write(w.fail_flag("web1"), b"").expect("flag");
    let v2 = w.plan("v2", &refs, THREE_WAVES);
    let run = w.ctl.run(&["deploy", s(&v2)]);
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(
        run.stderr.contains("wave 1/3 (canary) failed")
            || run.stdout.contains("wave 1/3 (canary) failed"),
        "{}",
        run.text()
    );
    for a in &agents {
        assert_eq!(w.current(&a.name), Path::new("releases/v1"), "{}", a.name);
    }
    activation(&agents[0], "v2");
    for a in &agents[1..] {
        assert!(
            activations(a, "v2").is_empty(),
            "{} was switched after the canary failed",
            a.name
        );
    }
    let steps = w.wave_steps();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        (steps[0].0.as_str(), steps[0].1.as_str()),
        ("wave-1", "failed")
    );
    assert!(steps[0].2.contains("web1"), "{steps:?}");
}

/// A wave of two with `max_fail = 50`: web3 fails its probe, is rolled back
/// on its own, and the deployment goes on to web4; exit 0, web3 runs v1,
/// the others v2, and the result names web3.
#[test]
fn issue14_a_failure_within_max_fail_is_rolled_back_and_the_rollout_goes_on() {
    let w = World::new();
    let agents: Vec<AgentProc> = (1..=4)
        .map(|i| w.agent(&format!("web{i}"), &format!("127.0.15.{}", 20 + i), 0, None))
        .collect();
    let refs: Vec<&AgentProc> = agents.iter().collect();
    let waves = "[[waves]]\nhosts = [\"web1\"]\n\n\
                 [[waves]]\nhosts = [\"web2\", \"web3\"]\nmax_fail = 50\n\n\
                 [[waves]]\npercent = 100\n";
    let run = w.ctl.run(&["deploy", s(&w.plan("v1", &refs, waves))]);
    assert_eq!(run.code, 0, "{}", run.text());

    std::fs::write(w.fail_flag("web3"), b"").expect("flag");
    let run = w
        .ctl
        .run(&["--output", "json", "deploy", s(&w.plan("v2", &refs, waves))]);
    assert_eq!(run.code, 0, "{}", run.text());
    for (a, want) in agents.iter().zip(["v2", "v2", "v1", "v2"]) {
        assert_eq!(
            w.current(&a.name),
            Path::new("releases").join(want),
            "{}",
            a.name
        );
    }
    // web4 (the last wave) was switched after web3 failed.
    activation(&agents[3], "v2");
    let result = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result:\n{}", run.text()));
    let message = result["message"].as_str().expect("message");
    assert!(
        message.contains("live on 3 of 4 host(s)") && message.contains("web3"),
        "{message}"
    );
    let steps = w.wave_steps();
    let states: Vec<&str> = steps.iter().map(|(_, st, _)| st.as_str()).collect();
    assert_eq!(states, ["ok", "ok", "ok"], "{steps:?}");
    // web3's switch-back is in the controller journal.
    let conn = rusqlite::Connection::open(w.ctl.state.join("golivectl.db")).expect("journal");
    let back: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM steps WHERE host = 'web3' AND step = 'switch-back' \
             AND state = 'ok'",
            [],
            |r| r.get(0),
        )
        .expect("steps");
    assert_eq!(back, 1);
}

/// Resumes a stopped agent (SIGCONT) when dropped, so a failing test
/// leaves no process stopped; the agent itself is killed by its own drop.
struct Resume(Option<u32>);

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        }
    }
}

/// web3's agent is stopped (SIGSTOP: its socket still accepts connections,
/// and nothing ever answers) after staging, while the canary soaks: in the
/// wave of web2 and web3 with `max_fail = 50` it counts as failed within
/// `host_timeout_secs = 3` (its activation, then its switch-back), the
/// wave goes on without it, and the deployment ends with exit 0 well
/// before any minute-long limit; web1 and web2 run v2, web3 (never
/// reached) v1 once resumed, and the output and journal name it
/// unreachable for 3 s. Known lost from then on, its later steps are
/// skipped at once: its unlock is journaled `skipped` (no release waits
/// for it), its lock is left to expire on the agent, and the final report
/// names it lost.
#[test]
fn issue14_a_host_unreachable_mid_deploy_fails_within_its_deadline_and_the_wave_decides() {
    let w = World::new();
    let agents: Vec<AgentProc> = (1..=3)
        .map(|i| w.agent(&format!("web{i}"), &format!("127.0.15.{}", 40 + i), 0, None))
        .collect();
    let refs: Vec<&AgentProc> = agents.iter().collect();
    let run = w.ctl.run(&["deploy", s(&w.plan("v1", &refs, ""))]);
    assert_eq!(run.code, 0, "{}", run.text());

    let waves = "[deploy]\nhost_timeout_secs = 3\n\n\
                 [[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\nsoak = \"4s\"\n\n\
                 [[waves]]\nhosts = [\"web2\", \"web3\"]\nmax_fail = 50\n";
    let v2 = w.plan("v2", &refs, waves);
    let started = Instant::now();
    let ctl = {
        let cmd = w.ctl.cmd(&["deploy", s(&v2)]);
        std::thread::spawn(move || run_bounded(cmd, Duration::from_secs(90)))
    };
    // The canary switched (so every host has staged): stop web3.
    let mut resume = Resume(None);
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until && !ctl.is_finished() {
        if std::fs::read_link(w.root("web1").join("current")).ok()
            == Some(Path::new("releases/v2").into())
        {
            let pid = agents[2].pid().expect("web3 runs");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .expect("SIGSTOP web3");
            resume.0 = Some(pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = ctl.join().expect("golivectl thread");
    let took = started.elapsed();
    drop(resume);
    assert!(
        took < Duration::from_secs(45),
        "the deployment took {took:?}\n{}",
        run.text()
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.text()
            .contains("web3 unreachable for 3 s (deadline host_timeout_secs)"),
        "{}",
        run.text()
    );
    assert!(
        run.text().contains("live on 2 of 3 host(s)"),
        "{}",
        run.text()
    );
    assert_eq!(w.current("web1"), Path::new("releases/v2"));
    assert_eq!(w.current("web2"), Path::new("releases/v2"));
    // Resumed, web3 finds nothing to do: the requests it never answered
    // were abandoned with their connections.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.current("web3"), Path::new("releases/v1"));
    assert!(
        activations(&agents[2], "v2").is_empty(),
        "web3 was switched"
    );
    let steps = w.wave_steps();
    let states: Vec<&str> = steps.iter().map(|(_, st, _)| st.as_str()).collect();
    assert_eq!(states, ["ok", "ok"], "{steps:?}");
    let conn = rusqlite::Connection::open(w.ctl.state.join("golivectl.db")).expect("journal");
    let detail: String = conn
        .query_row(
            "SELECT COALESCE(detail, '') FROM steps WHERE host = 'web3' AND step = 'activate' \
             AND state = 'failed' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("web3's failed activation in the journal");
    assert!(
        detail.contains("web3 unreachable for 3 s (deadline host_timeout_secs)"),
        "{detail}"
    );
    assert!(
        run.text().contains("LOST mid-deployment: web3 ("),
        "{}",
        run.text()
    );
    let (state, unlock): (String, String) = conn
        .query_row(
            "SELECT state, COALESCE(detail, '') FROM steps WHERE host = 'web3' AND step = 'unlock' \
             ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("web3's unlock in the journal");
    assert_eq!(state, "skipped", "{unlock}");
    assert!(unlock.contains("web3 was lost earlier"), "{unlock}");
    // Never asked to release it: the lock runs out on its own.
    let id: String = conn
        .query_row(
            "SELECT deployment FROM steps ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("the deployment");
    let held: String = agents[2]
        .journal()
        .query_row("SELECT deployment FROM locks WHERE app = 'shop'", [], |r| {
            r.get(0)
        })
        .expect("web3 still holds the lock");
    assert_eq!(held, id);
}

/// The canary's probe passes when validated, then fails from its next
/// run (a counter the probe keeps): the 3-second soak catches it, the wave
/// fails, exit 3, both hosts run v1, web2 is never switched, within a
/// bounded time.
#[test]
fn issue14_a_probe_failing_during_the_soak_fails_the_wave() {
    let w = World::new();
    let count = w.path().join("web1.count");
    // Passes while the count of its runs is at most 2 (the probe before
    // the switch and the one after it), then fails.
    let probe = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; test $n -le 2",
        c = s(&count)
    );
    let a = w.agent("web1", "127.0.15.31", 0, Some(probe));
    let b = w.agent("web2", "127.0.15.32", 0, None);
    let v1 = w.plan("v1", &[&a, &b], "");
    let run = w.ctl.run(&["deploy", s(&v1)]);
    assert_eq!(run.code, 0, "{}", run.text());

    let _ = std::fs::remove_file(&count);
    let v2 = w.plan(
        "v2",
        &[&a, &b],
        "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\nsoak = \"3s\"\n\n[[waves]]\npercent = 100\n",
    );
    let started = Instant::now();
    let run = w.ctl.run(&["deploy", s(&v2)]);
    let took = started.elapsed();
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(took < Duration::from_secs(30), "{took:?}\n{}", run.text());
    assert!(run.text().contains("during the soak"), "{}", run.text());
    assert_eq!(w.current("web1"), Path::new("releases/v1"));
    assert_eq!(w.current("web2"), Path::new("releases/v1"));
    activation(&a, "v2");
    assert!(activations(&b, "v2").is_empty(), "web2 was switched");
    let steps = w.wave_steps();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].1, "failed", "{steps:?}");
    assert!(
        steps[0].2.contains("critical probe health failed on web1"),
        "{steps:?}"
    );
}

/// `--dry-run` shows how the waves cut five hosts (canary, 40 % rounded up
/// to two, the rest) and changes nothing; waves with `[deploy] maintenance
/// = true` are refused with exit 2 naming the key, before any host is
/// asked anything.
#[test]
fn issue14_dry_run_shows_the_waves_and_maintenance_with_waves_is_refused() {
    let w = World::new();
    let agents: Vec<AgentProc> = (1..=5)
        .map(|i| w.agent(&format!("web{i}"), &format!("127.0.15.{}", 40 + i), 0, None))
        .collect();
    let refs: Vec<&AgentProc> = agents.iter().collect();
    let waves = "[[waves]]\nname = \"canary\"\nhosts = [\"web3\"]\nsoak = \"30s\"\n\n\
                 [[waves]]\npercent = 40\nmax_fail = 50\n\n[[waves]]\npercent = 100\n";
    let plan = w.plan("v1", &refs, waves);
    let run = w.ctl.run(&["deploy", "--dry-run", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    for line in [
        "then wave by wave, each wave's hosts at once",
        "dry run: wave 1/3 (canary): web3 (up to 0 may fail: max_fail 0 %); soak 30 s; \
         journaled as wave-1: wave (its outcome), soak 30 s",
        "dry run: wave 2/3: web1, web2 (up to 1 may fail: max_fail 50 %); journaled as wave-2: \
         wave (its outcome)",
        "dry run: wave 3/3: web4, web5 (up to 0 may fail: max_fail 0 %)",
        // The pending-migrations read and a pause's decision are compiled
        // steps (issue 14).
        "[web3] would: lock, read flags, upload (skipped when the agent has the artifact), \
         stage v1, probe-before, read pending migrations, backup (verified) if the staged \
         release has pending migrations, migrate if the staged release has pending \
         migrations, activate, probe, gate, decision (go / no-go) if the gate pauses, \
         commit-migrate if migrations were kept for the commit, unlock",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing:\n{}",
            run.stdout
        );
    }

    let refused = w.plan(
        "v1",
        &refs,
        &format!("{waves}\n[deploy]\nmaintenance = true\n"),
    );
    let run = w.ctl.run(&["deploy", s(&refused)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("key `deploy.maintenance`")
            && run.stderr.contains("cannot be combined with [[waves]]"),
        "{}",
        run.text()
    );
    for a in &agents {
        let jobs: i64 = a
            .journal()
            .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
            .expect("jobs");
        assert_eq!(jobs, 0, "{}", a.name);
        assert!(!w.root(&a.name).join("releases").exists(), "{}", a.name);
    }
}

/// `[deploy] on_wave_failure = "rollback-wave"`: three hosts, the canary
/// (web1) passes, the second wave (web2, web3, `max_fail = 0`) fails on
/// web2's critical probe: only that wave goes back (web2 and web3 run v1),
/// the canary keeps v2, exit 3, the deployment is `partial` and the output
/// names web1 and `golivectl rollback ID`; the journal has the policy's
/// decision and the wave's switch-backs. `golivectl rollback ID` then takes
/// the canary back too, and the deployment is `rolled_back`.
#[test]
fn issue14_rollback_wave_sends_back_only_the_failed_wave() {
    let w = World::new();
    let agents: Vec<AgentProc> = (1..=3)
        .map(|i| w.agent(&format!("web{i}"), &format!("127.0.15.{}", 50 + i), 0, None))
        .collect();
    let refs: Vec<&AgentProc> = agents.iter().collect();
    let waves = "[deploy]\non_wave_failure = \"rollback-wave\"\n\n\
                 [[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\n\n\
                 [[waves]]\npercent = 100\n";
    let run = w.ctl.run(&["deploy", s(&w.plan("v1", &refs, waves))]);
    assert_eq!(run.code, 0, "{}", run.text());

    let v2 = w.plan("v2", &refs, waves);
    let dry = w.ctl.run(&["deploy", "--dry-run", s(&v2)]);
    assert_eq!(dry.code, 0, "{}", dry.text());
    assert!(
        dry.stdout.contains(
            "dry run: a wave that fails (over its max_fail, or in its soak): only that wave's \
             hosts go back"
        ) && dry.stdout.contains("on_wave_failure = \"rollback-wave\""),
        "{}",
        dry.stdout
    );

    std::fs::write(w.fail_flag("web2"), b"").expect("flag");
    let run = w.ctl.run(&["deploy", s(&v2)]);
    assert_eq!(run.code, 3, "{}", run.text());
    assert_eq!(w.current("web1"), Path::new("releases/v2"));
    assert_eq!(w.current("web2"), Path::new("releases/v1"));
    assert_eq!(w.current("web3"), Path::new("releases/v1"));
    let id = run
        .stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("deployment "))
        .and_then(|l| l.split(':').next())
        .expect("the deployment's result line")
        .to_string();
    assert!(
        run.stdout.contains(&format!("deployment {id}: partial:"))
            && run.stdout.contains("web1 keep release v2")
            && run
                .stdout
                .contains(&format!("`golivectl rollback {id}` rolls them back too")),
        "{}",
        run.text()
    );
    let steps = w.wave_steps();
    let states: Vec<&str> = steps.iter().map(|(_, st, _)| st.as_str()).collect();
    assert_eq!(states, ["ok", "failed"], "{steps:?}");
    {
        let conn = rusqlite::Connection::open(w.ctl.state.join("golivectl.db")).expect("journal");
        let backs: Vec<String> = conn
            .prepare(
                "SELECT host FROM steps WHERE deployment = ?1 AND step = 'switch-back' \
                 AND state = 'ok' ORDER BY host",
            )
            .expect("prepare")
            .query_map([&id], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(backs, ["web2", "web3"]);
        let state: String = conn
            .query_row("SELECT state FROM deployments WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .expect("deployment");
        assert_eq!(state, "partial");
        let (reason, next): (String, String) = conn
            .query_row(
                "SELECT COALESCE(reason, ''), next_action FROM decisions WHERE deployment = ?1 \
                 AND decision = 'rollback-wave'",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the policy's decision in the journal");
        assert!(reason.contains("wave 2/2 failed"), "{reason}");
        assert!(
            next.contains("web1 keep the release")
                && next.contains(&format!("golivectl rollback {id}")),
            "{next}"
        );
    }

    // The canary goes back too; the failed wave's hosts are already back.
    let back = w.ctl.run(&["rollback", &id]);
    assert_eq!(back.code, 0, "{}", back.text());
    for a in &agents {
        assert_eq!(w.current(&a.name), Path::new("releases/v1"), "{}", a.name);
    }
    let conn = rusqlite::Connection::open(w.ctl.state.join("golivectl.db")).expect("journal");
    let state: String = conn
        .query_row("SELECT state FROM deployments WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .expect("deployment");
    assert_eq!(state, "rolled_back");
}
