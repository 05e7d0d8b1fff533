//! `[[apps.APP.probes]]`: the health probes an app declares (SPEC §6), one
//! struct per kind, and their validation.
//!
//! Every kind carries `name`, `severity` (default `critical`), `tags`,
//! `timeout_ms` (default 5000) and `before_first_release` (default by kind). The agent runs them (`golive_agent::probe`);
//! a controller can only name them, by app and tag. A new kind is one more
//! variant here, one struct, one arm in [`validate_probes`] and one family
//! function in the agent.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{AppConfig, find_tool, is_plain_relative};
use crate::protocol::Severity;

/// A health probe, tagged by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProbeConfig {
    /// `http://` or `https://`: status, body, JSON, headers, latency.
    Http(HttpProbe),
    /// A TCP connection can be opened.
    Tcp(TcpProbe),
    /// Days left on the certificate a TLS server presents.
    Tls(TlsProbe),
    /// A name resolves, to the expected addresses.
    Dns(DnsProbe),
    /// A query on a declared database returns the expected value.
    Sql(SqlProbe),
    /// A declared program exits as expected.
    Command(CommandProbe),
    /// Free space on a filesystem.
    Disk(DiskProbe),
    /// Available memory.
    Memory(MemoryProbe),
    /// Load average.
    Load(LoadProbe),
    /// CPU busy share over a short sample.
    Cpu(CpuProbe),
    /// A process is running.
    Process(ProcessProbe),
    /// A file exists (and is recent enough: a cron heartbeat).
    File(FileProbe),
    /// 5xx share and p95 latency over a window of a tailed access log.
    AccessLog(AccessLogProbe),
}

/// What a probe does while its app has nothing live: before the first
/// release, `ROOT/current` does not exist, and a probe of the app itself
/// (its pages, its commands, its log, its processes, its tables) can only
/// fail (issue 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BeforeFirstRelease {
    /// Not run; reported as not applicable ("n/a"), which never blocks.
    Skip,
    /// Run as at any other time: the probe looks at the host or at a service
    /// the app needs, which exists before the app does.
    Run,
}

/// `kind = "http"`: one GET (plus redirects when followed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub name: String,
    /// `http://HOST[:PORT]/PATH` or `https://...`.
    pub url: String,
    #[serde(default = "default_statuses")]
    pub expect_status: Vec<u16>,
    /// Text the body (its first MiB) must contain.
    pub body_contains: Option<String>,
    /// JSON pointer → expected value (string, number or boolean), e.g.
    /// `json = { "/status" = "ok" }` (seed 002's health check).
    #[serde(default)]
    pub json: BTreeMap<String, toml::Value>,
    /// Response headers that must be present (seed 000: CSP, HSTS,
    /// X-Frame-Options).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers that must be present and contain a text (ASCII
    /// case-insensitive), e.g. `{ "Strict-Transport-Security" = "max-age=" }`.
    #[serde(default)]
    pub header_contains: BTreeMap<String, String>,
    /// Slower answers fail (the whole exchange, redirects included).
    pub max_latency_ms: Option<u64>,
    /// Follow 301/302/303/307/308, at most `max_redirects` hops.
    #[serde(default)]
    pub follow_redirects: bool,
    #[serde(default = "default_max_redirects")]
    pub max_redirects: u32,
    /// Verify the server's certificate (https). Off: any certificate is
    /// accepted, as `curl -k` does.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// PEM file of the CA(s) to trust instead of the system roots (a private CA).
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "tcp"`: a connection to `address` opens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    pub name: String,
    /// `HOST:PORT` (`[::1]:5432` for IPv6).
    pub address: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "tls"`: the certificate served at `address` has at least
/// `min_days` left. The chain is read even when it is not trusted: the probe
/// measures expiry, not trust (the http probe checks trust).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsProbe {
    pub name: String,
    /// `HOST:PORT`.
    pub address: String,
    /// Name sent as SNI; default: the host of `address` (no SNI for an IP).
    pub server_name: Option<String>,
    /// Fewer days left fail (seed 001 wants more than 30).
    #[serde(default = "default_min_days")]
    pub min_days: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "dns"`: `host` resolves (system resolver), and every address it
/// resolves to is one of `expect` (when given).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsProbe {
    pub name: String,
    pub host: String,
    /// IP addresses; empty: any answer passes.
    #[serde(default)]
    pub expect: Vec<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "sql"`: `query` on a database the app declares, in a read-only
/// session; the first column of the first row is compared with `expect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlProbe {
    pub name: String,
    /// Name of an `[[apps.APP.databases]]` entry.
    pub database: String,
    pub query: String,
    /// Expected value as text (`"1"`, `"ok"`); absent: the query must run.
    pub expect: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "command"`: a program with arguments (no shell unless written
/// out), run like the app's hooks, killed with its process group at the
/// timeout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandProbe {
    pub name: String,
    pub cmd: Vec<String>,
    /// Absolute, or relative to `ROOT/current` (default: `ROOT/current`, or
    /// ROOT while nothing is deployed).
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run as this user (only when the agent runs as root); default: `[apps.APP.run] user`.
    pub user: Option<String>,
    #[serde(default)]
    pub expect_exit: i32,
    /// Text the output (stdout and stderr, its last 64 KiB) must contain.
    pub output_contains: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "disk"`: free space (for unprivileged users) on the filesystem
