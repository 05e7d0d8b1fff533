//! Issue 16: the agent as a systemd service. The shipped unit passes
//! `systemd-analyze verify` and `systemd-analyze security` rates it below a
//! measured bound; the real agent speaks the `Type=notify` protocol to a
//! NOTIFY_SOCKET the test binds (READY once it listens, WATCHDOG pings at
//! half of WATCHDOG_USEC, RELOADING then READY on SIGHUP, STOPPING on
//! SIGTERM). Addresses 127.0.16.20-29.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use golive_tests::*;

const LIMIT: Duration = Duration::from_secs(60);
/// The exposure `systemd-analyze security --offline=yes` gives the shipped
/// unit on systemd 252: 1.4 ("OK"). The bound leaves room for a newer
/// systemd weighing a setting differently, not for a lost hardening line.
const MAX_EXPOSURE: f64 = 2.0;

fn unit_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/golive-agent.service")
}

/// The shipped unit with its binary paths pointing at the built agent
/// (verify checks that ExecStart's program exists), in `dir`.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit_source()).expect("read the shipped unit");
    assert!(
        text.contains("/usr/local/bin/golive-agent "),
        "the unit runs /usr/local/bin/golive-agent"
    );
    let agent = bin("golive-agent");
    let text = text.replace(
        "/usr/local/bin/golive-agent",
        agent.to_str().expect("utf-8"),
    );
    let path = dir.join("golive-agent.service");
    std::fs::write(&path, text).expect("write the unit copy");
    path
}

fn analyze(args: &[&str], unit: &Path) -> Run {
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(args).arg(unit);
    run_bounded(cmd, LIMIT)
}

#[test]
fn issue16_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let r = analyze(&["verify", "--man=no"], &unit);
    assert_eq!(r.code, 0, "systemd-analyze verify: {}", r.text());
    // verify exits 0 on an unknown key or a bad value and only says so:
    // any line about the unit is a problem.
    let out = r.text();
    let problems: Vec<&str> = out.lines().filter(|l| l.contains("golive-agent")).collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {problems:?}");
    // The check has teeth: a misspelt directive is reported.
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(
        &unit,
        text.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomes=yes"),
    )
    .unwrap();
    let r = analyze(&["verify", "--man=no"], &unit);
    assert!(
        r.text().contains("Unknown key 'ProtectHomes'"),
        "a bad key went unnoticed: {}",
        r.text()
    );
}

#[test]
fn issue16_unit_security_exposure_is_low() {
    let mut version = Command::new("systemd-analyze");
    version.arg("--version");
    let v = run_bounded(version, LIMIT);
    let major: u32 = v
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("systemd-analyze --version: {}", v.text()));
    assert!(
        major >= 252,
        "systemd-analyze security --offline needs systemd 252 or newer, found {major}; \
         scripts/test installs it from apt"
    );
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let r = analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    assert_eq!(r.code, 0, "systemd-analyze security: {}", r.text());
    let line = r
        .text()
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no exposure level in: {}", r.text()));
    let score: f64 = line
        .rsplit_once(':')
        .and_then(|(_, s)| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} above {MAX_EXPOSURE}: {line}\n{}",
        r.text()
    );
    // What the score is made of: every setting the issue asks for counts.
    for setting in [
        "✓ CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)",
        "✓ NoNewPrivileges=",
        "✓ SystemCallFilter=~@privileged",
        "✓ SystemCallFilter=~@resources",
        "✓ PrivateTmp=",
        "✓ ProtectHome=",
        "✓ ProtectSystem=",
        "✓ User=/DynamicUser=",
        "✓ MemoryDenyWriteExecute=",
    ] {
        assert!(
            r.text().contains(setting),
            "{setting} missing from:\n{}",
            r.text()
        );
    }
    // The unit before issue 16 rated UNSAFE: the measure distinguishes.
    let weak = dir.path().join("weak.service");
    std::fs::write(
        &weak,
        format!(
            "[Service]\nType=simple\nExecStart={}\n",
            bin("golive-agent").display()
        ),
    )
    .unwrap();
    let r = analyze(&["security", "--offline=yes", "--no-pager"], &weak);
    assert!(r.text().contains("UNSAFE"), "{}", r.text());
}

/// A test's NOTIFY_SOCKET, bound before the agent starts.
struct Notify {
    sock: UnixDatagram,
    /// Every datagram received, in order, with when it arrived.
    seen: Vec<(Instant, String)>,
}

impl Notify {
    fn new(sock: UnixDatagram) -> Notify {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Notify {
            sock,
            seen: Vec::new(),
        }
    }

