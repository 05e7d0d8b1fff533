//! The agent's TOML config: what this host declares, and therefore everything
//! a controller may name (SPEC §3: the agent is not a remote shell).
//!
//! Parsing has two passes, ripgrep's lowargs/hiargs split: serde reads the raw
//! file ([`AgentConfig`] with `deny_unknown_fields`), then [`validate`] checks
//! meaning (paths absolute, files readable, names valid). Every problem comes
//! back as a [`ConfigIssue`] naming file, line and dotted key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::names;

mod notify;
mod observe;
mod probe;
mod site;
pub use notify::{NotifyConfig, validate as validate_notify};
pub use observe::{LogFormat, LogLevel, LogSection, MetricsSection};
pub use probe::*;
pub use site::{Site, blank_item, error_site};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub agent: AgentSection,
    pub tls: TlsSection,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    /// `[log]`: format and level of the agent's log (issue 16).
    #[serde(default)]
    pub log: LogSection,
    /// `[metrics]`: the optional plain loopback metrics port (issue 16).
    #[serde(default)]
    pub metrics: MetricsSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Shown to controllers; usually the host name.
    pub name: String,
    /// `IP:PORT` to listen on.
    pub listen: String,
    /// Journal, artifacts and the pid lock live here. One agent per directory.
    pub state_dir: PathBuf,
    /// The webhook the watchdog posts to (issue 13); an app's own
    /// `[apps.APP.notify]` takes its place for that app.
    pub notify: Option<NotifyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The deployment CA that signs operator and agent certificates.
    pub ca: PathBuf,
    /// This agent's certificate (role `agent`).
    pub cert: PathBuf,
    /// This agent's private key. Must not be readable by group or others.
    pub key: PathBuf,
    /// Optional deny list: one certificate serial (hex) per line, `#` comments.
    /// Reloaded when the file changes.
    pub revoked: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Authenticated connections open at once (past the handshake); a
    /// connection past it waits up to the handshake deadline for a slot.
    pub max_connections: u32,
    /// Authenticated connections one certificate may hold open at once
    /// (capped by `max_connections`).
    pub max_connections_per_peer: u32,
    /// TLS handshakes in flight at once, from everyone (issue 11: kept apart
    /// from `max_connections`, so strangers cannot use up operators' slots).
    pub max_handshakes: u32,
    /// TLS handshakes in flight from one source address (an IPv6 source
    /// counts by its /64; capped by `max_handshakes`). Past either bound a
    /// new connection is closed at once, so the listen backlog never fills.
    pub max_handshakes_per_source: u32,
    /// Cap on a framed request body.
    pub max_request_bytes: u64,
    /// Cap on one uploaded artifact.
    pub max_artifact_bytes: u64,
    /// Cap on the artifact store (`STATE_DIR/artifacts`) as a whole; an upload
    /// that would pass it first evicts unreferenced artifacts, oldest first.
    pub max_artifact_store_bytes: u64,
    /// Cap on the bytes one archive may unpack to.
    pub max_unpacked_bytes: u64,
    /// Cap on the number of entries in one archive.
    pub max_archive_entries: u64,
    /// Deadline of one TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Deadline for reading one request's body (RPC); an upload gets this
    /// plus its size at `min_upload_bytes_per_sec`.
    pub request_timeout_secs: u64,
    /// An open connection with no request under way is closed after this
    /// long; it is also the deadline for a request's headers.
    pub idle_timeout_secs: u64,
    /// Slowest upload rate the agent waits for (see `request_timeout_secs`).
    pub min_upload_bytes_per_sec: u64,
    /// Connections refused before a request (failed handshakes, sheds,
    /// refused certificates) are logged as one summary line per this many
    /// seconds, with counts per source; the first few are logged at once.
    pub refusal_log_secs: u64,
    /// A long-poll waits at most this long, whatever the client asks.
    pub max_poll_secs: u64,
    /// At a stop (SIGTERM), running jobs get this long to finish; those
    /// still running then are marked interrupted and their programs ended
    /// (issue 16). 0: do not wait.
    pub stop_drain_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_connections_per_peer: 16,
            max_handshakes: 128,
            max_handshakes_per_source: 8,
            max_request_bytes: 1024 * 1024,
            max_artifact_bytes: 2 * 1024 * 1024 * 1024,
            max_artifact_store_bytes: 4 * 1024 * 1024 * 1024,
            max_unpacked_bytes: 8 * 1024 * 1024 * 1024,
            max_archive_entries: 200_000,
            handshake_timeout_secs: 3,
            request_timeout_secs: 30,
            idle_timeout_secs: 15,
            min_upload_bytes_per_sec: 64 * 1024,
            refusal_log_secs: 60,
            max_poll_secs: 30,
            stop_drain_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// `ROOT/releases/<id>`, `ROOT/shared`, `ROOT/current` live here.
    pub root: PathBuf,
    /// Releases kept on disk; the current and previous are never deleted.
    #[serde(default = "default_keep")]
    pub keep_releases: usize,
    /// Paths relative to `ROOT/shared`, linked into every release at the same
    /// relative path (uploads, local settings files). A trailing `/`
    /// declares a directory (issue 12): see [`SharedPath`].
    #[serde(default)]
    pub shared: Vec<SharedPath>,
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    /// Where backups go, how many are kept, the offsite copy.
    #[serde(default)]
    pub backup: BackupPolicy,
    /// Databases backed up with the app (connection settings and secrets
    /// stay on this host).
    #[serde(default)]
    pub databases: Vec<DatabaseConfig>,
    /// File trees backed up with the app (tar + zstd).
    #[serde(default)]
    pub files: Vec<FileSet>,
    /// Defaults for every hook and named command of the app.
    #[serde(default)]
    pub run: RunDefaults,
    /// Programs run at named points of the release lifecycle.
    #[serde(default)]
    pub hooks: Hooks,
    /// Allow-listed commands a controller may run by name (`golivectl run`).
    #[serde(default)]
    pub commands: BTreeMap<String, CommandSpec>,
    /// Mode changes applied to a release after unpacking (seed 000:
    /// `settings.php` 0444), checked again before activation.
    #[serde(default)]
    pub permissions: Vec<PermissionRule>,
    /// Paths (relative to the release) that must be regular, non-empty files
    /// once shared paths are linked (a trailing `/`: a directory), or the
    /// release is refused (seed 000: the local settings file). See
    /// [`wants_dir`].
    #[serde(default)]
    pub required_files: Vec<PathBuf>,
    /// How this app goes into and out of maintenance mode.
    pub maintenance: Option<MaintenanceConfig>,
    /// SQL migrations shipped inside each release.
    pub migrations: Option<MigrationsConfig>,
    /// The app's own migration tool (`drush updb -y`, `manage.py migrate`),
    /// run in the new release during every deployment, with the verified
    /// pre-deploy backup as its way back.
    pub migration_command: Option<CommandSpec>,
    /// Feature flags: the flag file and the names a controller may set.
    pub flags: Option<FlagsConfig>,
    /// The git repository releases may be fetched from (`[release] git =
    /// "REF"` in a plan). Declared here; a controller only names the ref.
    pub git: Option<GitSource>,
    /// This app's watchdog webhook, instead of `[agent.notify]` (issue 13).
    pub notify: Option<NotifyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationsConfig {
    /// Directory of `NNNN_name.up.sql` / `.down.sql`, relative to the release.
    pub dir: PathBuf,
    /// Name of the declared database (`[[apps.APP.databases]]`) they apply to.
    pub database: String,
}

/// Defaults for hooks and commands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunDefaults {
    /// Run as this user (only when the agent runs as root).
    pub user: Option<String>,
    pub timeout_secs: u64,
    /// After the timeout: SIGTERM to the process group, SIGKILL this much later.
    pub grace_secs: u64,
    /// Extra environment for every hook and command.
    pub env: BTreeMap<String, String>,
    /// Output kept per run (the tail), in bytes.
    pub max_output_bytes: usize,
}

impl Default for RunDefaults {
    fn default() -> Self {
        RunDefaults {
            user: None,
            timeout_secs: 300,
            grace_secs: 10,
            env: BTreeMap::new(),
            max_output_bytes: 64 * 1024,
        }
    }
}

/// A program with arguments: never a shell string, unless the operator
/// writes `["sh", "-c", "..."]` explicitly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub cmd: Vec<String>,
    /// Working directory: absolute, or relative to the release the command
    /// runs for (default: that release's directory).
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_secs: Option<u64>,
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// In the new release, after unpack (build: `composer install --no-dev`).
    pub after_unpack: Vec<CommandSpec>,
    /// In the new release, right before the switch.
    pub before_activate: Vec<CommandSpec>,
    /// In the new release, right after the switch (`drush cr`).
    pub after_activate: Vec<CommandSpec>,
    /// In the release switched back to, after a rollback.
    pub after_rollback: Vec<CommandSpec>,
}

/// One `shared` entry: a path under `ROOT/shared` linked into every release.
///
/// Written as a string. `"uploads/"` (a trailing `/`) declares a directory:
/// it is created empty when it exists neither in `ROOT/shared` nor in the
/// release. Without the `/` the entry is whatever already exists, in
/// `ROOT/shared` or else in the first release that ships it, and nothing is
/// ever created for it: a settings file that is missing everywhere stops the
/// staging instead of becoming an empty directory (issue 12, seed 000).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct SharedPath {
    /// Relative to `ROOT/shared` (and to the release), without the `/`.
    pub path: PathBuf,
    /// Declared a directory with a trailing `/`.
    pub dir: bool,
}

