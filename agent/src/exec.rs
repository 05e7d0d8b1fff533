//! Running the programs an app's config declares (hooks, named commands,
//! maintenance commands): a program with arguments, never a shell string;
//! its own process group; a working directory, environment and timeout; an
//! optional user when the agent runs as root.
//!
//! **A command's processes end with it.** The command leads a new process
//! group. On timeout the whole group gets SIGTERM, then SIGKILL once the
//! grace period is over, so children die too. When the command exits by
//! itself, whatever it left running in its group gets the same treatment (a
//! real daemon detaches with `setsid` and is not touched). The leader is
//! reaped only after its group is dealt with, so its process group id can
//! never be reused by an unrelated process while we signal it.
//!
//! Output (stdout and stderr merged) streams line by line to the caller, up
//! to `max_output` bytes (then one notice line), with lines longer than
//! [`MAX_LINE`] split; the last `max_output` bytes are always kept as the
//! tail for error messages. [`run_with_stdout`] instead hands stdout, as
//! raw bytes, to a sink as it arrives (the offsite fetch hashes it), the
//! lines and tail being stderr's. Every wait here is bounded.
//!
//! **A child sees a minimal environment** (issue 11): never the agent's
//! whole environment, which may hold credentials (a cloud key, a token)
//! that no hook or tool was meant to see. [`minimal_env`] is the one place
//! that says what passes: `PATH` (the agent's, else [`DEFAULT_PATH`]),
//! `HOME`, `LANG`, `LC_*` and `TZ`. Every spawn site in the agent starts
//! from it; on top come the declared env of the config, the `GOLIVE_*`
//! variables golive sets, and what a tool itself needs (`PGPASSWORD`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use golive_shared::config::{CommandSpec, RunDefaults};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

/// Longer output lines are passed on in pieces of at most this many bytes.
pub const MAX_LINE: usize = 8 * 1024;

/// How long SIGKILL may take to empty a process group before we stop
/// waiting (a process stuck in uninterruptible I/O cannot be killed sooner).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long output is still read after the command and its group ended; a
/// process outside the group (a daemon that detached) may hold the pipe.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

/// Pieces of stdout for a [`run_with_stdout`] sink are at most this big.
const STDOUT_CHUNK: usize = 64 * 1024;

/// Messages from the reader threads queued for the supervising thread;
/// a bound, so a fast writer waits for a slow sink instead of filling memory.
const QUEUE: usize = 64;

/// `PATH` for children when the agent has none (systemd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The variables of the agent's own environment a child may see, from
/// `vars` (the agent's environment): `PATH` (or [`DEFAULT_PATH`] when unset
/// or empty), `HOME`, `LANG`, `LC_*`, `TZ`. Nothing else passes, not even
/// a `GOLIVE_*` variable golive did not set itself.
pub fn passed_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut path = None;
    let mut out = Vec::new();
    for (name, value) in vars {
        match name.to_str() {
            Some("PATH") => path = Some(value),
            Some("HOME" | "LANG" | "TZ") => out.push((name, value)),
            Some(n) if n.starts_with("LC_") => out.push((name, value)),
            _ => {}
        }
    }
    let path = path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    out.push(("PATH".into(), path));
    out
}

/// Clears `cmd`'s environment down to [`passed_env`] of the agent's: the
/// one allow-list every child process of the agent starts from. The caller
/// adds the declared env, golive's variables and what the tool needs.
pub fn minimal_env(cmd: &mut Command) -> &mut Command {
    cmd.env_clear().envs(passed_env(std::env::vars_os()))
}
/// Everything needed to run one command, defaults applied.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub timeout: Duration,
    pub grace: Duration,
    pub max_output: usize,
}

impl Prepared {
    /// `spec` with `defaults`; a relative `cwd` is taken inside `base` (the
    /// release the command runs for).
    pub fn new(spec: &CommandSpec, defaults: &RunDefaults, base: &Path) -> Prepared {
        let mut env = defaults.env.clone();
        env.extend(spec.env.clone());
        let cwd = match &spec.cwd {
            Some(c) if c.is_absolute() => c.clone(),
            Some(c) => base.join(c),
            None => base.to_path_buf(),
        };
        Prepared {
            argv: spec.cmd.clone(),
            cwd,
            env,
            user: spec.user.clone().or_else(|| defaults.user.clone()),
            timeout: Duration::from_secs(spec.timeout_secs.unwrap_or(defaults.timeout_secs)),
            grace: Duration::from_secs(defaults.grace_secs),
            max_output: defaults.max_output_bytes,
        }
    }

