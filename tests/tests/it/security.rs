//! Issue 2: who may talk to an agent, and what happens to everyone else.
//!
//! Every test drives the real `golive-agent` over real mutual TLS, with the
//! real `golivectl`, `curl` and `openssl s_client` as clients. Each test has
//! its own loopback address (127.0.0.10 to 127.0.0.19) and temp directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use golive_shared::codec;
use golive_shared::identity::Role;
use golive_shared::protocol::{
    ErrorCode, JobSpec, PROTOCOL_VERSION, Request, Response, StageRelease, SubmitJob,
};
use golive_tests::*;

const LIMIT: Duration = Duration::from_secs(10);

fn status(ctl: &Ctl, plan: &Path) -> Run {
    ctl.run(&["status", s(plan)])
}

/// `golivectl status` with a good certificate succeeds: the agent still serves.
fn assert_still_serving(ctl: &Ctl, plan: &Path) {
    let r = status(ctl, plan);
    assert_eq!(
        r.code,
        0,
        "the agent stopped serving good clients: {}",
        r.text()
    );
    assert!(r.stdout.contains("shop: current (none)"), "{}", r.text());
}

/// An agent with one app `shop` (its probe points nowhere; no test runs it).
fn shop_agent(dir: &Path, pki: &TestPki, name: &str, ip: &str, limits: &str) -> AgentProc {
    let mut spec = AgentSpec::new(name, ip);
    spec.apps_toml = app_toml(
        "shop",
        &dir.join("srv/shop"),
        &format!("http://{ip}:9/health"),
    );
    spec.limits_toml = limits.into();
    AgentProc::start(dir, pki, &spec)
}

/// A plan for `shop` on `agent` with the certificate pair `cert`.
fn plan_for(
    dir: &Path,
    file: &str,
    pki: &TestPki,
    cert: &(PathBuf, PathBuf),
    agent: &AgentProc,
) -> PathBuf {
    let plan = dir.join(file);
    write_plan(&plan, pki, cert, "shop", None, &[agent]);
    plan
}

