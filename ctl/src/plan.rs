//! Deployment plans: a TOML file parsed raw ([`RawPlan`]), then validated into
//! a [`Plan`] before anything connects. Relative paths resolve against the
//! plan file's directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use golive_shared::names;
use serde::Deserialize;

use crate::gate::{Action, Policy};
use crate::tls;
use crate::transport::{Address, Connector, Link, TlsConnector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    /// The app, as the hosts' agent configs name it.
    pub app: String,
    pub release: Option<RawRelease>,
    pub tls: RawTls,
    pub hosts: Vec<RawHost>,
    #[serde(default)]
    pub deploy: RawDeploy,
    #[serde(default)]
    pub gate: RawGate,
    /// Deployment window: when `golivectl deploy` may start.
    pub window: Option<crate::window::RawWindow>,
    /// The artifact scan of `golivectl preflight`.
    pub preflight: Option<RawPreflight>,
    /// What each host watches after its switch, and rolls back on.
    pub watchdog: Option<crate::watchdog::RawWatchdog>,
    /// `[[notify]]`: webhooks told of the deployment (issue 15).
    #[serde(default)]
    pub notify: Vec<crate::notify::RawNotify>,
    /// `[[waves]]`: the hosts switched wave by wave (issue 14).
    #[serde(default)]
    pub waves: Vec<crate::waves::RawWave>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreflight {
    /// Text that must not appear in the release's source files.
    #[serde(default)]
    pub forbidden: Vec<String>,
    /// Files searched (globs); default [`crate::scan::DEFAULT_INCLUDE`].
    pub include: Option<Vec<String>>,
    /// Files and directories skipped (globs); default [`crate::scan::DEFAULT_EXCLUDE`].
    pub exclude: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    /// Release id; default: the artifact file name without its archive
    /// extension, e.g. `shop-v2` for `shop-v2.tar.gz`, or for a git source
    /// the ref and the UTC time, e.g. `v1.4-20260101T120000.123Z`.
    pub id: Option<String>,
    /// An archive to upload.
    pub artifact: Option<PathBuf>,
    /// Or a git ref (branch, tag, commit) each host fetches from the
    /// repository its agent config declares.
    pub git: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub name: String,
    /// `HOST:PORT` of the agent.
    pub address: String,
    /// Name to verify in the agent certificate; default: the host part of `address`.
    pub server_name: Option<String>,
    /// Groups this host belongs to, for `[[waves]] groups = [...]`, e.g.
    /// `["canary", "eu"]`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `"ssh [OPTIONS] [USER@]HOST"`: reach the agent through the system
    /// ssh; `address` is then the agent's address as seen on that host
    /// (issue 15).
    pub via: Option<String>,
    /// With `via`: "forward" (default; `ssh -W address`) or "bridge" (the
    /// remote `golive-agent bridge` relays to the agent's listen address).
    pub ssh_mode: Option<String>,
    /// Bridge mode: the agent program on the remote host; default
    /// `golive-agent` (found on the remote PATH).
    pub bridge_agent: Option<String>,
    /// Bridge mode: the agent's config file on the remote host.
    pub bridge_config: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDeploy {
    /// Lease length of the app lock; renewed every third of it.
    pub lock_ttl_secs: u32,
    /// Pre-deploy backup: "none", "before" (taken before activation) or
    /// "verified" (taken and verified before activation).
    pub backup: String,
    /// Put the app in maintenance mode (as each agent's config declares)
    /// from before the pre-deploy backup until every host is switched.
    pub maintenance: bool,
    /// Sign-offs a deployment needs before it starts (`golivectl deploy
    /// --approved-by NAME`, one per person); 0: none.
    pub approvals: u32,
    /// When `contract` migrations run: "at-commit" (default; after the
    /// release is committed, so every rollback before that is code-only) or
    /// "with-deploy" (before the switch, like the others).
    pub contract: String,
    /// Whether a rollback may restore the pre-deploy backup when neither
    /// code-only nor down migrations can take the database back: "allow"
    /// (default) or "forbid" (the code rolls back, the schema stays, and
    /// the operator is told).
    pub restore: String,
    /// How many hosts the phases that change nothing live (locks, flags,
    /// upload and stage, probes before) handle at once (issue 14).
    pub parallel: u32,
    /// How long a host may stay unreachable while the controller follows
    /// its staging; then it counts as failed (issue 14).
    pub host_timeout_secs: u32,
    /// What a `[[waves]]` wave that fails sends back (issue 14):
    /// "rollback-all" (default: every host switched so far) or
    /// "rollback-wave" (only the failed wave's hosts; earlier waves keep
    /// the release and the deployment ends `partial`).
    pub on_wave_failure: String,
}

impl Default for RawDeploy {
    fn default() -> Self {
        RawDeploy {
            lock_ttl_secs: 120,
            backup: "none".into(),
            maintenance: false,
            approvals: 0,
            contract: "at-commit".into(),
            restore: "allow".into(),
            parallel: DEFAULT_PARALLEL,
            host_timeout_secs: 60,
            on_wave_failure: "rollback-all".into(),
        }
    }
}

/// `[deploy] on_wave_failure`: what a wave that fails (over its
/// `max_fail`, or in its soak) switches back (issue 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWaveFailure {
    /// Every host the deployment switched so far, newest first.
    RollbackAll,
    /// Only the failed wave's switched hosts; earlier waves keep the
    /// release, and `golivectl rollback ID` takes them back later.
    RollbackWave,
}

impl OnWaveFailure {
    /// Its name in the plan.
    pub fn name(self) -> &'static str {
        match self {
            OnWaveFailure::RollbackAll => "rollback-all",
            OnWaveFailure::RollbackWave => "rollback-wave",
        }
    }
}

