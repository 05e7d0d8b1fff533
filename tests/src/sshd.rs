//! A private OpenSSH server for the SSH transport's tests (issue 15):
//! `/usr/sbin/sshd -D -e -f CONFIG` on a free loopback port, with its own
//! host key and `authorized_keys` (a client key made here with
//! `ssh-keygen`), and an ssh client config that trusts exactly that host
//! key and offers exactly that client key (never the user's `~/.ssh`).
//! Killed and reaped on drop, even when the test fails.
//!
//! sshd runs as root (the tests do) and logs the test's own user in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestSshd {
    pub ip: String,
    pub port: u16,
    pub dir: PathBuf,
    /// sshd's log (`-e`: its messages on stderr).
    pub log: PathBuf,
    /// An ssh client config for this server: its host key, the client key.
    pub client_config: PathBuf,
    /// The same, offering a key the server does not know.
    pub wrong_key_config: PathBuf,
    /// The account to log in as (the test's own).
    pub user: String,
    child: Child,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "golive-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen (openssh-client; scripts/test installs it)");
    assert!(status.success(), "ssh-keygen {} failed", path.display());
}

fn public(key: &Path) -> String {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    std::fs::read_to_string(&p)
        .expect("read public key")
        .trim()
        .to_string()
}

impl TestSshd {
    /// Starts sshd on `ip` (a loopback address), with TCP forwarding
    /// allowed or refused (`AllowTcpForwarding no`, as on many shared hosts).
    pub fn start(dir: &Path, ip: &str, forwarding: bool) -> TestSshd {
        TestSshd::start_for(dir, ip, forwarding, None)
    }

    /// As [`TestSshd::start`], logging in `user` instead of the test's own
    /// (a non-root account the test made). sshd reads `authorized_keys` as
    /// that user, so the server's directory and that file are made
    /// readable to others (they hold public keys only; `dir` must be
    /// traversable too).
    pub fn start_for(dir: &Path, ip: &str, forwarding: bool, user: Option<&str>) -> TestSshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.is_file(),
            "{} is missing: install openssh-server (scripts/test does)",
            sshd.display()
        );
        assert!(
            nix::unistd::geteuid().is_root(),
            "the SSH tests run sshd as root, as the test command does"
        );
        let user = match user {
            Some(u) => u.to_string(),
            None => {
                nix::unistd::User::from_uid(nix::unistd::geteuid())
                    .expect("look up the test's user")
                    .expect("the test's user exists")
                    .name
            }
        };
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).expect("sshd dir");
        // sshd's privilege separation needs this directory (the package
        // makes it at boot through systemd, which the test machine lacks).
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let (host_key, client_key, wrong_key) = (
            dir.join("host_key"),
            dir.join("client_key"),
            dir.join("wrong_key"),
        );
        for k in [&host_key, &client_key, &wrong_key] {
            keygen(k);
        }
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", public(&client_key))).expect("authorized_keys");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod sshd dir");
            std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644))
                .expect("chmod authorized_keys");
        }
        let port = crate::free_port(ip);
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress {ip}\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AllowUsers {user}\nAllowTcpForwarding {fwd}\nPrintMotd no\nPrintLastLog no\n\
                 LogLevel VERBOSE\nPidFile {pid}\nSubsystem sftp internal-sftp\n",
                host = host_key.display(),
                auth = authorized.display(),
                fwd = if forwarding { "yes" } else { "no" },
                pid = dir.join("sshd.pid").display(),
            ),
        )
        .expect("sshd_config");
        let known_hosts = dir.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[{ip}]:{port} {}\n", public(&host_key)),
        )
        .expect("known_hosts");
        let client_config = dir.join("ssh_config");
        let wrong_key_config = dir.join("ssh_config_wrong_key");
        for (path, key) in [
            (&client_config, &client_key),
            (&wrong_key_config, &wrong_key),
        ] {
            std::fs::write(
                path,
                format!(
                    "Host *\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  \
                     StrictHostKeyChecking yes\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
                     IdentityAgent none\n  PasswordAuthentication no\n  LogLevel ERROR\n",
                    kh = known_hosts.display(),
                    key = key.display(),
                ),
            )
            .expect("ssh client config");
        }
        let log = dir.join("sshd.log");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("sshd log"))
            .stderr(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("sshd log"),
            )
            .spawn()
            .expect("spawn sshd");
        let mut server = TestSshd {
            ip: ip.into(),
            port,
            dir,
            log,
            client_config,
            wrong_key_config,
            user,
            child,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect((ip, port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("sshd exited at start ({status}):\n{}", server.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd did not listen within 10 s:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many logins the server accepted so far.
    pub fn logins(&self) -> usize {
        self.log_text().matches("Accepted publickey for").count()
    }

    /// `via` for a plan: ssh with this server's client config.
    pub fn via(&self, config: &Path) -> String {
        format!(
            "ssh -F {} -p {} {}@{}",
            config.display(),
            self.port,
            self.user,
            self.ip
        )
    }

    /// Stops the server now: SIGKILL to its session processes (which
    /// outlive the listener otherwise), then to the listener, reaped.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            for pid in descendants(self.child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every process below `root`, from the parent ids in `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}
