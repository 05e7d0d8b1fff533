//! Issue 4, maintenance mode: real `golivectl` and `golive-agent` over mTLS,
//! and real nginx running the snippet shipped in `packaging/nginx/` (only
//! its two paths substituted). The agent verifies the 503 itself through its
//! `check_url`; the journal is read back for the state and the downtime.
//!
//! Each test owns a temp dir and loopback addresses in 127.0.0.120-129.
//! nginx must be installed (`apt-get install nginx`; scripts/test does it).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use golive_tests::*;
use serde_json::Value;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// A real nginx (master + worker) serving `docroot` on `ip`, with the shipped
/// maintenance snippet included. Stopped on drop (SIGQUIT, then SIGKILL).
/// Also used by the watchdog's tests (its access log, `NGINX_DIR/access.log`).
pub(crate) struct Nginx {
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    fn start(dir: &Path, ip: &str, docroot: &Path, flag: &Path) -> Nginx {
        Nginx::start_with(dir, ip, docroot, flag, "")
    }

    /// [`Nginx::start`] with `server` lines added to its server block.
    pub(crate) fn start_with(
        dir: &Path,
        ip: &str,
        docroot: &Path,
        flag: &Path,
        server: &str,
    ) -> Nginx {
        Nginx::start_full(dir, ip, docroot, flag, "", server)
    }

