//! `golivectl demo`: the whole loop on one machine with nothing to configure.
//!
//! It makes a PKI, starts a real agent (in this process, over real mTLS on
//! loopback) and a small sample web app that serves whatever `current`
//! points at, then deploys v1 and v2, shows status, deploys a broken v3 that
//! the probes catch and switch back (exit 3), deploys a v4 whose high-severity
//! probe fails so the gate pauses and the demo records `go`, shows the
//! deployment record, and rolls v4 back to v2. It
//! checks each outcome over HTTP and fails (exit 1) when anything did not
//! happen as it says.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use golive_shared::identity::Role;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::output::{Exit, Out};
use crate::pki;

pub async fn demo(out: Out, keep: bool) -> anyhow::Result<Exit> {
    let tmp = tempfile::Builder::new().prefix("golive-demo-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    out.line(format!("golive demo in {}\n", dir.display()));

    // 1. PKI.
    let pki_dir = dir.join("pki");
    // The CA outlives the 30-day leaves: issued a second after the CA, a
    // leaf of the same length would outlive it and be refused.
    pki::ca_init(&pki_dir, 31)?;
    pki::issue_agent(
        &pki_dir,
        "demo-agent",
        &["127.0.0.1".into(), "localhost".into()],
        30,
    )?;
    pki::issue_operator(&pki_dir, "demo-operator", Role::Operator, 30)?;
    out.line("1. made a CA, an agent certificate and an operator certificate (role operator)");

    // 2. The sample app: serves ROOT/current/index.html and ROOT/current/health.
    let root = dir.join("srv/shop");
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = app_listener.local_addr()?;
    let app_task = tokio::spawn(sample_app(app_listener, root.clone()));
    out.line(format!(
        "2. started the sample app on http://{app_addr}/ (serves {}/current)",
        root.display()
    ));

    // The app's database: the orders a rollback must not lose.
    std::fs::create_dir_all(root.join("shared"))?;
    let db = rusqlite::Connection::open(root.join("shared/orders.db"))?;
    db.execute_batch(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL);
         INSERT INTO orders (item) VALUES ('olive oil'), ('almonds');",
    )?;
    drop(db);

    // 3. The agent, in this process, on a real mTLS socket.
    let agent_toml = dir.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            r#"[agent]
name = "demo-agent"
listen = "127.0.0.1:0"
state_dir = "agent-state"

[tls]
ca = "pki/ca.crt"
cert = "pki/agents/demo-agent.crt"
key = "pki/agents/demo-agent.key"
revoked = "pki/revoked.txt"

[apps.shop]
root = "{root}"
keep_releases = 3
shared = ["uploads/"]

[[apps.shop.probes]]
kind = "http"
name = "health"
url = "http://{app_addr}/health"
expect_status = [200]
body_contains = "ok"
severity = "critical"

[[apps.shop.probes]]
kind = "http"
name = "checkout"
url = "http://{app_addr}/checkout"
expect_status = [200]
severity = "high"

[[apps.shop.databases]]
engine = "sqlite"
name = "orders"
path = "{root}/shared/orders.db"

[apps.shop.maintenance]
flag_file = "shared/maintenance.flag"
check_url = "http://{app_addr}/"
"#,
            root = root.display()
        ),
    )?;
    let config = golive_shared::config::load(&agent_toml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let prepared = golive_agent::prepare(config).await?;
    let agent_addr = prepared.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent_task = tokio::spawn(prepared.serve(async {
        let _ = stop_rx.await;
    }));
    out.line(format!(
        "3. started golive-agent on {agent_addr} (mutual TLS 1.3)\n"
    ));

    let result = walkthrough(out, &dir, agent_addr, app_addr).await;

    let _ = stop_tx.send(());
    let _ = agent_task.await;
    app_task.abort();
    if keep {
        let kept = tmp.keep();
        out.line(format!("\nkept the demo directory: {}", kept.display()));
    }
    let failures = result?;
    if failures.is_empty() {
        out.line("\ndemo: every step did what it said. Try it on your own hosts: see README.md.");
        out.event(&json!({"event": "demo", "ok": true}));
        Ok(Exit::Done)
    } else {
        out.line(format!("\ndemo FAILED: {}", failures.join("; ")));
        out.event(&json!({"event": "demo", "ok": false, "failures": failures}));
        Ok(Exit::Failed)
    }
}

