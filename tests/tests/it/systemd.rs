//! Issue 16: the agent as a systemd service. The shipped unit passes
//! `systemd-analyze verify` and `systemd-analyze security` rates it below a
//! measured bound; the real agent speaks the `Type=notify` protocol to a
//! NOTIFY_SOCKET the test binds (READY once it listens, WATCHDOG pings at
//! half of WATCHDOG_USEC, RELOADING then READY on SIGHUP, STOPPING on
//! SIGTERM); and the built .deb runs under a real systemd, PID 1 of its own
//! namespaces over an overlay of this machine's root (start, status over
//! mutual TLS, hardening, watchdog, reload, restart, drain, purge), and,
//! enabled, starts at the next boot of that namespace on the same disk.
//! Addresses 127.0.16.20-29.

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

// --- The .deb's service under a real systemd ------------------------------

/// Run as PID 1 of new pid, mount, cgroup and uts namespaces (`unshare`),
/// until it becomes systemd. Everything it mounts lives in the new mount
/// namespace and goes with its last process: a tmpfs at `$1` holding an
/// overlay of this machine's `/` (so dpkg, useradd and the agent write into
/// the tmpfs, never into this machine's packages or /etc), fresh /proc with
/// /proc/sys read-only, /sys read-only (no udev, no sysctl on this kernel),
/// the namespace's own cgroup2 tree, a minimal /dev with its own devpts, and
/// fresh /run and /tmp; the test's input dir `$2` is copied to
/// /run/golive-it; `$3` stands in for /dev/console. With `$4` = `disk`,
/// the overlay's upper layer is `$1` itself (a directory of the test on
/// this machine's disk, never this machine's own files) and outlives the
/// namespace: booting again on it is a reboot of the same machine (the
/// mount is retried while the last boot's overlay is still going away).
/// On a new upper layer, /etc/systemd/system starts empty (as on a fresh
/// install): only what the test enables there is started at boot.
const BOOT: &str = r#"#!/bin/bash
set -eu
base=$1 input=$2 console=$3 disk=${4:-}
if [ "$disk" != disk ]; then
    mount -t tmpfs -o mode=0755,size=2g golive-it "$base"
fi
fresh=no
[ -d "$base/upper" ] || fresh=yes
mkdir -p "$base/upper" "$base/work" "$base/root"
for _ in $(seq 100); do
    mount -t overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" golive-it \
        "$base/root" 2>/dev/null && break
    sleep 0.1
done
mountpoint -q "$base/root" || mount -t overlay \
    -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" golive-it "$base/root"
r=$base/root
if [ $fresh = yes ]; then
    rm -rf "$r/etc/systemd/system"
    mkdir "$r/etc/systemd/system"
fi
mount -t proc proc "$r/proc"
for p in sys sysrq-trigger; do
    [ -e "$r/proc/$p" ] || continue
    mount --bind "$r/proc/$p" "$r/proc/$p"
    mount -o remount,bind,ro "$r/proc/$p"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$r/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
for n in null zero full random urandom tty; do
    touch "$r/dev/$n"
    mount --bind "/dev/$n" "$r/dev/$n"
done
touch "$r/dev/console"
mount --bind "$console" "$r/dev/console"
mkdir "$r/dev/pts" "$r/dev/shm" "$r/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
ln -s /proc/self/fd "$r/dev/fd"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$r/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/tmp"
cp -a "$input" "$r/run/golive-it"
mkdir -p "$r/run/golive-it/none" "$r/oldroot"
cd "$r"
pivot_root . oldroot
umount -l /oldroot
rmdir /oldroot
# Only the test's units (no udev, getty, sysctl, modules, ...): the unit
# path is what is enabled in /etc/systemd/system (nothing on a fresh
# upper layer) and /run/golive-it/units; no generator runs.
exec env -i container=golive-it PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    SYSTEMD_UNIT_PATH=/etc/systemd/system:/run/golive-it/units \
    SYSTEMD_GENERATOR_PATH=/run/golive-it/none \
    SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/golive-it/none \
    /lib/systemd/systemd --system --unit=golive-it.target --show-status=no
"#;

