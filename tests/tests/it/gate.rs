//! Issue 5: the go/no-go gate, the human decision record and the probe
//! figures before and after. Real `golivectl` and `golive-agent` processes
//! over mutual TLS; the app is python's http.server on `ROOT/current`, and
//! each probe's outcome is decided by which files a release ships.
//!
//! Loopback addresses 127.0.0.190-195.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use golive_tests::*;
use serde_json::Value;

/// Probes: `health` critical, `checkout` high, `search` medium, each on a
/// file of the release (`checkout_path` lets hosts differ).
fn gated_app(root: &Path, ip: &str, port: u16, checkout_path: &str) -> String {
    let probe = |name: &str, path: &str, severity: &str| {
        format!(
            "[[apps.shop.probes]]\nkind = \"http\"\nname = \"{name}\"\nurl = \"http://{ip}:{port}/{path}\"\n\
             expect_status = [200]\nseverity = \"{severity}\"\ntimeout_ms = 3000\n\n"
        )
    };
    format!(
        "[apps.shop]\nroot = {root:?}\nkeep_releases = 5\n\n{}{}{}",
        probe("health", "health", "critical"),
        probe("checkout", checkout_path, "high"),
        probe("search", "search", "medium"),
    )
}

struct Bed {
    dir: tempfile::TempDir,
    pki: TestPki,
    op: (PathBuf, PathBuf),
    ctl: Ctl,
}

struct Host {
    root: PathBuf,
    _http: HttpApp,
    agent: AgentProc,
}

