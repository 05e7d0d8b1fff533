//! Issue 14: hosts overlap in `golivectl deploy` where nothing live changes
//! (locks, flags, upload and stage, the probes before), `[deploy] parallel`
//! at a time; a host lost while it stages fails the deployment within
//! `[deploy] host_timeout_secs`, and every other host gives its lock and
//! its staged release back; `--dry-run` lists each host's steps.
//!
//! Real agents on loopback addresses in 127.0.14.0/24 (this module's own),
//! the overlap proven from the agents' journals, not from wall-clock time.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use golive_tests::*;
use serde_json::Value;

world!();

impl World {
    fn root(&self, name: &str) -> PathBuf {
        self.path().join(name).join("srv/shop")
    }

    /// An agent declaring app `shop` (no probes), whose staging runs the
    /// `after_unpack` hook `sh -c HOOK` when one is given.
    fn agent(&self, name: &str, ip: &str, hook: Option<&str>) -> AgentProc {
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {:?}\nkeep_releases = 3\n\n",
            self.root(name)
        );
        if let Some(hook) = hook {
            spec.apps_toml.push_str(&format!(
                "[[apps.shop.hooks.after_unpack]]\ncmd = [\"sh\", \"-c\", {hook:?}]\n\n"
            ));
        }
        AgentProc::start(self.path(), &self.pki, &spec)
    }

    /// A plan for release v1 of a small artifact on `agents`, with `deploy`
    /// as its `[deploy]` table.
    fn plan(&self, agents: &[&AgentProc], deploy: &str) -> PathBuf {
        let art = self.path().join("dist/shop-v1.tar.gz");
        artifact(&art, &[("index.html", b"shop v1\n")]);
        let path = self.path().join("golive.toml");
        write_plan(
            &path,
            &self.pki,
            &self.op,
            "shop",
            Some(("v1", &art)),
            agents,
        );
        let mut text = std::fs::read_to_string(&path).expect("read plan");
        text.push_str(&format!("[deploy]\n{deploy}\n"));
        std::fs::write(&path, text).expect("write plan");
        path
    }

    fn deployments(&self) -> i64 {
        let db = self.ctl.state.join("golivectl.db");
        if !db.exists() {
            return 0;
        }
        let conn = rusqlite::Connection::open(db).expect("controller journal");
        conn.query_row("SELECT COUNT(*) FROM deployments", [], |r| r.get(0))
            .expect("count deployments")
    }
}