    /// `drush cr`, `sh -c 'echo hi; exit 3'` — for messages: arguments
    /// quoted the way a shell would need them, so what is shown is what ran.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    /// The last `max_output` bytes of output.
    pub tail: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// "exit 3", "killed by signal 9", "timed out after 30 s; ...".
    pub fn describe(&self, timeout: Duration) -> String {
        if self.timed_out {
            format!(
                "timed out after {}; its process group was terminated \
                 (SIGTERM, then SIGKILL for what outlived the grace period)",
                seconds(timeout)
            )
        } else if let Some(c) = self.exit_code {
            format!("exit {c}")
        } else {
            format!("killed by signal {}", self.signal.unwrap_or(0))
        }
    }
}

/// `arg` as is when it is plain, else single-quoted.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

pub use golive_shared::timefmt::seconds;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run `{cmd}` in {}: {source}", cwd.display())]
    Spawn {
        cmd: String,
        cwd: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "`{cmd}` should run as user {user:?}, which needs the agent to run as root; \
         remove `user` from the config or run the agent as root"
    )]
    NotRoot { cmd: String, user: String },
    #[error("`{cmd}`: no such user {user:?} on this host")]
    NoUser { cmd: String, user: String },
    #[error("empty command")]
    Empty,
}

/// The account a command switches to; `None` when no switch is needed.
fn resolve_user(p: &Prepared) -> Result<Option<nix::unistd::User>, ExecError> {
    let Some(name) = &p.user else {
        return Ok(None);
    };
    let found = nix::unistd::User::from_name(name).ok().flatten();
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        // Already that user: nothing to switch.
        if found.as_ref().is_some_and(|u| u.uid == euid) {
            return Ok(None);
        }
        return Err(ExecError::NotRoot {
            cmd: p.display(),
            user: name.clone(),
        });
    }
    found.map(Some).ok_or_else(|| ExecError::NoUser {
        cmd: p.display(),
        user: name.clone(),
    })
}

/// Runs a prepared command to its end (or its timeout), feeding each output
/// line to `on_line`.
///
/// Its environment is [`minimal_env`] plus `p.env`. When a user is
/// configured and the agent is root, the command runs with that user's uid
/// and primary group (supplementary groups are dropped) and `HOME`, `USER`
/// and `LOGNAME` set for it.
pub fn run(p: &Prepared, on_line: &mut dyn FnMut(&str)) -> Result<Outcome, ExecError> {
    supervise(p, None, on_line)
}

/// [`run`], but stdout goes to `on_stdout` as raw bytes, in order, as it
/// arrives (at most 64 KiB a call); `on_line` and the tail get stderr only.
/// Everything else (process group, timeout, the end of its group) is as
/// for [`run`]: a read that blocks never holds the timeout up.
pub fn run_with_stdout(
    p: &Prepared,
    on_stdout: &mut dyn FnMut(&[u8]),
    on_line: &mut dyn FnMut(&str),
) -> Result<Outcome, ExecError> {
    supervise(p, Some(on_stdout), on_line)
}