/// The namespace's unit path: a boot target pulling journald and
/// multi-user.target (what an enabled service is wanted by) in, the
/// targets a service's default dependencies name, the machine's own
/// power-off units (`systemctl poweroff`), the package's unit
/// (linked from where dpkg puts it; dangling until the install), and the
/// test's one drop-in: the watchdog at 4 s instead of 30 so the test waits
/// seconds (pings every 2 s leave room on a busy machine), and a 2 s abort
/// timeout so a wedged agent is killed quickly.
fn write_units(units: &Path) {
    std::fs::create_dir_all(units.join("golive-agent.service.d")).unwrap();
    for (name, text) in [
        (
            "golive-it.target",
            "[Unit]\nDescription=golive test system\nRequires=basic.target\nAfter=basic.target\n\
             Wants=multi-user.target\n",
        ),
        (
            "multi-user.target",
            "[Unit]\nDescription=Multi-User System\nRequires=basic.target\nAfter=basic.target\n",
        ),
        (
            "sysinit.target",
            "[Unit]\nDescription=System Initialization\nWants=systemd-journald.service \
             systemd-journald.socket systemd-journald-dev-log.socket\n",
        ),
        (
            "basic.target",
            "[Unit]\nDescription=Basic System\nRequires=sysinit.target\nAfter=sysinit.target\n",
        ),
        ("sockets.target", "[Unit]\nDescription=Sockets\n"),
        (
            "network-online.target",
            "[Unit]\nDescription=Network is Online\n",
        ),
        (
            "shutdown.target",
            "[Unit]\nDescription=System Shutdown\nDefaultDependencies=no\n",
        ),
        (
            "system.slice",
            "[Unit]\nDescription=System Slice\nDefaultDependencies=no\n",
        ),
        (
            "golive-agent.service.d/test.conf",
            "[Service]\nWatchdogSec=4\nTimeoutAbortSec=2\n",
        ),
    ] {
        std::fs::write(units.join(name), text).unwrap();
    }
    for unit in [
        "systemd-journald.service",
        "systemd-journald.socket",
        "systemd-journald-dev-log.socket",
        // `systemctl poweroff`: the test's reboots.
        "poweroff.target",
        "systemd-poweroff.service",
        "umount.target",
        "final.target",
        "golive-agent.service",
    ] {
        std::os::unix::fs::symlink(format!("/usr/lib/systemd/system/{unit}"), units.join(unit))
            .unwrap();
    }
}

/// The cgroup2 hierarchy of this machine and the test's own cgroup in it.
fn cgroup2_home() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let root = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
        .unwrap_or_else(|| {
            panic!(
                "no cgroup2 hierarchy is mounted: systemd as PID 1 of a namespace needs \
                 one for its cgroup tree (mount -t cgroup2 none /sys/fs/cgroup/unified)"
            )
        });
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    root.join(rel.trim_start_matches('/'))
}

/// A systemd running as PID 1 of its own namespaces over an overlay of
/// this machine's root. Dropping it kills that PID 1 (the kernel then kills
/// every process of the namespace, whose mounts go with it) and removes
/// its cgroup tree.
struct Systemd {
    unshare: Option<KillOnDrop>,
    cgroup: PathBuf,
    /// This machine's pid of the namespace's PID 1 (systemd).
    pid1: i32,
    log: PathBuf,
    console: PathBuf,
}

impl Systemd {
    fn boot(dir: &Path, input: &Path) -> Systemd {
        Systemd::boot_on(dir, input, None)
    }