impl From<String> for SharedPath {
    fn from(s: String) -> Self {
        let dir = s.ends_with('/');
        SharedPath {
            path: PathBuf::from(s.trim_end_matches('/')),
            dir,
        }
    }
}

impl From<&str> for SharedPath {
    fn from(s: &str) -> Self {
        SharedPath::from(s.to_string())
    }
}

impl fmt::Display for SharedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.path.display(),
            if self.dir { "/" } else { "" }
        )
    }
}

/// True when a `required_files` entry is written with a trailing `/`: it
/// must then be a directory instead of a regular, non-empty file.
pub fn wants_dir(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().ends_with(b"/")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionRule {
    /// Relative to the release directory.
    pub path: PathBuf,
    /// Octal, e.g. "0444".
    pub mode: String,
}

impl PermissionRule {
    /// The mode as a number; validate() guarantees it parses.
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(self.mode.trim_start_matches("0o"), 8).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// A file the web server checks (packaging/ ships nginx and Apache
    /// snippets): absolute, or relative to ROOT. Created on, removed off.
    pub flag_file: Option<PathBuf>,
    /// Command to turn maintenance on (e.g. `drush state:set system.maintenance_mode 1`).
    pub on: Option<CommandSpec>,
    pub off: Option<CommandSpec>,
    /// When set: must answer 503 while on, 2xx after off.
    pub check_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub check_timeout_ms: u64,
}

fn default_keep() -> usize {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupPolicy {
    /// Default: `STATE_DIR/backups/APP`.
    pub dir: Option<PathBuf>,
    /// Keep at most this many complete backups per app.
    pub keep: usize,
    /// Also delete complete backups older than this many days (0 = never by age).
    pub keep_days: u32,
    /// Free space required beyond the estimated backup size, in percent.
    pub margin_percent: u32,
    /// Free space that must remain after the backup, in bytes.
    pub min_free_bytes: u64,
    /// zstd level for file trees, SQLite and MariaDB dumps (1-19).
    pub zstd_level: i32,
    pub offsite: Option<Offsite>,
}

impl Default for BackupPolicy {
    fn default() -> Self {
        BackupPolicy {
            dir: None,
            keep: 10,
            keep_days: 0,
            margin_percent: 20,
            min_free_bytes: 64 * 1024 * 1024,
            zstd_level: 3,
            offsite: None,
        }
    }
}

/// An optional copy of every complete backup elsewhere. Either `dir` (a
/// mounted directory), or `copy` + `fetch` commands written by the operator
/// (programs with arguments, no shell; placeholders `{file}`, `{name}`,
/// `{app}`). `fetch` must write the copied file to stdout so the agent can
/// check its sha256 after the copy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offsite {
    pub dir: Option<PathBuf>,
    pub copy: Option<Vec<String>>,
    pub fetch: Option<Vec<String>>,
    #[serde(default = "default_offsite_timeout")]
    pub timeout_secs: u64,
}

fn default_offsite_timeout() -> u64 {
    3600
}

/// A database, tagged by `engine`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase")]
pub enum DatabaseConfig {
    Sqlite(SqliteDb),
    Postgres(PostgresDb),
    Mariadb(MariadbDb),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteDb {
    pub name: String,
    /// The live database file.
    pub path: PathBuf,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresDb {
    pub name: String,
    /// Host name, IP, or a socket directory.
    #[serde(default = "default_pg_host")]
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    pub user: String,
    pub dbname: String,
    /// File holding the password (mode 0600); passed to the tools through
    /// the environment, never on a command line or in a log.
    pub password_file: Option<PathBuf>,
    /// Directory of pg_dump, pg_restore, psql, createdb, dropdb; default: PATH.
    pub bin_dir: Option<PathBuf>,
    /// Deadline of any one client tool run against this database (a dump,
    /// a restore, a query, a migration script); past it the tool is killed
    /// and the step fails with an error that says so.
    #[serde(default = "default_tool_timeout")]
    pub timeout_secs: u64,
}

fn default_tool_timeout() -> u64 {
    3600
}

fn default_pg_host() -> String {
    "127.0.0.1".into()
}
fn default_pg_port() -> u16 {
    5432
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariadbDb {
    pub name: String,
    #[serde(default = "default_pg_host")]
    pub host: String,
    #[serde(default = "default_mariadb_port")]
    pub port: u16,
    /// Unix socket; used instead of host/port when set.
    pub socket: Option<PathBuf>,
    pub user: String,
    pub database: String,
    /// File holding the password (mode 0600); handed to the client tools in
    /// a temporary 0600 option file, never on a command line or in a log.
    pub password_file: Option<PathBuf>,
    /// Directory of mariadb-dump/mysqldump and mariadb/mysql; default: PATH.
    pub bin_dir: Option<PathBuf>,
    /// Deadline of any one client tool run (see [`PostgresDb::timeout_secs`]).
    #[serde(default = "default_tool_timeout")]
    pub timeout_secs: u64,
}

impl PostgresDb {
    pub fn tool_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs)
    }
}

impl MariadbDb {
    pub fn tool_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs)
    }
}

fn default_mariadb_port() -> u16 {
    3306
}

// Hand-written Debug: connection settings are fine to show, but keep the
// habit of never deriving Debug on types that lead to secrets (STYLE: pueue).
impl fmt::Debug for PostgresDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDb")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field(
                "password_file",
                &self.password_file.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl fmt::Debug for MariadbDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MariadbDb")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("user", &self.user)
            .field("database", &self.database)
            .field(
                "password_file",
                &self.password_file.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl DatabaseConfig {
    pub fn name(&self) -> &str {
        match self {
            DatabaseConfig::Sqlite(d) => &d.name,
            DatabaseConfig::Postgres(d) => &d.name,
            DatabaseConfig::Mariadb(d) => &d.name,
        }
    }

    pub fn engine(&self) -> &'static str {
        match self {
            DatabaseConfig::Sqlite(_) => "sqlite",
            DatabaseConfig::Postgres(_) => "postgres",
            DatabaseConfig::Mariadb(_) => "mariadb",
        }
    }

    /// The external programs this database's backup, verify and restore
    /// need; each entry lists acceptable names (first found wins).
    pub fn tools(&self) -> Vec<&'static [&'static str]> {
        match self {
            DatabaseConfig::Sqlite(_) => vec![],
            DatabaseConfig::Postgres(_) => vec![
                &["pg_dump"],
                &["pg_restore"],
                &["psql"],
                &["createdb"],
                &["dropdb"],
            ],
            DatabaseConfig::Mariadb(_) => {
                vec![&["mariadb-dump", "mysqldump"], &["mariadb", "mysql"]]
            }
        }
    }

    pub fn bin_dir(&self) -> Option<&Path> {
        match self {
            DatabaseConfig::Sqlite(_) => None,
            DatabaseConfig::Postgres(d) => d.bin_dir.as_deref(),
            DatabaseConfig::Mariadb(d) => d.bin_dir.as_deref(),
        }
    }
}