fn supervise<'a>(
    p: &Prepared,
    on_stdout: Option<StdoutSink<'a>>,
    on_line: &'a mut dyn FnMut(&str),
) -> Result<Outcome, ExecError> {
    let (program, args) = p.argv.split_first().ok_or(ExecError::Empty)?;
    if program.is_empty() {
        return Err(ExecError::Empty);
    }
    let user = resolve_user(p)?;
    let (reader, writer) = std::io::pipe().map_err(|source| spawn_err(p, source))?;
    // Stdout on a pipe of its own when it has a sink, else with stderr.
    let (out_reader, out_writer) = match on_stdout {
        Some(_) => {
            let (r, w) = std::io::pipe().map_err(|source| spawn_err(p, source))?;
            (Some(r), w)
        }
        None => (
            None,
            writer.try_clone().map_err(|source| spawn_err(p, source))?,
        ),
    };
    let mut cmd = Command::new(program);
    minimal_env(&mut cmd)
        .args(args)
        .current_dir(&p.cwd)
        .envs(&p.env)
        .stdin(Stdio::null())
        .stdout(out_writer)
        .stderr(writer)
        .process_group(0);
    if let Some(u) = &user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        cmd.env("HOME", &u.dir)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| spawn_err(p, source))?;
    // Close our copies of the write end, or the reader never sees EOF.
    drop(cmd);
    let pid = Pid::from_raw(child.id() as i32);
    let _registered = Running::register(pid);

    let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
    let chunk_thread = out_reader.map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || read_chunks(r, &tx))
    });
    let reader_thread = std::thread::spawn(move || read_lines(reader, &tx));

    let mut out = Output::new(p.max_output, on_line, on_stdout);
    let deadline = started + p.timeout;
    let mut timed_out = false;
    loop {
        out.pump(&rx, Duration::from_millis(50));
        if leader_exited(pid) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
    }
    // The leader has exited (unreaped, so its group id stays ours) or timed
    // out: end whatever is left of its group, politely first.
    // Without a readable /proc only the leader can be watched.
    let alive = || !leader_exited(pid) || !group_members(pid).is_empty();
    if timed_out || alive() {
        if !timed_out {
            out.notice(&format!(
                "[golive: `{}` exited but left processes in its process group; terminating them]",
                p.display()
            ));
        }
        let _ = killpg(pid, Signal::SIGTERM);
        let grace_end = Instant::now() + p.grace;
        while Instant::now() < grace_end && alive() {
            out.pump(&rx, Duration::from_millis(20));
        }
        if timed_out || alive() {
            let _ = killpg(pid, Signal::SIGKILL);
            let kill_end = Instant::now() + KILL_WAIT;
            while Instant::now() < kill_end && alive() {
                out.pump(&rx, Duration::from_millis(20));
            }
        }
    }
    let status = child.wait().map_err(|source| spawn_err(p, source))?;
    let duration = started.elapsed();
    // Drain what is left, briefly: a daemon that detached from the group may
    // keep the pipe open forever, and we do not wait for it.
    let drain_end = Instant::now() + DRAIN_WAIT;
    loop {
        let left = drain_end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(msg) => out.handle(msg),
            Err(_) => break,
        }
    }
    drop(rx);
    for thread in std::iter::once(reader_thread).chain(chunk_thread) {
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
    Ok(Outcome {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        duration,
        tail: out.tail,
    })
}

/// Process groups of the declared programs running now: a stop that cannot
/// wait for its jobs ends them ([`end_all`], issue 16).
static RUNNING: std::sync::Mutex<Vec<Pid>> = std::sync::Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<Pid>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// A process group in [`RUNNING`] while its supervisor runs.
struct Running(Pid);

impl Running {
    fn register(pid: Pid) -> Running {
        running().push(pid);
        Running(pid)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        running().retain(|p| *p != self.0);
    }
}

/// Ends every declared program still running (the agent is stopping and
/// its drain bound passed): SIGTERM to each process group, then SIGKILL to
/// what is left after `grace`. Returns how many groups there were.
pub fn end_all(grace: Duration) -> usize {
    let groups = running().clone();
    for g in &groups {
        let _ = killpg(*g, Signal::SIGTERM);
    }
    let alive = |g: &Pid| killpg(*g, None).is_ok();
    let end = Instant::now() + grace;
    while Instant::now() < end && groups.iter().any(alive) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for g in groups.iter().filter(|g| alive(g)) {
        let _ = killpg(*g, Signal::SIGKILL);
    }
    groups.len()
}

/// Where [`run_with_stdout`] puts stdout.
type StdoutSink<'a> = &'a mut dyn FnMut(&[u8]);

/// What the reader threads send the supervising thread.
enum Msg {
    /// A line of merged output (or of stderr, when stdout has a sink).
    Line(String),
    /// A piece of stdout for the sink.
    Stdout(Vec<u8>),
}