    /// Boots with the overlay's upper layer on `disk` (a directory of the
    /// test) when given: what this boot writes is there at the next one.
    fn boot_on(dir: &Path, input: &Path, disk: Option<&Path>) -> Systemd {
        for tool in [
            "/lib/systemd/systemd",
            "/usr/bin/unshare",
            "/usr/bin/nsenter",
        ] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: scripts/test installs systemd (unshare and nsenter are util-linux's)"
            );
        }
        // One per namespace: tests of this process run side by side.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cgroup = cgroup2_home().join(format!("golive-it-{}-{n}", std::process::id()));
        std::fs::create_dir(&cgroup).unwrap_or_else(|e| {
            panic!(
                "cannot make the namespace's cgroup {}: {e} (the test runs as root with \
                 a writable cgroup2 hierarchy)",
                cgroup.display()
            )
        });
        let base = match disk {
            Some(disk) => {
                std::fs::create_dir_all(disk).unwrap();
                disk.to_path_buf()
            }
            None => {
                let base = dir.join(format!("ns-{n}"));
                std::fs::create_dir(&base).unwrap();
                base
            }
        };
        let boot = dir.join("boot.sh");
        std::fs::write(&boot, BOOT).unwrap();
        let console = dir.join(format!("console-{n}.log"));
        std::fs::write(&console, "").unwrap();
        let log = dir.join(format!("boot-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("bash");
        // The shell moves itself into the new cgroup, then becomes unshare,
        // whose child (PID 1 inside) runs BOOT; --kill-child: the namespace
        // dies with unshare.
        cmd.arg("-c")
            .arg(
                "echo $$ > \"$1/cgroup.procs\" && exec unshare --pid --fork --mount --cgroup \
                 --uts --propagation private --kill-child bash \"$2\" \"$3\" \"$4\" \"$5\" \"$6\"",
            )
            .args(["golive-it", s(&cgroup), s(&boot), s(&base), s(input)])
            .arg(&console)
            .arg(if disk.is_some() { "disk" } else { "tmpfs" })
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let mut sd = Systemd {
            unshare: Some(KillOnDrop(cmd.spawn().expect("spawn unshare"))),
            cgroup,
            pid1: 0,
            log,
            console,
        };
        // systemd moves itself into init.scope of its cgroup tree.
        let deadline = Instant::now() + Duration::from_secs(30);
        while sd.pid1 == 0 {
            let procs = std::fs::read_to_string(sd.cgroup.join("init.scope/cgroup.procs"));
            if let Some(pid) = procs.ok().and_then(|p| p.trim().parse().ok()) {
                sd.pid1 = pid;
                break;
            }
            let exited = sd.unshare.as_mut().unwrap().0.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "systemd did not start as PID 1 ({exited:?}): {}",
                sd.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            let r = sd.exec(&["systemctl", "is-system-running"], LIMIT);
            let state = r.stdout.trim().to_string();
            if state == "running" {
                break;
            }
            assert!(
                Instant::now() < deadline
                    && matches!(state.as_str(), "" | "initializing" | "starting"),
                "the namespace's systemd did not reach running ({state}): {}\n{}",
                r.text(),
                sd.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sd
    }

    /// `args` inside the namespace (its root, pid and mount namespaces).
    fn exec(&self, args: &[&str], limit: Duration) -> Run {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid1))
            .args([
                "--mount", "--pid", "--uts", "--cgroup", "--root", "--wd", "--",
            ])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0");
        run_bounded(cmd, limit)
    }

    /// `systemctl poweroff`, then waits (bounded) until the namespace is
    /// gone: a clean shutdown of the machine, its disk kept.
    fn power_off(mut self) {
        // The namespace may die before systemctl answers: its code is moot.
        let _ = self.exec(&["systemctl", "poweroff"], LIMIT);
        let deadline = Instant::now() + Duration::from_secs(60);
        let unshare = &mut self.unshare.as_mut().unwrap().0;
        while unshare.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the namespace's systemd did not power off within 60 s:\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Gone: its pid may be anyone's now.
        self.pid1 = 0;
    }

    /// `args` inside, which must succeed.
    fn ok(&self, args: &[&str], limit: Duration) -> Run {
        let r = self.exec(args, limit);
        assert_eq!(r.code, 0, "{args:?}: {}\n{}", r.text(), self.diagnostics());
        r
    }

    /// One property of golive-agent.service.
    fn show(&self, prop: &str) -> String {
        self.ok(
            &[
                "systemctl",
                "show",
                "--value",
                "-p",
                prop,
                "golive-agent.service",
            ],
            LIMIT,
        )
        .stdout
        .trim()
        .to_string()
    }

    /// What the namespace's journal holds about the agent's unit.
    fn journal(&self) -> String {
        self.exec(
            &[
                "journalctl",
                "--no-pager",
                "-o",
                "cat",
                "-u",
                "golive-agent.service",
            ],
            LIMIT,
        )
        .stdout
    }

    /// The boot log, the console and the journal, for failure messages.
    fn diagnostics(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let journal = if self.pid1 > 0 {
            self.exec(&["journalctl", "--no-pager", "-n", "200"], LIMIT)
                .stdout
        } else {
            String::new()
        };
        format!(
            "--- boot\n{}--- console\n{}--- journal\n{journal}",
            read(&self.log),
            read(&self.console)
        )
    }

    /// This machine's pid of the agent (the unit's one process).
    fn agent_pid(&self) -> i32 {
        let procs = std::fs::read_to_string(
            self.cgroup
                .join("system.slice/golive-agent.service/cgroup.procs"),
        )
        .unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
        assert_eq!(pids.len(), 1, "one process in the unit: {pids:?}");
        pids[0]
    }

    /// Waits (bounded) until `systemctl show` has `want` for every pair.
    fn wait_for(&self, want: &[(&str, &str)], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let now: Vec<(String, String)> = want
                .iter()
                .map(|(p, _)| (p.to_string(), self.show(p)))
                .collect();
            if now.iter().zip(want).all(|((_, v), (_, w))| v == w) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "golive-agent.service did not reach {want:?} within {within:?}: {now:?}\n{}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if self.pid1 > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid1),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Kills unshare (and so, by --kill-child, a PID 1 not yet known)
        // and reaps it.
        drop(self.unshare.take());
        // The cgroups empty as the kernel reaps the namespace; remove the
        // deepest first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cgroup.exists() && Instant::now() < deadline {
            let mut dirs = Vec::new();
            let mut todo = vec![self.cgroup.clone()];
            while let Some(d) = todo.pop() {
                if let Ok(entries) = std::fs::read_dir(&d) {
                    for e in entries.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            todo.push(e.path());
                        }
                    }
                }
                dirs.push(d);
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The exposure `systemd-analyze security` prints for a unit.
fn exposure(text: &str) -> String {
    text.lines()
        .find_map(|l| l.split_once("Overall exposure level for golive-agent.service:"))
        .and_then(|(_, s)| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"))
        .to_string()
}

/// What a package test under systemd starts from.
struct Prepared {
    /// Copied to /run/golive-it in the namespace: the package (by its own
    /// file name), the units, the agent's TLS files, three configs and
    /// configure.sh (the README's steps after the install).
    input: PathBuf,
    /// A plan naming the agent, for `golivectl status` and `run`.
    plan: PathBuf,
    ctl: Ctl,
}

fn prepare(d: &Path, ip: &str, port: u16, package: &Path) -> Prepared {
    let pki = TestPki::new(d);
    let (cert, key) = pki.agent("sd", &[ip, "localhost"]);
    let op = pki.operator("alice", "operator");
    let input = d.join("input");
    write_units(&input.join("units"));
    std::fs::copy(package, input.join(package.file_name().unwrap())).unwrap();
    for (from, to) in [
        (pki.ca(), "ca.crt"),
        (cert, "sd.crt"),
        (key, "sd.key"),
        (pki.revoked_list(), "revoked.txt"),
    ] {
        std::fs::copy(from, input.join(to)).unwrap();
    }
    // The config as the README's steps make it, with one command that tries
    // to write inside and outside what the unit lets it; a second config
    // adds a slow command (the reload), a third is broken.
    let config = |extra: &str| {
        format!(
            "[agent]\nname = \"sd\"\nlisten = \"{ip}:{port}\"\nstate_dir = \"/var/lib/golive\"\n\n\
             [tls]\nca = \"/etc/golive/tls/ca.crt\"\ncert = \"/etc/golive/tls/sd.crt\"\n\
             key = \"/etc/golive/tls/sd.key\"\nrevoked = \"/etc/golive/tls/revoked.txt\"\n\n\
             [apps.shop]\nroot = \"/srv/www/shop\"\nkeep_releases = 3\n\n\
             [apps.shop.commands.escape]\ncmd = [\"sh\", \"-c\", \"id -un; \
             touch /srv/www/shop/shared-ok && echo wrote the app root; \
             touch /var/lib/golive/state-ok && echo wrote the state dir; \
             touch /etc/golive/escape; touch /usr/escape; ls /home; ls /root\"]\n\n{extra}"
        )
    };
    let slow = "[apps.shop.commands.slow]\ncmd = [\"sleep\", \"3\"]\n";
    std::fs::write(input.join("agent.toml"), config("")).unwrap();
    std::fs::write(input.join("agent-slow.toml"), config(slow)).unwrap();
    std::fs::write(
        input.join("agent-bad.toml"),
        config("[apps.shop.nonsense]\n"),
    )
    .unwrap();
    std::fs::write(
        input.join("configure.sh"),
        "set -eu\nin=/run/golive-it\n\
         install -m 0640 -o root -g golive $in/agent.toml /etc/golive/agent.toml\n\
         install -m 0640 -o root -g golive $in/ca.crt $in/sd.crt $in/revoked.txt /etc/golive/tls/\n\
         install -m 0600 -o golive -g golive $in/sd.key /etc/golive/tls/\n\
         mkdir -p /srv/www/shop/releases/v1\nln -sfn releases/v1 /srv/www/shop/current\n\
         chown -R golive:golive /srv/www\n\
         golive-agent check-config --config /etc/golive/agent.toml\n",
    )
    .unwrap();
    let plan = d.join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "app = \"shop\"\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n\
             [[hosts]]\nname = \"sd\"\naddress = \"{ip}:{port}\"\n",
            pki.ca(),
            op.0,
            op.1
        ),
    )
    .unwrap();
    Prepared {
        input,
        plan,
        ctl: Ctl::new(d),
    }
}

/// Where `prepare` put a package in the namespace.
fn in_namespace(package: &Path) -> String {
    format!(
        "/run/golive-it/{}",
        package.file_name().unwrap().to_string_lossy()
    )
}

/// What a namespace must leave alone: this machine's own packages (dpkg's
/// and rpm's databases), users and /etc/golive.
fn host_view() -> (bool, bool, bool, Vec<String>) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut rpmdb: Vec<String> = std::fs::read_dir("/var/lib/rpm")
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    rpmdb.sort();
    (
        read("/var/lib/dpkg/status").contains("Package: golive-agent\n"),
        read("/etc/passwd")
            .lines()
            .any(|l| l.starts_with("golive:")),
        Path::new("/etc/golive").exists(),
        rpmdb,
    )
}