/// holding `path`. At least one minimum.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskProbe {
    pub name: String,
    pub path: PathBuf,
    pub min_free_percent: Option<f64>,
    pub min_free_bytes: Option<u64>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "memory"`: `MemAvailable` from `/proc/meminfo`. At least one minimum.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryProbe {
    pub name: String,
    pub min_available_percent: Option<f64>,
    pub min_available_bytes: Option<u64>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "load"`: load averages from `/proc/loadavg`. At least one maximum.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadProbe {
    pub name: String,
    pub max_load1: Option<f64>,
    pub max_load5: Option<f64>,
    pub max_load15: Option<f64>,
    /// Divide the load by the number of CPUs before comparing.
    #[serde(default)]
    pub per_cpu: bool,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "cpu"`: share of CPU time not idle (all CPUs) between two reads
/// of `/proc/stat`, `sample_ms` apart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuProbe {
    pub name: String,
    pub max_percent: f64,
    #[serde(default = "default_sample_ms")]
    pub sample_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "process"`: at least `min_count` processes named `process`
/// (the kernel's name, `/proc/PID/comm`, or the base name of `argv[0]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessProbe {
    pub name: String,
    pub process: String,
    #[serde(default = "default_min_count")]
    pub min_count: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "file"`: `path` exists; with `max_age_secs`, it was modified at
/// most that long ago (seed 000: "cron more than 3h without running", as a
/// heartbeat file the cron job touches).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProbe {
    pub name: String,
    pub path: PathBuf,
    pub max_age_secs: Option<u64>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `kind = "access-log"`: the share of 5xx answers and the p95 latency over
/// the last `window_secs`, from an nginx or Apache access log the agent
/// tails (rotation handled). `format` is "combined" (default), "common", or
/// the server's own format string (nginx `log_format`, Apache `LogFormat`);
/// the p95 needs a latency field in it (`$request_time`, `%D`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogProbe {
    pub name: String,
    pub path: PathBuf,
    #[serde(default = "default_log_format")]
    pub format: String,
    #[serde(default = "default_log_window")]
    pub window_secs: u64,
    /// More 5xx answers than this share (percent) fail.
    pub max_error_rate_percent: Option<f64>,
    /// A slower p95 (milliseconds) fails.
    pub max_p95_ms: Option<u64>,
    /// With fewer requests in the window the probe passes without judging
    /// (a quiet site at 6 a.m. says nothing about its error rate).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// While the app has nothing live; default by kind
    /// ([`ProbeConfig::before_first_release`]).
    pub before_first_release: Option<BeforeFirstRelease>,
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_log_format() -> String {
    "combined".into()
}
fn default_log_window() -> u64 {
    300
}
fn default_min_requests() -> u64 {
    20
}
fn default_statuses() -> Vec<u16> {
    vec![200]
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_severity() -> Severity {
    Severity::Critical
}
fn default_max_redirects() -> u32 {
    5
}
fn default_true() -> bool {
    true
}
fn default_min_days() -> u32 {
    30
}
fn default_sample_ms() -> u64 {
    500
}
fn default_min_count() -> u32 {
    1
}

/// The longest a probe may be given: a probe run waits for its slowest probe.
pub const MAX_PROBE_TIMEOUT_MS: u64 = 300_000;
/// The most redirects an http probe may follow.
pub const MAX_REDIRECTS: u32 = 20;

/// Runs `$e` with `$p` bound to the kind's struct, whatever the kind.
macro_rules! each_kind {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            ProbeConfig::Http($p) => $e,
            ProbeConfig::Tcp($p) => $e,
            ProbeConfig::Tls($p) => $e,
            ProbeConfig::Dns($p) => $e,
            ProbeConfig::Sql($p) => $e,
            ProbeConfig::Command($p) => $e,
            ProbeConfig::Disk($p) => $e,
            ProbeConfig::Memory($p) => $e,
            ProbeConfig::Load($p) => $e,
            ProbeConfig::Cpu($p) => $e,
            ProbeConfig::Process($p) => $e,
            ProbeConfig::File($p) => $e,
            ProbeConfig::AccessLog($p) => $e,
        }
    };
}

impl ProbeConfig {
    pub fn name(&self) -> &str {
        each_kind!(self, p => &p.name)
    }

    /// The `kind` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeConfig::Http(_) => "http",
            ProbeConfig::Tcp(_) => "tcp",
            ProbeConfig::Tls(_) => "tls",
            ProbeConfig::Dns(_) => "dns",
            ProbeConfig::Sql(_) => "sql",
            ProbeConfig::Command(_) => "command",
            ProbeConfig::Disk(_) => "disk",
            ProbeConfig::Memory(_) => "memory",
            ProbeConfig::Load(_) => "load",
            ProbeConfig::Cpu(_) => "cpu",
            ProbeConfig::Process(_) => "process",
            ProbeConfig::File(_) => "file",
            ProbeConfig::AccessLog(_) => "access-log",
        }
    }

    pub fn severity(&self) -> Severity {
        each_kind!(self, p => p.severity)
    }

    pub fn tags(&self) -> &[String] {
        each_kind!(self, p => &p.tags)
    }

    pub fn timeout_ms(&self) -> u64 {
        each_kind!(self, p => p.timeout_ms)
    }

    /// The probe's `before_first_release`, or its kind's default: kinds
    /// that look at the host or at a service beside the app (disk, memory,
    /// load, cpu, dns, tls, tcp) run; kinds that look at the app itself
    /// (http, command, sql, file, process, access-log) are skipped.
    pub fn before_first_release(&self) -> BeforeFirstRelease {
        let set = each_kind!(self, p => p.before_first_release);
        set.unwrap_or(match self {
            ProbeConfig::Disk(_)
            | ProbeConfig::Memory(_)
            | ProbeConfig::Load(_)
            | ProbeConfig::Cpu(_)
            | ProbeConfig::Dns(_)
            | ProbeConfig::Tls(_)
            | ProbeConfig::Tcp(_) => BeforeFirstRelease::Run,
            ProbeConfig::Http(_)
            | ProbeConfig::Command(_)
            | ProbeConfig::Sql(_)
            | ProbeConfig::File(_)
            | ProbeConfig::Process(_)
            | ProbeConfig::AccessLog(_) => BeforeFirstRelease::Skip,
        })
    }
}

/// The error of reading `text` (a probe table without its `kind`) as the
/// struct `kind` selects. serde reads a tagged table whole before it knows
/// the struct, and then reports a wrong type at the table's header; read this
/// way, the error points at the key (issue 11). `None`: no such kind, or no
/// error there.
pub(super) fn variant_error(kind: &str, text: &str) -> Option<toml::de::Error> {
    fn error<T: serde::de::DeserializeOwned>(text: &str) -> Option<toml::de::Error> {
        toml::from_str::<T>(text).err()
    }
    match kind {
        "http" => error::<HttpProbe>(text),
        "tcp" => error::<TcpProbe>(text),
        "tls" => error::<TlsProbe>(text),
        "dns" => error::<DnsProbe>(text),
        "sql" => error::<SqlProbe>(text),
        "command" => error::<CommandProbe>(text),
        "disk" => error::<DiskProbe>(text),
        "memory" => error::<MemoryProbe>(text),
        "load" => error::<LoadProbe>(text),
        "cpu" => error::<CpuProbe>(text),
        "process" => error::<ProcessProbe>(text),
        "file" => error::<FileProbe>(text),
        "access-log" => error::<AccessLogProbe>(text),
        _ => None,
    }
}

/// A parsed probe URL: what the agent connects to and asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUrl {
    pub https: bool,
    /// Name or IP, without brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`; no fragment.
    pub path: String,
}