/// Finds a program in `bin_dir`, else on PATH.
pub fn find_tool(names: &[&str], bin_dir: Option<&Path>) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = match bin_dir {
        Some(d) => vec![d.to_path_buf()],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
    };
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A named set of paths archived together.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSet {
    pub name: String,
    /// Absolute, or relative to the app's ROOT (e.g. `shared/uploads`).
    pub paths: Vec<PathBuf>,
    /// Glob patterns matched against paths relative to each listed path
    /// (`*` within a name, `**` across directories, trailing `/` = directory).
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_timeout_ms() -> u64 {
    5000
}

impl AgentConfig {
    pub fn listen_addr(&self) -> SocketAddr {
        // validate() guarantees this parses.
        self.agent.listen.parse().expect("validated listen address")
    }

    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.get(name)
    }

    /// The webhook for `app`'s watchdog: its own, else the agent's.
    pub fn notify_for(&self, app: &str) -> Option<&NotifyConfig> {
        self.app(app)
            .and_then(|a| a.notify.as_ref())
            .or(self.agent.notify.as_ref())
    }

    /// "shop, blog" or "(none)", for "unknown app" messages.
    pub fn app_names(&self) -> String {
        if self.apps.is_empty() {
            "(none declared)".into()
        } else {
            self.apps.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted key, e.g. `apps.shop.root`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// All problems found in a config file (at least one).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, parses and validates an agent config. Relative paths in the file
/// are resolved against the file's directory.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigErrors> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigIssue {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse(path, &source)
}

/// Parses and validates config text that was read from `path`.
pub fn parse(path: &Path, source: &str) -> Result<AgentConfig, ConfigErrors> {
    let mut config: AgentConfig = toml::from_str(source).map_err(|e| {
        let (site, message) = serde_error_site(source, &e);
        ConfigErrors(vec![ConfigIssue {
            file: path.to_path_buf(),
            line: site.line,
            key: site.key,
            message,
        }])
    })?;
    resolve_paths(&mut config, &file_dir(path));
    let issues = validate(&config);
    if issues.is_empty() {
        return Ok(config);
    }
    Err(ConfigErrors(
        issues
            .into_iter()
            .map(|(key, message)| ConfigIssue {
                file: path.to_path_buf(),
                line: locate(source, &key),
                key,
                message,
            })
            .collect(),
    ))
}

/// [`error_site`] and the message, looking inside tagged tables (probes by
/// `kind`, databases by `engine`): serde reads those whole and reports a
/// wrong type inside them at their header, so the table is read again as the
/// struct its tag selects, where the error has the key's own span.
fn serde_error_site(source: &str, e: &toml::de::Error) -> (Site, String) {
    let found = site::find(source, e.span(), e.message());
    let tag = match found.node.as_slice() {
        [apps, _, probes, _] if apps == "apps" && probes == "probes" => Some("kind"),
        [apps, _, dbs, _] if apps == "apps" && dbs == "databases" => Some("engine"),
        _ => None,
    };
    if found.inside_table
        && let Some(tag) = tag
        && let Some((text, variant)) = site::standalone(source, &found.node, tag)
        && let Some(inner) = match tag {
            "kind" => probe::variant_error(&variant, &text),
            _ => database_variant_error(&variant, &text),
        }
    {
        let sub = site::find(&text, inner.span(), inner.message()).site;
        if !sub.key.is_empty() {
            let key = format!("{}.{}", found.site.key, sub.key);
            let line = locate_exact(source, &key).or(found.site.line);
            return (Site { line, key }, inner.message().trim().to_string());
        }
    }
    (found.site, e.message().trim().to_string())
}

/// [`probe::variant_error`] for `[[apps.APP.databases]]`, tagged by `engine`.
fn database_variant_error(engine: &str, text: &str) -> Option<toml::de::Error> {
    match engine {
        "sqlite" => toml::from_str::<SqliteDb>(text).err(),
        "postgres" => toml::from_str::<PostgresDb>(text).err(),
        "mariadb" => toml::from_str::<MariadbDb>(text).err(),
        _ => None,
    }
}

/// The directory of a config (or plan) file as an absolute path: relative
/// paths in the file resolve against it, so they mean the same whatever the
/// working directory of whoever reads the file, and stay right when the
/// agent's children run elsewhere.
pub fn file_dir(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new(""));
    if dir.as_os_str().is_empty() {
        return std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    }
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Issue 11: every path that names something on this host resolves against
/// the config file's directory (README "The agent's config"). Paths
/// documented as relative to ROOT, ROOT/shared, ROOT/current or the release
/// (shared, files, flags, maintenance flag file, permissions, required
/// files, migrations, cwd of commands and probes) are left as written: they
/// are resolved where they are used.
fn resolve_paths(config: &mut AgentConfig, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    let fix_opt = |p: &mut Option<PathBuf>| {
        if let Some(p) = p {
            fix(p);
        }
    };
    fix(&mut config.agent.state_dir);
    fix(&mut config.tls.ca);
    fix(&mut config.tls.cert);
    fix(&mut config.tls.key);
    fix_opt(&mut config.tls.revoked);
    if let Some(n) = config.agent.notify.as_mut() {
        fix_opt(&mut n.ca_file);
    }
    for app in config.apps.values_mut() {
        fix(&mut app.root);
        if let Some(n) = app.notify.as_mut() {
            fix_opt(&mut n.ca_file);
        }
        fix_opt(&mut app.backup.dir);
        if let Some(o) = app.backup.offsite.as_mut() {
            fix_opt(&mut o.dir);
        }
        for db in &mut app.databases {
            match db {
                DatabaseConfig::Sqlite(d) => fix(&mut d.path),
                DatabaseConfig::Postgres(d) => {
                    fix_opt(&mut d.password_file);
                    fix_opt(&mut d.bin_dir);
                }
                DatabaseConfig::Mariadb(d) => {
                    fix_opt(&mut d.socket);
                    fix_opt(&mut d.password_file);
                    fix_opt(&mut d.bin_dir);
                }
            }
        }
        if let Some(g) = app.git.as_mut() {
            fix_opt(&mut g.bin_dir);
        }
        for probe in &mut app.probes {
            match probe {
                ProbeConfig::Http(p) => fix_opt(&mut p.ca_file),
                ProbeConfig::Disk(p) => fix(&mut p.path),
                ProbeConfig::File(p) => fix(&mut p.path),
                ProbeConfig::AccessLog(p) => fix(&mut p.path),
                // No path, or (command: cwd) one relative to ROOT/current.
                ProbeConfig::Tcp(_)
                | ProbeConfig::Tls(_)
                | ProbeConfig::Dns(_)
                | ProbeConfig::Sql(_)
                | ProbeConfig::Command(_)
                | ProbeConfig::Memory(_)
                | ProbeConfig::Load(_)
                | ProbeConfig::Cpu(_)
                | ProbeConfig::Process(_) => {}
            }
        }
    }
}

/// Semantic checks; returns (dotted key, message) pairs.
pub fn validate(config: &AgentConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |key: String, msg: String| out.push((key, msg));

    if config.agent.name.trim().is_empty() {
        bad(
            "agent.name".into(),
            "must not be empty; use the host's name".into(),
        );
    }
    if config.agent.listen.parse::<SocketAddr>().is_err() {
        bad(
            "agent.listen".into(),
            format!(
                "{:?} is not an IP:PORT address; write e.g. \"0.0.0.0:7443\" or \"127.0.0.1:7443\"",
                config.agent.listen
            ),
        );
    }
    for (key, path) in [
        ("tls.ca", &config.tls.ca),
        ("tls.cert", &config.tls.cert),
        ("tls.key", &config.tls.key),
    ] {
        if !path.is_file() {
            bad(
                key.into(),
                format!(
                    "{} does not exist or is not a file; issue it with `golivectl ca init` / `golivectl cert agent`",
                    path.display()
                ),
            );
        }
    }
    if let Some(revoked) = &config.tls.revoked
        && revoked.exists()
        && !revoked.is_file()
    {
        bad(
            "tls.revoked".into(),
            format!("{} is not a file", revoked.display()),
        );
    }
    let l = &config.limits;
    for (key, value) in [
        ("limits.max_connections", l.max_connections as u64),
        (
            "limits.max_connections_per_peer",
            l.max_connections_per_peer as u64,
        ),
        ("limits.max_handshakes", l.max_handshakes as u64),
        (
            "limits.max_handshakes_per_source",
            l.max_handshakes_per_source as u64,
        ),
        ("limits.max_request_bytes", l.max_request_bytes),
        ("limits.max_artifact_bytes", l.max_artifact_bytes),
        (
            "limits.max_artifact_store_bytes",
            l.max_artifact_store_bytes,
        ),
        ("limits.max_unpacked_bytes", l.max_unpacked_bytes),
        ("limits.max_archive_entries", l.max_archive_entries),
        ("limits.handshake_timeout_secs", l.handshake_timeout_secs),
        ("limits.request_timeout_secs", l.request_timeout_secs),
        ("limits.idle_timeout_secs", l.idle_timeout_secs),
        (
            "limits.min_upload_bytes_per_sec",
            l.min_upload_bytes_per_sec,
        ),
        ("limits.refusal_log_secs", l.refusal_log_secs),
        ("limits.max_poll_secs", l.max_poll_secs),
    ] {
        if value == 0 {
            bad(key.into(), "must be greater than 0".into());
        }
    }
    if l.max_artifact_store_bytes < l.max_artifact_bytes {
        bad(
            "limits.max_artifact_store_bytes".into(),
            format!(
                "is {} bytes, less than limits.max_artifact_bytes ({} bytes): an artifact the agent \
                 accepts could never fit in its store; raise max_artifact_store_bytes or lower max_artifact_bytes",
                l.max_artifact_store_bytes, l.max_artifact_bytes
            ),
        );
    }

    observe::validate_metrics(&config.metrics, &mut bad);
    if let Some(n) = &config.agent.notify {
        notify::validate("agent.notify", n, &mut bad);
    }
    for (name, app) in &config.apps {
        let at = |k: &str| format!("apps.{name}.{k}");
        if let Some(n) = &app.notify {
            notify::validate(&at("notify"), n, &mut bad);
        }
        if let Err(e) = names::check_app_name(name) {
            bad(format!("apps.{name}"), e);
        }
        if !app.root.is_absolute() {
            bad(at("root"), "must be an absolute path".into());
        }
        if app.keep_releases < 2 {
            bad(
                at("keep_releases"),
                "must be at least 2 (the current release and the one a rollback returns to)".into(),
            );
        }
        validate_shared(name, app, &mut bad);
        validate_backups(name, app, &mut bad);
        validate_ops(name, app, &mut bad);
        validate_flags(name, app, &mut bad);
        validate_git(name, app, &mut bad);
        probe::validate_probes(name, app, &mut bad);
    }
    out
}

/// `shared` entries: plain relative paths, each once, none inside another
/// (the inner one would sit behind the outer one's symlink).
fn validate_shared(app_name: &str, app: &AppConfig, bad: &mut dyn FnMut(String, String)) {
    for (i, shared) in app.shared.iter().enumerate() {
        let key = format!("apps.{app_name}.shared.{i}");
        if !is_plain_relative(&shared.path) {
            bad(
                key,
                format!(
                    "{:?} must be a relative path inside ROOT/shared, without `..`; write a \
                     directory with a trailing `/` (\"uploads/\"), a file without \
                     (\"config/settings.local.php\")",
                    shared.to_string()
                ),
            );
            continue;
        }
        for (j, other) in app.shared.iter().enumerate().take(i) {
            if other.path == shared.path {
                bad(
                    key.clone(),
                    format!(
                        "{} is listed twice (also as shared.{j}); keep one entry",
                        shared.path.display()
                    ),
                );
            } else if shared.path.starts_with(&other.path) || other.path.starts_with(&shared.path) {
                bad(
                    key.clone(),
                    format!(
                        "{} and {} (shared.{j}) are nested: the inner path would sit behind the outer \
                         one's link into ROOT/shared; list only the outer one",
                        shared.path.display(),
                        other.path.display()
                    ),
                );
            }
        }
    }
}

fn validate_command(key: &str, c: &CommandSpec, bad: &mut dyn FnMut(String, String)) {
    if c.cmd.is_empty() || c.cmd[0].is_empty() {
        bad(
            format!("{key}.cmd"),
            "list the program and its arguments, e.g. [\"drush\", \"cr\"]".into(),
        );
    }
    if c.timeout_secs == Some(0) {
        bad(
            format!("{key}.timeout_secs"),
            "must be greater than 0".into(),
        );
    }
    if let Some(cwd) = &c.cwd
        && cwd.is_relative()
        && !is_plain_relative(cwd)
    {
        bad(
            format!("{key}.cwd"),
            "relative paths must stay inside the release (no `..`)".into(),
        );
    }
}

fn validate_ops(app_name: &str, app: &AppConfig, bad: &mut dyn FnMut(String, String)) {
    if app.run.timeout_secs == 0 {
        bad(
            format!("apps.{app_name}.run.timeout_secs"),
            "must be greater than 0".into(),
        );
    }
    for (point, list) in [
        ("after_unpack", &app.hooks.after_unpack),
        ("before_activate", &app.hooks.before_activate),
        ("after_activate", &app.hooks.after_activate),
        ("after_rollback", &app.hooks.after_rollback),
    ] {
        for (i, c) in list.iter().enumerate() {
            validate_command(&format!("apps.{app_name}.hooks.{point}.{i}"), c, bad);
        }
    }
    for (name, c) in &app.commands {
        if names::check_app_name(name).is_err() {
            bad(
                format!("apps.{app_name}.commands.{name}"),
                format!("invalid command name {name:?}: use lowercase letters, digits, '-' or '_'"),
            );
        }
        validate_command(&format!("apps.{app_name}.commands.{name}"), c, bad);
    }
    for (i, rule) in app.permissions.iter().enumerate() {
        let key = |k: &str| format!("apps.{app_name}.permissions.{i}.{k}");
        if !is_plain_relative(&rule.path) {
            bad(
                key("path"),
                "must be a relative path inside the release, without `..`".into(),
            );
        }
        let digits = rule.mode.trim_start_matches("0o");
        if digits.is_empty()
            || digits.len() > 4
            || u32::from_str_radix(digits, 8).map_or(true, |m| m > 0o7777)
        {
            bad(
                key("mode"),
                format!("{:?} is not an octal mode like \"0444\"", rule.mode),
            );
        }
    }
    for (i, f) in app.required_files.iter().enumerate() {
        if !is_plain_relative(f) {
            bad(
                format!("apps.{app_name}.required_files.{i}"),
                "must be a relative path inside the release, without `..`".into(),
            );
        }
    }
    if let Some(c) = &app.migration_command {
        validate_command(&format!("apps.{app_name}.migration_command"), c, bad);
    }
    if let Some(m) = &app.migrations {
        let key = |k: &str| format!("apps.{app_name}.migrations.{k}");
        if !is_plain_relative(&m.dir) {
            bad(
                key("dir"),
                "must be a relative path inside the release, without `..`".into(),
            );
        }
        if !app.databases.iter().any(|d| d.name() == m.database) {
            let declared: Vec<&str> = app.databases.iter().map(|d| d.name()).collect();
            bad(
                key("database"),
                format!(
                    "no database {:?} is declared for this app; declared: {}",
                    m.database,
                    if declared.is_empty() {
                        "(none)".to_string()
                    } else {
                        declared.join(", ")
                    }
                ),
            );
        }
    }
    if let Some(m) = &app.maintenance {
        let key = |k: &str| format!("apps.{app_name}.maintenance.{k}");
        if m.flag_file.is_none() && m.on.is_none() {
            bad(
                key("flag_file"),
                "set a flag_file, an `on` and `off` command, or both".into(),
            );
        }
        if m.on.is_some() != m.off.is_some() {
            bad(key("off"), "`on` and `off` commands go together".into());
        }
        if let Some(f) = &m.flag_file
            && f.is_relative()
            && !is_plain_relative(f)
        {
            bad(
                key("flag_file"),
                "relative paths must stay inside ROOT (no `..`)".into(),
            );
        }
        if let Some(c) = &m.on {
            validate_command(&key("on"), c, bad);
        }
        if let Some(c) = &m.off {
            validate_command(&key("off"), c, bad);
        }
        if let Some(u) = &m.check_url
            && !u.starts_with("http://")
        {
            bad(
                key("check_url"),
                "only http:// URLs are supported so far".into(),
            );
        }
    }
}

fn validate_backups(app_name: &str, app: &AppConfig, bad: &mut dyn FnMut(String, String)) {
    let b = &app.backup;
    let at = |k: &str| format!("apps.{app_name}.backup.{k}");
    if let Some(dir) = &b.dir
        && !dir.is_absolute()
    {
        bad(at("dir"), "must be an absolute path".into());
    }
    if b.keep == 0 {
        bad(at("keep"), "must be at least 1".into());
    }
    if !(1..=19).contains(&b.zstd_level) {
        bad(at("zstd_level"), "use a zstd level from 1 to 19".into());
    }
    if let Some(o) = &b.offsite {
        match (&o.dir, &o.copy, &o.fetch) {
            (Some(d), None, None) if d.is_absolute() => {}
            (Some(_), None, None) => bad(at("offsite.dir"), "must be an absolute path".into()),
            (None, Some(c), Some(f)) if !c.is_empty() && !f.is_empty() => {}
            _ => bad(
                at("offsite"),
                "set either `dir`, or both `copy` and `fetch` commands (program and arguments); \
                 `fetch` writes the copy to stdout so its sha256 can be checked"
                    .into(),
            ),
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, db) in app.databases.iter().enumerate() {
        let key = |k: &str| format!("apps.{app_name}.databases.{i}.{k}");
        if names::check_app_name(db.name()).is_err() {
            bad(
                key("name"),
                format!(
                    "invalid name {:?}: use lowercase letters, digits, '-' or '_'",
                    db.name()
                ),
            );
        }
        if !names.insert(db.name().to_string()) {
            bad(
                key("name"),
                format!("duplicate backup name {:?}", db.name()),
            );
        }
        if let DatabaseConfig::Sqlite(s) = db
            && !s.path.is_absolute()
        {
            bad(key("path"), "must be an absolute path".into());
        }
        let password_file = match db {
            DatabaseConfig::Sqlite(_) => None,
            DatabaseConfig::Postgres(d) => d.password_file.as_ref(),
            DatabaseConfig::Mariadb(d) => d.password_file.as_ref(),
        };
        // Checked here so check-config says so, not every backup later.
        if let Some(f) = password_file
            && !f.is_file()
        {
            bad(
                key("password_file"),
                format!(
                    "{} does not exist or is not a file; write the password into it (mode \
                     0600, readable by the agent's user), or remove password_file",
                    f.display()
                ),
            );
        }
        let timeout = match db {
            DatabaseConfig::Sqlite(_) => None,
            DatabaseConfig::Postgres(d) => Some(d.timeout_secs),
            DatabaseConfig::Mariadb(d) => Some(d.timeout_secs),
        };
        if timeout == Some(0) {
            bad(
                key("timeout_secs"),
                "must be at least 1 (seconds a client tool may run; default 3600)".into(),
            );
        }
        for tool in db.tools() {
            if find_tool(tool, db.bin_dir()).is_none() {
                bad(
                    key("engine"),
                    format!(
                        "{} backups need `{}`, which is not {}; install the client tools or set bin_dir",
                        db.engine(),
                        tool.join("` or `"),
                        match db.bin_dir() {
                            Some(d) => format!("in {}", d.display()),
                            None => "on PATH".into(),
                        }
                    ),
                );
            }
        }
    }
    for (i, set) in app.files.iter().enumerate() {
        let key = |k: &str| format!("apps.{app_name}.files.{i}.{k}");
        if names::check_app_name(&set.name).is_err() {
            bad(
                key("name"),
                format!(
                    "invalid name {:?}: use lowercase letters, digits, '-' or '_'",
                    set.name
                ),
            );
        }
        if !names.insert(set.name.clone()) {
            bad(key("name"), format!("duplicate backup name {:?}", set.name));
        }
        if set.paths.is_empty() {
            bad(key("paths"), "list at least one path".into());
        }
        for (j, p) in set.paths.iter().enumerate() {
            if p.is_relative() && !is_plain_relative(p) {
                bad(
                    format!("apps.{app_name}.files.{i}.paths.{j}"),
                    "relative paths must stay inside ROOT (no `..`)".into(),
                );
            }
        }
    }
}

/// `[apps.APP.flags]`: the app's feature flag file and its declared flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsConfig {
    /// Absolute, or relative to ROOT; `.json` or `.toml` by extension.
    pub file: PathBuf,
    /// `[apps.APP.flags.declared.NAME]`: only these can be listed and set.
    #[serde(default)]
    pub declared: BTreeMap<String, FlagDecl>,
}

/// `[apps.APP.flags.declared.NAME]`: one flag, and where the app's file keeps
/// it (issue 12, part 11). The defaults are golive's own format,
/// `"NAME": {"enabled": true, "percent": 25}`; an app with its own format
/// names its key and fields, e.g. seed 004's
/// `key = "FASES.FASE_37_BI_ANALYTICS"`, `on_field = "habilitado"`,
/// `percent_field = "porcentaje_rollout"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagDecl {
    pub description: Option<String>,
    /// The flag's key in the file, any case: a dotted path (`"FASES.X"`:
    /// the object `X` inside `FASES`), or a list of keys when a key itself
    /// holds a dot. Default: NAME.
    pub key: Option<FlagKey>,
    /// The field that holds on/off (a boolean). Default `enabled`.
    pub on_field: Option<String>,
    /// The field that holds the rollout percentage (an integer 0-100).
    /// Default `percent`; `false`: the flag has no percentage (`--percent`
    /// is refused, and no field of the object is read or written as one).
    pub percent_field: Option<PercentField>,
}

/// `percent_field`: the field's name, or `false` for a flag that has no
/// rollout percentage (issue 12, part 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PercentField {
    Name(String),
    None,
}

