//! Fixtures for the integration tests in `tests/tests/it/`: they drive the
//! real `golive-agent` and `golivectl` binaries over real mutual TLS.
//!
//! - [`bin`]: path of a workspace binary (built on first use if missing).
//! - [`TestPki`]: a CA and certificates made with `golivectl`.
//! - [`AgentProc`]: a `golive-agent serve` process on a loopback address,
//!   killed (SIGKILL) and reaped on drop, even when the test fails.
//! - [`HttpApp`]: a real HTTP server process (python3 http.server) serving
//!   an app's `ROOT/current`, stopped on drop.
//! - [`FlakyApp`]: a web app whose releases decide when they start failing
//!   (the watchdog's tests and benchmark).
//! - [`Ctl`]: runs `golivectl` with a private state directory.
//! - [`artifact`]: builds release archives.
//! - [`sshd::TestSshd`]: a private OpenSSH server (issue 15).
//!
//! Every wait here is bounded in time.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Path of a workspace binary in the same profile as the test executable.
/// `cargo test --workspace` builds them; a lone `cargo test -p golive-tests`
/// gets them built here, once. `GOLIVE_BIN_DIR` names a directory of kept
/// binaries to use instead, unbuilt (`scripts/bench-fanout`'s `BIN_DIR`:
/// old and new binaries alternated under the same conditions).
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Mutex<bool> = Mutex::new(false);
    if let Some(dir) = std::env::var_os("GOLIVE_BIN_DIR") {
        let path = Path::new(&dir).join(name);
        assert!(
            path.is_file(),
            "{} is not there (GOLIVE_BIN_DIR)",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/it-xxxx → target/<profile>/
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf();
    let path = dir.join(name);
    let mut built = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if !*built {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "golive-agent", "-p", "golivectl"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
        *built = true;
    }
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A command's outcome with its exit code and text.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// stdout parsed as NDJSON values.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }
}

/// Runs a command to completion with a time limit; kills it on timeout.
/// stdout and stderr are drained on threads, so a chatty command never
/// blocks on a full pipe.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Run {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    if status.is_none() {
        panic!("command timed out after {limit:?}: {cmd:?}\n{}", run.text());
    }
    run
}

/// `golivectl` with a private controller state directory.
pub struct Ctl {
    pub state: PathBuf,
}

impl Ctl {
    pub fn new(dir: &Path) -> Ctl {
        Ctl {
            state: dir.join("ctl-state"),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("golivectl"));
        cmd.arg("--state").arg(&self.state).args(args);
        cmd
    }

    /// Runs golivectl (60 s limit).
    pub fn run(&self, args: &[&str]) -> Run {
        run_bounded(self.cmd(args), Duration::from_secs(60))
    }
}

/// A CA plus certificates, made with the real `golivectl`.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        let pki = TestPki {
            dir: dir.join("pki"),
        };
        pki.ok(&["ca", "init", "--dir", pki.dir_str()]);
        pki
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }

    fn ok(&self, args: &[&str]) {
        let mut cmd = Command::new(bin("golivectl"));
        cmd.args(args);
        let run = run_bounded(cmd, Duration::from_secs(30));
        assert_eq!(run.code, 0, "golivectl {args:?} failed: {}", run.text());
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// An agent certificate for `sans`; returns (cert, key).
    pub fn agent(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let mut args = vec!["cert", "agent", name, "--dir", self.dir_str(), "--san"];
        args.extend_from_slice(sans);
        self.ok(&args);
        (
            self.dir.join(format!("agents/{name}.crt")),
            self.dir.join(format!("agents/{name}.key")),
        )
    }

    /// An operator certificate with `role`; returns (cert, key).
    pub fn operator(&self, name: &str, role: &str) -> (PathBuf, PathBuf) {
        self.ok(&[
            "cert",
            "operator",
            name,
            "--role",
            role,
            "--dir",
            self.dir_str(),
        ]);
        (
            self.dir.join(format!("operators/{name}.crt")),
            self.dir.join(format!("operators/{name}.key")),
        )
    }

    pub fn revoked_list(&self) -> PathBuf {
        self.dir.join("revoked.txt")
    }
}

