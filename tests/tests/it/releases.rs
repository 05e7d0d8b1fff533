//! Issue 12, parts 1, 6 and 13: releases on disk. A required shared file
//! that is missing stops a deployment before maintenance (and is never
//! replaced by an empty directory); the switch-back never switches to a
//! release that is broken too; pruning removes releases a permission rule
//! made read-only (with an unprivileged agent, as root ignores permission
//! bits); a release id that never went live can be deployed again; `status`
//! says what each release on disk is.
//!
//! Real `golivectl` and `golive-agent` processes over real mutual TLS, a
//! real HTTP server serving the live release. Each test owns a temp dir and
//! loopback addresses in 127.0.12.1-9.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use golive_tests::*;
use serde_json::Value;

/// The local settings file of seed 000, linked from `ROOT/shared`.
const SETTINGS: &str = "config/settings.local.php";

world!();

/// One host: the app's ROOT, its HTTP server and its agent. Declared after
/// the [`World`], so it is dropped (processes killed) first.
struct Host {
    root: PathBuf,
    _http: HttpApp,
    agent: AgentProc,
}

impl World {
    /// An agent on `ip` declaring app `shop` with `app_keys` in
    /// `[apps.shop]` and `tables` after it; run as `user` when given (and
    /// the tests run as root).
    fn host(&self, ip: &str, app_keys: &str, tables: &str, user: Option<&str>) -> Host {
        let root = self.path().join("web1/srv/shop");
        let http = HttpApp::serve(&root.join("current"), ip);
        let mut spec = AgentSpec::new("web1", ip);
        spec.user = user.map(str::to_string);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {root:?}\n{app_keys}\n\n\
             [apps.shop.run]\ntimeout_secs = 30\ngrace_secs = 1\n\n\
             [[apps.shop.probes]]\nkind = \"http\"\nname = \"health\"\n\
             url = \"http://{ip}:{port}/health\"\nexpect_status = [200]\nbody_contains = \"ok\"\n\
             severity = \"critical\"\ntimeout_ms = 3000\n\n{tables}\n",
            port = http.port
        );
        let agent = AgentProc::start(self.path(), &self.pki, &spec);
        Host {
            root,
            _http: http,
            agent,
        }
    }

    /// A plan for `release` (if any) on `host`, with `extra` appended.
    fn plan(
        &self,
        name: &str,
        release: Option<(&str, &Path)>,
        host: &Host,
        extra: &str,
    ) -> PathBuf {
        let path = self.path().join(format!("{name}.toml"));
        write_plan(&path, &self.pki, &self.op, "shop", release, &[&host.agent]);
        let mut text = std::fs::read_to_string(&path).expect("read plan");
        text.push_str(extra);
        std::fs::write(&path, text).expect("write plan");
        path
    }

    /// A release archive: `index.html`, the `health` file the probe wants,
    /// and `extra` files.
    fn release(&self, version: &str, extra: &[(&str, &[u8])]) -> PathBuf {
        let path = self
            .path()
            .join("dist")
            .join(format!("shop-{version}-{}.tar.gz", extra.len()));
        let index = format!("shop {version}\n");
        let mut files: Vec<(&str, &[u8])> =
            vec![("index.html", index.as_bytes()), ("health", b"ok\n")];
        files.extend_from_slice(extra);
        artifact(&path, &files);
        path
    }

    /// `golivectl --output json deploy` of `version` on `host`: the run and
    /// its `result` event (`Null` when it stopped before recording one).
    fn deploy(
        &self,
        host: &Host,
        version: &str,
        extra: &[(&str, &[u8])],
        plan_extra: &str,
    ) -> (Run, Value) {
        self.deploy_with(host, version, extra, plan_extra, &[])
    }

    /// [`World::deploy`] with more `golivectl deploy` arguments.
    fn deploy_with(
        &self,
        host: &Host,
        version: &str,
        extra: &[(&str, &[u8])],
        plan_extra: &str,
        args: &[&str],
    ) -> (Run, Value) {
        let art = self.release(version, extra);
        let plan = self.plan(version, Some((version, &art)), host, plan_extra);
        let mut all = vec!["--output", "json", "deploy", s(&plan)];
        all.extend_from_slice(args);
        let run = self.ctl.run(&all);
        let result = run
            .json_lines()
            .into_iter()
            .find(|v| v["event"] == "result")
            .unwrap_or(Value::Null);
        (run, result)
    }
}

