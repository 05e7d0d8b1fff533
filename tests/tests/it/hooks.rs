//! Issue 4, parts 2-4: hooks, allow-listed named commands, permission rules
//! and required files. Real `golivectl` and `golive-agent` processes over
//! real mutual TLS, a real HTTP server serving the live release; every claim
//! is checked on disk, over HTTP or in `/proc`.
//!
//! Each test owns a temp dir and loopback addresses in 127.0.0.110-119.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use golive_tests::*;
use serde_json::Value;

world!();

/// One host: the app's ROOT, its HTTP server and its agent. Declared after
/// the [`World`], so it is dropped (processes killed) first.
struct Host {
    ip: String,
    root: PathBuf,
    http: HttpApp,
    agent: AgentProc,
}

impl World {
    /// An agent on `ip` declaring app `shop` (critical probe on /health),
    /// with `app_keys` added to `[apps.shop]` and `tables` after it.
    fn host(&self, name: &str, ip: &str, app_keys: &str, tables: &str) -> Host {
        let root = self.path().join(name).join("srv/shop");
        let http = HttpApp::serve(&root.join("current"), ip);
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {root:?}\nkeep_releases = 5\nshared = [\"uploads/\"]\n{app_keys}\n\n\
             [apps.shop.run]\ntimeout_secs = 30\ngrace_secs = 1\n\n\
             [[apps.shop.probes]]\nkind = \"http\"\nname = \"health\"\n\
             url = \"http://{ip}:{port}/health\"\nexpect_status = [200]\nbody_contains = \"ok\"\n\
             severity = \"critical\"\ntimeout_ms = 3000\n\n{tables}\n",
            port = http.port
        );
        let agent = AgentProc::start(self.path(), &self.pki, &spec);
        Host {
            ip: ip.into(),
            root,
            http,
            agent,
        }
    }

    fn plan(&self, name: &str, release: Option<(&str, &Path)>, agents: &[&AgentProc]) -> PathBuf {
        let path = self.path().join(format!("{name}.toml"));
        write_plan(&path, &self.pki, &self.op, "shop", release, agents);
        path
    }

    /// A release archive: `index.html` = "shop VERSION\n", the `health`
    /// file the probe wants, and `extra` files.
    fn release(&self, version: &str, extra: &[(&str, &[u8])]) -> PathBuf {
        let path = self
            .path()
            .join("dist")
            .join(format!("shop-{version}-{}.tar.gz", extra.len()));
        let index = format!("shop {version}\n");
        let mut files: Vec<(&str, &[u8])> =
            vec![("index.html", index.as_bytes()), ("health", b"ok\n")];
        files.extend_from_slice(extra);
        artifact(&path, &files);
        path
    }

    /// Deploys `version` (with `extra` files) to `agents`: the run and its
    /// `result` event.
    fn deploy(
        &self,
        version: &str,
        extra: &[(&str, &[u8])],
        agents: &[&AgentProc],
    ) -> (Run, Value) {
        let art = self.release(version, extra);
        let plan = self.plan(version, Some((version, &art)), agents);
        let run = self.ctl.run(&["--output", "json", "deploy", s(&plan)]);
        let result = run
            .json_lines()
            .into_iter()
            .find(|v| v["event"] == "result")
            .unwrap_or_else(|| panic!("no result event:\n{}", run.text()));
        (run, result)
    }
}

