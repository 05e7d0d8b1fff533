//! The SSH route to an agent that has no open port (issue 15): a plan
//! host's `via = "ssh ..."` parsed and checked, the system `ssh` run with
//! its standard input and output as the connection mutual TLS then runs
//! over, and the ControlMaster sockets of one golivectl process.
//!
//! Nothing here goes through a local shell: `via` is split on whitespace
//! into an allow-listed set of ssh options and one destination, and passed
//! to `ssh` as arguments. In bridge mode the remote command (the agent's
//! program and config path) is checked to hold no character a remote shell
//! would treat specially. The SSH account proves nothing to the agent: the
//! bytes carried are a TLS session that the agent authenticates as always.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{oneshot, watch};

/// The program run; the system's `ssh` (OpenSSH) from `PATH`.
const SSH: &str = "ssh";
/// How long a master connection outlives its last call: long enough for
/// the gaps between the steps of a deployment, short enough that one
/// golivectl killed before it could close its masters leaves nothing for long.
const CONTROL_PERSIST_SECS: u32 = 60;
/// How long a call's ssh may take to end by itself once its connection is
/// dropped, before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(500);
/// What of ssh's error output is kept for a message.
const MAX_STDERR: usize = 4096;

/// How a host is reached through SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `ssh -W ADDRESS`: the SSH server connects to the agent's address (a
    /// stdio forward); needs `AllowTcpForwarding` on the server.
    Forward,
    /// `ssh DEST AGENT bridge --config CONFIG`: the remote `golive-agent
    /// bridge` relays to the agent's own listen address; for servers that
    /// refuse forwarding (many shared hosts).
    Bridge { agent: String, config: String },
}

/// `via = "ssh [OPTIONS] [USER@]HOST"` as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Allow-listed ssh options, in order (`-p 2222`, `-i KEY`, ...).
    pub options: Vec<String>,
    pub destination: String,
}

/// Options taking a value, and what the value is.
const VALUE_OPTIONS: &[(&str, &str)] = &[
    ("-p", "port"),
    ("-i", "identity file"),
    ("-l", "login name"),
    ("-F", "ssh config file"),
    ("-J", "jump host"),
    ("-o", "KEY=VALUE option"),
];
/// Options without a value.
const FLAG_OPTIONS: &[&str] = &["-4", "-6", "-C"];
/// `-o` keys golivectl sets itself, or that would run a local shell
/// command, open other forwardings or change what ssh's standard input
/// and output carry. An ssh config file (`-F`) is the operator's own.
const REFUSED_KEYS: &[&str] = &[
    "batchmode",
    "clearallforwardings",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "dynamicforward",
    "exitonforwardfailure",
    "forkafterauthentication",
    "forwardagent",
    "forwardx11",
    "localcommand",
    "localforward",
    "permitlocalcommand",
    "proxycommand",
    "remotecommand",
    "remoteforward",
    "requesttty",
    "sessiontype",
    "stdinnull",
    "tunnel",
];

/// Parses `via`. The message of an error says what to write instead.
pub fn parse_via(text: &str) -> Result<Via, String> {
    if text.contains(['"', '\'', '\\', '`', '$', ';', '|', '&', '<', '>']) {
        return Err(format!(
            "{text:?} is not run by a shell, so quotes, `\\`, `$`, `;`, `|`, `&`, `<` and `>` \
             have no meaning in it; write the ssh words separated by spaces, e.g. \
             \"ssh -p 2222 -i ~/.ssh/golive deploy@shop.example\", and put anything more in an \
             ssh config file (-F FILE)"
        ));
    }
    let mut words = text.split_whitespace();
    if words.next() != Some("ssh") {
        return Err(format!(
            "{text:?}: the only transport is ssh; write \"ssh [OPTIONS] USER@HOST\", e.g. \
             \"ssh deploy@shop.example\", or remove `via` to connect to `address` directly"
        ));
    }
    let mut options = Vec::new();
    let mut destination: Option<String> = None;
    while let Some(word) = words.next() {
        if let Some((opt, what)) = VALUE_OPTIONS.iter().find(|(o, _)| *o == word) {
            let Some(value) = words.next() else {
                return Err(format!("{opt} needs a {what} after it"));
            };
            check_option_value(opt, value)?;
            options.push(opt.to_string());
            options.push(value.to_string());
        } else if FLAG_OPTIONS.contains(&word) {
            options.push(word.to_string());
        } else if word.starts_with('-') {
            return Err(format!(
                "ssh option {word:?} is not accepted here; use -p PORT, -i FILE, -l USER, \
                 -F FILE, -J JUMP, -o KEY=VALUE, -4, -6 or -C (each value a separate word), or \
                 put it in an ssh config file (-F FILE)"
            ));
        } else if let Some(first) = &destination {
            return Err(format!(
                "{word:?} after the destination {first:?}: `via` names one [USER@]HOST and no \
                 remote command (golivectl chooses what runs; see ssh_mode)"
            ));
        } else {
            check_destination(word)?;
            destination = Some(word.to_string());
        }
    }
    match destination {
        Some(destination) => Ok(Via {
            options,
            destination,
        }),
        None => Err(format!(
            "{text:?} names no destination; write \"ssh [OPTIONS] USER@HOST\""
        )),
    }
}