    /// [`Nginx::start_with`] with `http` lines (a `log_format`) added to its
    /// http block too.
    fn start_full(
        dir: &Path,
        ip: &str,
        docroot: &Path,
        flag: &Path,
        http: &str,
        server: &str,
    ) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("nginx is not installed: `apt-get install nginx` (scripts/test installs it)");
        let home = dir.join("nginx");
        let page_dir = home.join("page");
        std::fs::create_dir_all(&page_dir).expect("nginx dir");
        std::fs::copy(
            packaging().join("maintenance.html"),
            page_dir.join("maintenance.html"),
        )
        .expect("copy maintenance.html");
        let shipped = std::fs::read_to_string(packaging().join("nginx/golive-maintenance.conf"))
            .expect("read the shipped nginx snippet");
        for placeholder in ["/srv/shop/shared/maintenance.flag", "/usr/share/golive"] {
            assert!(
                shipped.contains(placeholder),
                "the shipped snippet no longer contains {placeholder:?}"
            );
        }
        let snippet = shipped
            .replace("/srv/shop/shared/maintenance.flag", s(flag))
            .replace("/usr/share/golive", s(&page_dir));
        std::fs::write(home.join("golive-maintenance.conf"), snippet).expect("write snippet");
        let port = free_port(ip);
        // Workers drop to `user` only when the master runs as root; our temp
        // dir is private, so keep them as root then.
        let user = if nix::unistd::geteuid().is_root() {
            "user root root;\n"
        } else {
            ""
        };
        let h = s(&home);
        let conf = format!(
            "{user}daemon off;\nmaster_process on;\nworker_processes 1;\npid {h}/nginx.pid;\n\
             error_log {h}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log {h}/access.log;\n\
               {http}\n\
               client_body_temp_path {h}/body;\n  proxy_temp_path {h}/proxy;\n\
               fastcgi_temp_path {h}/fastcgi;\n  uwsgi_temp_path {h}/uwsgi;\n  scgi_temp_path {h}/scgi;\n\
               server {{\n\
                 listen {ip}:{port};\n\
                 root {docroot};\n\
                 include {h}/golive-maintenance.conf;\n\
                 {server}\n\
               }}\n\
             }}\n",
            docroot = s(docroot),
        );
        let conf_path = home.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let log = std::fs::File::create(home.join("stderr.log")).expect("nginx stderr log");
        let child = Command::new(bin)
            .arg("-e")
            .arg(home.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(format!("{h}/"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx {
            port,
            dir: home,
            child: Some(child),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect((ip, port)).is_err() {
            if let Some(status) = nginx
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nginx exited at start ({status}):\n{}", nginx.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "nginx did not listen on {ip}:{port} within 15 s:\n{}",
                nginx.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub(crate) fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGQUIT: graceful shutdown of master and workers.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The whole raw answer to a GET (headers and body), 5 s limit.
fn raw_get(ip: &str, port: u16, path: &str) -> String {
    let mut sock = std::net::TcpStream::connect((ip, port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(sock, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").expect("send");
    let mut buf = String::new();
    sock.read_to_string(&mut buf).expect("read answer");
    buf
}

world!();

impl World {
    /// (Re)writes `maint.toml` naming `agent` at its current address, with
    /// `extra` appended.
    /// A web server without the maintenance snippet (always 200) on `ip`,
    /// and agent `name` whose app's maintenance check_url is that server:
    /// the server, the app's root, the URL and the agent.
    fn plain_site_agent(&self, name: &str, ip: &str) -> (HttpApp, PathBuf, String, AgentProc) {
        let site = self.path().join("plain");
        std::fs::create_dir_all(&site).expect("site dir");
        std::fs::write(site.join("index.html"), "no snippet here\n").expect("index");
        let plain = HttpApp::serve(&site, ip);
        let root = self.path().join(name).join("srv/shop");
        let url = format!("http://{ip}:{}/", plain.port);
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {root:?}\n\n{}",
            maintenance_toml(&url, "")
        );
        let agent = AgentProc::start(self.path(), &self.pki, &spec);
        (plain, root, url, agent)
    }

    fn plan(&self, agent: &AgentProc, release: Option<(&str, &Path)>, extra: &str) -> PathBuf {
        let path = self.path().join("maint.toml");
        write_plan(&path, &self.pki, &self.op, "shop", release, &[agent]);
        if !extra.is_empty() {
            let mut text = std::fs::read_to_string(&path).expect("read plan");
            text.push_str(extra);
            std::fs::write(&path, text).expect("write plan");
        }
        path
    }

    /// `golivectl --output json ARGS`: the run and its `result` event.
    fn json(&self, args: &[&str]) -> (Run, Value) {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let run = self.ctl.run(&all);
        let result = run
            .json_lines()
            .into_iter()
            .find(|v| v["event"] == "result")
            .unwrap_or_else(|| panic!("no result event:\n{}", run.text()));
        (run, result)
    }
}

/// `[apps.shop.maintenance]` with a flag file (relative to ROOT) and a check URL.
fn maintenance_toml(check_url: &str, extra: &str) -> String {
    format!(
        "[apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n\
         check_url = {check_url:?}\ncheck_timeout_ms = 2000\n{extra}\n"
    )
}

fn maintenance_rows(agent: &AgentProc) -> (i64, i64) {
    let j = agent.journal();
    let count = |sql: &str| -> i64 {
        j.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    (
        count("SELECT COUNT(*) FROM maintenance WHERE app = 'shop'"),
        count("SELECT COUNT(*) FROM maintenance_log WHERE app = 'shop'"),
    )
}

#[test]
fn nginx_answers_503_while_on_and_the_state_survives_an_agent_restart() {
    let w = World::new();
    let ip = "127.0.0.120";
    let root = w.path().join("web1/srv/shop");
    // A live release, laid out as the agent does it.
    std::fs::create_dir_all(root.join("releases/r1")).expect("release dir");
    std::fs::write(root.join("releases/r1/index.html"), "shop r1\n").expect("index");
    std::os::unix::fs::symlink("releases/r1", root.join("current")).expect("current");
    let flag = root.join("shared/maintenance.flag");
    let nginx = Nginx::start(w.path(), ip, &root.join("current"), &flag);
    let commands = w.path().join("commands.log");
    let cmd = |word: &str| {
        format!(
            "[apps.shop.maintenance.{word}]\ncmd = [\"sh\", \"-c\", \"echo {word} >> {}\"]\n",
            s(&commands)
        )
    };
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n{}",
        maintenance_toml(
            &format!("http://{ip}:{}/", nginx.port),
            &format!("{}{}", cmd("on"), cmd("off"))
        )
    );
    let mut agent = AgentProc::start(w.path(), &w.pki, &spec);
    let plan = w.plan(&agent, None, "");

    assert_eq!(
        http_get(ip, nginx.port, "/"),
        Some((200, "shop r1\n".into()))
    );

    let on = w
        .ctl
        .run(&["maintenance", "on", s(&plan), "--reason", "test window"]);
    let first_on_done = Instant::now();
    assert_eq!(on.code, 0, "{}\nnginx:\n{}", on.text(), nginx.logs());
    assert!(
        on.stdout.contains("[web1] maintenance on: ok — turned on"),
        "{}",
        on.text()
    );
    // The agent checked the 503 through nginx itself.
    assert!(
        on.stdout.contains(&format!(
            "check_url http://{ip}:{}/ answered 503",
            nginx.port
        )),
        "{}",
        on.text()
    );
    let answer = raw_get(ip, nginx.port, "/");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 120"), "{answer}");
    assert!(answer.contains("Down for maintenance"), "{answer}");
    let (status, _) = http_get(ip, nginx.port, "/any/page").expect("answer");
    assert_eq!(status, 503);
    let flag_text = std::fs::read_to_string(&flag).expect("flag file written");
    assert!(flag_text.contains("test window"), "{flag_text}");
    assert_eq!(maintenance_rows(&agent), (1, 0));
    let (reason, by): (String, String) = agent
        .journal()
        .query_row(
            "SELECT reason, by FROM maintenance WHERE app = 'shop'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("maintenance row");
    assert!(reason.starts_with("test window"), "{reason}");
    assert_eq!(by, "alice");

    // Again: already on, the original time is kept.
    std::thread::sleep(Duration::from_millis(300));
    let again = w.ctl.run(&["maintenance", "on", s(&plan)]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(again.stdout.contains("was already on"), "{}", again.text());

    // The agent restarts (new port): still on, in the journal and in nginx.
    assert!(agent.stop(), "agent did not stop on SIGTERM");
    agent.spawn();
    let plan = w.plan(&agent, None, "");
    assert_eq!(maintenance_rows(&agent), (1, 0));
    assert_eq!(http_get(ip, nginx.port, "/").map(|a| a.0), Some(503));

    let before_off = first_on_done.elapsed().as_millis() as u64;
    let (off, result) = w.json(&["maintenance", "off", s(&plan)]);
    assert_eq!(off.code, 0, "{}", off.text());
    assert_eq!(result["ok"], true, "{result}");
    let downtime = result["downtime_ms"].as_u64().expect("downtime_ms");
    assert!(
        downtime >= before_off,
        "downtime {downtime} ms should count from the first `on` ({before_off} ms ago)"
    );
    let host = off
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "maintenance")
        .expect("maintenance event");
    assert_eq!(host["changed"], true, "{host}");
    assert_eq!(host["downtime_ms"].as_u64(), Some(downtime), "{host}");
    assert_eq!(
        http_get(ip, nginx.port, "/"),
        Some((200, "shop r1\n".into()))
    );
    assert!(!flag.exists(), "flag file left behind");
    assert_eq!(maintenance_rows(&agent), (0, 1));
    let logged: i64 = agent
        .journal()
        .query_row(
            "SELECT downtime_ms FROM maintenance_log WHERE app = 'shop'",
            [],
            |r| r.get(0),
        )
        .expect("maintenance_log row");
    assert_eq!(logged as u64, downtime);
    // The declared commands ran, in order (`on` is applied again when asked again).
    assert_eq!(
        std::fs::read_to_string(&commands).expect("commands log"),
        "on\non\noff\n"
    );

    // Human output of an `off` that finds it off.
    let again = w.ctl.run(&["maintenance", "off", s(&plan)]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(again.stdout.contains("was already off"), "{}", again.text());
    assert_eq!(maintenance_rows(&agent), (0, 1));
    drop(nginx);
}

#[test]
fn a_check_url_that_never_answers_503_fails_clearly_and_stays_on() {
    let w = World::new();
    let ip = "127.0.0.121";
    // A web server without the maintenance snippet: always 200.
    let (_plain, root, url, agent) = w.plain_site_agent("web2", ip);
    let plan = w.plan(&agent, None, "");

    let started = Instant::now();
    let on = w.ctl.run(&["maintenance", "on", s(&plan)]);
    assert_eq!(on.code, 1, "{}", on.text());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the check is bounded"
    );
    let text = on.text();
    assert!(text.contains(&url), "names the URL: {text}");
    assert!(
        text.contains("answered 200"),
        "names the status seen: {text}"
    );
    assert!(text.contains("did not answer 503"), "{text}");
    // Failing safe: the flag and the journaled state stay.
    assert!(root.join("shared/maintenance.flag").exists());
    assert_eq!(maintenance_rows(&agent), (1, 0));

    // `off` undoes it (the same URL answers 2xx, as required after off).
    let off = w.ctl.run(&["maintenance", "off", s(&plan)]);
    assert_eq!(off.code, 0, "{}", off.text());
    assert!(
        off.stdout.contains("turned off; downtime"),
        "{}",
        off.text()
    );
    assert!(!root.join("shared/maintenance.flag").exists());
    assert_eq!(maintenance_rows(&agent), (0, 1));
}

#[test]
fn deploy_with_maintenance_reports_downtime_and_ends_with_it_off() {
    let w = World::new();
    let ip = "127.0.0.122";
    let root = w.path().join("web3/srv/shop");
    let flag = root.join("shared/maintenance.flag");
    let nginx = Nginx::start(w.path(), ip, &root.join("current"), &flag);
    let mut spec = AgentSpec::new("web3", ip);
    // The probe goes through nginx: it only passes once maintenance is off.
    spec.apps_toml = format!(
        "{}{}",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", nginx.port)),
        maintenance_toml(&format!("http://{ip}:{}/", nginx.port), "")
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let release = |v: &str| {
        let path = w.path().join(format!("dist/shop-{v}.tar.gz"));
        let index = format!("shop {v}\n");
        artifact(
            &path,
            &[("index.html", index.as_bytes()), ("health", b"ok\n")],
        );
        path
    };

    // v1 without maintenance: a zero-downtime switch.
    let v1 = release("v1");
    let plan = w.plan(&agent, Some(("v1", &v1)), "");
    let (run, result) = w.json(&["deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}\nnginx:\n{}", run.text(), nginx.logs());
    assert_eq!(result["downtime_ms"], 0, "{result}");
    assert_eq!(result["maintenance"], "none", "{result}");
    assert!(
        !run.stdout.contains("maintenance-on"),
        "no maintenance asked: {}",
        run.text()
    );

    // v2 with `[deploy] maintenance = true`.
    let v2 = release("v2");
    let plan = w.plan(&agent, Some(("v2", &v2)), "[deploy]\nmaintenance = true\n");
    let (run, result) = w.json(&["deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}\nnginx:\n{}", run.text(), nginx.logs());
    assert_eq!(result["state"], "succeeded", "{result}");
    assert_eq!(result["maintenance"], "off", "{result}");
    let downtime = result["downtime_ms"].as_u64().expect("downtime_ms");
    assert!(downtime > 0, "{result}");
    assert!(
        text(&result["message"]).contains(&format!("{downtime} ms in maintenance")),
        "{result}"
    );
    // Issue 12: the switch happened behind the maintenance page, so the
    // agent sampled nothing: that time is maintenance, not counted twice;
    // after maintenance off the app answered at once.
    assert_eq!(result["unavailable_ms"], 0, "{result}");
    assert!(
        run.stdout
            .contains("availability: not sampled, the app is in maintenance"),
        "{}",
        run.text()
    );
    // The agent saw nginx answer 503 while the switch happened.
    assert!(
        run.stdout.contains(&format!(
            "check_url http://{ip}:{}/ answered 503",
            nginx.port
        )),
        "{}",
        run.text()
    );
    let steps: Vec<String> = run
        .json_lines()
        .into_iter()
        .filter(|v| v["event"] == "step")
        .map(|v| format!("{}:{}", text(&v["step"]), text(&v["state"])))
        .collect();
    assert_eq!(
        steps,
        [
            "upload:ok",
            "stage:ok",
            "probe-before:ok",
            "maintenance-on:ok",
            "activate:ok",
            "maintenance-off:ok",
            "probe:ok",
            "gate:ok"
        ],
        "{}",
        run.text()
    );
    assert!(!flag.exists(), "flag file left behind");
    assert_eq!(
        http_get(ip, nginx.port, "/"),
        Some((200, "shop v2\n".into()))
    );
    assert_eq!(maintenance_rows(&agent), (0, 1));

    // The controller journal records the steps, with the downtime.
    let id = text(&result["deployment"]).to_string();
    let show = w.ctl.run(&["--output", "json", "show", &id]);
    assert_eq!(show.code, 0, "{}", show.text());
    let record: Value = serde_json::from_str(show.stdout.trim()).expect("show JSON");
    let off_step = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "maintenance-off")
        .unwrap_or_else(|| panic!("no maintenance-off step: {record}"));
    assert_eq!(off_step["state"], "ok", "{record}");
    assert!(
        text(&off_step["detail"]).contains(&format!("downtime {downtime} ms")),
        "{record}"
    );
    drop(nginx);
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Issue 4 part 9: a deployment without migrations switches with zero
/// downtime. A bounded request loop through real nginx runs during the whole
/// deploy; every answer must be a 200 from the old or the new release.
#[test]
fn issue4_deploy_without_migrations_has_zero_failed_requests_through_nginx() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let w = World::new();
    let ip = "127.0.0.123";
    let root = w.path().join("web4/srv/shop");
    let flag = root.join("shared/maintenance.flag");
    let nginx = Nginx::start(w.path(), ip, &root.join("current"), &flag);
    let mut spec = AgentSpec::new("web4", ip);
    spec.apps_toml = format!(
        "{}{}",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", nginx.port)),
        maintenance_toml(&format!("http://{ip}:{}/", nginx.port), "")
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let release = |v: &str| {
        let path = w.path().join(format!("dist/shop-{v}.tar.gz"));
        let index = format!("shop {v}\n");
        artifact(
            &path,
            &[("index.html", index.as_bytes()), ("health", b"ok\n")],
        );
        path
    };
    let v1 = release("v1");
    let plan = w.plan(&agent, Some(("v1", &v1)), "");
    let (run, _) = w.json(&["deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());

    // The load: one client, bounded in count and time, stopped by a flag.
    let stop = Arc::new(AtomicBool::new(false));
    let port = nginx.port;
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst)
                && seen.len() < 50_000
                && started.elapsed() < std::time::Duration::from_secs(60)
            {
                seen.push(http_get(ip, port, "/"));
            }
            seen
        })
    };
    let v2 = release("v2");
    let plan = w.plan(&agent, Some(("v2", &v2)), "");
    let (run, result) = w.json(&["deploy", s(&plan)]);
    // Keep loading a moment after the switch so v2 answers are seen too.
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let seen = load.join().expect("load thread");
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(result["downtime_ms"], 0, "{result}");
    assert_eq!(result["maintenance"], "none", "{result}");
    assert!(seen.len() >= 20, "only {} requests were made", seen.len());
    let failed: Vec<_> = seen
        .iter()
        .filter(|r| !matches!(r, Some((200, body)) if body == "shop v1\n" || body == "shop v2\n"))
        .take(5)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during a zero-downtime deploy, e.g. {failed:?}\nnginx:\n{}",
        seen.iter().filter(|r| !matches!(r, Some((200, _)))).count(),
        seen.len(),
        nginx.logs()
    );
    assert!(
        seen.iter()
            .any(|r| matches!(r, Some((200, b)) if b == "shop v2\n")),
        "the new release answered"
    );
}

/// A combined-format access-log line stamped now with `status`.
fn combined_line(status: u16) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = time::OffsetDateTime::now_utc();
    format!(
        "127.0.0.1 - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"GET /shop HTTP/1.1\" {status} 512 \"-\" \"curl/8.0\"\n",
        t.day(),
        MONTHS[t.month() as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Issue 12, part 12: golive's maintenance is not an outage. A migration
/// deploy goes into maintenance while a request loop runs through real
/// nginx, whose access log fills with the maintenance page's 503s; the
/// critical access-log probe after the switch leaves them out (and says
/// how many) and the release stays live. A 5xx burst outside maintenance
/// still fails the same probe.
#[test]
fn issue12_maintenance_503s_are_not_counted_by_the_access_log_probe() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let w = World::new();
    let ip = "127.0.0.124";
    let root = w.path().join("web5/srv/shop");
    std::fs::create_dir_all(root.join("shared")).expect("shared dir");
    let db = root.join("shared/shop.db");
    rusqlite::Connection::open(&db)
        .and_then(|c| c.execute_batch("CREATE TABLE seen (n INTEGER);"))
        .expect("sqlite db");
    let flag = root.join("shared/maintenance.flag");
    let nginx = Nginx::start(w.path(), ip, &root.join("current"), &flag);
    let access_log = nginx.dir.join("access.log");
    let mut spec = AgentSpec::new("web5", ip);
    spec.apps_toml = format!(
        "{}[[apps.shop.probes]]\nkind = \"access-log\"\nname = \"errors\"\npath = {access_log:?}\n\
         format = \"combined\"\nwindow_secs = 300\nmax_error_rate_percent = 5\nmin_requests = 5\n\
         severity = \"critical\"\n\n\
         [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
         [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n\n{}",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", nginx.port)),
        maintenance_toml(&format!("http://{ip}:{}/", nginx.port), "")
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let v1 = w.path().join("dist/shop-v1.tar.gz");
    artifact(&v1, &[("index.html", b"shop v1\n"), ("health", b"ok\n")]);
    let plan = w.plan(&agent, Some(("v1", &v1)), "");
    let (run, _) = w.json(&["deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}\nnginx:\n{}", run.text(), nginx.logs());

    // Users keep asking through the deployment: bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let port = nginx.port;
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst)
                && seen.len() < 20_000
                && started.elapsed() < Duration::from_secs(60)
            {
                seen.push(http_get(ip, port, "/").map(|a| a.0));
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    // Answers from v1 in seconds of their own before maintenance starts.
    std::thread::sleep(Duration::from_millis(1500));
    let v2 = w.path().join("dist/shop-v2.tar.gz");
    artifact(
        &v2,
        &[
            ("index.html", b"shop v2\n"),
            ("health", b"ok\n"),
            (
                "migrations/0001_orders.up.sql",
                b"CREATE TABLE orders (id INTEGER PRIMARY KEY);",
            ),
            ("migrations/0001_orders.down.sql", b"DROP TABLE orders;"),
        ],
    );
    let plan = w.plan(&agent, Some(("v2", &v2)), "");
    let (run, result) = w.json(&["deploy", s(&plan)]);
    stop.store(true, Ordering::SeqCst);
    let seen = load.join().expect("load thread");
    let maintenance_503s = seen.iter().filter(|s| **s == Some(503)).count();
    assert!(
        maintenance_503s > 0,
        "the loop never saw the maintenance page ({} requests)",
        seen.len()
    );
    assert_eq!(run.code, 0, "{}\nnginx:\n{}", run.text(), nginx.logs());
    assert_eq!(result["state"], "succeeded", "{result}");
    assert_eq!(result["maintenance"], "off", "{result}");
    let errors = run
        .json_lines()
        .into_iter()
        .find(|e| e["event"] == "probe" && e["phase"] == "after" && e["probe"] == "errors")
        .unwrap_or_else(|| panic!("no access-log probe after the switch:\n{}", run.text()));
    assert_eq!(errors["status"], "pass", "{errors}");
    let value = text(&errors["value"]);
    assert!(value.starts_with("0.00 % 5xx of "), "{errors}");
    // Every 503 the loop saw is among the requests left out.
    let apart: usize = value
        .split(", ")
        .find_map(|p| p.strip_suffix(" during golive's maintenance not counted"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no excluded count in {errors}"));
    assert!(
        apart >= maintenance_503s,
        "{apart} < {maintenance_503s}: {errors}"
    );
    assert!(
        text(&errors["message"]).contains("answered during golive's maintenance"),
        "{errors}"
    );
    assert_eq!(
        http_get(ip, nginx.port, "/"),
        Some((200, "shop v2\n".into()))
    );

    // Outside maintenance (past the 1 s margin after it went off, and the
    // whole second that holds it), a burst of 5xx is an outage and fails.
    std::thread::sleep(Duration::from_millis(2100));
    let burst: String = (0..200).map(|_| combined_line(502)).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&access_log)
        .and_then(|mut f| f.write_all(burst.as_bytes()))
        .expect("append to nginx's access log");
    let started = Instant::now();
    let failed = loop {
        let run = w.ctl.run(&["--output", "json", "probe", s(&plan)]);
        if run.code == 1 {
            break run;
        }
        assert_eq!(run.code, 0, "{}", run.text());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the 5xx burst never failed the probe:\n{}\nits lines in the log:\n{}",
            run.text(),
            std::fs::read_to_string(&access_log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(" 502 "))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        failed.stdout.contains("no-go") && failed.stdout.contains("5xx share"),
        "{}",
        failed.text()
    );
    drop(nginx);
}

/// Issue 12, part 12: golive's maintenance page is recognisable by itself,
/// not only by the journal's windows. Maintenance turned on by hand (the
/// flag file written outside golive, so no journaled window) through real
/// nginx and the shipped snippet: its answers carry `X-Golive-Maintenance`,
/// the access log records it (`$sent_http_x_golive_maintenance`), and the
/// critical access-log probe leaves those 503s out and counts them apart,
/// during the maintenance and after it; the http probe that meets the page
/// says it is golive's maintenance page.
#[test]
fn issue12_a_maintenance_page_outside_golives_windows_is_not_an_outage() {
    let w = World::new();
    let ip = "127.0.0.125";
    let root = w.path().join("web6/srv/shop");
    std::fs::create_dir_all(root.join("shared")).expect("shared dir");
    let flag = root.join("shared/maintenance.flag");
    let format = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                  $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time \
                  $sent_http_x_golive_maintenance";
    let access_log = w.path().join("nginx/golive.log");
    let nginx = Nginx::start_full(
        w.path(),
        ip,
        &root.join("current"),
        &flag,
        &format!("log_format golive '{format}';"),
        &format!("access_log {} golive;", s(&access_log)),
    );
    let mut spec = AgentSpec::new("web6", ip);
    spec.apps_toml = format!(
        "{}[[apps.shop.probes]]\nkind = \"access-log\"\nname = \"errors\"\npath = {access_log:?}\n\
         format = {format:?}\nwindow_secs = 300\nmax_error_rate_percent = 5\nmin_requests = 5\n\
         severity = \"critical\"\n\n{}",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", nginx.port)),
        maintenance_toml(&format!("http://{ip}:{}/", nginx.port), "")
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let v1 = w.path().join("dist/shop-v1.tar.gz");
    artifact(&v1, &[("index.html", b"shop v1\n"), ("health", b"ok\n")]);
    let plan = w.plan(&agent, Some(("v1", &v1)), "");
    let (run, _) = w.json(&["deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}\nnginx:\n{}", run.text(), nginx.logs());
    for _ in 0..10 {
        assert_eq!(http_get(ip, nginx.port, "/").map(|a| a.0), Some(200));
    }

    // Maintenance by hand: the flag file, no golive job, no journal row.
    std::fs::write(&flag, "by hand\n").expect("write the flag file");
    let answer = raw_get(ip, nginx.port, "/");
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("X-Golive-Maintenance: 1"),
        "{answer}"
    );
    for _ in 0..40 {
        assert_eq!(http_get(ip, nginx.port, "/").map(|a| a.0), Some(503));
    }
    assert_eq!(
        maintenance_rows(&agent),
        (0, 0),
        "golive never turned it on"
    );

    // Each probe's result in `golivectl probe --output json`; polled while
    // nginx's log reaches the tailer (bounded).
    let probe = |want_code: i32| -> (Value, Value) {
        let started = Instant::now();
        loop {
            let (run, v) = {
                let run = w.ctl.run(&["--output", "json", "probe", s(&plan)]);
                let v = run.json_lines().pop().unwrap_or(Value::Null);
                (run, v)
            };
            let result = |name: &str| {
                v["hosts"][0]["results"]
                    .as_array()
                    .and_then(|a| a.iter().find(|r| r["name"] == name))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            let (errors, health) = (result("errors"), result("health"));
            let counted = text(&errors["value"]).contains("maintenance not counted");
            if run.code == want_code && counted {
                return (errors, health);
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "want exit {want_code} with the maintenance answers left out:\n{}\nlog:\n{}",
                run.text(),
                std::fs::read_to_string(&access_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // In maintenance: the access-log probe passes (the 503s are apart);
    // the http probe cannot verify the app through the page and says so.
    let (errors, health) = probe(1);
    assert_eq!(errors["status"], "pass", "{errors}");
    assert!(
        text(&errors["value"]).starts_with("0.00 % 5xx of "),
        "{errors}"
    );
    let apart: usize = text(&errors["value"])
        .split(", ")
        .find_map(|p| p.strip_suffix(" during golive's maintenance not counted"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no excluded count in {errors}"));
    assert!(apart >= 41, "{errors}");
    assert_eq!(health["status"], "fail", "{health}");
    assert!(
        text(&health["message"]).contains("golive's maintenance page answered"),
        "{health}"
    );

    // Off by hand: the marked 503s stay out of the figures, with no
    // journaled window to say so.
    std::fs::remove_file(&flag).expect("remove the flag file");
    assert_eq!(http_get(ip, nginx.port, "/").map(|a| a.0), Some(200));
    let (errors, health) = probe(0);
    assert_eq!(errors["status"], "pass", "{errors}");
    assert_eq!(health["status"], "pass", "{health}");

    // An app's own 503 (no header) is an outage: appended in the same
    // format with `-` as the marker, they fail the probe.
    let own: String = (0..100)
        .map(|_| combined_line(503).replace('\n', " 0.001 -\n"))
        .collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&access_log)
        .and_then(|mut f| f.write_all(own.as_bytes()))
        .expect("append to nginx's access log");
    let started = Instant::now();
    loop {
        let run = w.ctl.run(&["probe", s(&plan)]);
        if run.code == 1 {
            assert!(run.stdout.contains("5xx share"), "{}", run.text());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the app's own 503s never failed the probe:\n{}",
            run.text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(nginx);
}

/// Issue 12, part 15: the moments after `maintenance off` are sampled too.
/// A deployment with `[deploy] maintenance = true` through real nginx; as
/// the flag file goes, the app's health answers 404 for about 1.5 s (as an
/// app that starts serving late does; `check_url` is `/`, which answers).
/// The agent samples its http probe through maintenance off, so the time
/// is counted in "not answering", beside the maintenance time, and the
/// probes after it see the app back. The rollback of that deployment (a
/// host rollback behind maintenance) counts the same moments.
#[test]
fn issue12_the_app_not_answering_after_maintenance_off_is_counted() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let w = World::new();
    let ip = "127.0.0.126";
    let root = w.path().join("web7/srv/shop");
    let flag = root.join("shared/maintenance.flag");
    let nginx = Nginx::start(w.path(), ip, &root.join("current"), &flag);
    let mut spec = AgentSpec::new("web7", ip);
    spec.apps_toml = format!(
        "{}{}",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", nginx.port)),
        maintenance_toml(&format!("http://{ip}:{}/", nginx.port), "")
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let release = |v: &str| {
        let path = w.path().join(format!("dist/shop-{v}.tar.gz"));
        let index = format!("shop {v}\n");
        artifact(
            &path,
            &[("index.html", index.as_bytes()), ("health", b"ok\n")],
        );
        path
    };
    let v1 = release("v1");
    let plan = w.plan(&agent, Some(("v1", &v1)), "");
    let (run, _) = w.json(&["deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}\nnginx:\n{}", run.text(), nginx.logs());

    // The app: once maintenance has been on and the flag goes, its health
    // is missing for 1.5 s. Bounded: 60 s, then it gives up; the file is
    // always put back.
    let stop = Arc::new(AtomicBool::new(false));
    let late_app = || {
        let (stop, flag) = (Arc::clone(&stop), flag.clone());
        let health = root.join("current/health");
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut seen_on = false;
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                let on = flag.exists();
                if on {
                    seen_on = true;
                } else if seen_on {
                    let aside = health.with_extension("aside");
                    let moved = std::fs::rename(&health, &aside).is_ok();
                    std::thread::sleep(Duration::from_millis(1500));
                    if moved {
                        std::fs::rename(&aside, &health).expect("put health back");
                    }
                    return moved;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            false
        })
    };
    let app = late_app();
    let v2 = release("v2");
    let plan = w.plan(&agent, Some(("v2", &v2)), "[deploy]\nmaintenance = true\n");
    let (run, result) = w.json(&["deploy", s(&plan)]);
    stop.store(true, Ordering::SeqCst);
    let moved = app.join().expect("app thread");
    assert!(moved, "the app thread never saw maintenance go off");
    assert_eq!(run.code, 0, "{}\nnginx:\n{}", run.text(), nginx.logs());
    assert_eq!(result["maintenance"], "off", "{result}");
    let down = result["unavailable_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no unavailable_ms: {result}"));
    assert!((1000..10_000).contains(&down), "{result}\n{}", run.text());
    let downtime = result["downtime_ms"].as_u64().expect("downtime_ms");
    assert!(
        text(&result["message"]).contains(&format!(
            "downtime {down} ms not answering (as users see it), {downtime} ms in maintenance"
        )),
        "{result}"
    );
    // The maintenance-off step says what it measured.
    let off = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "step" && v["step"] == "maintenance-off")
        .unwrap_or_else(|| panic!("no maintenance-off step:\n{}", run.text()));
    assert!(
        text(&off["detail"]).contains(&format!("not answering {down} ms")),
        "{off}"
    );
    assert_eq!(
        http_get(ip, nginx.port, "/health"),
        Some((200, "ok\n".into()))
    );

    // The rollback of that deployment goes behind maintenance too (its
    // rollback point says so): the agent's host rollback counts the same
    // moments after its maintenance off.
    stop.store(false, Ordering::SeqCst);
    let app = late_app();
    let id = text(&result["deployment"]).to_string();
    let (run, result) = w.json(&["rollback", &id]);
    stop.store(true, Ordering::SeqCst);
    let moved = app.join().expect("app thread");
    assert!(
        moved,
        "the app thread never saw maintenance go off:\n{}",
        run.text()
    );
    assert_eq!(run.code, 0, "{}\nnginx:\n{}", run.text(), nginx.logs());
    let down = result["unavailable_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no unavailable_ms: {result}"));
    assert!((1000..10_000).contains(&down), "{result}\n{}", run.text());
    assert_eq!(
        http_get(ip, nginx.port, "/"),
        Some((200, "shop v1\n".into()))
    );
    drop(nginx);
}

/// `maintenance off` whose check_url does not answer 2xx keeps maintenance
/// ON in the journal and puts the flag file back (the page and the journal
/// agree, failing safe), saying so; it used to leave the flag removed.
#[test]
fn a_failed_check_after_off_puts_the_flag_back() {
    let w = World::new();
    let ip = "127.0.0.127";
    let (plain, root, _, agent) = w.plain_site_agent("web6", ip);
    let plan = w.plan(&agent, None, "");
    // `on` fails its check (200, not 503) and stays on, flag written.
    let on = w.ctl.run(&["maintenance", "on", s(&plan)]);
    assert_eq!(on.code, 1, "{}", on.text());
    let flag = root.join("shared/maintenance.flag");
    let body = std::fs::read(&flag).expect("flag written");

    // Nothing answers at the check URL any more: `off` fails its check.
    drop(plain);
    let off = w.ctl.run(&["maintenance", "off", s(&plan)]);
    assert_eq!(off.code, 1, "{}", off.text());
    assert!(off.text().contains("did not answer 2xx"), "{}", off.text());
    assert!(off.text().contains("is back"), "{}", off.text());
    assert_eq!(std::fs::read(&flag).expect("flag back"), body);
    assert_eq!(maintenance_rows(&agent), (1, 0));
}