async fn walkthrough(
    out: Out,
    dir: &Path,
    agent_addr: std::net::SocketAddr,
    app_addr: std::net::SocketAddr,
) -> anyhow::Result<Vec<String>> {
    let state = dir.join("ctl-state");
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: &str| {
        out.line(format!("   {} {what}", if ok { "ok:" } else { "FAILED:" }));
        if !ok {
            failures.push(what.to_string());
        }
    };

    let plan = |version: &str| -> anyhow::Result<PathBuf> {
        let artifact = dir.join(format!("dist/shop-{version}.tar.gz"));
        let health = match version {
            "v3" => "broken",
            "v5" => "fail-after 3",
            _ => "ok",
        };
        // v5 is watched: each host rolls itself back when its health
        // fails for a second, with no controller running.
        let watchdog = if version == "v5" {
            "\n[watchdog]\nwindow = \"60s\"\ninterval = \"250ms\"\n\n\
             [[watchdog.triggers]]\nprobe = \"health\"\nfailing = true\nfor = \"1s\"\n"
        } else {
            ""
        };
        build_artifact(
            &artifact,
            &format!("<h1>shop {version}</h1>\n"),
            health,
            version != "v4",
        )?;
        let path = dir.join(format!("golive-{version}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"app = "shop"

[release]
id = "{version}"
artifact = "dist/shop-{version}.tar.gz"

[tls]
ca = "pki/ca.crt"
cert = "pki/operators/demo-operator.crt"
key = "pki/operators/demo-operator.key"

[[hosts]]
name = "demo-agent"
address = "{agent_addr}"

[deploy]
backup = "verified"
maintenance = true
{watchdog}"#
            ),
        )?;
        Ok(path)
    };

    out.line("4. deploy v1 (first release)");
    let (exit, _) =
        super::deploy::deploy_with_id(out, &state, &plan("v1")?, &Default::default()).await?;
    check(exit == Exit::Done, "deploy v1 exits 0");
    check(
        get(app_addr, "/").await.contains("shop v1"),
        "the app serves v1",
    );

    out.line("\n5. deploy v2");
    let (exit, _) =
        super::deploy::deploy_with_id(out, &state, &plan("v2")?, &Default::default()).await?;
    check(exit == Exit::Done, "deploy v2 exits 0");
    check(
        get(app_addr, "/").await.contains("shop v2"),
        "the app serves v2",
    );

    let verified = verified_backups(&plan("v2")?).await;
    check(
        verified >= 2,
        &format!("each deploy took a verified pre-deploy backup ({verified} listed)"),
    );

    out.line("\n6. status");
    let exit = super::status::status(out, &state, &plan("v2")?).await?;
    check(exit == Exit::Done, "status exits 0");

    out.line(
        "\n7. deploy v3, whose health check fails: the probe catches it and golive switches back",
    );
    let (exit, _) =
        super::deploy::deploy_with_id(out, &state, &plan("v3")?, &Default::default()).await?;
    check(exit == Exit::RolledBack, "deploy v3 exits 3 (rolled back)");
    check(
        get(app_addr, "/").await.contains("shop v2"),
        "the app still serves v2",
    );

    out.line(
        "\n8. deploy v4, whose checkout page is missing (a high-severity probe): the gate pauses \
         for a human decision; the demo answers `golivectl go ID --by demo-lead`",
    );
    let v4_plan = plan("v4")?;
    let defaults = super::deploy::Options::default();
    let deploying = super::deploy::deploy_with_id(out, &state, &v4_plan, &defaults);
    let deciding = decide_when_paused(out, &state);
    let (deployed, decided) = tokio::join!(deploying, deciding);
    let (exit, v4_id) = deployed?;
    check(
        decided.is_ok(),
        "the deployment paused and `go` was recorded",
    );
    check(
        exit == Exit::Done,
        "deploy v4 continues after go and exits 0",
    );
    check(
        get(app_addr, "/").await.contains("shop v4"),
        "the app serves v4",
    );

    out.line("\n9. the deployment record: steps, probe figures before and after, gate, decision");
    if let Some(id) = &v4_id {
        super::history::show(out, &state, id, crate::cli::RecordFormat::Markdown, None).await?;
    }

    out.line("\n10. roll the v4 deployment back");
    match v4_id {
        Some(id) => {
            let exit = super::deploy::rollback(out, &state, &id, None).await?;
            check(exit == Exit::Done, "rollback exits 0");
        }
        None => check(false, "deploy v4 recorded a deployment id"),
    }
    check(
        get(app_addr, "/").await.contains("shop v2"),
        "the release before it (v2) serves again",
    );

    out.line(
        "\n11. deploy v5 with a watchdog: it passes its gate, then starts failing 3 s later; no \
         golivectl runs while the agent watches, and it rolls its host back by itself",
    );
    let v5_plan = plan("v5")?;
    let (exit, v5_id) = super::deploy::deploy_with_id(out, &state, &v5_plan, &defaults).await?;
    check(exit == Exit::Done, "deploy v5 exits 0 and is watched");
    let started = std::time::Instant::now();
    let mut back = false;
    while started.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if get(app_addr, "/").await.contains("shop v2") {
            back = true;
            break;
        }
    }
    check(
        back,
        &format!(
            "the agent rolled v5 back to v2 alone, {:.1} s after the deploy ended",
            started.elapsed().as_secs_f64()
        ),
    );

    out.line(
        "\n12. what the host did, recorded when the controller looks, and the record as a page",
    );
    match v5_id {
        Some(id) => {
            super::history::show(out, &state, &id, crate::cli::RecordFormat::Markdown, None)
                .await?;
            let rolled = crate::journal::Journal::open(&state)?
                .deployment(&id)?
                .is_some_and(|d| {
                    d.state == "rolled_back"
                        && d.actions.iter().any(|a| a.by.starts_with("watchdog on"))
                });
            check(
                rolled,
                "the record says the watchdog on the host rolled it back",
            );
            let page = dir.join(format!("record-{id}.html"));
            super::history::show(
                out,
                &state,
                &id,
                crate::cli::RecordFormat::Html,
                Some(&page),
            )
            .await?;
            check(
                page.is_file(),
                "the deployment record is written as an HTML page",
            );
        }
        None => check(false, "deploy v5 recorded a deployment id"),
    }
    Ok(failures)
}

