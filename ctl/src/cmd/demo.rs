//! `golivectl demo`: the whole loop on one machine with nothing to configure.
//!
//! It makes a PKI, starts three real agents (`web1`, `web2`, `web3`, in this
//! process, over real mTLS on loopback), each beside a small sample web app
//! that serves whatever its `current` points at, then: deploys v1 host by
//! host (maintenance, verified backups), runs the probe matrix, deploys v2
//! canary-then-rest (`[[waves]]`: web1 alone, probed, gated and soaked,
//! then web2 and web3 at once), shows status, deploys a broken v3 that the
//! canary's probes catch (switched back, the rest never touched, exit 3),
//! deploys a v4 whose high-severity probe fails so the gate pauses each wave
//! and the demo records `go`, shows that record, rolls v4 back to v2, and
//! deploys a watched v5 that every host's watchdog rolls back by itself
//! with no controller running; the last record is written as HTML. It
//! checks each outcome (over HTTP and in the journal) and fails (exit 1)
//! when anything did not happen as it says. Everything it starts is
//! stopped, and its directory removed unless `--keep`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use golive_shared::identity::Role;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::output::{Exit, Out};
use crate::pki;

/// The demo's hosts; the first is the canary.
const HOSTS: [&str; 3] = ["web1", "web2", "web3"];

/// One demo host: its agent and the sample app beside it.
struct Host {
    name: &'static str,
    agent: SocketAddr,
    app: SocketAddr,
}

/// What the demo started, stopped on every path out.
#[derive(Default)]
struct Running {
    agents: Vec<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    apps: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        for (stop, task) in self.agents {
            let _ = stop.send(());
            let _ = task.await;
        }
        for app in self.apps {
            app.abort();
        }
    }
}

pub async fn demo(out: Out, keep: bool) -> anyhow::Result<Exit> {
    let tmp = tempfile::Builder::new().prefix("golive-demo-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    out.line(format!("golive demo in {}\n", dir.display()));
    let started = std::time::Instant::now();

    let mut running = Running::default();
    let result = match start(out, &dir, &mut running).await {
        Ok(hosts) => walkthrough(out, &dir, &hosts).await,
        Err(e) => Err(e),
    };
    running.stop().await;
    if keep {
        let kept = tmp.keep();
        out.line(format!("\nkept the demo directory: {}", kept.display()));
    }
    let failures = result?;
    let secs = started.elapsed().as_secs_f64();
    if failures.is_empty() {
        out.line(format!(
            "\ndemo: every step did what it said ({secs:.1} s). Try it on your own hosts: see README.md."
        ));
        out.event(&json!({"event": "demo", "ok": true, "secs": secs}));
        Ok(Exit::Done)
    } else {
        out.line(format!("\ndemo FAILED: {}", failures.join("; ")));
        out.event(&json!({"event": "demo", "ok": false, "failures": failures, "secs": secs}));
        Ok(Exit::Failed)
    }
}

/// The PKI, then each host's sample app and agent; what it starts goes into
/// `running` as it starts, so a failure part-way still stops it.
async fn start(out: Out, dir: &Path, running: &mut Running) -> anyhow::Result<Vec<Host>> {
    // 1. PKI.
    let pki_dir = dir.join("pki");
    // The CA outlives the 30-day leaves: issued a second after the CA, a
    // leaf of the same length would outlive it and be refused.
    pki::ca_init(&pki_dir, 31)?;
    for name in HOSTS {
        pki::issue_agent(
            &pki_dir,
            name,
            &["127.0.0.1".into(), "localhost".into()],
            30,
        )?;
    }
    pki::issue_operator(&pki_dir, "demo-operator", Role::Operator, 30)?;
    out.line(format!(
        "1. made a CA, agent certificates for {} and an operator certificate (role operator)",
        HOSTS.join(", ")
    ));

    let mut hosts = Vec::new();
    for name in HOSTS {
        // The sample app: serves ROOT/current/index.html and ROOT/current/health.
        let root = dir.join(name).join("srv/shop");
        let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let app = app_listener.local_addr()?;
        running
            .apps
            .push(tokio::spawn(sample_app(app_listener, root.clone())));

        // The app's database: the orders a rollback must not lose.
        std::fs::create_dir_all(root.join("shared"))?;
        let db = rusqlite::Connection::open(root.join("shared/orders.db"))?;
        db.execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL);
             INSERT INTO orders (item) VALUES ('olive oil'), ('almonds');",
        )?;
        drop(db);

        // The agent, in this process, on a real mTLS socket.
        let agent_toml = dir.join(format!("{name}.toml"));
        std::fs::write(&agent_toml, agent_config(name, &root, app))?;
        let config =
            golive_shared::config::load(&agent_toml).map_err(|e| anyhow::anyhow!("{e}"))?;
        let prepared = golive_agent::prepare(config).await?;
        let agent = prepared.local_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(prepared.serve(async {
            let _ = stop_rx.await;
        }));
        running.agents.push((stop_tx, task));
        out.line(format!(
            "2. {name}: golive-agent on {agent} (mutual TLS 1.3), its sample app on \
             http://{app}/ (serves {}/current)",
            root.display()
        ));
        hosts.push(Host { name, agent, app });
    }
    out.line("");
    Ok(hosts)
}

