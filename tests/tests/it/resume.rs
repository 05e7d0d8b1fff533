//! Issue 14, resume: the controller killed at step boundaries of a
//! two-wave deployment (test-only `GOLIVECTL_CRASH_AFTER_STEPS=N` aborts it
//! right after the executor's Nth journal write), then `deploy --resume`:
//! the deployment completes, or rolls back as its policy says, and no
//! agent job runs twice. A deployment whose controller is gone shows as
//! interrupted with its resume command; a finished one, or a changed plan,
//! is refused with exit 2.
//!
//! Real agents on loopback addresses in 127.0.17.0/24 (this module's own).

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// fails while [`World::fail_flag`] exists.
    fn agent(&self, name: &str, ip: &str) -> AgentProc {
        let probe = format!("test ! -e {}", s(&self.fail_flag(name)));
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {:?}\nkeep_releases = 3\n\n\
             [[apps.shop.probes]]\nkind = \"command\"\nname = \"health\"\n\
             cmd = [\"sh\", \"-c\", {probe:?}]\nseverity = \"critical\"\ntimeout_ms = 5000\n\n",
            self.root(name)
        );
        AgentProc::start(self.path(), &self.pki, &spec)
    }

    /// A plan for `release` on `agents` in two waves: web1 alone, then the
    /// rest (a failure in either stops the rollout and switches back).
    fn plan(&self, release: &str, agents: &[&AgentProc]) -> PathBuf {
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
        text.push_str(
            "[deploy]\nlock_ttl_secs = 30\n\n\
             [[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\n\n\
             [[waves]]\npercent = 100\n",
        );
        std::fs::write(&path, text).expect("write plan");
        path
    }

    fn current(&self, name: &str) -> String {
        std::fs::read_link(self.root(name).join("current"))
            .expect("current")
            .display()
            .to_string()
    }

    /// The newest deployment id in the controller journal.
    fn last_deployment(&self) -> String {
        let conn =
            rusqlite::Connection::open(self.ctl.state.join("golivectl.db")).expect("journal");
        conn.query_row(
            "SELECT id FROM deployments ORDER BY started_at DESC, rowid DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("a deployment")
    }
}