impl<'de> Deserialize<'de> for PercentField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PercentField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the percentage field's name, or false for a flag without a percentage")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PercentField, E> {
                Ok(PercentField::Name(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PercentField, E> {
                if v {
                    Err(E::custom(
                        "percent_field = true says nothing: give the percentage field's name \
                         (default \"percent\"), or false for a flag without a percentage",
                    ))
                } else {
                    Ok(PercentField::None)
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A flag's key: `"A.B"` or `["A", "B.C"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum FlagKey {
    Dotted(String),
    Path(Vec<String>),
}

/// The deepest a flag's key may be nested.
pub const MAX_FLAG_KEY_DEPTH: usize = 8;

impl FlagDecl {
    /// The keys from the file's top level down to the flag's value.
    pub fn key_path(&self, name: &str) -> Vec<String> {
        match &self.key {
            None => vec![name.to_string()],
            Some(FlagKey::Dotted(k)) => k.split('.').map(str::to_string).collect(),
            Some(FlagKey::Path(p)) => p.clone(),
        }
    }

    pub fn on_field(&self) -> &str {
        self.on_field.as_deref().unwrap_or("enabled")
    }

    /// The field of the rollout percentage; `None` when the flag declares
    /// that it has none (`percent_field = false`).
    pub fn percent_field(&self) -> Option<&str> {
        match &self.percent_field {
            None => Some("percent"),
            Some(PercentField::Name(n)) => Some(n),
            Some(PercentField::None) => None,
        }
    }
}

fn validate_flags(app_name: &str, app: &AppConfig, bad: &mut dyn FnMut(String, String)) {
    let Some(f) = &app.flags else {
        return;
    };
    let key = |k: &str| format!("apps.{app_name}.flags.{k}");
    if f.file
        .components()
        .any(|c| matches!(c, Component::ParentDir))
        || f.file.as_os_str().is_empty()
    {
        bad(
            key("file"),
            "must be an absolute path or one relative to ROOT, without `..`".into(),
        );
    }
    match f.file.extension().and_then(|e| e.to_str()) {
        Some("json") | Some("toml") => {}
        _ => bad(
            key("file"),
            format!(
                "{}: the format is chosen by extension; use .json or .toml",
                f.file.display()
            ),
        ),
    }
    // Where two flags share a key, setting one would silently set the other.
    let mut seen: BTreeMap<Vec<String>, &str> = BTreeMap::new();
    for (name, decl) in &f.declared {
        let here = |k: &str| key(&format!("declared.{name}{k}"));
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bad(
                here(""),
                format!("invalid flag name {name:?}: use letters, digits, '-' or '_'"),
            );
        }
        let path = decl.key_path(name);
        if path.is_empty() || path.len() > MAX_FLAG_KEY_DEPTH {
            bad(
                here(".key"),
                format!(
                    "a flag's key has 1 to {MAX_FLAG_KEY_DEPTH} levels, not {}",
                    path.len()
                ),
            );
        } else if let Some(k) = path.iter().find(|k| !flag_field_ok(k)) {
            bad(
                here(".key"),
                format!(
                    "{k:?} in {:?} is not a usable key: keys are not empty and hold no control                      characters (a dotted key is split at each dot; give a list,                      key = [\"A\", \"B.C\"], when a key holds a dot)",
                    path.join(".")
                ),
            );
        } else if let Some(other) = seen.insert(path.clone(), name) {
            bad(
                here(".key"),
                format!(
                    "flag {other} already uses the key {:?}; each flag needs its own key",
                    path.join(".")
                ),
            );
        }
        let percent_name = match &decl.percent_field {
            Some(PercentField::Name(n)) => Some(n.clone()),
            _ => None,
        };
        for (field, value) in [
            (".on_field", &decl.on_field),
            (".percent_field", &percent_name),
        ] {
            if let Some(v) = value
                && !flag_field_ok(v)
            {
                bad(
                    here(field),
                    format!(
                        "{v:?} is not a usable field name: give the field's name as the app's file spells it"
                    ),
                );
            }
        }
        if Some(decl.on_field()) == decl.percent_field() {
            bad(
                here(".percent_field"),
                format!(
                    "on_field and percent_field are both {:?}; they must be two fields",
                    decl.on_field()
                ),
            );
        }
    }
}

/// A key or field name golive can write: not empty, no control characters.
fn flag_field_ok(k: &str) -> bool {
    !k.is_empty() && k.len() <= 256 && !k.chars().any(char::is_control)
}

/// `[apps.APP.git]`: where this host fetches git-sourced releases from.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// An absolute path, `file:///…`, `https://…`, `http://…`, `ssh://…`,
    /// `git://…` or `user@host:path`. Credentials are accepted only in an
    /// https URL (`https://user:token@host/…`); they are handed to git
    /// through a credential helper, never on its command line, and never
    /// shown.
    pub url: String,
    /// Limit for each git command (the fetch, mostly).
    #[serde(default = "default_git_timeout")]
    pub timeout_secs: u64,
    /// Directory of the `git` program; default: PATH.
    pub bin_dir: Option<PathBuf>,
}

fn default_git_timeout() -> u64 {
    300
}

// Hand-written Debug: the URL may carry a token.
impl fmt::Debug for GitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.redacted_url())
            .field("timeout_secs", &self.timeout_secs)
            .field("bin_dir", &self.bin_dir)
            .finish()
    }
}

