//! Issue 5: probe kinds. Each kind runs against a real target: a python
//! HTTP(S) server with controllable answers (status, headers, JSON,
//! redirects, a slow route) and a 5-day certificate from a private CA,
//! real sockets, real SQLite, PostgreSQL and MariaDB servers, real
//! processes, real files and the real `/proc`. Most tests call
//! `golive_agent::probe::run_app` directly; the last ones go end to end
//! through `golivectl deploy`, `RunProbes` over mTLS and
//! `golive-agent check-config`.
//!
//! Loopback addresses 127.0.0.170-179 belong to this module.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use golive_shared::config::{AgentConfig, AppConfig};
use golive_shared::protocol::{
    ProbeReport, ProbeResult, ProbeStatus, Request, Response, RunProbesRequest,
};
use golive_tests::db::{TestMariadb, TestPostgres, write_private};
use golive_tests::*;
use serde_json::Value;

/// Parses an agent config whose app `shop` (ROOT `dir/srv/shop`, with a
/// live release `r1`, so every probe runs) has `body` appended (probes,
/// databases); the TLS files are stand-ins, as nothing here serves.
fn shop(dir: &Path, body: &str) -> AppConfig {
    let app = shop_before_first_release(dir, body);
    std::fs::create_dir_all(app.root.join("releases/r1")).expect("release dir");
    if std::fs::symlink_metadata(app.root.join("current")).is_err() {
        std::os::unix::fs::symlink("releases/r1", app.root.join("current")).expect("current");
    }
    app
}

/// [`shop`] before its first release: ROOT exists, `current` does not.
fn shop_before_first_release(dir: &Path, body: &str) -> AppConfig {
    for f in ["ca.crt", "agent.crt", "agent.key"] {
        std::fs::write(dir.join(f), "x").expect("stand-in TLS file");
    }
    let root = dir.join("srv/shop");
    std::fs::create_dir_all(&root).expect("app root");
    let src = format!(
        "[agent]\nname = \"probe-test\"\nlisten = \"127.0.0.170:0\"\nstate_dir = \"state\"\n\n\
         [tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n\n\
         [apps.shop]\nroot = {root:?}\n\n{body}"
    );
    let cfg: AgentConfig = golive_shared::config::parse(&dir.join("agent.toml"), &src)
        .unwrap_or_else(|e| panic!("config refused:\n{e}\n---\n{src}"));
    cfg.apps["shop"].clone()
}

/// Runs the app's probes (those carrying one of `tags`, all when empty) on
/// the agent's kind of runtime: one thread plus the blocking pool.
fn probe(app: &AppConfig, tags: &[&str]) -> ProbeReport {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(golive_agent::probe::run_app("shop", app, &tags, Vec::new()))
}

fn result<'a>(report: &'a ProbeReport, name: &str) -> &'a ProbeResult {
    report
        .results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no result {name:?} in {report:#?}"))
}

/// Asserts the status of probe `name` and returns its value and message.
fn expect(report: &ProbeReport, name: &str, status: ProbeStatus) -> (String, String) {
    let r = result(report, name);
    assert_eq!(r.status, status, "probe {name}: {r:#?}");
    (r.value.clone().unwrap_or_default(), r.message.clone())
}

/// A python HTTP(S) server with fixed routes, killed on drop:
/// `/health` 200 JSON with security headers, `/degraded` 503 JSON, `/bare`
/// 200 HTML without security headers, `/redirect` → `/health`, `/loop` →
/// itself, `/slow` 200 after 0.6 s, anything else 404.
struct TestServer {
    ip: String,
    port: u16,
    child: Child,
}

