//! Issue 14, stages (seed 002: services one after another, each verified
//! before the next): a stages file lists three apps' plans — auth,
//! catalog, orders — each on its own agent. They go live in order, each
//! after the one before passed its probes; when the third fails its probe
//! it is switched back, then catalog, then auth are rolled back, newest
//! first; `golivectl rollback ID` of the staged deployment rolls every
//! stage back; bad stages input is refused with exit 2 before anything
//! changes.
//!
//! Real agents on loopback addresses in 127.0.24.0/24 (this module's own);
//! the order is read from the agents' and the controller's journals.

use std::path::{Path, PathBuf};

use golive_tests::*;

const APPS: [&str; 3] = ["auth", "catalog", "orders"];

world!(agents: Vec<AgentProc>);

impl World {
    /// Three agents on `127.0.24.{base+1..=base+3}`, agent i declaring
    /// app `APPS[i]`.
    fn new(base: u8) -> World {
        let common = Base::new();
        let (dir, pki) = (&common.dir, &common.pki);
        let agents = APPS
            .iter()
            .enumerate()
            .map(|(i, app)| {
                let mut spec = AgentSpec::new(
                    &format!("{app}1"),
                    &format!("127.0.24.{}", base + i as u8 + 1),
                );
                spec.apps_toml = flagged_app_toml(
                    app,
                    &dir.path().join(format!("{app}1/srv/{app}")),
                    &dir.path().join(format!("{app}.fail")),
                );
                AgentProc::start(dir.path(), pki, &spec)
            })
            .collect();
        World {
            base: common,
            agents,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn current(&self, app: &str) -> PathBuf {
        std::fs::read_link(self.path().join(format!("{app}1/srv/{app}/current"))).expect("current")
    }

    /// The plan of `app`'s `release` on its agent, `PATH/APP-RELEASE.toml`.
    fn plan(&self, i: usize, release: &str) -> PathBuf {
        let app = APPS[i];
        let art = self.path().join(format!("dist/{app}-{release}.tar.gz"));
        artifact(
            &art,
            &[("index.html", format!("{app} {release}\n").as_bytes())],
        );
        let path = self.path().join(format!("{app}-{release}.toml"));
        write_plan(
            &path,
            &self.pki,
            &self.op,
            app,
            Some((release, &art)),
            &[&self.agents[i]],
        );
        path
    }

    /// A stages file deploying `release` of the three apps in order.
    fn stages(&self, release: &str) -> PathBuf {
        let mut text = String::from("# seed 002: one service after another\n\n");
        for (i, app) in APPS.iter().enumerate() {
            self.plan(i, release);
            text.push_str(&format!(
                "[[stage]]\nname = \"{app}\"\nplan = \"{app}-{release}.toml\"\n\n"
            ));
        }
        let path = self.path().join(format!("stages-{release}.toml"));
        std::fs::write(&path, text).expect("write stages");
        path
    }

    fn journal(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.ctl.state.join("golivectl.db")).expect("journal")
    }

    /// The newest staged deployment's id.
    fn parent(&self) -> String {
        self.journal()
            .query_row(
                "SELECT parent FROM deployment_stages ORDER BY rowid DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .expect("a staged deployment")
    }

    /// (stage name, stage deployment state) of staged deployment `parent`.
    fn stage_states(&self, parent: &str) -> Vec<(String, String)> {
        let j = self.journal();
        let mut stmt = j
            .prepare(
                "SELECT s.name, d.state FROM deployment_stages s \
                 JOIN deployments d ON d.id = s.deployment \
                 WHERE s.parent = ?1 ORDER BY s.position",
            )
            .expect("prepare");
        stmt.query_map([parent], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    }

    /// The stage name of every successful switch-back or rollback step of
    /// `parent`'s stages, in the order the controller journaled them.
    fn rollbacks(&self, parent: &str) -> Vec<(String, String)> {
        let j = self.journal();
        let mut stmt = j
            .prepare(
                "SELECT st.name, s.step FROM steps s \
                 JOIN deployment_stages st ON st.deployment = s.deployment \
                 WHERE st.parent = ?1 AND s.step IN ('switch-back', 'rollback') \
                 AND s.state = 'ok' ORDER BY s.seq",
            )
            .expect("prepare");
        stmt.query_map([parent], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    }
}

fn jobs(agent: &AgentProc) -> i64 {
    agent
        .journal()
        .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
        .expect("count jobs")
}

/// Where `needle` first appears in `hay` (panics when it does not).
fn at(hay: &str, needle: &str) -> usize {
    hay.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} missing:\n{hay}"))
}

/// Three stages pass: each app goes live only after the one before it
/// finished (activations in order on the agents), the staged deployment
/// and its stages are recorded (`history`, `show`), and `golivectl
/// rollback ID` of the staged deployment rolls the three stages back,
/// orders first, auth last, each host back on v1.
#[test]
fn issue14_stages_go_live_in_order_and_roll_back_newest_first() {
    let w = World::new(0);
    let run = w.ctl.run(&["deploy", s(&w.stages("v1"))]);
    assert_eq!(run.code, 0, "{}", run.text());
    let run = w.ctl.run(&["deploy", s(&w.stages("v2"))]);
    assert_eq!(run.code, 0, "{}", run.text());
    for app in APPS {
        assert_eq!(w.current(app), Path::new("releases/v2"), "{app}");
    }
    // Each stage's switch finished before the next stage's was asked for.
    let switched: Vec<(i64, i64)> = w
        .agents
        .iter()
        .map(|a| {
            let jobs = activations(a, "v2");
            assert_eq!(jobs.len(), 1, "{}: {jobs:?}", a.name);
            jobs[0]
        })
        .collect();
    assert!(
        switched[0].1 <= switched[1].0 && switched[1].1 <= switched[2].0,
        "stages overlapped: {switched:?}"
    );
    let out = run.stdout.as_str();
    assert!(at(out, "stage 1/3 (auth)") < at(out, "stage 2/3 (catalog)"));
    assert!(at(out, "stage 2/3 (catalog)") < at(out, "stage 3/3 (orders)"));

    let parent = w.parent();
    let states = w.stage_states(&parent);
    assert_eq!(
        states,
        APPS.map(|a| (a.to_string(), "succeeded".to_string())),
        "{}",
        run.text()
    );
    let show = w.ctl.run(&["show", &parent]);
    assert_eq!(show.code, 0, "{}", show.text());
    assert!(show.stdout.contains("## Stages"), "{}", show.text());
    for app in APPS {
        assert!(
            show.stdout.contains(&format!("| {app} | {app} |")),
            "{app}: {}",
            show.text()
        );
    }
    let history = w.ctl.run(&["history"]);
    assert!(
        history.stdout.contains(&parent) && history.stdout.contains("stage 3 orders"),
        "{}",
        history.text()
    );

    // The staged deployment has no hosts to decide: its stages are.
    let go = w.ctl.run(&["go", &parent, "--by", "ana"]);
    assert_eq!(go.code, 2, "{}", go.text());
    assert!(go.stderr.contains("staged deployment"), "{}", go.text());

    let back = w.ctl.run(&["rollback", &parent]);
    assert_eq!(back.code, 0, "{}", back.text());
    for app in APPS {
        assert_eq!(w.current(app), Path::new("releases/v1"), "{app}");
    }
    assert_eq!(
        w.rollbacks(&parent),
        [
            ("orders".to_string(), "rollback".to_string()),
            ("catalog".to_string(), "rollback".to_string()),
            ("auth".to_string(), "rollback".to_string()),
        ]
    );
    let state: String = w
        .journal()
        .query_row(
            "SELECT state FROM deployments WHERE id = ?1",
            [&parent],
            |r| r.get(0),
        )
        .expect("parent");
    assert_eq!(state, "rolled_back");
}

/// Seed 002's failure: the third stage (orders) fails its critical probe;
/// it is switched back by its own gate, then catalog, then auth are rolled
/// back (exit 3), every host back on v1, the order read from the
/// controller journal and the output.
#[test]
fn issue14_the_third_stage_failing_rolls_back_the_first_two_newest_first() {
    let w = World::new(10);
    let run = w.ctl.run(&["deploy", s(&w.stages("v1"))]);
    assert_eq!(run.code, 0, "{}", run.text());

    std::fs::write(w.path().join("orders.fail"), b"").expect("flag");
    let run = w.ctl.run(&["deploy", s(&w.stages("v2"))]);
    assert_eq!(run.code, 3, "{}", run.text());
    for app in APPS {
        assert_eq!(w.current(app), Path::new("releases/v1"), "{app}");
    }
    // Every stage went live (orders too, before its probe failed), once.
    for a in &w.agents {
        assert_eq!(activations(a, "v2").len(), 1, "{}", a.name);
    }
    let parent = w.parent();
    assert_eq!(
        w.rollbacks(&parent),
        [
            ("orders".to_string(), "switch-back".to_string()),
            ("catalog".to_string(), "rollback".to_string()),
            ("auth".to_string(), "rollback".to_string()),
        ],
        "{}",
        run.text()
    );
    assert_eq!(
        w.stage_states(&parent),
        APPS.map(|a| (a.to_string(), "rolled_back".to_string()))
    );
    let out = run.stdout.as_str();
    assert!(
        at(out, "stage 2/3 (catalog): rolling back") < at(out, "stage 1/3 (auth): rolling back"),
        "{out}"
    );
    let (state, message): (String, String) = w
        .journal()
        .query_row(
            "SELECT state, message FROM deployments WHERE id = ?1",
            [&parent],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("parent");
    assert_eq!(state, "rolled_back", "{message}");
    assert!(
        message.contains("stage 3/3 (orders)")
            && message.contains("catalog")
            && message.contains("auth"),
        "{message}"
    );
}

/// Bad stages input is refused with exit 2, naming the file and the
/// problem, before anything changes: a stage's plan missing, one app in
/// two stages, and a later stage's host unreachable (checked before the
/// first stage starts); `--dry-run` of good input prints each stage's
/// steps in order. No deployment is recorded and no agent ran a job.
#[test]
fn issue14_bad_stages_input_is_refused_and_changes_nothing() {
    let w = World::new(20);
    let (auth, catalog) = (w.plan(0, "v1"), w.plan(1, "v1"));
    let write = |name: &str, plans: &[&str]| {
        let text: String = plans
            .iter()
            .map(|p| format!("[[stage]]\nplan = \"{p}\"\n\n"))
            .collect();
        let path = w.path().join(name);
        std::fs::write(&path, text).expect("write stages");
        path
    };
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();

    let missing = write("missing.toml", &[&name(&auth), "nope.toml"]);
    let run = w.ctl.run(&["deploy", s(&missing)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("missing.toml: stage 2/2") && run.stderr.contains("nope.toml"),
        "{}",
        run.text()
    );

    let twice = write("twice.toml", &[&name(&auth), &name(&catalog), &name(&auth)]);
    let run = w.ctl.run(&["deploy", s(&twice)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("twice.toml: stage 3/3")
            && run
                .stderr
                .contains("app auth is already deployed by stage 1"),
        "{}",
        run.text()
    );

    // Stage 2's host does not answer: refused before stage 1 starts.
    let gone = w.path().join("gone.toml");
    let text = std::fs::read_to_string(&catalog)
        .expect("read plan")
        .replace(
            &w.agents[1].addr.to_string(),
            &format!("127.0.24.29:{}", free_port("127.0.24.29")),
        );
    std::fs::write(&gone, text).expect("write plan");
    let unreachable = write("unreachable.toml", &[&name(&auth), "gone.toml"]);
    let run = w.ctl.run(&["deploy", s(&unreachable)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("unreachable.toml, stage 2/2 (catalog)")
            && run.stderr.contains("nothing changed"),
        "{}",
        run.text()
    );

    // The dry run of good input: every stage's compiled deployment, in
    // order, and nothing changes either.
    let good = write("good.toml", &[&name(&auth), &name(&catalog)]);
    let run = w.ctl.run(&["deploy", s(&good), "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let out = run.stdout.as_str();
    assert!(
        at(out, "stage 1/2 (auth)") < at(out, "[auth1] would:")
            && at(out, "[auth1] would:") < at(out, "stage 2/2 (catalog)")
            && at(out, "stage 2/2 (catalog)") < at(out, "[catalog1] would:"),
        "{out}"
    );

    for a in &w.agents {
        assert_eq!(jobs(a), 0, "{} ran a job", a.name);
    }
    let db = w.ctl.state.join("golivectl.db");
    if db.exists() {
        let n: i64 = w
            .journal()
            .query_row("SELECT COUNT(*) FROM deployments", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0, "a deployment was recorded");
    }
}

/// The agent's jobs of deployment `id`, as (kind, how many).
fn jobs_of(agent: &AgentProc, id: &str) -> Vec<(String, i64)> {
    let j = agent.journal();
    let mut stmt = j
        .prepare(
            "SELECT kind, COUNT(*) FROM jobs WHERE idempotency_key LIKE ?1 \
             GROUP BY kind ORDER BY kind",
        )
        .expect("prepare");
    stmt.query_map([format!("{id}:%")], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// The controller killed inside stage 2 (test-only
/// `GOLIVECTL_CRASH_AFTER_STEPS`: stage 1's upload, stage and activate are
/// journal writes 1 to 6, stage 2's upload 7 and 8, its stage's intent 9):
/// `history` shows the staged deployment interrupted with its resume
/// command; `deploy STAGES --resume ID` resumes stage 2 through its own
/// resume, then runs stage 3; every app ends on v2 and no agent ran a job
/// twice; the finished deployment cannot be resumed again (exit 2).
#[test]
fn issue14_a_staged_deployment_killed_in_stage_two_resumes_from_it() {
    let w = World::new(30);
    let run = w.ctl.run(&["deploy", s(&w.stages("v1"))]);
    assert_eq!(run.code, 0, "{}", run.text());

    let stages = w.stages("v2");
    let mut cmd = w.ctl.cmd(&["deploy", s(&stages)]);
    cmd.env("GOLIVECTL_CRASH_AFTER_STEPS", "9");
    let run = run_bounded(cmd, std::time::Duration::from_secs(60));
    assert_eq!(run.code, -1, "{}", run.text());
    let parent = w.parent();
    assert_eq!(
        w.stage_states(&parent),
        [
            ("auth".to_string(), "succeeded".to_string()),
            ("catalog".to_string(), "running".to_string()),
        ],
        "{}",
        run.text()
    );
    let history = w.ctl.run(&["history"]);
    let resume = format!("golivectl deploy {} --resume {parent}", s(&stages));
    assert!(
        history.stdout.contains(&resume) && history.stdout.contains("stage 2 catalog"),
        "{}",
        history.text()
    );

    let run = w.ctl.run(&["deploy", s(&stages), "--resume", &parent]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("stage 2/3 (catalog): resuming"),
        "{}",
        run.text()
    );
    for app in APPS {
        assert_eq!(w.current(app), Path::new("releases/v2"), "{app}");
    }
    let ids: Vec<String> = {
        let j = w.journal();
        let mut stmt = j
            .prepare("SELECT deployment FROM deployment_stages WHERE parent = ?1 ORDER BY position")
            .expect("prepare");
        stmt.query_map([&parent], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    for (agent, id) in w.agents.iter().zip(&ids) {
        assert_eq!(
            jobs_of(agent, id),
            [("activate".to_string(), 1), ("stage".to_string(), 1)],
            "{}'s jobs of {id}",
            agent.name
        );
    }
    let again = w.ctl.run(&["deploy", s(&stages), "--resume", &parent]);
    assert_eq!(again.code, 2, "{}", again.text());
}

/// A staged deployment's own lines (`stages`, `stage`, `stage_done`,
/// `stage_rollback`, its `result`) are typed events journaled under the
/// staged deployment's id: `show PARENT --output json` lists exactly the
/// lines `--output json` printed for it (deploy, then `rollback PARENT`),
/// in order, and none of its stages' own events (those are under each
/// stage's id).
#[test]
fn issue14_a_staged_deployments_own_events_are_journaled_under_its_id() {
    let w = World::new(40);
    let run = w.ctl.run(&["deploy", s(&w.stages("v1"))]);
    assert_eq!(run.code, 0, "{}", run.text());
    let deploy = w
        .ctl
        .run(&["--output", "json", "deploy", s(&w.stages("v2"))]);
    assert_eq!(deploy.code, 0, "{}", deploy.text());
    let parent = w.parent();
    let back = w.ctl.run(&["--output", "json", "rollback", &parent]);
    assert_eq!(back.code, 0, "{}", back.text());
    // The parent's lines: its own kinds, or a result / resume naming it.
    let own = |v: &serde_json::Value| match v["event"].as_str() {
        Some("stages" | "stage" | "stage_done" | "stage_rollback") => true,
        Some("result" | "resume") => v["deployment"] == parent.as_str(),
        _ => false,
    };
    let printed: Vec<serde_json::Value> = deploy
        .json_lines()
        .into_iter()
        .chain(back.json_lines())
        .filter(own)
        .collect();
    let kinds: Vec<&str> = printed
        .iter()
        .map(|v| v["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "stages",
            "stage",
            "stage_done",
            "stage",
            "stage_done",
            "stage",
            "stage_done",
            "result",
            "stage_rollback",
            "stage_rollback",
            "stage_rollback",
            "result"
        ],
        "{}\n{}",
        deploy.text(),
        back.text()
    );
    assert_eq!(printed[7]["state"], "succeeded");
    assert_eq!(printed[8]["name"], "orders");
    assert!(printed[11].get("state").is_none(), "{}", printed[11]);

    let show = w.ctl.run(&["--output", "json", "show", &parent]);
    assert_eq!(show.code, 0, "{}", show.text());
    let record: serde_json::Value = serde_json::from_str(show.stdout.trim()).expect("show JSON");
    let shown: Vec<serde_json::Value> = record["events"]
        .as_array()
        .expect("show has events")
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(shown, printed, "{record}");
}