/// A path as `&str`, for command lines (temp paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The world most integration tests start from: a temp dir, a CA, the
/// operator `alice` (role operator) and a controller with its own state
/// directory. A module's own `World` wraps it and derefs to it, so its
/// fields and [`Base::path`] read as the module's own.
pub struct Base {
    pub dir: tempfile::TempDir,
    pub pki: TestPki,
    pub op: (PathBuf, PathBuf),
    pub ctl: Ctl,
}

impl Base {
    pub fn new() -> Base {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let op = pki.operator("alice", "operator");
        let ctl = Ctl::new(dir.path());
        Base { dir, pki, op, ctl }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Base {
    fn default() -> Base {
        Base::new()
    }
}

/// Declares a test module's `World`: a [`Base`] that the module extends
/// with its own `impl World { ... }` (hosts, deploy helpers), and with
/// fields of its own when given (`world!(agents: Vec<AgentProc>)`); the
/// base's fields and [`Base::path`] are reached through `Deref`.
#[macro_export]
macro_rules! world {
    () => {
        struct World($crate::Base);

        impl World {
            fn new() -> World {
                World($crate::Base::new())
            }
        }

        impl std::ops::Deref for World {
            type Target = $crate::Base;
            fn deref(&self) -> &$crate::Base {
                &self.0
            }
        }
    };
    // A `World` with fields of the module's own beside the base (its
    // agents, say), built by the module's own `new`.
    ($($field:ident : $ty:ty),+ $(,)?) => {
        struct World {
            base: $crate::Base,
            $($field: $ty),+
        }

        impl std::ops::Deref for World {
            type Target = $crate::Base;
            fn deref(&self) -> &$crate::Base {
                &self.base
            }
        }
    };
}

/// What one test agent declares.
pub struct AgentSpec {
    pub name: String,
    /// Loopback IP to listen on, e.g. `127.0.0.2`.
    pub ip: String,
    /// Port to listen on; 0 (default): chosen by the OS. A fixed one is
    /// for a test that reads the agent's config as a tool on the host would
    /// (`golive-agent bridge`, issue 15).
    pub port: u16,
    /// `[apps.NAME]` tables and anything else, appended verbatim.
    pub apps_toml: String,
    /// Extra `[limits]` lines.
    pub limits_toml: String,
    /// The deny list (`tls.revoked`); default: the PKI's `revoked.txt`.
    pub revoked: Option<PathBuf>,
    /// Variables added to the agent's environment (which is otherwise the
    /// test process's).
    pub env: Vec<(String, String)>,
    /// The agent's umask, when the test needs a known one (else inherited).
    pub umask: Option<u32>,
    /// Run the agent as this user when the tests run as root (ignored
    /// otherwise: the agent then runs as the test's own unprivileged user).
    /// Root ignores permission bits, so a test about what an unprivileged
    /// agent may not do needs one (issue 12: pruning read-only releases).
    /// Its directory under the test's temp dir, its certificate, key, CA
    /// and deny list become that user's.
    pub user: Option<String>,
    /// Run the agent inside this network namespace (`ip netns exec`, which
    /// execs the agent in the same process), as a host whose link to the
    /// controller can be cut (issue 13).
    pub netns: Option<String>,
    /// Options given before `serve` (issue 16: `--log-format json`).
    pub args: Vec<String>,
}

impl AgentSpec {
    pub fn new(name: &str, ip: &str) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            ip: ip.into(),
            port: 0,
            apps_toml: String::new(),
            limits_toml: String::new(),
            revoked: None,
            env: Vec::new(),
            umask: None,
            user: None,
            netns: None,
            args: Vec::new(),
        }
    }
}

