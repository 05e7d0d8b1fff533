//! Issue 16: where the agent lives without root, and how it is stopped and
//! reloaded. Cron mode (`golive-agent ensure-running`) as a plain user with
//! its state in that user's home, and started by the real cron daemon from
//! the shipped crontab; SIGHUP and file-change reloads of the config;
//! SIGTERM's drain of running jobs. Addresses 127.0.16.1-10.
//!
//! The tests run as root: the cron user is made with `useradd` for the
//! test and removed (its agent killed by pid first) when the test ends,
//! even on failure.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use golive_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

/// A user made for one test, with its home under the test's directory;
/// its agent is killed and the user removed on drop.
struct CronUser {
    name: String,
    home: PathBuf,
    uid: u32,
    gid: u32,
}

impl CronUser {
    fn new(dir: &Path, tag: &str) -> CronUser {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test makes a user with useradd: the tests run as root"
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = format!("glc{tag}{}", std::process::id() % 100_000);
        let home = dir.join("home").join(&name);
        std::fs::create_dir_all(home.parent().unwrap()).unwrap();
        let mut cmd = Command::new("useradd");
        cmd.args([
            "--create-home",
            "--home-dir",
            s(&home),
            "--shell",
            "/bin/sh",
        ])
        .arg(&name);
        let r = run_bounded(cmd, LIMIT);
        assert_eq!(r.code, 0, "useradd {name}: {}", r.text());
        let u = nix::unistd::User::from_name(&name).unwrap().unwrap();
        CronUser {
            name,
            home,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }

    /// `golive-agent ARGS` as this user, in its home, as cron runs it.
    fn agent(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("golive-agent"));
        cmd.args(args)
            .current_dir(&self.home)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/bin:/bin")
            .uid(self.uid)
            .gid(self.gid);
        cmd
    }

    fn state(&self) -> PathBuf {
        self.home.join("state")
    }