/// Reads `reader` to its end, sending lines (at most [`MAX_LINE`] bytes
/// each, trailing whitespace trimmed) until the receiver goes away.
fn read_lines(reader: std::io::PipeReader, tx: &mpsc::SyncSender<Msg>) {
    let mut r = BufReader::with_capacity(MAX_LINE, reader);
    let mut line: Vec<u8> = Vec::new();
    let send = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        line.clear();
        tx.send(Msg::Line(text)).is_ok()
    };
    loop {
        let buf = match r.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let room = MAX_LINE - line.len();
        let (used, complete) = match buf.iter().take(room).position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                (i + 1, true)
            }
            None => {
                let n = buf.len().min(room);
                line.extend_from_slice(&buf[..n]);
                (n, line.len() >= MAX_LINE)
            }
        };
        r.consume(used);
        if complete && !send(&mut line) {
            return;
        }
    }
    if !line.is_empty() {
        send(&mut line);
    }
}

/// Reads stdout to its end in pieces of at most [`STDOUT_CHUNK`] bytes,
/// sending them until the receiver goes away.
fn read_chunks(mut reader: std::io::PipeReader, tx: &mpsc::SyncSender<Msg>) {
    let mut buf = vec![0u8; STDOUT_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(Msg::Stdout(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Output handling: streams lines up to a byte budget, keeps the tail, and
/// hands stdout to its sink when there is one.
struct Output<'a> {
    max: usize,
    streamed: usize,
    cut_off: bool,
    tail: String,
    on_line: &'a mut dyn FnMut(&str),
    on_stdout: Option<StdoutSink<'a>>,
}

impl<'a> Output<'a> {
    fn new(
        max: usize,
        on_line: &'a mut dyn FnMut(&str),
        on_stdout: Option<StdoutSink<'a>>,
    ) -> Self {
        Output {
            max,
            streamed: 0,
            cut_off: false,
            tail: String::new(),
            on_line,
            on_stdout,
        }
    }

    /// Handles what arrives within `wait` (at least one wait).
    fn pump(&mut self, rx: &mpsc::Receiver<Msg>, wait: Duration) {
        match rx.recv_timeout(wait) {
            Ok(msg) => self.handle(msg),
            Err(mpsc::RecvTimeoutError::Timeout) => return,
            // The readers are done; do not spin on a dead channel.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(wait);
                return;
            }
        }
        while let Ok(msg) = rx.try_recv() {
            self.handle(msg);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Line(line) => self.line(&line),
            Msg::Stdout(bytes) => {
                if let Some(sink) = self.on_stdout.as_mut() {
                    sink(&bytes);
                }
            }
        }
    }

    fn line(&mut self, line: &str) {
        self.keep(line);
        if self.cut_off {
            return;
        }
        self.streamed += line.len() + 1;
        if self.streamed > self.max {
            self.cut_off = true;
            (self.on_line)(&format!(
                "[golive: output beyond {} bytes is not streamed; its last {} bytes are kept]",
                self.max, self.max
            ));
        } else {
            (self.on_line)(line);
        }
    }

    /// A line of our own: always streamed, also kept in the tail.
    fn notice(&mut self, line: &str) {
        self.keep(line);
        (self.on_line)(line);
    }

    fn keep(&mut self, line: &str) {
        let tail = &mut self.tail;
        tail.push_str(line);
        tail.push('\n');
        if tail.len() > self.max {
            let cut = tail.len() - self.max;
            let cut = (cut..tail.len())
                .find(|&i| tail.is_char_boundary(i))
                .unwrap_or(tail.len());
            tail.drain(..cut);
        }
    }
}

/// True once the leader has exited; it stays unreaped (WNOWAIT), so its pid
/// and process group id cannot be reused until we wait for it.
fn leader_exited(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive))
}

/// Live (not zombie) processes in process group `pgid`, from `/proc`.
fn group_members(pgid: Pid) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, pgrp)| pgrp == pgid.as_raw() && state != 'Z' && state != 'X')
        })
        .collect()
}

