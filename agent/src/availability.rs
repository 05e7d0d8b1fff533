//! Downtime as users see it (issue 12, part 15): while an activate or
//! rollback job switches releases and runs its hooks, and while maintenance
//! goes off (from its `off` command until the app answers after the flag
//! file is gone: [`start_at_maintenance_off`]), a sampler sends the
//! app's http probe about every [`INTERVAL`] and measures how long the app
//! did not answer as the probe expects (a refused connection, a 502 while
//! it restarts, a timeout).
//!
//! - **Which probe**: the app's first critical http(s) probe, else its
//!   first http(s) probe; an app without one is not sampled (`None`).
//! - **When**: from before the `before_*` hooks and the switch, until the
//!   job's hooks are done *and* a sample started after them answers, at
//!   most [`RECOVERY_WAIT`] after the hooks (then the figure is a lower
//!   bound: `recovered = false`). The job waits for that, so the probes
//!   that follow see the app up. The first such sample starts as soon as
//!   the hooks are done (not at the next tick). When the app declares
//!   activation or rollback hooks, that sample must start at least
//!   [`SETTLE`] after them: a restart a hook set off may take a moment to
//!   close the old listener. Without hooks nothing golive ran can restart
//!   the app (the switch is one atomic rename), so there is nothing to
//!   settle, and waiting would only cost each activation 300 ms (issue 14).
//! - **Each sample** waits at most the probe's `timeout_ms`, capped at
//!   [`SAMPLE_TIMEOUT`]: a user who waits longer has not been answered.
//! - **Stretches**: a stretch runs from the start of the first failed
//!   sample to the start of the next one that answers (or to the end).
//!   The resolution is one interval (about 100 ms).
//! - **Maintenance**: an app in golive's maintenance is not sampled: users
//!   see the maintenance page, and that time is maintenance time. A sample
//!   that gets the maintenance page anyway (its `X-Golive-Maintenance`
//!   header: turned on by hand, or at a window's edge) counts as answering,
//!   and the number of such samples is reported apart (issue 12, part 12).
//!
//! The sampler is a task on the agent's runtime when the job runs under
//! one ([`with_runtime`], set by `jobs::run` for the job's work on the
//! blocking pool), else a std thread with its own current-thread runtime
//! (a caller of `jobs::execute` without one). A thread and a runtime per
//! activation cost the agent CPU on every host of a deployment (issue 14,
//! speed); the samples themselves are the same either way.

use std::cell::RefCell;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use golive_shared::config::{AppConfig, ProbeConfig};
use golive_shared::protocol::{Availability, EventKind, LogLevel, Severity};

use crate::journal::Journal;

/// Time between the starts of two samples.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// The longest one sample waits for an answer.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the hooks, how long before an answer counts as "back": a restart
/// a hook set off may take a moment to close the old listener. Only for an
/// app with hooks ([`settle_of`]).
pub const SETTLE: Duration = Duration::from_millis(300);

/// [`SETTLE`] for an app with activation or rollback hooks (they may
/// restart it), none without.
pub fn settle_of(app: &AppConfig) -> Duration {
    let h = &app.hooks;
    if h.before_activate.is_empty() && h.after_activate.is_empty() && h.after_rollback.is_empty() {
        Duration::ZERO
    } else {
        SETTLE
    }
}
/// After the hooks, how long the job waits for the app to answer again.
pub const RECOVERY_WAIT: Duration = Duration::from_secs(10);

/// A running sampler, or the note that there is nothing to sample.
pub enum Sampler {
    Running {
        probe: String,
        stop: tokio::sync::oneshot::Sender<bool>,
        /// The figures, and how many samples golive's maintenance page
        /// answered.
        result: Figures,
    },
    /// The app is in golive's maintenance.
    InMaintenance { probe: String },
}

/// Where a running sampler's figures come from.
pub enum Figures {
    /// A task on the agent's runtime: its figures arrive on this channel.
    Task(std::sync::mpsc::Receiver<(Availability, u32)>),
    /// A std thread with its own runtime.
    Thread(JoinHandle<(Availability, u32)>),
}