/// All (role, operation, outcome) audit rows of one peer, oldest first.
fn audit_rows(agent: &AgentProc, peer: &str) -> Vec<(String, String, String)> {
    let db = agent.journal();
    let mut stmt = db
        .prepare("SELECT role, operation, outcome FROM audit WHERE peer_name = ?1 ORDER BY seq")
        .expect("prepare audit query");
    stmt.query_map([peer], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query audit")
        .collect::<Result<Vec<_>, _>>()
        .expect("read audit rows")
}

/// curl over mutual TLS (`client`: certificate pair, or none) against the
/// agent; returns the run and the HTTP status curl printed.
fn curl(
    pki: &TestPki,
    client: Option<&(PathBuf, PathBuf)>,
    out: &Path,
    extra: &[&OsStr],
    url: &str,
) -> (Run, String) {
    let mut cmd = Command::new("/usr/bin/curl");
    cmd.args(["-sS", "--http1.1", "--max-time", "10", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}", "--cacert"])
        .arg(pki.ca());
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.args(extra).arg(url);
    let run = run_bounded(cmd, Duration::from_secs(20));
    let code = run.stdout.trim().to_string();
    (run, code)
}

/// POSTs `body` to the agent's RPC endpoint with `cert`; (run, HTTP status, response body).
fn post_rpc(
    pki: &TestPki,
    agent: &AgentProc,
    cert: &(PathBuf, PathBuf),
    body: &[u8],
    extra: &[&str],
) -> (Run, String, Vec<u8>) {
    let dir = pki.dir.parent().expect("pki parent");
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let req = dir.join(format!("req-{n}.bin"));
    let resp = dir.join(format!("resp-{n}.bin"));
    std::fs::write(&req, body).expect("write request body");
    let data = format!("@{}", s(&req));
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("-X"),
        OsStr::new("POST"),
        OsStr::new("-H"),
        OsStr::new("Content-Type: application/x-golive"),
        OsStr::new("--data-binary"),
        OsStr::new(&data),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let url = format!("https://{}/v1/rpc", agent.addr);
    let (run, code) = curl(pki, Some(cert), &resp, &args, &url);
    let body = std::fs::read(&resp).unwrap_or_default();
    (run, code, body)
}

/// The agent's framed error answer.
fn error_body(bytes: &[u8]) -> golive_shared::protocol::ErrorBody {
    match codec::decode::<Response>(bytes) {
        Ok(Response::Error(e)) => e,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// A mutual-TLS client from golivectl's own library, for protocol-level checks.
fn agent_client(
    pki: &TestPki,
    agent: &AgentProc,
    cert: &(PathBuf, PathBuf),
) -> golivectl::client::AgentClient {
    let tls =
        golivectl::tls::client_config(&pki.ca(), &cert.0, &cert.1).expect("client TLS config");
    golivectl::client::AgentClient::new(&agent.name, &agent.addr.to_string(), None, tls)
        .expect("agent client")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
        .expect("request finished within 30 s")
}

/// Good, foreign-CA, expired and agent certificates through `golivectl status`.
#[test]
fn issue2_certificate_matrix_only_admits_this_cas_valid_operators() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = shop_agent(d, &pki, "web", "127.0.0.10", "");
    let ctl = Ctl::new(d);

    // A good operator certificate.
    let good = pki.operator("alice", "operator");
    let good_plan = plan_for(d, "good.toml", &pki, &good, &agent);
    let r = status(&ctl, &good_plan);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("web (127.0.0.10:"), "{}", r.text());
    assert!(r.stdout.contains("shop: current (none)"), "{}", r.text());

    // An admin certificate from another CA: the plan trusts the right CA for
    // the agent, but presents a foreign client certificate.
    let other = TestPki::new(&d.join("other"));
    let mallory = other.operator("mallory", "admin");
    let plan = plan_for(d, "foreign.toml", &pki, &mallory, &agent);
    let r = status(&ctl, &plan);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stdout.contains("web: UNREACHABLE: TLS with agent web at"),
        "{}",
        r.text()
    );
    assert!(r.stdout.contains("refused our"), "{}", r.text());
    assert_still_serving(&ctl, &good_plan);

    // An operator certificate of the right CA that expired yesterday.
    let now = time::OffsetDateTime::now_utc();
    let old = golivectl::pki::issue_operator_with_validity(
        &pki.dir,
        "old",
        Role::Operator,
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    )
    .expect("issue an expired certificate");
    let plan = plan_for(
        d,
        "expired.toml",
        &pki,
        &(old.cert_path, old.key_path),
        &agent,
    );
    let r = status(&ctl, &plan);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stdout.contains("web: UNREACHABLE: TLS with agent web at"),
        "{}",
        r.text()
    );
    assert!(r.stdout.contains("refused our"), "{}", r.text());
    assert_still_serving(&ctl, &good_plan);

    // The agent's own certificate presented as an operator's: TLS accepts it
    // (agent certificates carry clientAuth), the role check does not.
    let agent_cert = (
        pki.dir.join("agents/web.crt"),
        pki.dir.join("agents/web.key"),
    );
    let plan = plan_for(d, "agent-as-op.toml", &pki, &agent_cert, &agent);
    let r = status(&ctl, &plan);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stdout
            .contains("is an agent certificate and is never accepted as an operator"),
        "{}",
        r.text()
    );
    assert!(r.stdout.contains("--role operator"), "{}", r.text());
    assert_still_serving(&ctl, &good_plan);

    // The agent says why it refused the handshakes and the agent
    // certificate; a peer that is never admitted leaves no audit row
    // (issue 11: its body is not even read).
    let log = agent.log_text();
    assert!(
        log.contains("refused: invalid peer certificate: BadSignature"),
        "{log}"
    );
    assert!(
        log.contains("refused: invalid peer certificate: certificate expired"),
        "{log}"
    );
    assert!(
        log.contains("certificate \"web\" refused: Forbidden"),
        "{log}"
    );
    assert!(
        audit_rows(&agent, "web").is_empty(),
        "an agent certificate was audited"
    );
    assert!(
        audit_rows(&agent, "mallory").is_empty(),
        "a foreign certificate got past TLS"
    );
    assert!(
        audit_rows(&agent, "old").is_empty(),
        "an expired certificate got past TLS"
    );
}

