//! Running database client tools (pg_dump, mariadb-dump, psql, ...) safely:
//! no shell, secrets only in the environment or a private option file (never
//! in argv, which `/proc` shows to every user), stderr captured in a bounded
//! tail for error messages, output streamed rather than buffered, every run
//! under a deadline (the database's `timeout_secs`: a dump stuck behind a
//! lock must not hold a deployment forever), and every child killed and
//! reaped if the caller gives up early (errors, panics).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::stream::io_err;
use super::{BackupError, Progress};

/// How much of a tool's stderr is kept for error messages.
const STDERR_TAIL: usize = 4 * 1024;
/// Limit on the stdout of [`run`] (small queries only).
const RUN_STDOUT_LIMIT: usize = 1024 * 1024;
/// Limit on a password file's size: a secret, not a document.
const SECRET_LIMIT: u64 = 64 * 1024;
/// Copy buffer for [`stream_out`] and [`stream_in`].
const BUF: usize = 256 * 1024;

/// A client program found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub path: PathBuf,
    /// The name it was found under (e.g. `mysqldump` when `mariadb-dump` is missing).
    pub name: String,
}

impl Tool {
    /// A command for this tool, with the minimal environment of every child
    /// ([`crate::exec::minimal_env`]); the caller adds what the tool needs.
    /// stdin/stdout/stderr are set by [`run`], [`stream_out`] and [`stream_in`].
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        crate::exec::minimal_env(&mut cmd);
        cmd
    }
}

/// Finds the first of `names` in `bin_dir`, else on PATH.
pub fn find(names: &[&str], bin_dir: Option<&Path>) -> Result<Tool, BackupError> {
    match golive_shared::config::find_tool(names, bin_dir) {
        Some(path) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| names.first().copied().unwrap_or_default().to_string());
            Ok(Tool { path, name })
        }
        None => Err(BackupError::Invalid(format!(
            "cannot find `{}` {}; install the database client tools, or set bin_dir in the \
             database's entry of the agent config (`golive-agent check-config` lists missing tools)",
            names.join("` or `"),
            match bin_dir {
                Some(d) => format!("in {} (bin_dir)", d.display()),
                None => "on PATH".to_string(),
            }
        ))),
    }
}

