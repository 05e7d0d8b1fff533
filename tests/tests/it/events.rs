//! Issue 14, progress: one event stream feeds the terminal, the controller
//! journal and the notifications. A deployment's `--output json` lines are
//! the rows of its journal's `events` table and `show --output json`'s
//! `events`; the `[[notify]]` receiver (a webhook on loopback) hears the
//! notices derived from those events; `rollback`, `go` / `no-go` and
//! `maintenance` print the same typed events (NDJSON with `--output json`).
//!
//! Real agents on loopback addresses in 127.0.46.0/24 (this module's own).

use std::path::PathBuf;

use golive_tests::*;
use serde_json::Value;

world!(agents: Vec<AgentProc>);

impl World {
    /// Two agents (`web1`, `web2` on 127.0.46.{base+1,base+2}) declaring
    /// app `shop` with a probe that passes and maintenance by flag file.
    fn new(base: u8) -> World {
        let common = Base::new();
        let (dir, pki) = (&common.dir, &common.pki);
        let agents = (1..=2)
            .map(|i| {
                let name = format!("web{i}");
                let mut spec = AgentSpec::new(&name, &format!("127.0.46.{}", base + i));
                spec.apps_toml = format!(
                    "[apps.shop]\nroot = {:?}\nkeep_releases = 3\n\n\
                     [apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n\n\
                     [[apps.shop.hooks.after_activate]]\ncmd = [\"echo\", \"switched\"]\n\n\
                     [[apps.shop.probes]]\nkind = \"command\"\nname = \"health\"\n\
                     cmd = [\"true\"]\nseverity = \"critical\"\ntimeout_ms = 5000\n\n",
                    dir.path().join(&name).join("srv/shop")
                );
                AgentProc::start(dir.path(), pki, &spec)
            })
            .collect();
        World {
            base: common,
            agents,
        }
    }

    /// A two-wave plan (canary web1, then web2) for `release`, with `extra`
    /// appended.
    fn plan(&self, release: &str, extra: &str) -> PathBuf {
        let dir = self.dir.path();
        let art = dir.join(format!("dist/shop-{release}.tar.gz"));
        artifact(
            &art,
            &[("index.html", format!("shop {release}\n").as_bytes())],
        );
        let path = dir.join(format!("golive-{release}.toml"));
        let refs: Vec<&AgentProc> = self.agents.iter().collect();
        write_plan(
            &path,
            &self.pki,
            &self.op,
            "shop",
            Some((release, &art)),
            &refs,
        );
        let mut text = std::fs::read_to_string(&path).expect("read plan");
        text.push_str(
            "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\n\n[[waves]]\npercent = 100\n\n",
        );
        text.push_str(extra);
        std::fs::write(&path, text).expect("write plan");
        path
    }

    /// The journaled events of deployment `id`: (kind, NDJSON line).
    fn journaled(&self, id: &str) -> Vec<(String, String)> {
        let conn =
            rusqlite::Connection::open(self.ctl.state.join("golivectl.db")).expect("journal");
        let mut stmt = conn
            .prepare("SELECT kind, body FROM events WHERE deployment = ?1 ORDER BY seq")
            .expect("the events table");
        stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    }
}

/// A `[[notify]]` table for `hook` (the fields alone: `format = "json"`).
fn notify(ip: &str, hook: &Hook) -> String {
    format!(
        "[[notify]]\nwebhook = \"http://{ip}:{}/hooks/SECRET-TOKEN\"\nformat = \"json\"\n",
        hook.port
    )
}

/// The `event` of each notice `hook` received, in order.
fn notices(hook: &Hook) -> Vec<Value> {
    hook.posts().into_iter().map(|(_, v)| v).collect()
}

/// The NDJSON lines of a run (stdout), each checked to be a typed event.
fn typed_lines(run: &Run) -> Vec<String> {
    let lines: Vec<String> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"));
        let kind = v["event"].as_str().unwrap_or_default();
        assert!(
            golivectl::deployment::events::Event::KINDS.contains(&kind),
            "not a typed event: {l}"
        );
    }
    lines
}