/// `[gate]`: what a probe failure of each severity does, after each host's
/// validation: "rollback", "pause" (wait for `golivectl go`/`no-go`),
/// "warn" (continue, loudly) or "continue".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    #[serde(default = "gate_critical")]
    pub critical: String,
    #[serde(default = "gate_high")]
    pub high: String,
    #[serde(default = "gate_medium")]
    pub medium: String,
    #[serde(default = "gate_low")]
    pub low: String,
    /// How long a paused deployment waits for a decision (seconds).
    #[serde(default = "gate_pause_timeout")]
    pub pause_timeout_secs: u64,
}

fn gate_critical() -> String {
    "rollback".into()
}
fn gate_high() -> String {
    "pause".into()
}
fn gate_medium() -> String {
    "warn".into()
}
fn gate_low() -> String {
    "continue".into()
}
fn gate_pause_timeout() -> u64 {
    Policy::default().pause_timeout_secs
}

impl Default for RawGate {
    fn default() -> Self {
        RawGate {
            critical: gate_critical(),
            high: gate_high(),
            medium: gate_medium(),
            low: gate_low(),
            pause_timeout_secs: gate_pause_timeout(),
        }
    }
}

/// Whether a deployment backs up first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreDeployBackup {
    None,
    Before,
    Verified,
}

/// `[deploy] parallel` when the plan does not say (issue 14).
pub const DEFAULT_PARALLEL: u32 = 10;

/// A validated plan.
pub struct Plan {
    pub path: PathBuf,
    pub app: String,
    pub release: Option<Release>,
    pub hosts: Vec<Host>,
    pub lock_ttl_secs: u32,
    /// `[deploy] parallel`: hosts handled at once where nothing live changes.
    pub parallel: usize,
    /// `[deploy] host_timeout_secs`: how long a host may stay unreachable
    /// while the controller follows its staging.
    pub host_timeout: std::time::Duration,
    /// `[deploy] on_wave_failure` (issue 14).
    pub on_wave_failure: OnWaveFailure,
    pub backup: PreDeployBackup,
    /// `[deploy] maintenance = true`: maintenance on around the switch.
    pub maintenance: bool,
    /// `[deploy] approvals`: distinct `--approved-by` names a deployment needs.
    pub approvals: u32,
    /// `[deploy] contract = "at-commit"`: contract migrations wait for the
    /// release's commit (issue 13).
    pub contract_at_commit: bool,
    /// `[deploy] restore = "allow"`: a rollback may restore the pre-deploy
    /// backup (issue 13).
    pub restore_allowed: bool,
    /// `[watchdog]`: armed on each host after its switch.
    pub watchdog: Option<golive_shared::protocol::WatchdogSpec>,
    /// `[[notify]]`: webhooks told of the deployment (issue 15).
    pub notify: Vec<crate::notify::Notify>,
    /// `[[waves]]` (issue 14); empty: host by host, as without waves.
    pub waves: Vec<crate::waves::Wave>,
    /// The operator name from our client certificate.
    pub operator: String,
    pub gate: Policy,
    /// `[window]`: when deployments may start; `None`: any time.
    pub window: Option<crate::window::Window>,
    /// `[preflight]`: the artifact scan's patterns and globs.
    pub scan: crate::scan::ScanConfig,
}

pub struct Release {
    pub id: String,
    pub source: Source,
}

/// Where a release comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An archive uploaded to every host.
    Artifact(PathBuf),
    /// A git ref fetched on every host from the repository its agent
    /// config declares.
    Git(String),
}

/// A host of the plan: where its agent is (data), and the [`Link`] the
/// plan's connector made from that, which connects at its first call
/// (issue 14: the plan holds addresses, the transport is a seam).
pub struct Host {
    pub name: String,
    /// `HOST:PORT`.
    pub address: String,
    /// The name checked against the agent certificate, when not the
    /// address's host part.
    pub server_name: Option<String>,
    /// Through the system ssh (issue 15).
    pub ssh: Option<Arc<crate::ssh::Route>>,
    pub client: Link,
}

/// A plan problem, always a usage error (exit 2). Shown like an agent config
/// problem: `FILE:LINE: key `KEY`: MESSAGE` (issue 11: every plan error
/// names the file, the line and the full dotted key).
#[derive(Debug, thiserror::Error)]
pub struct PlanError {
    pub file: PathBuf,
    /// 1-based; `None` only when the file itself could not be read.
    pub line: Option<usize>,
    /// Dotted key, array elements by index (`hosts.1.address`); empty only
    /// when the file itself could not be read.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads and validates a plan. Relative paths in it (`release.artifact`,
/// `tls.ca`, `tls.cert`, `tls.key`) resolve against the plan file's
/// directory, whatever the working directory.
pub fn load(path: &Path) -> Result<Plan, PlanErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!(
            "cannot read the plan: {e}; write one with `golivectl init` or pass its path"
        ),
    })?;
    parse(path, &text)
}

/// Just the `app` a plan names (for commands that read the local journal
/// and need no certificate), with the same errors as [`load`].
pub fn app_name(path: &Path) -> Result<String, PlanError> {
    #[derive(Deserialize)]
    struct AppOnly {
        app: String,
    }
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!("cannot read the plan: {e}"),
    })?;
    let raw: AppOnly = toml::from_str(&text).map_err(|e| {
        let site = golive_shared::config::error_site(&text, &e);
        PlanError {
            file: path.to_path_buf(),
            line: site.line,
            key: site.key,
            message: e.message().trim().to_string(),
        }
    })?;
    names::check_app_name(&raw.app).map_err(|message| PlanError {
        file: path.to_path_buf(),
        line: golive_shared::config::locate(&text, "app").or(Some(1)),
        key: "app".into(),
        message,
    })?;
    Ok(raw.app)
}

/// At most this many problems are reported from one plan.
const MAX_PROBLEMS: usize = 20;

/// Every problem of a plan, in line order (issue 12: all at once, not only
/// the first). Shown one per line.
#[derive(Debug, thiserror::Error)]
pub struct PlanErrors(pub Vec<PlanError>);

impl std::fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() >= MAX_PROBLEMS {
            write!(f, "\n(stopped after {MAX_PROBLEMS} problems)")?;
        }
        Ok(())
    }
}