thread_local! {
    /// The runtime samplers started on this thread run on ([`with_runtime`]).
    static RUNTIME: RefCell<Option<tokio::runtime::Handle>> = const { RefCell::new(None) };
}

/// Runs `work` (a job's synchronous work, on a thread of `runtime`'s
/// blocking pool, never on one of its core threads: the sampler's task must
/// run while `work` waits for it) with its samplers as tasks on `runtime`.
pub fn with_runtime<T>(runtime: tokio::runtime::Handle, work: impl FnOnce() -> T) -> T {
    struct Reset(Option<tokio::runtime::Handle>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let before = self.0.take();
            RUNTIME.with(|r| *r.borrow_mut() = before);
        }
    }
    let _reset = Reset(RUNTIME.with(|r| r.borrow_mut().replace(runtime)));
    work()
}

/// The http probe sampled for `app`: its first critical one, else its first.
pub fn probe_of(app: &AppConfig) -> Option<&ProbeConfig> {
    let http = || {
        app.probes
            .iter()
            .filter(|p| matches!(p, ProbeConfig::Http(_)))
    };
    http()
        .find(|p| p.severity() == Severity::Critical)
        .or_else(|| http().next())
}

/// Starts sampling `app` before a switch; `None` when it has no http probe.
pub fn start(journal: &Journal, app_name: &str, app: &AppConfig) -> Option<Sampler> {
    let probe = probe_of(app)?.clone();
    let name = probe.name().to_string();
    if journal.maintenance(app_name).ok().flatten().is_some() {
        return Some(Sampler::InMaintenance { probe: name });
    }
    spawn(probe, settle_of(app))
}

/// Starts sampling `app` as its maintenance goes off (issue 12, part 15):
/// the journal still says on, and the maintenance page's answers count
/// as maintenance (its header), so what is measured is the time the app
/// itself did not answer once the page was gone. Nothing golive ran
/// restarts the app here, so there is no settle time. `None` when it has
/// no http probe or nothing is live.
pub fn start_at_maintenance_off(app: &AppConfig) -> Option<Sampler> {
    let probe = probe_of(app)?.clone();
    // Nothing live (before the first release): nothing to answer, and
    // waiting for it would only delay the `off`.
    if !app.root.join("current").exists() {
        return None;
    }
    spawn(probe, Duration::ZERO)
}

fn spawn(probe: ProbeConfig, settle: Duration) -> Option<Sampler> {
    let name = probe.name().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let for_sampler = name.clone();
    let result = match RUNTIME.with(|r| r.borrow().clone()) {
        Some(runtime) => {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            runtime.spawn(async move {
                let figures = sample(&probe, &for_sampler, settle, stopped).await;
                let _ = tx.send(figures);
            });
            Figures::Task(rx)
        }
        None => Figures::Thread(
            std::thread::Builder::new()
                .name("availability".into())
                .spawn(move || sample_on_thread(&probe, &for_sampler, settle, stopped))
                .ok()?,
        ),
    };
    Some(Sampler::Running {
        probe: name,
        stop,
        result,
    })
}