/// `golivectl cert revoke` takes effect on a running agent, without a restart.
#[test]
fn issue2_revoked_certificate_is_refused_after_live_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = shop_agent(d, &pki, "web", "127.0.0.11", "");
    let ctl = Ctl::new(d);
    let bob = pki.operator("bob", "operator");
    let bob_plan = plan_for(d, "bob.toml", &pki, &bob, &agent);
    let good = pki.operator("alice", "operator");
    let good_plan = plan_for(d, "good.toml", &pki, &good, &agent);

    let r = status(&ctl, &bob_plan);
    assert_eq!(r.code, 0, "{}", r.text());

    let r = ctl.run(&["cert", "revoke", s(&bob.0), "--dir", s(&pki.dir)]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("revoked serial"), "{}", r.text());

    // The agent reloads the list on change (notify); poll, bounded.
    let started = Instant::now();
    let mut last = None;
    for _ in 0..100 {
        let r = status(&ctl, &bob_plan);
        if r.code != 0 {
            last = Some(r);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "revoked certificate still accepted after 10 s:\n{}\n{}",
            r.text(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = last.expect("status failed within 100 attempts");
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("revocation list"), "{}", r.text());
    assert!(
        r.stdout.contains("golivectl cert"),
        "names the fix: {}",
        r.text()
    );
    assert!(
        agent.log_text().contains("reloaded: 1 serials"),
        "{}",
        agent.log_text()
    );

    // Refused in the handshake (issue 11): no request of bob's was read or
    // audited after the revocation; the log says why.
    let rows = audit_rows(&agent, "bob");
    assert!(
        rows.iter().all(|(_, _, outcome)| outcome == "ok"),
        "{rows:?}"
    );
    assert!(
        agent
            .log_text()
            .contains("TLS handshake refused: the client certificate is on the revocation list"),
        "{}",
        agent.log_text()
    );
    assert_still_serving(&ctl, &good_plan);
}

/// A viewer may look but not deploy; the refusals are audited, and the audit
/// table cannot be edited.
#[test]
fn issue2_viewer_cannot_deploy_and_the_append_only_audit_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let mut agent = shop_agent(d, &pki, "web", "127.0.0.12", "");
    let ctl = Ctl::new(d);
    let vic = pki.operator("vic", "viewer");

    let plan = plan_for(d, "status.toml", &pki, &vic, &agent);
    let r = status(&ctl, &plan);
    assert_eq!(r.code, 0, "{}", r.text());

    let art = d.join("dist/shop-r1.tar.gz");
    artifact(&art, &[("index.html", b"ok\n")]);
    let deploy_plan = d.join("deploy.toml");
    write_plan(
        &deploy_plan,
        &pki,
        &vic,
        "shop",
        Some(("r1", &art)),
        &[&agent],
    );
    let r = ctl.run(&["deploy", s(&deploy_plan)]);
    assert_eq!(r.code, 2, "{}", r.text());
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("needs the operator role"), "{}", r.text());
    assert!(
        all.contains("--role operator"),
        "names the fix: {}",
        r.text()
    );

    // The same refusal at the protocol level for a job submission.
    let client = agent_client(&pki, &agent, &vic);
    let err = block_on(client.call(&Request::SubmitJob(SubmitJob {
        idempotency_key: "viewer-stage-1".into(),
        lease: None,
        spec: JobSpec::Stage(StageRelease {
            app: "shop".into(),
            release: "r1".into(),
            artifact_sha256: "0".repeat(64),
        }),
    })))
    .expect_err("a viewer's job submission must be refused");
    assert_eq!(err.agent_code(), Some(ErrorCode::Forbidden), "{err}");
    assert!(err.to_string().contains("needs the operator role"), "{err}");
    assert_eq!(err.exit_code(), 2, "{err}");

    // Nothing was staged or uploaded.
    let releases = d.join("srv/shop/releases");
    let staged: Vec<_> = std::fs::read_dir(&releases)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(staged.is_empty(), "staged by a viewer: {staged:?}");
    assert!(!d.join("srv/shop/current").exists());
    let uploads: Vec<_> = std::fs::read_dir(agent.state_dir.join("artifacts"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(uploads.is_empty(), "uploaded by a viewer: {uploads:?}");

    // The audit trail has the viewer's reads and both refusals.
    let rows = audit_rows(&agent, "vic");
    assert!(rows.iter().all(|(role, _, _)| role == "viewer"), "{rows:?}");
    assert!(
        rows.iter()
            .any(|(_, op, outcome)| op == "status" && outcome == "ok"),
        "{rows:?}"
    );
    for refused in ["job.submit:stage", "lock.acquire"] {
        assert!(
            rows.iter().any(|(_, op, outcome)| op == refused
                && outcome.starts_with("Forbidden")
                && outcome.contains("needs the operator role")),
            "no refused {refused} row: {rows:?}"
        );
    }
    let fingerprint: String = agent
        .journal()
        .query_row(
            "SELECT fingerprint FROM audit WHERE peer_name = 'vic' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("fingerprint");
    assert!(!fingerprint.is_empty());

    // The audit table refuses DELETE and UPDATE, even to a read-write
    // connection on the file (the agent is stopped first so the only
    // possible refusal is the trigger's).
    assert!(agent.stop(), "agent did not stop on SIGTERM");
    let before: i64 = agent
        .journal()
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .expect("count");
    let rw = rusqlite::Connection::open(agent.state_dir.join("journal.db")).expect("open rw");
    rw.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let err = rw
        .execute("DELETE FROM audit", [])
        .expect_err("DELETE must fail");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = rw
        .execute(
            "UPDATE audit SET outcome = 'ok' WHERE peer_name = 'vic'",
            [],
        )
        .expect_err("UPDATE must fail");
    assert!(err.to_string().contains("append-only"), "{err}");
    let after: i64 = rw
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .expect("count");
    assert_eq!(before, after);
    assert!(before >= 4, "{before}");
}

/// Garbage and oversized bodies are refused with 400 and 413; the agent
/// keeps serving.
#[test]
fn issue2_garbage_and_oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = shop_agent(d, &pki, "web", "127.0.0.13", "max_request_bytes = 4096\n");
    let ctl = Ctl::new(d);
    let good = pki.operator("alice", "operator");
    let good_plan = plan_for(d, "good.toml", &pki, &good, &agent);

    let (run, code, body) = post_rpc(
        &pki,
        &agent,
        &good,
        b"\x00\xffnot a golive frame at all",
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(code, "400", "{}", run.text());
    let e = error_body(&body);
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("no GOLV header"), "{e:?}");

    // A GOLV header of our version followed by bincode garbage.
    let mut frame = b"GOLV".to_vec();
    frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    frame.push(0);
    frame.extend_from_slice(&[0xff; 40]);
    let (run, code, body) = post_rpc(&pki, &agent, &good, &frame, &[]);
    assert_eq!(code, "400", "{}", run.text());
    assert!(error_body(&body).message.contains("malformed"), "{body:?}");

    // Declared too large (Content-Length), and streamed too large (chunked).
    let big = vec![b'x'; 10_000];
    let (run, code, body) = post_rpc(&pki, &agent, &good, &big, &["-H", "Expect: 100-continue"]);
    assert_eq!(code, "413", "{}", run.text());
    let e = error_body(&body);
    assert_eq!(e.code, ErrorCode::TooLarge);
    assert!(
        e.message
            .contains("limit of 4096 bytes (limits.max_request_bytes)"),
        "{e:?}"
    );
    let (run, code, body) = post_rpc(
        &pki,
        &agent,
        &good,
        &big,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect: 100-continue",
        ],
    );
    assert_eq!(code, "413", "{}", run.text());
    assert_eq!(error_body(&body).code, ErrorCode::TooLarge);

    assert_still_serving(&ctl, &good_plan);
    let rows = audit_rows(&agent, "alice");
    let invalid = rows
        .iter()
        .filter(|(_, op, _)| op == "invalid-request")
        .count();
    assert_eq!(invalid, 4, "{rows:?}");
}