impl From<PlanError> for PlanErrors {
    fn from(e: PlanError) -> PlanErrors {
        PlanErrors(vec![e])
    }
}

/// Problems found so far in one plan file.
struct Problems<'a> {
    file: &'a Path,
    text: &'a str,
    list: Vec<PlanError>,
}

impl Problems<'_> {
    /// A problem with a key: at its line, or its table's when it is not written.
    fn key(&mut self, key: &str, message: String) {
        self.list.push(PlanError {
            file: self.file.to_path_buf(),
            line: golive_shared::config::locate(self.text, key).or(Some(1)),
            key: key.to_string(),
            message,
        });
    }

    fn is_clean(&self) -> bool {
        self.list.is_empty()
    }

    fn finish(mut self) -> PlanErrors {
        self.list.sort_by_key(|e| e.line);
        self.list.truncate(MAX_PROBLEMS);
        PlanErrors(self.list)
    }
}

/// Reads the raw plan. serde stops at the first problem, so the item it
/// names is blanked out (lines kept) and the rest read again, until it
/// reads or a problem cannot be blanked (a syntax error, a missing key).
fn read_raw(problems: &mut Problems) -> Option<RawPlan> {
    let mut text = problems.text.to_string();
    let mut seen: Vec<String> = Vec::new();
    while problems.list.len() < MAX_PROBLEMS {
        let e = match toml::from_str::<RawPlan>(&text) {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let site = golive_shared::config::error_site(&text, &e);
        // A wrong value blanked out comes back as "missing": said already.
        if seen.contains(&site.key) {
            return None;
        }
        problems.list.push(PlanError {
            file: problems.file.to_path_buf(),
            line: site.line,
            key: site.key.clone(),
            message: e.message().trim().to_string(),
        });
        text = golive_shared::config::blank_item(&text, &site.key)?;
        seen.push(site.key);
    }
    None
}

/// Validates the plan text `text` of the file `path` (which names it in
/// errors and anchors its relative paths). Every problem is reported.
pub fn parse(path: &Path, text: &str) -> Result<Plan, PlanErrors> {
    let mut problems = Problems {
        file: path,
        text,
        list: Vec::new(),
    };
    let Some(raw) = read_raw(&mut problems) else {
        return Err(problems.finish());
    };
    let plan = validate(path, raw, &mut problems);
    match plan {
        Some(plan) if problems.is_clean() => Ok(plan),
        _ => Err(problems.finish()),
    }
}

/// The checks of a raw plan, each adding its problem and going on.
fn validate(path: &Path, raw: RawPlan, problems: &mut Problems) -> Option<Plan> {
    let base = golive_shared::config::file_dir(path);
    let abs = |p: &Path| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_path_buf()
        }
    };

    if let Err(e) = names::check_app_name(&raw.app) {
        problems.key("app", e);
    }
    let release = match raw.release {
        None => None,
        Some(r) => {
            let source = match (r.artifact, r.git) {
                (Some(artifact), None) => {
                    let artifact = abs(&artifact);
                    if !artifact.is_file() {
                        problems.key(
                            "release.artifact",
                            format!(
                                "{} does not exist; build the release archive first",
                                artifact.display()
                            ),
                        );
                    }
                    Some(Source::Artifact(artifact))
                }
                (None, Some(git_ref)) => match names::check_git_ref(&git_ref) {
                    Ok(()) => Some(Source::Git(git_ref)),
                    Err(e) => {
                        problems.key("release.git", e);
                        None
                    }
                },
                (Some(_), Some(_)) => {
                    problems.key(
                        "release",
                        "[release] names both `artifact` and `git`; a release comes from one \
                         source: keep `artifact = PATH` (an archive to upload) or `git = REF` \
                         (fetched on each host)"
                            .into(),
                    );
                    None
                }
                (None, None) => {
                    problems.key(
                        "release",
                        "[release] names no source; add `artifact = \"dist/app.tar.gz\"` (an \
                         archive to upload) or `git = \"v1.4.2\"` (a ref each host fetches)"
                            .into(),
                    );
                    None
                }
            };
            source.and_then(|source| {
                let id = match (r.id, &source) {
                    (Some(id), _) => id,
                    (None, Source::Artifact(artifact)) => default_release_id(artifact),
                    (None, Source::Git(git_ref)) => {
                        default_git_release_id(git_ref, golive_shared::protocol::now_millis())
                    }
                };
                match names::check_release_id(&id) {
                    Ok(()) => Some(Release { id, source }),
                    Err(e) => {
                        problems.key("release.id", e);
                        None
                    }
                }
            })
        }
    };
    if raw.hosts.is_empty() {
        problems.key("hosts", "no [[hosts]]: list at least one agent".into());
    }
    let (ca, cert, key) = (abs(&raw.tls.ca), abs(&raw.tls.cert), abs(&raw.tls.key));
    let tls_config = match tls::client_config(&ca, &cert, &key) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.key(tls_key(&e), e.to_string());
            None
        }
    };
    let operator = cert_name(&cert).unwrap_or_else(|| "unknown".into());
    let mut hosts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // One private directory of ssh control sockets for the plan's hosts.
    let mut control: Option<Arc<crate::ssh::ControlDir>> = None;
    for (i, h) in raw.hosts.iter().enumerate() {
        let at = |k: &str| format!("hosts.{i}.{k}");
        if !seen.insert(h.name.clone()) {
            problems.key(&at("name"), format!("duplicate host name {:?}", h.name));
        }
        let route = match ssh_route(h, &base, &mut control) {
            Ok(route) => route,
            Err((k, message)) => {
                problems.key(&at(k), format!("host {}: {message}", h.name));
                continue;
            }
        };
        if !h.address.contains(':') {
            problems.key(
                &at("address"),
                format!(
                    "host {}: address {:?} needs a port, e.g. \"{}:7443\"",
                    h.name, h.address, h.address
                ),
            );
            continue;
        }
        let Some(tls_config) = &tls_config else {
            continue;
        };
        let connector = TlsConnector {
            tls: Arc::clone(tls_config),
        };
        match connector.connect(Address {
            name: &h.name,
            address: &h.address,
            server_name: h.server_name.as_deref(),
            ssh: route.clone(),
        }) {
            Ok(client) => hosts.push(Host {
                name: h.name.clone(),
                address: h.address.clone(),
                server_name: h.server_name.clone(),
                ssh: route,
                client,
            }),
            Err(e) => {
                let k = if h.server_name.is_some() {
                    "server_name"
                } else {
                    "address"
                };
                problems.key(&at(k), e);
            }
        }
    }
    if raw.deploy.lock_ttl_secs < 10 || raw.deploy.lock_ttl_secs > 3600 {
        problems.key("deploy.lock_ttl_secs", "use 10 to 3600 seconds".into());
    }
    if !(1..=256).contains(&raw.deploy.parallel) {
        problems.key(
            "deploy.parallel",
            format!(
                "{} is not a host count from 1 (one host at a time) to 256; the default is {DEFAULT_PARALLEL}",
                raw.deploy.parallel
            ),
        );
    }
    if !(1..=3600).contains(&raw.deploy.host_timeout_secs) {
        problems.key(
            "deploy.host_timeout_secs",
            "use 1 to 3600 seconds (default 60)".into(),
        );
    }
    let on_wave_failure = match raw.deploy.on_wave_failure.as_str() {
        "rollback-all" => OnWaveFailure::RollbackAll,
        "rollback-wave" => OnWaveFailure::RollbackWave,
        other => {
            problems.key(
                "deploy.on_wave_failure",
                format!(
                    "{other:?} is not a policy: use \"rollback-all\" (default: a failed wave \
                     switches back every host switched so far) or \"rollback-wave\" (only the \
                     failed wave's hosts go back)"
                ),
            );
            OnWaveFailure::RollbackAll
        }
    };
    if raw.deploy.approvals > 20 {
        problems.key(
            "deploy.approvals",
            "use 0 (no sign-off needed) to 20 approvals".into(),
        );
    }
    let contract_at_commit = match raw.deploy.contract.as_str() {
        "at-commit" => true,
        "with-deploy" => false,
        other => {
            problems.key(
                "deploy.contract",
                format!(
                    "{other:?} is not one of \"at-commit\" (contract migrations run once the \
                     release is committed) or \"with-deploy\" (before the switch)"
                ),
            );
            true
        }
    };
    let restore_allowed = match raw.deploy.restore.as_str() {
        "allow" => true,
        "forbid" => false,
        other => {
            problems.key(
                "deploy.restore",
                format!(
                    "{other:?} is not one of \"allow\" (a rollback may restore the pre-deploy \
                     backup) or \"forbid\" (the schema stays; you are told)"
                ),
            );
            true
        }
    };
    let notify = match crate::notify::parse(&raw.notify) {
        Ok(n) => n,
        Err(list) => {
            for (key, message) in list {
                problems.key(&key, message);
            }
            Vec::new()
        }
    };
    let watchdog = match raw
        .watchdog
        .as_ref()
        .map(|w| crate::watchdog::parse(w, restore_allowed))
    {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(list)) => {
            for (key, message) in list {
                problems.key(&key, message);
            }
            None
        }
    };
    let host_names: Vec<String> = raw.hosts.iter().map(|h| h.name.clone()).collect();
    let host_groups: Vec<Vec<String>> = raw.hosts.iter().map(|h| h.groups.clone()).collect();
    for (i, h) in raw.hosts.iter().enumerate() {
        for g in &h.groups {
            if g.is_empty()
                || g.len() > 40
                || !g
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                problems.key(
                    &format!("hosts.{i}.groups"),
                    format!(
                        "{g:?} is not a group name: use 1 to 40 letters, digits, '-' or '_', \
                         e.g. \"eu\""
                    ),
                );
            }
        }
    }
    let waves = match crate::waves::plan(&raw.waves, &host_names, &host_groups) {
        Ok(w) => w,
        Err(list) => {
            for (key, message) in list {
                problems.key(&key, message);
            }
            Vec::new()
        }
    };
    if !raw.waves.is_empty() && raw.deploy.maintenance {
        problems.key(
            "deploy.maintenance",
            "maintenance mode is fleet-wide and cannot be combined with [[waves]] yet: remove \
             `maintenance = true` or the [[waves]]"
                .into(),
        );
    }
    let backup = match raw.deploy.backup.as_str() {
        "none" => PreDeployBackup::None,
        "before" => PreDeployBackup::Before,
        "verified" => PreDeployBackup::Verified,
        other => {
            problems.key(
                "deploy.backup",
                format!("{other:?} is not one of \"none\", \"before\", \"verified\""),
            );
            PreDeployBackup::None
        }
    };
    let mut action = |key: &str, value: &str, default: Action| {
        Action::parse(value).unwrap_or_else(|| {
            problems.key(
                &format!("gate.{key}"),
                format!("{value:?} is not one of \"rollback\", \"pause\", \"warn\", \"continue\""),
            );
            default
        })
    };
    let defaults = Policy::default();
    let gate = Policy {
        critical: action("critical", &raw.gate.critical, defaults.critical),
        high: action("high", &raw.gate.high, defaults.high),
        medium: action("medium", &raw.gate.medium, defaults.medium),
        low: action("low", &raw.gate.low, defaults.low),
        pause_timeout_secs: raw.gate.pause_timeout_secs,
    };
    if raw.gate.pause_timeout_secs == 0 || raw.gate.pause_timeout_secs > 7 * 24 * 3600 {
        problems.key(
            "gate.pause_timeout_secs",
            "use 1 second to 7 days (604800)".into(),
        );
    }
    let window = match raw
        .window
        .as_ref()
        .map(crate::window::Window::parse)
        .transpose()
    {
        Ok(w) => w,
        Err((key, message)) => {
            problems.key(key, message);
            None
        }
    };
    let scan = match scan_config(raw.preflight) {
        Ok(scan) => Some(scan),
        Err((key, message)) => {
            problems.key(key, message);
            None
        }
    };
    if !problems.is_clean() {
        return None;
    }
    Some(Plan {
        gate,
        window,
        scan: scan?,
        backup,
        maintenance: raw.deploy.maintenance,
        approvals: raw.deploy.approvals,
        contract_at_commit,
        restore_allowed,
        watchdog,
        notify,
        waves,
        path: path.to_path_buf(),
        app: raw.app,
        release,
        hosts,
        lock_ttl_secs: raw.deploy.lock_ttl_secs,
        parallel: raw.deploy.parallel as usize,
        host_timeout: std::time::Duration::from_secs(raw.deploy.host_timeout_secs.into()),
        on_wave_failure,
        operator,
    })
}