/// A deployment with `--output json`: the lines it printed from its
/// `start` on are, byte for byte and in order, its journal's events and
/// `show --output json`'s `events`; the webhook heard "started", the
/// canary wave's end and "completed", derived from those events, and no
/// event and no notice carries the webhook's token.
#[test]
fn issue14_the_journal_holds_the_printed_events_and_notices_follow_them() {
    let w = World::new(0);
    let hook = Hook::start("127.0.46.1");
    let plan = w.plan("v1", &notify("127.0.46.1", &hook));
    let run = w.ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    let values = run.json_lines();
    let start = values
        .iter()
        .position(|v| v["event"] == "start")
        .expect("a start event");
    let id = values[start]["deployment"]
        .as_str()
        .expect("the deployment id")
        .to_string();
    let printed: Vec<String> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .skip(start)
        .map(str::to_string)
        .collect();
    let journaled = w.journaled(&id);
    let bodies: Vec<&str> = journaled.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, printed, "the journal holds what was printed");
    for (kind, body) in &journaled {
        let v: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(v["event"], kind.as_str(), "{body}");
    }
    let kinds: Vec<&str> = journaled.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "start",
        "wave",
        "step_started",
        "step",
        "gate",
        "log",
        "result",
    ] {
        assert!(kinds.contains(&k), "no {k} event journaled: {kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"result"));
    assert!(
        !run.stdout.contains("SECRET-TOKEN") && !run.stderr.contains("SECRET-TOKEN"),
        "the webhook's token leaked: {}",
        run.text()
    );
    assert!(journaled.iter().all(|(_, b)| !b.contains("SECRET-TOKEN")));

    // `show` reads them back: the same events, parsed.
    let show = w.ctl.run(&["--output", "json", "show", &id]);
    assert_eq!(show.code, 0, "{}", show.text());
    let record: Value = serde_json::from_str(show.stdout.trim()).expect("show JSON");
    let shown: Vec<Value> = record["events"]
        .as_array()
        .expect("show has events")
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(shown, values[start..].to_vec(), "{record}");
    // ... and the record page lists them.
    let page = w.dir.path().join("record.html");
    let html = w
        .ctl
        .run(&["show", &id, "--format", "html", "--out", s(&page)]);
    assert_eq!(html.code, 0, "{}", html.text());
    let text = std::fs::read_to_string(&page).expect("page");
    assert!(text.contains("<h2>Events</h2>"), "no events table");
    assert!(
        text.contains("<td>step_started</td>"),
        "no step_started row"
    );

    // The notices, in the order of their events (delivered before the
    // deploy exited: it waits for them).
    let got = notices(&hook);
    let events: Vec<&str> = got.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(events, ["started", "wave_done", "completed"], "{got:#?}");
    assert_eq!(got[0]["deployment"], id.as_str());
    assert_eq!(got[0]["hosts"], serde_json::json!(["web1", "web2"]));
    assert_eq!(got[0]["status"], "running");
    assert!(
        got[1]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("wave 1/2 (canary): ")),
        "{got:#?}"
    );
    assert_eq!(got[2]["status"], "succeeded");
    assert!(
        got[2]["downtime"]
            .as_str()
            .is_some_and(|d| d.ends_with("ms in maintenance")),
        "{got:#?}"
    );
}

