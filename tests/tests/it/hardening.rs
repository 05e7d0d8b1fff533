//! Issue 11: an agent that a stranger on the network cannot lock out, that
//! cuts slow and idle connections, and whose deny list fails closed.
//!
//! Every test drives the real `golive-agent` over real mutual TLS. Each has
//! its own loopback address (127.0.0.200 to 127.0.0.209); the flood comes
//! from 127.0.0.66, so the operator's requests (from 127.0.0.1) are another
//! source.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use golive_shared::codec;
use golive_shared::protocol::{HelloRequest, Request};
use golive_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;

/// An agent with one app `shop` whose probe points nowhere.
fn agent_with(dir: &Path, pki: &TestPki, ip: &str, limits: &str) -> AgentProc {
    let mut spec = AgentSpec::new("web", ip);
    spec.apps_toml = app_toml(
        "shop",
        &dir.join("srv/shop"),
        &format!("http://{ip}:9/health"),
    );
    spec.limits_toml = limits.into();
    AgentProc::start(dir, pki, &spec)
}

fn plan(dir: &Path, pki: &TestPki, cert: &(PathBuf, PathBuf), agent: &AgentProc) -> PathBuf {
    let plan = dir.join("plan.toml");
    write_plan(&plan, pki, cert, "shop", None, &[agent]);
    plan
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A TLS connection to the agent with `cert`, as a raw byte stream.
async fn tls_connect(
    pki: &TestPki,
    cert: &(PathBuf, PathBuf),
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = golivectl::tls::client_config(&pki.ca(), &cert.0, &cert.1).expect("client TLS");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// Reads until the peer closes (or `limit` passes); returns what came and
/// whether the connection was closed within the limit.
async fn read_until_closed<R: AsyncReadExt + Unpin>(r: &mut R, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

fn hello_request() -> Vec<u8> {
    let body = codec::encode(&Request::Hello(HelloRequest {
        client_version: "test".into(),
    }));
    let mut req = format!(
        "POST /v1/rpc HTTP/1.1\r\nHost: agent\r\nContent-Type: application/x-golive\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// Raises this process's open-file limit to at least `want` (the hard
/// limit permitting), for the flood's sockets.
fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want {
        assert!(
            hard >= want,
            "the flood needs {want} open files and the hard limit is {hard}"
        );
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
    }
}

/// Holds `hold` connections from `source` to `target` open, reopening each
/// as soon as the agent closes it, until `until`; returns how many were
/// opened. A third of them send the first bytes of a ClientHello and stall.
fn flood(target: SocketAddr, source: &str, hold: usize, until: Instant) -> u64 {
    let opened = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("flood runtime");
    let source: std::net::IpAddr = source.parse().expect("source ip");
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let end = tokio::time::Instant::from_std(until);
        for i in 0..hold {
            let opened = Arc::clone(&opened);
            tasks.spawn(async move {
                while tokio::time::Instant::now() < end {
                    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if socket.bind(SocketAddr::new(source, 0)).is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let conn = tokio::time::timeout_at(end, socket.connect(target)).await;
                    let mut tcp = match conn {
                        Ok(Ok(tcp)) => tcp,
                        // Accepted and reset before the connect was seen
                        // to complete: the agent shed it at once.
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            opened.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        _ => continue,
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    if i % 3 == 0 {
                        let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await;
                    }
                    // Hold it until the agent closes it, then reopen.
                    let mut buf = [0u8; 64];
                    loop {
                        match tokio::time::timeout_at(end, tcp.read(&mut buf)).await {
                            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                            Ok(Ok(_)) => {}
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    opened.load(Ordering::Relaxed)
}

#[test]
fn issue11_a_flood_from_one_peer_does_not_lock_operators_out() {
    const HOLD: usize = 2000;
    raise_fd_limit(HOLD as u64 + 200);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = agent_with(d, &pki, "127.0.0.200", "refusal_log_secs = 1");
    let ctl = Ctl::new(d);
    let alice = pki.operator("alice", "operator");
    let plan = plan(d, &pki, &alice, &agent);

    let target = agent.addr;
    let until = Instant::now() + Duration::from_secs(8);
    let attacker = std::thread::spawn(move || flood(target, "127.0.0.66", HOLD, until));
    // Let the flood fill every place it can.
    std::thread::sleep(Duration::from_secs(2));
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let r = ctl.run(&["status", s(&plan)]);
        let took = started.elapsed();
        assert_eq!(r.code, 0, "status failed during the flood: {}", r.text());
        assert!(r.stdout.contains("shop: current (none)"), "{}", r.text());
        times.push(took);
        std::thread::sleep(Duration::from_millis(200));
    }
    let opened = attacker.join().expect("flood thread");
    eprintln!("flood: {opened} connections opened from 127.0.0.66; operator status took {times:?}");
    assert!(
        opened > HOLD as u64,
        "the flood opened only {opened} connections: it did not reopen"
    );
    for took in &times {
        assert!(
            *took < Duration::from_secs(2),
            "an operator's status took {took:?} during the flood: {times:?}"
        );
    }
    // The refusals are summed up, not logged one line each.
    std::thread::sleep(Duration::from_millis(1500));
    let log = agent.log_text();
    let refusal_lines = log.lines().filter(|l| l.contains("refused")).count();
    assert!(
        refusal_lines < 40,
        "{refusal_lines} refusal lines for one flood:\n{log}"
    );
    assert!(
        log.contains("more connections in the last 1s: 127.0.0.66 x"),
        "{log}"
    );
    let r = ctl.run(&["status", s(&plan)]);
    assert!(
        r.stdout
            .contains("connection(s) before a request since it started"),
        "{}",
        r.text()
    );
}

#[test]
fn issue11_stalled_handshakes_slow_bodies_and_idle_connections_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = agent_with(
        d,
        &pki,
        "127.0.0.201",
        "handshake_timeout_secs = 1\nrequest_timeout_secs = 2\nidle_timeout_secs = 2\n\
         min_upload_bytes_per_sec = 1048576",
    );
    let alice = pki.operator("alice", "operator");
    let addr = agent.addr;
    let rt = runtime();
    rt.block_on(async {
        // A TCP connection that never says hello: closed at the handshake
        // deadline.
        let started = Instant::now();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(6)).await;
        assert!(closed, "a silent connection stayed open for 6 s");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "closed after {took:?}");

        // A body trickled a byte at a time: answered 408 at the request
        // deadline, not held for as long as the client likes.
        let mut tls = tls_connect(&pki, &alice, addr).await.unwrap();
        let req = hello_request();
        let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        tls.write_all(&req[..head_end]).await.unwrap();
        let started = Instant::now();
        let trickle = async {
            for b in &req[head_end..] {
                if tls.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
        let (answer, _) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(6), "answered after {took:?}");

        // Headers trickled: closed at the idle deadline.
        let mut tls = tls_connect(&pki, &alice, addr).await.unwrap();
        let started = Instant::now();
        let trickle = async {
            for b in b"POST /v1/rpc HTTP/1.1\r\nHost: agent\r\n" {
                if tls.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
        let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
        assert!(closed, "trickled headers kept the connection");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(6), "closed after {took:?}");

        // An upload trickled: answered 408 at request_timeout_secs plus its
        // size at min_upload_bytes_per_sec (2 + 1 s), its partial removed.
        let mut tls = tls_connect(&pki, &alice, addr).await.unwrap();
        let size = 1024 * 1024;
        let head = format!(
            "PUT /v1/artifacts/{} HTTP/1.1\r\nHost: agent\r\nx-golive-size: {size}\r\n\
             Content-Length: {size}\r\n\r\n",
            "ab".repeat(32)
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let trickle = async {
            for _ in 0..40 {
                if tls.write_all(&[0u8; 100]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
        let (answer, _) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(7), "answered after {took:?}");

        // A kept-alive connection after its request: closed when idle.
        let mut tls = tls_connect(&pki, &alice, addr).await.unwrap();
        tls.write_all(&hello_request()).await.unwrap();
        let started = Instant::now();
        let (answer, closed) = read_until_closed(&mut tls, Duration::from_secs(6)).await;
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
            "{answer:?}"
        );
        assert!(closed, "an idle keep-alive connection stayed open for 6 s");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1),
            "closed before idling: {took:?}"
        );
    });
    let partials: Vec<_> = std::fs::read_dir(agent.state_dir.join("artifacts"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(partials.is_empty(), "left in the store: {partials:?}");
    // The agent keeps serving.
    let ctl = Ctl::new(d);
    let plan = plan(d, &pki, &alice, &agent);
    let r = ctl.run(&["status", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
}

/// Rows in the audit table for one peer.
fn audit_count(agent: &AgentProc, peer: &str) -> i64 {
    agent
        .journal()
        .query_row(
            "SELECT count(*) FROM audit WHERE peer_name = ?1",
            [peer],
            |r| r.get(0),
        )
        .expect("count audit rows")
}

#[test]
fn issue11_a_revoked_certificate_is_refused_in_the_handshake_and_never_audited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let bob = pki.operator("bob", "operator");
    golivectl::pki::revoke(&pki.dir, s(&bob.0)).expect("revoke bob");
    let agent = agent_with(d, &pki, "127.0.0.202", "refusal_log_secs = 1");
    let addr = agent.addr;
    let rt = runtime();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let dir = pki.dir.clone();
            let bob = bob.clone();
            tasks.spawn(async move {
                let pki = TestPki { dir };
                // The client side of TLS 1.3 finishes first; the refusal
                // arrives as an alert on the first read.
                let Ok(mut tls) = tls_connect(&pki, &bob, addr).await else {
                    return true;
                };
                let _ = tls.write_all(&hello_request()).await;
                let (answer, closed) = read_until_closed(&mut tls, Duration::from_secs(5)).await;
                answer.is_empty() && closed
            });
        }
        while let Some(refused) = tasks.join_next().await {
            assert!(refused.unwrap(), "a revoked certificate got an answer");
        }
    });
    assert_eq!(audit_count(&agent, "bob"), 0, "a revoked peer was audited");
    let log = agent.log_text();
    assert!(
        log.contains("the client certificate is on the revocation list"),
        "{log}"
    );
    let alice = pki.operator("alice", "operator");
    let ctl = Ctl::new(d);
    let plan = plan(d, &pki, &alice, &agent);
    let r = ctl.run(&["status", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
}

/// `golive-agent serve` run to its exit (10 s limit).
fn serve_once(config: &Path) -> Run {
    let mut cmd = std::process::Command::new(bin("golive-agent"));
    cmd.args(["serve", "--config"]).arg(config);
    run_bounded(cmd, Duration::from_secs(10))
}

fn agent_config(pki: &TestPki, d: &Path, revoked: &Path) -> PathBuf {
    let (cert, key) = pki.agent("web", &["127.0.0.203"]);
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nname = \"web\"\nlisten = \"127.0.0.203:0\"\nstate_dir = {:?}\n\n\
             [tls]\nca = {:?}\ncert = {cert:?}\nkey = {key:?}\nrevoked = {revoked:?}\n",
            d.join("state"),
            pki.ca()
        ),
    )
    .unwrap();
    config
}

#[test]
fn issue11_a_missing_or_malformed_deny_list_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let list = d.join("etc/revoked.txt");
    let config = agent_config(&pki, d, &list);

    let r = serve_once(&config);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr
            .contains(&format!("cannot read the revocation list {}", s(&list))),
        "{}",
        r.text()
    );
    assert!(
        !d.join("state").exists(),
        "a refused start created the state directory"
    );

    std::fs::create_dir_all(list.parent().unwrap()).unwrap();
    std::fs::write(&list, "# revoked\n01:a2\nbob's old laptop\n").unwrap();
    let r = serve_once(&config);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr.contains(&format!("{}:3:", s(&list))),
        "{}",
        r.text()
    );
    assert!(
        r.stderr.contains("is not a certificate serial"),
        "{}",
        r.text()
    );
    assert!(!d.join("state").exists());

    let mut cmd = std::process::Command::new(bin("golive-agent"));
    cmd.args(["check-config", "--config"]).arg(&config);
    let r = run_bounded(cmd, Duration::from_secs(10));
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr.contains(&format!("{}:3:", s(&list))),
        "{}",
        r.text()
    );

    std::fs::write(&list, "").unwrap();
    let r = serve_once(&config);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stderr.contains("is empty"), "{}", r.text());
}

/// Waits (bounded) until `done` holds for the agent's log.
fn wait_log(agent: &AgentProc, what: &str, done: impl Fn(&str) -> bool) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if done(&agent.log_text()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} within 10 s:\n{}", agent.log_text());
}

/// CPU ticks the agent uses over `secs` seconds (100 ticks = one core-second).
fn idle_ticks(agent: &AgentProc, secs: u64) -> u64 {
    let before = agent.cpu_ticks();
    std::thread::sleep(Duration::from_secs(secs));
    agent.cpu_ticks() - before
}

/// Replaces `path` by rename, as `mv new revoked.txt` does.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn issue11_the_deny_list_reloads_fail_closed_and_the_watch_stays_idle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let etc = d.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let list = etc.join("revoked.txt");
    let bob = pki.operator("bob", "operator");
    let alice = pki.operator("alice", "operator");
    let bob_serial = golivectl::pki::revoke(&pki.dir, s(&bob.0)).expect("revoke");
    std::fs::copy(pki.revoked_list(), &list).unwrap();
    let good = std::fs::read_to_string(&list).unwrap();

    let mut spec = AgentSpec::new("web", "127.0.0.204");
    spec.apps_toml = app_toml("shop", &d.join("srv/shop"), "http://127.0.0.204:9/health");
    spec.revoked = Some(list.clone());
    let agent = AgentProc::start(d, &pki, &spec);
    let ctl = Ctl::new(d);
    let alice_plan = plan(d, &pki, &alice, &agent);
    let bob_plan = d.join("bob.toml");
    write_plan(&bob_plan, &pki, &bob, "shop", None, &[&agent]);
    let bob_refused = || {
        let r = ctl.run(&["status", s(&bob_plan)]);
        r.code == 2 && r.stdout.contains("revocation list")
    };
    assert!(bob_refused());
    assert!(idle_ticks(&agent, 2) <= 5, "the idle agent uses CPU");

    // Replaced by rename with garbage: the last good list stays, loudly.
    replace(&list, "# edited\nnot-a-serial\n");
    wait_log(&agent, "the bad list was reported", |l| {
        l.contains(&format!("{}:2:", s(&list)))
    });
    assert!(bob_refused(), "a malformed list un-revoked bob");
    let r = ctl.run(&["status", s(&alice_plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout.contains("WARNING: ")
            && r.stdout
                .contains("keeps its last good deny list (1 serials"),
        "{}",
        r.text()
    );
    // After the rename, the watch sleeps again (it spun on a core before).
    let ticks = idle_ticks(&agent, 3);
    assert!(ticks <= 5, "{ticks} ticks in 3 s after a rename");

    // Deleted: still refused; rewritten in place a piece at a time (not
    // atomically): never un-revoked half-way.
    std::fs::remove_file(&list).unwrap();
    wait_log(&agent, "the missing list was reported", |l| {
        l.contains(&format!("cannot read the revocation list {}", s(&list)))
    });
    assert!(bob_refused(), "a deleted list un-revoked bob");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&list).unwrap();
        let bytes = good.as_bytes();
        let half = bytes.len() - 3;
        f.write_all(&bytes[..half]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(bob_refused(), "a half-written list un-revoked bob");
        f.write_all(&bytes[half..]).unwrap();
    }
    wait_log(&agent, "the rewritten list was loaded", |l| {
        l.matches("reloaded: 1 serials").count() >= 1
    });
    assert!(bob_refused());
    let r = ctl.run(&["status", s(&alice_plan)]);
    assert!(!r.stdout.contains("WARNING"), "{}", r.text());

    // The directory removed and re-created (a config tree rsynced into
    // place): watched again, and a list without bob lets him back in.
    std::fs::remove_dir_all(&etc).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(&list, "# nobody revoked\n").unwrap();
    let started = Instant::now();
    while bob_refused() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the re-created list was not read within 10 s:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    replace(&list, &format!("{bob_serial}\n"));
    wait_log(&agent, "the watch re-armed on the new directory", |l| {
        l.matches("reloaded: 1 serials").count() >= 2
    });
    assert!(bob_refused());
    let ticks = idle_ticks(&agent, 3);
    assert!(
        ticks <= 5,
        "{ticks} ticks in 3 s after the directory came back"
    );
}

#[test]
fn issue11_a_plain_error_frame_sent_as_a_request_is_neither_echoed_nor_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::new(d);
    let agent = agent_with(d, &pki, "127.0.0.205", "");
    let alice = pki.operator("alice", "operator");
    let marker = "ECHO-ME-7f3a <script>";
    let body = codec::encode_plain_error(marker);
    let mut req = format!(
        "POST /v1/rpc HTTP/1.1\r\nHost: agent\r\nContent-Type: application/x-golive\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let addr = agent.addr;
    let answer = runtime().block_on(async {
        let mut tls = tls_connect(&pki, &alice, addr).await.unwrap();
        tls.write_all(&req).await.unwrap();
        read_until_closed(&mut tls, Duration::from_secs(5)).await.0
    });
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    assert!(text.contains("plain-error frame"), "{text:?}");
    assert!(
        !text.contains("ECHO-ME"),
        "the agent echoed the client's text: {text:?}"
    );
    let outcomes: Vec<String> = {
        let db = agent.journal();
        let mut stmt = db
            .prepare("SELECT outcome FROM audit WHERE peer_name = 'alice'")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(!outcomes[0].contains("ECHO-ME"), "{outcomes:?}");
}