impl Host {
    fn current(&self) -> Option<String> {
        std::fs::read_link(self.root.join("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// Entry names of `ROOT/releases`, sorted (leftovers included).
    fn release_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("releases"))
            .map(|entries| {
                entries
                    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn maintenance_windows(&self) -> i64 {
        self.agent
            .journal()
            .query_row("SELECT COUNT(*) FROM maintenance_log", [], |r| r.get(0))
            .expect("count maintenance windows")
    }

    /// State of the newest job of `kind`, if any.
    fn last_job_state(&self, kind: &str) -> Option<String> {
        self.agent
            .journal()
            .query_row(
                "SELECT state FROM jobs WHERE kind = ?1 ORDER BY id DESC LIMIT 1",
                [kind],
                |r| r.get(0),
            )
            .ok()
    }

    /// Waits (at most 30 s) until the newest job of `kind` is in `state`.
    fn wait_for_job(&self, kind: &str, state: &str) {
        let started = Instant::now();
        while self.last_job_state(kind).as_deref() != Some(state) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {kind} job {state} within 30 s (last: {:?}):\n{}",
                self.last_job_state(kind),
                self.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The app of seed 000's step 9: `settings.local.php` is shared and
/// required, maintenance is a flag file.
fn seed000_keys() -> String {
    format!(
        "keep_releases = 5\nshared = [\"uploads/\", {SETTINGS:?}]\nrequired_files = [{SETTINGS:?}]"
    )
}
const MAINTENANCE: &str = "[apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n\n";
const IN_MAINTENANCE: &str = "[deploy]\nmaintenance = true\n";

fn put_settings(root: &Path, content: &[u8]) {
    let path = root.join("shared").join(SETTINGS);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("shared/config");
    std::fs::write(path, content).expect("write the settings file");
}

/// Part 1: with `settings.local.php` moved away from `ROOT/shared`, the
/// deployment stops at staging, before maintenance goes on, naming the path
/// and the fix; no empty directory takes the file's place. An empty file is
/// refused too. `golivectl preflight` reports the live release's dangling
/// link. Today's code created an empty directory there, the existence check
/// passed on it, and the release went live.
#[test]
fn issue12_a_missing_required_shared_file_stops_the_deployment_before_maintenance() {
    let w = World::new();
    let h = w.host("127.0.12.1", &seed000_keys(), MAINTENANCE, None);
    put_settings(&h.root, b"<?php $db = 'shop';\n");
    let (run, res) = w.deploy(&h, "v1", &[], IN_MAINTENANCE);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(res["state"], "succeeded", "{}", run.text());
    let windows = h.maintenance_windows();
    assert_eq!(windows, 1);

    // The operator moves the file away (seed 000 step 9).
    let shared_file = h.root.join("shared").join(SETTINGS);
    std::fs::rename(&shared_file, w.path().join("settings.local.php.aside")).expect("move away");

    let viewer = w.pki.operator("vera", "viewer");
    let pre = w.path().join("pre.toml");
    write_plan(&pre, &w.pki, &viewer, "shop", None, &[&h.agent]);
    let pf = w.ctl.run(&["preflight", s(&pre)]);
    assert_eq!(pf.code, 1, "{}", pf.text());
    assert!(
        pf.stdout.contains("NOT READY")
            && pf.stdout.contains("required files [high]")
            && pf.stdout.contains(&format!(
                "{SETTINGS} is a dangling link to ../../../shared/{SETTINGS}"
            ))
            && pf.stdout.contains("shared paths [high]")
            && pf.stdout.contains(&format!(
                "{} is missing: put the file there",
                shared_file.display()
            )),
        "{}",
        pf.text()
    );

    // deploy runs preflight's blocking checks first: refused, naming the path.
    let (run, _) = w.deploy(&h, "v2", &[], IN_MAINTENANCE);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("preflight: NOT READY, nothing changed")
            && run.stderr.contains(&format!(
                "{} is missing: put the file there",
                shared_file.display()
            )),
        "{}",
        run.text()
    );
    assert_eq!(h.maintenance_windows(), windows, "maintenance went on");
    // Forced over preflight, staging itself refuses, before maintenance.
    let force = ["--force", "--reason", "see what staging says"];
    let (run, res) = w.deploy_with(&h, "v2", &[], IN_MAINTENANCE, &force);
    assert_eq!(run.code, 2, "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains("staging on web1 failed, nothing live changed")
            && msg.contains(&format!(
                "shared path \"{SETTINGS}\" exists neither in ROOT/shared"
            ))
            && msg.contains(&shared_file.display().to_string())
            && msg.contains("put the file there"),
        "{msg}"
    );
    assert!(
        std::fs::symlink_metadata(&shared_file).is_err(),
        "something was created in the file's place"
    );
    assert!(
        !h.root.join("shared/maintenance.flag").exists(),
        "maintenance went on"
    );
    assert_eq!(h.maintenance_windows(), windows, "maintenance went on");
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.release_dirs(), ["v1"]);

    // An empty file is not a settings file.
    put_settings(&h.root, b"");
    let (run, res) = w.deploy_with(&h, "v2", &[], IN_MAINTENANCE, &force);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        text(&res["message"]).contains(&format!("{SETTINGS} is empty (0 bytes)")),
        "{}",
        run.text()
    );
    assert_eq!(h.maintenance_windows(), windows, "maintenance went on");
    assert_eq!(h.release_dirs(), ["v1"]);

    // Put back, the same id goes live.
    put_settings(&h.root, b"<?php $db = 'shop';\n");
    let (run, _) = w.deploy(&h, "v2", &[], IN_MAINTENANCE);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(h.current().as_deref(), Some("releases/v2"));
}

/// Part 1: "the switch-back never makes things worse". v2's activation
/// fails after the switch (its hook also removes the shared settings file),
/// so the previous release v1 is broken too: golive does not switch back to
/// it, leaves maintenance on (the release that failed would serve), and
/// says so. Once the file is back, maintenance off and `golivectl rollback`
/// work. Today's code switched back to the broken v1 and turned maintenance
/// off in front of it.
#[test]
fn issue12_the_switch_back_never_switches_to_a_broken_release() {
    let w = World::new();
    let hook = format!(
        "[apps.shop.hooks]\nafter_activate = [ {{ cmd = [\"sh\", \"-c\", \
         \"if [ \\\"$GOLIVE_RELEASE\\\" = v2 ]; then rm -f \\\"$GOLIVE_ROOT/shared/{SETTINGS}\\\"; \
         echo lost the settings; exit 1; fi\"] }} ]\n\n{MAINTENANCE}"
    );
    let h = w.host("127.0.12.2", &seed000_keys(), &hook, None);
    put_settings(&h.root, b"<?php $db = 'shop';\n");
    let (run, _) = w.deploy(&h, "v1", &[], IN_MAINTENANCE);
    assert_eq!(run.code, 0, "{}", run.text());

    let (run, res) = w.deploy(&h, "v2", &[], IN_MAINTENANCE);
    assert_eq!(run.code, 1, "{}", run.text());
    let msg = text(&res["message"]);
    for says in [
        "activation on web1 failed",
        "SWITCH-BACK INCOMPLETE",
        "not switching back to release v1: it is broken too",
        &format!("{SETTINGS} is a dangling link"),
        "current stays at v2",
        "MAINTENANCE LEFT ON on web1",
    ] {
        assert!(msg.contains(says), "{says:?} not in: {msg}");
    }
    assert_eq!(
        h.current().as_deref(),
        Some("releases/v2"),
        "switched to v1"
    );
    assert!(
        h.root.join("shared/maintenance.flag").exists(),
        "maintenance was turned off in front of a broken release"
    );
    // v2 went live: its id stays used, the controller's clean-up keeps it.
    assert!(
        run.stdout
            .contains("stays on disk: it is the current release"),
        "{}",
        run.text()
    );
    assert_eq!(h.release_dirs(), ["v1", "v2"]);

    // The repair: the file back, maintenance off, roll back to v1.
    put_settings(&h.root, b"<?php $db = 'shop';\n");
    let plan = w.plan("ops", None, &h, "");
    let off = w.ctl.run(&["maintenance", "off", s(&plan)]);
    assert_eq!(off.code, 0, "{}", off.text());
    let id = text(&res["deployment"]).to_string();
    let back = w.ctl.run(&["rollback", &id]);
    assert_eq!(back.code, 0, "{}", back.text());
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
}

/// Part 6: the runbook's relock (`sites/default` 0555) must not make old
/// releases undeletable. The agent runs unprivileged (root ignores
/// permission bits); with keep_releases = 2 the third deployment prunes the
/// first release and finishes a `.removing-*` leftover of an earlier crash,
/// and the next start finishes another. The shared `uploads/` directory,
/// 0555 and reached through a symlink inside every release, keeps its mode
/// and content. Today's code failed with EACCES and left `.removing-*`.
#[test]
fn issue12_pruning_removes_releases_a_permission_rule_made_read_only() {
    let w = World::new();
    let h = w.host(
        "127.0.12.3",
        "keep_releases = 2\nshared = [\"uploads/\"]",
        "[[apps.shop.permissions]]\npath = \"sites/default\"\nmode = \"0555\"\n",
        Some("nobody"),
    );
    let site: [(&str, &[u8]); 1] = [("sites/default/settings.php", b"<?php\n")];
    for v in ["v1", "v2"] {
        let (run, _) = w.deploy(&h, v, &site, "");
        assert_eq!(run.code, 0, "{}", run.text());
    }
    assert_eq!(mode(&h.root.join("releases/v1/sites/default")), 0o555);
    let uploads = h.root.join("shared/uploads");
    std::fs::write(uploads.join("avatar.png"), b"png").expect("an upload");
    std::fs::set_permissions(&uploads, std::fs::Permissions::from_mode(0o555)).expect("chmod");

    // A removal an earlier crash interrupted, as read-only as the rule makes.
    let leftover = |name: &str| {
        let dir = h.root.join("releases").join(name);
        std::fs::create_dir_all(dir.join("sites/default")).expect("leftover");
        std::fs::write(dir.join("sites/default/settings.php"), b"x").expect("leftover file");
        if let Some(owner) = h.agent.owner {
            chown_tree(&dir, owner);
        }
        std::fs::set_permissions(
            dir.join("sites/default"),
            std::fs::Permissions::from_mode(0o555),
        )
        .expect("chmod leftover");
        dir
    };
    let crashed = leftover(".removing-v0-1-2");

    let (run, _) = w.deploy(&h, "v3", &site, "");
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout
            .contains("removed old releases (keep_releases = 2): v1")
            && !run.stdout.contains("could not prune"),
        "{}",
        run.text()
    );
    assert_eq!(h.release_dirs(), ["v2", "v3"], "{}", h.agent.log_text());
    assert!(!crashed.exists());
    assert_eq!(
        mode(&uploads),
        0o555,
        "a symlink was followed out of a release"
    );
    assert_eq!(std::fs::read(uploads.join("avatar.png")).unwrap(), b"png");

    // A leftover found at start is finished there.
    let crashed = leftover(".removing-v1-3-4");
    let mut agent = h.agent;
    assert!(agent.stop(), "agent did not stop on SIGTERM");
    agent.spawn();
    assert!(!crashed.exists(), "{}", agent.log_text());
    assert_eq!(mode(&uploads), 0o555);
    std::fs::set_permissions(&uploads, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Part 13: a release that never went live gives its id back. (a) The
/// controller removes it when its deployment fails after staging; (b) after
/// a controller crash left one behind, the agent replaces it on the next
/// stage; `status` says what each release on disk is. Today's code kept the
/// staged release and refused the id ("already has release").
#[test]
fn issue12_a_release_that_never_went_live_can_be_deployed_again() {
    let w = World::new();
    let hook = "[apps.shop.hooks]\nbefore_activate = [ { cmd = [\"sh\", \"-c\", \
         \"while [ -e \\\"$GOLIVE_ROOT/shared/hold\\\" ]; do sleep 0.1; done; \
         test ! -e \\\"$GOLIVE_ROOT/shared/refuse\\\"\"] } ]\n";
    let h = w.host(
        "127.0.12.4",
        "keep_releases = 3\nshared = [\"uploads/\"]",
        hook,
        None,
    );
    let (run, _) = w.deploy(&h, "v1", &[], "");
    assert_eq!(run.code, 0, "{}", run.text());

    // (a) v2's activation is refused: nothing went live, v2 leaves the disk.
    let refuse = h.root.join("shared/refuse");
    std::fs::write(&refuse, b"").expect("refuse");
    let (run, res) = w.deploy(&h, "v2", &[], "");
    assert_ne!(run.code, 0, "{}", run.text());
    assert!(
        text(&res["message"]).contains("activation on web1 failed"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout
            .contains("removed release v2, never live: the id can be deployed again"),
        "{}",
        run.text()
    );
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.release_dirs(), ["v1"]);
    std::fs::remove_file(&refuse).expect("rm refuse");
    let (run, _) = w.deploy(&h, "v2", &[], "");
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(h.current().as_deref(), Some("releases/v2"));

    // (b) The controller dies while v3's activation waits; the activation
    // then fails on the agent, so v3 stays staged, never live.
    std::fs::write(h.root.join("shared/hold"), b"").expect("hold");
    std::fs::write(&refuse, b"").expect("refuse");
    let art = w.release("v3", &[]);
    let plan = w.plan("v3", Some(("v3", &art)), &h, "");
    let ctl = KillOnDrop(
        w.ctl
            .cmd(&["deploy", s(&plan)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn golivectl"),
    );
    h.wait_for_job("activate", "running");
    drop(ctl);
    std::fs::remove_file(h.root.join("shared/hold")).expect("rm hold");
    h.wait_for_job("activate", "failed");
    std::fs::remove_file(&refuse).expect("rm refuse");
    assert_eq!(h.release_dirs(), ["v1", "v2", "v3"]);

    let status_plan = w.plan("status", None, &h, "");
    let st = w.ctl.run(&["status", s(&status_plan)]);
    assert_eq!(st.code, 0, "{}", st.text());
    for says in [
        "v3 staged, never live",
        "v2 current",
        "v1 rollback target",
        "LOCKED by",
    ] {
        assert!(st.stdout.contains(says), "{says:?} not in:\n{}", st.text());
    }
    let unlock = w
        .ctl
        .run(&["unlock", s(&status_plan), "--reason", "controller died"]);
    assert_eq!(unlock.code, 0, "{}", unlock.text());

    let (run, _) = w.deploy(&h, "v3", &[], "");
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("never went live")
            && run.stdout.contains("staging replaces it")
            && run.stdout.contains("replaced release v3"),
        "{}",
        run.text()
    );
    assert_eq!(h.current().as_deref(), Some("releases/v3"));
    // keep_releases = 3 is what is on disk.
    assert_eq!(h.release_dirs(), ["v1", "v2", "v3"]);

    // A release that went live keeps its id.
    let (run, _) = w.deploy(&h, "v2", &[], "");
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr
            .contains("already has release v2 of shop, and it went live there"),
        "{}",
        run.text()
    );
}