/// A host's `via`, `ssh_mode` and `bridge_*` checked into its ssh route
/// (issue 15); `None` without `via`. An error names the key.
fn ssh_route(
    h: &RawHost,
    base: &Path,
    control: &mut Option<Arc<crate::ssh::ControlDir>>,
) -> Result<Option<Arc<crate::ssh::Route>>, (&'static str, String)> {
    use crate::ssh::{Mode, Route, check_remote_word, parse_via, resolve_files};
    let Some(via) = &h.via else {
        for (key, set) in [
            ("ssh_mode", h.ssh_mode.is_some()),
            ("bridge_agent", h.bridge_agent.is_some()),
            ("bridge_config", h.bridge_config.is_some()),
        ] {
            if set {
                return Err((
                    key,
                    format!(
                        "`{key}` is for a host reached through ssh; add `via = \"ssh \
                         USER@HOST\"` or remove `{key}`"
                    ),
                ));
            }
        }
        return Ok(None);
    };
    let mut via = parse_via(via).map_err(|e| ("via", e))?;
    resolve_files(&mut via, base);
    let mode = match h.ssh_mode.as_deref().unwrap_or("forward") {
        "forward" => {
            for (key, set) in [
                ("bridge_agent", h.bridge_agent.is_some()),
                ("bridge_config", h.bridge_config.is_some()),
            ] {
                if set {
                    return Err((
                        key,
                        format!(
                            "`{key}` is for ssh_mode = \"bridge\"; set that, or remove `{key}`"
                        ),
                    ));
                }
            }
            Mode::Forward
        }
        "bridge" => {
            let agent = h
                .bridge_agent
                .clone()
                .unwrap_or_else(|| "golive-agent".into());
            check_remote_word(&agent).map_err(|e| ("bridge_agent", e))?;
            let Some(config) = h.bridge_config.clone() else {
                return Err((
                    "bridge_config",
                    "ssh_mode = \"bridge\" runs `golive-agent bridge --config FILE` on the \
                     host: set bridge_config to the agent's config file there, e.g. \
                     \"/etc/golive/agent.toml\""
                        .into(),
                ));
            };
            check_remote_word(&config).map_err(|e| ("bridge_config", e))?;
            Mode::Bridge { agent, config }
        }
        other => {
            return Err((
                "ssh_mode",
                format!(
                    "{other:?} is not a mode; use \"forward\" (ssh -W to the agent's address; \
                     the SSH server must allow forwarding) or \"bridge\" (the remote \
                     golive-agent bridge relays to the agent)"
                ),
            ));
        }
    };
    let control = match control {
        Some(c) => Arc::clone(c),
        None => {
            let c = Arc::new(crate::ssh::ControlDir::new().map_err(|e| {
                (
                    "via",
                    format!(
                        "cannot create a private directory for ssh's control sockets in {}: {e}; \
                         set TMPDIR to a writable directory",
                        std::env::temp_dir().display()
                    ),
                )
            })?);
            *control = Some(Arc::clone(&c));
            c
        }
    };
    Ok(Some(Arc::new(Route { via, mode, control })))
}