/// `rollback --output json` prints only typed events: the rollback's
/// start naming its hosts, each host's step, the result with its state.
/// They go to the deployment's journal after its own, and the webhook
/// hears "rolled back" from the result event. Without `--output json`
/// the lines read as before.
#[test]
fn issue14_rollback_prints_ndjson_events_journaled_and_notified() {
    let w = World::new(10);
    let hook = Hook::start("127.0.46.11");
    let v1 = w.plan("v1", "");
    let run = w.ctl.run(&["deploy", s(&v1)]);
    assert_eq!(run.code, 0, "{}", run.text());
    let v2 = w.plan("v2", &notify("127.0.46.11", &hook));
    let run = w.ctl.run(&["--output", "json", "deploy", s(&v2)]);
    assert_eq!(run.code, 0, "{}", run.text());
    let id = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "start")
        .and_then(|v| v["deployment"].as_str().map(str::to_string))
        .expect("the deployment id");
    let before = w.journaled(&id).len();

    let rb = w.ctl.run(&["--output", "json", "rollback", &id]);
    assert_eq!(rb.code, 0, "{}", rb.text());
    let lines = typed_lines(&rb);
    let values: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let start = values
        .iter()
        .find(|v| v["event"] == "rollback")
        .expect("the rollback's start");
    assert_eq!(start["deployment"], id.as_str());
    // Newest first: the second wave's host before the canary.
    assert_eq!(start["hosts"], serde_json::json!(["web2", "web1"]));
    let steps: Vec<(&str, &str)> = values
        .iter()
        .filter(|v| v["event"] == "step" && v["step"] == "rollback")
        .map(|v| (v["host"].as_str().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("web2", "ok"), ("web1", "ok")], "{}", rb.text());
    let result = values.last().expect("a last line");
    assert_eq!(result["event"], "result");
    assert_eq!(result["state"], "rolled_back", "{result}");
    assert_eq!(result["exit"], 0);
    assert_eq!(
        result["message"],
        format!("deployment {id} rolled back on 2 host(s)")
    );
    // Journaled after the deployment's own events, as printed.
    let journaled = w.journaled(&id);
    let after: Vec<&str> = journaled[before..]
        .iter()
        .map(|(_, b)| b.as_str())
        .collect();
    // The lines before the rollback's start (steps skipped) are its too.
    assert_eq!(after, lines, "the rollback's events are journaled");
    let got = notices(&hook);
    let events: Vec<&str> = got.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(
        events,
        ["started", "wave_done", "completed", "rolled_back"],
        "{got:#?}"
    );
    assert_eq!(got[3]["status"], "rolled_back");
    assert_eq!(
        got[3]["reason"],
        format!("deployment {id} rolled back on 2 host(s)")
    );

    // A second rollback: nothing left to do, said in plain lines.
    let again = w.ctl.run(&["rollback", &id]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(
        again
            .stdout
            .contains("[web1] rollback: skipped — already rolled back"),
        "{}",
        again.text()
    );
    assert!(!again.stdout.contains("{\""), "no JSON: {}", again.text());
}