fn check_option_value(opt: &str, value: &str) -> Result<(), String> {
    match opt {
        "-p" => match value.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => Err(format!(
                "-p {value:?}: the port is a number from 1 to 65535"
            )),
        },
        "-o" => {
            let Some((key, val)) = value.split_once('=') else {
                return Err(format!(
                    "-o {value:?}: write the option as one word KEY=VALUE, e.g. -o \
                     ServerAliveInterval=10"
                ));
            };
            if key.is_empty() || val.is_empty() {
                return Err(format!("-o {value:?}: both KEY and VALUE are needed"));
            }
            if REFUSED_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "-o {key}: golivectl sets BatchMode, ConnectTimeout, the ControlMaster \
                     options and ExitOnForwardFailure itself, and does not pass options that \
                     run a local command, open other forwardings or change what ssh carries"
                ));
            }
            Ok(())
        }
        "-J" | "-l" => check_destination(value),
        _ if value.starts_with('-') => Err(format!("{opt} {value:?}: a value cannot start with -")),
        _ => Ok(()),
    }
}

/// `[USER@]HOST` (or a `Host` alias of an ssh config file).
fn check_destination(word: &str) -> Result<(), String> {
    let ok = !word.is_empty()
        && !word.starts_with('-')
        && !word.ends_with('@')
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '-' | '_' | '@' | ':' | '[' | ']' | ',' | '%')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{word:?} is not a [USER@]HOST (letters, digits, `.`, `-`, `_`, `@`, `:`)"
        ))
    }
}

/// A word of the remote command in bridge mode: a path or program name a
/// remote shell passes on as it is (a leading `~/` is expanded there).
pub fn check_remote_word(word: &str) -> Result<(), String> {
    let body = word.strip_prefix("~/").unwrap_or(word);
    let ok = !body.is_empty()
        && !word.starts_with('-')
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{word:?}: the remote shell runs this, so it may hold only letters, digits, `/`, \
             `.`, `_`, `-`, `+` and a leading `~/`"
        ))
    }
}

/// The private directory of one golivectl process's ControlMaster sockets
/// (0700, under `TMPDIR`). Dropping it asks every master in it to exit
/// (`ssh -O exit`) and removes the directory; a golivectl that is killed
/// leaves masters that exit by themselves `CONTROL_PERSIST_SECS` after
/// their last call (each removing its socket).
pub struct ControlDir {
    dir: tempfile::TempDir,
}

impl ControlDir {
    pub fn new() -> std::io::Result<ControlDir> {
        // tempfile creates the directory 0700: nobody else can reach the
        // sockets (ssh refuses a ControlPath in a directory others can write).
        let dir = tempfile::Builder::new().prefix("golive-ssh-").tempdir()?;
        Ok(ControlDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            close_master(&entry.path());
        }
    }
}

