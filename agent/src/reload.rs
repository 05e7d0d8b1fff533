//! The config file, checked and reloaded while the agent runs (issue 16).
//!
//! [`check`] is `golive-agent check-config` (also run by `ensure-running`
//! before it detaches, and by every reload). A reload is asked by SIGHUP or
//! by a change of the file (followed through its directory like the deny
//! list, [`crate::watch`]). A new config that does not pass [`check`] is
//! refused whole and logged with the file and every problem; the config in
//! force stays.
//!
//! What changes live: the apps (added, removed, changed: probes, hooks,
//! commands, flags, maintenance, backups, migrations, git, watchdog
//! defaults) and `agent.notify`. A job, a probe round or a request keeps the
//! snapshot it started with. What needs a restart, because it is bound at
//! start: `agent.name` (in job keys and records), `agent.listen` (the
//! socket), `agent.state_dir` (the lock, journal and store), `[tls]` (the
//! acceptor and the deny list's watch), `[limits]` (the connection gate),
//! `[log]` (the subscriber) and `[metrics]` (the plain port's listener).
//! A change there is logged as waiting for the next restart, and the value
//! in force stays until then.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use golive_shared::config::{self, AgentConfig};

use crate::state::Agent;

/// As for the deny list: an editor's rewrite is a burst of events.
const SETTLE: Duration = Duration::from_millis(150);

/// Everything `check-config` checks. `Err` holds the lines to show, each
/// naming the file (and line and key where the problem has one).
pub fn check(path: &Path) -> Result<AgentConfig, Vec<String>> {
    let shown = path.display();
    let cfg = config::load(path).map_err(|errors| {
        vec![
            errors.to_string(),
            format!(
                "golive-agent: fix the config above ({} problem(s))",
                errors.0.len()
            ),
        ]
    })?;
    let deny = match &cfg.tls.revoked {
        Some(p) => crate::revocation::DenyList::load(p)
            .map_err(|e| vec![format!("{shown}: tls.revoked: {e}")])?,
        None => crate::revocation::DenyList::none(),
    };
    crate::tls::server_config(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key, Arc::new(deny))
        .map_err(|e| vec![format!("{shown}: {e}")])?;
    crate::probe::check_ca_files(&cfg).map_err(|e| vec![format!("{shown}: {e}")])?;
    crate::probe::check_log_formats(&cfg).map_err(|e| vec![format!("{shown}: {e}")])?;
    // A repository git would refuse to read (issue 12): found now, not at
    // the first fetch.
    let mut problems = Vec::new();
    for (name, app) in &cfg.apps {
        use crate::release::git::{Ownership, ownership};
        let problem = match ownership(name, app) {
            Ok(Ownership::Dubious(why)) | Err(why) => why,
            Ok(_) => continue,
        };
        problems.push(format!("{shown}: key `apps.{name}.git.url`: {problem}"));
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Sighup,
    FileChanged,
}

/// Reloads one agent's config from one file.
pub struct Reloader {
    agent: Arc<Agent>,
    path: PathBuf,
    /// The bytes of the file last put in force (or refused): a change
    /// event that left them as they were is not a reload.
    last: Mutex<Option<Vec<u8>>>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file is as it was when last read (a change event only).
    Unchanged,
    /// Refused: the config in force stays. The problems, as logged.
    Refused(String),
    /// Put in force; `restart` names the fields whose change waits for a
    /// restart.
    Applied {
        summary: String,
        restart: Vec<String>,
    },
}

impl Reloader {
    /// `path` holds the config the agent runs with now.
    pub fn new(agent: Arc<Agent>, path: &Path) -> Arc<Reloader> {
        Arc::new(Reloader {
            agent,
            path: path.to_path_buf(),
            last: Mutex::new(std::fs::read(path).ok()),
        })
    }

    /// Reads, checks and applies the file; logs what it did, loudly when it
    /// refused. Blocking (reads files, asks git): call it off the runtime.
    pub fn reload(&self, trigger: Trigger) -> Outcome {
        let bytes = std::fs::read(&self.path).ok();
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if trigger == Trigger::FileChanged && bytes.is_some() && *last == bytes {
                return Outcome::Unchanged;
            }
            *last = bytes;
        }
        let why = match trigger {
            Trigger::Sighup => "SIGHUP",
            Trigger::FileChanged => "the file changed",
        };
        // systemd sees the reload begin and end (Type=notify, issue 16).
        crate::sdnotify::reloading();
        let outcome = self.apply(why);
        crate::sdnotify::reloaded(match &outcome {
            Outcome::Refused(_) => "serving; the last reload was refused (see the log)",
            _ => "serving; config reloaded",
        });
        outcome
    }

    fn apply(&self, why: &str) -> Outcome {
        let shown = self.path.display();
        let new = match check(&self.path) {
            Ok(c) => c,
            Err(lines) => {
                let text = lines.join("\n");
                tracing::error!(
                    "config {shown} NOT reloaded ({why}): the new file is refused and the \
                     config in force stays; fix it and save again (or send SIGHUP):\n{text}"
                );
                return Outcome::Refused(text);
            }
        };
        let old = self.agent.config();
        let (new, restart) = keep_restart_fields(&old, new);
        let summary = describe(&old, &new);
        self.agent.replace_config(new);
        tracing::info!("config {shown} reloaded ({why}): {summary}");
        if !restart.is_empty() {
            tracing::warn!(
                "config {shown}: {} changed and take(s) effect only at the next restart of the \
                 agent; the value(s) in force stay until then",
                restart.join(", ")
            );
        }
        Outcome::Applied { summary, restart }
    }
}