impl ProbeUrl {
    /// Parses `http://HOST[:PORT][/PATH][?QUERY]` (or `https://`). User
    /// credentials in the URL are refused: they would show in reports.
    pub fn parse(url: &str) -> Result<ProbeUrl, String> {
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &url[8..])
        } else if lower.starts_with("http://") {
            (false, &url[7..])
        } else {
            return Err(format!(
                "{url:?} is not an http:// or https:// URL; write e.g. \"https://shop.example.com/health\""
            ));
        };
        if let Some(bad) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{url:?} contains {bad:?}; percent-encode it (e.g. %20 for a space)"
            ));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err(format!(
                "{url:?} carries user credentials; they would appear in reports and logs. \
                 Probe a health URL that needs no credentials"
            ));
        }
        let (host, port) = split_host_port(authority, if https { 443 } else { 80 })
            .map_err(|e| format!("{url:?}: {e}"))?;
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(ProbeUrl {
            https,
            host,
            port,
            path,
        })
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.https { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The target of a redirect's `Location`, relative to this URL.
    pub fn join(&self, location: &str) -> Result<ProbeUrl, String> {
        let lower = location.get(..8).unwrap_or(location).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return ProbeUrl::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            let scheme = if self.https { "https" } else { "http" };
            return ProbeUrl::parse(&format!("{scheme}://{rest}"));
        }
        if lower.contains("://") {
            return Err(format!("redirect to {location:?}, which is not http(s)"));
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let dir = self.path.split('?').next().unwrap_or("/");
            let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        ProbeUrl::parse(&format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.host_header(),
            path
        ))
    }
}

impl std::fmt::Display for ProbeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.path)
    }
}

/// `HOST:PORT` (or `[V6]:PORT`) as (host without brackets, port).
pub fn parse_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = split_host_port(address, 0)?;
    if port == 0 {
        return Err(format!(
            "{address:?} has no port; write HOST:PORT, e.g. \"db.internal:5432\" or \"[::1]:443\""
        ));
    }
    Ok((host, port))
}

