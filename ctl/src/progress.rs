//! The one emitter of a deployment's [`Event`]s (issue 14) and its views:
//! NDJSON on `--output json`, plain lines, or live lines per host on a
//! terminal (indicatif): wave, host, step, its elapsed time and, for the
//! upload, bytes/total and rate. The live view is chosen only when stdout is
//! a terminal, `NO_COLOR` is unset (or empty) and `TERM` is set and not
//! `dumb` ([`choose`]); everything else gets today's plain lines.
//!
//! The human text of an event is printed by its call site through
//! [`Out::line`] in every human view (so plain output, and the scrollback
//! above the live lines, read the same); the live view draws the per-host
//! lines below it and clears them at the deployment's `result`.
//!
//! The emitter is process-wide, like stdout: hosts of a wave emit from
//! concurrent tasks. It also stamps each finished step's `elapsed_ms`.
//!
//! Besides the view, a command that runs a recorded deployment subscribes
//! the deployment's other readers ([`subscribe`]): the controller journal
//! and the plan's `[[notify]]` (`crate::deployment::subscribers`). Each gets
//! every event exactly as `--output json` prints it (the same line, the
//! same thinning of upload progress), whatever the view.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::deployment::events::Event;
use crate::output::{Format, Out};

/// How events and lines reach the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `--output json`: one JSON object per line.
    Json,
    /// Lines of text, nothing redrawn (pipes, files, CI logs, NO_COLOR).
    Plain,
    /// Lines of text above live per-host lines.
    Live,
}

/// The view for an output format and the terminal: live only on a
/// terminal that can redraw, and not when the operator asked for no colour
/// (<https://no-color.org>: set and not empty).
pub fn choose(
    format: Format,
    stdout_tty: bool,
    no_color: Option<&str>,
    term: Option<&str>,
) -> View {
    if format == Format::Json {
        return View::Json;
    }
    let no_color = no_color.is_some_and(|v| !v.is_empty());
    let dumb = term.is_none_or(|t| t.is_empty() || t == "dumb");
    if stdout_tty && !no_color && !dumb {
        View::Live
    } else {
        View::Plain
    }
}

/// Chooses the view for this process from its stdout and environment;
/// called once by `cmd::run` before any output.
pub fn install(format: Format) {
    let no_color = std::env::var("NO_COLOR").ok();
    let term = std::env::var("TERM").ok();
    let view = choose(
        format,
        std::io::stdout().is_terminal(),
        no_color.as_deref(),
        term.as_deref(),
    );
    let _ = EMITTER.set(Emitter::new(view));
}

static EMITTER: OnceLock<Emitter> = OnceLock::new();

fn emitter() -> &'static Emitter {
    // Without `install` (unit tests, library use): plain lines.
    EMITTER.get_or_init(|| Emitter::new(View::Plain))
}

/// A reader of a deployment's events besides the view (issue 14).
pub trait Subscriber: Send + Sync {
    /// One event, and its NDJSON line as `--output json` prints it. An
    /// error is a journal write's: [`emit_recorded`] returns it to an
    /// emitter that must not go on without the event on disk.
    fn event(&self, event: &Event, line: &str) -> rusqlite::Result<()>;
}

/// While held, a deployment's subscribers get every event; dropped, they
/// are removed (and dropped, so a journal's last rows are synced).
pub struct Subscription {
    token: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let removed: Vec<_> = {
            let mut subs = emitter()
                .subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let (gone, kept) = std::mem::take(&mut *subs)
                .into_iter()
                .partition(|s| s.token == self.token);
            *subs = kept;
            gone
        };
        drop(removed);
    }
}

struct Subscribed {
    token: u64,
    deployment: String,
    subscriber: Arc<dyn Subscriber>,
    /// The subscribing thread. Unit tests run in parallel threads of one
    /// process: there, each test's subscribers get only the events its own
    /// thread emits.
    thread: std::thread::ThreadId,
}