const SERVER_PY: &str = r#"
import json, ssl, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECURITY = [
    ("Content-Security-Policy", "default-src 'self'"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    ("X-Frame-Options", "DENY"),
]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=(), ctype="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        p = self.path
        if p == "/health":
            self.answer(200, json.dumps({"status": "ok", "db": {"connected": True}, "version": 7}), SECURITY)
        elif p == "/degraded":
            self.answer(503, json.dumps({"status": "degraded"}))
        elif p == "/bare":
            self.answer(200, "<html>ok</html>", (), "text/html")
        elif p == "/redirect":
            self.answer(302, "", [("Location", "/health")])
        elif p == "/loop":
            self.answer(302, "", [("Location", "/loop")])
        elif p == "/slow":
            time.sleep(0.6)
            self.answer(200, json.dumps({"status": "ok"}))
        else:
            self.answer(404, "{}")

ip, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
server = ThreadingHTTPServer((ip, port), Handler)
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl TestServer {
    /// Plain HTTP, or HTTPS with `tls = (cert, key)`.
    fn start(dir: &Path, ip: &str, tls: Option<(&Path, &Path)>) -> TestServer {
        let script = dir.join("probe_server.py");
        std::fs::write(&script, SERVER_PY).expect("write server script");
        let port = free_port(ip);
        let (cert, key) = tls
            .map(|(c, k)| (s(c).to_string(), s(k).to_string()))
            .unwrap_or_default();
        let child = Command::new("python3")
            .arg(&script)
            .args([ip, &port.to_string(), &cert, &key])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3 probe server");
        let server = TestServer {
            ip: ip.into(),
            port,
            child,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "probe server did not listen on {ip}:{port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}:{}{path}", self.ip, self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on `ip` that nothing listens on (bound, then released).
fn closed_port(ip: &str) -> u16 {
    free_port(ip)
}

#[test]
fn issue5_http_probe_checks_status_body_json_headers_latency_redirects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start(dir.path(), "127.0.0.170", None);
    let u = |p: &str| srv.url("http", p);
    let closed = closed_port("127.0.0.170");
    let app = shop(
        dir.path(),
        &format!(
            r#"
[[apps.shop.probes]]
kind = "http"
name = "health"
url = "{health}"
body_contains = "ok"
json = {{ "/status" = "ok", "/db/connected" = true, "/version" = 7 }}
headers = ["Content-Security-Policy", "X-Frame-Options"]
header_contains = {{ "strict-transport-security" = "MAX-AGE=31536000" }}
max_latency_ms = 2000
tags = ["smoke"]

[[apps.shop.probes]]
kind = "http"
name = "degraded"
url = "{degraded}"
json = {{ "/status" = "ok" }}

[[apps.shop.probes]]
kind = "http"
name = "degraded-expected"
url = "{degraded}"
expect_status = [503]
json = {{ "/status" = "degraded" }}

[[apps.shop.probes]]
kind = "http"
name = "no-security-headers"
url = "{bare}"
headers = ["Content-Security-Policy", "Strict-Transport-Security", "X-Frame-Options"]
severity = "medium"

[[apps.shop.probes]]
kind = "http"
name = "slow"
url = "{slow}"
max_latency_ms = 200
timeout_ms = 3000

[[apps.shop.probes]]
kind = "http"
name = "slow-timeout"
url = "{slow}"
timeout_ms = 200

[[apps.shop.probes]]
kind = "http"
name = "redirect-followed"
url = "{redirect}"
follow_redirects = true
json = {{ "/status" = "ok" }}

[[apps.shop.probes]]
kind = "http"
name = "redirect-not-followed"
url = "{redirect}"

[[apps.shop.probes]]
kind = "http"
name = "redirect-loop"
url = "{looping}"
follow_redirects = true
max_redirects = 3

[[apps.shop.probes]]
kind = "http"
name = "missing"
url = "{missing}"

[[apps.shop.probes]]
kind = "http"
name = "refused"
url = "http://127.0.0.170:{closed}/health"
"#,
            health = u("/health"),
            degraded = u("/degraded"),
            bare = u("/bare"),
            slow = u("/slow"),
            redirect = u("/redirect"),
            looping = u("/loop"),
            missing = u("/nothing-here"),
        ),
    );
    let report = probe(&app, &[]);
    assert_eq!(report.results.len(), 11, "{report:#?}");
    // Config order, whatever order they finished in.
    assert_eq!(report.results[0].name, "health");
    assert_eq!(report.results[10].name, "refused");

    let (value, message) = expect(&report, "health", ProbeStatus::Pass);
    assert!(
        value.starts_with("status 200, ") && value.ends_with(" ms"),
        "{value}"
    );
    assert!(message.contains("answered 200"), "{message}");
    let health = result(&report, "health");
    assert_eq!(health.kind, "http");
    let threshold = health.threshold.clone().unwrap_or_default();
    assert!(
        threshold.contains("status in [200]")
            && threshold.contains("≤ 2000 ms")
            && threshold.contains("/status = \"ok\"")
            && threshold.contains("header X-Frame-Options"),
        "{threshold}"
    );

    let (value, message) = expect(&report, "degraded", ProbeStatus::Fail);
    assert!(value.starts_with("status 503"), "{value}");
    assert!(
        message.contains("answered 503, expected 200")
            && message.contains("/status is \"degraded\", expected \"ok\""),
        "{message}"
    );
    expect(&report, "degraded-expected", ProbeStatus::Pass);

    let (_, message) = expect(&report, "no-security-headers", ProbeStatus::Fail);
    for h in [
        "Content-Security-Policy",
        "Strict-Transport-Security",
        "X-Frame-Options",
    ] {
        assert!(
            message.contains(&format!("header {h} is missing")),
            "{message}"
        );
    }

    let (value, message) = expect(&report, "slow", ProbeStatus::Fail);
    assert!(value.starts_with("status 200"), "{value}");
    assert!(message.contains("more than 200 ms"), "{message}");
    let (value, message) = expect(&report, "slow-timeout", ProbeStatus::Error);
    assert!(value.is_empty(), "{value}");
    assert_eq!(message, "no answer within 200 ms");

    let (value, message) = expect(&report, "redirect-followed", ProbeStatus::Pass);
    assert!(value.ends_with("1 redirect"), "{value}");
    assert!(
        message.contains(&format!("(→ {})", u("/health"))),
        "{message}"
    );
    let (value, message) = expect(&report, "redirect-not-followed", ProbeStatus::Fail);
    assert!(value.starts_with("status 302"), "{value}");
    assert!(message.contains("answered 302, expected 200"), "{message}");
    let (_, message) = expect(&report, "redirect-loop", ProbeStatus::Fail);
    assert!(
        message.contains("still redirected after 3 hops"),
        "{message}"
    );
    let (value, _) = expect(&report, "missing", ProbeStatus::Fail);
    assert!(value.starts_with("status 404"), "{value}");
    let (_, message) = expect(&report, "refused", ProbeStatus::Error);
    assert!(message.contains("cannot connect"), "{message}");

    // Tags select.
    let smoke = probe(&app, &["smoke"]);
    let names: Vec<&str> = smoke.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["health"]);
    assert!(probe(&app, &["no-such-tag"]).results.is_empty());
}

#[test]
fn issue5_https_trusts_ca_file_or_nothing_and_tls_probe_counts_days_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = "127.0.0.171";
    // A private CA and a leaf that expires in 5 days.
    let pki = dir.path().join("pki");
    golivectl::pki::ca_init(&pki, 365).expect("CA");
    golivectl::pki::issue_agent(&pki, "site", &[ip.to_string(), "localhost".to_string()], 5)
        .expect("leaf");
    let ca = pki.join("ca.crt");
    let (cert, key) = (pki.join("agents/site.crt"), pki.join("agents/site.key"));
    let srv = TestServer::start(dir.path(), ip, Some((&cert, &key)));
    let health = srv.url("https", "/health");
    let address = format!("{ip}:{}", srv.port);
    let closed = closed_port(ip);
    let app = shop(
        dir.path(),
        &format!(
            r#"
[[apps.shop.probes]]
kind = "http"
name = "private-ca"
url = "{health}"
ca_file = {ca:?}
json = {{ "/status" = "ok" }}
headers = ["Strict-Transport-Security"]

[[apps.shop.probes]]
kind = "http"
name = "system-roots"
url = "{health}"

[[apps.shop.probes]]
kind = "http"
name = "unverified"
url = "{health}"
tls_verify = false
body_contains = "ok"

[[apps.shop.probes]]
kind = "tls"
name = "cert-30"
address = "{address}"

[[apps.shop.probes]]
kind = "tls"
name = "cert-2"
address = "{address}"
server_name = "localhost"
min_days = 2

[[apps.shop.probes]]
kind = "tls"
name = "cert-closed"
address = "{ip}:{closed}"
"#,
        ),
    );
    let report = probe(&app, &[]);
    let (value, message) = expect(&report, "private-ca", ProbeStatus::Pass);
    assert!(value.starts_with("status 200"), "{value}: {message}");
    let (_, message) = expect(&report, "system-roots", ProbeStatus::Error);
    assert!(
        message.contains("TLS handshake failed") && message.contains("ca_file"),
        "{message}"
    );
    expect(&report, "unverified", ProbeStatus::Pass);

    // The leaf was issued for 5 days: 4 whole days and some hours are left
    // (5 while the same second lasts).
    let (value, message) = expect(&report, "cert-30", ProbeStatus::Fail);
    assert!(value == "4 days" || value == "5 days", "{value}");
    assert!(
        message.contains("CN=site") && message.contains("30 wanted"),
        "{message}"
    );
    assert_eq!(
        result(&report, "cert-30").threshold.as_deref(),
        Some("≥ 30 days left")
    );
    let (value, _) = expect(&report, "cert-2", ProbeStatus::Pass);
    assert!(value == "4 days" || value == "5 days", "{value}");
    let (_, message) = expect(&report, "cert-closed", ProbeStatus::Error);
    assert!(message.contains("cannot connect"), "{message}");
}

#[test]
fn issue5_tcp_and_dns_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = "127.0.0.172";
    let listener = std::net::TcpListener::bind((ip, 0)).expect("listener");
    let open = listener.local_addr().expect("addr").port();
    let closed = closed_port(ip);
    let app = shop(
        dir.path(),
        &format!(
            r#"
[[apps.shop.probes]]
kind = "tcp"
name = "open"
address = "{ip}:{open}"

[[apps.shop.probes]]
kind = "tcp"
name = "closed"
address = "{ip}:{closed}"

[[apps.shop.probes]]
kind = "dns"
name = "localhost"
host = "localhost"
expect = ["127.0.0.1", "::1"]

[[apps.shop.probes]]
kind = "dns"
name = "localhost-any"
host = "localhost"

[[apps.shop.probes]]
kind = "dns"
name = "moved"
host = "localhost"
expect = ["192.0.2.10"]

[[apps.shop.probes]]
kind = "dns"
name = "unknown"
host = "nothing-here.invalid"
"#
        ),
    );
    let report = probe(&app, &[]);
    let (value, _) = expect(&report, "open", ProbeStatus::Pass);
    assert!(value.starts_with("connected, "), "{value}");
    let (value, message) = expect(&report, "closed", ProbeStatus::Fail);
    assert_eq!(value, "not connected");
    assert!(message.contains(&format!("{ip}:{closed}")), "{message}");
    let (value, _) = expect(&report, "localhost", ProbeStatus::Pass);
    assert!(value.contains("127.0.0.1"), "{value}");
    expect(&report, "localhost-any", ProbeStatus::Pass);
    let (_, message) = expect(&report, "moved", ProbeStatus::Fail);
    assert!(message.contains("not expected: 127.0.0.1"), "{message}");
    let (value, message) = expect(&report, "unknown", ProbeStatus::Fail);
    assert_eq!(value, "no answer");
    assert!(
        message.contains("nothing-here.invalid does not resolve"),
        "{message}"
    );
    drop(listener);
}

