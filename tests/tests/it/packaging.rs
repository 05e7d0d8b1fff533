//! Issue 16: the Debian packages and the agent's completions and man pages.
//! `scripts/build-deb` builds both .deb files from the test's own binaries
//! (profile dev); their control data and file lists are read back with
//! `dpkg-deb --info` / `--contents`, the packaged config is checked by the
//! real agent, and the agent package is installed, reinstalled and purged
//! with the real dpkg into a throwaway root (`dpkg --root`, maintainer
//! scripts run chrootless with DPKG_ROOT), never into this machine's own.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use golive_tests::*;

const LIMIT: Duration = Duration::from_secs(60);
/// Packing two debug binaries (strip + xz) on 2 busy cores.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ok(mut cmd: Command, limit: Duration) -> Run {
    let what = format!("{cmd:?}");
    let r = run_bounded(
        {
            cmd.env("LC_ALL", "C");
            cmd
        },
        limit,
    );
    assert_eq!(r.code, 0, "{what}: {}", r.text());
    r
}

fn dpkg_deb(args: &[&str]) -> Run {
    let mut cmd = Command::new("dpkg-deb");
    cmd.args(args);
    ok(cmd, LIMIT)
}

/// `dpkg-deb --contents` as (mode string, owner/group, path without the
/// leading `.`), directories left out.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    dpkg_deb(&["--contents", s(deb)])
        .stdout
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_string();
            (f[0].to_string(), f[1].to_string(), path)
        })
        .collect()
}

fn entry<'a>(list: &'a [(String, String, String)], path: &str) -> &'a (String, String, String) {
    list.iter()
        .find(|(_, _, p)| p == path)
        .unwrap_or_else(|| panic!("{path} is not in the package: {list:#?}"))
}

/// A root dpkg can install into: its own database and user files.
fn fake_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["etc", "var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (f, text, mode) in [
        ("var/lib/dpkg/status", "", 0o644),
        ("var/lib/dpkg/available", "", 0o644),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\n", 0o644),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640),
        ("etc/gshadow", "root:*::\n", 0o640),
    ] {
        let p = root.join(f);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    root
}

/// dpkg into `root` only: chrootless scripts see DPKG_ROOT; the missing
/// libc6/passwd of the empty root are the host's.
fn dpkg(root: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", s(root)))
        .args(["--force-script-chrootless", "--force-depends"])
        .args(args);
    ok(cmd, LIMIT)
}

/// (uid, gid, mode & 0o7777) of a path.
fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// The `golive` line of ROOT/etc/FILE, split on `:`.
fn account(root: &Path, file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("etc").join(file)).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("golive:")).collect();
    assert_eq!(lines.len(), 1, "one golive entry in {file}: {text}");
    lines[0].split(':').map(str::to_string).collect()
}

/// The two .deb files and the agent's .rpm `scripts/build-deb --rpm` made from this test run's own
/// binaries (profile dev unless the tests run --release), built once per
/// run for the tests that need them (this module's and the systemd one's),
/// under cargo's target tmp directory.
pub(crate) struct Debs {
    pub version: &'static str,
    pub agent: PathBuf,
    pub ctl: PathBuf,
    pub rpm: PathBuf,
}

pub(crate) fn built_debs() -> &'static Debs {
    static DEBS: std::sync::OnceLock<Debs> = std::sync::OnceLock::new();
    DEBS.get_or_init(|| {
        let agent = bin("golive-agent");
        let profile = match agent.parent().and_then(Path::file_name) {
            Some(n) if n == "release" => "release",
            _ => "dev",
        };
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("issue16-debs");
        let _ = std::fs::remove_dir_all(&out);
        let mut build = Command::new(repo().join("scripts/build-deb"));
        build.args([
            "--profile",
            profile,
            "--no-build",
            "--fast",
            "--rpm",
            "--out",
            s(&out),
        ]);
        ok(build, BUILD_LIMIT);
        let rpm = out.join(format!(
            "golive-agent-{}-1.{}.rpm",
            golive_shared::GOLIVE_VERSION,
            std::env::consts::ARCH
        ));
        let version = golive_shared::GOLIVE_VERSION;
        let arch = ok(
            {
                let mut c = Command::new("dpkg");
                c.arg("--print-architecture");
                c
            },
            LIMIT,
        )
        .stdout
        .trim()
        .to_string();
        Debs {
            version,
            agent: out.join(format!("golive-agent_{version}-1_{arch}.deb")),
            ctl: out.join(format!("golivectl_{version}-1_{arch}.deb")),
            rpm,
        }
    })
}