/// Subscribes `subscribers` to the events of `deployment` until the
/// returned [`Subscription`] is dropped. `None` when that deployment's
/// events are already subscribed (a `no-go` that runs the rollback: its
/// events go to the readers `no-go` subscribed, once).
pub fn subscribe(deployment: &str, subscribers: Vec<Arc<dyn Subscriber>>) -> Option<Subscription> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut subs = emitter()
        .subscribers
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if subs.iter().any(|s| s.deployment == deployment) {
        return None;
    }
    let token = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    for subscriber in subscribers {
        subs.push(Subscribed {
            token,
            deployment: deployment.to_string(),
            subscriber,
            thread: std::thread::current().id(),
        });
    }
    Some(Subscription { token })
}

/// Emits one event: stamps its timing, then hands it to the subscribers
/// and the view.
pub fn emit(out: Out, event: Event) {
    // A subscriber that cannot write says so itself; the emitters that
    // must stop on it call `emit_recorded`.
    let _ = emit_recorded(out, event);
}

/// [`emit`], returning the first subscriber's error (a journal write that
/// failed): the executor does not send a host-changing request whose
/// `step_started` is not in the journal.
pub fn emit_recorded(out: Out, event: Event) -> rusqlite::Result<()> {
    dispatch(Some(out), event)
}

/// Hands `event` to the deployment's subscribers (its journal, its
/// notices) without printing it: what `show` learns from the hosts later
/// is recorded and told like any event, and `show` still prints the
/// record alone.
pub fn emit_unprinted(event: Event) -> rusqlite::Result<()> {
    dispatch(None, event)
}

/// Stamps `event`, gives it to the subscribers, and prints it in `out`'s
/// view (`None`: in no view).
fn dispatch(out: Option<Out>, event: Event) -> rusqlite::Result<()> {
    let e = emitter();
    let event = e
        .clock
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .stamp(event);
    let mut recorded = Ok(());
    if e.json_due(&event) {
        let line = event.to_json_line();
        let subscribers: Vec<Arc<dyn Subscriber>> = e
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| !cfg!(test) || s.thread == std::thread::current().id())
            .map(|s| Arc::clone(&s.subscriber))
            .collect();
        for s in subscribers {
            if let Err(err) = s.event(&event, &line)
                && recorded.is_ok()
            {
                recorded = Err(err);
            }
        }
        if out.is_some_and(|o| o.json()) {
            print_line(&line);
        }
    }
    if out.is_some_and(|o| !o.json())
        && let Some(live) = &e.live
    {
        live.update(&event);
    }
    recorded
}

/// Prints a human line: above the live lines when they are drawn.
pub fn line(text: &str) {
    match &emitter().live {
        Some(live) => live.println(text),
        None => print_line(text),
    }
}

/// Writes one line to stdout: every plain line and NDJSON event goes
/// through here. In golivectl's unit tests it goes to a sink instead, the
/// test thread's own list (`printed`): libtest captures `print!`, not a
/// locked `stdout()`, so the commands' lines would otherwise be noise
/// between the test results.
pub fn print_line(text: &str) {
    #[cfg(test)]
    SINK.with(|s| s.borrow_mut().push(text.to_string()));
    #[cfg(not(test))]
    {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{text}");
    }
}