/// The SQL probes every engine shares: a scalar that matches, one that does
/// not, a query that cannot run, a write refused by the read-only session.
fn sql_probes(db: &str) -> String {
    format!(
        r#"
[[apps.shop.probes]]
kind = "sql"
name = "{db}-count"
database = "{db}"
query = "SELECT count(*) FROM items"
expect = "3"

[[apps.shop.probes]]
kind = "sql"
name = "{db}-wrong"
database = "{db}"
query = "SELECT name FROM items ORDER BY id"
expect = "pear"

[[apps.shop.probes]]
kind = "sql"
name = "{db}-runs"
database = "{db}"
query = "SELECT name FROM items WHERE id = 3"

[[apps.shop.probes]]
kind = "sql"
name = "{db}-no-table"
database = "{db}"
query = "SELECT count(*) FROM no_such_table"
expect = "0"

[[apps.shop.probes]]
kind = "sql"
name = "{db}-write"
database = "{db}"
query = "DELETE FROM items"
"#
    )
}

const ITEMS_SQL: &str = "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20)); \
     INSERT INTO items VALUES (1, 'apple'), (2, 'banana'), (3, 'cherry');";

fn check_sql_report(report: &ProbeReport, db: &str, secret: Option<&str>) {
    let (value, message) = expect(report, &format!("{db}-count"), ProbeStatus::Pass);
    assert_eq!(value, "3", "{message}");
    let (value, message) = expect(report, &format!("{db}-wrong"), ProbeStatus::Fail);
    assert_eq!(value, "apple");
    assert!(message.contains("expected \"pear\""), "{message}");
    let (value, _) = expect(report, &format!("{db}-runs"), ProbeStatus::Pass);
    assert_eq!(value, "cherry");
    let (_, message) = expect(report, &format!("{db}-no-table"), ProbeStatus::Error);
    assert!(message.contains("no_such_table"), "{message}");
    let (_, message) = expect(report, &format!("{db}-write"), ProbeStatus::Error);
    assert!(message.to_lowercase().contains("read"), "{message}");
    if let Some(secret) = secret {
        let all = format!("{report:?}");
        assert!(!all.contains(secret), "the password leaked into {all}");
    }
}