fn rpm_query(rpm: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("rpm");
    cmd.args(["-qp", "--nosignature", "--nodigest"])
        .args(args)
        .arg(rpm);
    ok(cmd, LIMIT).stdout
}

/// The agent's .rpm: name, version, what it requires, its files with
/// modes, owners and the config flag, and its scriptlets (the same steps as
/// the .deb's maintainer scripts), read back by the real rpm. It is
/// installed and run under systemd by
/// `systemd::issue16_the_rpm_runs_under_a_real_systemd_as_pid_1`.
#[test]
fn issue16_rpm_package_files_and_scripts() {
    let rpm = &built_debs().rpm;
    assert!(rpm.is_file(), "{} was not built", rpm.display());
    let nvr = rpm_query(rpm, &["--qf", "%{NAME} %{VERSION} %{RELEASE}"]);
    assert_eq!(
        nvr,
        format!("golive-agent {} 1", golive_shared::GOLIVE_VERSION)
    );
    let requires = rpm_query(rpm, &["--requires"]);
    for want in ["shadow-utils", "/bin/sh", "libc.so.6"] {
        assert!(requires.contains(want), "{want} not required: {requires}");
    }
    // path size mtime digest mode owner group isconfig isdoc rdev symlink
    let dump = rpm_query(rpm, &["--dump"]);
    let file = |path: &str| -> Vec<String> {
        dump.lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{dump}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    for (path, mode, group, config) in [
        ("/usr/bin/golive-agent", "0100755", "root", "0"),
        (
            "/usr/lib/systemd/system/golive-agent.service",
            "0100644",
            "root",
            "0",
        ),
        ("/etc/golive/agent.toml", "0100640", "golive", "1"),
        (
            "/usr/share/bash-completion/completions/golive-agent",
            "0100644",
            "root",
            "0",
        ),
        (
            "/usr/share/man/man1/golive-agent-serve.1.gz",
            "0100644",
            "root",
            "0",
        ),
        (
            "/usr/share/doc/golive-agent/examples/crontab",
            "0100644",
            "root",
            "0",
        ),
    ] {
        let f = file(path);
        assert_eq!(
            (f[4].as_str(), f[5].as_str(), f[6].as_str(), f[7].as_str()),
            (mode, "root", group, config),
            "{path}: {f:?}"
        );
    }
    // An edited config is kept on upgrade: noreplace.
    let flags = rpm_query(rpm, &["--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]"]);
    assert!(
        flags
            .lines()
            .any(|l| l.ends_with(" /etc/golive/agent.toml") && l.contains('n')),
        "{flags}"
    );
    let scripts = rpm_query(rpm, &["--scripts"]);
    for want in [
        "preinstall scriptlet",
        "groupadd --system golive",
        "useradd --system --gid golive",
        "postinstall scriptlet",
        "chmod 0700 /var/lib/golive",
        "systemctl try-restart golive-agent.service",
        "preuninstall scriptlet",
        "systemctl stop golive-agent.service",
        "postuninstall scriptlet",
        "kept /var/lib/golive",
    ] {
        assert!(
            scripts.contains(want),
            "{want:?} not in the scriptlets:\n{scripts}"
        );
    }
}

#[test]
fn issue16_deb_packages_install_purge_and_configure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let debs = built_debs();
    let (version, agent_deb, ctl_deb) = (debs.version, &debs.agent, &debs.ctl);

    // --- golive-agent: control data --------------------------------------
    let info = dpkg_deb(&["--info", s(agent_deb)]).stdout;
    assert!(info.contains("Package: golive-agent"), "{info}");
    assert!(info.contains(&format!("Version: {version}-1")), "{info}");
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends: {info}"));
    assert!(
        depends.contains("passwd") && depends.contains("libc6"),
        "{depends}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let line = info
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == script))
            .unwrap_or_else(|| panic!("no {script}: {info}"));
        assert!(line.contains('*'), "{script} is not executable: {line}");
    }
    let conffiles = dpkg_deb(&["--info", s(agent_deb), "conffiles"]).stdout;
    assert_eq!(conffiles.trim(), "/etc/golive/agent.toml");

    // --- golive-agent: files and modes -----------------------------------
    let list = contents(agent_deb);
    for (path, mode) in [
        ("/usr/bin/golive-agent", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/golive-agent.service", "-rw-r--r--"),
        ("/etc/golive/agent.toml", "-rw-r-----"),
        (
            "/usr/share/bash-completion/completions/golive-agent",
            "-rw-r--r--",
        ),
        (
            "/usr/share/zsh/vendor-completions/_golive-agent",
            "-rw-r--r--",
        ),
        (
            "/usr/share/fish/vendor_completions.d/golive-agent.fish",
            "-rw-r--r--",
        ),
        ("/usr/share/man/man1/golive-agent.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/golive-agent-serve.1.gz", "-rw-r--r--"),
        (
            "/usr/share/man/man1/golive-agent-ensure-running.1.gz",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/golive-agent/examples/crontab", "-rw-r--r--"),
    ] {
        let (m, owner, _) = entry(&list, path);
        assert_eq!(m, mode, "{path}");
        assert_eq!(owner, "0/0", "{path}");
    }
    assert!(
        !list.iter().any(|(_, _, p)| p.contains("golivectl")),
        "the agent package carries no controller: {list:#?}"
    );

    let x = d.join("x");
    dpkg_deb(&["-x", s(agent_deb), s(&x)]);
    let unit =
        std::fs::read_to_string(x.join("usr/lib/systemd/system/golive-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/golive-agent serve --config /etc/golive/agent.toml"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local/"), "{unit}");
    assert!(unit.contains("User=golive") && unit.contains("StateDirectory=golive"));
    let packaged = x.join("usr/bin/golive-agent");
    let v = ok(
        {
            let mut c = Command::new(&packaged);
            c.arg("--version");
            c
        },
        LIMIT,
    );
    assert!(v.stdout.starts_with("golive-agent "), "{}", v.text());

    // The packaged config, its absolute paths moved under this test's
    // directory, passes the real agent's check with a real certificate.
    let config = std::fs::read_to_string(x.join("etc/golive/agent.toml")).unwrap();
    for want in [
        "state_dir = \"/var/lib/golive\"",
        "\"/etc/golive/tls/web1.key\"",
        "\"/srv/www/shop\"",
    ] {
        assert!(config.contains(want), "{want} missing in:\n{config}");
    }
    let pki = TestPki::new(d);
    let (crt, key) = pki.agent("web1", &["127.0.0.1"]);
    let tls = d.join("etc/golive/tls");
    std::fs::create_dir_all(&tls).unwrap();
    for (from, to) in [(pki.ca(), "ca.crt"), (crt, "web1.crt"), (key, "web1.key")] {
        std::fs::copy(&from, tls.join(to)).unwrap();
    }
    std::fs::set_permissions(tls.join("web1.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(d.join("srv/www/shop")).unwrap();
    let moved = config
        .replace("\"/etc/golive/", &format!("\"{}/etc/golive/", s(d)))
        .replace("\"/var/lib/golive", &format!("\"{}/var/lib/golive", s(d)))
        .replace("\"/srv/www/", &format!("\"{}/srv/www/", s(d)));
    let moved_path = d.join("agent.toml");
    std::fs::write(&moved_path, moved).unwrap();
    let mut check = Command::new(bin("golive-agent"));
    check.args(["check-config", "--config", s(&moved_path)]);
    let r = ok(check, LIMIT);
    assert!(r.stdout.contains(": ok (agent web1"), "{}", r.text());

    // --- golive-agent: installed into a throwaway root ---------------------
    let root = fake_root(d);
    let first = dpkg(&root, &["-i", s(agent_deb)]);
    assert!(
        first.stdout.contains("systemctl enable --now golive-agent"),
        "{}",
        first.text()
    );
    let user = account(&root, "passwd");
    let group = account(&root, "group");
    let uid: u32 = user[2].parse().unwrap();
    let gid: u32 = group[2].parse().unwrap();
    assert!((100..1000).contains(&uid), "a system uid: {user:?}");
    assert_eq!(user[3], group[2], "{user:?} {group:?}");
    assert_eq!(user[5], "/var/lib/golive");
    assert_eq!(user[6], "/usr/sbin/nologin");
    assert_eq!(owner_mode(&root.join("var/lib/golive")), (uid, gid, 0o700));
    assert_eq!(owner_mode(&root.join("etc/golive")), (0, gid, 0o750));
    assert_eq!(
        owner_mode(&root.join("etc/golive/agent.toml")),
        (0, gid, 0o640)
    );
    assert_eq!(owner_mode(&root.join("etc/golive/tls")), (0, gid, 0o750));
    assert_eq!(
        owner_mode(&root.join("usr/bin/golive-agent")),
        (0, 0, 0o755)
    );

    // Again (an upgrade): one user, an edited config kept, modes restored.
    let conf = root.join("etc/golive/agent.toml");
    let edited = format!("{}# mine\n", std::fs::read_to_string(&conf).unwrap());
    std::fs::write(&conf, &edited).unwrap();
    std::fs::set_permissions(
        root.join("var/lib/golive"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    dpkg(&root, &["--force-confold", "-i", s(agent_deb)]);
    account(&root, "passwd");
    account(&root, "group");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);
    assert_eq!(owner_mode(&root.join("var/lib/golive")), (uid, gid, 0o700));
    assert_eq!(owner_mode(&conf), (0, gid, 0o640));

    // Purge: binary and config gone; the state (journal, backups) and the
    // user that owns it kept.
    std::fs::write(root.join("var/lib/golive/journal.db"), b"kept").unwrap();
    let purge = dpkg(&root, &["--purge", "golive-agent"]);
    assert!(purge.stderr.contains("kept"), "{}", purge.text());
    assert!(!root.join("usr/bin/golive-agent").exists());
    assert!(!root.join("etc/golive").exists());
    assert!(root.join("var/lib/golive/journal.db").exists());
    account(&root, "passwd");

    // --- golivectl -------------------------------------------------------
    let info = dpkg_deb(&["--info", s(ctl_deb)]).stdout;
    assert!(info.contains("Package: golivectl"), "{info}");
    assert!(info.contains("Recommends: openssh-client"), "{info}");
    assert!(!info.contains("postinst"), "{info}");
    let list = contents(ctl_deb);
    for (path, mode) in [
        ("/usr/bin/golivectl", "-rwxr-xr-x"),
        (
            "/usr/share/bash-completion/completions/golivectl",
            "-rw-r--r--",
        ),
        ("/usr/share/man/man1/golivectl.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/golivectl-deploy.1.gz", "-rw-r--r--"),
    ] {
        assert_eq!(entry(&list, path).0, mode, "{path}");
    }
    assert!(
        !list.iter().any(|(_, _, p)| p.contains("golive-agent")),
        "{list:#?}"
    );
}

/// `golive-agent completions SHELL` and `golive-agent man`, as golivectl's.
#[test]
fn issue16_agent_completions_and_man_pages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let agent = bin("golive-agent");
    let run = |args: &[&str]| {
        let mut c = Command::new(&agent);
        c.args(args);
        run_bounded(c, LIMIT)
    };
    let r = run(&["completions", "bash"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let script = d.join("golive-agent.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg("set -e; source \"$0\"; complete -p golive-agent")
        .arg(&script);
    let b = run_bounded(bash, LIMIT);
    assert_eq!(b.code, 0, "bash could not load it: {}", b.text());
    assert!(b.stdout.contains("-F _golive__agent"), "{}", b.text());
    assert!(r.stdout.contains("ensure-running"), "{}", r.text());
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let r = run(&["completions", shell]);
        assert!(
            r.code == 0 && r.stdout.contains("serve"),
            "{shell}: {}",
            r.text()
        );
    }
    let bad = run(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2, "{}", bad.text());

    let man = run(&["man"]);
    assert_eq!(man.code, 0, "{}", man.text());
    assert!(man.stdout.contains(".TH golive-agent 1"), "{}", man.text());
    let pages = d.join("man");
    let r = run(&["man", "--dir", s(&pages)]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("golive-agent-serve.1"), "{}", r.text());
    for page in [
        "golive-agent.1",
        "golive-agent-serve.1",
        "golive-agent-rollback.1",
    ] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap();
        assert!(text.contains(".TH golive-agent"), "{page}");
    }
    // A directory that cannot be made: exit 2, said why.
    let blocker = d.join("file");
    std::fs::write(&blocker, b"").unwrap();
    let r = run(&["man", "--dir", s(&blocker.join("man"))]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr.contains("cannot create the man page directory"),
        "{}",
        r.text()
    );
}
