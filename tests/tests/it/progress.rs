//! Issue 14, progress: one event stream, three views. `--output json`
//! prints NDJSON (every line a JSON object: start, waves, each host's steps
//! with `elapsed_ms`, the upload's `step_progress` bytes, the result); on a
//! terminal (a pseudo-terminal from util-linux `script`) live per-host lines
//! are drawn and cleared before the final summary; with NO_COLOR=1 the same
//! terminal gets today's plain lines.
//!
//! Real agents on loopback addresses in 127.0.41.0/24 (this module's own).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use golive_tests::*;
use serde_json::Value;

world!(agents: Vec<AgentProc>);

/// Bytes of the artifact's one file: incompressible, so the upload carries
/// about this much.
const BODY_BYTES: usize = 3 << 20;

impl World {
    /// Two agents (`web1`, `web2` on 127.0.41.{base+1,base+2}) declaring
    /// app `shop` whose activation takes a second (a `before_activate`
    /// hook), so the activate step's elapsed time is known from below.
    fn new(base: u8) -> World {
        let common = Base::new();
        let (dir, pki) = (&common.dir, &common.pki);
        let agents = (1..=2)
            .map(|i| {
                let name = format!("web{i}");
                let mut spec = AgentSpec::new(&name, &format!("127.0.41.{}", base + i));
                spec.apps_toml = format!(
                    "[apps.shop]\nroot = {:?}\nkeep_releases = 3\n\n\
                     [[apps.shop.hooks.before_activate]]\ncmd = [\"sleep\", \"1\"]\n\n\
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

    /// A two-wave plan (canary web1, then web2) for `release`; the
    /// artifact's size in bytes.
    fn plan(&self, release: &str) -> (PathBuf, u64) {
        let dir = self.dir.path();
        let art = dir.join(format!("dist/shop-{release}.tar.gz"));
        // xorshift: incompressible bytes without a random-number crate.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let body: Vec<u8> = (0..BODY_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        artifact(&art, &[("index.html", b"ok\n"), ("blob.bin", &body)]);
        let size = std::fs::metadata(&art).expect("artifact").len();
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
            "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\n\n[[waves]]\npercent = 100\n",
        );
        std::fs::write(&path, text).expect("write plan");
        (path, size)
    }

    /// `golivectl deploy PLAN` under a pseudo-terminal (`script`), with
    /// `env` set and NO_COLOR removed unless `env` sets it; the terminal's
    /// raw output.
    fn deploy_on_a_terminal(&self, plan: &Path, env: &[(&str, &str)]) -> Run {
        let line = format!(
            "'{}' --state '{}' deploy '{}'",
            s(&bin("golivectl")),
            s(&self.ctl.state),
            s(plan)
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &line, "/dev/null"]);
        cmd.env_remove("NO_COLOR").env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_bounded(cmd, Duration::from_secs(90))
    }
}

/// The terminal's text without escape sequences and carriage returns.
fn strip_ansi(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte (0x40..=0x7e).
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn of<'a>(events: &'a [Value], kind: &str) -> Vec<(usize, &'a Value)> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == kind)
        .collect()
}

#[test]
fn issue14_json_output_is_one_event_stream() {
    let w = World::new(0);
    let (plan, size) = w.plan("v1");
    let run = w.ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    // Every line of stdout is one JSON object.
    let events = run.json_lines();
    assert!(
        events.iter().all(|e| e["event"].is_string()),
        "{}",
        run.stdout
    );

    let start = of(&events, "start");
    assert_eq!(start.len(), 1, "{}", run.stdout);
    let (start_at, start) = start[0];
    assert_eq!(start["hosts"], serde_json::json!(["web1", "web2"]));
    assert!(start["sha256"].is_string());
    let result = of(&events, "result");
    assert_eq!(result.len(), 1, "{}", run.stdout);
    let (result_at, result) = result[0];
    assert_eq!(result_at, events.len() - 1, "result is the last event");
    assert_eq!(result["exit"], 0);
    assert_eq!(result["state"], "succeeded");

    // Each wave runs then ends, wave 1 before wave 2.
    let waves: Vec<(u64, String)> = of(&events, "wave")
        .iter()
        .map(|(_, e)| {
            (
                e["wave"].as_u64().unwrap(),
                e["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        waves,
        [
            (1, "running".into()),
            (1, "ok".into()),
            (2, "running".into()),
            (2, "ok".into())
        ],
        "{}",
        run.stdout
    );

    for host in ["web1", "web2"] {
        let mine = |kind: &str| -> Vec<(usize, &Value)> {
            of(&events, kind)
                .into_iter()
                .filter(|(_, e)| e["host"] == host)
                .collect()
        };
        let steps = mine("step");
        assert!(!steps.is_empty(), "{host}: {}", run.stdout);
        for (i, e) in &steps {
            assert!(*i > start_at && *i < result_at, "{host}: {e}");
            assert!(
                e["elapsed_ms"].is_u64(),
                "{host}: step without elapsed: {e}"
            );
        }
        // Every host-changing step announces itself before it ends.
        for (i, started) in mine("step_started") {
            let name = &started["step"];
            let end = steps
                .iter()
                .find(|(j, e)| *j > i && &e["step"] == name)
                .unwrap_or_else(|| panic!("{host}: {name} started, never ended: {}", run.stdout));
            assert_eq!(end.1["state"], "ok", "{host}: {}", end.1);
        }
        // The upload: started, its bytes (the last one all of them), ok.
        let upload_started = mine("step_started")
            .into_iter()
            .find(|(_, e)| e["step"] == "upload")
            .unwrap_or_else(|| panic!("{host}: no upload step_started: {}", run.stdout))
            .0;
        let progress = mine("step_progress");
        assert!(
            !progress.is_empty(),
            "{host}: no upload progress: {}",
            run.stdout
        );
        let mut last = 0;
        for (i, p) in &progress {
            assert!(*i > upload_started, "{host}: {p}");
            assert_eq!(p["step"], "upload");
            assert_eq!(p["total"].as_u64(), Some(size), "{host}: {p}");
            let bytes = p["bytes"].as_u64().expect("bytes");
            assert!(bytes > 0 && bytes >= last && bytes <= size, "{host}: {p}");
            assert!(
                p["bytes_per_sec"].is_u64() && p["elapsed_ms"].is_u64(),
                "{p}"
            );
            last = bytes;
        }
        assert_eq!(last, size, "{host}: the last progress has every byte");
        let upload_ok = steps
            .iter()
            .find(|(_, e)| e["step"] == "upload" && e["state"] == "ok")
            .unwrap_or_else(|| panic!("{host}: no upload ok: {}", run.stdout));
        assert!(upload_ok.0 > progress.last().unwrap().0, "{host}");
        // The activation waited on a one-second hook: its elapsed says so.
        let activate = steps
            .iter()
            .find(|(_, e)| e["step"] == "activate")
            .unwrap_or_else(|| panic!("{host}: no activate step: {}", run.stdout));
        assert!(
            activate.1["elapsed_ms"].as_u64().unwrap() >= 1000,
            "{host}: {}",
            activate.1
        );
    }
}

#[test]
fn issue14_a_terminal_gets_live_host_lines_then_the_summary() {
    let w = World::new(10);
    let (plan, _) = w.plan("v1");
    let run = w.deploy_on_a_terminal(&plan, &[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let raw = &run.stdout;
    // Live lines are redrawn in place (cursor movement, erase line)...
    assert!(raw.contains("\x1b["), "no escape sequences: {raw:?}");
    let text = strip_ansi(raw);
    // ...one per host, prefixed by its wave (plain lines never read so).
    assert!(text.contains("wave 1/2 web1"), "{text}");
    assert!(text.contains("wave 2/2 web2"), "{text}");
    // The upload's line showed its bytes against the total, and the rate.
    assert!(
        text.contains("upload 3.00 MiB/3.00 MiB ") && text.contains("MiB/s"),
        "no upload bytes drawn: {text}"
    );
    // The scrollback keeps today's step lines, and the deployment's
    // summary comes after every live line.
    assert!(text.contains("[web1] upload: ok"), "{text}");
    assert!(text.contains("[web2] activate: ok"), "{text}");
    let summary = text
        .rfind(": succeeded: ")
        .unwrap_or_else(|| panic!("no summary: {text}"));
    assert!(text.rfind("wave 2/2 web2").unwrap() < summary, "{text}");
}

#[test]
fn issue14_no_color_on_a_terminal_gets_plain_lines() {
    let w = World::new(20);
    let (plan, _) = w.plan("v1");
    let run = w.deploy_on_a_terminal(&plan, &[("NO_COLOR", "1")]);
    assert_eq!(run.code, 0, "{}", run.text());
    let raw = &run.stdout;
    assert!(
        !raw.contains('\x1b'),
        "escape sequences with NO_COLOR: {raw:?}"
    );
    let text = raw.replace('\r', "");
    assert!(!text.contains("wave 1/2 web1"), "{text}");
    assert!(text.contains("[web1] upload: ok"), "{text}");
    assert!(text.contains("wave 1/2 (canary): web1"), "{text}");
    assert!(text.lines().any(|l| l.contains(": succeeded: ")), "{text}");
    // TERM=dumb alone chooses plain lines too.
    let (plan2, _) = w.plan("v2");
    let run = w.deploy_on_a_terminal(&plan2, &[("TERM", "dumb")]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
    assert!(run.stdout.contains("[web2] upload: ok"), "{}", run.stdout);
}