#[test]
fn issue5_sql_probe_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.db");
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute_batch(ITEMS_SQL))
        .expect("sqlite data");
    let pg = TestPostgres::start(dir.path());
    pg.psql(ITEMS_SQL);
    let password_file = pg.db_config("pg").password_file.expect("password file");
    let password = std::fs::read_to_string(&password_file).expect("password");
    let app = shop(
        dir.path(),
        &format!(
            "[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"lite\"\npath = {path:?}\n\n{}\
             {}{}",
            pg.database_toml("shop", "pg"),
            sql_probes("lite"),
            sql_probes("pg"),
        ),
    );
    let report = probe(&app, &[]);
    check_sql_report(&report, "lite", None);
    check_sql_report(&report, "pg", Some(password.trim()));
    let before = std::fs::metadata(&path)
        .expect("db")
        .modified()
        .expect("mtime");
    assert_eq!(pg.psql("SELECT count(*) FROM items").trim(), "3");
    assert_eq!(
        std::fs::metadata(&path)
            .expect("db")
            .modified()
            .expect("mtime"),
        before
    );

    // A wrong password: an error that names the failure, not the password.
    write_private(&password_file, "not-the-password\n");
    let report = probe(&app, &[]);
    let (_, message) = expect(&report, "pg-count", ProbeStatus::Error);
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");
}

#[test]
fn issue5_sql_probe_on_mariadb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let my = TestMariadb::start(dir.path());
    my.sql_as_app(ITEMS_SQL);
    let password_file = my
        .db_config("my", false)
        .password_file
        .expect("password file");
    let password = std::fs::read_to_string(&password_file).expect("password");
    let app = shop(
        dir.path(),
        &format!("{}{}", my.database_toml("shop", "my"), sql_probes("my")),
    );
    let report = probe(&app, &[]);
    check_sql_report(&report, "my", Some(password.trim()));
    assert_eq!(my.sql_as_app("SELECT COUNT(*) FROM items").trim(), "3");

    // A query past the probe's timeout is an error, and the server stops it
    // too (max_statement_time): it does not keep running after the probe.
    // (A count over MariaDB's sequence engine: unlike SLEEP(), it never
    // notices that its client is gone.)
    let app = shop(
        dir.path(),
        &format!(
            "{}\n[[apps.shop.probes]]\nkind = \"sql\"\nname = \"my-slow\"\n\
             database = \"my\"\nquery = \"SELECT SUM(seq % 7) AS golive_slow FROM seq_1_to_100000000000\"\ntimeout_ms = 1000\n",
            my.database_toml("shop", "my")
        ),
    );
    let report = probe(&app, &[]);
    expect(&report, "my-slow", ProbeStatus::Error);
    let running = || {
        my.sql("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE '%golive_slow%' AND info NOT LIKE '%processlist%'")
            .trim()
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(8);
    while running() != "0" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(running(), "0", "the slow query still runs on the server");
}

#[test]
fn issue5_command_probe_pass_fail_and_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleeper.pid");
    let app = shop(
        dir.path(),
        &format!(
            r#"
[[apps.shop.probes]]
kind = "command"
name = "ready"
cmd = ["sh", "-c", "echo checking; echo \"app $GOLIVE_PROBE ready in $PWD\""]
output_contains = "app ready ready"

[[apps.shop.probes]]
kind = "command"
name = "exit-3"
cmd = ["sh", "-c", "echo 'cache backend down' >&2; exit 3"]

[[apps.shop.probes]]
kind = "command"
name = "expects-3"
cmd = ["sh", "-c", "exit 3"]
expect_exit = 3

[[apps.shop.probes]]
kind = "command"
name = "wrong-output"
cmd = ["echo", "degraded"]
output_contains = "healthy"

[[apps.shop.probes]]
kind = "command"
name = "hangs"
cmd = ["sh", "-c", "echo $$ > {pid}; exec sleep 30"]
timeout_ms = 300
"#,
            pid = s(&pid_file),
        ),
    );
    let started = Instant::now();
    let report = probe(&app, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hanging command held the run for {:?}",
        started.elapsed()
    );
    let (value, _) = expect(&report, "ready", ProbeStatus::Pass);
    assert!(value.starts_with("exit 0, "), "{value}");
    let (value, message) = expect(&report, "exit-3", ProbeStatus::Fail);
    assert!(value.starts_with("exit 3, "), "{value}");
    assert!(
        message.contains("exit 3, expected exit 0") && message.contains("cache backend down"),
        "{message}"
    );
    expect(&report, "expects-3", ProbeStatus::Pass);
    let (_, message) = expect(&report, "wrong-output", ProbeStatus::Fail);
    assert!(
        message.contains("does not contain \"healthy\"") && message.contains("degraded"),
        "{message}"
    );
    let (_, message) = expect(&report, "hangs", ProbeStatus::Error);
    assert!(message.contains("timed out after 0.3 s"), "{message}");
    let pid = std::fs::read_to_string(&pid_file).expect("pid file");
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the timed-out command {pid} is still there"
    );
}