/// The agent's stage jobs: (submitted_at, finished_at) in ms.
fn stage_jobs(agent: &AgentProc) -> Vec<(i64, i64)> {
    let j = agent.journal();
    let mut stmt = j
        .prepare("SELECT submitted_at, finished_at FROM jobs WHERE kind = 'stage' ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?)))
        .expect("query")
        .map(|r| {
            let (start, end) = r.expect("row");
            (start, end.expect("the stage job finished"))
        })
        .collect()
}

/// The most intervals that were open at one instant.
fn most_at_once(intervals: &[(i64, i64)]) -> usize {
    intervals
        .iter()
        .map(|&(t, _)| {
            intervals
                .iter()
                .filter(|&&(start, end)| start <= t && t < end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn count(agent: &AgentProc, sql: &str) -> i64 {
    agent
        .journal()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Six hosts, `parallel = 3`, each stage taking over a second (an
/// `after_unpack` hook that sleeps): the agents' journals show stage jobs
/// running at the same time, never more than three; the deployment
/// succeeds everywhere and the controller journal has every host's steps.
#[test]
fn issue14_stages_overlap_up_to_the_parallel_limit() {
    let w = World::new();
    let agents: Vec<AgentProc> = (1..=6)
        .map(|i| {
            w.agent(
                &format!("web{i}"),
                &format!("127.0.14.{i}"),
                Some("sleep 1"),
            )
        })
        .collect();
    let refs: Vec<&AgentProc> = agents.iter().collect();
    let plan = w.plan(&refs, "parallel = 3");
    let run = w.ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());

    let mut intervals = Vec::new();
    for a in &agents {
        let jobs = stage_jobs(a);
        assert_eq!(jobs.len(), 1, "{}: {jobs:?}", a.name);
        // The hook's second is inside the job.
        assert!(jobs[0].1 - jobs[0].0 >= 1000, "{}: {jobs:?}", a.name);
        intervals.extend(jobs);
        let current = std::fs::read_link(w.root(&a.name).join("current")).expect("current");
        assert_eq!(current, Path::new("releases/v1"), "{}", a.name);
    }
    let most = most_at_once(&intervals);
    assert!(
        (2..=3).contains(&most),
        "{most} stage jobs at once (want overlap, at most 3): {intervals:?}"
    );

    // One finished step line per host and step, and the journal has them.
    let lines = run.json_lines();
    for a in &agents {
        for step in ["upload", "stage", "activate"] {
            let n = lines
                .iter()
                .filter(|v| {
                    v["event"] == "step" && v["host"] == a.name.as_str() && v["step"] == step
                })
                .count();
            assert_eq!(n, 1, "{} {step}: {}", a.name, run.text());
        }
    }
    let conn = rusqlite::Connection::open(w.ctl.state.join("golivectl.db")).expect("journal");
    let staged: i64 = conn
        .query_row(
            "SELECT COUNT(DISTINCT host) FROM steps WHERE step = 'stage' AND state = 'ok'",
            [],
            |r| r.get(0),
        )
        .expect("steps");
    assert_eq!(staged, 6);
}

/// A background `golivectl deploy`, killed on drop if still running.
struct Background(Option<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// web6's agent dies while it stages (the test kills it once its stage job
/// runs): the deployment fails with exit 2 naming web6 within
/// `host_timeout_secs`, not the minute the controller would otherwise keep
/// reattaching; the five others keep no lock and no staged release.
#[test]
fn issue14_a_host_lost_while_staging_fails_the_deploy_within_its_deadline() {
    let w = World::new();
    let mut agents: Vec<AgentProc> = (1..=6)
        .map(|i| {
            let hook = (i == 6).then_some("sleep 3");
            w.agent(&format!("web{i}"), &format!("127.0.14.{}", 10 + i), hook)
        })
        .collect();
    let refs: Vec<&AgentProc> = agents.iter().collect();
    let plan = w.plan(&refs, "parallel = 3\nhost_timeout_secs = 2");
    let out = w.path().join("deploy.out");
    let child = w
        .ctl
        .cmd(&["--output", "json", "deploy", s(&plan)])
        .stdout(Stdio::from(std::fs::File::create(&out).expect("out")))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn golivectl deploy");
    let mut deploy = Background(Some(child));

    // Wait (bounded) for web6's stage job to run, then kill its agent.
    let started = Instant::now();
    while count(
        &agents[5],
        "SELECT COUNT(*) FROM jobs WHERE kind = 'stage' AND state = 'running'",
    ) == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "web6 never started staging:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    agents[5].kill9();
    let killed = Instant::now();

    let mut child = deploy.0.take().expect("running");
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if killed.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "deploy still running 30 s after web6 died:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    let text = std::fs::read_to_string(&out).expect("deploy output");
    assert_eq!(status.code(), Some(2), "{text}");
    // 2 s of reattaching, then the give-back and unlock: well within 15 s.
    assert!(took < Duration::from_secs(15), "{took:?}\n{text}");
    let result: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result:\n{text}"));
    let message = result["message"].as_str().expect("message");
    assert!(
        message.contains("staging on web6 failed") && message.contains("nothing live changed"),
        "{message}"
    );
    // An unreachable host is exit 2, as at the start of a deployment.
    assert_eq!(result["exit"], 2, "{text}");

    for a in &agents[..5] {
        assert_eq!(
            count(a, "SELECT COUNT(*) FROM locks"),
            0,
            "{} keeps a lock",
            a.name
        );
        assert!(
            !w.root(&a.name).join("releases/v1").exists(),
            "{} keeps the staged release:\n{text}",
            a.name
        );
        assert!(!w.root(&a.name).join("current").exists(), "{}", a.name);
    }
}

/// `parallel = 0` is refused before anything is asked of a host, with
/// exit 2 naming the key and the range; nothing is recorded.
#[test]
fn issue14_parallel_zero_is_refused() {
    let w = World::new();
    let a = w.agent("web1", "127.0.14.21", None);
    for bad in ["0", "257"] {
        let plan = w.plan(&[&a], &format!("parallel = {bad}"));
        let run = w.ctl.run(&["deploy", s(&plan)]);
        assert_eq!(run.code, 2, "{}", run.text());
        assert!(
            run.stderr.contains("key `deploy.parallel`")
                && run.stderr.contains("1 (one host at a time) to 256"),
            "{}",
            run.text()
        );
    }
    assert_eq!(w.deployments(), 0);
    assert_eq!(count(&a, "SELECT COUNT(*) FROM jobs"), 0);
}

/// `--dry-run` lists each host's steps in order with the parallel limit
/// and the verdicts, and changes nothing on any host.
#[test]
fn issue14_dry_run_lists_the_steps_and_changes_nothing() {
    let w = World::new();
    let a = w.agent("web1", "127.0.14.31", None);
    let b = w.agent("web2", "127.0.14.32", None);
    let plan = w.plan(&[&a, &b], "parallel = 4");
    let run = w.ctl.run(&["deploy", "--dry-run", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("up to 4 host(s) at a time")
            && run.stdout.contains("window: none declared")
            && run.stdout.contains("preflight: READY"),
        "{}",
        run.stdout
    );
    for host in ["web1", "web2"] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("[{host}] would: ")))
            .unwrap_or_else(|| panic!("no steps for {host}:\n{}", run.stdout));
        let order = [
            "lock",
            "read flags",
            "upload",
            "stage v1",
            "probe-before",
            "backup (verified)",
            "migrate if the staged release has pending migrations",
            "activate",
            "probe",
            "gate",
            "unlock",
        ];
        let mut at = 0;
        for step in order {
            let found = line[at..]
                .find(step)
                .unwrap_or_else(|| panic!("{step:?} missing or out of order in {line}"));
            at += found + step.len();
        }
    }
    let json = w
        .ctl
        .run(&["--output", "json", "deploy", "--dry-run", s(&plan)]);
    assert_eq!(json.code, 0, "{}", json.text());
    let would: Vec<Value> = json
        .json_lines()
        .into_iter()
        .filter(|v| v["event"] == "would")
        .collect();
    assert_eq!(would.len(), 2, "{}", json.text());
    assert_eq!(would[0]["steps"][0], "lock");

    // Nothing changed: no job, no lock, no upload, no release, no record.
    for agent in [&a, &b] {
        assert_eq!(count(agent, "SELECT COUNT(*) FROM jobs"), 0);
        assert_eq!(count(agent, "SELECT COUNT(*) FROM locks"), 0);
        assert_eq!(count(agent, "SELECT COUNT(*) FROM uploads"), 0);
        assert!(!w.root(&agent.name).join("releases").exists());
    }
    assert_eq!(w.deployments(), 0);
}