    /// The pid in the state directory's lock, when that process is alive.
    fn agent_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.state().join("agent.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .to_string()
        };
        // A killed multi-threaded process shows its leader as a zombie while
        // the other threads still exit, and its files (the lock) are closed
        // only with the last: dead is a zombie with no other thread.
        let threads = field("Threads:")
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u32>().ok());
        let dead = field("State:").contains("zombie") && threads.is_some_and(|n| n <= 1);
        (!dead).then_some(pid)
    }

    fn kill9(&self) {
        if let Some(pid) = self.agent_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let started = Instant::now();
            while self.agent_pid() == Some(pid) && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for CronUser {
    fn drop(&mut self) {
        self.kill9();
        let mut cmd = Command::new("userdel");
        cmd.arg(&self.name);
        let _ = cmd.status();
    }
}

/// Certificates and a config in the user's home, owned by the user.
fn cron_setup(d: &Path, user: &CronUser, ip: &str) -> (TestPki, PathBuf, (PathBuf, PathBuf)) {
    let pki = TestPki::new(d);
    let (cert, key) = pki.agent("cron", &[ip, "localhost"]);
    let operator = pki.operator("alice", "operator");
    let tls = user.home.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    for f in [&cert, &key, &pki.ca(), &pki.revoked_list()] {
        std::fs::copy(f, tls.join(f.file_name().unwrap())).unwrap();
    }
    let config = user.home.join("agent.toml");
    let toml = format!(
        "[agent]\nname = \"cron\"\nlisten = \"{ip}:0\"\nstate_dir = {state:?}\n\n\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nrevoked = {revoked:?}\n\n{apps}",
        state = user.state(),
        ca = tls.join("ca.crt"),
        cert = tls.join("cron.crt"),
        key = tls.join("cron.key"),
        revoked = tls.join("revoked.txt"),
        apps = app_toml(
            "shop",
            &user.home.join("srv/shop"),
            &format!("http://{ip}:9/health")
        ),
    );
    std::fs::write(&config, toml).unwrap();
    chown_tree(&user.home, (user.uid, user.gid));
    (pki, config, operator)
}

/// `golivectl status` of `app` against the address in `state/agent.addr`.
fn status(d: &Path, pki: &TestPki, op: &(PathBuf, PathBuf), state: &Path, app: &str) -> Run {
    let addr = std::fs::read_to_string(state.join("agent.addr")).expect("agent.addr");
    let plan = d.join(format!("status-{app}.toml"));
    std::fs::write(
        &plan,
        format!(
            "app = {app:?}\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n\
             [[hosts]]\nname = \"cron\"\naddress = \"{}\"\n",
            pki.ca(),
            op.0,
            op.1,
            addr.trim()
        ),
    )
    .unwrap();
    Ctl::new(d).run(&["status", s(&plan)])
}

/// Cron mode as a plain user: the first `ensure-running` starts the agent
/// detached (new session, owned by the user), the next says it runs and
/// starts nothing, two at once start one, and after a kill -9 the next one
/// starts it again and it answers over mutual TLS. A bad config is exit 2
/// with check-config's errors, and nothing starts.
#[test]
fn issue16_ensure_running_keeps_one_agent_as_a_plain_user() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let user = CronUser::new(d, "a");
    let (pki, config, op) = cron_setup(d, &user, "127.0.16.1");
    let ensure = || {
        run_bounded(
            user.agent(&["ensure-running", "--config", s(&config)]),
            LIMIT,
        )
    };

    let first = ensure();
    assert_eq!(first.code, 0, "{}", first.text());
    assert!(first.stdout.contains("started, pid"), "{}", first.text());
    let pid = user.agent_pid().expect("an agent holds the state lock");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "its own session (setsid): {stat}"
    );
    let status_file = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status_file.contains(&format!("Uid:\t{}", user.uid)),
        "runs as the user: {status_file}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(),
        Path::new("/dev/null")
    );
    let log = user.state().join("agent.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("listening on 127.0.16.1:"),
        "the log file is written"
    );

    let second = ensure();
    assert_eq!(second.code, 0, "{}", second.text());
    assert!(
        second
            .stdout
            .contains(&format!("already running, pid {pid}")),
        "{}",
        second.text()
    );
    assert_eq!(user.agent_pid(), Some(pid), "started nothing");
    let st = status(d, &pki, &op, &user.state(), "shop");
    assert_eq!(st.code, 0, "{}", st.text());

    // kill -9, then two at the same moment: one starts it, one finds it.
    user.kill9();
    assert_eq!(user.agent_pid(), None);
    let spawn = || {
        let mut c = user.agent(&["ensure-running", "--config", s(&config)]);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        KillOnDrop(c.spawn().unwrap())
    };
    let (a, b) = (spawn(), spawn());
    let mut outs = Vec::new();
    for mut k in [a, b] {
        let started = Instant::now();
        let status = loop {
            if let Some(st) = k.0.try_wait().unwrap() {
                break st;
            }
            assert!(started.elapsed() < LIMIT, "ensure-running hung");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        std::io::Read::read_to_string(k.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert!(status.success(), "{out}");
        outs.push(out);
    }
    let started = outs.iter().filter(|o| o.contains("started, pid")).count();
    let found = outs
        .iter()
        .filter(|o| o.contains("already running"))
        .count();
    assert_eq!((started, found), (1, 1), "{outs:?}");
    let new_pid = user.agent_pid().expect("restarted");
    assert_ne!(new_pid, pid);
    let st = status(d, &pki, &op, &user.state(), "shop");
    assert_eq!(
        st.code,
        0,
        "answers over mTLS after the restart: {}",
        st.text()
    );
    assert!(st.stdout.contains("shop"), "{}", st.text());

    // A bad config: check-config's errors, exit 2, nothing started.
    user.kill9();
    let bad = user.home.join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("name = \"cron\"", "nmae = \"cron\""),
    )
    .unwrap();
    chown_tree(&bad, (user.uid, user.gid));
    let r = run_bounded(user.agent(&["ensure-running", "--config", s(&bad)]), LIMIT);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr.contains("key `agent.nmae`") && r.stderr.contains("fix the config"),
        "{}",
        r.text()
    );
    assert_eq!(user.agent_pid(), None, "a bad config starts nothing");
}