#[test]
fn issue5_system_probes_disk_memory_load_cpu_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    // `sleep` under a name of our own: the kernel names it after the link.
    let name = format!("glp-{}", std::process::id());
    let link = tmp.join(&name);
    std::os::unix::fs::symlink(
        golive_shared::config::find_tool(&["sleep"], None).expect("sleep on PATH"),
        &link,
    )
    .expect("symlink");
    let mut sleeper = KillOnDrop(
        Command::new(&link)
            .arg("30")
            .spawn()
            .expect("spawn sleeper"),
    );
    let app = shop(
        tmp,
        &format!(
            r#"
[[apps.shop.probes]]
kind = "disk"
name = "disk-ok"
path = {tmp:?}
min_free_percent = 0.001
min_free_bytes = 1

[[apps.shop.probes]]
kind = "disk"
name = "disk-full"
path = {tmp:?}
min_free_bytes = 1152921504606846976

[[apps.shop.probes]]
kind = "memory"
name = "memory-ok"
min_available_percent = 0.001

[[apps.shop.probes]]
kind = "memory"
name = "memory-short"
min_available_bytes = 1152921504606846976

[[apps.shop.probes]]
kind = "load"
name = "load-ok"
max_load1 = 1000000
max_load15 = 1000000
per_cpu = true

[[apps.shop.probes]]
kind = "load"
name = "load-high"
max_load15 = 0.001

[[apps.shop.probes]]
kind = "cpu"
name = "cpu-ok"
max_percent = 100
sample_ms = 200

[[apps.shop.probes]]
kind = "process"
name = "sleeper"
process = "{name}"

[[apps.shop.probes]]
kind = "process"
name = "two-sleepers"
process = "{name}"
min_count = 2
"#
        ),
    );
    let load15_before = load15();
    let report = probe(&app, &[]);
    let load15_after = load15();
    let (value, _) = expect(&report, "disk-ok", ProbeStatus::Pass);
    assert!(
        value.contains("% free (") && value.contains(" of "),
        "{value}"
    );
    let (_, message) = expect(&report, "disk-full", ProbeStatus::Fail);
    assert!(message.contains(s(tmp)), "{message}");
    assert_eq!(
        result(&report, "disk-full").threshold.as_deref(),
        Some("≥ 1024.0 PiB free")
    );
    let (value, _) = expect(&report, "memory-ok", ProbeStatus::Pass);
    assert!(value.contains("% available ("), "{value}");
    expect(&report, "memory-short", ProbeStatus::Fail);
    let (value, _) = expect(&report, "load-ok", ProbeStatus::Pass);
    assert!(
        value.starts_with("load ") && value.contains(" CPUs"),
        "{value}"
    );
    // The tests running beside this one keep the 15-minute load above
    // 0.001, but a fully idle host shows 0.00: the expectation follows what
    // /proc/loadavg said around the probe (it moves slowly; if it crossed
    // 0.01 in between, either verdict is right).
    let high = result(&report, "load-high");
    match (load15_before > 0.001, load15_after > 0.001) {
        (true, true) => {
            let (_, message) = expect(&report, "load-high", ProbeStatus::Fail);
            assert!(message.contains("15m "), "{message}");
        }
        (false, false) => {
            expect(&report, "load-high", ProbeStatus::Pass);
        }
        _ => assert!(
            matches!(high.status, ProbeStatus::Pass | ProbeStatus::Fail),
            "{high:?}"
        ),
    }
    let (value, _) = expect(&report, "cpu-ok", ProbeStatus::Pass);
    assert!(value.ends_with("% busy over 200 ms"), "{value}");
    let (value, message) = expect(&report, "sleeper", ProbeStatus::Pass);
    assert_eq!(value, "1 running");
    assert!(message.contains(&sleeper.0.id().to_string()), "{message}");
    let (value, _) = expect(&report, "two-sleepers", ProbeStatus::Fail);
    assert_eq!(value, "1 running");

    // Busy CPUs fail a low ceiling: every core spins while the probe samples.
    let busy = busy_app(tmp);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(5);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let report = probe(&busy, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in spinners {
        t.join().expect("spinner");
    }
    let (value, _) = expect(&report, "cpu-busy", ProbeStatus::Fail);
    assert!(value.ends_with("% busy over 300 ms"), "{value}");

    // Once the process is gone, nothing of that name runs.
    let _ = sleeper.0.kill();
    let _ = sleeper.0.wait();
    let report = probe(&app, &[]);
    let (value, message) = expect(&report, "sleeper", ProbeStatus::Fail);
    assert_eq!(value, "0 running");
    assert!(message.contains("no process named"), "{message}");
}

fn busy_app(dir: &Path) -> AppConfig {
    let sub = dir.join("busy");
    std::fs::create_dir_all(&sub).expect("dir");
    shop(
        &sub,
        "[[apps.shop.probes]]\nkind = \"cpu\"\nname = \"cpu-busy\"\nmax_percent = 5\nsample_ms = 300\n",
    )
}

#[test]
fn issue5_file_probe_exists_and_heartbeat_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let beat = dir.path().join("cron.heartbeat");
    let app = shop(
        dir.path(),
        &format!(
            r#"
[[apps.shop.probes]]
kind = "file"
name = "cron"
path = {beat:?}
max_age_secs = 10800
severity = "medium"

[[apps.shop.probes]]
kind = "file"
name = "exists"
path = {beat:?}
"#
        ),
    );
    let report = probe(&app, &[]);
    let (value, message) = expect(&report, "cron", ProbeStatus::Fail);
    assert_eq!(value, "missing");
    assert!(message.contains("does not exist"), "{message}");
    expect(&report, "exists", ProbeStatus::Fail);

    // The cron job last ran 4 hours ago.
    let file = std::fs::File::create(&beat).expect("heartbeat");
    file.set_modified(SystemTime::now() - Duration::from_secs(4 * 3600 + 60))
        .expect("set mtime");
    let report = probe(&app, &[]);
    let (value, message) = expect(&report, "cron", ProbeStatus::Fail);
    assert_eq!(value, "age 4 h 1 min");
    assert!(message.contains("at most 3 h allowed"), "{message}");
    assert_eq!(
        result(&report, "cron").threshold.as_deref(),
        Some("exists, age ≤ 3 h")
    );
    let (value, _) = expect(&report, "exists", ProbeStatus::Pass);
    assert_eq!(value, "exists, 0 B");

    // It ran a minute ago.
    file.set_modified(SystemTime::now() - Duration::from_secs(60))
        .expect("set mtime");
    let report = probe(&app, &[]);
    let (value, _) = expect(&report, "cron", ProbeStatus::Pass);
    assert_eq!(value, "age 1 min");
}

#[test]
fn issue5_probes_run_concurrently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = String::new();
    for i in 0..4 {
        body.push_str(&format!(
            "[[apps.shop.probes]]\nkind = \"command\"\nname = \"wait-{i}\"\ncmd = [\"sleep\", \"1\"]\n\n"
        ));
    }
    let app = shop(dir.path(), &body);
    let started = Instant::now();
    let report = probe(&app, &[]);
    let took = started.elapsed();
    assert!(
        report.results.iter().all(|r| r.status == ProbeStatus::Pass),
        "{report:#?}"
    );
    // One after another they would take at least 4 s.
    assert!(took < Duration::from_millis(3500), "took {took:?}");
}