impl Host {
    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.ip, self.http.port, path)
            .unwrap_or_else(|| panic!("no HTTP answer from {}:{}", self.ip, self.http.port))
    }

    fn current(&self) -> Option<String> {
        std::fs::read_link(self.root.join("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// Entry names of `ROOT/releases`, sorted (leftovers included).
    fn release_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("releases"))
            .map(|entries| {
                entries
                    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn activations(&self) -> i64 {
        self.agent
            .journal()
            .query_row(
                "SELECT COUNT(*) FROM activations WHERE app = 'shop'",
                [],
                |r| r.get(0),
            )
            .expect("count activations")
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Live (not zombie) processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{name}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{name}/stat"))
            .ok()
            .and_then(|st| {
                st.rfind(')')
                    .and_then(|i| st[i + 1..].split_whitespace().next().map(|f| f == "Z"))
            })
            .unwrap_or(true);
        if cmdline.contains(marker) && !zombie {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// Hooks at every point: after_unpack builds into the release, the
/// activation hooks run in order around the switch (each sees the right
/// `current`), after_rollback runs on `golivectl rollback`.
#[test]
fn issue4_hooks_run_at_each_point_in_order() {
    let w = World::new();
    let log = "$GOLIVE_ROOT/shared/hooks.log";
    let h = w.host(
        "web1",
        "127.0.0.110",
        "",
        &format!(
            "[[apps.shop.hooks.after_unpack]]\n\
             cmd = [\"sh\", \"-c\", \"echo built $GOLIVE_RELEASE > BUILD; echo building $GOLIVE_APP in $(basename $PWD)\"]\n\n\
             [[apps.shop.hooks.before_activate]]\n\
             cmd = [\"sh\", \"-c\", \"echo before $GOLIVE_RELEASE $(readlink $GOLIVE_ROOT/current || echo none) $GOLIVE_HOOK >> {log}\"]\n\n\
             [[apps.shop.hooks.after_activate]]\n\
             cmd = [\"sh\", \"-c\", \"echo after-1 $GOLIVE_RELEASE $(readlink $GOLIVE_ROOT/current) >> {log}\"]\n\n\
             [[apps.shop.hooks.after_activate]]\n\
             cmd = [\"sh\", \"-c\", \"echo after-2 $(basename $GOLIVE_RELEASE_DIR) >> {log}\"]\n\n\
             [[apps.shop.hooks.after_rollback]]\n\
             cmd = [\"sh\", \"-c\", \"echo rollback $GOLIVE_RELEASE $(readlink $GOLIVE_ROOT/current) $GOLIVE_HOOK >> {log}\"]\n"
        ),
    );
    let hooks_log = || std::fs::read_to_string(h.root.join("shared/hooks.log")).unwrap_or_default();

    let (run, res) = w.deploy("v1", &[], &[&h.agent]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(res["state"], "succeeded", "{}", run.text());
    assert!(
        run.stdout
            .contains("[hook after_unpack.0] building shop in v1"),
        "{}",
        run.text()
    );
    assert_eq!(
        std::fs::read_to_string(h.root.join("releases/v1/BUILD")).unwrap(),
        "built v1\n"
    );
    assert_eq!(h.get("/BUILD"), (200, "built v1\n".into()));

    let (run, res) = w.deploy("v2", &[], &[&h.agent]);
    assert_eq!(run.code, 0, "{}", run.text());
    let d2 = text(&res["deployment"]).to_string();
    assert_eq!(h.get("/BUILD"), (200, "built v2\n".into()));
    assert_eq!(
        hooks_log(),
        "before v1 none before_activate\n\
         after-1 v1 releases/v1\n\
         after-2 v1\n\
         before v2 releases/v1 before_activate\n\
         after-1 v2 releases/v2\n\
         after-2 v2\n"
    );

    let rb = w.ctl.run(&["--output", "json", "rollback", &d2]);
    assert_eq!(rb.code, 0, "{}", rb.text());
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert!(
        hooks_log().ends_with("after-2 v2\nrollback v1 releases/v1 after_rollback\n"),
        "{}",
        hooks_log()
    );
}

/// A hook that hangs with a child that hangs too is killed with its whole
/// process group at its timeout; the stage fails, the staged release is
/// removed (the same id can be staged again), current is untouched.
#[test]
fn issue4_hanging_hook_is_killed_with_its_children() {
    let w = World::new();
    let h = w.host(
        "web1",
        "127.0.0.111",
        "",
        "[[apps.shop.hooks.after_unpack]]\n\
         cmd = [\"sh\", \"-c\", \"if [ -f HANG ]; then sleep 1000.1101 & sleep 1000.1102; fi\"]\n\
         timeout_secs = 2\n",
    );
    let (run, _) = w.deploy("v1", &[], &[&h.agent]);
    assert_eq!(run.code, 0, "{}", run.text());

    let started = Instant::now();
    let (run, res) = w.deploy("v2", &[("HANG", b"1\n")], &[&h.agent]);
    let took = started.elapsed();
    assert_ne!(run.code, 0, "{}", run.text());
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let msg = text(&res["message"]);
    assert!(
        msg.contains("hook after_unpack.0")
            && msg.contains("timed out after 2 s")
            && msg.contains("sleep 1000.1101")
            && msg.contains("staged release v2 was removed"),
        "{msg}"
    );
    // Nothing of the group survives (bounded wait: the kill happened before
    // the job ended, so this should hold at once).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with("1000.110");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "survivors: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));
    assert_eq!(
        h.release_dirs(),
        ["v1"],
        "staged release or leftovers remain"
    );
    assert_eq!(h.activations(), 1);

    // The same id stages and goes live once the hook behaves.
    let (run, res) = w.deploy("v2", &[], &[&h.agent]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(res["state"], "succeeded", "{}", run.text());
    assert_eq!(h.get("/"), (200, "shop v2\n".into()));
}

/// A failing after_activate hook fails the activation; the deployment
/// switches back (exit 3) and says why, with the hook's output.
#[test]
fn issue4_failing_after_activate_hook_switches_back() {
    let w = World::new();
    let h = w.host(
        "web1",
        "127.0.0.112",
        "",
        "[[apps.shop.hooks.after_activate]]\n\
         cmd = [\"sh\", \"-c\", \"if [ -f FAIL_ME ]; then echo cache rebuild broke; echo details on stderr >&2; exit 7; fi\"]\n",
    );
    let (run, _) = w.deploy("v1", &[], &[&h.agent]);
    assert_eq!(run.code, 0, "{}", run.text());

    let (run, res) = w.deploy("v2", &[("FAIL_ME", b"1\n")], &[&h.agent]);
    assert_eq!(run.code, 3, "{}", run.text());
    assert_eq!(res["state"], "rolled_back", "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains("hook after_activate.0")
            && msg.contains("exit 7")
            && msg.contains("switched back to the previous release"),
        "{msg}"
    );
    // The output tail is in the failed step (event and record), once.
    let failed = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "step" && v["step"] == "activate" && v["state"] == "failed")
        .unwrap_or_else(|| panic!("no failed activate step:\n{}", run.text()));
    assert!(
        text(&failed["detail"]).contains("cache rebuild broke\ndetails on stderr"),
        "{failed}"
    );
    assert!(
        run.stdout
            .contains("[hook after_activate.0] cache rebuild broke"),
        "{}",
        run.text()
    );
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));
}

/// Permission rules are applied after unpack; a missing required file
/// refuses the release (exit 2) and activates nothing.
#[test]
fn issue4_permission_rules_and_required_files() {
    let w = World::new();
    let h = w.host(
        "web1",
        "127.0.0.113",
        "required_files = [\"settings.php\", \"config/local.php\"]",
        "[[apps.shop.permissions]]\npath = \"settings.php\"\nmode = \"0444\"\n\n\
         [[apps.shop.permissions]]\npath = \"config\"\nmode = \"0750\"\n",
    );
    let files: [(&str, &[u8]); 2] = [
        ("settings.php", b"<?php\n"),
        ("config/local.php", b"<?php\n"),
    ];
    let (run, _) = w.deploy("v1", &files, &[&h.agent]);
    assert_eq!(run.code, 0, "{}", run.text());
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(h.root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("releases/v1/settings.php"), 0o444);
    assert_eq!(mode("releases/v1/config"), 0o750);
    assert!(
        run.stdout
            .contains("permission rule applied: settings.php 0444"),
        "{}",
        run.text()
    );

    // v2 lacks config/local.php: refused at staging, nothing live changes.
    let v2: [(&str, &[u8]); 2] = [("settings.php", b"<?php\n"), ("config/README", b"x\n")];
    let (run, res) = w.deploy("v2", &v2, &[&h.agent]);
    assert_eq!(run.code, 2, "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains("config/local.php")
            && msg.contains("refused")
            && !msg.contains("settings.php,"),
        "{msg}"
    );
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.release_dirs(), ["v1"]);
    assert_eq!(h.activations(), 1);

    // A rule whose path the release lacks is refused, naming it.
    let (run, res) = w.deploy("v3", &[("config/local.php", b"<?php\n")], &[&h.agent]);
    assert_eq!(run.code, 2, "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains("permission rule for settings.php") && msg.contains("does not exist"),
        "{msg}"
    );
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.activations(), 1);
}

/// `golivectl run` runs a declared command on every host in `ROOT/current`;
/// an unknown name is refused (exit 2) with the declared ones listed; a
/// failing command exits 1 (issue 14: a command that ran and failed is
/// `Internal`, journaled with the job: it ran, so the host may have
/// changed) with its exit code and output, and the hosts after it are not
/// run.
#[test]
fn issue4_run_declared_commands_only() {
    let w = World::new();
    let tables = "[apps.shop.commands.cache-rebuild]\n\
         cmd = [\"sh\", \"-c\", \"echo rebuilt $GOLIVE_RELEASE in $(pwd -P) >> $GOLIVE_ROOT/shared/cache.marker; echo cache rebuilt\"]\n\n\
         [apps.shop.commands.broken]\n\
         cmd = [\"sh\", \"-c\", \"echo it went wrong; exit 3\"]\n";
    let a = w.host("web-a", "127.0.0.114", "", tables);
    let b = w.host("web-b", "127.0.0.115", "", tables);
    let (run, _) = w.deploy("v1", &[], &[&a.agent, &b.agent]);
    assert_eq!(run.code, 0, "{}", run.text());
    let plan = w.plan("run", None, &[&a.agent, &b.agent]);

    let run = w.ctl.run(&["run", s(&plan), "cache-rebuild"]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout
            .contains("[web-a]   [command cache-rebuild] cache rebuilt")
            && run.stdout.contains("[web-b] run cache-rebuild: ok")
            && run.stdout.contains("cache-rebuild succeeded on 2 host(s)"),
        "{}",
        run.text()
    );
    for h in [&a, &b] {
        let real = std::fs::canonicalize(h.root.join("releases/v1")).unwrap();
        assert_eq!(
            std::fs::read_to_string(h.root.join("shared/cache.marker")).unwrap(),
            format!("rebuilt v1 in {}\n", real.display())
        );
    }

    let run = w.ctl.run(&["--output", "json", "run", s(&plan), "rm-rf"]);
    assert_eq!(run.code, 2, "{}", run.text());
    let res = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result:\n{}", run.text()));
    let msg = text(&res["message"]);
    assert!(
        msg.contains("declares no command \"rm-rf\"")
            && msg.contains("declared commands: broken, cache-rebuild")
            && msg.contains("not run on: web-b"),
        "{msg}"
    );
    // Human output carries the same message.
    let run = w.ctl.run(&["run", s(&plan), "rm-rf"]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stdout
            .contains("declared commands: broken, cache-rebuild"),
        "{}",
        run.text()
    );

    let run = w.ctl.run(&["run", s(&plan), "broken"]);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stdout.contains("exit 3")
            && run.stdout.contains("it went wrong")
            && run.stdout.contains("[web-a] run broken: failed")
            && !run.stdout.contains("[web-b] run broken"),
        "{}",
        run.text()
    );
    let code: Option<String> = a
        .agent
        .journal()
        .query_row(
            "SELECT error_code FROM jobs WHERE kind = 'command' AND state = 'failed'",
            [],
            |r| r.get(0),
        )
        .expect("the failed command job");
    assert_eq!(code.as_deref(), Some("Internal"));
    // Neither refused nor failed runs touched the cache command's marker.
    for h in [&a, &b] {
        let marker = std::fs::read_to_string(h.root.join("shared/cache.marker")).unwrap();
        assert_eq!(marker.lines().count(), 1, "{marker}");
    }
}

/// Issue 12 part 16: a failing hook's output is streamed once on a
/// terminal, not repeated by the step line, the switch-back's log and the
/// result line; JSON and the record keep the tail in the error.
#[test]
fn issue12_a_failing_hooks_output_is_printed_once() {
    let w = World::new();
    let h = w.host(
        "web1",
        "127.0.0.119",
        "",
        "[[apps.shop.hooks.after_activate]]\n\
         cmd = [\"sh\", \"-c\", \"if [ -f FAIL_ME ]; then echo drush-cr-exploded-$((4700+11)); exit 7; fi\"]\n",
    );
    let (run, _) = w.deploy("v1", &[], &[&h.agent]);
    assert_eq!(run.code, 0, "{}", run.text());

    let art = w.release("v2", &[("FAIL_ME", b"1\n")]);
    let plan = w.plan("v2", Some(("v2", &art)), &[&h.agent]);
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(run.code, 3, "{}", run.text());
    let all = run.text();
    assert_eq!(
        all.matches("drush-cr-exploded-4711").count(),
        1,
        "the hook's output once:\n{all}"
    );
    assert!(
        run.stdout.contains("(its output is above)")
            && run.stdout.contains("switched back to the previous release"),
        "{all}"
    );
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
}

/// An app server (python) on `ip:port` that answers `ok` to every GET and,
/// when the file `marker` appears, closes its socket for 1 s (a restart:
/// connections are refused), removes the marker and listens again.
const RESTARTING_APP: &str = r#"
import http.server, os, sys, time
ip, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
while True:
    srv = http.server.HTTPServer((ip, port), H)
    srv.timeout = 0.02
    while not os.path.exists(marker):
        srv.handle_request()
    srv.server_close()
    time.sleep(1.0)
    os.remove(marker)
"#;

/// Issue 12, part 15: downtime as users see it. An after_activate (and
/// after_rollback) hook restarts the app for about 1 s outside maintenance;
/// the agent samples the app's http probe through the switch and the
/// switch-back, and the controller reports the time it did not answer
/// beside the maintenance time (the result line, the result event, the
/// deployment record). A release whose hook restarts nothing measures 0.
#[test]
fn issue12_downtime_as_users_see_it_is_measured_through_switch_and_switch_back() {
    let w = World::new();
    let ip = "127.0.0.116";
    let root = w.path().join("web1/srv/shop");
    std::fs::create_dir_all(root.join("shared")).expect("shared dir");
    let marker = root.join("shared/restart");
    let port = free_port(ip);
    let script = w.path().join("app.py");
    std::fs::write(&script, RESTARTING_APP).expect("app script");
    let _app = KillOnDrop(
        std::process::Command::new("python3")
            .arg(&script)
            .args([ip, &port.to_string()])
            .arg(&marker)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn the app"),
    );
    let started = Instant::now();
    while http_get(ip, port, "/health").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the app never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A release that ships `restart-app` restarts the app from its hooks.
    let restart = "cmd = [\"sh\", \"-c\", \"if [ -f restart-app ]; then touch \\\"$GOLIVE_ROOT/shared/restart\\\"; fi\"]\n";
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\nkeep_releases = 5\n\n\
         [[apps.shop.probes]]\nkind = \"http\"\nname = \"health\"\n\
         url = \"http://{ip}:{port}/health\"\nexpect_status = [200]\nbody_contains = \"ok\"\n\
         severity = \"critical\"\ntimeout_ms = 3000\n\n\
         [[apps.shop.hooks.after_activate]]\n{restart}\n\
         [[apps.shop.hooks.after_rollback]]\n{restart}\n"
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);

    // A first install: nothing was live, nothing to measure.
    let (run, res) = w.deploy("v1", &[], &[&agent]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(res["unavailable_ms"], Value::Null, "{res}");

    // v2's hook restarts the app: about 1 s of refused connections.
    let (run, res) = w.deploy("v2", &[("restart-app", b"1\n")], &[&agent]);
    assert_eq!(run.code, 0, "{}", run.text());
    let down = res["unavailable_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no unavailable_ms: {res}"));
    assert!(
        down > 0 && down < 6_000,
        "{down} ms is not a 1 s restart: {}",
        run.text()
    );
    assert_eq!(res["downtime_ms"], 0, "{res}");
    assert_eq!(res["unavailable"][0]["host"], "web1", "{res}");
    assert!(
        text(&res["message"]).contains(&format!(
            "downtime {down} ms not answering (as users see it), 0 ms in maintenance"
        )),
        "{res}"
    );
    // The deployment record keeps it in the activate step.
    let id = text(&res["deployment"]).to_string();
    let show = w.ctl.run(&["--output", "json", "show", &id]);
    assert_eq!(show.code, 0, "{}", show.text());
    let record: Value = serde_json::from_str(show.stdout.trim()).expect("show JSON");
    let activate = record["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["step"] == "activate"))
        .unwrap_or_else(|| panic!("no activate step: {record}"));
    assert!(
        text(&activate["detail"]).contains(&format!("not answering {down} ms")),
        "{activate}"
    );

    // v3 restarts nothing: the app never stopped answering.
    let (run, res) = w.deploy("v3", &[], &[&agent]);
    assert_eq!(run.code, 0, "{}", run.text());
    let v3 = text(&res["deployment"]).to_string();
    let steady = res["unavailable_ms"].as_u64().expect("unavailable_ms");
    assert!(
        steady < 300,
        "{steady} ms for an app that never stopped: {res}"
    );

    // The switch back to v2 runs its after_rollback hook: a restart again,
    // reported per host and overall in the human output.
    let run = w.ctl.run(&["rollback", &v3]);
    assert_eq!(run.code, 0, "{}", run.text());
    let back: u64 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("downtime: "))
        .and_then(|l| l.strip_suffix(" ms not answering (as users see it), 0 ms in maintenance"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no downtime line:\n{}", run.text()));
    assert!(back > 0 && back < 6_000, "{back} ms: {}", run.text());
    assert!(
        run.stdout.contains(&format!(
            "[web1] not answering: {back} ms (as users see it)"
        )),
        "{}",
        run.text()
    );
    drop(agent);
}

/// The `error_code` the agent journaled for its last failed stage job.
fn last_stage_code(h: &Host) -> Option<String> {
    h.agent
        .journal()
        .query_row(
            "SELECT error_code FROM jobs WHERE kind = 'stage' AND state = 'failed' \
             ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("a failed stage job")
}

/// Issue 14, part 8: the steps after unpacking type their refusals. A
/// required file faked by a directory, and an `after_unpack` hook that
/// exits non-zero, each fail the stage job with `BadRequest` (journaled
/// with the job): exit 2 from that code, the message naming the problem
/// and the fix, the staged release removed, nothing live changed.
#[test]
fn issue14_a_faked_required_file_and_a_failing_after_unpack_hook_are_refusals() {
    let w = World::new();
    let h = w.host(
        "web1",
        "127.0.0.117",
        "required_files = [\"settings.php\"]",
        "[[apps.shop.hooks.after_unpack]]\n\
         cmd = [\"sh\", \"-c\", \"if [ -f BREAK ]; then echo composer-install-broke; exit 4; fi\"]\n",
    );
    let settings: (&str, &[u8]) = ("settings.php", b"<?php\n");
    let (run, _) = w.deploy("v1", &[settings], &[&h.agent]);
    assert_eq!(run.code, 0, "{}", run.text());

    // settings.php shipped as a directory.
    let (run, res) = w.deploy("v2", &[("settings.php/README", b"x\n")], &[&h.agent]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert_eq!(res["state"], "refused", "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains("staging on web1 failed, nothing live changed")
            && msg.contains("settings.php is a directory")
            && msg.contains("ship them in the artifact")
            && msg.contains("the staged release v2 was removed"),
        "{msg}"
    );
    assert_eq!(last_stage_code(&h).as_deref(), Some("BadRequest"));
    assert_eq!(h.release_dirs(), ["v1"]);

    // The hook fails.
    let (run, res) = w.deploy("v3", &[settings, ("BREAK", b"1\n")], &[&h.agent]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert_eq!(res["state"], "refused", "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains("staging on web1 failed, nothing live changed")
            && msg.contains("hook after_unpack.0")
            && msg.contains("exit 4")
            && msg.contains("the staged release v3 was removed"),
        "{msg}"
    );
    assert!(
        run.stdout.contains("composer-install-broke"),
        "the hook's output: {}",
        run.text()
    );
    assert_eq!(last_stage_code(&h).as_deref(), Some("BadRequest"));
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));
    assert_eq!(h.release_dirs(), ["v1"]);
    assert_eq!(h.activations(), 1);
}
