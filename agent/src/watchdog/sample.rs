//! Taking one sample of a trigger's probe: a verdict through the probe
//! runner ([`crate::probe::run_one`], under the probe's timeout), or an
//! access log's figures through [`crate::maintenance::access_log_stats`]
//! (golive's own maintenance left out). Behind a trait so the loop's
//! paused-time tests can script what the probes say.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use golive_shared::config::ProbeConfig;
use golive_shared::protocol::{ProbeResult, ProbeStatus, Severity};

use crate::accesslog::{LogFormat, WindowStats};
use crate::state::Agent;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a sample reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleKind {
    /// The probe's own verdict (unresponsive, failing).
    Verdict,
    /// An access log's figures (error rate, p95).
    Log,
}

/// Measures probes for the watchdog.
pub trait Sampler: Send + Sync + 'static {
    fn verdict(&self, app: &str, probe: &str) -> BoxFuture<ProbeResult>;
    fn log(&self, app: &str, probe: &str) -> BoxFuture<Result<WindowStats, String>>;
}

/// The real probes of the agent's config.
pub struct Live(pub Arc<Agent>);

impl Sampler for Live {
    fn verdict(&self, app: &str, probe: &str) -> BoxFuture<ProbeResult> {
        let agent = Arc::clone(&self.0);
        let (app, probe) = (app.to_string(), probe.to_string());
        Box::pin(async move {
            let Some((cfg, p)) = find(&agent, &app, &probe) else {
                return missing(&app, &probe);
            };
            // An access-log verdict leaves golive's maintenance out, as the
            // probe run by a controller does.
            let spans = if matches!(p, ProbeConfig::AccessLog(_)) {
                crate::maintenance::excluded_spans(
                    &agent.journal,
                    &app,
                    golive_shared::protocol::now_millis(),
                    Duration::from_secs(crate::accesslog::MAX_WINDOW_SECS),
                )
                .unwrap_or_default()
            } else {
                Vec::new()
            };
            let result = crate::probe::run_one(&cfg, &p, &spans).await;
            agent.probes_seen.record(&app, &result);
            result
        })
    }

    fn log(&self, app: &str, probe: &str) -> BoxFuture<Result<WindowStats, String>> {
        let agent = Arc::clone(&self.0);
        let (app, probe) = (app.to_string(), probe.to_string());
        Box::pin(async move {
            let Some((_, ProbeConfig::AccessLog(p))) = find(&agent, &app, &probe) else {
                return Err(format!("app {app} declares no access-log probe {probe:?}"));
            };
            // The tailer's first read of a big log is file work.
            tokio::task::spawn_blocking(move || {
                let format = LogFormat::parse(&p.format)?;
                crate::maintenance::access_log_stats(
                    &agent.journal,
                    &app,
                    &p.path,
                    &format,
                    Duration::from_secs(p.window_secs),
                )
            })
            .await
            .unwrap_or_else(|e| Err(format!("reading the access log stopped: {e}")))
        })
    }
}

fn find(
    agent: &Agent,
    app: &str,
    probe: &str,
) -> Option<(golive_shared::config::AppConfig, ProbeConfig)> {
    let config = agent.config();
    let cfg = config.app(app)?;
    let p = cfg.probes.iter().find(|p| p.name() == probe)?.clone();
    Some((cfg.clone(), p))
}

/// A probe the config no longer declares (checked at arming, so only a
/// config changed under a running agent, which needs a restart).
fn missing(app: &str, probe: &str) -> ProbeResult {
    ProbeResult {
        name: probe.to_string(),
        kind: "unknown".into(),
        severity: Severity::Critical,
        status: ProbeStatus::Error,
        value: None,
        threshold: None,
        duration_ms: 0,
        message: format!("app {app} declares no probe {probe:?}"),
    }
}
