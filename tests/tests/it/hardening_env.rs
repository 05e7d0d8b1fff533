//! Issue 11, parts 6-8: what the agent keeps is owner-only whatever the
//! umask, the programs it starts see a minimal environment, and the offsite
//! copy is supervised like every other child. Real `golive-agent` and
//! `golivectl` processes over real mutual TLS; every claim is checked on
//! disk, in the files the children wrote, or in `/proc`.
//!
//! Loopback addresses 127.0.0.230-239 belong to this module.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use golive_tests::*;
use serde_json::Value;

/// `KEY=VALUE` lines of an `env` dump (values without newlines).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a child may see beyond the declared and golive's own variables:
/// the allow-list, and what `sh` itself sets.
fn allowed(name: &str) -> bool {
    matches!(
        name,
        "PATH" | "HOME" | "LANG" | "TZ" | "PWD" | "OLDPWD" | "SHLVL" | "_"
    ) || name.starts_with("LC_")
}

/// The agent's environment in these tests: a secret that must not leak, a
/// `GOLIVE_` variable golive did not set (which must not leak either), and
/// the locale, time zone and home that must be passed on.
fn agent_env(home: &Path) -> Vec<(String, String)> {
    [
        ("AWS_SECRET_ACCESS_KEY", "leak-me-not-4711"),
        ("GOLIVE_INHERITED_TEST", "not-golive-s"),
        ("LANG", "C.UTF-8"),
        ("LC_TIME", "C"),
        ("TZ", "UTC0"),
        ("HOME", s(home)),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

/// Checks one child's environment dump against the allow-list.
fn check_env(path: &Path, home: &Path, declared: &[(&str, &str)], golive: &[&str]) {
    let env = env_file(path);
    let shown = format!("{}: {env:?}", path.display());
    assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"), "{shown}");
    assert!(!env.contains_key("GOLIVE_INHERITED_TEST"), "{shown}");
    assert!(!env.values().any(|v| v.contains("leak-me-not")), "{shown}");
    assert_eq!(
        env.get("PATH").map(String::as_str),
        std::env::var("PATH").ok().as_deref(),
        "{shown}"
    );
    assert_eq!(
        env.get("HOME").map(String::as_str),
        Some(s(home)),
        "{shown}"
    );
    assert_eq!(
        env.get("LANG").map(String::as_str),
        Some("C.UTF-8"),
        "{shown}"
    );
    assert_eq!(env.get("LC_TIME").map(String::as_str), Some("C"), "{shown}");
    assert_eq!(env.get("TZ").map(String::as_str), Some("UTC0"), "{shown}");
    for (k, v) in declared {
        assert_eq!(env.get(*k).map(String::as_str), Some(*v), "{k}: {shown}");
    }
    for k in golive {
        assert!(env.contains_key(*k), "{k} missing: {shown}");
    }
    for k in env.keys() {
        assert!(
            allowed(k) || k.starts_with("GOLIVE_") || declared.iter().any(|(d, _)| d == k),
            "{k} is not on the allow-list: {shown}"
        );
    }
}

world!();

impl World {
    fn plan(&self, name: &str, release: Option<(&str, &Path)>, agent: &AgentProc) -> PathBuf {
        let path = self.path().join(format!("{name}.toml"));
        write_plan(&path, &self.pki, &self.op, "shop", release, &[agent]);
        path
    }

    fn release(&self, version: &str) -> PathBuf {
        let path = self.path().join(format!("dist/shop-{version}.tar.gz"));
        let index = format!("shop {version}\n");
        artifact(&path, &[("index.html", index.as_bytes())]);
        path
    }
}

/// A command, a hook, a command probe and the offsite copy each write their
/// environment to a file: the agent's secret is in none of them; PATH, HOME,
/// the locale, TZ, the declared env and golive's variables are in all.
#[test]
fn issue11_children_get_a_minimal_environment() {
    let w = World::new();
    let home = w.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = w.path().join("env");
    std::fs::create_dir_all(&out).unwrap();
    let root = w.path().join("srv/shop");
    let offsite = w.path().join("offsite");
    std::fs::create_dir_all(root.join("shared/uploads")).unwrap();
    std::fs::create_dir_all(&offsite).unwrap();
    std::fs::write(root.join("shared/uploads/a.txt"), b"upload").unwrap();
    let dump = |name: &str| format!("env > {}/{name}.env", s(&out));
    // Offsite copies are files in `offsite/`, named after `{name}` with `/` as `_`.
    let copy = format!(
        "{}; cp \"$1\" {}/$(echo \"$2\" | tr / _)",
        dump("offsite"),
        s(&offsite)
    );
    let fetch = format!("cat {}/$(echo \"$1\" | tr / _)", s(&offsite));
    let mut spec = AgentSpec::new("web1", "127.0.0.230");
    spec.env = agent_env(&home);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\nkeep_releases = 3\n\n\
         [apps.shop.run]\ntimeout_secs = 30\ngrace_secs = 1\nenv = {{ RUN_DEFAULT = \"from-run\" }}\n\n\
         [[apps.shop.hooks.after_unpack]]\ncmd = [\"sh\", \"-c\", {hook:?}]\nenv = {{ HOOK_ONLY = \"h\" }}\n\n\
         [apps.shop.commands.env-dump]\ncmd = [\"sh\", \"-c\", {command:?}]\nenv = {{ DECLARED = \"yes\" }}\n\n\
         [[apps.shop.probes]]\nkind = \"command\"\nname = \"env-probe\"\ncmd = [\"sh\", \"-c\", {probe:?}]\n\
         env = {{ PROBE_ONLY = \"p\" }}\nseverity = \"low\"\ntimeout_ms = 10000\n\n\
         [[apps.shop.files]]\nname = \"uploads\"\npaths = [\"shared/uploads\"]\n\n\
         [apps.shop.backup.offsite]\ntimeout_secs = 30\n\
         copy = [\"sh\", \"-c\", {copy:?}, \"copy\", \"{{file}}\", \"{{name}}\"]\n\
         fetch = [\"sh\", \"-c\", {fetch:?}, \"fetch\", \"{{name}}\"]\n",
        hook = dump("hook"),
        command = dump("command"),
        probe = dump("probe"),
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);

    let art = w.release("v1");
    let plan = w.plan("v1", Some(("v1", &art)), &agent);
    let r = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    check_env(
        &out.join("hook.env"),
        &home,
        &[("RUN_DEFAULT", "from-run"), ("HOOK_ONLY", "h")],
        &[
            "GOLIVE_APP",
            "GOLIVE_RELEASE",
            "GOLIVE_RELEASE_DIR",
            "GOLIVE_HOOK",
        ],
    );

    let r = w.ctl.run(&["run", s(&plan), "env-dump"]);
    assert_eq!(r.code, 0, "{}", r.text());
    check_env(
        &out.join("command.env"),
        &home,
        &[("RUN_DEFAULT", "from-run"), ("DECLARED", "yes")],
        &["GOLIVE_APP", "GOLIVE_COMMAND", "GOLIVE_ROOT"],
    );

    let r = w.ctl.run(&["probe", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    check_env(
        &out.join("probe.env"),
        &home,
        &[("RUN_DEFAULT", "from-run"), ("PROBE_ONLY", "p")],
        &["GOLIVE_PROBE", "GOLIVE_ROOT"],
    );

    let r = w
        .ctl
        .run(&["--output", "json", "backup", "create", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("offsite copy checked"), "{}", r.text());
    check_env(
        &out.join("offsite.env"),
        &home,
        &[("RUN_DEFAULT", "from-run")],
        &[],
    );
}

/// Live (not zombie) processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{name}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{name}/stat"))
            .ok()
            .and_then(|st| {
                st.rfind(')')
                    .and_then(|i| st[i + 1..].split_whitespace().next().map(|f| f == "Z"))
            })
            .unwrap_or(true);
        if cmdline.contains(marker) && !zombie {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// An offsite `copy` that leaves a child behind holding on is stopped at its
/// timeout with its whole process group; the backup reports the timeout and
/// stays good locally.
#[test]
fn issue11_offsite_copy_past_its_timeout_is_killed_with_its_group() {
    let w = World::new();
    let root = w.path().join("srv/shop");
    std::fs::create_dir_all(root.join("shared/uploads")).unwrap();
    std::fs::write(root.join("shared/uploads/a.txt"), b"upload").unwrap();
    let marker = "1103.5813";
    let mut spec = AgentSpec::new("web1", "127.0.0.231");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n\
         [apps.shop.run]\ngrace_secs = 1\n\n\
         [[apps.shop.files]]\nname = \"uploads\"\npaths = [\"shared/uploads\"]\n\n\
         [apps.shop.backup.offsite]\ntimeout_secs = 1\n\
         copy = [\"sh\", \"-c\", \"sleep {marker} & wait\"]\nfetch = [\"cat\", \"{{file}}\"]\n"
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let plan = w.plan("plan", None, &agent);
    let started = Instant::now();
    let r = w
        .ctl
        .run(&["--output", "json", "backup", "create", s(&plan)]);
    let took = started.elapsed();
    assert_eq!(r.code, 0, "the local backup is fine: {}", r.text());
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(
        r.stdout.contains("offsite copy of") && r.stdout.contains("timed out after 1 s"),
        "{}",
        r.text()
    );
    let list = w.ctl.run(&["--output", "json", "backup", "list", s(&plan)]);
    let v: Value = list.json_lines().pop().expect("one JSON object");
    let offsite = v["backups"][0]["offsite"].as_str().unwrap_or_default();
    assert!(
        offsite.starts_with("failed:") && offsite.contains("timed out"),
        "{v}"
    );
    // The child of the copy command went with it.
    let end = Instant::now() + Duration::from_secs(5);
    while !processes_with(marker).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_with(marker), Vec::<String>::new());
}
/// Directories, files, owner-only: every directory under `dir` is 0700 and
/// no file gives group or others any access. Returns what was checked.
fn assert_owner_only(dir: &Path) -> usize {
    let mut seen = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::symlink_metadata(&d).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700, "{} is not 0700", d.display());
        seen += 1;
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                assert_eq!(
                    meta.mode() & 0o077,
                    0,
                    "{} is {:o}",
                    e.path().display(),
                    meta.mode() & 0o777
                );
                seen += 1;
            }
        }
        assert!(seen < 100_000, "runaway walk under {}", dir.display());
    }
    seen
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Under umask 022, with a state directory and backup directory left 0755
/// and a journal 0644: the agent tightens them at start (one log line), and
/// everything a deploy (artifact and git), a backup and golivectl write is
/// owner-only. The app's release stays readable: the umask is not changed.
#[test]
fn issue11_state_journal_artifacts_backups_are_owner_only_whatever_the_umask() {
    let w = World::new();
    let root = w.path().join("srv/shop");
    std::fs::create_dir_all(root.join("shared/uploads")).unwrap();
    std::fs::write(root.join("shared/uploads/a.txt"), b"upload").unwrap();
    let backups = w.path().join("backups/shop");
    let state = w.path().join("web1/state");
    for d in [&backups, &state.join("artifacts")] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&state, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(state.join("journal.db"), b"").unwrap();
    std::fs::set_permissions(state.join("journal.db"), PermissionsExt::from_mode(0o644)).unwrap();

    // A git repository for the second release.
    let repo = w.path().join("repo");
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.current_dir(&repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args);
        let r = run_bounded(cmd, Duration::from_secs(30));
        assert_eq!(r.code, 0, "git {args:?}: {}", r.text());
    };
    std::fs::create_dir_all(&repo).unwrap();
    git(&["init", "--quiet", "-b", "main"]);
    std::fs::write(repo.join("index.html"), "shop v2\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", "v2"]);

    let mut spec = AgentSpec::new("web1", "127.0.0.232");
    spec.umask = Some(0o022);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\nkeep_releases = 3\n\n\
         [apps.shop.git]\nurl = {repo:?}\ntimeout_secs = 60\n\n\
         [[apps.shop.files]]\nname = \"uploads\"\npaths = [\"shared/uploads\"]\n\n\
         [apps.shop.backup]\ndir = {backups:?}\n"
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    assert_eq!(agent.state_dir, state);
    let log = agent.log_text();
    assert_eq!(
        log.matches("tightened").count(),
        1,
        "one log line names what was tightened:\n{log}"
    );
    assert!(
        log.contains(s(&state)) && log.contains(s(&backups)),
        "{log}"
    );

    // golivectl under the same umask, with its own fresh state directory.
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "umask 022 && exec \"$0\" \"$@\""])
            .arg(bin("golivectl"))
            .arg("--state")
            .arg(&w.ctl.state)
            .args(args);
        run_bounded(cmd, Duration::from_secs(60))
    };
    let art = w.release("v1");
    let plan = w.plan("v1", Some(("v1", &art)), &agent);
    let r = ctl(&["deploy", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let gplan = w.plan("v2", None, &agent);
    let mut toml = std::fs::read_to_string(&gplan).unwrap();
    toml.push_str("[release]\ngit = \"main\"\nid = \"v2\"\n");
    std::fs::write(&gplan, toml).unwrap();
    let r = ctl(&["deploy", s(&gplan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = ctl(&["backup", "create", s(&plan), "--verify"]);
    assert_eq!(r.code, 0, "{}", r.text());

    // The agent's own files, exactly.
    for f in ["journal.db", "agent.lock", "agent.addr"] {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    for f in ["journal.db-wal", "journal.db-shm"] {
        if state.join(f).exists() {
            assert_eq!(mode(&state.join(f)), 0o600, "{f}");
        }
    }
    for d in ["artifacts", "git"] {
        assert_eq!(mode(&state.join(d)), 0o700, "{d}");
    }
    let artifacts: Vec<PathBuf> = std::fs::read_dir(state.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert_eq!(mode(&artifacts[0]), 0o600);
    assert!(state.join("git/shop.git/HEAD").is_file());
    let checked = assert_owner_only(&state);
    assert!(checked > 10, "{checked}");

    // The backup in the configured directory: 0700 directories, 0600 files.
    let ids: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].join("manifest.json").is_file());
    for e in std::fs::read_dir(&ids[0]).unwrap() {
        assert_eq!(mode(&e.unwrap().path()), 0o600);
    }
    assert_owner_only(&backups);

    // The controller's state and journal.
    assert_eq!(mode(&w.ctl.state), 0o700);
    assert_eq!(mode(&w.ctl.state.join("golivectl.db")), 0o600);
    assert_owner_only(&w.ctl.state);

    // The app's directories are not the agent's state: under umask 022
    // they stay readable for the web server.
    assert_eq!(mode(&root.join("releases")), 0o755);
    assert_eq!(mode(&root.join("releases/v2")), 0o755);
}