/// Plays the human at a pause: waits (up to 60 s) for the newest deployment
/// to be paused with a deploy waiting on it, then records `go`.
async fn decide_when_paused(out: Out, state: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(60) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let journal = crate::journal::Journal::open(state)?;
        let Some(id) = journal.deployment_ids(1)?.into_iter().next() else {
            continue;
        };
        let Some(d) = journal.deployment(&id)? else {
            continue;
        };
        if d.state == "paused" && d.waiting_until.is_some() {
            let exit = super::decide::decide(
                out,
                state,
                &id,
                "demo-lead",
                true,
                Some("checkout is switched off for this release"),
            )
            .await?;
            anyhow::ensure!(exit == Exit::Done, "go exited {exit}");
            return Ok(());
        }
    }
    anyhow::bail!("no deployment paused within 60 s")
}

/// Verified pre-deploy backups the agent lists (0 on any error).
async fn verified_backups(plan_path: &Path) -> usize {
    let Ok(plan) = crate::plan::load(plan_path) else {
        return 0;
    };
    let req = golive_shared::protocol::Request::ListBackups(
        golive_shared::protocol::ListBackupsRequest {
            app: plan.app.clone(),
        },
    );
    match plan.hosts[0].client.call(&req).await {
        Ok(golive_shared::protocol::Response::Backups(list)) => list
            .iter()
            .filter(|b| b.label == "pre-deploy" && b.verified == Some(true))
            .count(),
        _ => 0,
    }
}

/// A release archive: index.html and a health file the app reports.
fn build_artifact(path: &Path, index: &str, health: &str, checkout: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().expect("artifact has a parent"))?;
    let file = std::fs::File::create(path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut files = vec![("index.html", index), ("health", health)];
    if checkout {
        files.push(("checkout", "<h1>checkout</h1>\n"));
    }
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, body.as_bytes())?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}

/// GET over plain HTTP; the body, or an empty string on any failure.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A release whose `health` says `fail-after SECONDS` answers normally
/// until SECONDS after the first health request it served, then fails: a
/// release that goes bad a while after its gate passed, for the watchdog.
fn failing_yet(current: &Path, health: &str) -> bool {
    use std::sync::{Mutex, OnceLock};
    static FIRST_SEEN: OnceLock<Mutex<std::collections::HashMap<PathBuf, std::time::Instant>>> =
        OnceLock::new();
    let Some(secs) = health
        .strip_prefix("fail-after ")
        .and_then(|n| n.trim().parse::<u64>().ok())
    else {
        return true;
    };
    let release = std::fs::canonicalize(current).unwrap_or_else(|_| current.to_path_buf());
    let mut seen = FIRST_SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let first = *seen.entry(release).or_insert_with(std::time::Instant::now);
    first.elapsed() >= std::time::Duration::from_secs(secs)
}

/// The sample app: `/` serves `ROOT/current/index.html`; `/health` answers
/// 200 when `ROOT/current/health` says `ok`, 500 otherwise; every path
/// answers 503 while `ROOT/shared/maintenance.flag` exists (what the shipped
/// nginx snippet does). It reads the files on every request, so a switch of
/// `current` shows at once.
async fn sample_app(listener: tokio::net::TcpListener, root: PathBuf) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let root = root.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let current = root.join("current");
                    let flag = root.join("shared/maintenance.flag");
                    async move {
                        let (status, body) = match req.uri().path() {
                            _ if flag.exists() => (503, "down for maintenance\n".to_string()),
                            "/checkout" => {
                                match std::fs::read_to_string(current.join("checkout")) {
                                    Ok(s) => (200, s),
                                    Err(_) => (404, "no checkout in this release\n".into()),
                                }
                            }
                            "/health" => {
                                let h = std::fs::read_to_string(current.join("health"))
                                    .unwrap_or_default();
                                if h.trim() == "ok" || !failing_yet(&current, h.trim()) {
                                    (200, "ok\n".to_string())
                                } else {
                                    (500, format!("unhealthy: {h}"))
                                }
                            }
                            _ => match std::fs::read_to_string(current.join("index.html")) {
                                Ok(s) => (200, s),
                                Err(_) => (404, "no release is live\n".into()),
                            },
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .expect("static parts"),
                        )
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