/// Splits `host[:port]`; `default` when there is no port (0 = none).
fn split_host_port(authority: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{authority:?}: an IPv6 address needs a closing `]`"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{v6:?} is not an IPv6 address"));
        }
        match after {
            "" => (v6, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None => return Err(format!("{authority:?}: expected `:PORT` after `]`")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "{authority:?}: write IPv6 addresses in brackets, e.g. \"[::1]:443\""
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{authority:?} has no host"));
    }
    if !host.contains(':') && !valid_host(host) {
        return Err(format!("{host:?} is not a valid host name or IP address"));
    }
    let port = match port {
        None => default,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{p:?} is not a port number (1-65535)")),
        },
    };
    Ok((host.to_string(), port))
}

/// Letters, digits, `-`, `_` and dots, in labels of at most 63 bytes.
fn valid_host(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An HTTP header name (RFC 9110 token).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A readable file with a PEM certificate block. (The agent parses it:
/// `golive-agent check-config` and every https probe run; decoding PEM here
/// would add a second base64 decoder to the agent.)
fn check_pem_certs(path: &Path) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !text.windows(marker.len()).any(|w| w == marker) {
        return Err(format!(
            "{} contains no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)",
            path.display()
        ));
    }
    Ok(())
}

/// Whether a program can be found: absolute paths must be executable files;
/// bare names are looked up on PATH. A relative path with a `/` is taken
/// inside the release at run time and cannot be checked here.
fn check_program(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(program);
    if path.is_absolute() {
        return match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(m) if m.is_file() => Err(format!(
                "{program} is not executable; run `chmod +x {program}`"
            )),
            Ok(_) => Err(format!("{program} is not a file")),
            Err(e) => Err(format!("{program}: {e}")),
        };
    }
    if program.contains('/') || find_tool(&[program], None).is_some() {
        return Ok(());
    }
    Err(format!(
        "program {program:?} is not on PATH; install it or give its absolute path"
    ))
}

