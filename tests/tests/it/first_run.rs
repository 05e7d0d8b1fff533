//! Issue 16, part 9: `golivectl init` writes a plan and an agent config that
//! work as written once their certificates exist: the printed next steps,
//! run for real (with the agent's address moved to a free loopback port, as
//! the operator edits it), reach a running agent and a dry run. And
//! `golivectl demo` runs its tour (three agents, canary-then-rest) and
//! checks its own outcome.
//! Loopback 127.0.0.220 belongs to this module.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use golive_tests::*;

#[test]
fn issue16_init_writes_a_plan_and_agent_config_that_work_after_the_printed_steps() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let ctl = Ctl::new(dir.path());
    let run = ctl.run(&["init", "--dir", s(&site)]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("golivectl ca init --dir"),
        "{}",
        run.text()
    );
    let plan = site.join("golive.toml");
    let agent_toml = site.join("agent.toml");
    assert!(plan.is_file() && agent_toml.is_file());
    // A second init changes nothing without --force.
    std::fs::write(&plan, "# edited\n").unwrap();
    let again = ctl.run(&["init", "--dir", s(&site)]);
    assert_eq!(again.code, 2, "{}", again.text());
    assert!(
        again.stderr.contains("golive.toml") && again.stderr.contains("--force"),
        "{}",
        again.text()
    );
    assert_eq!(std::fs::read_to_string(&plan).unwrap(), "# edited\n");
    let forced = ctl.run(&["init", "--dir", s(&site), "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.text());

    // The printed steps: a CA, the agent's and the operator's certificates.
    let pki = site.join("pki");
    for args in [
        vec!["ca", "init", "--dir", s(&pki)],
        vec![
            "cert",
            "agent",
            "web1",
            "--san",
            "127.0.0.220",
            "--dir",
            s(&pki),
        ],
        vec![
            "cert",
            "operator",
            "alice",
            "--role",
            "operator",
            "--dir",
            s(&pki),
        ],
    ] {
        let r = ctl.run(&args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.text());
    }
    // The operator's edits: where the agent listens, where the app is.
    let port = free_port("127.0.0.220");
    let address = format!("127.0.0.220:{port}");
    let edit = |path: &Path, from: &str, to: &str| {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{from} in {}", path.display());
        std::fs::write(path, text.replace(from, to)).unwrap();
    };
    edit(
        &agent_toml,
        "listen = \"127.0.0.1:7443\"",
        &format!("listen = \"{address}\""),
    );
    edit(
        &plan,
        "address = \"127.0.0.1:7443\"",
        &format!("address = \"{address}\""),
    );
    std::fs::create_dir_all(site.join("srv/shop")).unwrap();
    let check = run_bounded(
        {
            let mut c = Command::new(bin("golive-agent"));
            c.args(["check-config", "--config", s(&agent_toml)]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(check.code, 0, "{}", check.text());

    // The plan names the release's archive: built first.
    artifact(&site.join("dist/shop-v1.tar.gz"), &[("index.html", b"v1")]);
    let agent = KillOnDrop(
        Command::new(bin("golive-agent"))
            .args(["serve", "--config", s(&agent_toml)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent"),
    );
    let started = Instant::now();
    let status = loop {
        let r = ctl.run(&["status", s(&plan)]);
        if r.code == 0 || started.elapsed() > Duration::from_secs(20) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code, 0, "{}", status.text());
    assert!(
        status.stdout.contains("web1") && status.stdout.contains("shop: current (none)"),
        "{}",
        status.text()
    );
    // A dry run: everything checked, nothing changed.
    let dry = ctl.run(&["deploy", s(&plan), "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.text());
    assert!(!site.join("srv/shop/current").exists());
    drop(agent);
}

#[test]
fn issue16_the_demo_runs_the_whole_loop_canary_then_rest_and_checks_its_own_outcome() {
    let run = run_bounded(
        {
            let mut c = Command::new(bin("golivectl"));
            c.arg("demo").stdin(Stdio::null());
            c
        },
        Duration::from_secs(120),
    );
    assert_eq!(run.code, 0, "{}", run.text());
    for said in [
        "ok: web1, web2 and web3 serve v1",
        "ok: probe says GO (exit 0)",
        "ok: the canary web1 was switched and passed its gate before web2 and web3 were switched",
        "ok: deploy v3 exits 3 (rolled back)",
        "ok: web2 and web3 were never switched to v3",
        "ok: deploy v4 continues after go and exits 0",
        "ok: the agents rolled v5 back to v2 alone on every host",
        "ok: the record says the watchdog on each host rolled it back",
        "ok: the deployment record is written as an HTML page",
        "demo: every step did what it said",
    ] {
        assert!(
            run.stdout.contains(said),
            "{said:?} not in:\n{}",
            run.text()
        );
    }
    assert!(!run.stdout.contains("FAILED"), "{}", run.text());
    // Canary-then-rest, as the output shows it: for v2, the canary's wave
    // starts, is validated and soaked, and only then the rest's wave starts,
    // with web2 and web3 switched after it.
    let v2 = &run.stdout[run.stdout.find("5. deploy v2").expect("step 5 shown")..];
    let at = |what: &str| {
        v2.find(what)
            .unwrap_or_else(|| panic!("{what:?} not in step 5 and after:\n{}", run.text()))
    };
    let canary = at("wave 1/2 (canary): web1\n");
    let canary_switched = at("[web1] activate: ok");
    let canary_gate = at("[web1] gate: ok");
    let canary_done = at("wave 1/2 (canary): ok");
    let rest = at("wave 2/2 (rest): web2, web3\n");
    let rest_switched = at("[web2] activate: ok").min(at("[web3] activate: ok"));
    assert!(
        canary < canary_switched
            && canary_switched < canary_gate
            && canary_gate < canary_done
            && canary_done < rest
            && rest < rest_switched,
        "not canary-then-rest in:\n{v2}"
    );
    // v3: the canary's wave fails, and no second wave starts.
    let v3 = &v2[v2.find("7. deploy v3").expect("step 7 shown")..];
    let v3 = &v3[..v3.find("8. deploy v4").expect("step 8 shown")];
    assert!(v3.contains("wave 1/2 (canary): failed"), "{v3}");
    assert!(!v3.contains("wave 2/2"), "{v3}");
}