/// `(uid, gid)` of `user` when the tests run as root and a user is asked
/// for, else `None`.
fn run_as(user: Option<&str>) -> Option<(u32, u32)> {
    let user = user?;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let u = nix::unistd::User::from_name(user)
        .expect("look up the agent's user")
        .unwrap_or_else(|| panic!("user {user} exists"));
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

/// Gives `path` and everything under it to `(uid, gid)`, never following a
/// symlink.
pub fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    let (uid, gid) = (
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    );
    let meta = std::fs::symlink_metadata(path).expect("inspect for chown");
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        uid,
        gid,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .expect("chown");
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("list for chown") {
            chown_tree(
                &entry.expect("entry").path(),
                (uid.expect("uid").as_raw(), gid.expect("gid").as_raw()),
            );
        }
    }
}

/// A running `golive-agent serve`, killed and reaped on drop.
pub struct AgentProc {
    pub name: String,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub addr: SocketAddr,
    /// As in its [`AgentSpec`]; kept for restarts.
    env: Vec<(String, String)>,
    umask: Option<u32>,
    netns: Option<String>,
    args: Vec<String>,
    /// `(uid, gid)` the agent runs as, when not the test's own.
    pub owner: Option<(u32, u32)>,
    child: Option<Child>,
}

impl AgentProc {
    /// Writes the agent's config under `dir/NAME/` (certificate for its IP
    /// and `localhost`) and starts it.
    pub fn start(dir: &Path, pki: &TestPki, spec: &AgentSpec) -> AgentProc {
        let home = dir.join(&spec.name);
        std::fs::create_dir_all(&home).expect("agent dir");
        let (mut cert, mut key) = pki.agent(&spec.name, &[&spec.ip, "localhost"]);
        let (mut ca, mut revoked) = (
            pki.ca(),
            spec.revoked.clone().unwrap_or_else(|| pki.revoked_list()),
        );
        let owner = run_as(spec.user.as_deref());
        if owner.is_some() {
            // The agent's user reads its TLS files from its own directory,
            // and reaches that directory through the test's.
            use std::os::unix::fs::PermissionsExt;
            let tls = home.join("tls");
            std::fs::create_dir_all(&tls).expect("tls dir");
            for p in [&mut cert, &mut key, &mut ca, &mut revoked] {
                let copy = tls.join(p.file_name().expect("file name"));
                std::fs::copy(&*p, &copy).expect("copy a TLS file for the agent's user");
                *p = copy;
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the test dir");
        }
        let config = home.join("agent.toml");
        let state_dir = home.join("state");
        let mut toml = format!(
            "[agent]\nname = {name:?}\nlisten = \"{ip}:{port}\"\nstate_dir = {state:?}\n\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nrevoked = {revoked:?}\n\n",
            name = spec.name,
            ip = spec.ip,
            port = spec.port,
            state = state_dir,
            ca = ca,
            cert = cert,
            key = key,
            revoked = revoked,
        );
        if !spec.limits_toml.is_empty() {
            toml.push_str("[limits]\n");
            toml.push_str(&spec.limits_toml);
            toml.push('\n');
        }
        toml.push_str(&spec.apps_toml);
        std::fs::write(&config, toml).expect("write agent config");
        if let Some(owner) = owner {
            chown_tree(&home, owner);
        }
        let mut agent = AgentProc {
            name: spec.name.clone(),
            config,
            state_dir,
            log: home.join("agent.log"),
            addr: "127.0.0.1:1".parse().expect("placeholder"),
            env: spec.env.clone(),
            umask: spec.umask,
            netns: spec.netns.clone(),
            args: spec.args.clone(),
            owner,
            child: None,
        };
        agent.spawn();
        agent
    }

    /// CPU time the process used so far, in clock ticks (utime + stime
    /// from `/proc/PID/stat`, all threads).
    pub fn cpu_ticks(&self) -> u64 {
        let pid = self.pid().expect("agent running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
        // Fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }

    /// (Re)starts the process and waits (up to 20 s) for its address file.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent {} already running", self.name);
        let addr_file = self.state_dir.join("agent.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        // A umask is set by a shell that then execs the agent (same pid);
        // `ip netns exec` execs it too.
        let mut cmd = match (self.umask, &self.netns) {
            (Some(mask), _) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(bin("golive-agent"));
                sh
            }
            (None, Some(ns)) => {
                let mut ip = Command::new("ip");
                ip.args(["netns", "exec", ns]).arg(bin("golive-agent"));
                ip
            }
            (None, None) => Command::new(bin("golive-agent")),
        };
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            // std drops supplementary groups when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .args(&self.args)
            .args(["serve", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn golive-agent");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = text.trim().parse()
            {
                self.addr = addr;
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "golive-agent {} exited at start ({status}):\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "golive-agent {} did not start within 20 s:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap: a crash, as far as the agent can tell.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The journal, opened read-only for assertions.
    pub fn journal(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.state_dir.join("journal.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open agent journal")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A real HTTP server process serving `dir` (python3 -m http.server). The
/// directory path is resolved on every request, so pointing it at
/// `ROOT/current` serves whatever release is live.
pub struct HttpApp {
    pub port: u16,
    child: Child,
}

impl HttpApp {
    pub fn serve(dir: &Path, ip: &str) -> HttpApp {
        let port = free_port(ip);
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                ip,
                "--directory",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3 http.server");
        let app = HttpApp { port, child };
        let started = Instant::now();
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "http.server did not listen on {ip}:{port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        app
    }
}

impl Drop for HttpApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The watchdog's test app (`tests/fixtures/flaky_app.py`, issue 13): it
/// serves `ROOT/current`, and each release's `health` file says whether and
/// when it starts answering 500. Killed on drop. `netns`: started inside
/// that network namespace.
pub struct FlakyApp {
    pub port: u16,
    child: Child,
}

impl FlakyApp {
    pub fn start(root: &Path, bind: &str, netns: Option<&str>) -> FlakyApp {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/flaky_app.py");
        std::fs::create_dir_all(root).expect("app root");
        let port_file = root.join("app.port");
        let _ = std::fs::remove_file(&port_file);
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        let child = cmd
            .arg(&script)
            .arg(bind)
            .arg(root)
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the flaky app");
        let mut app = FlakyApp { port: 0, child };
        let started = Instant::now();
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                app.port = port;
                return app;
            }
            assert!(
                app.child.try_wait().ok().flatten().is_none(),
                "the flaky app exited at start"
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the flaky app did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FlakyApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on `ip`.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Plain HTTP GET (blocking, 5 s limit): (status, body).
pub fn http_get(ip: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect((ip, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A `.tar.gz` release archive with the given files.
pub fn artifact(path: &Path, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("artifact dir");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).expect("create artifact"),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        tar.append_data(&mut header, name, *body).expect("append");
    }
    tar.into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gz");
}

/// Writes a plan for `app` on `agents`, with the operator certificate
/// `(cert, key)` and an optional release.
pub fn write_plan(
    path: &Path,
    pki: &TestPki,
    operator: &(PathBuf, PathBuf),
    app: &str,
    release: Option<(&str, &Path)>,
    agents: &[&AgentProc],
) {
    let mut toml = format!("app = {app:?}\n\n");
    if let Some((id, artifact)) = release {
        toml.push_str(&format!(
            "[release]\nid = {id:?}\nartifact = {artifact:?}\n\n"
        ));
    }
    toml.push_str(&format!(
        "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n",
        pki.ca(),
        operator.0,
        operator.1
    ));
    for a in agents {
        toml.push_str(&format!(
            "[[hosts]]\nname = {:?}\naddress = \"{}\"\n\n",
            a.name, a.addr
        ));
    }
    std::fs::write(path, toml).expect("write plan");
}

/// An `[apps.NAME]` table with an http probe on `probe_url`.
pub fn app_toml(name: &str, root: &Path, probe_url: &str) -> String {
    format!(
        "[apps.{name}]\nroot = {root:?}\nkeep_releases = 3\nshared = [\"uploads/\"]\n\n\
         [[apps.{name}.probes]]\nkind = \"http\"\nname = \"health\"\nurl = {probe_url:?}\n\
         expect_status = [200]\nbody_contains = \"ok\"\nseverity = \"critical\"\ntimeout_ms = 3000\n\n"
    )
}

/// An `[apps.NAME]` table whose critical command probe fails while the file
/// `fail_flag` exists (the multi-agent tests' way to fail one host).
pub fn flagged_app_toml(name: &str, root: &Path, fail_flag: &Path) -> String {
    let probe = format!("test ! -e {}", fail_flag.display());
    format!(
        "[apps.{name}]\nroot = {root:?}\nkeep_releases = 3\n\n\
         [[apps.{name}.probes]]\nkind = \"command\"\nname = \"health\"\n\
         cmd = [\"sh\", \"-c\", {probe:?}]\nseverity = \"critical\"\ntimeout_ms = 5000\n\n"
    )
}

/// Gives the app at `root` a live release `id` (`ROOT/releases/ID` and
/// `ROOT/current` pointing at it), as a deployed app has: probes of an app
/// with nothing live are not applicable (issue 12), so a test that probes a
/// site served from elsewhere makes the app look deployed first.
pub fn live_release(root: &Path, id: &str) {
    std::fs::create_dir_all(root.join("releases").join(id)).expect("release dir");
    std::os::unix::fs::symlink(format!("releases/{id}"), root.join("current"))
        .expect("current symlink");
}

pub mod db;
pub mod sshd;

/// A helper process a test spawned (a lock holder, a renamed `sleep`),
/// killed and reaped on drop, so it never outlives the test, even on failure.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A webhook receiver for notification tests: answers every POST with 200
/// and keeps its raw request (head and body), after holding its first
/// `hang` connections unanswered (a receiver that hangs). One thread,
/// bounded to 90 s and 50 requests; stopped on drop.
pub struct Hook {
    pub port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hook {
    pub fn start(ip: &str) -> Hook {
        Hook::start_hanging(ip, 0)
    }

    pub fn start_hanging(ip: &str, hang: usize) -> Hook {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the hook");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut hung = Vec::new();
            let mut n = 0;
            while n < 50
                && !st.load(Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(90)
            {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                if hung.len() < hang {
                    hung.push(c);
                    continue;
                }
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(k) = c.read(&mut chunk) {
                    if k == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf);
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let want: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + want {
                        break;
                    }
                }
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                g.lock()
                    .expect("hook lock")
                    .push(String::from_utf8_lossy(&buf).into_owned());
                n += 1;
            }
        });
        Hook {
            port,
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.got.lock().expect("hook lock").clone()
    }

    /// The requests received so far as (path, JSON body); requests whose
    /// body is not JSON are left out.
    pub fn posts(&self) -> Vec<(String, serde_json::Value)> {
        self.requests()
            .iter()
            .filter_map(|r| {
                let (head, body) = r.split_once("\r\n\r\n")?;
                let path = head.split_whitespace().nth(1)?.to_string();
                Some((path, serde_json::from_str(body).ok()?))
            })
            .collect()
    }

    /// Waits (at most `secs`) for a request containing `text`.
    pub fn wait_for(&self, text: &str, secs: u64) -> Option<String> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(secs) {
            if let Some(r) = self.requests().into_iter().find(|r| r.contains(text)) {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The agent's activate jobs of `release`, finished: (submitted_at,
/// finished_at) in ms, in submission order.
pub fn activations(agent: &AgentProc, release: &str) -> Vec<(i64, i64)> {
    let j = agent.journal();
    let mut stmt = j
        .prepare(
            "SELECT submitted_at, finished_at FROM jobs WHERE kind = 'activate' \
             AND spec LIKE ?1 ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([format!("%{release}%")], |r| {
        Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?))
    })
    .expect("query")
    .map(|r| {
        let (start, end) = r.expect("row");
        (start, end.expect("the activate job finished"))
    })
    .collect()
}