/// `maintenance on|off --output json` prints typed events: one
/// `maintenance` per host and the `result`; plain lines otherwise.
#[test]
fn issue14_maintenance_prints_typed_events() {
    let w = World::new(20);
    let plan = w.plan("v1", "");
    let on = w
        .ctl
        .run(&["--output", "json", "maintenance", "on", s(&plan)]);
    assert_eq!(on.code, 0, "{}", on.text());
    let values: Vec<Value> = typed_lines(&on)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hosts: Vec<(&str, bool, bool)> = values
        .iter()
        .filter(|v| v["event"] == "maintenance")
        .map(|v| {
            (
                v["host"].as_str().unwrap(),
                v["on"].as_bool().unwrap(),
                v["changed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(hosts, [("web1", true, true), ("web2", true, true)]);
    let result = values.last().expect("a result");
    assert_eq!(result["event"], "result");
    assert_eq!(result["ok"], true);
    assert_eq!(result["exit"], 0);
    let off = w.ctl.run(&["maintenance", "off", s(&plan)]);
    assert_eq!(off.code, 0, "{}", off.text());
    assert!(
        off.stdout.contains("[web1] maintenance off: ok"),
        "{}",
        off.text()
    );
    assert!(!off.stdout.contains("{\""), "no JSON: {}", off.text());
}

/// `deploy --dry-run --output json` prints only typed events (its verdicts,
/// the compiled deployment, each wave and host as it would run, and its
/// own `result`), a staged dry run too; without `--output json` the lines
/// read as before and carry no JSON. A dry run journals nothing (no
/// deployment, no event), tells no webhook, and changes nothing on any
/// host (no job, lock, upload, artifact or release).
#[test]
fn issue14_a_dry_run_prints_only_typed_events_and_journals_and_changes_nothing() {
    let w = World::new(30);
    let hook = Hook::start("127.0.46.31");
    let plan = w.plan("v1", &notify("127.0.46.31", &hook));
    let run = w
        .ctl
        .run(&["--output", "json", "deploy", "--dry-run", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    let values: Vec<Value> = typed_lines(&run)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = values.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "preflight",
            "dry_run",
            "deployment",
            "would_wave",
            "would_wave",
            "would",
            "would",
            "result"
        ],
        "{}",
        run.text()
    );
    assert_eq!(values[1]["preflight"], "READY");
    assert_eq!(values[2]["deployment"]["id"], "ID", "keys wait for the id");
    assert_eq!(values[3]["name"], "canary");
    assert_eq!(values[3]["hosts"], serde_json::json!(["web1"]));
    assert_eq!(values[5]["host"], "web1");
    assert_eq!(values[5]["steps"][0], "lock");
    assert!(
        values[5]["keys"].as_array().is_some_and(|k| k
            .iter()
            .all(|k| k.as_str().unwrap().starts_with("ID:web1:"))),
        "{}",
        values[5]
    );
    let result = values.last().unwrap();
    assert_eq!(result["dry_run"], true);
    assert_eq!(result["release"], "v1");
    assert_eq!(result["hosts"], 2);
    assert_eq!(result["exit"], 0);

    // A staged dry run: the stages, then the stage's own dry run.
    let stages = w.dir.path().join("stages.toml");
    std::fs::write(
        &stages,
        format!("[[stage]]\nplan = {:?}\n", plan.file_name().unwrap()),
    )
    .expect("write stages");
    let staged = w
        .ctl
        .run(&["--output", "json", "deploy", "--dry-run", s(&stages)]);
    assert_eq!(staged.code, 0, "{}", staged.text());
    let lines = typed_lines(&staged);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["event"], "stages");
    assert_eq!(first["dry_run"], true);
    assert_eq!(first["stages"]["stages"][0]["app"], "shop");
    assert!(lines.iter().any(|l| l.contains(r#""event":"would""#)));

    // Plain lines as before, no JSON among them.
    let human = w.ctl.run(&["deploy", "--dry-run", s(&plan)]);
    assert_eq!(human.code, 0, "{}", human.text());
    assert!(
        human.stdout.contains("dry run: would deploy")
            && human.stdout.contains("dry run: wave 1/2 (canary): web1")
            && human.stdout.contains("[web2] would: lock"),
        "{}",
        human.text()
    );
    assert!(!human.stdout.contains("{\""), "no JSON: {}", human.text());

    // Nothing journaled, nothing told, nothing changed on any host.
    let db = w.ctl.state.join("golivectl.db");
    if db.exists() {
        let conn = rusqlite::Connection::open(&db).expect("journal");
        for table in ["deployments", "events", "steps"] {
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{table}: {e}"));
            assert_eq!(n, 0, "the dry run journaled into {table}");
        }
    }
    assert!(notices(&hook).is_empty(), "{:?}", notices(&hook));
    for a in &w.agents {
        let j = a.journal();
        for table in ["jobs", "locks", "uploads", "releases", "activations"] {
            let n: i64 = j
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .expect("count");
            assert_eq!(n, 0, "{}: {table}", a.name);
        }
        let root = w.dir.path().join(&a.name).join("srv/shop");
        assert!(!root.join("releases").exists(), "{}", a.name);
        assert!(!root.join("current").exists(), "{}", a.name);
        let artifacts = a.state_dir.join("artifacts");
        let stored = std::fs::read_dir(&artifacts)
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(stored, 0, "{}: an artifact was uploaded", a.name);
    }
}

/// The watchdog's state on `agent` for app `shop`, polled until `done`
/// (at most `secs`), over mTLS as `op`.
fn watchdog_until(
    w: &World,
    agent: &AgentProc,
    secs: u64,
    done: impl Fn(&golive_shared::protocol::WatchdogInfo) -> bool,
) -> golive_shared::protocol::WatchdogInfo {
    use golive_shared::protocol::{Request, Response, WatchdogStatusRequest};
    let tls = golivectl::tls::client_config(&w.pki.ca(), &w.op.0, &w.op.1).expect("client TLS");
    let client =
        golivectl::client::AgentClient::new(&agent.name, &agent.addr.to_string(), None, tls)
            .expect("agent client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    loop {
        let req = Request::WatchdogStatus(WatchdogStatusRequest {
            app: "shop".into(),
            deployment: None,
        });
        let answer = rt
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), client.call(&req)).await
            })
            .expect("answered within 10 s");
        let info = match answer {
            Ok(Response::WatchdogStatus(Some(info))) => info,
            other => panic!("watchdog status: {other:?}"),
        };
        if done(&info) {
            return info;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(secs),
            "the watchdog within {secs} s: {info:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// What `show`, `go` and `no-go` learn later from a host's watchdog (it
/// rolled its host back; every host committed, so the go-live is
/// confirmed) is a typed event of the deployment, journaled under its id
/// (`host_report`, `settled`), and the webhook's notice is derived from
/// it, exactly once: two `show`s at once, then `go` and `show` again,
/// learn the same thing and tell it once.
#[test]
fn issue14_what_the_watchdog_did_is_journaled_as_events_and_notified_once() {
    let w = World {
        base: Base::new(),
        agents: Vec::new(),
    };
    let (dir, pki) = (&w.dir, &w.pki);
    let ip = "127.0.46.41";
    let root = dir.path().join("web1/srv/shop");
    let app = FlakyApp::start(&root, ip, None);
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = app_toml("shop", &root, &format!("http://{ip}:{}/health", app.port));
    let agent = AgentProc::start(dir.path(), pki, &spec);
    let hook = Hook::start(ip);
    let deploy = |version: &str, health: &str, extra: &str| -> Value {
        let art = w.dir.path().join(format!("dist/shop-{version}.tar.gz"));
        artifact(
            &art,
            &[
                ("index.html", format!("shop {version}\n").as_bytes()),
                ("health", health.as_bytes()),
            ],
        );
        let plan = w.dir.path().join(format!("{version}.toml"));
        write_plan(
            &plan,
            &w.pki,
            &w.op,
            "shop",
            Some((version, &art)),
            &[&agent],
        );
        let mut text = std::fs::read_to_string(&plan).expect("plan");
        text.push_str(extra);
        text.push_str(&notify(ip, &hook));
        std::fs::write(&plan, text).expect("plan");
        let run = w.ctl.run(&["--output", "json", "deploy", s(&plan)]);
        assert_eq!(run.code, 0, "deploy {version}: {}", run.text());
        run.json_lines()
            .into_iter()
            .rfind(|v| v["event"] == "result")
            .unwrap_or_else(|| panic!("no result: {}", run.text()))
    };
    // Two `show`s and a `go` at once (the go finds the watch over: exit
    // 2), then `show` again.
    let learn = |id: &str| {
        std::thread::scope(|sc| {
            let a = sc.spawn(|| w.ctl.run(&["--output", "json", "show", id]));
            let b = sc.spawn(|| w.ctl.run(&["--output", "json", "show", id]));
            let go = sc.spawn(|| w.ctl.run(&["go", id, "--by", "bob"]));
            for run in [a.join().unwrap(), b.join().unwrap()] {
                assert_eq!(run.code, 0, "{}", run.text());
                assert!(
                    run.json_lines().iter().all(|v| v.get("event").is_none()),
                    "show prints the record, not the events it learned: {}",
                    run.text()
                );
            }
            let go = go.join().unwrap();
            assert_eq!(go.code, 2, "no longer watched: {}", go.text());
        });
        let show = w.ctl.run(&["show", id]);
        assert_eq!(show.code, 0, "{}", show.text());
    };
    let of = |id: &str| -> Vec<Value> {
        notices(&hook)
            .into_iter()
            .filter(|n| n["deployment"] == id)
            .collect()
    };
    let kinds = |id: &str| -> Vec<(String, Value)> {
        w.journaled(id)
            .into_iter()
            .filter(|(k, _)| k == "host_report" || k == "settled")
            .map(|(k, b)| (k, serde_json::from_str(&b).expect("JSON")))
            .collect()
    };
    let watch = |window: &str| {
        format!(
            "\n[watchdog]\nwindow = \"{window}\"\ninterval = \"200ms\"\n\
             [[watchdog.triggers]]\nprobe = \"health\"\nfailing = true\nfor = \"1s\"\n"
        )
    };

    deploy("v1", "ok", "");
    // v2 starts failing 3 s after it goes live: its host rolls it back.
    let r = deploy("v2", "fail-after 3", &watch("60s"));
    assert_eq!(r["state"], "watching", "{r}");
    let d2 = r["deployment"].as_str().unwrap().to_string();
    let info = watchdog_until(&w, &agent, 40, |i| i.deployment == d2 && i.state.is_final());
    assert_eq!(
        info.state,
        golive_shared::protocol::WatchdogState::RolledBack,
        "{info:#?}"
    );
    learn(&d2);
    let events = kinds(&d2);
    let names: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["host_report", "settled"], "{events:#?}");
    assert_eq!(events[0].1["host"], "web1");
    assert_eq!(events[0].1["action"], "rollback");
    assert_eq!(events[0].1["by"], "watchdog on web1");
    assert_eq!(events[1].1["state"], "rolled_back");
    assert_eq!(events[1].1["was"], "watching");
    let told: Vec<String> = of(&d2)
        .iter()
        .map(|n| n["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        told,
        ["started", "completed", "rolled_back"],
        "{:#?}",
        of(&d2)
    );
    let back = of(&d2).pop().unwrap();
    assert!(
        back["reason"].as_str().is_some_and(
            |r| r.starts_with("reported by watchdog on web1: web1: rolled back from v2 to v1")
        ),
        "{back}"
    );

    // v3 stays healthy through a 5 s window: the host commits it, and
    // `show` learns the go-live is confirmed.
    let r = deploy("v3", "ok", &watch("5s"));
    assert_eq!(r["state"], "watching", "{r}");
    let d3 = r["deployment"].as_str().unwrap().to_string();
    let info = watchdog_until(&w, &agent, 30, |i| i.deployment == d3 && i.state.is_final());
    assert_eq!(
        info.state,
        golive_shared::protocol::WatchdogState::Committed,
        "{info:#?}"
    );
    learn(&d3);
    let events = kinds(&d3);
    let names: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["host_report", "settled"], "{events:#?}");
    assert_eq!(events[0].1["action"], "commit");
    assert_eq!(events[1].1["state"], "succeeded");
    let told: Vec<String> = of(&d3)
        .iter()
        .map(|n| n["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        told,
        ["started", "completed", "confirmed"],
        "{:#?}",
        of(&d3)
    );
    assert_eq!(of(&d3)[2]["status"], "succeeded");
    // The record says it once too.
    let show = w.ctl.run(&["--output", "json", "show", &d3]);
    let record: Value = show
        .json_lines()
        .into_iter()
        .find(|v| v["id"] == d3.as_str())
        .expect("the record");
    assert_eq!(record["state"], "succeeded");
    let commits = record["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "commit")
        .count();
    assert_eq!(commits, 1, "{record:#}");
    drop(app);
}