/// A frame of another protocol version gets 426 and a plain error frame that
/// any version can read, naming both versions.
#[test]
fn issue2_other_protocol_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = shop_agent(d, &pki, "web", "127.0.0.14", "");
    let ctl = Ctl::new(d);
    let good = pki.operator("alice", "operator");
    let good_plan = plan_for(d, "good.toml", &pki, &good, &agent);

    let mut frame = b"GOLV".to_vec();
    frame.extend_from_slice(&99u16.to_le_bytes());
    frame.push(0);
    frame.extend_from_slice(b"a request from the future");
    let (run, code, body) = post_rpc(&pki, &agent, &good, &frame, &[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(code, "426", "{}", run.text());
    assert!(body.len() > 7, "{body:?}");
    assert_eq!(&body[..4], b"GOLV");
    assert_eq!(body[6], 1, "not a plain error frame: {body:?}");
    let text = String::from_utf8(body[7..].to_vec()).expect("UTF-8 message");
    assert!(
        text.contains("golivectl speaks golive protocol 99"),
        "{text}"
    );
    assert!(
        text.contains(&format!("this agent speaks {PROTOCOL_VERSION}")),
        "{text}"
    );
    assert!(text.contains("upgrade"), "names the fix: {text}");
    assert_still_serving(&ctl, &good_plan);
}

/// No client certificate, TLS 1.2 and unknown endpoints, from outside clients.
#[test]
fn issue2_outside_clients_need_a_client_certificate_and_tls13() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = shop_agent(d, &pki, "web", "127.0.0.15", "");
    let ctl = Ctl::new(d);
    let good = pki.operator("alice", "operator");
    let good_plan = plan_for(d, "good.toml", &pki, &good, &agent);
    let out = d.join("curl-out");
    let rpc = format!("https://{}/v1/rpc", agent.addr);

    // curl without a client certificate: the handshake is refused.
    let (run, code) = curl(
        &pki,
        None,
        &out,
        &[OsStr::new("--data-binary"), OsStr::new("x")],
        &rpc,
    );
    assert_ne!(
        run.code,
        0,
        "curl without a certificate got through: {}",
        run.text()
    );
    assert_eq!(code, "000", "{}", run.text());
    assert!(!run.stderr.is_empty(), "{}", run.text());

    // TLS 1.2 is not offered at all.
    let port = agent.addr.port().to_string();
    let connect = format!("127.0.0.15:{port}");
    let s_client = |version: &str| {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &connect, version, "-cert"])
            .arg(&good.0)
            .arg("-key")
            .arg(&good.1)
            .arg("-CAfile")
            .arg(pki.ca());
        run_bounded(cmd, LIMIT)
    };
    let r = s_client("-tls1_2");
    let text = r.text();
    assert_ne!(r.code, 0, "{text}");
    assert!(
        text.contains("alert protocol version") || text.contains("no protocols available"),
        "{text}"
    );
    assert!(!text.contains("New, TLSv1.2"), "{text}");

    // TLS 1.3 with the operator certificate works and verifies the agent.
    let r = s_client("-tls1_3");
    let text = r.text();
    assert!(text.contains("New, TLSv1.3"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    // An unknown endpoint with a good certificate: 404 naming the real ones.
    let (run, code) = curl(
        &pki,
        Some(&good),
        &out,
        &[],
        &format!("https://{}/", agent.addr),
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(code, "404", "{}", run.text());
    let e = error_body(&std::fs::read(&out).expect("404 body"));
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("no endpoint GET /"), "{e:?}");
    assert!(e.message.contains("POST /v1/rpc"), "{e:?}");

    assert_still_serving(&ctl, &good_plan);
    let log = agent.log_text();
    assert!(log.contains("refused: peer sent no certificates"), "{log}");
    assert!(log.contains("refused: peer is incompatible"), "{log}");
}

/// An agent config that `check-config` should accept, with `probe_extra`
/// appended to the app's probe table; returns its text.
fn agent_config(pki: &TestPki, d: &Path, cert: &Path, key: &Path, probe_extra: &str) -> String {
    format!(
        "[agent]\nname = \"cfg\"\nlisten = \"127.0.0.16:0\"\nstate_dir = {state:?}\n\n\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\n\
         [apps.shop]\nroot = {root:?}\n\n\
         [[apps.shop.probes]]\nkind = \"http\"\nname = \"health\"\n\
         url = \"http://127.0.0.16:9/health\"\n{probe_extra}",
        state = d.join("cfg-state"),
        ca = pki.ca(),
        root = d.join("srv/shop"),
    )
}

fn check_config(config: &Path) -> Run {
    let mut cmd = Command::new(bin("golive-agent"));
    cmd.args(["check-config", "--config"]).arg(config);
    run_bounded(cmd, LIMIT)
}

/// Config problems name the file, the line and the key.
#[test]
fn issue2_check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let (cert, key) = pki.agent("cfg", &["127.0.0.16"]);
    let config = d.join("agent.toml");

    std::fs::write(
        &config,
        agent_config(&pki, d, &cert, &key, "expect_status = [200]\n"),
    )
    .unwrap();
    let r = check_config(&config);
    assert_eq!(r.code, 0, "the baseline config must be good: {}", r.text());

    let text = agent_config(&pki, d, &cert, &key, "expect_statu = [200]\n");
    let line = text
        .lines()
        .position(|l| l.starts_with("expect_statu"))
        .expect("typo line")
        + 1;
    std::fs::write(&config, &text).unwrap();
    let r = check_config(&config);
    assert_eq!(r.code, 2, "{}", r.text());
    let want = format!(
        "{}:{line}: key `apps.shop.probes.0.expect_statu`",
        config.display()
    );
    assert!(r.stderr.contains(&want), "want {want:?}: {}", r.text());
    assert!(r.stderr.contains("unknown field"), "{}", r.text());
    assert!(r.stderr.contains("fix the config"), "{}", r.text());

    let missing = d.join("nope/web.crt");
    let text = agent_config(&pki, d, &missing, &key, "");
    let line = text
        .lines()
        .position(|l| l.starts_with("cert ="))
        .expect("cert line")
        + 1;
    std::fs::write(&config, &text).unwrap();
    let r = check_config(&config);
    assert_eq!(r.code, 2, "{}", r.text());
    let want = format!("{}:{line}: key `tls.cert`", config.display());
    assert!(r.stderr.contains(&want), "want {want:?}: {}", r.text());
    assert!(r.stderr.contains(s(&missing)), "{}", r.text());
    assert!(
        r.stderr.contains("golivectl cert agent"),
        "names the fix: {}",
        r.text()
    );
}