/// Semantic checks of `[[apps.APP.probes]]`; `bad(dotted key, message)`.
pub(super) fn validate_probes(
    app_name: &str,
    app: &AppConfig,
    bad: &mut dyn FnMut(String, String),
) {
    let mut seen = HashSet::new();
    for (i, probe) in app.probes.iter().enumerate() {
        let key = |k: &str| format!("apps.{app_name}.probes.{i}.{k}");
        let name = probe.name();
        if name.is_empty()
            || name.len() > 64
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            bad(
                key("name"),
                format!(
                    "{name:?}: a probe name is 1 to 64 characters without spaces, e.g. \"home-page\""
                ),
            );
        }
        if !seen.insert(name.to_string()) {
            bad(key("name"), format!("duplicate probe name {name:?}"));
        }
        for (j, tag) in probe.tags().iter().enumerate() {
            if tag.is_empty()
                || tag
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ',')
            {
                bad(
                    format!("apps.{app_name}.probes.{i}.tags.{j}"),
                    format!(
                        "{tag:?}: a tag is a word without spaces or commas, e.g. \"smoke\" or \"vertical:shop\""
                    ),
                );
            }
        }
        let timeout = probe.timeout_ms();
        if timeout == 0 || timeout > MAX_PROBE_TIMEOUT_MS {
            bad(
                key("timeout_ms"),
                format!("must be between 1 and {MAX_PROBE_TIMEOUT_MS} (milliseconds)"),
            );
        }
        let mut bad_key = |k: &str, msg: String| bad(key(k), msg);
        match probe {
            ProbeConfig::Http(p) => validate_http(p, &mut bad_key),
            ProbeConfig::Tcp(p) => {
                if let Err(e) = parse_host_port(&p.address) {
                    bad_key("address", e);
                }
            }
            ProbeConfig::Tls(p) => {
                if let Err(e) = parse_host_port(&p.address) {
                    bad_key("address", e);
                }
                if let Some(sni) = &p.server_name
                    && sni.parse::<IpAddr>().is_err()
                    && !valid_host(sni)
                {
                    bad_key(
                        "server_name",
                        format!("{sni:?} is not a valid DNS name or IP address"),
                    );
                }
            }
            ProbeConfig::Dns(p) => {
                if !valid_host(&p.host) {
                    bad_key("host", format!("{:?} is not a valid host name", p.host));
                }
                for (j, a) in p.expect.iter().enumerate() {
                    if a.parse::<IpAddr>().is_err() {
                        bad_key(
                            &format!("expect.{j}"),
                            format!(
                                "{a:?} is not an IP address, e.g. \"203.0.113.7\" or \"2001:db8::1\""
                            ),
                        );
                    }
                }
            }
            ProbeConfig::Sql(p) => {
                if !app.databases.iter().any(|d| d.name() == p.database) {
                    let declared: Vec<&str> = app.databases.iter().map(|d| d.name()).collect();
                    bad_key(
                        "database",
                        format!(
                            "no database {:?} is declared for this app ([[apps.{app_name}.databases]]); declared: {}",
                            p.database,
                            if declared.is_empty() {
                                "(none)".to_string()
                            } else {
                                declared.join(", ")
                            }
                        ),
                    );
                }
                if p.query.trim().is_empty() {
                    bad_key("query", "write the query, e.g. \"SELECT 1\"".into());
                }
            }
            ProbeConfig::Command(p) => {
                match p.cmd.first() {
                    None => bad_key(
                        "cmd",
                        "list the program and its arguments, e.g. [\"drush\", \"status\"]".into(),
                    ),
                    Some(program) if program.is_empty() => {
                        bad_key("cmd", "the program name is empty".into())
                    }
                    Some(program) => {
                        if let Err(e) = check_program(program) {
                            bad_key("cmd", e);
                        }
                    }
                }
                if let Some(cwd) = &p.cwd
                    && cwd.is_relative()
                    && !is_plain_relative(cwd)
                {
                    bad_key(
                        "cwd",
                        "relative paths must stay inside the release (no `..`)".into(),
                    );
                }
                if !(0..=255).contains(&p.expect_exit) {
                    bad_key("expect_exit", "an exit code is between 0 and 255".into());
                }
            }
            ProbeConfig::Disk(p) => {
                if !p.path.is_absolute() {
                    bad_key("path", "must be an absolute path".into());
                }
                check_minimums(
                    p.min_free_percent,
                    p.min_free_bytes,
                    ("min_free_percent", "min_free_bytes"),
                    &mut bad_key,
                );
            }
            ProbeConfig::Memory(p) => check_minimums(
                p.min_available_percent,
                p.min_available_bytes,
                ("min_available_percent", "min_available_bytes"),
                &mut bad_key,
            ),
            ProbeConfig::Load(p) => {
                let set = [
                    ("max_load1", p.max_load1),
                    ("max_load5", p.max_load5),
                    ("max_load15", p.max_load15),
                ];
                if set.iter().all(|(_, v)| v.is_none()) {
                    bad_key(
                        "max_load1",
                        "set at least one of max_load1, max_load5, max_load15".into(),
                    );
                }
                for (k, v) in set {
                    if let Some(v) = v
                        && !(v.is_finite() && v > 0.0)
                    {
                        bad_key(k, "must be a number greater than 0".into());
                    }
                }
            }
            ProbeConfig::Cpu(p) => {
                if !(p.max_percent > 0.0 && p.max_percent <= 100.0) {
                    bad_key("max_percent", "must be above 0 and at most 100".into());
                }
                if p.sample_ms == 0 || p.sample_ms >= p.timeout_ms {
                    bad_key(
                        "sample_ms",
                        format!(
                            "must be greater than 0 and below timeout_ms ({})",
                            p.timeout_ms
                        ),
                    );
                }
            }
            ProbeConfig::Process(p) => {
                if p.process.is_empty() || p.process.contains('/') {
                    bad_key(
                        "process",
                        "the process name as `ps -e` shows it, e.g. \"nginx\" or \"php-fpm8.2\""
                            .into(),
                    );
                }
                if p.min_count == 0 {
                    bad_key("min_count", "must be at least 1".into());
                }
            }
            ProbeConfig::File(p) => {
                if !p.path.is_absolute() {
                    bad_key("path", "must be an absolute path".into());
                }
                if p.max_age_secs == Some(0) {
                    bad_key("max_age_secs", "must be greater than 0".into());
                }
            }
            ProbeConfig::AccessLog(p) => {
                if !p.path.is_absolute() {
                    bad_key(
                        "path",
                        "must be an absolute path, e.g. \"/var/log/nginx/access.log\"".into(),
                    );
                }
                if !(10..=3600).contains(&p.window_secs) {
                    bad_key("window_secs", "use 10 to 3600 seconds".into());
                }
                if p.max_error_rate_percent.is_none() && p.max_p95_ms.is_none() {
                    bad_key(
                        "max_error_rate_percent",
                        "set max_error_rate_percent and/or max_p95_ms: the probe needs a limit"
                            .into(),
                    );
                }
                if let Some(r) = p.max_error_rate_percent
                    && !(0.0..=100.0).contains(&r)
                {
                    bad_key("max_error_rate_percent", "use 0 to 100 (percent)".into());
                }
                if p.max_p95_ms == Some(0) {
                    bad_key("max_p95_ms", "must be greater than 0".into());
                }
            }
        }
    }
}

fn validate_http(p: &HttpProbe, bad: &mut dyn FnMut(&str, String)) {
    let url = match ProbeUrl::parse(&p.url) {
        Ok(u) => Some(u),
        Err(e) => {
            bad("url", e);
            None
        }
    };
    if p.expect_status.is_empty() || p.expect_status.iter().any(|s| !(100..=599).contains(s)) {
        bad(
            "expect_status",
            "list one or more HTTP statuses between 100 and 599".into(),
        );
    }
    for (pointer, value) in &p.json {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            bad(
                &format!("json.{pointer}"),
                format!("{pointer:?} is not a JSON pointer; write e.g. \"/status\" or \"/db/ok\""),
            );
        }
        if !matches!(
            value,
            toml::Value::String(_)
                | toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
        ) {
            bad(
                &format!("json.{pointer}"),
                "expect a string, a number or a boolean".into(),
            );
        }
    }
    for (j, h) in p.headers.iter().enumerate() {
        if !valid_header_name(h) {
            bad(
                &format!("headers.{j}"),
                format!("{h:?} is not an HTTP header name, e.g. \"Content-Security-Policy\""),
            );
        }
    }
    for h in p.header_contains.keys() {
        if !valid_header_name(h) {
            bad(
                &format!("header_contains.{h}"),
                format!("{h:?} is not an HTTP header name, e.g. \"Strict-Transport-Security\""),
            );
        }
    }
    if let Some(max) = p.max_latency_ms
        && (max == 0 || max >= p.timeout_ms)
    {
        bad(
            "max_latency_ms",
            format!(
                "must be greater than 0 and below timeout_ms ({}), or a slow answer would be a timeout instead",
                p.timeout_ms
            ),
        );
    }
    if p.follow_redirects && !(1..=MAX_REDIRECTS).contains(&p.max_redirects) {
        bad(
            "max_redirects",
            format!("must be between 1 and {MAX_REDIRECTS}"),
        );
    }
    if let Some(ca) = &p.ca_file {
        if url.as_ref().is_some_and(|u| !u.https) {
            bad("ca_file", "applies to https:// URLs only".into());
        }
        if !p.tls_verify {
            bad(
                "ca_file",
                "tls_verify = false accepts any certificate; remove one of the two".into(),
            );
        }
        if !ca.is_absolute() {
            bad("ca_file", "must be an absolute path".into());
        } else if let Err(e) = check_pem_certs(ca) {
            bad("ca_file", e);
        }
    }
}