impl Sampler {
    /// Ends sampling and reports it as a job event. `settled`: the job's
    /// hooks are done and it succeeded, so wait (bounded) for the app to
    /// answer again; otherwise stop at once.
    pub fn finish(self, settled: bool, emit: &dyn Fn(EventKind)) -> Option<Availability> {
        let mut marked = 0;
        let a = match self {
            Sampler::InMaintenance { probe } => Availability {
                probe,
                samples: 0,
                failed: 0,
                unavailable_ms: 0,
                longest_ms: 0,
                answering_at_start: false,
                recovered: true,
                in_maintenance: true,
            },
            Sampler::Running {
                stop,
                result,
                probe,
            } => {
                let _ = stop.send(settled);
                let figures = match result {
                    Figures::Task(rx) => rx.recv().ok(),
                    Figures::Thread(thread) => thread.join().ok(),
                };
                match figures {
                    Some((a, n)) => {
                        marked = n;
                        a
                    }
                    None => {
                        emit(EventKind::Log {
                            level: LogLevel::Warn,
                            line: format!(
                                "the availability sampler of probe {probe} stopped unexpectedly; \
                                 nothing measured"
                            ),
                        });
                        return None;
                    }
                }
            }
        };
        emit(EventKind::Log {
            level: if a.unavailable_ms > 0 {
                LogLevel::Warn
            } else {
                LogLevel::Info
            },
            line: describe(&a),
        });
        if marked > 0 {
            emit(EventKind::Log {
                level: LogLevel::Info,
                line: format!(
                    "availability: {marked} sample(s) got golive's maintenance page \
                     (X-Golive-Maintenance): counted as maintenance, not as not answering"
                ),
            });
        }
        Some(a)
    }
}

/// One line for the job's events.
pub fn describe(a: &Availability) -> String {
    if a.in_maintenance {
        return format!(
            "availability: not sampled, the app is in maintenance (probe {}); that time is \
             maintenance downtime",
            a.probe
        );
    }
    let mut line = format!(
        "availability (probe {}): {} of {} samples did not answer; not answering {} ms \
         (longest {} ms)",
        a.probe, a.failed, a.samples, a.unavailable_ms, a.longest_ms
    );
    if !a.answering_at_start {
        line.push_str("; it was not answering before the switch either");
    }
    if !a.recovered {
        line.push_str("; STILL NOT ANSWERING when sampling ended (the time is a lower bound)");
    }
    line
}

/// Stretches of not answering, from samples in time order.
#[derive(Debug, Default)]
struct Tally {
    samples: u32,
    failed: u32,
    total: Duration,
    longest: Duration,
    down_since: Option<Duration>,
    first_ok: Option<bool>,
    /// Samples golive's maintenance page answered (counted as answering).
    maintenance: u32,
}

impl Tally {
    /// A sample that started at `at` (since sampling began).
    fn add(&mut self, at: Duration, ok: bool) {
        self.samples += 1;
        self.first_ok.get_or_insert(ok);
        match (ok, self.down_since) {
            (false, None) => {
                self.failed += 1;
                self.down_since = Some(at);
            }
            (false, Some(_)) => self.failed += 1,
            (true, Some(since)) => {
                self.stretch(at.saturating_sub(since));
                self.down_since = None;
            }
            (true, None) => {}
        }
    }

    fn stretch(&mut self, d: Duration) {
        self.total += d;
        self.longest = self.longest.max(d);
    }

    /// The figures, with a stretch still open at `end` closed there.
    fn finish(mut self, probe: &str, end: Duration) -> Availability {
        let recovered = self.down_since.is_none();
        if let Some(since) = self.down_since.take() {
            self.stretch(end.saturating_sub(since));
        }
        Availability {
            probe: probe.to_string(),
            samples: self.samples,
            failed: self.failed,
            unavailable_ms: self.total.as_millis() as u64,
            longest_ms: self.longest.as_millis() as u64,
            answering_at_start: self.first_ok.unwrap_or(true),
            recovered,
            in_maintenance: false,
        }
    }
}

/// The sampler thread, without the agent's runtime: [`sample`] on a
/// runtime of its own.
fn sample_on_thread(
    probe: &ProbeConfig,
    name: &str,
    settle: Duration,
    stopped: tokio::sync::oneshot::Receiver<bool>,
) -> (Availability, u32) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(sample(probe, name, settle, stopped)),
        Err(_) => {
            // Without a runtime nothing can be sampled: wait for the stop
            // and report no samples rather than a made-up figure.
            let _ = stopped.blocking_recv();
            (Tally::default().finish(name, Duration::ZERO), 0)
        }
    }
}