/// `new` with the fields that are bound at start taken from `old`, and
/// the names of those that differed.
pub fn keep_restart_fields(old: &AgentConfig, mut new: AgentConfig) -> (AgentConfig, Vec<String>) {
    let mut restart = Vec::new();
    if new.agent.name != old.agent.name {
        restart.push("agent.name".to_string());
        new.agent.name = old.agent.name.clone();
    }
    if new.agent.listen != old.agent.listen {
        restart.push("agent.listen".to_string());
        new.agent.listen = old.agent.listen.clone();
    }
    if new.agent.state_dir != old.agent.state_dir {
        restart.push("agent.state_dir".to_string());
        new.agent.state_dir = old.agent.state_dir.clone();
    }
    let tls = |c: &AgentConfig| {
        (
            c.tls.ca.clone(),
            c.tls.cert.clone(),
            c.tls.key.clone(),
            c.tls.revoked.clone(),
        )
    };
    if tls(&new) != tls(old) {
        restart.push("[tls]".to_string());
        new.tls = old.tls.clone();
    }
    if format!("{:?}", new.limits) != format!("{:?}", old.limits) {
        restart.push("[limits]".to_string());
        new.limits = old.limits.clone();
    }
    // The subscriber and the plain metrics listener are set up once.
    if new.log != old.log {
        restart.push("[log]".to_string());
        new.log = old.log.clone();
    }
    if new.metrics != old.metrics {
        restart.push("[metrics]".to_string());
        new.metrics = old.metrics.clone();
    }
    (new, restart)
}

/// "apps: added [a], removed [b], changed [c]" or "no app changed".
fn describe(old: &AgentConfig, new: &AgentConfig) -> String {
    let added: Vec<&str> = new
        .apps
        .keys()
        .filter(|k| !old.apps.contains_key(*k))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = old
        .apps
        .keys()
        .filter(|k| !new.apps.contains_key(*k))
        .map(String::as_str)
        .collect();
    // Debug output redacts secrets the same way on both sides, so a change
    // of only a webhook URL shows as no change here; it is applied anyway.
    let changed: Vec<&str> = new
        .apps
        .iter()
        .filter(|(k, a)| {
            old.apps
                .get(*k)
                .is_some_and(|o| format!("{o:?}") != format!("{a:?}"))
        })
        .map(|(k, _)| k.as_str())
        .collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("apps added {added:?}"));
    }
    if !removed.is_empty() {
        parts.push(format!("apps removed {removed:?}"));
    }
    if !changed.is_empty() {
        parts.push(format!("apps changed {changed:?}"));
    }
    if parts.is_empty() {
        parts.push("no app changed".into());
    }
    format!(
        "{}; {} app(s): {}",
        parts.join(", "),
        new.apps.len(),
        new.app_names()
    )
}

/// The watch on the config file; dropping it stops the watch thread.
pub type Watching = crate::watch::Watching;

/// Follows the config file: a change is reloaded once the writes settle.
pub fn watch(reloader: Arc<Reloader>) -> std::io::Result<Watching> {
    let path = reloader.path.clone();
    crate::watch::follow(&path, "golive-config", SETTLE, move || {
        if reloader.path.exists() {
            reloader.reload(Trigger::FileChanged);
        }
    })
}

/// Takes SIGHUP from the default action (which ends the process). Call it
/// before the agent can be seen running (`agent.addr`), so a SIGHUP sent as
/// soon as it is seen is a reload, not a stop; one received before
/// [`on_sighup`] runs is kept for it.
pub fn catch_sighup() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Reloads on every SIGHUP until the task is dropped with the runtime.
pub fn on_sighup(
    reloader: Arc<Reloader>,
    mut hup: tokio::signal::unix::Signal,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let r = Arc::clone(&reloader);
            let _ = tokio::task::spawn_blocking(move || r.reload(Trigger::Sighup)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, listen: &str, apps: &[&str]) -> AgentConfig {
        let f = dir.join("f.pem");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let f = f.display();
        let mut text = format!(
            "[agent]\nname = \"web1\"\nlisten = \"{listen}\"\nstate_dir = \"/tmp/s\"\n\
             [tls]\nca = \"{f}\"\ncert = \"{f}\"\nkey = \"{f}\"\n"
        );
        for a in apps {
            text.push_str(&format!("[apps.{a}]\nroot = \"/srv/{a}\"\n"));
        }
        config::parse(Path::new("agent.toml"), &text).unwrap()
    }

    #[test]
    fn issue16_restart_fields_stay_and_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let old = cfg(dir.path(), "127.0.0.1:7443", &["shop"]);
        let new = cfg(dir.path(), "127.0.0.1:9443", &["shop", "blog"]);
        let (kept, restart) = keep_restart_fields(&old, new);
        assert_eq!(restart, vec!["agent.listen".to_string()]);
        assert_eq!(kept.agent.listen, "127.0.0.1:7443");
        assert!(kept.apps.contains_key("blog"));
        let summary = describe(&old, &kept);
        assert!(summary.contains("apps added [\"blog\"]"), "{summary}");
        let (_, none) = keep_restart_fields(&old, cfg(dir.path(), "127.0.0.1:7443", &[]));
        assert!(none.is_empty());
    }
}