/// Credentials taken out of an https URL.
#[derive(Clone, PartialEq, Eq)]
pub struct GitCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GitCredentials(<redacted>)")
    }
}

impl GitSource {
    /// The URL as it may be shown: credentials replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The URL git is given and the credentials kept out of it. An https
    /// URL loses its `user:password@` (a command line is readable by every
    /// local user in `/proc`); other URLs are returned as written.
    pub fn fetch_target(&self) -> (String, Option<GitCredentials>) {
        match split_userinfo(&self.url) {
            Some((head, userinfo, tail)) if head.eq_ignore_ascii_case("https://") => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| percent_decode(s).unwrap_or_else(|_| s.to_string());
                (
                    format!("{head}{tail}"),
                    Some(GitCredentials {
                        username: decode(user),
                        password: decode(password),
                    }),
                )
            }
            _ => (self.url.clone(), None),
        }
    }

    /// `text` with the URL's credentials replaced by `***`, for anything
    /// that goes into a log, an event or an error.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.url, &self.redacted_url());
        if let (_, Some(c)) = self.fetch_target() {
            if let Some((_, userinfo, _)) = split_userinfo(&self.url) {
                out = out.replace(userinfo, "***");
            }
            for secret in [&c.password, &c.username] {
                if !secret.is_empty() {
                    out = out.replace(secret.as_str(), "***");
                }
            }
        } else if let Some((_, userinfo, _)) = split_userinfo(&self.url)
            && let Some((_, password)) = userinfo.split_once(':')
            && !password.is_empty()
        {
            // Refused by validation; scrubbed anyway.
            out = out.replace(password, "***");
        }
        out
    }
}

/// `url` with its credentials replaced by `***`: all of an http(s) URL's
/// `user:password@` (a token is often the user name), the password of any
/// other URL. Paths and scp-like `user@host:path` are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((head, userinfo, tail)) = split_userinfo(url) else {
        return url.to_string();
    };
    let lower = head.to_ascii_lowercase();
    let shown = if lower == "http://" || lower == "https://" {
        "***".to_string()
    } else {
        match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***"),
            None => userinfo.to_string(),
        }
    };
    format!("{head}{shown}@{tail}")
}

/// `("https://", "user:pw", "host/path")` for a `scheme://user:pw@host/path` URL.
fn split_userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    Some((&url[..scheme.len() + 3], &rest[..at], &rest[at + 1..]))
}

/// `%XX` escapes decoded; the result must be UTF-8 without control characters.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a `%` not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| "escapes that do not decode to UTF-8")?;
    if text.chars().any(char::is_control) {
        return Err("an escaped control character".into());
    }
    Ok(text)
}