/// `ssh -O exit` on one control socket, bounded: the master ends its
/// connection and removes the socket.
fn close_master(socket: &Path) {
    let mut control_path = std::ffi::OsString::from("ControlPath=");
    control_path.push(socket);
    let child = std::process::Command::new(SSH)
        .args(["-F", "none", "-o"])
        .arg(control_path)
        .args(["-O", "exit", "golive-control"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return;
    };
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How one host is reached: ssh's options and destination, the mode, and
/// the control directory shared by the hosts of a plan.
pub struct Route {
    pub via: Via,
    pub mode: Mode,
    pub control: Arc<ControlDir>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ssh {}", self.via.destination)
    }
}

impl Route {
    /// "via ssh deploy@shop.example (bridge)", for messages.
    pub fn describe(&self) -> String {
        match self.mode {
            Mode::Forward => format!("via ssh {}", self.via.destination),
            Mode::Bridge { .. } => format!("via ssh {} (bridge)", self.via.destination),
        }
    }

    /// The ssh command line: golivectl's options, the plan's, then the
    /// stdio forward to `addr` or the remote bridge.
    pub fn args(&self, addr: &str, connect_timeout: Duration) -> Vec<std::ffi::OsString> {
        let mut control_path = std::ffi::OsString::from("ControlPath=");
        control_path.push(self.control.path().join("%C"));
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |s: &str| args.push(s.into());
        push("-T");
        for o in [
            "BatchMode=yes".to_string(),
            format!("ConnectTimeout={}", connect_timeout.as_secs().max(1)),
            "ExitOnForwardFailure=yes".into(),
            "ControlMaster=auto".into(),
            format!("ControlPersist={CONTROL_PERSIST_SECS}"),
            // A dead link is noticed by the master, not only by a call's deadline.
            "ServerAliveInterval=15".into(),
            "ServerAliveCountMax=3".into(),
        ] {
            push("-o");
            push(&o);
        }
        args.push("-o".into());
        args.push(control_path);
        for o in &self.via.options {
            args.push(o.into());
        }
        match &self.mode {
            Mode::Forward => {
                args.push("-W".into());
                args.push(addr.into());
                args.push("--".into());
                args.push((&self.via.destination).into());
            }
            Mode::Bridge { agent, config } => {
                for a in [
                    "--",
                    &self.via.destination,
                    agent,
                    "bridge",
                    "--config",
                    config,
                ] {
                    args.push(a.into());
                }
            }
        }
        args
    }

    /// Starts ssh; its standard input and output are the returned stream.
    pub fn spawn(
        &self,
        addr: &str,
        connect_timeout: Duration,
    ) -> std::io::Result<(SshStream, Diag)> {
        let mut child = tokio::process::Command::new(SSH)
            .args(self.args(addr, connect_timeout))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let text = Arc::new(Mutex::new(Vec::new()));
        let (stderr_done_tx, stderr_done) = watch::channel(false);
        let sink = Arc::clone(&text);
        // ssh's error output, capped. The master a first call forks keeps
        // no copy of it (OpenSSH points its stdio at /dev/null), so this
        // ends with the ssh process of the call.
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                let room = MAX_STDERR.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = stderr_done_tx.send(true);
        });
        let (exit_tx, exited) = watch::channel(None);
        let (kill, mut killed) = oneshot::channel::<()>();
        // The child lives as long as the stream. Dropping the stream (the
        // connection is done, or failed) closes ssh's input; ssh gets
        // `EXIT_GRACE` to end by itself, so a failing ssh's exit status is
        // still seen, and is then killed.
        tokio::spawn(async move {
            let status = tokio::select! {
                biased;
                status = child.wait() => status.ok(),
                _ = &mut killed => match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
                    Ok(status) => status.ok(),
                    Err(_) => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        None
                    }
                },
            };
            if status.is_some() {
                let _ = exit_tx.send(status);
            }
        });
        Ok((
            SshStream {
                stdin,
                stdout,
                _kill: kill,
            },
            Diag {
                forward: self.mode == Mode::Forward,
                stderr: text,
                stderr_done,
                exited,
            },
        ))
    }
}

/// What ssh said and how it ended, for the message when a connection
/// through it fails.
pub struct Diag {
    forward: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: watch::Receiver<bool>,
    exited: watch::Receiver<Option<ExitStatus>>,
}

impl Diag {
    /// ssh's own account of a failure, when ssh failed: waits (at most
    /// `within`) for it to exit and finish its error output. `None` while
    /// ssh still runs, or when it ended well (what it said then, such as a
    /// multiplexing warning, is no error): the failure was not ssh's.
    pub async fn failure(&mut self, within: Duration) -> Option<String> {
        let _ = tokio::time::timeout(within, self.exited.wait_for(Option::is_some)).await;
        let status = *self.exited.borrow();
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.stderr_done.wait_for(|d| *d)).await;
        let said = self.said();
        match status {
            Some(status) if !status.success() => Some(self.explain(&status_text(status), &said)),
            _ => None,
        }
    }

    /// The message when the connection did not come up in time.
    pub fn timed_out(&self, after: Duration) -> String {
        let said = self.said();
        let when = format!(
            "no connection within {}",
            golive_shared::timefmt::seconds(after)
        );
        self.explain(&when, &said)
    }

    fn said(&self) -> String {
        let bytes = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn explain(&self, how: &str, said: &str) -> String {
        let mut text = format!("ssh failed ({how})");
        if !said.is_empty() {
            text.push_str(": ");
            text.push_str(said);
        }
        let hint = if self.forward
            && (said.contains("administratively prohibited")
                || said.contains("Stdio forwarding request failed"))
        {
            "; the SSH server does not allow forwarding: set ssh_mode = \"bridge\" on this host \
             (the remote golive-agent bridge relays to the agent instead)"
        } else if said.contains("Permission denied") {
            "; check the key (-i or the ssh config) and the account's authorized_keys"
        } else if said.contains("Host key verification failed") {
            "; the server's host key is not in known_hosts: add it (after checking its \
             fingerprint) to the known_hosts file ssh uses"
        } else if said.contains("Connection refused") && self.forward {
            "; is the agent listening at `address` on that host?"
        } else {
            ""
        };
        text.push_str(hint);
        text
    }
}