/// A release archive: `index.html`, the `health` file the http probe wants,
/// and the `ready` marker the command probe wants when `ready`.
fn release(dir: &Path, version: &str, ready: bool) -> PathBuf {
    let path = dir.join("dist").join(format!("shop-{version}.tar.gz"));
    let index = format!("shop {version}\n");
    let mut files: Vec<(&str, &[u8])> = vec![("index.html", index.as_bytes()), ("health", b"ok\n")];
    if ready {
        files.push(("ready", b"yes\n"));
    }
    artifact(&path, &files);
    path
}

#[test]
fn issue5_deploy_runs_every_kind_and_a_failing_critical_one_switches_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ip = "127.0.0.175";
    let pki = TestPki::new(d);
    let op = pki.operator("alice", "operator");
    let viewer = pki.operator("vera", "viewer");
    let ctl = Ctl::new(d);
    let root = d.join("web1/srv/shop");
    let http = HttpApp::serve(&root.join("current"), ip);
    let closed = closed_port(ip);
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        r#"[apps.shop]
root = {root:?}
keep_releases = 3

[[apps.shop.probes]]
kind = "http"
name = "health"
url = "http://{ip}:{port}/health"
body_contains = "ok"
headers = ["Last-Modified"]
tags = ["smoke"]

[[apps.shop.probes]]
kind = "command"
name = "ready-marker"
cmd = ["sh", "-c", "test -f ready && echo release ready"]
output_contains = "release ready"

[[apps.shop.probes]]
kind = "file"
name = "index"
path = "{root}/current/index.html"
severity = "high"
tags = ["smoke"]

[[apps.shop.probes]]
kind = "disk"
name = "disk"
path = {root:?}
min_free_percent = 0.01
severity = "high"

[[apps.shop.probes]]
kind = "tcp"
name = "queue"
address = "{ip}:{closed}"
severity = "medium"
"#,
        port = http.port,
        root = s(&root),
    );
    let agent = AgentProc::start(d, &pki, &spec);
    let plan_for = |version: &str, artifact: &Path| {
        let plan = d.join(format!("{version}.toml"));
        write_plan(
            &plan,
            &pki,
            &op,
            "shop",
            Some((version, artifact)),
            &[&agent],
        );
        plan
    };
    let deploy = |plan: &Path| {
        let run = ctl.run(&["--output", "json", "deploy", s(plan)]);
        let events = run.json_lines();
        (run, events)
    };
    let probe_events = |events: &[Value]| -> Vec<(String, String, String)> {
        events
            .iter()
            .filter(|v| v["event"] == "probe" && v["phase"] == "after")
            .map(|v| {
                (
                    v["probe"].as_str().unwrap_or_default().to_string(),
                    v["status"].as_str().unwrap_or_default().to_string(),
                    v["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };

    let v1 = release(d, "v1", true);
    let (run, events) = deploy(&plan_for("v1", &v1));
    assert_eq!(run.code, 0, "{}", run.text());
    let probes = probe_events(&events);
    let names: Vec<&str> = probes.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["health", "ready-marker", "index", "disk", "queue"],
        "{}",
        run.text()
    );
    let status = |name: &str| {
        probes
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, st, v)| (st.as_str(), v.as_str()))
            .unwrap_or_else(|| panic!("no probe {name}: {}", run.text()))
    };
    assert_eq!(status("health").0, "pass");
    assert_eq!(status("ready-marker").0, "pass");
    assert!(status("ready-marker").1.starts_with("exit 0"), "{probes:?}");
    assert_eq!(status("index").0, "pass");
    assert!(status("disk").1.contains("% free"), "{probes:?}");
    // A medium probe that fails is reported and does not block.
    assert_eq!(status("queue"), ("fail", "not connected"));
    assert_eq!(
        std::fs::read_link(root.join("current"))
            .ok()
            .and_then(|t| t.to_str().map(String::from))
            .as_deref(),
        Some("releases/v1")
    );

    // v2 lacks the marker: the critical command probe fails, v1 is back.
    let v2 = release(d, "v2", false);
    let (run, events) = deploy(&plan_for("v2", &v2));
    assert_eq!(run.code, 3, "{}", run.text());
    let result = events
        .iter()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result: {}", run.text()));
    let msg = result["message"].as_str().unwrap_or_default();
    assert!(msg.contains("ready-marker (critical, fail)"), "{msg}");
    let failed = probe_events(&events);
    assert!(
        failed
            .iter()
            .any(|(n, st, v)| n == "ready-marker" && st == "fail" && v.starts_with("exit 1")),
        "{failed:?}"
    );
    assert_eq!(
        std::fs::read_link(root.join("current"))
            .ok()
            .and_then(|t| t.to_str().map(String::from))
            .as_deref(),
        Some("releases/v1")
    );

    // A viewer may run the probes by tag over mTLS; the agent's answer
    // carries kind, value and threshold.
    let tls = golivectl::tls::client_config(&pki.ca(), &viewer.0, &viewer.1).expect("client TLS");
    let client = golivectl::client::AgentClient::new("web1", &agent.addr.to_string(), None, tls)
        .expect("client");
    let resp = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(client.call(&Request::RunProbes(RunProbesRequest {
            app: "shop".into(),
            tags: vec!["smoke".into()],
        })))
        .expect("RunProbes");
    let Response::Probes(report) = resp else {
        panic!("unexpected answer {resp:?}");
    };
    let got: Vec<(&str, &str, ProbeStatus)> = report
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.kind.as_str(), r.status))
        .collect();
    assert_eq!(
        got,
        [
            ("health", "http", ProbeStatus::Pass),
            ("index", "file", ProbeStatus::Pass)
        ]
    );
    assert_eq!(report.results[1].threshold.as_deref(), Some("exists"));
}