/// A percent and/or byte minimum: at least one, each in range.
fn check_minimums(
    percent: Option<f64>,
    bytes: Option<u64>,
    (pkey, bkey): (&str, &str),
    bad: &mut dyn FnMut(&str, String),
) {
    if percent.is_none() && bytes.is_none() {
        bad(pkey, format!("set {pkey}, {bkey}, or both"));
    }
    if let Some(p) = percent
        && !(p > 0.0 && p < 100.0)
    {
        bad(pkey, "must be above 0 and below 100".into());
    }
    if bytes == Some(0) {
        bad(bkey, "must be greater than 0".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_refuse_what_cannot_be_probed() {
        let u = ProbeUrl::parse("https://shop.example.com/health?full=1#x").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "shop.example.com", 443, "/health?full=1")
        );
        assert_eq!(u.host_header(), "shop.example.com");
        let u = ProbeUrl::parse("HTTP://[::1]:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(u.host_header(), "[::1]:8080");
        assert_eq!(u.to_string(), "http://[::1]:8080/");
        assert_eq!(ProbeUrl::parse("http://h?x").unwrap().path, "/?x");
        for bad in [
            "ftp://x/",
            "shop.example.com/health",
            "http://user:pw@h/",
            "http://h:0/",
            "http://h:99999/",
            "http://h b/",
            "http://::1/",
            "http:///x",
            "http://bad..name/",
        ] {
            assert!(ProbeUrl::parse(bad).is_err(), "{bad} should be refused");
        }
        let e = ProbeUrl::parse("http://u:secret@h/").unwrap_err();
        assert!(e.contains("credentials"), "{e}");
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        let base = ProbeUrl::parse("http://127.0.0.1:8080/a/b?q=1").unwrap();
        let j = |l: &str| base.join(l).unwrap().to_string();
        assert_eq!(j("/ok"), "http://127.0.0.1:8080/ok");
        assert_eq!(j("c"), "http://127.0.0.1:8080/a/c");
        assert_eq!(j("https://x.test/z"), "https://x.test/z");
        assert_eq!(j("//y.test/p"), "http://y.test/p");
        assert!(base.join("ftp://x/").is_err());
    }

    /// An agent config in a temp dir (with stand-in TLS files) whose app
    /// `shop` declares a SQLite database `main` and then `probes`.
    fn parse_with(
        probes: &str,
    ) -> (
        tempfile_dir::Dir,
        String,
        Result<super::super::AgentConfig, super::super::ConfigErrors>,
    ) {
        let dir = tempfile_dir::Dir::new();
        for f in ["ca.crt", "agent.crt", "agent.key"] {
            std::fs::write(dir.0.join(f), "x").unwrap();
        }
        let src = format!(
            "[agent]\nname = \"web1\"\nlisten = \"127.0.0.1:7443\"\nstate_dir = \"state\"\n\n\
             [tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n\n\
             [apps.shop]\nroot = \"/srv/shop\"\n\n\
             [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = \"/srv/shop/app.db\"\n\n\
             {probes}"
        );
        let result = super::super::parse(&dir.0.join("agent.toml"), &src);
        (dir, src, result)
    }

    #[test]
    fn every_kind_can_be_read_on_its_own() {
        // The kinds serde knows, from its own "expected one of" list.
        let err = toml::from_str::<ProbeConfig>("kind = \"?\"\nname = \"x\"").unwrap_err();
        let kinds: Vec<&str> = err
            .message()
            .split("expected one of ")
            .nth(1)
            .unwrap()
            .split(", ")
            .map(|k| k.trim().trim_matches('`'))
            .collect();
        assert_eq!(kinds.len(), 13, "{kinds:?}");
        for kind in kinds {
            let e = variant_error(kind, "name = 5\n").unwrap_or_else(|| panic!("{kind}"));
            assert!(e.message().contains("invalid type"), "{kind}: {e}");
            assert_eq!(e.span(), Some(7..8), "{kind}");
        }
    }

    /// A private temp directory removed on drop (shared has no tempfile dependency).
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static SEQ: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "golive-probe-config-{}-{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn every_kind_parses_with_its_defaults() {
        let (_dir, _src, cfg) = parse_with(
            r#"
[[apps.shop.probes]]
kind = "http"
name = "home"
url = "https://127.0.0.1:8443/health"
json = { "/status" = "ok", "/db/ok" = true }
headers = ["Content-Security-Policy"]
header_contains = { "Strict-Transport-Security" = "max-age=" }
max_latency_ms = 800
follow_redirects = true
tls_verify = false
tags = ["smoke", "vertical:shop"]

[[apps.shop.probes]]
kind = "tcp"
name = "db-port"
address = "[::1]:5432"

[[apps.shop.probes]]
kind = "tls"
name = "cert"
address = "shop.example.com:443"

[[apps.shop.probes]]
kind = "dns"
name = "dns"
host = "localhost"
expect = ["127.0.0.1", "::1"]

[[apps.shop.probes]]
kind = "sql"
name = "schema"
database = "main"
query = "SELECT version FROM migrations"
expect = "42"

[[apps.shop.probes]]
kind = "command"
name = "drush"
cmd = ["sh", "-c", "exit 0"]

[[apps.shop.probes]]
kind = "disk"
name = "disk"
path = "/"
min_free_percent = 15

[[apps.shop.probes]]
kind = "memory"
name = "memory"
min_available_bytes = 268435456

[[apps.shop.probes]]
kind = "load"
name = "load"
max_load5 = 4.0
per_cpu = true

[[apps.shop.probes]]
kind = "cpu"
name = "cpu"
max_percent = 90

[[apps.shop.probes]]
kind = "process"
name = "php"
process = "php-fpm8.2"

[[apps.shop.probes]]
kind = "file"
name = "cron"
path = "/srv/shop/cron.heartbeat"
max_age_secs = 10800
severity = "medium"
"#,
        );
        let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
        let probes = &cfg.apps["shop"].probes;
        let kinds: Vec<&str> = probes.iter().map(ProbeConfig::kind).collect();
        assert_eq!(
            kinds,
            [
                "http", "tcp", "tls", "dns", "sql", "command", "disk", "memory", "load", "cpu",
                "process", "file"
            ]
        );
        assert_eq!(probes[0].tags(), ["smoke", "vertical:shop"]);
        assert!(probes.iter().all(|p| p.timeout_ms() == 5000));
        assert_eq!(probes[11].severity(), Severity::Medium);
        assert_eq!(probes[1].severity(), Severity::Critical);
        match &probes[0] {
            ProbeConfig::Http(h) => {
                assert_eq!(h.expect_status, [200]);
                assert_eq!(h.max_redirects, 5);
                assert_eq!(h.json["/db/ok"], toml::Value::Boolean(true));
            }
            other => panic!("{other:?}"),
        }
        match &probes[2] {
            ProbeConfig::Tls(t) => assert_eq!(t.min_days, 30),
            other => panic!("{other:?}"),
        }
        match &probes[5] {
            ProbeConfig::Command(c) => assert_eq!(c.expect_exit, 0),
            other => panic!("{other:?}"),
        }
        match &probes[9] {
            ProbeConfig::Cpu(c) => assert_eq!(c.sample_ms, 500),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_probes_name_file_line_and_key() {
        // (probe body after `name = "p"`, dotted key under probes.0, the line
        // holding it, a fragment of the message)
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "kind = \"http\"\nurl = \"ftp://x/\"",
                "url",
                "url = ",
                "not an http:// or https:// URL",
            ),
            (
                "kind = \"http\"\nurl = \"http://u:pw@x/\"",
                "url",
                "url = ",
                "credentials",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nca_file = \"/etc/hosts\"",
                "ca_file",
                "ca_file",
                "https:// URLs only",
            ),
            (
                "kind = \"https\"\nurl = \"https://x/\"",
                "kind",
                "kind = ",
                "unknown variant `https`",
            ),
            (
                "kind = \"http\"\nurl = \"https://x/\"\nca_file = \"/nonexistent/ca.pem\"",
                "ca_file",
                "ca_file",
                "cannot read",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nmax_latency_ms = 5000",
                "max_latency_ms",
                "max_latency_ms",
                "below timeout_ms (5000)",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\njson = { status = \"ok\" }",
                "json.status",
                "json = ",
                "not a JSON pointer",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\njson = { \"/a\" = [1] }",
                "json./a",
                "json = ",
                "a string, a number or a boolean",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nheaders = [\"Bad Header\"]",
                "headers.0",
                "headers = ",
                "not an HTTP header name",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nexpect_statu = [200]",
                "expect_statu",
                "expect_statu",
                "unknown field",
            ),
            (
                "kind = \"tcp\"\naddress = \"db.internal\"",
                "address",
                "address = ",
                "no port",
            ),
            (
                "kind = \"tls\"\naddress = \"x:443\"\nserver_name = \"bad name\"",
                "server_name",
                "server_name",
                "not a valid DNS name",
            ),
            (
                "kind = \"dns\"\nhost = \"localhost\"\nexpect = [\"localhost\"]",
                "expect.0",
                "expect = ",
                "not an IP address",
            ),
            (
                "kind = \"sql\"\ndatabase = \"orders\"\nquery = \"SELECT 1\"",
                "database",
                "database = ",
                "no database \"orders\" is declared for this app ([[apps.shop.databases]]); declared: main",
            ),
            (
                "kind = \"sql\"\ndatabase = \"main\"\nquery = \" \"",
                "query",
                "query = ",
                "write the query",
            ),
            (
                "kind = \"command\"\ncmd = [\"no-such-program-golive\"]",
                "cmd",
                "cmd = ",
                "not on PATH",
            ),
            (
                "kind = \"command\"\ncmd = [\"/nonexistent/healthcheck\"]",
                "cmd",
                "cmd = ",
                "/nonexistent/healthcheck",
            ),
            (
                "kind = \"command\"\ncmd = []",
                "cmd",
                "cmd = ",
                "list the program",
            ),
            (
                "kind = \"command\"\ncmd = [\"true\"]\ncwd = \"../x\"",
                "cwd",
                "cwd = ",
                "inside the release",
            ),
            (
                "kind = \"command\"\ncmd = [\"true\"]\nexpect_exit = 300",
                "expect_exit",
                "expect_exit",
                "between 0 and 255",
            ),
            (
                "kind = \"disk\"\npath = \"/\"",
                "min_free_percent",
                "[[apps.shop.probes]]",
                "set min_free_percent, min_free_bytes, or both",
            ),
            (
                "kind = \"disk\"\npath = \"/\"\nmin_free_percent = 100",
                "min_free_percent",
                "min_free_percent",
                "below 100",
            ),
            (
                "kind = \"memory\"\nmin_available_bytes = 0",
                "min_available_bytes",
                "min_available_bytes",
                "greater than 0",
            ),
            (
                "kind = \"load\"",
                "max_load1",
                "[[apps.shop.probes]]",
                "at least one of max_load1",
            ),
            (
                "kind = \"load\"\nmax_load15 = -1.0",
                "max_load15",
                "max_load15",
                "greater than 0",
            ),
            (
                "kind = \"cpu\"\nmax_percent = 90\nsample_ms = 5000",
                "sample_ms",
                "sample_ms",
                "below timeout_ms",
            ),
            (
                "kind = \"cpu\"\nmax_percent = 0",
                "max_percent",
                "max_percent",
                "above 0",
            ),
            (
                "kind = \"process\"\nprocess = \"/usr/sbin/nginx\"",
                "process",
                "process = ",
                "as `ps -e` shows it",
            ),
            (
                "kind = \"file\"\npath = \"/x\"\nmax_age_secs = 0",
                "max_age_secs",
                "max_age_secs",
                "greater than 0",
            ),
            (
                "kind = \"file\"\npath = \"/x\"\ntimeout_ms = 0",
                "timeout_ms",
                "timeout_ms",
                "between 1 and 300000",
            ),
            (
                "kind = \"tcp\"\naddress = \"x:1\"\ntags = [\"a b\"]",
                "tags.0",
                "tags = ",
                "without spaces",
            ),
        ];
        for (body, key, line_text, fragment) in cases {
            let (dir, src, result) =
                parse_with(&format!("[[apps.shop.probes]]\nname = \"p\"\n{body}\n"));
            let err = match result {
                Ok(_) => panic!("accepted:\n{body}"),
                Err(e) => e,
            };
            let text = err.to_string();
            let first = src
                .lines()
                .position(|l| l == "[[apps.shop.probes]]")
                .expect("probe table");
            let line = src
                .lines()
                .enumerate()
                .skip(first)
                .find(|(_, l)| l.starts_with(line_text))
                .map(|(i, _)| i + 1)
                .unwrap_or_else(|| panic!("no line {line_text:?} in {src}"));
            let want = format!(
                "{}:{line}: key `apps.shop.probes.0.{key}`",
                dir.0.join("agent.toml").display()
            );
            assert!(
                text.contains(&want) && text.contains(fragment),
                "{body}\nwant {want} … {fragment}\ngot  {text}"
            );
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let (_dir, _src, result) = parse_with(
            "[[apps.shop.probes]]\nkind = \"tcp\"\nname = \"p\"\naddress = \"x:1\"\n\n\
             [[apps.shop.probes]]\nkind = \"tcp\"\nname = \"p\"\naddress = \"x:2\"\n",
        );
        let text = result.map(|_| ()).unwrap_err().to_string();
        assert!(
            text.contains("key `apps.shop.probes.1.name`: duplicate probe name \"p\""),
            "{text}"
        );
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("db.internal:5432").unwrap(),
            ("db.internal".to_string(), 5432)
        );
        assert_eq!(
            parse_host_port("[::1]:443").unwrap(),
            ("::1".to_string(), 443)
        );
        assert!(
            parse_host_port("db.internal")
                .unwrap_err()
                .contains("no port")
        );
        assert!(parse_host_port("::1:443").unwrap_err().contains("brackets"));
        assert!(parse_host_port(":80").is_err());
    }
}