/// The .deb installed by the real dpkg into an overlay of this machine and
/// run by a real systemd as PID 1 of its own namespaces: the postinst makes
/// the user and tells systemd; `systemctl start` returns once the agent is
/// READY and it answers `golivectl status` over mutual TLS at once; it runs
/// as `golive` with no capabilities, NoNewPrivileges and a seccomp filter,
/// and its commands cannot write outside the state directory and the app
/// roots; `systemd-analyze security` rates the running unit as the README
/// says; the pings keep it alive past WatchdogSec and a stopped (wedged)
/// agent is killed and restarted; `systemctl reload` reloads (and a bad file
/// is refused); a kill -9 is restarted; `systemctl stop` lets a running job
/// finish; `dpkg --purge` stops it. Nothing is written to this machine.
#[test]
fn issue16_the_deb_runs_under_a_real_systemd_as_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = "127.0.16.22";
    let port = free_port(ip);
    let Prepared { input, plan, ctl } = prepare(d, ip, port, &crate::packaging::built_debs().agent);
    let deb = in_namespace(&crate::packaging::built_debs().agent);
    let status = || ctl.run(&["status", s(&plan)]);
    // Replaces the config the way an editor saving it would.
    let use_config = |sd: &Systemd, name: &str| {
        sd.ok(
            &[
                "install",
                "-m",
                "0640",
                "-o",
                "root",
                "-g",
                "golive",
                &format!("/run/golive-it/{name}"),
                "/etc/golive/agent.toml",
            ],
            LIMIT,
        );
    };
    let host_before = host_view();
    let sd = Systemd::boot(d, &input);

    // --- dpkg: the postinst makes the user and reloads systemd ----------
    let install = sd.ok(&["dpkg", "-i", &deb], LIMIT);
    assert!(
        install.stdout.contains("the service is not enabled yet"),
        "{}",
        install.text()
    );
    assert_eq!(sd.show("LoadState"), "loaded", "{}", sd.diagnostics());
    assert_eq!(sd.show("ActiveState"), "inactive");
    let ids = sd.ok(&["id", "-u", "golive"], LIMIT).stdout;
    let uid: u32 = ids.trim().parse().unwrap();
    sd.ok(&["sh", "/run/golive-it/configure.sh"], LIMIT);

    // --- start: READY once listening; status over mutual TLS ------------
    sd.ok(&["systemctl", "start", "golive-agent.service"], LIMIT);
    let connect = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    );
    assert!(
        connect.is_ok(),
        "systemctl start returned before the agent listened: {connect:?}\n{}",
        sd.journal()
    );
    assert_eq!(sd.show("SubState"), "running");
    assert_eq!(sd.show("StatusText"), format!("serving on {ip}:{port}"));
    let st = status();
    assert_eq!(st.code, 0, "{}\n{}", st.text(), sd.journal());
    assert!(st.stdout.contains("as \"sd\""), "{}", st.text());

    // --- hardening: the process and what its commands may write ---------
    let pid = sd.agent_pid();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {name} in {proc_status}"))
    };
    assert_eq!(field("Uid"), format!("{uid} {uid} {uid} {uid}"));
    for cap in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "a seccomp filter");
    let run = ctl.run(&["run", s(&plan), "escape"]);
    let out = run.text();
    for want in [
        "[command escape] golive",
        "wrote the app root",
        "wrote the state dir",
        "cannot touch '/etc/golive/escape': Read-only file system",
        "cannot touch '/usr/escape': Read-only file system",
        "cannot open directory '/home': Permission denied",
        "cannot open directory '/root': Permission denied",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(
        sd.exec(&["test", "-e", "/etc/golive/escape"], LIMIT).code != 0,
        "a command wrote /etc"
    );

    // --- systemd-analyze security of the running unit = the README's ----
    let online = sd.ok(
        &[
            "systemd-analyze",
            "security",
            "--no-pager",
            "golive-agent.service",
        ],
        LIMIT,
    );
    let score = exposure(&online.stdout);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    assert_eq!(
        exposure(&readme),
        score,
        "the README's score is not the running unit's:\n{}",
        online.stdout
    );
    assert!(score.parse::<f64>().unwrap() <= MAX_EXPOSURE, "{score}");

    // --- the pings keep it alive past twice WatchdogSec (4 s) -----------
    let main = sd.show("MainPID");
    let t0: u64 = sd.show("WatchdogTimestampMonotonic").parse().unwrap();
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(sd.show("MainPID"), main, "{}", sd.journal());
    assert_eq!(sd.show("NRestarts"), "0", "{}", sd.journal());
    let t1: u64 = sd.show("WatchdogTimestampMonotonic").parse().unwrap();
    assert!(t1 >= t0 + 6_000_000, "no ping for 6 s: {t0} -> {t1}");

    // --- reload: SIGHUP applies a new file, refuses a broken one --------
    use_config(&sd, "agent-slow.toml");
    sd.ok(&["systemctl", "reload", "golive-agent.service"], LIMIT);
    assert!(
        sd.journal()
            .contains("config /etc/golive/agent.toml reloaded (SIGHUP)"),
        "{}",
        sd.journal()
    );
    assert_eq!(sd.show("MainPID"), main, "a reload is not a restart");
    use_config(&sd, "agent-bad.toml");
    sd.ok(&["systemctl", "reload", "golive-agent.service"], LIMIT);
    assert!(
        sd.journal()
            .contains("config /etc/golive/agent.toml NOT reloaded (SIGHUP)"),
        "{}",
        sd.journal()
    );
    assert_eq!(sd.show("ActiveState"), "active");
    assert!(
        sd.show("StatusText").contains("refused"),
        "{}",
        sd.show("StatusText")
    );
    use_config(&sd, "agent-slow.toml");
    sd.ok(&["systemctl", "reload", "golive-agent.service"], LIMIT);
    assert_eq!(sd.show("StatusText"), "serving; config reloaded");

    // --- a wedged agent (SIGSTOP: no pings) is killed and restarted -----
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sd.agent_pid()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    sd.wait_for(
        &[("NRestarts", "1"), ("ActiveState", "active")],
        Duration::from_secs(30),
    );
    assert!(
        sd.journal().contains("Failed with result 'watchdog'"),
        "{}",
        sd.journal()
    );
    assert_ne!(sd.show("MainPID"), main);

    // --- kill -9: Restart=on-failure ------------------------------------
    let main = sd.show("MainPID");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sd.agent_pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    sd.wait_for(
        &[("NRestarts", "2"), ("ActiveState", "active")],
        Duration::from_secs(30),
    );
    assert_ne!(sd.show("MainPID"), main);
    let st = status();
    assert_eq!(st.code, 0, "{}\n{}", st.text(), sd.journal());

    // --- systemctl stop drains: the running command finishes ------------
    let mut slow_run = KillOnDrop(
        ctl.cmd(&["run", s(&plan), "slow"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("slow.out")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    // The escape job was the first command: wait for the second.
    while sd.journal().matches("started: command of shop").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow job never started:\n{}",
            sd.journal()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopping = Instant::now();
    sd.ok(
        &["systemctl", "stop", "golive-agent.service"],
        Duration::from_secs(90),
    );
    let took = stopping.elapsed();
    let ended = exits_within(&mut slow_run, Duration::from_secs(30));
    let slow_out = std::fs::read_to_string(d.join("slow.out")).unwrap_or_default();
    let journal = sd.journal();
    assert!(journal.contains("stopping: waiting up to"), "{journal}");
    assert!(
        slow_out.contains("slow succeeded") && ended.is_some_and(|s| s.success()),
        "the running command did not finish through the stop ({took:?}): {slow_out}\n{journal}"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "the stop did not wait for the job: {took:?}"
    );
    assert_eq!(sd.show("ActiveState"), "inactive");
    assert_eq!(sd.show("Result"), "success", "{journal}");

    // --- dpkg --purge stops a running agent (prerm) ---------------------
    sd.ok(&["systemctl", "start", "golive-agent.service"], LIMIT);
    let purge = sd.ok(&["dpkg", "--purge", "golive-agent"], LIMIT);
    assert!(purge.text().contains("kept"), "{}", purge.text());
    assert_eq!(sd.show("ActiveState"), "inactive", "{}", sd.journal());
    assert_eq!(sd.show("LoadState"), "not-found");
    assert!(sd.exec(&["test", "-e", "/etc/golive"], LIMIT).code != 0);
    sd.ok(&["test", "-d", "/var/lib/golive"], LIMIT);
    drop(sd);
    assert_eq!(
        host_view(),
        host_before,
        "this machine's dpkg database or users changed"
    );
}

/// Enabled, the service starts at boot: the .deb installed and configured,
/// `systemctl enable --now` links it into multi-user.target; the machine
/// powers off and boots again on the same disk (the overlay's upper layer
/// kept), and the agent is up and answers over mutual TLS with nobody
/// starting it, its journal from before the reboot intact; `dpkg -r`
/// stops and disables it (prerm) and at the next boot nothing starts it.
/// Nothing is written to this machine.
#[test]
fn issue16_the_enabled_service_starts_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = "127.0.16.24";
    let port = free_port(ip);
    let Prepared { input, plan, ctl } = prepare(d, ip, port, &crate::packaging::built_debs().agent);
    let deb = in_namespace(&crate::packaging::built_debs().agent);
    let disk = d.join("disk");
    let host_before = host_view();
    let wants = "/etc/systemd/system/multi-user.target.wants/golive-agent.service";

    // --- first boot: install, configure, enable -------------------------
    let sd = Systemd::boot_on(d, &input, Some(&disk));
    sd.ok(&["dpkg", "-i", &deb], LIMIT);
    sd.ok(&["sh", "/run/golive-it/configure.sh"], LIMIT);
    let enable = sd.ok(
        &["systemctl", "enable", "--now", "golive-agent.service"],
        LIMIT,
    );
    assert!(enable.text().contains(wants), "{}", enable.text());
    assert_eq!(
        sd.ok(&["systemctl", "is-enabled", "golive-agent.service"], LIMIT)
            .stdout
            .trim(),
        "enabled"
    );
    assert_eq!(sd.show("ActiveState"), "active", "{}", sd.journal());
    // A job for the agent's journal (the command fails by design: it
    // tries to write where the unit forbids).
    let run = ctl.run(&["run", s(&plan), "escape"]);
    assert!(
        run.text().contains("[command escape] golive"),
        "{}",
        run.text()
    );
    sd.power_off();

    // --- second boot: nobody starts it ----------------------------------
    let sd = Systemd::boot_on(d, &input, Some(&disk));
    sd.wait_for(
        &[("ActiveState", "active"), ("SubState", "running")],
        Duration::from_secs(30),
    );
    assert_eq!(sd.show("NRestarts"), "0", "{}", sd.journal());
    let st = ctl.run(&["status", s(&plan)]);
    assert_eq!(st.code, 0, "{}\n{}", st.text(), sd.journal());
    assert!(st.stdout.contains("as \"sd\""), "{}", st.text());
    let jobs = ctl.run(&["jobs", s(&plan)]);
    assert_eq!(jobs.code, 0, "{}", jobs.text());
    assert!(
        jobs.stdout.contains("escape"),
        "the job run before the reboot is not in the agent's journal:\n{}",
        jobs.text()
    );

    // --- dpkg -r stops and disables it ----------------------------------
    sd.ok(&["dpkg", "-r", "golive-agent"], LIMIT);
    assert_eq!(sd.show("ActiveState"), "inactive", "{}", sd.journal());
    assert!(
        sd.exec(&["test", "-L", wants], LIMIT).code != 0,
        "dpkg -r left the service enabled"
    );
    sd.power_off();

    // --- third boot: the removed agent stays down -----------------------
    let sd = Systemd::boot_on(d, &input, Some(&disk));
    assert_eq!(sd.show("ActiveState"), "inactive");
    sd.ok(&["test", "-d", "/var/lib/golive"], LIMIT);
    drop(sd);
    assert_eq!(
        host_view(),
        host_before,
        "this machine's dpkg database or users changed"
    );
}

/// The .rpm installed by the real rpm into an overlay of this machine and
/// run by the same kind of systemd: its %pre makes the user before the
/// files land (the config is group golive), its %post the state directory;
/// `systemctl start` returns on READY and `golivectl status` answers over
/// mutual TLS; the agent runs as golive; `rpm -e` stops it (%preun) and
/// keeps the state directory. rpm runs with --nodeps (this Debian machine's
/// libc and shadow tools are not in an rpm database) and, Debian's rpm
/// asking for it, --force-debian.
#[test]
fn issue16_the_rpm_runs_under_a_real_systemd_as_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = "127.0.16.23";
    let port = free_port(ip);
    let rpm = &crate::packaging::built_debs().rpm;
    let Prepared { input, plan, ctl } = prepare(d, ip, port, rpm);
    let host_before = host_view();
    let sd = Systemd::boot(d, &input);

    let install = sd.ok(
        &[
            "rpm",
            "--dbpath",
            "/var/lib/rpm",
            "--force-debian",
            "--nodeps",
            "-i",
            &in_namespace(rpm),
        ],
        LIMIT,
    );
    assert!(
        install.stdout.contains("the service is not enabled yet"),
        "{}",
        install.text()
    );
    assert_eq!(sd.show("LoadState"), "loaded", "{}", sd.diagnostics());
    assert_eq!(sd.show("ActiveState"), "inactive");
    let modes = sd
        .ok(
            &[
                "stat",
                "-c",
                "%n %U:%G %a",
                "/etc/golive/agent.toml",
                "/etc/golive/tls",
                "/var/lib/golive",
            ],
            LIMIT,
        )
        .stdout;
    assert_eq!(
        modes.lines().collect::<Vec<_>>(),
        [
            "/etc/golive/agent.toml root:golive 640",
            "/etc/golive/tls root:golive 750",
            "/var/lib/golive golive:golive 700",
        ]
    );
    sd.ok(&["sh", "/run/golive-it/configure.sh"], LIMIT);

    sd.ok(&["systemctl", "start", "golive-agent.service"], LIMIT);
    assert_eq!(sd.show("SubState"), "running");
    let st = ctl.run(&["status", s(&plan)]);
    assert_eq!(st.code, 0, "{}\n{}", st.text(), sd.journal());
    assert!(st.stdout.contains("as \"sd\""), "{}", st.text());
    let uid = sd.ok(&["id", "-u", "golive"], LIMIT).stdout;
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", sd.agent_pid())).unwrap();
    assert!(
        proc_status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(uid.trim())),
        "not running as golive ({uid}): {proc_status}"
    );

    let erase = sd.ok(
        &[
            "rpm",
            "--dbpath",
            "/var/lib/rpm",
            "--force-debian",
            "-e",
            "golive-agent",
        ],
        LIMIT,
    );
    assert!(
        erase.text().contains("kept /var/lib/golive"),
        "{}",
        erase.text()
    );
    assert_eq!(sd.show("ActiveState"), "inactive", "{}", sd.journal());
    assert_eq!(sd.show("LoadState"), "not-found");
    sd.ok(&["test", "-d", "/var/lib/golive"], LIMIT);
    assert!(
        sd.exec(&["test", "-e", "/usr/bin/golive-agent"], LIMIT)
            .code
            != 0
    );
    drop(sd);
    assert_eq!(
        host_view(),
        host_before,
        "this machine's package databases or users changed"
    );
}