#[cfg(test)]
thread_local! {
    /// Where this test thread's lines went (other threads' are dropped
    /// with their thread).
    static SINK: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The lines this test thread printed so far, taken from its sink.
#[cfg(test)]
pub fn printed() -> Vec<String> {
    SINK.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// Clears any live lines still drawn (a command that ended without its
/// `result` event, e.g. on an error).
pub fn finish() {
    if let Some(live) = EMITTER.get().and_then(|e| e.live.as_ref()) {
        live.clear();
    }
}

/// The upload progress callback for `Link::upload_with`: called with
/// the bytes sent so far (at most every [`crate::client::PROGRESS_EVERY`]
/// and once at the end), it emits `step_progress` for `host`'s upload.
pub fn upload(out: Out, host: &str, total: u64) -> crate::client::UploadProgress {
    let host = host.to_string();
    let start = Instant::now();
    Arc::new(move |bytes: u64| {
        let elapsed = start.elapsed();
        let secs = elapsed.as_secs_f64();
        let bytes_per_sec = if secs > 0.0 {
            (bytes as f64 / secs) as u64
        } else {
            0
        };
        emit(
            out,
            Event::StepProgress {
                host: host.clone(),
                step: "upload".into(),
                bytes,
                total,
                bytes_per_sec,
                elapsed_ms: elapsed.as_millis() as u64,
            },
        );
    })
}

/// NDJSON progress lines per host at most this often (the end always).
const JSON_PROGRESS_EVERY: Duration = Duration::from_secs(1);

struct Emitter {
    clock: Mutex<Clock>,
    /// When each host last had a progress line printed (NDJSON).
    json_progress: Mutex<HashMap<String, Instant>>,
    live: Option<Live>,
    subscribers: Mutex<Vec<Subscribed>>,
}

impl Emitter {
    fn new(view: View) -> Emitter {
        Emitter {
            clock: Mutex::new(Clock::new()),
            json_progress: Mutex::new(HashMap::new()),
            live: (view == View::Live).then(Live::new),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// Whether an event is printed as NDJSON (and given to the
    /// subscribers) now: progress is thinned to one line a second per
    /// host, plus the last one.
    fn json_due(&self, event: &Event) -> bool {
        let Event::StepProgress {
            host, bytes, total, ..
        } = event
        else {
            return true;
        };
        let mut last = self.json_progress.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let due = bytes >= total
            || last
                .get(host)
                .is_none_or(|t| now.duration_since(*t) >= JSON_PROGRESS_EVERY);
        if due {
            last.insert(host.clone(), now);
        }
        due
    }
}

/// When steps started, for their `elapsed_ms`.
struct Clock {
    /// The deployment's start.
    origin: Instant,
    /// Each host's previous event (its wave's start, a step's start or end).
    hosts: HashMap<String, Instant>,
    /// Steps with a `step_started` not yet finished.
    running: HashMap<(String, String), Instant>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            origin: Instant::now(),
            hosts: HashMap::new(),
            running: HashMap::new(),
        }
    }

    fn stamp(&mut self, mut event: Event) -> Event {
        self.stamp_at(&mut event, Instant::now());
        event
    }

    fn stamp_at(&mut self, event: &mut Event, now: Instant) {
        match event {
            Event::Start { .. } => {
                self.origin = now;
                self.hosts.clear();
                self.running.clear();
            }
            Event::Wave {
                hosts,
                detail: None,
                ..
            } => {
                for h in hosts.iter() {
                    self.hosts.insert(h.clone(), now);
                }
            }
            Event::StepStarted { host, step } => {
                self.running.insert((host.clone(), step.clone()), now);
                self.hosts.insert(host.clone(), now);
            }
            Event::Step {
                host,
                step,
                elapsed_ms,
                ..
            } => {
                let since = self
                    .running
                    .remove(&(host.clone(), step.clone()))
                    .or_else(|| self.hosts.get(host.as_str()).copied())
                    .unwrap_or(self.origin);
                *elapsed_ms = now.saturating_duration_since(since).as_millis() as u64;
                self.hosts.insert(host.clone(), now);
            }
            _ => {}
        }
    }
}

/// Live lines are drawn for at most this many hosts at once; the others'
/// steps still print as lines above them.
const MAX_LIVE_HOSTS: usize = 40;

/// How often the live lines are redrawn (elapsed time, spinner).
const TICK: Duration = Duration::from_millis(200);

/// The live view: one line per host of the running wave.
struct Live {
    multi: MultiProgress,
    state: Arc<Mutex<LiveState>>,
}

impl LiveState {
    /// "wave 1/2 web1" (the host column as wide as the widest name).
    fn prefix(&self, host: &str) -> String {
        let host_col = format!("{host:<w$}", w = self.width);
        match self.wave_of.get(host) {
            Some(wave) => format!("{wave} {host_col}"),
            None => host_col,
        }
    }
}

#[derive(Default)]
struct LiveState {
    bars: HashMap<String, HostBar>,
    /// "wave 1/3" for each host of a started wave.
    wave_of: HashMap<String, String>,
    /// Widest host name so far, so the columns line up.
    width: usize,
    ticker: bool,
}

struct HostBar {
    bar: ProgressBar,
    /// Showing bytes (the upload) rather than a step.
    bytes: bool,
}

fn step_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {spinner} {msg} {elapsed:>4}").expect("static template")
}

/// The upload: a bar, then bytes/total and the mean rate in the message
/// (from the event, not indicatif's estimate, which decays once the bytes
/// stop moving while the agent stores them).
fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {spinner} [{bar:20}] {msg} {elapsed:>4}")
        .expect("static template")
        .progress_chars("=> ")
}