/// The sampler: samples until told to stop (see the module docs).
async fn sample(
    probe: &ProbeConfig,
    name: &str,
    settle: Duration,
    mut stopped: tokio::sync::oneshot::Receiver<bool>,
) -> (Availability, u32) {
    let per_try = Duration::from_millis(probe.timeout_ms()).min(SAMPLE_TIMEOUT);
    {
        let started = Instant::now();
        let mut tally = Tally::default();
        // (when the hooks were done, whether to wait for an answer)
        let mut stop: Option<(Instant, bool)> = None;
        let mut back = false;
        loop {
            if stop.is_none() {
                match stopped.try_recv() {
                    Ok(wait) => stop = Some((Instant::now(), wait)),
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        stop = Some((Instant::now(), false))
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                }
            }
            if let Some((at, wait)) = stop
                && (!wait || back || at.elapsed() >= RECOVERY_WAIT)
            {
                break;
            }
            let t = Instant::now();
            // golive's maintenance page (its header) is maintenance, not
            // the app failing to answer (issue 12, part 12).
            let seen = crate::probe::sample(probe, per_try).await;
            let ok = seen != crate::probe::Sample::NotAnswered;
            tally.maintenance += u32::from(seen == crate::probe::Sample::Maintenance);
            tally.add(t - started, ok);
            if let Some((at, _)) = stop
                && ok
                && t >= at + settle
            {
                back = true;
                continue;
            }
            // The next tick, or at once when the hooks are done (after the
            // settle time, if any): the sample that says the app is back
            // need not wait for the tick. After the stop, a sample that
            // did not count waits for the settle time's end or the tick,
            // whichever comes first.
            let next = (t + INTERVAL).into();
            match stop {
                None => {
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => {}
                        r = &mut stopped => {
                            stop = Some((Instant::now(), r.unwrap_or(false)));
                            tokio::time::sleep(settle).await;
                        }
                    }
                }
                Some((at, _)) => {
                    tokio::time::sleep_until(next_after_stop(t, at, settle).into()).await;
                }
            }
        }
        let marked = tally.maintenance;
        (tally.finish(name, started.elapsed()), marked)
    }
}