/// The agent's jobs of deployment `id`, as (kind, how many): every count
/// must be 1 (a job that ran twice would show as 2 of a kind).
fn jobs_of(agent: &AgentProc, id: &str) -> Vec<(String, i64)> {
    let j = agent.journal();
    let mut stmt = j
        .prepare(
            "SELECT kind, COUNT(*) FROM jobs WHERE idempotency_key LIKE ?1 \
             GROUP BY kind ORDER BY kind",
        )
        .expect("prepare");
    stmt.query_map([format!("%{id}%")], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// Deploys `plan` with the controller aborted after journal write `n`;
/// returns the deployment id (the process is gone: exit -1).
fn crash_after(w: &World, plan: &Path, n: u32) -> String {
    let mut cmd = w.ctl.cmd(&["deploy", s(plan)]);
    cmd.env("GOLIVECTL_CRASH_AFTER_STEPS", n.to_string());
    let run = run_bounded(cmd, Duration::from_secs(60));
    assert_eq!(run.code, -1, "aborted after write {n}: {}", run.text());
    assert!(
        run.stderr
            .contains(&format!("aborting after journal write {n}")),
        "{}",
        run.text()
    );
    w.last_deployment()
}

/// Two hosts, two waves: for several step boundaries (after an intent,
/// after an outcome, in staging and in each wave), the controller dies
/// there; `history` shows the deployment interrupted with its resume
/// command; `--resume` completes it; each agent ran each of its jobs
/// once; the resumed deployment cannot be resumed again (exit 2).
#[test]
fn issue14_killed_at_step_boundaries_then_resumed_completes_and_no_job_runs_twice() {
    let w = World::new();
    let web1 = w.agent("web1", "127.0.17.1");
    let web2 = w.agent("web2", "127.0.17.2");
    let agents = [&web1, &web2];
    // A first release, so that each crash test has a release to go back to.
    let first = w.plan("v1", &agents);
    let r = w.ctl.run(&["deploy", s(&first)]);
    assert_eq!(r.code, 0, "{}", r.text());

    // 6 host-changing steps (upload and stage on each host, at once; then
    // activate web1 in wave 1, web2 in wave 2): 12 journal writes. Odd:
    // after an intent (the request may or may not have reached the agent),
    // even: after an outcome; 9 to 12 are the two waves' boundaries.
    for (round, n) in [1u32, 4, 9, 10, 11, 12].into_iter().enumerate() {
        let release = format!("v{}", round + 2);
        let plan = w.plan(&release, &agents);
        let id = crash_after(&w, &plan, n);

        if round == 0 {
            let h = w.ctl.run(&["history"]);
            assert_eq!(h.code, 0, "{}", h.text());
            let line = h
                .stdout
                .lines()
                .find(|l| l.starts_with(&id))
                .unwrap_or_else(|| panic!("{id} not in history:\n{}", h.stdout));
            assert!(line.contains("interrupted"), "{line}");
            let resume = format!("golivectl deploy {} --resume {id}", s(&plan));
            assert!(h.stdout.contains(&resume), "{}", h.stdout);
            let show = w.ctl.run(&["show", &id]);
            assert!(show.stdout.contains("INTERRUPTED"), "{}", show.text());
            let st = w.ctl.run(&["status", s(&plan)]);
            assert!(
                st.stdout
                    .contains(&format!("deployment {id} of shop is INTERRUPTED")),
                "{}",
                st.text()
            );
        }

        let r = w.ctl.run(&["deploy", s(&plan), "--resume", &id]);
        assert_eq!(r.code, 0, "resume after write {n}: {}", r.text());
        assert!(r.stdout.contains("succeeded"), "{}", r.text());
        for (agent, name) in [(&web1, "web1"), (&web2, "web2")] {
            assert!(
                w.current(name).ends_with(&release),
                "write {n}: {name} runs {}",
                w.current(name)
            );
            let jobs = jobs_of(agent, &id);
            assert_eq!(
                jobs,
                [("activate".to_string(), 1), ("stage".to_string(), 1)],
                "write {n}: {name}'s jobs of {id}"
            );
        }
        // Finished: no second resume.
        let again = w.ctl.run(&["deploy", s(&plan), "--resume", &id]);
        assert_eq!(again.code, 2, "{}", again.text());
        assert!(
            again
                .stderr
                .contains("is finished (succeeded); nothing to resume"),
            "{}",
            again.text()
        );
    }
}

/// The second wave fails its gate, and the controller dies in the middle
/// of the switch-back (after web2's host rollback was asked for): the
/// resume finishes the rollback (exit 3) through the same rollback jobs,
/// each host back on the release before. A changed plan cannot resume.
#[test]
fn issue14_killed_during_the_switch_back_then_resumed_rolls_back_once() {
    let w = World::new();
    let web1 = w.agent("web1", "127.0.17.11");
    let web2 = w.agent("web2", "127.0.17.12");
    let agents = [&web1, &web2];
    let first = w.plan("v1", &agents);
    let r = w.ctl.run(&["deploy", s(&first)]);
    assert_eq!(r.code, 0, "{}", r.text());

    std::fs::write(w.fail_flag("web2"), b"").expect("fail web2");
    let plan = w.plan("v2", &agents);
    // 12 writes through wave 2's activation, then web2's switch-back intent.
    let id = crash_after(&w, &plan, 13);

    // The plan changed since: refused, nothing done.
    let changed = w.path().join("golive-v2-changed.toml");
    let mut text = std::fs::read_to_string(&plan).expect("plan");
    text.push_str("\n# edited\n");
    std::fs::write(&changed, text).expect("write");
    let r = w.ctl.run(&["deploy", s(&changed), "--resume", &id]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr.contains("changed since deployment"),
        "{}",
        r.text()
    );

    let r = w.ctl.run(&["deploy", s(&plan), "--resume", &id]);
    assert_eq!(r.code, 3, "{}", r.text());
    assert!(r.stdout.contains("rolled_back"), "{}", r.text());
    for (agent, name) in [(&web1, "web1"), (&web2, "web2")] {
        assert!(
            w.current(name).ends_with("v1"),
            "{name}: {}",
            w.current(name)
        );
        let jobs = jobs_of(agent, &id);
        assert_eq!(
            jobs,
            [
                ("activate".to_string(), 1),
                ("host.rollback".to_string(), 1),
                ("stage".to_string(), 1)
            ],
            "{name}'s jobs of {id}"
        );
    }
}

/// The controller dies right after the canary's switch (write 10: web1's
/// activate outcome; its probes after and gate not yet run): the resume
/// reads back the probes before that the start took on v1, on both hosts,
/// rather than probing again (web1 runs the new release by then); it runs
/// web1's probes after and gate, and takes the locks again. Each record
/// step is journaled under its key with no request.
#[test]
fn issue14_a_resume_reads_back_the_probes_before_and_takes_the_locks_again() {
    let w = World::new();
    let web1 = w.agent("web1", "127.0.17.21");
    let web2 = w.agent("web2", "127.0.17.22");
    let agents = [&web1, &web2];
    let first = w.plan("v1", &agents);
    let r = w.ctl.run(&["deploy", s(&first)]);
    assert_eq!(r.code, 0, "{}", r.text());

    let plan = w.plan("v2", &agents);
    let id = crash_after(&w, &plan, 10);
    let r = w.ctl.run(&["deploy", s(&plan), "--resume", &id]);
    assert_eq!(r.code, 0, "{}", r.text());
    for name in ["web1", "web2"] {
        assert!(
            r.stdout.contains(&format!(
                "[{name}] probe-before: ok — taken before the interruption, read back: 1/1 passed \
                 on the live release"
            )),
            "{}",
            r.text()
        );
        assert!(w.current(name).ends_with("v2"), "{name}");
    }

    let conn = rusqlite::Connection::open(w.ctl.state.join("golivectl.db")).expect("journal");
    let rows = |step: &str| -> Vec<(String, Option<String>, Option<String>)> {
        let mut stmt = conn
            .prepare(
                "SELECT host, idem_key, request FROM steps WHERE deployment = ?1 AND step = ?2 \
                 ORDER BY seq",
            )
            .expect("prepare");
        stmt.query_map([&id, step], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    let before = rows("probe-before");
    assert_eq!(before.len(), 2, "taken once per host: {before:?}");
    for (host, key, request) in &before {
        assert_eq!(
            key.as_deref(),
            Some(format!("{id}:{host}:probe-before").as_str())
        );
        assert_eq!(request, &None, "a record step sends nothing");
    }
    let probes_before: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM probe_results WHERE deployment = ?1 AND phase = 'before'",
            [&id],
            |r| r.get(0),
        )
        .expect("probe results");
    assert_eq!(
        probes_before, 2,
        "one probe before per host, from the start"
    );
    assert_eq!(rows("gate").len(), 2, "web1's gate ran once, on resume");
    assert_eq!(rows("lock").len(), 4, "the locks were taken again");
}