/// A host's agent config: the app `shop` with a critical health probe, a
/// high-severity checkout probe, its SQLite orders and maintenance.
fn agent_config(name: &str, root: &Path, app: SocketAddr) -> String {
    format!(
        r#"[agent]
name = "{name}"
listen = "127.0.0.1:0"
state_dir = "{name}-state"

[tls]
ca = "pki/ca.crt"
cert = "pki/agents/{name}.crt"
key = "pki/agents/{name}.key"
revoked = "pki/revoked.txt"

[apps.shop]
root = "{root}"
keep_releases = 3
shared = ["uploads/"]

[[apps.shop.probes]]
kind = "http"
name = "health"
url = "http://{app}/health"
expect_status = [200]
body_contains = "ok"
severity = "critical"

[[apps.shop.probes]]
kind = "http"
name = "checkout"
url = "http://{app}/checkout"
expect_status = [200]
severity = "high"

[[apps.shop.databases]]
engine = "sqlite"
name = "orders"
path = "{root}/shared/orders.db"

[apps.shop.maintenance]
flag_file = "shared/maintenance.flag"
check_url = "http://{app}/"
"#,
        root = root.display()
    )
}

/// Canary-then-rest: web1 alone (probed, gated, soaked 1 s), then the rest
/// at once.
const WAVES: &str = "\n[[waves]]\nname = \"canary\"\nhosts = [\"web1\"]\nsoak = \"1s\"\n\n\
                     [[waves]]\nname = \"rest\"\npercent = 100\n";