/// (state, process group) from a `/proc/PID/stat` line; the command name in
/// parentheses may itself contain spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn spawn_err(p: &Prepared, source: std::io::Error) -> ExecError {
    ExecError::Spawn {
        cmd: p.display(),
        cwd: p.cwd.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(argv: &[&str]) -> Prepared {
        Prepared {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: PathBuf::from("/"),
            env: BTreeMap::new(),
            user: None,
            timeout: Duration::from_secs(20),
            grace: Duration::from_secs(2),
            max_output: 64 * 1024,
        }
    }

    fn sh(script: &str) -> Prepared {
        prepared(&["sh", "-c", script])
    }

    fn run_collect(p: &Prepared) -> (Outcome, Vec<String>) {
        let mut lines = Vec::new();
        let outcome = run(p, &mut |l| lines.push(l.to_string())).expect("run");
        (outcome, lines)
    }

    /// True while `pid` exists and is not a zombie.
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
            .is_some_and(|(state, _)| state != 'Z' && state != 'X')
    }

    /// Waits up to 5 s for `pid` to be gone (or a zombie).
    fn gone(pid: i32) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn nobody() -> nix::unistd::User {
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody exists")
    }

    #[test]
    fn output_of_both_streams_is_captured_in_order() {
        let (o, lines) = run_collect(&sh("echo one; echo two >&2; printf 'no newline'"));
        assert!(o.success(), "{o:?}");
        assert_eq!(lines, ["one", "two", "no newline"]);
        assert_eq!(o.tail, "one\ntwo\nno newline\n");
        assert!(!o.timed_out);
    }

    #[test]
    fn exit_code_and_signal_are_reported() {
        let (o, _) = run_collect(&sh("echo failing; exit 7"));
        assert_eq!(o.exit_code, Some(7));
        assert!(!o.success());
        assert_eq!(o.describe(Duration::from_secs(1)), "exit 7");
        assert_eq!(o.tail, "failing\n");

        let (o, _) = run_collect(&sh("kill -9 $$"));
        assert_eq!(o.exit_code, None);
        assert_eq!(o.signal, Some(9));
        assert_eq!(o.describe(Duration::from_secs(1)), "killed by signal 9");
    }

    #[test]
    fn a_hanging_command_and_its_hanging_child_are_killed_at_the_timeout() {
        let mut p = sh("sleep 1000.314 & echo child $!; sleep 1000.315");
        p.timeout = Duration::from_millis(700);
        p.grace = Duration::from_secs(3);
        let started = Instant::now();
        let (o, lines) = run_collect(&p);
        let took = started.elapsed();
        assert!(o.timed_out, "{o:?}");
        assert!(!o.success());
        assert!(
            o.describe(p.timeout).contains("timed out after 0.7 s"),
            "{}",
            o.describe(p.timeout)
        );
        // SIGTERM ends both at once: no need to wait for the grace period.
        assert!(
            took >= p.timeout && took < Duration::from_secs(3),
            "{took:?}"
        );
        let child: i32 = lines[0]
            .strip_prefix("child ")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert!(gone(child), "background child {child} survived the timeout");
    }

    #[test]
    fn children_that_ignore_sigterm_get_sigkill_after_the_grace_period() {
        let mut p = sh("trap '' TERM; sleep 1000.271 & echo child $!; sleep 1000.272");
        p.timeout = Duration::from_millis(500);
        p.grace = Duration::from_millis(800);
        let started = Instant::now();
        let (o, lines) = run_collect(&p);
        let took = started.elapsed();
        assert!(o.timed_out, "{o:?}");
        assert_eq!(o.signal, Some(9), "{o:?}");
        assert!(
            took >= p.timeout + p.grace,
            "SIGKILL came before the grace period: {took:?}"
        );
        assert!(took < Duration::from_secs(8), "{took:?}");
        let child: i32 = lines[0].strip_prefix("child ").unwrap().parse().unwrap();
        assert!(gone(child), "child {child} survived SIGKILL");
    }

    #[test]
    fn processes_left_behind_in_the_group_are_ended_with_the_command() {
        let started = Instant::now();
        let (o, lines) = run_collect(&sh("sleep 1000.161 & echo child $!"));
        assert!(o.success(), "{o:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let child: i32 = lines[0].strip_prefix("child ").unwrap().parse().unwrap();
        assert!(gone(child), "left-behind child {child} still runs");
        assert!(
            lines.iter().any(|l| l.contains("left processes")),
            "{lines:?}"
        );
    }

    #[test]
    fn output_is_bounded_in_the_tail_in_streaming_and_per_line() {
        let mut p = sh("i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done");
        p.max_output = 1000;
        let (o, lines) = run_collect(&p);
        assert!(o.success());
        assert!(o.tail.len() <= 1000, "{}", o.tail.len());
        assert!(o.tail.ends_with("line-2999\n"), "{}", o.tail);
        assert!(!o.tail.contains("line-0\n"));
        let streamed: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(streamed < 1000 + 200, "streamed {streamed} bytes");
        assert!(lines.last().unwrap().contains("not streamed"), "{lines:?}");

        // One 100 kB line with no newline arrives in pieces.
        let mut p = sh("head -c 100000 /dev/zero | tr '\\0' a");
        p.max_output = 1 << 20;
        let (o, lines) = run_collect(&p);
        assert!(o.success());
        assert!(
            lines.iter().all(|l| l.len() <= MAX_LINE),
            "a line is longer than MAX_LINE"
        );
        assert_eq!(lines.iter().map(String::len).sum::<usize>(), 100_000);
    }

    #[test]
    fn env_and_cwd_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CommandSpec {
            cmd: vec!["sh".into(), "-c".into(), "pwd; echo \"$FOO $BAR\"".into()],
            cwd: Some("sub".into()),
            env: BTreeMap::from([("BAR".into(), "from-spec".into())]),
            timeout_secs: Some(9),
            user: None,
        };
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut defaults = RunDefaults::default();
        defaults.env.insert("FOO".into(), "from-defaults".into());
        defaults.env.insert("BAR".into(), "overridden".into());
        let p = Prepared::new(&spec, &defaults, dir.path());
        assert_eq!(p.timeout, Duration::from_secs(9));
        assert_eq!(p.grace, Duration::from_secs(defaults.grace_secs));
        assert_eq!(p.cwd, dir.path().join("sub"));
        let (o, lines) = run_collect(&p);
        assert!(o.success(), "{o:?}");
        let real = std::fs::canonicalize(dir.path().join("sub")).unwrap();
        assert_eq!(
            lines,
            [real.display().to_string(), "from-defaults from-spec".into()]
        );

        // An absolute cwd is kept; no cwd means the base.
        let mut spec = spec;
        spec.cwd = Some("/tmp".into());
        assert_eq!(
            Prepared::new(&spec, &defaults, dir.path()).cwd,
            Path::new("/tmp")
        );
        spec.cwd = None;
        spec.timeout_secs = None;
        let p = Prepared::new(&spec, &defaults, dir.path());
        assert_eq!(p.cwd, dir.path());
        assert_eq!(p.timeout, Duration::from_secs(defaults.timeout_secs));
    }

    #[test]
    fn runs_as_the_configured_user_when_root() {
        let mut p = prepared(&["sh", "-c", "id -u; id -g; echo $HOME"]);
        p.user = Some("nobody".into());
        let result = run(&p, &mut |_| {});
        if !nix::unistd::geteuid().is_root() {
            assert!(
                matches!(result, Err(ExecError::NotRoot { .. })),
                "{result:?}"
            );
            return;
        }
        let (o, lines) = run_collect(&p);
        assert!(o.success(), "{o:?}");
        let u = nobody();
        assert_eq!(lines[0], u.uid.to_string(), "{lines:?}");
        assert_eq!(lines[1], u.gid.to_string(), "{lines:?}");
        assert_eq!(lines[2], u.dir.display().to_string(), "{lines:?}");
    }

    #[test]
    fn unknown_users_and_bad_commands_are_refused() {
        let mut p = prepared(&["true"]);
        p.user = Some("golive-no-such-user".into());
        let err = run(&p, &mut |_| {}).unwrap_err();
        if nix::unistd::geteuid().is_root() {
            assert!(matches!(err, ExecError::NoUser { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains("no such user \"golive-no-such-user\""),
                "{err}"
            );
        } else {
            assert!(matches!(err, ExecError::NotRoot { .. }), "{err:?}");
        }

        assert!(matches!(
            run(&prepared(&[]), &mut |_| {}),
            Err(ExecError::Empty)
        ));
        let err = run(&prepared(&["/nonexistent/golive-prog"]), &mut |_| {}).unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/golive-prog"),
            "{err}"
        );
        let mut p = prepared(&["true"]);
        p.cwd = "/nonexistent-golive-dir".into();
        assert!(matches!(run(&p, &mut |_| {}), Err(ExecError::Spawn { .. })));
    }

    #[test]
    fn issue11_only_the_allow_list_of_the_agents_environment_passes() {
        let vars = [
            ("AWS_SECRET_ACCESS_KEY", "leak"),
            ("GOLIVE_GIT_PASSWORD", "inherited"),
            ("HOME", "/home/agent"),
            ("LANG", "de_DE.UTF-8"),
            ("LC_ALL", "C"),
            ("LC_TIME", "C"),
            ("TZ", "Europe/Berlin"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("PATH", "/opt/bin:/usr/bin"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let mut got: Vec<(String, String)> = passed_env(vars)
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        got.sort();
        let want = [
            ("HOME", "/home/agent"),
            ("LANG", "de_DE.UTF-8"),
            ("LC_ALL", "C"),
            ("LC_TIME", "C"),
            ("PATH", "/opt/bin:/usr/bin"),
            ("TZ", "Europe/Berlin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(got, want);
        // No PATH, or an empty one: a safe default, never the current directory.
        for vars in [vec![], vec![(OsString::from("PATH"), OsString::new())]] {
            assert_eq!(
                passed_env(vars),
                [(OsString::from("PATH"), OsString::from(DEFAULT_PATH))]
            );
        }
    }

    /// The test process's environment (CARGO_*, RUST_*...) stands in for an
    /// agent's: a command sees the allow-list plus its own env, nothing else.
    #[test]
    fn issue11_a_command_sees_the_minimal_environment_and_its_own() {
        let mut p = sh("env");
        p.env.insert("DECLARED".into(), "yes".into());
        let (o, lines) = run_collect(&p);
        assert!(o.success(), "{o:?}");
        let names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, _)| k)
            .collect();
        assert!(
            names.contains(&"PATH") && names.contains(&"DECLARED"),
            "{lines:?}"
        );
        for name in names {
            assert!(
                matches!(
                    name,
                    "PATH" | "HOME" | "LANG" | "TZ" | "DECLARED" | "PWD" | "SHLVL" | "_"
                ) || name.starts_with("LC_"),
                "{name} reached the command: {lines:?}"
            );
        }
    }

    #[test]
    fn stdout_goes_to_its_sink_in_order_and_stderr_to_the_lines() {
        let mut p = sh("head -c 1000000 /dev/zero | tr '\\0' x; echo note >&2; printf end");
        p.max_output = 1024;
        let mut got = Vec::new();
        let mut lines = Vec::new();
        let o = run_with_stdout(&p, &mut |b| got.extend_from_slice(b), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert!(o.success(), "{o:?}");
        assert_eq!(got.len(), 1_000_003);
        assert!(got[..1_000_000].iter().all(|&b| b == b'x'));
        assert!(got.ends_with(b"end"));
        assert_eq!(lines, ["note"]);
        assert_eq!(o.tail, "note\n");
    }

    /// A reader blocked on a pipe a child still holds does not hold up the
    /// timeout: the group is ended at the deadline.
    #[test]
    fn a_sink_whose_writer_hangs_is_ended_at_the_timeout_with_its_group() {
        let mut p = sh("printf partial; sleep 1000.417 & echo child $! >&2; wait");
        p.timeout = Duration::from_millis(600);
        p.grace = Duration::from_millis(500);
        let started = Instant::now();
        let mut got = Vec::new();
        let mut lines = Vec::new();
        let o = run_with_stdout(&p, &mut |b| got.extend_from_slice(b), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert!(o.timed_out, "{o:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(got, b"partial");
        let child: i32 = lines[0].strip_prefix("child ").unwrap().parse().unwrap();
        assert!(gone(child), "child {child} outlived the timeout");
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_stat("42 (a) b (c)) S 1 42 42 0"), Some(('S', 42)));
        assert_eq!(parse_stat("7 (sleep) Z 1 9 9"), Some(('Z', 9)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        let p = prepared(&["sh", "-c", "echo it's; exit 3", "", "plain-arg/x.y"]);
        assert_eq!(
            p.display(),
            r#"sh -c 'echo it'\''s; exit 3' '' plain-arg/x.y"#
        );
    }
}