/// The cron-mode log file rotates at its bound and keeps the asked number
/// of old files; every reload (SIGHUP) writes a line to it.
#[test]
fn issue16_the_log_file_rotates_at_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let user = CronUser::new(d, "b");
    let (_pki, config, _op) = cron_setup(d, &user, "127.0.16.2");
    let r = run_bounded(
        user.agent(&[
            "ensure-running",
            "--config",
            s(&config),
            "--log-max-bytes",
            "1500",
            "--log-keep",
            "2",
        ]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{}", r.text());
    let pid = nix::unistd::Pid::from_raw(user.agent_pid().expect("running"));
    let log = user.state().join("agent.log");
    let old = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    let started = Instant::now();
    while !old(2).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no second rotation after 30 s of reloads"
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // A few more, so the oldest would be dropped.
    for _ in 0..20 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_millis(300));
    for p in [log.clone(), old(1), old(2)] {
        let meta = std::fs::metadata(&p).unwrap();
        assert!(
            meta.len() <= 1500,
            "{} is {} bytes, past the bound",
            p.display(),
            meta.len()
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", p.display());
    }
    assert!(!old(3).exists(), "keeps two old files");
    let text = std::fs::read_to_string(old(1)).unwrap();
    assert!(text.contains("reloaded (SIGHUP)"), "{text}");
}

/// A running agent's config is reloaded on SIGHUP and when the file
/// changes: a new app is served at once; a bad file is refused, logged
/// with the file and the problem, and the config in force stays; a changed
/// listen address is named as waiting for a restart.
#[test]
fn issue16_sighup_and_file_change_reload_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let op = pki.operator("alice", "operator");
    let ip = "127.0.16.3";
    let mut spec = AgentSpec::new("web", ip);
    spec.apps_toml = app_toml("shop", &d.join("srv/shop"), &format!("http://{ip}:9/h"));
    let mut agent = AgentProc::start(d, &pki, &spec);
    let pid = nix::unistd::Pid::from_raw(agent.pid().unwrap() as i32);
    let good = std::fs::read_to_string(&agent.config).unwrap();
    let blog = app_toml("blog", &d.join("srv/blog"), &format!("http://{ip}:9/h"));

    let before = status(d, &pki, &op, &agent.state_dir, "shop");
    assert_eq!(before.code, 0, "{}", before.text());
    assert!(
        !before.stdout.contains("blog:"),
        "no blog yet: {}",
        before.text()
    );

    // SIGHUP with a valid changed config (written elsewhere and renamed in
    // place, so the file watch sees one change).
    let write = |text: &str| {
        let tmp = agent.config.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &agent.config).unwrap();
    };
    write(&format!("{good}{blog}"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let wait_log = |needle: &str| {
        let started = Instant::now();
        while !agent.log_text().contains(needle) {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{needle:?} not logged:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_log("apps added [\"blog\"]");
    let after = status(d, &pki, &op, &agent.state_dir, "blog");
    assert_eq!(after.code, 0, "{}", after.text());
    assert!(
        after.stdout.contains("blog: current (none)"),
        "{}",
        after.text()
    );

    // An invalid one: refused, loudly, and the old config stays.
    write(&format!(
        "{good}{blog}[apps.bad]\nroot = \"/srv/bad\"\nrooot = 1\n"
    ));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_log("NOT reloaded");
    let log = agent.log_text();
    assert!(
        log.contains(&format!("config {} NOT reloaded", agent.config.display()))
            && log.contains("key `apps.bad.rooot`"),
        "{log}"
    );
    let still = status(d, &pki, &op, &agent.state_dir, "blog");
    assert_eq!(still.code, 0, "{}", still.text());
    assert!(
        still.stdout.contains("blog: current") && !still.stdout.contains("bad:"),
        "the config in force stayed: {}",
        still.text()
    );

    // No signal: a change of the file is enough. Removing blog and moving
    // the listen address: blog goes, the address waits for a restart.
    write(&good.replace(&format!("{ip}:0"), &format!("{ip}:1")));
    wait_log("apps removed [\"blog\"]");
    wait_log("agent.listen changed and take(s) effect only at the next restart");
    let shop = status(d, &pki, &op, &agent.state_dir, "shop");
    assert_eq!(
        shop.code,
        0,
        "still listening where it was: {}",
        shop.text()
    );
    assert!(!shop.stdout.contains("blog:"), "{}", shop.text());
    assert!(agent.stop(), "stopped by SIGTERM");
}

/// The id and state of the newest job in an agent's journal.
fn newest_job(agent: &AgentProc) -> Option<(i64, String)> {
    agent
        .journal()
        .query_row(
            "SELECT id, state FROM jobs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()
}

/// SIGTERM while a declared command runs: a job that finishes within
/// `limits.stop_drain_secs` is recorded as it ended; one that does not is
/// marked interrupted (with its Finished event) and its program ended.
#[test]
fn issue16_sigterm_drains_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let op = pki.operator("alice", "operator");
    let ip = "127.0.16.4";
    let pidfile = d.join("slow.pid");
    let mut spec = AgentSpec::new("web", ip);
    spec.limits_toml = "stop_drain_secs = 4\n".into();
    // One app each: a `golivectl run` cut off by the stop keeps its app's
    // lock until the lease expires.
    spec.apps_toml = format!(
        "{}[apps.shop.commands.short]\ncmd = [\"sleep\", \"2\"]\n\n{}\
         [apps.blog.commands.slow]\ncmd = [\"sh\", \"-c\", \"echo $$ > {pid}; exec sleep 60\"]\n\
         timeout_secs = 120\n",
        app_toml("shop", &d.join("srv/shop"), &format!("http://{ip}:9/h")),
        app_toml("blog", &d.join("srv/blog"), &format!("http://{ip}:9/h")),
        pid = s(&pidfile)
    );
    live_release(&d.join("srv/shop"), "v1");
    live_release(&d.join("srv/blog"), "v1");
    let mut agent = AgentProc::start(d, &pki, &spec);

    for (app, command, want) in [
        ("shop", "short", "succeeded"),
        ("blog", "slow", "interrupted"),
    ] {
        let plan = d.join(format!("run-{app}.toml"));
        write_plan(&plan, &pki, &op, app, None, &[&agent]);
        let before = newest_job(&agent).map(|j| j.0);
        let run = KillOnDrop(
            Ctl::new(d)
                .cmd(&["run", s(&plan), command])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let started = Instant::now();
        let id = loop {
            if let Some((id, state)) = newest_job(&agent)
                && Some(id) != before
                && state == "running"
            {
                break id;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the {command} job never ran:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stopping = Instant::now();
        assert!(
            agent.stop(),
            "the agent did not end by itself after SIGTERM ({command}):\n{}",
            agent.log_text()
        );
        assert!(stopping.elapsed() < Duration::from_secs(10));
        drop(run);
        let (state, error): (String, Option<String>) = agent
            .journal()
            .query_row("SELECT state, error FROM jobs WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(state, want, "{command}: {error:?}\n{}", agent.log_text());
        let last: String = agent
            .journal()
            .query_row(
                "SELECT kind FROM events WHERE job_id = ?1 ORDER BY seq DESC LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            last.contains("Finished") && last.to_lowercase().contains(want),
            "{command}: last event {last}"
        );
        if command == "slow" {
            assert!(
                error.unwrap_or_default().contains("stop_drain_secs"),
                "says why"
            );
            let pid = std::fs::read_to_string(&pidfile).unwrap();
            assert!(
                !Path::new(&format!("/proc/{}", pid.trim())).exists(),
                "the slow command was ended"
            );
            assert!(agent.log_text().contains("marked interrupted"));
        }
        agent.spawn();
    }
}

/// `golivectl completions bash` is a script bash parses and that registers
/// the completion; `golivectl man` renders golivectl(1), and `--dir`
/// writes one page per subcommand.
#[test]
fn issue16_completions_and_man_pages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctl = Ctl::new(d);
    let r = ctl.run(&["completions", "bash"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.len() > 1000, "{}", r.text());
    let script = d.join("golivectl.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg("set -e; source \"$0\"; complete -p golivectl")
        .arg(&script);
    let b = run_bounded(bash, LIMIT);
    assert_eq!(b.code, 0, "bash could not load it: {}", b.text());
    assert!(b.stdout.contains("-F _golivectl"), "{}", b.text());
    assert!(r.stdout.contains("deploy"), "{}", r.text());
    for shell in ["zsh", "fish"] {
        let r = ctl.run(&["completions", shell]);
        assert!(r.code == 0 && !r.stdout.is_empty(), "{shell}: {}", r.text());
    }
    let bad = ctl.run(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2, "{}", bad.text());

    let man = ctl.run(&["man"]);
    assert_eq!(man.code, 0, "{}", man.text());
    assert!(man.stdout.contains(".TH golivectl 1"), "{}", man.text());
    let pages = d.join("man");
    let r = ctl.run(&["man", "--dir", s(&pages)]);
    assert_eq!(r.code, 0, "{}", r.text());
    for page in [
        "golivectl.1",
        "golivectl-deploy.1",
        "golivectl-backup-restore.1",
    ] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap();
        assert!(text.contains(".TH golivectl"), "{page}");
    }
}

/// `packaging/install.sh` as a plain user: binaries, completion, man pages
/// and a config into ~/.local and ~/.config, the crontab lines printed; a
/// second run changes nothing and keeps the user's config.
#[test]
fn issue16_install_sh_is_a_non_root_idempotent_install() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let user = CronUser::new(d, "i");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/install.sh");
    let bins = bin("golive-agent").parent().unwrap().to_path_buf();
    let install = || {
        let mut cmd = Command::new("sh");
        cmd.arg(&script)
            .args(["--bin-dir", s(&bins)])
            .current_dir(&user.home)
            .env_clear()
            .env("HOME", &user.home)
            .env("PATH", "/usr/bin:/bin")
            .uid(user.uid)
            .gid(user.gid);
        run_bounded(cmd, LIMIT)
    };
    let first = install();
    assert_eq!(first.code, 0, "{}", first.text());
    let local = user.home.join(".local");
    for f in [
        "bin/golive-agent",
        "bin/golivectl",
        "share/bash-completion/completions/golivectl",
        "share/man/man1/golivectl.1",
        "share/man/man1/golivectl-deploy.1",
    ] {
        let meta = std::fs::metadata(local.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(
            nix::unistd::Uid::from_raw(std::os::unix::fs::MetadataExt::uid(&meta)).as_raw(),
            user.uid,
            "{f}"
        );
    }
    let config = user.home.join(".config/golive/agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!(
            "state_dir = \"{}/.local/state/golive-agent\"",
            user.home.display()
        )),
        "{text}"
    );
    let cron = format!(
        "* * * * * {}/bin/golive-agent ensure-running --config {}",
        local.display(),
        config.display()
    );
    assert!(first.stdout.contains(&cron), "{}", first.text());
    assert!(first.stdout.contains("@reboot"), "{}", first.text());
    let version = run_bounded(user.agent(&["--version"]), LIMIT);
    assert!(
        version.stdout.starts_with("golive-agent "),
        "{}",
        version.text()
    );

    std::fs::write(&config, format!("{text}# mine\n")).unwrap();
    let second = install();
    assert_eq!(second.code, 0, "{}", second.text());
    assert!(
        second.stdout.contains("nothing changed"),
        "{}",
        second.text()
    );
    assert!(!second.stdout.contains("installed  "), "{}", second.text());
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .ends_with("# mine\n")
    );
}

/// The user's crontab is removed when the test ends, even on failure.
struct Crontab<'a>(&'a CronUser);

impl Drop for Crontab<'_> {
    fn drop(&mut self) {
        let _ = Command::new("crontab")
            .args(["-r", "-u", &self.0.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The shipped crontab (packaging/cron/crontab) works under the real cron
/// daemon: installed as the user's crontab with the paths install.sh uses,
/// cron's `@reboot` line starts the agent as that user, detached, and it
/// answers over mutual TLS. cron runs in a private mount namespace with its
/// own /run, so its "already booted" marker and pid file are the test's,
/// and `@reboot` fires at the daemon's start. The every-minute line is the
/// same command; the test does not wait a minute for it (kill -9 and the
/// next ensure-running are tested above).
#[test]
fn issue16_the_cron_daemon_starts_the_agent_from_the_shipped_crontab() {
    assert!(
        Path::new("/usr/sbin/cron").exists(),
        "the cron daemon is not installed: scripts/test installs it (apt-get install cron)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let user = CronUser::new(d, "r");
    let (pki, config, op) = cron_setup(d, &user, "127.0.16.10");
    // Where install.sh puts things, which the shipped lines name.
    let local_bin = user.home.join(".local/bin");
    let conf_dir = user.home.join(".config/golive");
    for dir in [
        &local_bin,
        &conf_dir,
        &user.home.join(".local/state/golive-agent"),
    ] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::copy(bin("golive-agent"), local_bin.join("golive-agent")).unwrap();
    std::fs::copy(&config, conf_dir.join("agent.toml")).unwrap();
    chown_tree(&user.home, (user.uid, user.gid));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/cron/crontab");
    let mut cmd = Command::new("crontab");
    cmd.args(["-u", &user.name]).arg(&shipped);
    let installed = run_bounded(cmd, LIMIT);
    let _crontab = Crontab(&user);
    assert_eq!(installed.code, 0, "crontab -u: {}", installed.text());
    assert_eq!(user.agent_pid(), None);

    let mut cron = Command::new("unshare");
    cron.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /run && exec cron -f",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let _cron = KillOnDrop(cron.spawn().expect("unshare ... cron -f"));

    let started = Instant::now();
    let pid = loop {
        if let Some(pid) = user.agent_pid() {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cron's @reboot line did not start the agent within 30 s; its stderr: {:?}",
            std::fs::read_to_string(
                user.home
                    .join(".local/state/golive-agent/ensure-running.err")
            )
            .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let status_file = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status_file.contains(&format!("Uid:\t{}", user.uid)),
        "runs as the user: {status_file}"
    );
    // The agent writes its address once it listens: bounded wait.
    let started = Instant::now();
    while !user.state().join("agent.addr").exists() {
        assert!(started.elapsed() < LIMIT, "the agent never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = status(d, &pki, &op, &user.state(), "shop");
    assert_eq!(st.code, 0, "answers over mTLS: {}", st.text());
    assert!(st.stdout.contains("shop"), "{}", st.text());
}