async fn walkthrough(out: Out, dir: &Path, hosts: &[Host]) -> anyhow::Result<Vec<String>> {
    let state = dir.join("ctl-state");
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: &str| {
        out.line(format!("   {} {what}", if ok { "ok:" } else { "FAILED:" }));
        if !ok {
            failures.push(what.to_string());
        }
    };
    let serving = |version: &'static str| async move {
        for h in hosts {
            if !get(h.app, "/").await.contains(&format!("shop {version}")) {
                return false;
            }
        }
        true
    };

    // v1 and v2 go host by host with maintenance (fleet-wide, so not with
    // waves yet); v2 onwards canary-then-rest.
    let plan = |version: &str| -> anyhow::Result<PathBuf> {
        let artifact = dir.join(format!("dist/shop-{version}.tar.gz"));
        let health = match version {
            "v3" => "broken",
            "v5" => "fail-after 5",
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
        let waves = version != "v1";
        let mut text = format!(
            r#"app = "shop"

[release]
id = "{version}"
artifact = "dist/shop-{version}.tar.gz"

[tls]
ca = "pki/ca.crt"
cert = "pki/operators/demo-operator.crt"
key = "pki/operators/demo-operator.key"
"#
        );
        for h in hosts {
            text.push_str(&format!(
                "\n[[hosts]]\nname = \"{}\"\naddress = \"{}\"\n",
                h.name, h.agent
            ));
        }
        text.push_str(&format!(
            "\n[deploy]\nbackup = \"verified\"\nmaintenance = {}\n{watchdog}{}",
            !waves,
            if waves { WAVES } else { "" }
        ));
        let path = dir.join(format!("golive-{version}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let defaults = super::deploy::Options::default();

    out.line(
        "3. deploy v1 (the first release), host by host: stage, maintenance on, verified backup, \
         switch, maintenance off, probes, gate",
    );
    let (exit, _) =
        crate::deployment::start::deploy_with_id(out, &state, &plan("v1")?, &defaults).await?;
    check(exit == Exit::Done, "deploy v1 exits 0");
    check(serving("v1").await, "web1, web2 and web3 serve v1");

    out.line("\n4. the probe matrix: every probe on every host, and the gate's verdict");
    let exit = super::probe::probe(out, &plan("v1")?, &[]).await?;
    check(exit == Exit::Done, "probe says GO (exit 0)");

    out.line(
        "\n5. deploy v2 canary-then-rest: wave 1 is web1 alone (switched, probed, gated, soaked \
         1 s); only then wave 2, web2 and web3 at once",
    );
    let (exit, v2_id) =
        crate::deployment::start::deploy_with_id(out, &state, &plan("v2")?, &defaults).await?;
    check(exit == Exit::Done, "deploy v2 exits 0");
    check(serving("v2").await, "web1, web2 and web3 serve v2");
    let order = match &v2_id {
        Some(id) => canary_first(&state, id)?,
        None => Err("deploy v2 recorded no deployment id".into()),
    };
    check(
        order.is_ok(),
        &match order {
            Ok(()) => "the canary web1 was switched and passed its gate before web2 and web3 \
                       were switched"
                .to_string(),
            Err(why) => format!("canary first: {why}"),
        },
    );
    let mut verified = Vec::new();
    for h in hosts {
        verified.push(verified_backups(&plan("v2")?, h.name).await);
    }
    check(
        verified.iter().all(|&n| n >= 2),
        &format!(
            "each deploy took a verified pre-deploy backup on each host ({verified:?} listed)"
        ),
    );

    out.line("\n6. status");
    let exit = super::status::status(out, &state, &plan("v2")?).await?;
    check(exit == Exit::Done, "status exits 0");

    out.line(
        "\n7. deploy v3, whose health check fails: the canary's probe catches it, golive \
         switches web1 back, and the rest never get it",
    );
    let (exit, v3_id) =
        crate::deployment::start::deploy_with_id(out, &state, &plan("v3")?, &defaults).await?;
    check(exit == Exit::RolledBack, "deploy v3 exits 3 (rolled back)");
    check(serving("v2").await, "web1, web2 and web3 still serve v2");
    let untouched = match &v3_id {
        Some(id) => crate::journal::Journal::open(&state)?
            .deployment(id)?
            .is_some_and(|d| {
                !d.steps
                    .iter()
                    .any(|s| s.step == "activate" && s.host != HOSTS[0])
            }),
        None => false,
    };
    check(untouched, "web2 and web3 were never switched to v3");

    out.line(
        "\n8. deploy v4, whose checkout page is missing (a high-severity probe): the gate pauses \
         each wave for a human decision; the demo answers `golivectl go ID --by demo-lead`",
    );
    let v4_plan = plan("v4")?;
    let deploying = crate::deployment::start::deploy_with_id(out, &state, &v4_plan, &defaults);
    let deciding = decide_when_paused(out, &state);
    let (deployed, decided) = tokio::join!(deploying, deciding);
    let (exit, v4_id) = deployed?;
    check(
        matches!(decided, Ok(n) if n >= 2),
        &format!(
            "the deployment paused on each wave and `go` was recorded ({})",
            match &decided {
                Ok(n) => format!("{n} decision(s)"),
                Err(e) => e.to_string(),
            }
        ),
    );
    check(
        exit == Exit::Done,
        "deploy v4 continues after go and exits 0",
    );
    check(serving("v4").await, "web1, web2 and web3 serve v4");

    out.line(
        "\n9. the deployment record: waves, steps, probe figures before and after, gate, decisions",
    );
    if let Some(id) = &v4_id {
        super::history::show(out, &state, id, crate::cli::RecordFormat::Markdown, None).await?;
    }

    out.line("\n10. roll the v4 deployment back");
    match v4_id {
        Some(id) => {
            let exit = super::rollback::rollback(out, &state, &id, None, None).await?;
            check(exit == Exit::Done, "rollback exits 0");
        }
        None => check(false, "deploy v4 recorded a deployment id"),
    }
    check(
        serving("v2").await,
        "the release before it (v2) serves again on every host",
    );

    out.line(
        "\n11. deploy v5 canary-then-rest with a watchdog: it passes its gates, then starts \
         failing 5 s after each host's first health check; no golivectl runs while the agents \
         watch, and each rolls its host back by itself",
    );
    let v5_plan = plan("v5")?;
    let (exit, v5_id) =
        crate::deployment::start::deploy_with_id(out, &state, &v5_plan, &defaults).await?;
    check(exit == Exit::Done, "deploy v5 exits 0 and is watched");
    let started = std::time::Instant::now();
    let mut back = false;
    while started.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if serving("v2").await && watchdogs_rolled_back(&v5_plan).await {
            back = true;
            break;
        }
    }
    check(
        back,
        &format!(
            "the agents rolled v5 back to v2 alone on every host, {:.1} s after the deploy ended",
            started.elapsed().as_secs_f64()
        ),
    );

    out.line(
        "\n12. what the hosts did, recorded when the controller looks, and the record as a page",
    );
    match v5_id {
        Some(id) => {
            super::history::show(out, &state, &id, crate::cli::RecordFormat::Markdown, None)
                .await?;
            let rolled = crate::journal::Journal::open(&state)?
                .deployment(&id)?
                .is_some_and(|d| {
                    d.state == "rolled_back"
                        && HOSTS
                            .iter()
                            .all(|h| d.actions.iter().any(|a| a.by == format!("watchdog on {h}")))
                });
            check(
                rolled,
                "the record says the watchdog on each host rolled it back",
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

/// From the journal: the canary (the first host) was activated and passed
/// its gate before any other host's activation started.
fn canary_first(state: &Path, id: &str) -> anyhow::Result<Result<(), String>> {
    let Some(d) = crate::journal::Journal::open(state)?.deployment(id)? else {
        return Ok(Err(format!("no deployment {id} in the journal")));
    };
    let canary = HOSTS[0];
    let gated = d
        .steps
        .iter()
        .filter(|s| s.host == canary && s.step == "gate" && s.state == "ok")
        .filter_map(|s| s.finished_at)
        .min();
    let Some(gated) = gated else {
        return Ok(Err(format!("{canary} has no passed gate step")));
    };
    for rest in &HOSTS[1..] {
        let Some(switched) = d
            .steps
            .iter()
            .find(|s| s.host == *rest && s.step == "activate")
        else {
            return Ok(Err(format!("{rest} was not switched")));
        };
        if switched.started_at < gated {
            return Ok(Err(format!(
                "{rest} was switched before {canary} passed its gate"
            )));
        }
    }
    Ok(Ok(()))
}

/// Plays the human at each pause: while the newest deployment runs (up to
/// 60 s), records `go` whenever it is paused with a deploy waiting on it,
/// then waits for the pause to be taken up before looking again. The
/// number of decisions recorded.
async fn decide_when_paused(out: Out, state: &Path) -> anyhow::Result<usize> {
    let started = std::time::Instant::now();
    let mut decided = 0;
    let mut seen_running = false;
    while started.elapsed() < std::time::Duration::from_secs(60) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let journal = crate::journal::Journal::open(state)?;
        let Some(id) = journal.deployment_ids(1)?.into_iter().next() else {
            continue;
        };
        let Some(d) = journal.deployment(&id)? else {
            continue;
        };
        // The newest deployment may still be the previous one for a moment.
        if d.release != "v4" {
            continue;
        }
        match d.state.as_str() {
            "paused" if d.waiting_until.is_some() => {
                seen_running = true;
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
                decided += 1;
                // Until the deploy takes the decision up (it polls every
                // 500 ms), the state still says paused.
                let taken = std::time::Instant::now();
                while taken.elapsed() < std::time::Duration::from_secs(10) {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    let now = crate::journal::Journal::open(state)?.deployment(&id)?;
                    if now.is_none_or(|n| n.state != "paused") {
                        break;
                    }
                }
            }
            "running" | "paused" => seen_running = true,
            _ if seen_running || decided > 0 => return Ok(decided),
            _ => {}
        }
    }
    anyhow::bail!("the v4 deployment did not end within 60 s ({decided} decision(s) recorded)")
}

/// Every host's agent says its watchdog rolled the app back (false on any
/// error).
async fn watchdogs_rolled_back(plan_path: &Path) -> bool {
    let Ok(plan) = crate::plan::load(plan_path) else {
        return false;
    };
    for host in &plan.hosts {
        let Ok(status) = crate::jobs::agent_status(&host.client).await else {
            return false;
        };
        let rolled = status.apps.iter().any(|a| {
            a.watchdog
                .as_ref()
                .is_some_and(|w| w.state == golive_shared::protocol::WatchdogState::RolledBack)
        });
        if !rolled {
            return false;
        }
    }
    true
}

/// Verified pre-deploy backups the agent of `host` lists (0 on any error).
async fn verified_backups(plan_path: &Path, host: &str) -> usize {
    let Ok(plan) = crate::plan::load(plan_path) else {
        return 0;
    };
    let Some(host) = plan.hosts.iter().find(|h| h.name == host) else {
        return 0;
    };
    let req = golive_shared::protocol::Request::ListBackups(
        golive_shared::protocol::ListBackupsRequest {
            app: plan.app.clone(),
        },
    );
    match host.client.call(&req).await {
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