/// Checks a `[apps.APP.git] url`; messages show it redacted.
pub fn check_git_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let forms =
        "use an absolute path, file:///PATH, https://HOST/PATH, ssh://HOST/PATH or USER@HOST:PATH";
    if url.is_empty() {
        return Err(format!(
            "set the repository this host fetches releases from; {forms}"
        ));
    }
    if url.chars().any(char::is_control) {
        return Err("the URL contains a control character".into());
    }
    if url.starts_with('-') {
        return Err(format!(
            "{shown:?} starts with '-' and could be read as an option; {forms}"
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !["file", "http", "https", "ssh", "git"].contains(&scheme.as_str()) {
            return Err(format!("{shown:?}: unsupported scheme `{scheme}`; {forms}"));
        }
        if scheme == "file" {
            if !rest.starts_with('/') {
                return Err(format!(
                    "{shown:?}: a file URL needs an absolute path, e.g. file:///srv/git/shop.git"
                ));
            }
            return Ok(());
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let (userinfo, host) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(format!("{shown:?} names no host; {forms}"));
        }
        if let Some(userinfo) = userinfo {
            match scheme.as_str() {
                "https" => {
                    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                    for part in [user, password] {
                        percent_decode(part)
                            .map_err(|why| format!("{shown:?}: the credentials contain {why}"))?;
                    }
                }
                "http" => {
                    return Err(format!(
                        "{shown:?}: credentials in an http:// URL would cross the network in clear; use https://"
                    ));
                }
                _ if userinfo.contains(':') => {
                    return Err(format!(
                        "{shown:?}: a password in a {scheme}:// URL is not accepted; use an ssh key \
                         (ssh-agent or the agent user's ~/.ssh), or an https URL with a token"
                    ));
                }
                _ => {}
            }
        }
        return Ok(());
    }
    if url.starts_with('/') {
        return Ok(());
    }
    // scp-like `[user@]host:path`; `transport::address` runs a remote helper.
    match url.split_once(':') {
        Some((host, _)) if host.contains('/') || host.is_empty() => {
            Err(format!("{shown:?} is a relative path; {forms}"))
        }
        Some((_, path)) if path.starts_with(':') => Err(format!(
            "{shown:?}: remote-helper URLs (`transport::address`) are not accepted; {forms}"
        )),
        Some(_) => Ok(()),
        None => Err(format!("{shown:?} is a relative path; {forms}")),
    }
}

fn validate_git(app_name: &str, app: &AppConfig, bad: &mut dyn FnMut(String, String)) {
    let Some(g) = &app.git else {
        return;
    };
    let key = |k: &str| format!("apps.{app_name}.git.{k}");
    if let Err(e) = check_git_url(&g.url) {
        bad(key("url"), e);
    }
    if g.timeout_secs == 0 {
        bad(key("timeout_secs"), "must be greater than 0".into());
    }
    match &g.bin_dir {
        Some(d) if !d.is_absolute() => bad(key("bin_dir"), "must be an absolute path".into()),
        dir => {
            if find_tool(&["git"], dir.as_deref()).is_none() {
                bad(
                    format!("apps.{app_name}.git"),
                    format!(
                        "git release sources need `git` (2.30 or newer), which is not {}; install git or set bin_dir",
                        match dir {
                            Some(d) => format!("in {}", d.display()),
                            None => "on PATH".into(),
                        }
                    ),
                );
            }
        }
    }
}

/// True for a relative path with only normal components.
pub fn is_plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn walk(
    item: &toml_edit::Item,
    path: &mut Vec<String>,
    visit: &mut dyn FnMut(&[String], std::ops::Range<usize>),
) {
    if let Some(span) = item.span() {
        visit(path, span);
    }
    match item {
        toml_edit::Item::Table(t) => {
            for (k, v) in t.iter() {
                path.push(k.to_string());
                walk(v, path, visit);
                path.pop();
            }
        }
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                path.push(i.to_string());
                walk(&toml_edit::Item::Table(t.clone()), path, visit);
                path.pop();
            }
        }
        toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
            for (k, v) in t.iter() {
                path.push(k.to_string());
                walk(&toml_edit::Item::Value(v.clone()), path, visit);
                path.pop();
            }
        }
        toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                path.push(i.to_string());
                walk(&toml_edit::Item::Value(v.clone()), path, visit);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Line of a dotted key that exists exactly in the source.
fn locate_exact(source: &str, dotted: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(source).ok()?;
    let mut found = None;
    walk(doc.as_item(), &mut Vec::new(), &mut |path, span| {
        if path.join(".") == dotted {
            found = Some(site::line_of(source, span.start));
        }
    });
    found
}