impl Live {
    fn new() -> Live {
        Live {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            state: Arc::new(Mutex::new(LiveState::default())),
        }
    }

    fn println(&self, text: &str) {
        self.multi.suspend(|| {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{text}");
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The host's line, made on its first event.
    fn bar<'s>(&self, s: &'s mut LiveState, host: &str) -> Option<&'s mut HostBar> {
        if !s.bars.contains_key(host) {
            if s.bars.len() >= MAX_LIVE_HOSTS {
                return None;
            }
            s.width = s.width.max(host.len());
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(step_style());
            bar.set_prefix(s.prefix(host));
            s.bars
                .insert(host.to_string(), HostBar { bar, bytes: false });
            if !s.ticker {
                s.ticker = true;
                self.start_ticker();
            }
        }
        s.bars.get_mut(host)
    }

    /// One thread redraws every live line, so elapsed times move between
    /// events (a steady tick per bar would be a thread per host).
    fn start_ticker(&self) {
        let state = Arc::clone(&self.state);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(TICK);
                let s = state.lock().unwrap_or_else(|p| p.into_inner());
                if !s.ticker {
                    return;
                }
                for b in s.bars.values() {
                    b.bar.tick();
                }
            }
        });
    }

    /// Every live line goes; the ticker stops.
    fn clear(&self) {
        let mut s = self.lock();
        for (_, b) in s.bars.drain() {
            b.bar.finish_and_clear();
            self.multi.remove(&b.bar);
        }
        s.ticker = false;
        let _ = self.multi.clear();
    }

    fn update(&self, event: &Event) {
        let mut s = self.lock();
        match event {
            Event::Wave {
                wave,
                of,
                hosts,
                detail: None,
                ..
            } => {
                for h in hosts {
                    s.wave_of.insert(h.clone(), format!("wave {wave}/{of}"));
                }
                // Hosts staged before the waves started keep their line,
                // now under their wave.
                for h in hosts {
                    let prefix = s.prefix(h);
                    if let Some(b) = self.bar(&mut s, h) {
                        b.bar.set_prefix(prefix);
                        b.bar.set_message("waiting");
                    }
                }
            }
            Event::Wave {
                hosts,
                detail: Some(_),
                ..
            } => {
                // The wave's verdict prints as a line; its hosts' lines go.
                for h in hosts {
                    if let Some(b) = s.bars.remove(h) {
                        b.bar.finish_and_clear();
                        self.multi.remove(&b.bar);
                    }
                }
            }
            Event::StepStarted { host, step } => {
                if let Some(b) = self.bar(&mut s, host) {
                    if b.bytes {
                        b.bar.set_style(step_style());
                        b.bytes = false;
                    }
                    b.bar.reset_elapsed();
                    b.bar.set_message(step.clone());
                }
            }
            Event::StepProgress {
                host,
                step,
                bytes,
                total,
                bytes_per_sec,
                ..
            } => {
                if let Some(b) = self.bar(&mut s, host) {
                    b.bar.set_length(*total);
                    b.bar.set_position(*bytes);
                    if !b.bytes {
                        b.bar.set_style(bytes_style());
                        b.bytes = true;
                    }
                    b.bar.set_message(format!(
                        "{step} {}/{} {}/s",
                        BinaryBytes(*bytes),
                        BinaryBytes(*total),
                        BinaryBytes(*bytes_per_sec)
                    ));
                }
            }
            Event::Step {
                host,
                step,
                state,
                elapsed_ms,
                ..
            } => {
                if let Some(b) = self.bar(&mut s, host) {
                    if b.bytes {
                        b.bar.set_style(step_style());
                        b.bytes = false;
                    }
                    // The elapsed column restarts: time since this step ended.
                    b.bar.reset_elapsed();
                    b.bar.set_message(format!(
                        "{step} {state} ({})",
                        golive_shared::timefmt::seconds(Duration::from_millis(*elapsed_ms))
                    ));
                }
            }
            Event::Result { .. }
            | Event::MaintenanceResult { .. }
            | Event::StagesResult { .. }
            | Event::DryRunResult { .. } => {
                drop(s);
                self.clear();
            }
            // Their human lines are printed by their call sites.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live view only on a terminal that can redraw and without
    /// NO_COLOR; `--output json` always NDJSON.
    #[test]
    fn issue14_view_choice() {
        let h = Format::Human;
        assert_eq!(choose(h, true, None, Some("xterm-256color")), View::Live);
        assert_eq!(choose(h, false, None, Some("xterm")), View::Plain);
        assert_eq!(choose(h, true, Some("1"), Some("xterm")), View::Plain);
        // no-color.org: an empty NO_COLOR does not count.
        assert_eq!(choose(h, true, Some(""), Some("xterm")), View::Live);
        assert_eq!(choose(h, true, None, Some("dumb")), View::Plain);
        assert_eq!(choose(h, true, None, None), View::Plain);
        for tty in [true, false] {
            assert_eq!(choose(Format::Json, tty, None, Some("xterm")), View::Json);
            assert_eq!(choose(Format::Json, tty, Some("1"), None), View::Json);
        }
    }

    /// A step's elapsed time runs from its `step_started`, else from the
    /// host's previous event (its wave's start, its previous step).
    #[test]
    fn issue14_elapsed_is_per_host_step() {
        let mut c = Clock::new();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let elapsed = |e: &Event| match e {
            Event::Step { elapsed_ms, .. } => *elapsed_ms,
            _ => unreachable!(),
        };
        let mut wave = Event::Wave {
            wave: 1,
            of: 1,
            name: None,
            hosts: vec!["a".into(), "b".into()],
            state: "running".into(),
            detail: None,
            max_fail: None,
            soak_secs: None,
        };
        c.stamp_at(&mut wave, at(0));
        let mut started = Event::StepStarted {
            host: "a".into(),
            step: "upload".into(),
        };
        c.stamp_at(&mut started, at(100));
        let mut probe_b = Event::step("b", "probe-before", "ok", "");
        c.stamp_at(&mut probe_b, at(250));
        assert_eq!(elapsed(&probe_b), 250, "since the wave started");
        let mut upload = Event::step("a", "upload", "ok", "");
        c.stamp_at(&mut upload, at(400));
        assert_eq!(elapsed(&upload), 300, "since its step_started");
        let mut gate = Event::step("a", "gate", "ok", "");
        c.stamp_at(&mut gate, at(450));
        assert_eq!(elapsed(&gate), 50, "since the host's previous step");
    }

    /// In unit tests the NDJSON events and plain lines go to the test
    /// thread's sink, not to stdout between the test results.
    #[test]
    fn issue14_unit_tests_print_to_a_sink() {
        let _ = printed();
        let json = Out {
            format: Format::Json,
        };
        emit(json, Event::step("web9", "stage", "ok", "staged"));
        json.event(&serde_json::json!({"event": "x"}));
        let human = Out {
            format: Format::Human,
        };
        human.line("[web9] stage: ok");
        emit(human, Event::step("web9", "activate", "ok", ""));
        let lines = printed();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with(r#"{"event":"step","host":"web9","step":"stage""#));
        assert_eq!(lines[1], r#"{"event":"x"}"#);
        assert_eq!(lines[2], "[web9] stage: ok");
        assert!(printed().is_empty(), "taken");
    }

    /// NDJSON progress is thinned per host, and its last line always goes.
    #[test]
    fn issue14_json_progress_is_throttled() {
        let e = Emitter::new(View::Json);
        let p = |host: &str, bytes| Event::StepProgress {
            host: host.into(),
            step: "upload".into(),
            bytes,
            total: 100,
            bytes_per_sec: 0,
            elapsed_ms: 0,
        };
        assert!(e.json_due(&p("a", 10)));
        assert!(!e.json_due(&p("a", 20)));
        assert!(e.json_due(&p("b", 20)), "per host");
        assert!(e.json_due(&p("a", 100)), "the end always");
        assert!(e.json_due(&Event::step("a", "upload", "ok", "")));
    }
}