#[test]
fn issue5_check_config_names_bad_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = TestPki::new(d);
    let (cert, key) = pki.agent("web1", &["127.0.0.176"]);
    let config = d.join("agent.toml");
    let text = format!(
        r#"[agent]
name = "web1"
listen = "127.0.0.176:0"
state_dir = "state"

[tls]
ca = {ca:?}
cert = {cert:?}
key = {key:?}

[apps.shop]
root = "/srv/shop"

[[apps.shop.databases]]
engine = "sqlite"
name = "main"
path = "/srv/shop/app.db"

[[apps.shop.probes]]
kind = "http"
name = "home"
url = "htp://shop.example.com/"

[[apps.shop.probes]]
kind = "sql"
name = "schema"
database = "orders"
query = "SELECT 1"

[[apps.shop.probes]]
kind = "command"
name = "drush"
cmd = ["no-such-drush-golive", "status"]

[[apps.shop.probes]]
kind = "http"
name = "secure"
url = "https://shop.example.com/"
ca_file = {missing_ca:?}
"#,
        ca = pki.ca(),
        missing_ca = d.join("no-ca.pem"),
    );
    std::fs::write(&config, &text).expect("config");
    let line = |needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle}"))
    };
    let mut cmd = Command::new(bin("golive-agent"));
    cmd.args(["check-config", "--config", s(&config)]);
    let run = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(run.code, 2, "{}", run.text());
    let file = s(&config);
    for (key, needle, says) in [
        (
            "apps.shop.probes.0.url",
            "url = \"htp",
            "not an http:// or https:// URL",
        ),
        (
            "apps.shop.probes.1.database",
            "database = \"orders\"",
            "no database \"orders\" is declared for this app",
        ),
        ("apps.shop.probes.2.cmd", "cmd = [\"no-such", "not on PATH"),
        ("apps.shop.probes.3.ca_file", "ca_file", "cannot read"),
    ] {
        let want = format!("{file}:{}: key `{key}`: ", line(needle));
        assert!(
            run.stderr
                .lines()
                .any(|l| l.starts_with(&want) && l.contains(says)),
            "want {want}…{says}\n{}",
            run.text()
        );
    }
    assert!(run.stderr.contains("4 problem(s)"), "{}", run.text());

    // A ca_file that looks like PEM but is not is caught by parsing it as
    // the probe will.
    let bad_ca = d.join("bad-ca.pem");
    std::fs::write(
        &bad_ca,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .expect("bad CA");
    let good = format!(
        "[agent]\nname = \"web1\"\nlisten = \"127.0.0.176:0\"\nstate_dir = \"state\"\n\n\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\n\
         [apps.shop]\nroot = \"/srv/shop\"\n\n\
         [[apps.shop.probes]]\nkind = \"http\"\nname = \"secure\"\n\
         url = \"https://shop.example.com/\"\nca_file = {bad_ca:?}\n",
        ca = pki.ca(),
    );
    std::fs::write(&config, good).expect("config");
    let mut cmd = Command::new(bin("golive-agent"));
    cmd.args(["check-config", "--config", s(&config)]);
    let run = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("key `apps.shop.probes.0.ca_file`") && run.stderr.contains(s(&bad_ca)),
        "{}",
        run.text()
    );
}