/// Which `[tls]` key a TLS file problem is about (`client_config` reads the
/// CA, then the certificate, then the key, and says which file it was).
fn tls_key(e: &tls::TlsFileError) -> &'static str {
    use tls::TlsFileError as E;
    match e {
        E::Read { what, .. } | E::BadPem { what, .. } | E::NoCert { what, .. } => match *what {
            "CA certificate" => "tls.ca",
            "certificate" => "tls.cert",
            _ => "tls.key",
        },
        E::BadCa { .. } => "tls.ca",
        E::NoKey { .. } | E::KeyPermissions { .. } | E::CertKey { .. } => "tls.key",
        _ => "tls",
    }
}

/// `[preflight]` with its defaults, checked as the agent checks it
/// ([`golive_shared::scan::check`]: it gets the same config for git releases).
fn scan_config(
    raw: Option<RawPreflight>,
) -> Result<crate::scan::ScanConfig, (&'static str, String)> {
    let defaults = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let raw = raw.unwrap_or(RawPreflight {
        forbidden: Vec::new(),
        include: None,
        exclude: None,
    });
    let cfg = crate::scan::ScanConfig {
        forbidden: raw.forbidden,
        include: raw
            .include
            .unwrap_or_else(|| defaults(crate::scan::DEFAULT_INCLUDE)),
        exclude: raw
            .exclude
            .unwrap_or_else(|| defaults(crate::scan::DEFAULT_EXCLUDE)),
    };
    golive_shared::scan::check(&cfg).map_err(|(list, message)| {
        let key = match list {
            "forbidden" => "preflight.forbidden",
            "include" => "preflight.include",
            _ => "preflight.exclude",
        };
        (key, message)
    })?;
    Ok(cfg)
}

/// `shop-v2.tar.gz` → `shop-v2`.
pub fn default_release_id(artifact: &Path) -> String {
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut id = name.as_str();
    for ext in [".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar"] {
        if let Some(stem) = id.strip_suffix(ext) {
            id = stem;
            break;
        }
    }
    id.to_string()
}