/// Reads a password file. It must not be readable by group or others; one
/// trailing newline (`\n` or `\r\n`) is removed. The content never appears
/// in an error.
pub fn read_secret(path: &Path) -> Result<String, BackupError> {
    use std::os::unix::fs::PermissionsExt;
    let file =
        std::fs::File::open(path).map_err(|e| io_err("cannot open password file", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| io_err("cannot stat password file", path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(BackupError::Invalid(format!(
            "password file {} has mode {mode:04o}: group or others can read it; \
             run `chmod 600 {}` (owned by the agent's user)",
            path.display(),
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(BackupError::Invalid(format!(
            "password file {} is not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(SECRET_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err("cannot read password file", path, e))?;
    if bytes.len() as u64 > SECRET_LIMIT {
        return Err(BackupError::Invalid(format!(
            "password file {} is larger than {SECRET_LIMIT} bytes; it should hold only the password",
            path.display()
        )));
    }
    let Ok(mut text) = String::from_utf8(bytes) else {
        return Err(BackupError::Invalid(format!(
            "password file {} is not valid UTF-8",
            path.display()
        )));
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(BackupError::Invalid(format!(
            "password file {} is empty; write the password into it, or remove password_file \
             from the database's config",
            path.display()
        )));
    }
    Ok(text)
}

/// Replaces every occurrence of `secret` in a tool error's text, in case a
/// tool ever echoes it back.
pub fn redact(err: BackupError, secret: Option<&str>) -> BackupError {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return err;
    };
    match err {
        BackupError::Tool {
            tool,
            status,
            stderr,
        } => BackupError::Tool {
            tool,
            status,
            stderr: stderr.replace(secret, "<redacted>"),
        },
        BackupError::Invalid(text) => BackupError::Invalid(text.replace(secret, "<redacted>")),
        other => other,
    }
}

/// A child's stderr, drained by a background thread that keeps only the
/// last 4 KiB (so a chatty tool can neither block on a full pipe nor grow
/// the agent's memory).
pub struct StderrTail {
    handle: Option<JoinHandle<(Vec<u8>, bool)>>,
}

impl StderrTail {
    pub fn spawn(mut stderr: ChildStderr) -> StderrTail {
        let handle = std::thread::Builder::new()
            .name("stderr-tail".into())
            .spawn(move || {
                let mut tail = Vec::with_capacity(2 * STDERR_TAIL);
                let mut cut = false;
                let mut buf = [0u8; 4096];
                loop {
                    match stderr.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            tail.extend_from_slice(&buf[..n]);
                            if tail.len() > 2 * STDERR_TAIL {
                                tail.drain(..tail.len() - STDERR_TAIL);
                                cut = true;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                    cut = true;
                }
                (tail, cut)
            })
            .ok();
        StderrTail { handle }
    }

    /// Waits for EOF (the child has exited) and returns the tail as text.
    pub fn finish(mut self) -> String {
        let Some((tail, cut)) = self.handle.take().and_then(|h| h.join().ok()) else {
            return String::new();
        };
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim();
        if cut {
            format!("...{text}")
        } else {
            text.to_string()
        }
    }
}

/// A spawned child that is killed and reaped if dropped before [`Guard::wait`],
/// and killed by its watchdog if it outlives its deadline.
pub(crate) struct Guard {
    child: Option<Child>,
    tool: String,
    timeout: Duration,
    watchdog: Option<Watchdog>,
}

/// Kills the child (SIGKILL) when the deadline passes. It is always disarmed
/// before the child is reaped, so it can never signal a recycled pid.
struct Watchdog {
    disarm: SyncSender<()>,
    handle: JoinHandle<()>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(pid: u32, timeout: Duration) -> Watchdog {
        let (disarm, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let handle = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                flag.store(true, Ordering::Release);
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        Watchdog {
            disarm,
            handle,
            fired,
        }
    }

    /// Disarms it (call before reaping the child); true if it had already
    /// killed the child.
    fn stop(self) -> bool {
        let _ = self.disarm.try_send(());
        let _ = self.handle.join();
        self.fired.load(Ordering::Acquire)
    }
}

/// Waits for `child` to exit without reaping it (it stays a zombie, its pid
/// reserved), so that a [`Watchdog`] can be stopped before the reap.
fn wait_unreaped(child: &Child) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    while let Err(nix::errno::Errno::EINTR) =
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
    {}
}

/// The error for a tool its watchdog killed at the deadline.
fn deadline_error(tool: String, timeout: Duration, stderr: &str) -> BackupError {
    BackupError::Tool {
        tool,
        status: format!("killed after its deadline of {} s", timeout.as_secs()),
        stderr: format!(
            "it did not finish in time (is it waiting on a lock?); raise the \
             database's timeout_secs in the agent config if it needs longer{}",
            if stderr.is_empty() {
                String::new()
            } else {
                format!("; its error output: {stderr}")
            }
        ),
    }
}

impl Guard {
    pub(crate) fn spawn(
        mut cmd: Command,
        stdin: Stdio,
        stdout: Stdio,
        timeout: Duration,
    ) -> Result<(Guard, StderrTail), BackupError> {
        let tool = tool_name(&cmd);
        let mut child = cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BackupError::Tool {
                tool: tool.clone(),
                status: "not started".into(),
                stderr: format!(
                    "cannot start {}: {e}",
                    Path::new(cmd.get_program()).display()
                ),
            })?;
        let watchdog = Some(Watchdog::start(child.id(), timeout));
        let tail = StderrTail::spawn(child.stderr.take().expect("stderr piped"));
        Ok((
            Guard {
                child: Some(child),
                tool,
                timeout,
                watchdog,
            },
            tail,
        ))
    }

    pub(crate) fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until wait")
    }

    /// Stops the watchdog; true if it had already killed the child.
    fn disarm(&mut self) -> bool {
        self.watchdog.take().is_some_and(Watchdog::stop)
    }

    /// Waits for the child to exit (the watchdog still armed), then disarms
    /// and reaps it. Returns the status and whether the deadline killed it.
    fn wait(mut self) -> (io::Result<ExitStatus>, bool) {
        let mut child = self.child.take().expect("wait called once");
        wait_unreaped(&child);
        let fired = self.disarm();
        (child.wait(), fired)
    }

    /// Kills and reaps the child.
    fn kill(mut self) {
        self.disarm();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits and turns a non-zero exit (or the deadline) into [`BackupError::Tool`].
    pub(crate) fn check(self, tail: StderrTail, what: Option<&str>) -> Result<(), BackupError> {
        let tool = match what {
            Some(w) => format!("{} ({w})", self.tool),
            None => self.tool.clone(),
        };
        let timeout = self.timeout;
        let (status, fired) = self.wait();
        let stderr = tail.finish();
        if fired {
            return Err(deadline_error(tool, timeout, &stderr));
        }
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(BackupError::Tool {
                tool,
                status: describe(s),
                stderr: if stderr.is_empty() {
                    "(no error output)".into()
                } else {
                    stderr
                },
            }),
            Err(e) => Err(BackupError::Tool {
                tool,
                status: "unknown".into(),
                stderr: format!("cannot wait for it: {e}"),
            }),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.disarm();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tool_name(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(OsStr::new("tool"))
        .to_string_lossy()
        .into_owned()
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Runs a small query-like command (`psql -XAtc ...`) and returns its stdout
/// (at most 1 MiB; more is an error). `what` names the operation in errors.
pub fn run(cmd: Command, what: &str, timeout: Duration) -> Result<String, BackupError> {
    let (mut guard, tail) = Guard::spawn(cmd, Stdio::null(), Stdio::piped(), timeout)?;
    let stdout = guard.child().stdout.take().expect("stdout piped");
    let mut out = Vec::new();
    let read = stdout
        .take(RUN_STDOUT_LIMIT as u64 + 1)
        .read_to_end(&mut out);
    if let Err(e) = read {
        let tool = guard.tool.clone();
        guard.kill();
        return Err(BackupError::Tool {
            tool: format!("{tool} ({what})"),
            status: "killed".into(),
            stderr: format!("cannot read its output: {e}"),
        });
    }
    if out.len() > RUN_STDOUT_LIMIT {
        let tool = guard.tool.clone();
        guard.kill();
        return Err(BackupError::Tool {
            tool: format!("{tool} ({what})"),
            status: "killed".into(),
            stderr: format!("its output exceeded {RUN_STDOUT_LIMIT} bytes"),
        });
    }
    guard.check(tail, Some(what))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs `cmd` with its stdout copied into `sink` (whose errors are reported
/// against `sink_path`; a full disk becomes [`BackupError::DiskFull`]),
/// calling `progress` with the running byte count. Returns the bytes copied.
/// A non-zero exit is [`BackupError::Tool`] with the stderr tail; on a write
/// error the tool is killed.
pub fn stream_out(
    cmd: Command,
    sink: &mut dyn Write,
    sink_path: &Path,
    progress: Progress,
    timeout: Duration,
) -> Result<u64, BackupError> {
    let (mut guard, tail) = Guard::spawn(cmd, Stdio::null(), Stdio::piped(), timeout)?;
    let mut stdout = guard.child().stdout.take().expect("stdout piped");
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let tool = guard.tool.clone();
                guard.kill();
                return Err(BackupError::Tool {
                    tool,
                    status: "killed".into(),
                    stderr: format!("cannot read its output: {e}"),
                });
            }
        };
        if let Err(e) = sink.write_all(&buf[..n]) {
            guard.kill();
            return Err(io_err("cannot write", sink_path, e).with_written(total));
        }
        total += n as u64;
        progress(total);
    }
    drop(stdout);
    guard.check(tail, None)?;
    Ok(total)
}

/// Runs `cmd` with `source` (read errors reported against `source_path`)
/// copied into its stdin, calling `progress` with the running byte count.
/// If the tool exits early (a broken pipe), its own error is returned. On a
/// read error the tool is killed before its stdin is closed, so it never
/// sees a clean end of input.
pub fn stream_in(
    cmd: Command,
    source: &mut dyn Read,
    source_path: &Path,
    progress: Progress,
    timeout: Duration,
) -> Result<(), BackupError> {
    let (mut guard, tail) = Guard::spawn(cmd, Stdio::piped(), Stdio::null(), timeout)?;
    let mut stdin = guard.child().stdin.take().expect("stdin piped");
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Kill first: closing stdin would look like a complete input.
                guard.kill();
                drop(stdin);
                let _ = tail.finish();
                return Err(io_err("cannot read", source_path, e));
            }
        };
        if stdin.write_all(&buf[..n]).is_err() {
            // The tool stopped reading (it exited); its status and stderr say why.
            break;
        }
        total += n as u64;
        progress(total);
    }
    drop(stdin);
    guard.check(tail, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Deadline for tools that finish at once.
    const T: Duration = Duration::from_secs(60);

    #[test]
    fn a_tool_past_its_deadline_is_killed_and_named() {
        let started = std::time::Instant::now();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo waiting for a lock >&2; exec sleep 30"]);
        let err = run(cmd, "stuck query", Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20));
        let text = err.to_string();
        assert!(text.contains("deadline"), "{text}");
        assert!(text.contains("timeout_secs"), "{text}");
        assert!(text.contains("waiting for a lock"), "{text}");

        // A tool that never reads its stdin is killed too, not waited on forever.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec sleep 30"]);
        let data = vec![1u8; 4 << 20];
        let err = stream_in(
            cmd,
            &mut &data[..],
            Path::new("mem"),
            &mut |_| {},
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("deadline"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    /// The test process's environment (CARGO_*, RUST_*...) stands in for an
    /// agent's: none of it but the allow-list reaches a tool.
    #[test]
    fn issue11_tools_start_from_the_minimal_environment() {
        let sh = find(&["sh"], None).unwrap();
        let mut cmd = sh.command();
        cmd.args(["-c", "env"]).env("PGPASSWORD", "tool-needs-it");
        let out = run(cmd, "env", T).unwrap();
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, _)| k)
            .collect();
        assert!(
            names.contains(&"PATH") && names.contains(&"PGPASSWORD"),
            "{out}"
        );
        for name in names {
            assert!(
                matches!(
                    name,
                    "PATH" | "HOME" | "LANG" | "TZ" | "PGPASSWORD" | "PWD" | "SHLVL" | "_"
                ) || name.starts_with("LC_"),
                "{name} reached the tool: {out}"
            );
        }
    }

    #[test]
    fn secrets_need_private_files_and_lose_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret pass\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s3cret pass");
        std::fs::write(&p, "a\r\n\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "a\r\n");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret(&p).is_err());
    }

    #[test]
    fn missing_tool_names_the_tool_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = find(&["no-such-dump", "nor-this"], Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-dump` or `nor-this"), "{err}");
        assert!(err.contains("bin_dir"), "{err}");
        let sh = find(&["no-such-tool", "sh"], None).unwrap();
        assert_eq!(sh.name, "sh");
    }

    #[test]
    fn run_returns_stdout_and_failures_carry_the_stderr_tail() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello"]);
        assert_eq!(run(cmd, "greeting", T).unwrap(), "hello\n");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "head -c 100000 /dev/zero | tr '\\0' x >&2; echo boom >&2; exit 3",
        ]);
        match run(cmd, "noise", T).unwrap_err() {
            BackupError::Tool {
                tool,
                status,
                stderr,
            } => {
                assert_eq!(tool, "sh (noise)");
                assert_eq!(status, "exit code 3");
                assert!(stderr.ends_with("boom"), "{stderr}");
                assert!(stderr.len() <= STDERR_TAIL + 3);
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn streams_both_ways() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "head -c 1000000 /dev/zero"]);
        let mut sink = Vec::new();
        let mut last = 0;
        let n = stream_out(cmd, &mut sink, Path::new("mem"), &mut |b| last = b, T).unwrap();
        assert_eq!((n, last, sink.len()), (1_000_000, 1_000_000, 1_000_000));

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("copy");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("cat > {}", out.display()));
        let data = vec![5u8; 700_000];
        stream_in(cmd, &mut &data[..], Path::new("mem"), &mut |_| {}, T).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);

        // A tool that exits without reading: its error, not EPIPE.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo refused >&2; exit 1"]);
        let err = stream_in(cmd, &mut &data[..], Path::new("mem"), &mut |_| {}, T)
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused"), "{err}");
    }

    #[test]
    fn a_failing_sink_kills_the_tool() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(
                    nix::errno::Errno::ENOSPC as i32,
                ))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec cat /dev/zero"]);
        let err = stream_out(cmd, &mut Full, Path::new("/backups/x"), &mut |_| {}, T).unwrap_err();
        assert!(matches!(err, BackupError::DiskFull { .. }), "{err}");
    }
}