impl Host {
    fn current(&self) -> Option<String> {
        std::fs::read_link(self.root.join("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }
}

impl Bed {
    fn new() -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let op = pki.operator("alice", "operator");
        let ctl = Ctl::new(dir.path());
        Bed { dir, pki, op, ctl }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn host(&self, name: &str, ip: &str, checkout_path: &str) -> Host {
        let root = self.path().join(name).join("srv/shop");
        let http = HttpApp::serve(&root.join("current"), ip);
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = gated_app(&root, ip, http.port, checkout_path);
        let agent = AgentProc::start(self.path(), &self.pki, &spec);
        Host {
            root,
            _http: http,
            agent,
        }
    }

    /// A release shipping `files` (each holds "ok"), plus an index.
    fn release(&self, id: &str, files: &[&str]) -> PathBuf {
        let path = self.path().join("dist").join(format!("{id}.tar.gz"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let index = format!("shop {id}\n");
        let mut entries: Vec<(&str, &[u8])> = vec![("index.html", index.as_bytes())];
        for f in files {
            entries.push((f, b"ok\n"));
        }
        artifact(&path, &entries);
        path
    }

    fn plan(&self, id: &str, artifact: &Path, hosts: &[&Host], extra: &str) -> PathBuf {
        let path = self.path().join(format!("{id}.toml"));
        let agents: Vec<&AgentProc> = hosts.iter().map(|h| &h.agent).collect();
        write_plan(
            &path,
            &self.pki,
            &self.op,
            "shop",
            Some((id, artifact)),
            &agents,
        );
        if !extra.is_empty() {
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str(extra);
            std::fs::write(&path, text).unwrap();
        }
        path
    }

    fn deploy(&self, plan: &Path) -> (Run, Value) {
        let run = self.ctl.run(&["--output", "json", "deploy", s(plan)]);
        let result = last_result(&run);
        (run, result)
    }

    fn show(&self, id: &str) -> Value {
        let run = self.ctl.run(&["--output", "json", "show", id]);
        assert_eq!(run.code, 0, "{}", run.text());
        serde_json::from_str(run.stdout.trim()).expect("show JSON")
    }

    /// Starts `golivectl deploy` in the background, output to a file.
    fn deploy_in_background(&self, plan: &Path, name: &str) -> Background {
        let out = self.path().join(format!("{name}.out"));
        let child = self
            .ctl
            .cmd(&["--output", "json", "deploy", s(plan)])
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn golivectl deploy");
        Background {
            child: Some(child),
            out,
        }
    }

    /// Waits (bounded) until the newest deployment is paused; its id.
    fn wait_paused(&self) -> String {
        let started = Instant::now();
        loop {
            let h = self.ctl.run(&["--output", "json", "history"]);
            let v: Value = serde_json::from_str(h.stdout.trim()).expect("history JSON");
            if let Some(d) = v["deployments"].as_array().and_then(|a| a.first())
                && d["state"] == "paused"
            {
                let id = d["id"].as_str().unwrap().to_string();
                if self.show(&id)["waiting_until"].is_i64() {
                    return id;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no paused deployment within 60 s: {}",
                h.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The NDJSON `result` event of a long command.
fn last_result(run: &Run) -> Value {
    run.json_lines()
        .into_iter()
        .rev()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result event: {}", run.text()))
}

/// A background `golivectl deploy`, killed on drop if still running.
struct Background {
    child: Option<Child>,
    out: PathBuf,
}

impl Background {
    /// Waits (bounded) for the exit; (code, NDJSON lines).
    fn wait(&mut self) -> (i32, Vec<Value>) {
        let mut child = self.child.take().expect("not waited yet");
        let started = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if started.elapsed() > Duration::from_secs(90) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "deploy did not end within 90 s:\n{}",
                    std::fs::read_to_string(&self.out).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(&self.out).unwrap();
        let lines = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (status.code().unwrap_or(-1), lines)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn steps(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|v| v["event"] == "step")
        .map(|v| {
            format!(
                "{}:{}:{}",
                v["host"].as_str().unwrap_or(""),
                v["step"].as_str().unwrap_or(""),
                v["state"].as_str().unwrap_or("")
            )
        })
        .collect()
}

const ALL: &[&str] = &["health", "checkout", "checkout-b", "search"];

/// A high-severity failure pauses; `go` lets the waiting deploy continue to
/// the next host; the record shows the gate's reasons, the decision and the
/// probe figures before and after.
#[test]
fn issue5_a_paused_deployment_continues_after_go() {
    let bed = Bed::new();
    let a = bed.host("gate-a", "127.0.0.190", "checkout");
    let b = bed.host("gate-b", "127.0.0.191", "checkout-b");
    let v1 = bed.release("v1", ALL);
    let (run, res) = bed.deploy(&bed.plan("v1", &v1, &[&a, &b], ""));
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(res["state"], "succeeded");

    // v2 lacks /checkout: host a's high probe fails, b's passes.
    let v2 = bed.release("v2", &["health", "checkout-b", "search"]);
    let plan = bed.plan("v2", &v2, &[&a, &b], "");
    let mut deploy = bed.deploy_in_background(&plan, "v2");
    let id = bed.wait_paused();
    // While paused, nothing moves on: b still runs v1.
    assert_eq!(a.current().as_deref(), Some("releases/v2"));
    assert_eq!(b.current().as_deref(), Some("releases/v1"));

    let go = bed.ctl.run(&[
        "--output",
        "json",
        "go",
        &id,
        "--by",
        "maria",
        "--note",
        "checkout is behind a flag today",
    ]);
    assert_eq!(go.code, 0, "{}", go.text());
    let (code, lines) = deploy.wait();
    assert_eq!(code, 0, "{lines:?}");
    // Issue 14: upload and stage, then the probes before, run on both hosts
    // at once: each host's steps keep their order, the hosts interleave.
    let mut got = steps(&lines);
    let host = |s: &String| s.split(':').next().unwrap_or_default().to_string();
    got[..4].sort_by_key(host);
    got[4..6].sort_by_key(host);
    assert_eq!(
        got,
        [
            "gate-a:upload:ok",
            "gate-a:stage:ok",
            "gate-b:upload:ok",
            "gate-b:stage:ok",
            "gate-a:probe-before:ok",
            "gate-b:probe-before:ok",
            "gate-a:activate:ok",
            "gate-a:probe:failed",
            "gate-a:gate:pause",
            "gate-a:decision:go",
            "gate-b:activate:ok",
            "gate-b:probe:ok",
            "gate-b:gate:ok",
        ],
        "{lines:?}"
    );
    assert_eq!(a.current().as_deref(), Some("releases/v2"));
    assert_eq!(b.current().as_deref(), Some("releases/v2"));

    let record = bed.show(&id);
    assert_eq!(record["state"], "succeeded", "{record}");
    let decision = &record["decisions"][0];
    assert_eq!(decision["decision"], "go");
    assert_eq!(decision["by"], "maria");
    assert_eq!(decision["reason"], "checkout is behind a flag today");
    assert!(
        decision["next_action"]
            .as_str()
            .unwrap()
            .starts_with("continue"),
        "{decision}"
    );
    let gate_a = &record["gate"][0];
    assert_eq!(gate_a["host"], "gate-a");
    assert_eq!(gate_a["action"], "pause");
    let reason = &gate_a["reasons"][0];
    assert_eq!(reason["probe"], "checkout");
    assert_eq!(reason["severity"], "high");
    assert!(
        reason["value"].as_str().unwrap().starts_with("status 404"),
        "{reason}"
    );
    assert!(
        reason["threshold"].as_str().unwrap().contains("200"),
        "{reason}"
    );
    // Figures before and after: checkout passed on v1, failed on v2.
    let phase = |host: &str, probe: &str, phase: &str| {
        record["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["host"] == host && p["probe"] == probe && p["phase"] == phase)
            .map(|p| p["status"].as_str().unwrap().to_string())
    };
    assert_eq!(
        phase("gate-a", "checkout", "before").as_deref(),
        Some("pass")
    );
    assert_eq!(
        phase("gate-a", "checkout", "after").as_deref(),
        Some("fail")
    );
    assert_eq!(
        phase("gate-b", "checkout", "after").as_deref(),
        Some("pass")
    );

    // The markdown record says the same.
    let md = bed.ctl.run(&["show", &id]);
    assert!(md.stdout.contains("## Gate"), "{}", md.stdout);
    let row = md
        .stdout
        .lines()
        .find(|l| l.starts_with("| gate-a | checkout | high | pass status 200"))
        .unwrap_or_else(|| panic!("no before/after row: {}", md.stdout));
    assert!(row.contains("| fail status 404"), "{row}");
    assert!(
        md.stdout
            .contains("| maria | go | checkout is behind a flag today |"),
        "{}",
        md.stdout
    );

    // A decision on a deployment that is not paused is refused.
    let again = bed.ctl.run(&["go", &id, "--by", "maria"]);
    assert_eq!(again.code, 2, "{}", again.text());
    assert!(again.stderr.contains("not paused"), "{}", again.text());
}

/// `no-go` on a waiting deploy switches the activated hosts back (exit 3);
/// a medium failure only warns; a critical one rolls back on its own.
#[test]
fn issue5_no_go_rolls_back_and_the_gate_follows_the_policy() {
    let bed = Bed::new();
    let a = bed.host("gate-c", "127.0.0.192", "checkout");
    let v1 = bed.release("v1", ALL);
    let (run, _) = bed.deploy(&bed.plan("v1", &v1, &[&a], ""));
    assert_eq!(run.code, 0, "{}", run.text());

    let v2 = bed.release("v2", &["health", "search"]);
    let mut deploy = bed.deploy_in_background(&bed.plan("v2", &v2, &[&a], ""), "v2");
    let id = bed.wait_paused();
    let missing = bed.ctl.run(&["no-go", &id, "--by", "bob", "--reason", " "]);
    assert_eq!(missing.code, 2, "{}", missing.text());
    let no = bed.ctl.run(&[
        "no-go",
        &id,
        "--by",
        "bob",
        "--reason",
        "checkout answers 404",
    ]);
    assert_eq!(no.code, 0, "{}", no.text());
    let (code, lines) = deploy.wait();
    assert_eq!(code, 3, "{lines:?}");
    let result = lines.iter().rev().find(|v| v["event"] == "result").unwrap();
    assert_eq!(result["state"], "rolled_back");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("no-go by bob: checkout answers 404"),
        "{result}"
    );
    assert_eq!(a.current().as_deref(), Some("releases/v1"));
    let record = bed.show(&id);
    assert_eq!(record["decisions"][0]["decision"], "no-go");
    assert_eq!(record["decisions"][0]["reason"], "checkout answers 404");

    // Medium (search) fails: continue with a warning, recorded.
    let v3 = bed.release("v3", &["health", "checkout"]);
    let (run, res) = bed.deploy(&bed.plan("v3", &v3, &[&a], ""));
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        res["message"]
            .as_str()
            .unwrap()
            .contains("gate warnings: gate-c: search (medium, fail)"),
        "{res}"
    );
    let record = bed.show(res["deployment"].as_str().unwrap());
    assert_eq!(record["gate"][0]["action"], "warn");
    assert_eq!(a.current().as_deref(), Some("releases/v3"));

    // The policy hardens high to rollback: no pause, switched back at once.
    let v4 = bed.release("v4", &["health", "search"]);
    let plan = bed.plan("v4", &v4, &[&a], "\n[gate]\nhigh = \"rollback\"\n");
    let (run, res) = bed.deploy(&plan);
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(
        res["message"]
            .as_str()
            .unwrap()
            .contains("the gate rolled back on gate-c: checkout (high, fail): status 404"),
        "{res}"
    );
    assert_eq!(a.current().as_deref(), Some("releases/v3"));

    // A bad policy is a plan error naming the key; nothing runs.
    let bad = bed.plan("v5", &v4, &[&a], "\n[gate]\nmedium = \"ignore\"\n");
    let (run, _) = (bed.ctl.run(&["deploy", s(&bad)]), ());
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("key `gate.medium`"), "{}", run.text());
}

/// A pause nobody answers ends the deploy with exit 4, the deployment stays
/// paused and unlocked; a later no-go rolls it back from the command itself.
#[test]
fn issue5_an_unanswered_pause_exits_4_and_a_later_no_go_rolls_back() {
    let bed = Bed::new();
    let a = bed.host("gate-d", "127.0.0.193", "checkout");
    let v1 = bed.release("v1", ALL);
    let (run, _) = bed.deploy(&bed.plan("v1", &v1, &[&a], ""));
    assert_eq!(run.code, 0, "{}", run.text());

    let v2 = bed.release("v2", &["health", "search"]);
    let plan = bed.plan("v2", &v2, &[&a], "\n[gate]\npause_timeout_secs = 2\n");
    let (run, res) = bed.deploy(&plan);
    assert_eq!(run.code, 4, "{}", run.text());
    assert_eq!(res["state"], "paused");
    assert!(
        res["message"]
            .as_str()
            .unwrap()
            .contains("no decision within 2 s"),
        "{res}"
    );
    let id = res["deployment"].as_str().unwrap().to_string();
    assert_eq!(a.current().as_deref(), Some("releases/v2"));
    let record = bed.show(&id);
    assert_eq!(record["state"], "paused");
    assert!(record["waiting_until"].is_null(), "{record}");

    let no = bed.ctl.run(&[
        "no-go",
        &id,
        "--by",
        "carla",
        "--reason",
        "nobody checked checkout",
    ]);
    assert_eq!(no.code, 0, "{}", no.text());
    assert!(no.stdout.contains("roll back now"), "{}", no.text());
    assert_eq!(a.current().as_deref(), Some("releases/v1"));
    let record = bed.show(&id);
    assert_eq!(record["state"], "rolled_back");
    assert_eq!(record["decisions"][0]["by"], "carla");
}

/// Issue 14: `no-go --output json` on a deployment nobody waits for prints
/// typed events (the decision, the rollback's start, each host's step, the
/// result), and they are journaled with the deployment's own events, the
/// pause among them; the human lines say the same as before.
#[test]
fn issue14_no_go_prints_typed_events_journaled_with_the_deployment() {
    let bed = Bed::new();
    let a = bed.host("gate-e", "127.0.0.195", "checkout");
    let v1 = bed.release("v1", ALL);
    let (run, _) = bed.deploy(&bed.plan("v1", &v1, &[&a], ""));
    assert_eq!(run.code, 0, "{}", run.text());
    let v2 = bed.release("v2", &["health", "search"]);
    let plan = bed.plan("v2", &v2, &[&a], "\n[gate]\npause_timeout_secs = 1\n");
    let (run, res) = bed.deploy(&plan);
    assert_eq!(run.code, 4, "{}", run.text());
    let id = res["deployment"].as_str().unwrap().to_string();
    let journal = || -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(bed.ctl.state.join("golivectl.db")).unwrap();
        let mut stmt = conn
            .prepare("SELECT kind, body FROM events WHERE deployment = ?1 ORDER BY seq")
            .unwrap();
        stmt.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let before = journal();
    let kinds: Vec<&str> = before.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains(&"paused"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"result"), "{kinds:?}");

    let no = bed.ctl.run(&[
        "--output",
        "json",
        "no-go",
        &id,
        "--by",
        "dana",
        "--reason",
        "checkout is gone",
    ]);
    assert_eq!(no.code, 0, "{}", no.text());
    let lines: Vec<&str> = no.stdout.lines().filter(|l| !l.is_empty()).collect();
    let values: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let decision = &values[0];
    assert_eq!(decision["event"], "decision", "{}", no.text());
    assert_eq!(decision["by"], "dana");
    assert_eq!(decision["reason"], "checkout is gone");
    assert_eq!(decision["waiting_deploy"], false);
    assert_eq!(decision["next_action"], "roll back now, from this command");
    let events: Vec<&str> = values
        .iter()
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"rollback"), "{events:?}");
    assert!(events.contains(&"step"), "{events:?}");
    let result = values.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["state"], "rolled_back", "{result}");
    // The same lines, journaled after the deployment's own.
    let after: Vec<String> = journal()[before.len()..]
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(after, lines, "the no-go's events are journaled once");
    assert_eq!(a.current().as_deref(), Some("releases/v1"));
    // Its record lists the decision among the events.
    let record = bed.show(&id);
    assert!(
        record["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "decision" && e["event"]["by"] == "dana"),
        "{record}"
    );
}

/// Issue 12 part 10: a rollback the gate decides by itself is a decision in
/// the record, by the gate policy, naming the rule, the probe and the next
/// action, like a human's.
#[test]
fn issue12_the_gates_rollback_is_recorded_as_a_decision() {
    let bed = Bed::new();
    let a = bed.host("gate-d", "127.0.0.193", "checkout");
    let v1 = bed.release("v1", ALL);
    let (run, _) = bed.deploy(&bed.plan("v1", &v1, &[&a], ""));
    assert_eq!(run.code, 0, "{}", run.text());

    // health (critical) fails: critical = rollback, the default.
    let v2 = bed.release("v2", &["checkout", "search"]);
    let (run, res) = bed.deploy(&bed.plan("v2", &v2, &[&a], ""));
    assert_eq!(run.code, 3, "{}", run.text());
    assert_eq!(a.current().as_deref(), Some("releases/v1"));
    let id = res["deployment"].as_str().expect("id");
    let record = bed.show(id);
    let decisions = record["decisions"].as_array().expect("decisions");
    assert_eq!(decisions.len(), 1, "{record}");
    let d = &decisions[0];
    assert_eq!(d["by"], "gate policy", "{record}");
    assert_eq!(d["decision"], "rollback", "{record}");
    let reason = d["reason"].as_str().expect("reason");
    assert!(
        reason.contains("critical = rollback") && reason.contains("health (critical, fail)"),
        "{reason}"
    );
    assert!(
        d["next_action"]
            .as_str()
            .is_some_and(|n| n.contains("switch") && n.contains("back")),
        "{record}"
    );
    let md = bed.ctl.run(&["show", id]);
    assert!(
        md.stdout.contains("gate policy") && md.stdout.contains("critical = rollback"),
        "{}",
        md.text()
    );
    // The NDJSON stream carries it as it happens.
    assert!(
        run.json_lines()
            .iter()
            .any(|e| e["event"] == "decision" && e["by"] == "gate policy"),
        "{}",
        run.text()
    );
}

/// Renders `html` in headless Chromium (Debian's package, installed by the
/// test command): a screenshot and the DOM after layout. Bounded to 60 s;
/// the browser's own profile in a temp dir, no network of its own.
fn chromium(html: &Path, dir: &Path) -> (Vec<u8>, String) {
    let shot = dir.join("shot.png");
    let common = |c: &mut std::process::Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1300,900",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()));
    };
    let mut c = std::process::Command::new("chromium");
    common(&mut c);
    c.arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()));
    let run = run_bounded(c, Duration::from_secs(60));
    assert_eq!(run.code, 0, "chromium --screenshot: {}", run.text());
    let mut c = std::process::Command::new("chromium");
    common(&mut c);
    c.arg("--dump-dom")
        .arg(format!("file://{}", html.display()));
    let dom = run_bounded(c, Duration::from_secs(60));
    assert_eq!(dom.code, 0, "chromium --dump-dom: {}", dom.text());
    (std::fs::read(&shot).expect("the screenshot"), dom.stdout)
}

#[test]
fn issue15_a_three_host_deployment_with_a_pause_renders_as_a_timeline_page() {
    let bed = Bed::new();
    let a = bed.host("rec-a", "127.0.0.194", "checkout");
    let b = bed.host("rec-b", "127.0.0.194", "checkout-b");
    let c = bed.host("rec-c", "127.0.0.194", "checkout-b");
    let v1 = bed.release("v1", ALL);
    let (run, _) = bed.deploy(&bed.plan("v1", &v1, &[&a, &b, &c], ""));
    assert_eq!(run.code, 0, "{}", run.text());
    // v2 pauses on rec-a; a go with a note continues it.
    let v2 = bed.release("v2", &["health", "checkout-b", "search"]);
    let plan = bed.plan("v2", &v2, &[&a, &b, &c], "");
    let mut deploy = bed.deploy_in_background(&plan, "v2");
    let id = bed.wait_paused();
    // A snapshot while it waits: a page for a deployment in progress.
    let snapshot = bed.path().join("snapshot.html");
    let run = bed
        .ctl
        .run(&["show", &id, "--format", "html", "--out", s(&snapshot)]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        std::fs::read_to_string(&snapshot)
            .unwrap()
            .contains("in progress; snapshot at")
    );
    let go = bed.ctl.run(&[
        "go",
        &id,
        "--by",
        "maria",
        "--note",
        "checkout <b>is</b> behind a flag",
    ]);
    assert_eq!(go.code, 0, "{}", go.text());
    let (code, _) = deploy.wait();
    assert_eq!(code, 0);

    let run = bed.ctl.run(&["show", &id, "--format", "html"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let page = PathBuf::from(run.stdout.trim());
    assert!(
        page.ends_with(format!("records/{id}.html")),
        "{}",
        run.text()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&page).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing is fetched.
    for outside in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(outside), "{outside} in the page");
    }
    // The operator's note is text, not markup.
    assert!(html.contains("checkout &lt;b&gt;is&lt;/b&gt; behind a flag"));
    // The SVG is well-formed XML with a bar per step and a row per host.
    let start = html.find("<svg").expect("an svg");
    let end = html.find("</svg>").expect("svg end") + "</svg>".len();
    let svg = roxmltree::Document::parse(&html[start..end]).expect("well-formed SVG");
    let hosts: Vec<&str> = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("host"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(hosts, ["rec-a", "rec-b", "rec-c"]);
    let bars = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("step"))
        .count();
    assert!(bars >= 12, "{bars} step bars");
    let titles: Vec<&str> = svg
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        titles.iter().any(|t| t.starts_with("go by maria")),
        "the decision is a mark with who and why: {titles:?}"
    );
    assert!(
        titles.iter().any(|t| t.starts_with("gate pause")),
        "{titles:?}"
    );

    // Rendered in a real browser: not blank, and the hosts are on the page.
    let (png_bytes, dom) = chromium(&page, bed.path());
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let pixels = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let coloured = pixels
        .chunks(step)
        .filter(|p| p.len() >= 3 && !(p[0] > 240 && p[1] > 240 && p[2] > 240))
        .count();
    let total = pixels.len() / step;
    assert!(
        coloured * 100 > total,
        "the page rendered blank: {coloured} of {total} pixels are not white"
    );
    // The timeline's green bars are drawn.
    let green = pixels
        .chunks(step)
        .filter(|p| p.len() >= 3 && p[0] == 0x2e && p[1] == 0x7d && p[2] == 0x32)
        .count();
    assert!(green > 200, "{green} pixels of step bars");
    for host in ["rec-a", "rec-b", "rec-c"] {
        assert!(dom.contains(host), "{host} not in the rendered page");
    }

    // history --format html: an index linking each record.
    let dir = bed.path().join("site");
    let run = bed
        .ctl
        .run(&["history", "--format", "html", "--dir", s(&dir)]);
    assert_eq!(run.code, 0, "{}", run.text());
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        index.contains(&format!("<a href=\"{id}.html\">{id}</a>")),
        "{index}"
    );
    assert!(dir.join(format!("{id}.html")).is_file());
}