/// One agent per state directory: a second `serve` is refused with exit 2.
#[test]
fn issue2_second_agent_on_the_same_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = shop_agent(d, &pki, "web", "127.0.0.17", "");
    let ctl = Ctl::new(d);
    let good = pki.operator("alice", "operator");
    let good_plan = plan_for(d, "good.toml", &pki, &good, &agent);

    let mut cmd = Command::new(bin("golive-agent"));
    cmd.args(["serve", "--config"]).arg(&agent.config);
    let r = run_bounded(cmd, Duration::from_secs(20));
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr.contains("is in use by another golive-agent"),
        "{}",
        r.text()
    );
    assert!(r.stderr.contains(s(&agent.state_dir)), "{}", r.text());
    let pid = agent.pid().expect("first agent runs");
    assert!(r.stderr.contains(&format!("(pid {pid})")), "{}", r.text());
    assert!(
        r.stderr.contains("agent.state_dir"),
        "names the fix: {}",
        r.text()
    );
    assert_still_serving(&ctl, &good_plan);
}

/// Unreachable agents and undeclared apps are named with what to do.
#[test]
fn issue2_unreachable_agent_and_undeclared_app_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let mut spec = AgentSpec::new("web", "127.0.0.18");
    spec.apps_toml = format!(
        "{}{}",
        app_toml("shop", &d.join("srv/shop"), "http://127.0.0.18:9/health"),
        app_toml("wiki", &d.join("srv/wiki"), "http://127.0.0.18:9/health")
    );
    let agent = AgentProc::start(d, &pki, &spec);
    let ctl = Ctl::new(d);
    let good = pki.operator("alice", "operator");

    // Nothing listens on this address.
    let port = free_port("127.0.0.19");
    let ghost = format!("127.0.0.19:{port}");
    let plan = d.join("ghost.toml");
    std::fs::write(
        &plan,
        format!(
            "app = \"shop\"\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n\
             [[hosts]]\nname = \"ghost\"\naddress = \"{ghost}\"\n",
            pki.ca(),
            good.0,
            good.1
        ),
    )
    .unwrap();
    let r = status(&ctl, &plan);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stdout.contains(&format!(
            "ghost: UNREACHABLE: cannot reach agent ghost at {ghost}: "
        )),
        "{}",
        r.text()
    );
    assert!(
        r.stdout.to_lowercase().contains("connection refused"),
        "{}",
        r.text()
    );

    // Regression: two unreachable agents made `status` exit 1 ("failed"),
    // not 2; refusals alone are exit 2 however many hosts refuse.
    let ghost2 = format!("127.0.0.19:{}", free_port("127.0.0.19"));
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(
        &plan,
        format!("{text}\n[[hosts]]\nname = \"ghost2\"\naddress = \"{ghost2}\"\n"),
    )
    .unwrap();
    let r = status(&ctl, &plan);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("ghost: UNREACHABLE"), "{}", r.text());
    assert!(
        r.stdout.contains(&format!(
            "ghost2: UNREACHABLE: cannot reach agent ghost2 at {ghost2}: "
        )),
        "{}",
        r.text()
    );

    // An app the agent does not declare.
    let art = d.join("dist/blog-r1.tar.gz");
    artifact(&art, &[("index.html", b"ok\n")]);
    let plan = d.join("blog.toml");
    write_plan(&plan, &pki, &good, "blog", Some(("r1", &art)), &[&agent]);
    let r = ctl.run(&["deploy", s(&plan)]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr.contains("host web declares no app \"blog\""),
        "{}",
        r.text()
    );
    assert!(r.stderr.contains("its apps: shop, wiki"), "{}", r.text());
    assert!(
        r.stderr.contains("declare it in that agent's config"),
        "{}",
        r.text()
    );
    assert!(!d.join("srv/blog").exists());
}