/// Line of a dotted key in the source; falls back to the nearest parent key
/// that exists (a missing key is reported at its table).
pub fn locate(source: &str, dotted: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(source).ok()?;
    let want: Vec<&str> = dotted.split('.').collect();
    let mut best: Option<(usize, usize)> = None; // (matched depth, offset)
    walk(doc.as_item(), &mut Vec::new(), &mut |path, span| {
        let depth = path
            .iter()
            .zip(&want)
            .take_while(|(a, b)| a.as_str() == **b)
            .count();
        if depth == path.len() && best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, span.start));
        }
    });
    best.filter(|(d, _)| *d > 0)
        .map(|(_, off)| site::line_of(source, off))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pki(dir: &Path) {
        for f in ["ca.crt", "agent.crt", "agent.key"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
    }

    fn sample(extra: &str) -> String {
        format!(
            r#"[agent]
name = "web1"
listen = "127.0.0.1:7443"
state_dir = "state"

[tls]
ca = "ca.crt"
cert = "agent.crt"
key = "agent.key"

[apps.shop]
root = "/srv/shop"
shared = ["uploads"]

[[apps.shop.probes]]
kind = "http"
name = "home"
url = "http://127.0.0.1:8080/"
{extra}"#
        )
    }

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "golive-config-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        write_pki(&dir);
        dir
    }

    #[test]
    fn good_config_parses_with_relative_paths_resolved() {
        let dir = tmp();
        let file = dir.join("agent.toml");
        let cfg = parse(&file, &sample("")).unwrap();
        assert_eq!(cfg.agent.state_dir, dir.join("state"));
        assert_eq!(cfg.apps["shop"].keep_releases, 5);
        assert_eq!(cfg.apps["shop"].probes[0].name(), "home");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Everything a config names by path, relatively.
    const RELATIVE: &str = r#"
[[apps.shop.probes]]
kind = "http"
name = "private"
url = "https://127.0.0.1:8443/"
ca_file = "tls/private-ca.pem"

[[apps.shop.probes]]
kind = "disk"
name = "disk"
path = "data"
min_free_percent = 10

[[apps.shop.probes]]
kind = "file"
name = "cron"
path = "run/heartbeat"

[[apps.shop.probes]]
kind = "access-log"
name = "errors"
path = "logs/access.log"
max_p95_ms = 500

[[apps.shop.probes]]
kind = "command"
name = "cli"
cmd = ["true"]
cwd = "bin"

[apps.shop.backup]
dir = "backups"
[apps.shop.backup.offsite]
dir = "offsite"

[[apps.shop.databases]]
engine = "sqlite"
name = "orders"
path = "data/orders.db"

[[apps.shop.databases]]
engine = "postgres"
name = "main"
user = "shop"
dbname = "shop"
password_file = "secrets/pg.pass"
bin_dir = "pgbin"

[[apps.shop.databases]]
engine = "mariadb"
name = "legacy"
socket = "run/mysqld.sock"
user = "shop"
database = "shop"
password_file = "secrets/my.pass"
bin_dir = "mybin"

[[apps.shop.files]]
name = "uploads"
paths = ["shared/uploads"]

[apps.shop.commands.cache]
cmd = ["bin/console", "cache:clear"]
cwd = "app"

[apps.shop.git]
url = "/srv/git/shop.git"
bin_dir = "gitbin"

[apps.shop.maintenance]
flag_file = "shared/maintenance.flag"

[apps.shop.flags]
file = "shared/flags.json"

[apps.shop.migrations]
dir = "migrations"
database = "orders"
"#;

    /// The files and programs [`RELATIVE`] needs under `dir` to validate.
    fn relative_fixture(dir: &Path) {
        for (sub, programs) in [
            (
                "pgbin",
                &["pg_dump", "pg_restore", "psql", "createdb", "dropdb"][..],
            ),
            ("mybin", &["mariadb-dump", "mariadb"][..]),
            ("gitbin", &["git"][..]),
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            for p in programs {
                std::fs::write(dir.join(sub).join(p), "").unwrap();
            }
        }
        std::fs::create_dir_all(dir.join("secrets")).unwrap();
        std::fs::write(dir.join("secrets/pg.pass"), "pw").unwrap();
        std::fs::write(dir.join("secrets/my.pass"), "pw").unwrap();
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        std::fs::write(
            dir.join("tls/private-ca.pem"),
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
    }

    #[test]
    fn issue11_every_config_path_resolves_against_the_config_dir() {
        let dir = tmp();
        relative_fixture(&dir);
        let src = sample(RELATIVE).replace("\"/srv/shop\"", "\"srv/shop\"");
        let cfg = parse(&dir.join("agent.toml"), &src).unwrap_or_else(|e| panic!("{e}"));
        let at = |p: &str| dir.join(p);
        assert_eq!(cfg.agent.state_dir, at("state"));
        assert_eq!(cfg.tls.ca, at("ca.crt"));
        let app = &cfg.apps["shop"];
        assert_eq!(app.root, at("srv/shop"));
        assert_eq!(app.backup.dir.as_deref(), Some(at("backups").as_path()));
        let offsite = app.backup.offsite.as_ref().unwrap();
        assert_eq!(offsite.dir.as_deref(), Some(at("offsite").as_path()));
        let DatabaseConfig::Sqlite(sqlite) = &app.databases[0] else {
            panic!()
        };
        assert_eq!(sqlite.path, at("data/orders.db"));
        let DatabaseConfig::Postgres(pg) = &app.databases[1] else {
            panic!()
        };
        assert_eq!(
            pg.password_file.as_deref(),
            Some(at("secrets/pg.pass").as_path())
        );
        assert_eq!(pg.bin_dir.as_deref(), Some(at("pgbin").as_path()));
        let DatabaseConfig::Mariadb(my) = &app.databases[2] else {
            panic!()
        };
        assert_eq!(
            my.password_file.as_deref(),
            Some(at("secrets/my.pass").as_path())
        );
        assert_eq!(my.bin_dir.as_deref(), Some(at("mybin").as_path()));
        assert_eq!(my.socket.as_deref(), Some(at("run/mysqld.sock").as_path()));
        assert_eq!(
            app.git.as_ref().unwrap().bin_dir.as_deref(),
            Some(at("gitbin").as_path())
        );
        let probe_path = |i: usize| match &app.probes[i] {
            ProbeConfig::Http(p) => p.ca_file.clone().unwrap(),
            ProbeConfig::Disk(p) => p.path.clone(),
            ProbeConfig::File(p) => p.path.clone(),
            ProbeConfig::AccessLog(p) => p.path.clone(),
            ProbeConfig::Command(p) => p.cwd.clone().unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(probe_path(1), at("tls/private-ca.pem"));
        assert_eq!(probe_path(2), at("data"));
        assert_eq!(probe_path(3), at("run/heartbeat"));
        assert_eq!(probe_path(4), at("logs/access.log"));
        // Paths documented as relative to the release, ROOT or ROOT/current
        // stay as written: they are resolved where they are used.
        assert_eq!(probe_path(5), Path::new("bin"));
        assert_eq!(app.shared, [SharedPath::from("uploads")]);
        assert_eq!(app.files[0].paths, [Path::new("shared/uploads")]);
        assert_eq!(app.commands["cache"].cwd.as_deref(), Some(Path::new("app")));
        assert_eq!(app.commands["cache"].cmd[0], "bin/console");
        let m = app.maintenance.as_ref().unwrap();
        assert_eq!(
            m.flag_file.as_deref(),
            Some(Path::new("shared/maintenance.flag"))
        );
        assert_eq!(
            app.flags.as_ref().unwrap().file,
            Path::new("shared/flags.json")
        );
        assert_eq!(
            app.migrations.as_ref().unwrap().dir,
            Path::new("migrations")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn issue11_a_relative_config_path_still_gives_absolute_paths() {
        let dir = tmp();
        relative_fixture(&dir);
        // The same directory, named relative to the working directory.
        let cwd = std::env::current_dir().unwrap();
        let mut relative = PathBuf::new();
        for _ in cwd.components().skip(1) {
            relative.push("..");
        }
        relative.push(dir.strip_prefix("/").unwrap());
        assert!(relative.is_relative());
        let src = sample(RELATIVE);
        let cfg = parse(&relative.join("agent.toml"), &src).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            cfg.agent.state_dir.is_absolute(),
            "{:?}",
            cfg.agent.state_dir
        );
        assert!(cfg.agent.state_dir.ends_with("state"));
        assert_eq!(
            std::fs::canonicalize(cfg.agent.state_dir.parent().unwrap()).unwrap(),
            std::fs::canonicalize(&dir).unwrap()
        );
        let DatabaseConfig::Postgres(pg) = &cfg.apps["shop"].databases[1] else {
            panic!()
        };
        assert!(pg.password_file.as_ref().unwrap().is_absolute());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn issue11_a_missing_password_file_is_a_config_error() {
        let dir = tmp();
        relative_fixture(&dir);
        std::fs::remove_file(dir.join("secrets/pg.pass")).unwrap();
        let err = parse(&dir.join("agent.toml"), &sample(RELATIVE)).unwrap_err();
        let text = err.to_string();
        let line = sample(RELATIVE)
            .lines()
            .position(|l| l == "password_file = \"secrets/pg.pass\"")
            .unwrap()
            + 1;
        assert!(
            text.contains(&format!(
                "agent.toml:{line}: key `apps.shop.databases.1.password_file`: {}",
                dir.join("secrets/pg.pass").display()
            )),
            "{text}"
        );
        assert_eq!(err.0.len(), 1, "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_probe_key_names_line_and_key() {
        let dir = tmp();
        let file = dir.join("agent.toml");
        let err = parse(&file, &sample("expect_statu = [200]\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("expect_statu"), "{text}");
        assert!(
            text.contains("agent.toml:19: key `apps.shop.probes.0.expect_statu`"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The one issue a serde-level error in `src` gives: `file:line: key `k``.
    fn serde_site(src: &str) -> String {
        let err = parse(Path::new("/etc/golive/agent.toml"), src).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let issue = &err.0[0];
        format!(
            "{}: key `{}`",
            issue.line.map_or("?".into(), |l| l.to_string()),
            issue.key
        )
    }

    /// `sample` with `from` replaced by `to` (which must occur).
    fn edited(from: &str, to: &str) -> String {
        let src = sample(EXTRA);
        assert!(src.contains(from), "{from:?} not in the sample");
        src.replacen(from, to, 1)
    }

    /// Tables of every shape after the sample's probe (line 19 on).
    const EXTRA: &str = "\n\
        [apps.shop.hooks]\n\
        after_unpack = [ { cmd = [\"true\"] } ]\n\
        \n\
        [[apps.shop.databases]]\n\
        engine = \"sqlite\"\n\
        name = \"main\"\n\
        path = \"/srv/db\"\n";

    #[test]
    fn issue11_unknown_keys_name_their_own_line_and_full_key() {
        assert_eq!(
            serde_site(&edited("[agent]", "bogus = 1\n[agent]")),
            "1: key `bogus`"
        );
        assert_eq!(
            serde_site(&edited(
                "state_dir = \"state\"",
                "state_dir = \"state\"\nnmae = \"x\""
            )),
            "5: key `agent.nmae`"
        );
        assert_eq!(
            serde_site(&edited(
                "root = \"/srv/shop\"",
                "root = \"/srv/shop\"\nrooot = \"x\""
            )),
            "13: key `apps.shop.rooot`"
        );
        assert_eq!(
            serde_site(&edited("shared = [", "backup.kep = 3\nshared = [")),
            "13: key `apps.shop.backup.kep`"
        );
        // Arrays of tables: a tagged one (probes) and the databases.
        assert_eq!(
            serde_site(&edited("url = ", "expect_statu = [200]\nurl = ")),
            "18: key `apps.shop.probes.0.expect_statu`"
        );
        assert_eq!(
            serde_site(&edited(
                "path = \"/srv/db\"",
                "path = \"/srv/db\"\npasword_file = \"x\""
            )),
            "27: key `apps.shop.databases.0.pasword_file`"
        );
        // An inline table in an array.
        assert_eq!(
            serde_site(&edited(
                "{ cmd = [\"true\"] }",
                "{ cmd = [\"true\"], cdw = \"x\" }"
            )),
            "21: key `apps.shop.hooks.after_unpack.0.cdw`"
        );
    }

    #[test]
    fn issue11_wrong_types_name_the_value_s_line_and_key() {
        assert_eq!(
            serde_site(&edited("\"127.0.0.1:7443\"", "7443")),
            "3: key `agent.listen`"
        );
        assert_eq!(
            serde_site(&edited(
                "shared = [\"uploads\"]",
                "keep_releases = \"five\""
            )),
            "13: key `apps.shop.keep_releases`"
        );
        assert_eq!(
            serde_site(&edited("[\"uploads\"]", "[\"uploads\", 5]")),
            "13: key `apps.shop.shared.1`"
        );
        // Probes and databases are tagged (`kind`, `engine`): serde reads
        // such a table whole before it knows the struct.
        assert_eq!(
            serde_site(&edited(
                "name = \"home\"",
                "name = \"home\"\ntimeout_ms = \"soon\""
            )),
            "18: key `apps.shop.probes.0.timeout_ms`"
        );
        assert_eq!(
            serde_site(&edited("path = \"/srv/db\"", "path = 5")),
            "26: key `apps.shop.databases.0.path`"
        );
        assert_eq!(
            serde_site(&edited("kind = \"http\"", "kind = \"htp\"")),
            "16: key `apps.shop.probes.0.kind`"
        );
        assert_eq!(
            serde_site(&edited(
                "{ cmd = [\"true\"] }",
                "{ cmd = [\"true\"], timeout_secs = \"x\" }"
            )),
            "21: key `apps.shop.hooks.after_unpack.0.timeout_secs`"
        );
    }

    #[test]
    fn issue11_missing_keys_name_their_table_s_line_and_the_full_key() {
        assert_eq!(
            serde_site(&edited(
                "[tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n",
                ""
            )),
            "1: key `tls`"
        );
        assert_eq!(
            serde_site(&edited("key = \"agent.key\"\n", "")),
            "6: key `tls.key`"
        );
        assert_eq!(
            serde_site(&edited("root = \"/srv/shop\"\n", "")),
            "11: key `apps.shop.root`"
        );
        assert_eq!(
            serde_site(&edited("url = \"http://127.0.0.1:8080/\"\n", "")),
            "15: key `apps.shop.probes.0.url`"
        );
        assert_eq!(
            serde_site(&edited("path = \"/srv/db\"\n", "")),
            "23: key `apps.shop.databases.0.path`"
        );
        assert_eq!(
            serde_site(&edited("{ cmd = [\"true\"] }", "{ cwd = \"x\" }")),
            "21: key `apps.shop.hooks.after_unpack.0.cmd`"
        );
    }

    #[test]
    fn issue11_syntax_errors_name_line_and_key() {
        assert_eq!(
            serde_site(&edited("\"web1\"", "web1")),
            "2: key `agent.name`"
        );
        assert_eq!(
            serde_site(&edited(
                "key = \"agent.key\"",
                "key = \"agent.key\"\ncert = \"b\""
            )),
            "10: key `tls.cert`"
        );
    }

    #[test]
    fn issue11_serde_messages_read_file_line_key_message() {
        let src = edited(
            "root = \"/srv/shop\"",
            "root = \"/srv/shop\"\nrooot = \"x\"",
        );
        let err = parse(Path::new("/etc/golive/agent.toml"), &src).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "/etc/golive/agent.toml:13: key `apps.shop.rooot`: unknown field `rooot`, expected one of `root`"
            ),
            "{text}"
        );
    }

    #[test]
    fn semantic_errors_name_file_line_and_key() {
        let dir = tmp();
        let file = dir.join("agent.toml");
        let src = sample("")
            .replace("\"/srv/shop\"", "\"srv/shop\"")
            .replace("[\"uploads\"]", "[\"../etc\"]");
        // A relative root resolves against the config dir, so it becomes absolute;
        // the `..` shared path is the error here.
        let err = parse(&file, &src).unwrap_err();
        let issue = &err.0[0];
        assert_eq!(issue.key, "apps.shop.shared.0");
        assert_eq!(issue.line, Some(13));
        assert!(
            err.to_string()
                .contains("agent.toml:13: key `apps.shop.shared.0`")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Issue 12, part 11: `percent_field = false` declares a flag without a
    /// percentage; `true` is refused where it is written, with the fix.
    #[test]
    fn issue12_a_flag_declares_that_it_has_no_percentage() {
        let dir = tmp();
        let file = dir.join("agent.toml");
        let flags = |decl: &str| {
            sample(&format!(
                "\n[apps.shop.flags]\nfile = \"shared/flags.json\"\n\
                 [apps.shop.flags.declared.alerta]\n{decl}\n"
            ))
        };
        let cfg = parse(
            &file,
            &flags("key = \"ALERTAS.BAJA\"\non_field = \"percent\"\npercent_field = false"),
        )
        .unwrap();
        let decl = &cfg.apps["shop"].flags.as_ref().unwrap().declared["alerta"];
        assert_eq!(decl.percent_field, Some(PercentField::None));
        assert_eq!(decl.percent_field(), None);
        // With no percentage, `percent` is free to be the on/off field.
        assert_eq!(decl.on_field(), "percent");
        let cfg = parse(&file, &flags("percent_field = \"pct\"")).unwrap();
        assert_eq!(
            cfg.apps["shop"].flags.as_ref().unwrap().declared["alerta"].percent_field(),
            Some("pct")
        );
        let cfg = parse(&file, &flags("")).unwrap();
        assert_eq!(
            cfg.apps["shop"].flags.as_ref().unwrap().declared["alerta"].percent_field(),
            Some("percent")
        );
        for (decl, says) in [
            (
                "percent_field = true",
                "or false for a flag without a percentage",
            ),
            ("percent_field = 5", "the percentage field's name, or false"),
            ("percent_field = \"\"", "not a usable field name"),
            ("on_field = \"x\"\npercent_field = \"x\"", "two fields"),
        ] {
            let err = parse(&file, &flags(decl)).unwrap_err();
            let issue = &err.0[0];
            assert_eq!(
                issue.key, "apps.shop.flags.declared.alerta.percent_field",
                "{decl}: {err}"
            );
            assert!(issue.line.is_some(), "{decl}: {err}");
            assert!(issue.message.contains(says), "{decl}: {err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn issue12_shared_paths_declare_directories_with_a_trailing_slash() {
        let dir = tmp();
        let file = dir.join("agent.toml");
        let src = sample("").replace(
            "[\"uploads\"]",
            "[\"uploads/\", \"config/settings.local.php\", \"web//files//\"]",
        );
        let cfg = parse(&file, &src).unwrap();
        let shared = &cfg.apps["shop"].shared;
        assert_eq!(
            shared,
            &[
                SharedPath {
                    path: "uploads".into(),
                    dir: true
                },
                SharedPath {
                    path: "config/settings.local.php".into(),
                    dir: false
                },
                SharedPath {
                    path: "web//files".into(),
                    dir: true
                },
            ]
        );
        assert_eq!(shared[0].to_string(), "uploads/");
        assert!(wants_dir(Path::new("sites/default/files/")));
        assert!(!wants_dir(Path::new("settings.php")));

        for (list, key, says) in [
            ("[\"/\"]", "apps.shop.shared.0", "trailing `/`"),
            ("[\"/etc/\"]", "apps.shop.shared.0", "relative path"),
            ("[\"a\", \"a/\"]", "apps.shop.shared.1", "listed twice"),
            ("[\"web/\", \"web/files/\"]", "apps.shop.shared.1", "nested"),
        ] {
            let err = parse(&file, &sample("").replace("[\"uploads\"]", list)).unwrap_err();
            let issue = &err.0[0];
            assert_eq!(issue.key, key, "{list}: {err}");
            assert_eq!(issue.line, Some(13), "{list}: {err}");
            assert!(issue.message.contains(says), "{list}: {err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn artifact_store_cap_is_validated() {
        let dir = tmp();
        let file = dir.join("agent.toml");
        let cfg = parse(&file, &sample("")).unwrap();
        assert_eq!(cfg.limits.max_artifact_store_bytes, 4 << 30);
        let with = |limits: &str| {
            sample("").replace("[apps.shop]", &format!("[limits]\n{limits}\n\n[apps.shop]"))
        };
        let err = parse(&file, &with("max_artifact_store_bytes = 0")).unwrap_err();
        assert_eq!(err.0[0].key, "limits.max_artifact_store_bytes");
        let err = parse(
            &file,
            &with("max_artifact_bytes = 2000\nmax_artifact_store_bytes = 1000"),
        )
        .unwrap_err();
        assert_eq!(err.0[0].key, "limits.max_artifact_store_bytes");
        assert!(
            err.to_string()
                .contains("less than limits.max_artifact_bytes (2000 bytes)"),
            "{err}"
        );
        let cfg = parse(
            &file,
            &with("max_artifact_bytes = 1000\nmax_artifact_store_bytes = 1000"),
        )
        .unwrap();
        assert_eq!(cfg.limits.max_artifact_store_bytes, 1000);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_listen_is_reported() {
        let dir = tmp();
        let file = dir.join("agent.toml");
        let err = parse(&file, &sample("").replace("127.0.0.1:7443", "nowhere")).unwrap_err();
        assert_eq!(err.0[0].key, "agent.listen");
        assert_eq!(err.0[0].line, Some(3));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn git(url: &str) -> GitSource {
        GitSource {
            url: url.into(),
            timeout_secs: 300,
            bin_dir: None,
        }
    }

    #[test]
    fn git_urls_are_redacted() {
        assert_eq!(
            redact_url("https://deploy:s3cr%40t@git.example.com/shop.git"),
            "https://***@git.example.com/shop.git"
        );
        assert_eq!(
            redact_url("https://ghp_TOKEN@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(redact_url("ssh://git@host/x.git"), "ssh://git@host/x.git");
        assert_eq!(
            redact_url("ssh://git:pw@host/x.git"),
            "ssh://git:***@host/x.git"
        );
        for plain in [
            "/srv/git/shop.git",
            "git@github.com:o/r.git",
            "https://h/a@b",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
        let g = git("https://deploy:s3cr%40t@git.example.com/shop.git");
        assert!(!format!("{g:?}").contains("s3cr"), "{g:?}");
        let (url, creds) = g.fetch_target();
        assert_eq!(url, "https://git.example.com/shop.git");
        let creds = creds.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("deploy", "s3cr@t")
        );
        assert!(!format!("{creds:?}").contains("s3cr"));
        let scrubbed = g.scrub(
            "fatal: https://deploy:s3cr%40t@git.example.com/shop.git: s3cr@t rejected for deploy:s3cr%40t",
        );
        assert!(!scrubbed.contains("s3cr"), "{scrubbed}");
        assert!(
            scrubbed.contains("https://***@git.example.com/shop.git"),
            "{scrubbed}"
        );
        assert_eq!(
            git("/srv/g.git").fetch_target(),
            ("/srv/g.git".into(), None)
        );
    }

    #[test]
    fn git_urls_are_checked() {
        for good in [
            "/srv/git/shop.git",
            "file:///srv/git/shop.git",
            "https://git.example.com/shop.git",
            "https://oauth2:tok%2Fen@gitlab.example.com/shop.git",
            "http://mirror.lan/shop.git",
            "ssh://git@host:2222/shop.git",
            "git@github.com:acme/shop.git",
        ] {
            assert!(
                check_git_url(good).is_ok(),
                "{good}: {:?}",
                check_git_url(good)
            );
        }
        for (bad, says) in [
            ("", "set the repository"),
            ("-uhttps://x", "starts with '-'"),
            ("repos/shop.git", "relative path"),
            ("shop.git", "relative path"),
            ("ext::sh -c touch% /tmp/x", "remote-helper"),
            ("file://srv/x", "absolute path"),
            ("ftp://host/x", "unsupported scheme"),
            ("http://u:secret@mirror/x", "in clear"),
            ("ssh://git:secret@host/x", "password"),
            ("https://u:bad%zz@host/x", "credentials contain"),
            ("https:///x", "no host"),
            ("/srv/a\nb", "control character"),
        ] {
            let e = check_git_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn git_section_errors_name_the_key() {
        let dir = tmp();
        let file = dir.join("agent.toml");
        let err = parse(
            &file,
            &sample("\n[apps.shop.git]\nurl = \"shop.git\"\ntimeout_secs = 0\nbin_dir = \"/nonexistent-golive-bin\"\n"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("agent.toml:21: key `apps.shop.git.url`"),
            "{text}"
        );
        assert!(text.contains("key `apps.shop.git.timeout_secs`"), "{text}");
        assert!(
            text.contains("key `apps.shop.git`") && text.contains("need `git`"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