/// The default id of a git-sourced release: the ref made path-safe (at most
/// 60 characters) and the UTC time to the millisecond, so every deployment
/// of a moving branch gets its own release:
/// `release/2.0` at 2026-01-01 12:00:00.123 → `release-2.0-20260101T120000.123Z`.
pub fn default_git_release_id(git_ref: &str, now: golive_shared::protocol::UnixMillis) -> String {
    let safe: String = git_ref
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let safe = safe.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut safe: String = safe.chars().take(60).collect();
    if safe.is_empty() {
        safe.push_str("git");
    }
    let stamp = golive_shared::timefmt::utc(now)
        .replace(['-', ':'], "")
        .replace('Z', "");
    format!("{safe}-{stamp}.{:03}Z", now.rem_euclid(1000))
}

/// The common name of our own certificate: who the journal says deployed.
fn cert_name(path: &Path) -> Option<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    golive_shared::identity::PeerIdentity::from_der(der.as_ref())
        .ok()
        .map(|p| p.name)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// A directory with a CA, an operator certificate and an artifact, and
    /// the text of a good plan that names them relatively:
    ///
    /// ```text
    ///  1 app = "shop"
    ///  3 [release]            4 artifact = ...
    ///  6 [tls]                7 ca, 8 cert, 9 key
    /// 11 [[hosts]]           12 name, 13 address
    /// 15 [deploy]            16 lock_ttl_secs
    /// ```
    fn fixture() -> (tempfile::TempDir, String) {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        crate::pki::ca_init(&pki, 30).unwrap();
        crate::pki::issue_operator(&pki, "alice", golive_shared::identity::Role::Operator, 10)
            .unwrap();
        std::fs::create_dir_all(tmp.path().join("dist")).unwrap();
        std::fs::write(tmp.path().join("dist/shop.tar.gz"), b"x").unwrap();
        let text = "app = \"shop\"\n\n\
                    [release]\nartifact = \"dist/shop.tar.gz\"\n\n\
                    [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/operators/alice.crt\"\n\
                    key = \"pki/operators/alice.key\"\n\n\
                    [[hosts]]\nname = \"web1\"\naddress = \"127.0.0.1:7443\"\n\n\
                    [deploy]\nlock_ttl_secs = 120\n";
        (tmp, text.to_string())
    }

    fn load_text(dir: &Path, text: &str) -> Result<Plan, PlanErrors> {
        let path = dir.join("golive.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    /// `LINE: key `KEY`` of the error `from` → `to` gives (which must occur).
    fn site(from: &str, to: &str) -> String {
        edits(&[(from, to)])
    }

    /// The fixture's `[tls]` as an inline table on line 2.
    fn inline_tls(table: &str) -> String {
        edits(&[
            (
                "app = \"shop\"\n\n",
                &format!("app = \"shop\"\ntls = {table}\n"),
            ),
            (
                "[tls]\nca = \"pki/ca.crt\"\ncert = \"pki/operators/alice.crt\"\n\
                 key = \"pki/operators/alice.key\"\n",
                "",
            ),
        ])
    }

    fn edits(edits: &[(&str, &str)]) -> String {
        let (tmp, mut text) = fixture();
        for (from, to) in edits {
            assert!(text.contains(from), "{from:?}");
            text = text.replacen(from, to, 1);
        }
        let err = match load_text(tmp.path(), &text) {
            Ok(_) => panic!("{edits:?} was accepted"),
            Err(e) => e,
        };
        // Read back from the message, which is what the operator sees.
        let text = err.to_string();
        let file = format!("{}:", tmp.path().join("golive.toml").display());
        let rest = text.strip_prefix(&file).unwrap_or_else(|| panic!("{text}"));
        match rest.split_once("`: ") {
            Some((site, _)) => format!("{site}`"),
            None => panic!("no key in {text:?}"),
        }
    }

    #[test]
    fn the_fixture_is_a_good_plan_with_paths_from_its_directory() {
        let (tmp, text) = fixture();
        let plan = load_text(tmp.path(), &text).unwrap();
        let Some(Release {
            source: Source::Artifact(artifact),
            ..
        }) = &plan.release
        else {
            panic!("no artifact");
        };
        assert_eq!(artifact, &tmp.path().join("dist/shop.tar.gz"));
        assert_eq!(plan.operator, "alice");
    }

    #[test]
    fn issue11_plan_unknown_keys_name_line_and_full_key() {
        assert_eq!(site("app = ", "ap = 1\napp = "), "1: key `ap`");
        assert_eq!(
            site("lock_ttl_secs = 120", "lock_ttl_secs = 120\nlock_ttl = 5"),
            "17: key `deploy.lock_ttl`"
        );
        assert_eq!(
            site("address = ", "adress = \"x\"\naddress = "),
            "13: key `hosts.0.adress`"
        );
        assert_eq!(inline_tls("{ kye = \"x\" }"), "2: key `tls.kye`");
    }

    #[test]
    fn issue11_plan_wrong_types_name_line_and_full_key() {
        assert_eq!(site("app = \"shop\"", "app = 5"), "1: key `app`");
        assert_eq!(
            site("lock_ttl_secs = 120", "lock_ttl_secs = \"2m\""),
            "16: key `deploy.lock_ttl_secs`"
        );
        assert_eq!(
            site("address = \"127.0.0.1:7443\"", "address = 7443"),
            "13: key `hosts.0.address`"
        );
        assert_eq!(inline_tls("{ ca = 1 }"), "2: key `tls.ca`");
    }

    #[test]
    fn issue11_plan_missing_keys_name_line_and_full_key() {
        assert_eq!(site("app = \"shop\"\n", ""), "1: key `app`");
        assert_eq!(
            site("key = \"pki/operators/alice.key\"\n", ""),
            "6: key `tls.key`"
        );
        assert_eq!(
            site("address = \"127.0.0.1:7443\"\n", ""),
            "11: key `hosts.0.address`"
        );
        assert_eq!(inline_tls("{ ca = \"pki/ca.crt\" }"), "2: key `tls.cert`");
    }

    #[test]
    fn issue11_plan_checks_name_line_and_full_key() {
        assert_eq!(
            site(
                "[deploy]",
                "[[hosts]]\nname = \"web1\"\naddress = \"127.0.0.2:7443\"\n\n[deploy]"
            ),
            "16: key `hosts.1.name`"
        );
        assert_eq!(
            site("\"127.0.0.1:7443\"", "\"127.0.0.1\""),
            "13: key `hosts.0.address`"
        );
        assert_eq!(
            site("address = ", "server_name = \"not a name\"\naddress = "),
            "13: key `hosts.0.server_name`"
        );
        assert_eq!(
            site("\"pki/operators/alice.crt\"", "\"pki/nope.crt\""),
            "8: key `tls.cert`"
        );
        assert_eq!(
            site("\"pki/operators/alice.key\"", "\"pki/ca.crt\""),
            "9: key `tls.key`"
        );
        assert_eq!(
            site("\"dist/shop.tar.gz\"", "\"dist/nope.tar.gz\""),
            "4: key `release.artifact`"
        );
        assert_eq!(
            site("artifact = ", "git = \"main\"\nartifact = "),
            "3: key `release`"
        );
        assert_eq!(
            edits(&[
                (
                    "[[hosts]]\nname = \"web1\"\naddress = \"127.0.0.1:7443\"\n",
                    ""
                ),
                ("\n[release]", "\nhosts = []\n[release]"),
            ]),
            "3: key `hosts`"
        );
        assert_eq!(
            site("lock_ttl_secs = 120", "lock_ttl_secs = 1"),
            "16: key `deploy.lock_ttl_secs`"
        );
        assert_eq!(site("\"shop\"", "\"Shop!\""), "1: key `app`");
    }

    #[test]
    fn issue11_plan_errors_read_file_line_key_message() {
        let (tmp, text) = fixture();
        let err = match load_text(tmp.path(), &text.replace("120", "\"2m\"")) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        let want = format!(
            "{}:16: key `deploy.lock_ttl_secs`: invalid type: string \"2m\", expected u32",
            tmp.path().join("golive.toml").display()
        );
        assert_eq!(err.to_string(), want);
        let missing = PathBuf::from("/nonexistent/golive.toml");
        let err = match load(&missing) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        assert!(
            err.to_string()
                .starts_with("/nonexistent/golive.toml: cannot read the plan"),
            "{err}"
        );
    }

    #[test]
    fn issue12_every_plan_problem_at_once() {
        let (tmp, good) = fixture();
        let text = good
            .replace(
                "address = \"127.0.0.1:7443\"",
                "address = \"127.0.0.1\"\nport = 7443",
            )
            .replace(
                "lock_ttl_secs = 120\n",
                "lock_ttl_secs = 1\nbackup = \"sometimes\"\ncolour = \"blue\"\n\n\
                 [gate]\nmedium = \"ignore\"\n",
            );
        let err = match load_text(tmp.path(), &text) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        let sites: Vec<(Option<usize>, &str)> =
            err.0.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            sites,
            [
                (Some(13), "hosts.0.address"),
                (Some(14), "hosts.0.port"),
                (Some(17), "deploy.lock_ttl_secs"),
                (Some(18), "deploy.backup"),
                (Some(19), "deploy.colour"),
                (Some(22), "gate.medium"),
            ],
            "{err}"
        );
        assert_eq!(err.to_string().lines().count(), 6, "{err}");
        // A syntax error stops the reading: one problem.
        let err = match load_text(tmp.path(), "app = \"shop\"\n[tls\n") {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        assert_eq!(err.0.len(), 1, "{err}");
        // A wrong type is not reported again as missing.
        let err = match load_text(tmp.path(), &good.replace("app = \"shop\"", "app = 5")) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        assert_eq!(err.0.len(), 1, "{err}");
    }

    /// The message of the one error `from` → `to` gives, after `KEY`: .
    fn message(from: &str, to: &str) -> String {
        let (tmp, text) = fixture();
        match load_text(tmp.path(), &text.replacen(from, to, 1)) {
            Ok(_) => panic!("{to:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn issue15_ssh_hosts_are_checked_with_the_key_named() {
        let host = |extra: &str| format!("address = \"127.0.0.1:7443\"\n{extra}");
        let at = "address = \"127.0.0.1:7443\"\n";
        for (extra, key, says) in [
            ("via = \"ssh\"", "hosts.0.via", "names no destination"),
            (
                "via = \"scp h\"",
                "hosts.0.via",
                "the only transport is ssh",
            ),
            ("via = \"ssh -R 1:x:1 h\"", "hosts.0.via", "-R"),
            ("via = \"ssh 'h'\"", "hosts.0.via", "not run by a shell"),
            (
                "via = \"ssh h\"\nssh_mode = \"tunnel\"",
                "hosts.0.ssh_mode",
                "not a mode",
            ),
            ("ssh_mode = \"bridge\"", "hosts.0.ssh_mode", "add `via"),
            (
                "via = \"ssh h\"\nssh_mode = \"bridge\"",
                "hosts.0.bridge_config",
                "set bridge_config",
            ),
            (
                "via = \"ssh h\"\nbridge_config = \"/etc/a.toml\"",
                "hosts.0.bridge_config",
                "ssh_mode = \"bridge\"",
            ),
            (
                "via = \"ssh h\"\nssh_mode = \"bridge\"\nbridge_config = \"$(id)\"",
                "hosts.0.bridge_config",
                "remote shell",
            ),
            (
                "via = \"ssh h\"\nssh_mode = \"bridge\"\nbridge_config = \"/a\"\n\
                 bridge_agent = \"a b\"",
                "hosts.0.bridge_agent",
                "remote shell",
            ),
        ] {
            let text = message(at, &host(extra));
            assert!(
                text.contains(&format!("key `{key}`: host web1: ")) && text.contains(says),
                "{extra}: {text}"
            );
        }

        let (tmp, text) = fixture();
        let text = text.replacen(
            at,
            &host(
                "via = \"ssh -p 2222 -i keys/golive deploy@shop.example\"\nssh_mode = \"bridge\"\n\
                 bridge_config = \"~/golive/agent.toml\"\nserver_name = \"shop.example\"",
            ),
            1,
        );
        let plan = load_text(tmp.path(), &text).unwrap();
        let client = &plan.hosts[0].client;
        assert_eq!(
            client.shown_addr(),
            "127.0.0.1:7443 via ssh deploy@shop.example (bridge)"
        );
    }

    #[test]
    fn default_ids() {
        use std::path::Path;
        assert_eq!(
            super::default_release_id(Path::new("/x/shop-v2.tar.gz")),
            "shop-v2"
        );
        assert_eq!(super::default_release_id(Path::new("a.tar.zst")), "a");
        assert_eq!(super::default_release_id(Path::new("b.tar")), "b");
    }

    #[test]
    fn default_git_ids() {
        use super::default_git_release_id as id;
        let at = 1_795_412_882_123; // 2026-11-23T05:48:02.123Z
        assert_eq!(id("v1.4.2", at), "v1.4.2-20261123T054802.123Z");
        assert_eq!(id("release/2.0", at), "release-2.0-20261123T054802.123Z");
        assert_eq!(id("ñandú", at), "and--20261123T054802.123Z");
        assert_eq!(id("_x", at), "x-20261123T054802.123Z");
        assert_ne!(id("main", at), id("main", at + 1));
        let long = id(&"b".repeat(200), at);
        assert!(long.len() <= 100, "{long}");
        for r in ["main", "release/2.0", "ñandú", "_x", "a.b_c-d"] {
            golive_shared::names::check_release_id(&id(r, at)).unwrap();
        }
    }

    /// `[[waves]]` problems name their key and line; maintenance with waves
    /// is refused (issue 14).
    #[test]
    fn issue14_waves_are_checked_with_the_key_named() {
        assert_eq!(
            site("[deploy]", "[[waves]]\nhosts = [\"db1\"]\n\n[deploy]"),
            "16: key `waves.0.hosts`"
        );
        assert_eq!(
            site(
                "[deploy]",
                "[[waves]]\npercent = 50\nsoak = \"5 parsecs\"\n\n[deploy]"
            ),
            "17: key `waves.0.soak`"
        );
        assert!(
            message(
                "lock_ttl_secs = 120",
                "lock_ttl_secs = 120\nmaintenance = true\n\n[[waves]]\npercent = 100"
            )
            .contains("key `deploy.maintenance`: maintenance mode is fleet-wide"),
        );
        let (tmp, text) = fixture();
        let plan = load_text(
            tmp.path(),
            &text.replace(
                "[deploy]",
                "[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\nsoak = \"30s\"\n\n[deploy]",
            ),
        )
        .unwrap();
        assert_eq!(plan.waves.len(), 1);
        assert_eq!(plan.waves[0].hosts, vec![0]);
        assert_eq!(plan.waves[0].soak, Some(std::time::Duration::from_secs(30)));
        assert!(load_text(tmp.path(), &text).unwrap().waves.is_empty());
    }

    /// `[deploy] parallel` must be a host count 1..=256; the default is 10
    /// (issue 14).
    #[test]
    fn issue14_parallel_is_checked_and_defaults_to_ten() {
        for bad in ["0", "257"] {
            assert_eq!(
                site(
                    "lock_ttl_secs = 120",
                    &format!("lock_ttl_secs = 120\nparallel = {bad}")
                ),
                "17: key `deploy.parallel`",
                "{bad}"
            );
        }
        assert_eq!(
            site(
                "lock_ttl_secs = 120",
                "lock_ttl_secs = 120\nhost_timeout_secs = 0"
            ),
            "17: key `deploy.host_timeout_secs`"
        );
        let (tmp, text) = fixture();
        let plan = load_text(tmp.path(), &text).unwrap();
        assert_eq!(plan.parallel, 10);
        assert_eq!(plan.host_timeout, std::time::Duration::from_secs(60));
        let plan = load_text(
            tmp.path(),
            &text.replace("lock_ttl_secs = 120", "lock_ttl_secs = 120\nparallel = 256"),
        )
        .unwrap();
        assert_eq!(plan.parallel, 256);
    }

    /// `[deploy] on_wave_failure` takes "rollback-all" (the default) or
    /// "rollback-wave"; anything else is refused naming the key and both
    /// values (issue 14).
    #[test]
    fn issue14_on_wave_failure_is_checked_and_defaults_to_rollback_all() {
        let m = message(
            "lock_ttl_secs = 120",
            "lock_ttl_secs = 120\non_wave_failure = \"rollback-some\"",
        );
        assert!(
            m.contains("key `deploy.on_wave_failure`")
                && m.contains("\"rollback-some\" is not a policy")
                && m.contains("\"rollback-all\"")
                && m.contains("\"rollback-wave\""),
            "{m}"
        );
        assert_eq!(
            site(
                "lock_ttl_secs = 120",
                "lock_ttl_secs = 120\non_wave_failure = \"rollback-some\""
            ),
            "17: key `deploy.on_wave_failure`"
        );
        let (tmp, text) = fixture();
        let plan = load_text(tmp.path(), &text).unwrap();
        assert_eq!(plan.on_wave_failure, super::OnWaveFailure::RollbackAll);
        let plan = load_text(
            tmp.path(),
            &text.replace(
                "lock_ttl_secs = 120",
                "lock_ttl_secs = 120\non_wave_failure = \"rollback-wave\"",
            ),
        )
        .unwrap();
        assert_eq!(plan.on_wave_failure, super::OnWaveFailure::RollbackWave);
    }
}