/// When the next sample starts, once the hooks were done at `at`, after a
/// sample started at `t` that did not say the app is back: at the end of
/// the settle time if that comes before the next tick, else at the tick.
fn next_after_stop(t: Instant, at: Instant, settle: Duration) -> Instant {
    if t < at + settle {
        (at + settle).min(t + INTERVAL)
    } else {
        t + INTERVAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: an app without hooks has nothing to settle (no restart
    /// golive ran), so its activation does not wait 300 ms; hooks keep it.
    #[test]
    fn issue14_only_an_app_with_hooks_waits_for_the_settle_time() {
        let app: AppConfig = toml::from_str("root = \"/srv/shop\"").expect("app");
        assert_eq!(settle_of(&app), Duration::ZERO);
        let hooked: AppConfig = toml::from_str(
            "root = \"/srv/shop\"\n[hooks]\nafter_activate = [{ cmd = [\"/bin/true\"] }]",
        )
        .expect("hooks");
        assert_eq!(settle_of(&hooked), SETTLE);
    }

    /// After the hooks, a failed sample is retried at the next tick, never
    /// in a tight loop; one inside the settle time waits for its end.
    #[test]
    fn issue14_after_the_hooks_samples_wait_for_the_settle_end_or_the_tick() {
        let at = Instant::now();
        assert_eq!(next_after_stop(at, at, Duration::ZERO), at + INTERVAL);
        assert_eq!(next_after_stop(at, at, ms(50)), at + ms(50));
        assert_eq!(next_after_stop(at, at, SETTLE), at + INTERVAL);
        let later = at + ms(400);
        assert_eq!(next_after_stop(later, at, SETTLE), later + INTERVAL);
    }

    /// Issue 12, part 12: a sample that gets golive's maintenance page (its
    /// header) is maintenance; the same 503 without it did not answer.
    #[test]
    fn issue12_the_maintenance_page_is_told_from_an_outage() {
        use std::io::{Read, Write};
        let serve = |head: &'static str| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            std::thread::spawn(move || {
                if let Ok((mut s, _)) = l.accept() {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = write!(s, "{head}Content-Length: 0\r\nConnection: close\r\n\r\n");
                }
            });
            let probe: ProbeConfig = toml::from_str(&format!(
                "kind = \"http\"\nname = \"health\"\nurl = \"http://{addr}/health\"\nexpect_status = [200]"
            ))
            .unwrap();
            probe
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let marked = serve("HTTP/1.1 503 Service Unavailable\r\nX-Golive-Maintenance: 1\r\n");
        assert_eq!(
            rt.block_on(crate::probe::sample(&marked, SAMPLE_TIMEOUT)),
            crate::probe::Sample::Maintenance
        );
        let own = serve("HTTP/1.1 503 Service Unavailable\r\n");
        assert_eq!(
            rt.block_on(crate::probe::sample(&own, SAMPLE_TIMEOUT)),
            crate::probe::Sample::NotAnswered
        );
        let up = serve("HTTP/1.1 200 OK\r\n");
        assert_eq!(
            rt.block_on(crate::probe::sample(&up, SAMPLE_TIMEOUT)),
            crate::probe::Sample::Answered
        );
    }

    /// Issue 14 (speed): under the agent's runtime (a job's work on its
    /// blocking pool) the sampler is a task on that runtime, not a thread
    /// with a runtime of its own; it samples the same, and without a
    /// runtime it is still a thread.
    #[test]
    fn issue14_a_jobs_sampler_is_a_task_on_the_agents_runtime() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            // Bounded: the samples of two samplers of at most a second each.
            for _ in 0..100 {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        let probe: ProbeConfig = toml::from_str(&format!(
            "kind = \"http\"\nname = \"health\"\nurl = \"http://{addr}/health\"\nexpect_status = [200]"
        ))
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let on_task = probe.clone();
        let (was_task, a) = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                with_runtime(handle, || {
                    let s = spawn(on_task, Duration::ZERO).expect("sampler");
                    let task = matches!(
                        s,
                        Sampler::Running {
                            result: Figures::Task(_),
                            ..
                        }
                    );
                    std::thread::sleep(Duration::from_millis(250));
                    (task, s.finish(true, &|_| {}))
                })
            })
            .await
            .unwrap()
        });
        assert!(was_task, "a sampler under the runtime is a task");
        let a = a.expect("figures");
        assert!(a.samples >= 2 && a.failed == 0 && a.recovered, "{a:?}");
        let s = spawn(probe, Duration::ZERO).expect("sampler");
        assert!(matches!(
            s,
            Sampler::Running {
                result: Figures::Thread(_),
                ..
            }
        ));
        let a = s.finish(true, &|_| {}).expect("figures");
        assert!(a.samples >= 1 && a.recovered, "{a:?}");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn stretches_run_from_the_first_failure_to_the_next_answer() {
        let mut t = Tally::default();
        for (at, ok) in [
            (0, true),
            (100, false),
            (200, false),
            (300, true),
            (400, false),
            (500, true),
        ] {
            t.add(ms(at), ok);
        }
        let a = t.finish("health", ms(600));
        assert_eq!(
            (a.samples, a.failed, a.unavailable_ms, a.longest_ms),
            (6, 3, 300, 200)
        );
        assert!(a.recovered && a.answering_at_start && !a.in_maintenance);

        // Down at the start and at the end: both count, and it says so.
        let mut t = Tally::default();
        t.add(ms(0), false);
        t.add(ms(100), true);
        t.add(ms(200), false);
        let a = t.finish("health", ms(700));
        assert_eq!((a.unavailable_ms, a.longest_ms), (600, 500));
        assert!(!a.recovered && !a.answering_at_start);
        assert!(
            describe(&a).contains("STILL NOT ANSWERING"),
            "{}",
            describe(&a)
        );
    }
}
