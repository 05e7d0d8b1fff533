//! Issue 16, part 9: docs/walkthrough-shared-hosting.md stays true. Its
//! fenced blocks marked `walkthrough=controller`, `walkthrough=host` and
//! `walkthrough=web` run in order, word for word but for the `{{...}}`
//! placeholders the doc lists: controller blocks in one directory with the
//! built binaries on PATH; host blocks as a fresh non-root user made here,
//! over SSH to a private sshd ([`TestSshd`], no TCP forwarding, as on many
//! shared hosts); the web block (PHP's built-in server) as that user,
//! stopped by the test. MariaDB is a real server ([`TestMariadb`]) with a
//! user `shop` as a hosting panel makes it.
//!
//! Everything started is stopped on every path out: the web server and
//! sshd are killed on drop; the user's processes (the agent that
//! `ensure-running` detached, bridges) are killed by uid, their crontab
//! and the user removed.
//! Loopback 127.0.0.228 (sshd) belongs to this module.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use golive_tests::db::TestMariadb;
use golive_tests::sshd::TestSshd;
use golive_tests::*;

const DOC: &str = include_str!("../../../docs/walkthrough-shared-hosting.md");

/// The marked blocks of the doc, in order: (kind, text).
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        match &mut current {
            None => {
                if let Some(kind) = line
                    .strip_prefix("```sh walkthrough=")
                    .map(|k| k.trim().to_string())
                {
                    current = Some((kind, String::new()));
                }
            }
            Some((_, text)) => {
                if line.trim_start().starts_with("```") {
                    found.extend(current.take());
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "an unclosed walkthrough block");
    found
}

/// A throw-away login account, removed with its processes, crontab and
/// home on drop.
struct HostUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl HostUser {
    fn create() -> HostUser {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the walkthrough test makes a user (useradd), as root, as the test command runs"
        );
        let name = format!("golivewt{}", std::process::id());
        // `-p '*'`: no password, but not locked (sshd refuses a locked
        // account even for a key).
        let run = run_bounded(
            {
                let mut c = Command::new("useradd");
                c.args(["--create-home", "--shell", "/bin/bash", "-p", "*", &name]);
                c
            },
            Duration::from_secs(30),
        );
        assert_eq!(run.code, 0, "useradd {name}: {}", run.text());
        let user = nix::unistd::User::from_name(&name)
            .expect("look up the new user")
            .expect("the new user exists");
        HostUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        }
    }

    /// Pids of this user's processes, from /proc.
    fn processes(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
                continue;
            };
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok());
            if uid == Some(self.uid) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for HostUser {
    fn drop(&mut self) {
        // Every process of this throw-away uid is one the test started
        // (the detached agent, ssh sessions' bridges): ended, bounded.
        let started = Instant::now();
        loop {
            let pids = self.processes();
            if pids.is_empty() || started.elapsed() > Duration::from_secs(10) {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for args in [
            vec!["crontab", "-r", "-u", &self.name],
            vec!["userdel", "--remove", &self.name],
        ] {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            let _ = run_bounded(c, Duration::from_secs(30));
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn issue16_the_shared_hosting_walkthrough_runs_word_for_word_as_a_non_root_user() {
    let blocks = blocks(DOC);
    let kinds: Vec<&str> = blocks.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        kinds.contains(&"controller") && kinds.contains(&"host") && kinds.contains(&"web"),
        "the doc lost its marked blocks: {kinds:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    // sshd reads authorized_keys as the host user, under this directory.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod test dir");
    }
    // Drop order (fields below): web, user (and its processes), sshd, db.
    let db = TestMariadb::start(dir.path());
    // What the hosting panel does: a database user for the site.
    let db_password = "walkthrough-Pw-4711";
    db.sql_in(
        "",
        &format!(
            "CREATE USER 'shop'@'127.0.0.1' IDENTIFIED BY '{db_password}'; \
             GRANT ALL ON shop.* TO 'shop'@'127.0.0.1';"
        ),
    );
    let ip = "127.0.0.228";
    let user = HostUser::create();
    let sshd = TestSshd::start_for(dir.path(), ip, false, Some(&user.name));
    let ssh_config = dir.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host {ip}\n  Port {}\n{}",
            sshd.port,
            std::fs::read_to_string(&sshd.client_config).expect("client config")
        ),
    )
    .expect("ssh config");

    let bin_dir = bin("golive-agent").parent().expect("bin dir").to_path_buf();
    assert!(bin("golivectl").is_file());
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let agent_port = free_port("127.0.0.1");
    let web_port = free_port("127.0.0.1");
    let fill = |text: &str| -> String {
        let text = text
            .replace("{{BIN}}", s(&bin_dir))
            .replace("{{SRC}}", s(&src))
            .replace("{{SSH}}", &format!("ssh -F {}", s(&ssh_config)))
            .replace("{{SCP}}", &format!("scp -F {}", s(&ssh_config)))
            .replace("{{LOGIN}}", &format!("{}@{ip}", user.name))
            .replace("{{AGENT_PORT}}", &agent_port.to_string())
            .replace("{{DB_PORT}}", &db.port().to_string())
            .replace("{{DB_PASSWORD}}", db_password)
            .replace("{{WEB_PORT}}", &web_port.to_string())
            .replace("{{SITE}}", &format!("http://127.0.0.1:{web_port}"));
        assert!(
            !text.contains("{{"),
            "a placeholder the test does not fill:\n{text}"
        );
        text
    };

    let ctl_dir = dir.path().join("controller");
    std::fs::create_dir_all(&ctl_dir).expect("controller dir");
    let path = format!(
        "{}:{}",
        s(&bin_dir),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut web: Option<KillOnDrop> = None;
    let mut outputs = Vec::new();
    for (n, (kind, text)) in blocks.iter().enumerate() {
        let text = fill(text);
        let script = dir.path().join(format!("block-{n}.sh"));
        std::fs::write(&script, &text).expect("block script");
        let run = match kind.as_str() {
            "controller" => {
                let mut c = Command::new("bash");
                c.args(["-euo", "pipefail"])
                    .arg(&script)
                    .current_dir(&ctl_dir)
                    .env("PATH", &path)
                    .env("GOLIVE_STATE_DIR", ctl_dir.join("state"))
                    .env("TMPDIR", dir.path());
                run_bounded(c, Duration::from_secs(240))
            }
            "host" => {
                // An SSH session on the host, the block on its stdin.
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!(
                        "exec ssh -F {} {}@{ip} 'bash -euo pipefail -s' < {}",
                        s(&ssh_config),
                        user.name,
                        s(&script)
                    ))
                    .current_dir(&ctl_dir);
                run_bounded(c, Duration::from_secs(120))
            }
            "web" => {
                use std::os::unix::process::CommandExt;
                let child = Command::new("bash")
                    .arg("-c")
                    .arg(format!("exec {}", text.trim()))
                    .current_dir(&user.home)
                    .env_clear()
                    .env("HOME", &user.home)
                    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                    .uid(user.uid)
                    .gid(user.gid)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join("php.log")).expect("php log"))
                    .spawn()
                    .expect("start the web block");
                web = Some(KillOnDrop(child));
                let started = Instant::now();
                while std::net::TcpStream::connect(("127.0.0.1", web_port)).is_err() {
                    assert!(
                        started.elapsed() < Duration::from_secs(15),
                        "the web block did not listen within 15 s: {}",
                        std::fs::read_to_string(dir.path().join("php.log")).unwrap_or_default()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                outputs.push(String::new());
                continue;
            }
            other => panic!("unknown walkthrough block kind {other:?}"),
        };
        assert_eq!(
            run.code,
            0,
            "walkthrough block {n} ({kind}) failed:\n{text}\n---\n{}\n--- sshd:\n{}",
            run.text(),
            sshd.log_text()
        );
        outputs.push(run.stdout);
    }

    let said = |what: &str| {
        outputs
            .iter()
            .position(|o| o.contains(what))
            .unwrap_or_else(|| {
                panic!(
                    "{what:?} in no block's output:\n{}",
                    outputs.join("\n---\n")
                )
            })
    };
    // Cron mode: the lines are in the user's crontab and the agent was
    // started detached, as the user, not root.
    said("golive-agent ensure-running --config");
    let started = &outputs[said("started, pid ")];
    let pid: i32 = started
        .split("started, pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .expect("a pid after `started, pid`");
    assert!(
        user.processes().contains(&pid),
        "the agent (pid {pid}) does not run as {}",
        user.name
    );
    // The first deployment, then the one with a migration: backup,
    // maintenance, probes and the gate, and the site serving each.
    let v1 = said("shop v1: 2 orders");
    let v2 = said("shop v2: 2 orders");
    assert!(v1 < v2);
    let deploy_v2 = &outputs[v2];
    for step in [
        "maintenance-on: ok",
        "backup: ok",
        "migrate: ok",
        "maintenance-off: ok",
        "gate: ok",
    ] {
        assert!(
            deploy_v2.contains(step),
            "{step:?} not in the v2 deploy:\n{deploy_v2}"
        );
    }
    assert!(
        deploy_v2.contains("succeeded: release shop-v2 is live"),
        "{deploy_v2}"
    );
    let note = db.sql("SHOW COLUMNS FROM orders LIKE 'note'");
    assert!(note.contains("note"), "0002_note did not run: {note:?}");
    let backups = user.home.join(".local/state/golive-agent/backups/shop");
    let dumps = std::fs::read_dir(&backups)
        .map(|d| d.count())
        .unwrap_or_default();
    assert!(dumps >= 2, "{dumps} backups in {}", backups.display());

    drop(web);
    drop(user);
    drop(sshd);
    drop(db);
}