/// The PKI commands refuse bad roles and never overwrite a CA.
#[test]
fn issue2_pki_refuses_unknown_roles_and_a_second_ca_init() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctl = Ctl::new(d);
    let pki_dir = d.join("pki");
    let r = ctl.run(&["ca", "init", "--dir", s(&pki_dir)]);
    assert_eq!(r.code, 0, "{}", r.text());

    for role in ["superuser", "agent"] {
        let r = ctl.run(&[
            "cert",
            "operator",
            "x",
            "--role",
            role,
            "--dir",
            s(&pki_dir),
        ]);
        assert_eq!(r.code, 2, "{}", r.text());
        assert!(
            r.stderr.contains(&format!("unknown role \"{role}\"")),
            "{}",
            r.text()
        );
        assert!(
            r.stderr.contains("use viewer, operator or admin"),
            "{}",
            r.text()
        );
        assert!(!pki_dir.join("operators/x.crt").exists());
        assert!(!pki_dir.join("operators/x.key").exists());
    }

    let ca_crt = std::fs::read(pki_dir.join("ca.crt")).unwrap();
    let ca_key = std::fs::read(pki_dir.join("ca.key")).unwrap();
    let r = ctl.run(&["ca", "init", "--dir", s(&pki_dir)]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stderr.contains("already exists"), "{}", r.text());
    assert!(
        r.stderr.contains("a CA already lives in this directory"),
        "{}",
        r.text()
    );
    assert_eq!(std::fs::read(pki_dir.join("ca.crt")).unwrap(), ca_crt);
    assert_eq!(std::fs::read(pki_dir.join("ca.key")).unwrap(), ca_key);
}