    fn recv(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push((Instant::now(), msg.clone()));
                Some(msg)
            }
            Err(_) => None,
        }
    }

    /// Waits (bounded) for a datagram with `line`; `Err` has what came.
    fn wait_for(&mut self, line: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(msg) = self.recv()
                && msg.lines().any(|l| l == line)
            {
                return Ok(msg);
            }
        }
        Err(format!(
            "no {line} within {within:?}; got {:?}",
            self.texts()
        ))
    }

    /// Everything received during `d`.
    fn collect(&mut self, d: Duration) -> Vec<String> {
        let start = self.seen.len();
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.recv();
        }
        self.seen[start..].iter().map(|(_, m)| m.clone()).collect()
    }

    fn texts(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, m)| m.as_str()).collect()
    }
}

/// An agent on `ip:port`, spawned directly (not through the fixture, which
/// waits for `agent.addr` and would let READY sit unread) with `env`.
fn spawn_agent(dir: &Path, ip: &str, port: u16, env: &[(&str, &str)]) -> (KillOnDrop, PathBuf) {
    let pki = TestPki::new(dir);
    let (cert, key) = pki.agent("sd1", &[ip, "localhost"]);
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nname = \"sd1\"\nlisten = \"{ip}:{port}\"\nstate_dir = {state:?}\n\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nrevoked = {revoked:?}\n",
            state = dir.join("state"),
            ca = pki.ca(),
            revoked = pki.revoked_list(),
        ),
    )
    .unwrap();
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin("golive-agent"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn golive-agent");
    (KillOnDrop(child), log)
}

fn signal(child: &KillOnDrop, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), sig)
        .expect("signal the agent");
}

fn exits_within(child: &mut KillOnDrop, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.0.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn issue16_notify_ready_watchdog_reload_stop() {
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.16.20";
    let port = free_port(ip);
    let path = dir.path().join("notify.sock");
    let mut notify = Notify::new(UnixDatagram::bind(&path).unwrap());
    let (mut agent, log) = spawn_agent(
        dir.path(),
        ip,
        port,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let text = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();

    // READY=1 first, and the port answers the moment it arrives.
    let ready = notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&log)));
    let connect = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    );
    assert!(
        connect.is_ok(),
        "READY=1 arrived before the agent listened on {ip}:{port}: {connect:?}"
    );
    drop(connect);
    assert!(
        ready.contains(&format!("STATUS=serving on {ip}:{port}")),
        "{ready:?}"
    );
    assert_eq!(
        notify.seen.len(),
        1,
        "nothing before READY=1: {:?}",
        notify.texts()
    );

    // WATCHDOG_USEC=1 s: a ping every 0.5 s, about 6 in 3 s.
    let window = notify.collect(Duration::from_secs(3));
    let pings = window.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
    assert!(
        (4..=8).contains(&pings),
        "{pings} WATCHDOG=1 in 3 s (expected about 6): {window:?}"
    );

    // SIGHUP: RELOADING=1 (with the monotonic time), then READY=1.
    signal(&agent, nix::sys::signal::Signal::SIGHUP);
    let reloading = notify
        .wait_for("RELOADING=1", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&log)));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let reloaded = notify
        .wait_for("READY=1", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&log)));
    assert!(
        reloaded.contains("STATUS=serving; config reloaded"),
        "{reloaded:?}"
    );
    assert!(text(&log).contains("reloaded (SIGHUP)"), "{}", text(&log));

    // Pings go on after a reload.
    notify
        .wait_for("WATCHDOG=1", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&log)));

    // SIGTERM: STOPPING=1, then the agent exits by itself.
    signal(&agent, nix::sys::signal::Signal::SIGTERM);
    notify
        .wait_for("STOPPING=1", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&log)));
    let status = exits_within(&mut agent, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent did not stop cleanly: {status:?}\n{}",
        text(&log)
    );
}

/// An abstract NOTIFY_SOCKET (`@name`) works the same; with no
/// WATCHDOG_USEC the agent never pings.
#[test]
fn issue16_notify_abstract_socket_without_watchdog() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.16.21";
    let port = free_port(ip);
    let name = format!("golive-it-{}-{port}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut notify = Notify::new(UnixDatagram::bind_addr(&addr).unwrap());
    let socket = format!("@{name}");
    let (mut agent, log) = spawn_agent(dir.path(), ip, port, &[("NOTIFY_SOCKET", &socket)]);
    let text = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
    notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&log)));
    let window = notify.collect(Duration::from_millis(1500));
    assert!(
        window.iter().all(|m| !m.contains("WATCHDOG=1")),
        "pings without WATCHDOG_USEC: {window:?}"
    );
    signal(&agent, nix::sys::signal::Signal::SIGTERM);
    notify
        .wait_for("STOPPING=1", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&log)));
    let status = exits_within(&mut agent, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        text(&log)
    );
}