fn status_text(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".into(),
    }
}

/// ssh's standard output (what the agent sends) and input (what we send).
pub struct SshStream {
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Dropped with the stream: ends this call's ssh.
    _kill: oneshot::Sender<()>,
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

/// Where a plan's relative `-i` and `-F` files are: against the plan's
/// directory, as every other path of a plan.
pub fn resolve_files(via: &mut Via, base: &Path) {
    let mut i = 0;
    while i + 1 < via.options.len() {
        if matches!(via.options[i].as_str(), "-i" | "-F") {
            let value = &via.options[i + 1];
            if !value.starts_with('/') && !value.starts_with('~') && value != "none" {
                via.options[i + 1] = PathBuf::from(base)
                    .join(value)
                    .to_string_lossy()
                    .into_owned();
            }
            i += 2;
        } else if VALUE_OPTIONS.iter().any(|(o, _)| *o == via.options[i]) {
            i += 2;
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue15_via_takes_allow_listed_options_and_one_destination() {
        let v =
            parse_via("ssh  -p 2222 -i keys/golive -o ServerAliveInterval=5 deploy@shop.example")
                .unwrap();
        assert_eq!(
            v.options,
            [
                "-p",
                "2222",
                "-i",
                "keys/golive",
                "-o",
                "ServerAliveInterval=5"
            ]
        );
        assert_eq!(v.destination, "deploy@shop.example");
        // Options after the destination, as ssh takes them.
        let v = parse_via("ssh web1 -4").unwrap();
        assert_eq!(
            (v.options.as_slice(), v.destination.as_str()),
            (&["-4".to_string()][..], "web1")
        );

        for (via, says) in [
            ("ssh", "names no destination"),
            ("mosh deploy@h", "the only transport is ssh"),
            ("ssh deploy@h uptime", "no remote command"),
            ("ssh -p deploy@h", "the port is a number"),
            ("ssh -p", "needs a port"),
            ("ssh -L 80:x:80 h", "is not accepted here"),
            ("ssh -oProxyCommand=nc h", "is not accepted here"),
            ("ssh -o ProxyCommand=nc%20x h", "run a local command"),
            ("ssh -o controlpath=/x h", "sets BatchMode"),
            ("ssh -o Compression h", "KEY=VALUE"),
            ("ssh 'deploy@h'", "not run by a shell"),
            ("ssh h; rm -rf /", "not run by a shell"),
            ("ssh $HOST", "not run by a shell"),
            ("ssh -i -x h", "cannot start with -"),
            ("ssh user@", "is not a [USER@]HOST"),
        ] {
            let e = parse_via(via).expect_err(via);
            assert!(e.contains(says), "{via}: {e}");
        }
    }

    #[test]
    fn issue15_remote_words_are_shell_safe() {
        for ok in [
            "golive-agent",
            "/usr/local/bin/golive-agent",
            "~/bin/golive-agent",
            "etc/a.toml",
        ] {
            check_remote_word(ok).unwrap();
        }
        for bad in ["", "~", "a b", "a;b", "$(x)", "-x", "~user/x", "a'b", "*"] {
            assert!(check_remote_word(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn issue15_the_command_line_sets_golivectls_options_first() {
        let control = Arc::new(ControlDir::new().unwrap());
        let dir = control.path().to_path_buf();
        let mut via = parse_via("ssh -p 2222 -i keys/k -F /etc/x deploy@h").unwrap();
        resolve_files(&mut via, Path::new("/plans"));
        let route = Route {
            via,
            mode: Mode::Forward,
            control: Arc::clone(&control),
        };
        let args: Vec<String> = route
            .args("127.0.0.1:7443", Duration::from_secs(10))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let text = args.join(" ");
        assert!(text.starts_with("-T -o BatchMode=yes -o ConnectTimeout=10 -o ExitOnForwardFailure=yes -o ControlMaster=auto -o ControlPersist=60"), "{text}");
        assert!(
            text.contains(&format!("-o ControlPath={}/%C", dir.display())),
            "{text}"
        );
        assert!(
            text.ends_with("-p 2222 -i /plans/keys/k -F /etc/x -W 127.0.0.1:7443 -- deploy@h"),
            "{text}"
        );
        let route = Route {
            mode: Mode::Bridge {
                agent: "~/bin/golive-agent".into(),
                config: "~/golive/agent.toml".into(),
            },
            ..route
        };
        let text = route
            .args("127.0.0.1:7443", Duration::from_secs(3))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.ends_with("-- deploy@h ~/bin/golive-agent bridge --config ~/golive/agent.toml"),
            "{text}"
        );
        // The private directory goes with the last route that uses it.
        drop(route);
        drop(control);
        assert!(!dir.exists());
    }
}