/// An nginx access-log line stamped now: `status`, latency `secs`.
fn access_line(status: u16, secs: f64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = time::OffsetDateTime::now_utc();
    format!(
        "127.0.0.1 - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"GET /shop HTTP/1.1\" {status} 512 \"-\" \"curl/8.0\" {secs:.3}\n",
        t.day(),
        MONTHS[t.month() as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn append(path: &Path, lines: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the access log");
    f.write_all(lines.as_bytes())
        .expect("append to the access log");
}

/// Probes (bounded: up to 15 s) until `done` holds for probe `name`.
fn probe_until(app: &AppConfig, name: &str, done: &dyn Fn(&ProbeResult) -> bool) -> ProbeResult {
    let started = Instant::now();
    loop {
        let report = probe(app, &[]);
        let r = result(&report, name).clone();
        if done(&r) {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "probe {name} never got there: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The access-log probe: the 5xx share and p95 over a window of a log that
/// a test writer appends to, through a logrotate-style rename; a quiet log
/// is not judged; a p95 limit on a format without latency is a
/// check-config error naming the key.
#[test]
fn issue5_access_log_probe_rates_errors_and_latency_through_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("access.log");
    let format = "$remote_addr - $remote_user [$time_local] \\\"$request\\\" $status $body_bytes_sent \\\"$http_referer\\\" \\\"$http_user_agent\\\" $request_time";
    let mut lines = String::new();
    for i in 0..100 {
        lines.push_str(&access_line(if i == 0 { 500 } else { 200 }, 0.040));
    }
    append(&log, &lines);
    let app = shop(
        d,
        &format!(
            "[[apps.shop.probes]]\nkind = \"access-log\"\nname = \"errors\"\npath = {log:?}\n\
             format = \"{format}\"\nwindow_secs = 300\nmax_error_rate_percent = 5\nmax_p95_ms = 500\n\
             severity = \"high\"\n\n\
             [[apps.shop.probes]]\nkind = \"access-log\"\nname = \"quiet\"\npath = {quiet:?}\n\
             max_error_rate_percent = 1\n",
            quiet = logs.join("quiet.log"),
        ),
    );

    // 1 % 5xx, p95 about 40 ms: within limits.
    let r = probe_until(&app, "errors", &|r| {
        r.value
            .as_deref()
            .is_some_and(|v| v.contains("of 100 requests"))
    });
    assert_eq!(r.status, ProbeStatus::Pass, "{r:#?}");
    let value = r.value.clone().unwrap();
    assert!(
        value.starts_with("1.00 % 5xx of 100 requests, p95 "),
        "{value}"
    );
    let p95: f64 = value
        .rsplit("p95 ")
        .next()
        .and_then(|v| v.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no p95 in {value}"));
    assert!((38.0..=42.0).contains(&p95), "{value}");
    assert!(
        r.threshold
            .as_deref()
            .is_some_and(|t| t.contains("5xx ≤ 5 %") && t.contains("p95 ≤ 500 ms")),
        "{r:#?}"
    );
    // A log with no traffic (it does not even exist yet) is not judged.
    let quiet = result(&probe(&app, &[]), "quiet").clone();
    assert_eq!(quiet.status, ProbeStatus::Pass, "{quiet:#?}");
    assert!(quiet.message.contains("too few to judge"), "{quiet:#?}");

    // A burst of slow 500s: the share and the p95 both go over.
    let mut burst = String::new();
    for _ in 0..20 {
        burst.push_str(&access_line(502, 0.900));
    }
    append(&log, &burst);
    let r = probe_until(&app, "errors", &|r| r.status == ProbeStatus::Fail);
    assert!(
        r.value
            .as_deref()
            .is_some_and(|v| v.starts_with("17.50 % 5xx of 120 requests")),
        "{r:#?}"
    );
    assert!(
        r.message.contains("5xx share 17.50 % is above 5 %")
            && r.message.contains(" ms is above 500 ms"),
        "{r:#?}"
    );

    // logrotate `create`: the log is renamed and a new one starts; the
    // tailer reads the new file and the window keeps the old lines.
    std::fs::rename(&log, logs.join("access.log.1")).unwrap();
    let mut fresh = String::new();
    for _ in 0..200 {
        fresh.push_str(&access_line(200, 0.010));
    }
    append(&log, &fresh);
    let r = probe_until(&app, "errors", &|r| {
        r.value
            .as_deref()
            .is_some_and(|v| v.contains("of 320 requests"))
    });
    assert!(
        r.value
            .as_deref()
            .is_some_and(|v| v.starts_with("6.56 % 5xx of 320 requests")),
        "{r:#?}"
    );
    assert_eq!(
        r.status,
        ProbeStatus::Fail,
        "6.56 % is still above 5 %: {r:#?}"
    );

    // check-config: a p95 limit needs a latency field in the format.
    let pki = TestPki::new(d);
    let (cert, key) = pki.agent("logs-agent", &["127.0.0.177"]);
    let config = d.join("bad-format.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nname = \"logs-agent\"\nlisten = \"127.0.0.177:0\"\nstate_dir = \"state\"\n\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\n\
             [apps.shop]\nroot = {root:?}\n\n\
             [[apps.shop.probes]]\nkind = \"access-log\"\nname = \"errors\"\npath = {log:?}\n\
             format = \"common\"\nmax_p95_ms = 500\n",
            ca = pki.ca(),
            root = d.join("srv/shop"),
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(bin("golive-agent"));
    cmd.args(["check-config", "--config"]).arg(&config);
    let run = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("key `apps.shop.probes.0.format`")
            && run.stderr.contains("has no latency field"),
        "{}",
        run.text()
    );
}

/// The 15-minute load average from /proc/loadavg.
fn load15() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").expect("/proc/loadavg");
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("three load averages")
}

/// Issue 12, part 4: before the app's first release (no `ROOT/current`),
/// probes of the app itself are n/a and not run; host-level kinds run; a
/// probe's `before_first_release` overrides its kind's default; once a
/// release is live, every probe runs.
#[test]
fn issue12_probes_before_the_first_release_are_not_applicable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), "127.0.0.177", None);
    let marker = dir.path().join("command-ran");
    let body = format!(
        r#"
[[apps.shop.probes]]
kind = "http"
name = "home"
url = "http://127.0.0.177:{port}/health"

[[apps.shop.probes]]
kind = "http"
name = "home-anyway"
url = "http://127.0.0.177:{port}/health"
before_first_release = "run"

[[apps.shop.probes]]
kind = "command"
name = "app-command"
cmd = ["touch", {marker:?}]

[[apps.shop.probes]]
kind = "disk"
name = "disk"
path = "/"
min_free_bytes = 1

[[apps.shop.probes]]
kind = "tcp"
name = "app-port"
address = "127.0.0.177:{port}"
before_first_release = "skip"
"#,
        port = server.port,
    );
    let app = shop_before_first_release(dir.path(), &body);
    let report = probe(&app, &[]);
    let (value, message) = expect(&report, "home", ProbeStatus::NotApplicable);
    assert_eq!(value, "", "nothing was measured");
    assert!(
        message.starts_with("nothing live yet: app shop has no release at")
            && message.contains("before_first_release = \"run\""),
        "{message}"
    );
    assert_eq!(
        result(&report, "home").threshold.as_deref(),
        Some("status in [200]")
    );
    expect(&report, "home-anyway", ProbeStatus::Pass);
    expect(&report, "app-command", ProbeStatus::NotApplicable);
    assert!(!marker.exists(), "an n/a command probe must not run");
    expect(&report, "disk", ProbeStatus::Pass);
    expect(&report, "app-port", ProbeStatus::NotApplicable);
    assert!(report.failures().is_empty(), "{report:#?}");

    // Live: everything runs.
    let app = shop(dir.path(), &body);
    let report = probe(&app, &[]);
    for name in ["home", "home-anyway", "app-command", "disk", "app-port"] {
        expect(&report, name, ProbeStatus::Pass);
    }
    assert!(marker.exists());

    // A value that is neither skip nor run is refused naming the key.
    let bad = "[agent]\nname = \"x\"\nlisten = \"127.0.0.177:0\"\nstate_dir = \"state\"\n\n\
         [tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n\n\
         [apps.shop]\nroot = \"/srv/shop\"\n\n\
         [[apps.shop.probes]]\nkind = \"disk\"\nname = \"disk\"\npath = \"/\"\n\
         min_free_bytes = 1\nbefore_first_release = \"maybe\"\n";
    let e = golive_shared::config::parse(&dir.path().join("agent.toml"), bad)
        .expect_err("a bad before_first_release");
    let text = e.to_string();
    assert!(
        text.contains("apps.shop.probes.0.before_first_release") && text.contains("`skip`"),
        "{text}"
    );
}
