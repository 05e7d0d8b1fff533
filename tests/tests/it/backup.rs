//! Issue 3: backups end to end through the real binaries: `golivectl backup
//! create|list|verify|restore` against a real agent over mTLS, with a real
//! SQLite database under concurrent writes, real file trees, a real tmpfs
//! for the disk-full cases, kill -9 mid-backup, retention, the offsite copy
//! and the pre-deploy backup of `golivectl deploy`.
//!
//! Loopback addresses 127.0.0.80-99 belong to this module.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use golive_tests::*;
use serde_json::Value;

/// A temp dir, a CA, an operator and an admin, one agent for app `shop`.
struct Bed {
    dir: tempfile::TempDir,
    pki: TestPki,
    ctl: Ctl,
    root: PathBuf,
    /// Plan with the operator certificate.
    plan: PathBuf,
    /// Plan with the admin certificate.
    admin_plan: PathBuf,
    agent: AgentProc,
}

impl Bed {
    /// `app_extra` is appended inside `[apps.shop]` (backup tables etc.).
    fn new(ip: &str, app_extra: &str) -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let root = dir.path().join("srv/shop");
        std::fs::create_dir_all(root.join("shared/uploads")).expect("root");
        let mut spec = AgentSpec::new("web1", ip);
        spec.apps_toml = format!("[apps.shop]\nroot = {root:?}\n{app_extra}\n");
        let agent = AgentProc::start(dir.path(), &pki, &spec);
        let op = pki.operator("alice", "operator");
        let admin = pki.operator("root-admin", "admin");
        let plan = dir.path().join("plan.toml");
        let admin_plan = dir.path().join("admin-plan.toml");
        write_plan(&plan, &pki, &op, "shop", None, &[&agent]);
        write_plan(&admin_plan, &pki, &admin, "shop", None, &[&agent]);
        let ctl = Ctl::new(dir.path());
        Bed {
            dir,
            pki,
            ctl,
            root,
            plan,
            admin_plan,
            agent,
        }
    }

    /// Rewrites both plans for the agent's current address (after a restart
    /// it listens on a new port).
    fn rewrite_plans(&self) {
        let op = (
            self.pki.dir.join("operators/alice.crt"),
            self.pki.dir.join("operators/alice.key"),
        );
        let admin = (
            self.pki.dir.join("operators/root-admin.crt"),
            self.pki.dir.join("operators/root-admin.key"),
        );
        write_plan(&self.plan, &self.pki, &op, "shop", None, &[&self.agent]);
        write_plan(
            &self.admin_plan,
            &self.pki,
            &admin,
            "shop",
            None,
            &[&self.agent],
        );
    }

    fn ctl(&self, args: &[&str]) -> Run {
        self.ctl.run(args)
    }

    /// Backups of `shop` on the host, newest first.
    fn list(&self) -> Vec<Value> {
        let r = self.ctl(&["--output", "json", "backup", "list", s(&self.plan)]);
        assert_eq!(r.code, 0, "{}", r.text());
        let v = r.json_lines().pop().expect("one JSON object");
        v["backups"].as_array().expect("backups array").clone()
    }

    /// Creates a backup and returns its id (the newest with this label).
    fn create(&self, label: &str, extra: &[&str]) -> String {
        let mut args = vec!["backup", "create", s(&self.plan), "--label", label];
        args.extend_from_slice(extra);
        let r = self.ctl(&args);
        assert_eq!(r.code, 0, "{}", r.text());
        self.list()
            .into_iter()
            .find(|b| b["label"] == label)
            .and_then(|b| b["id"].as_str().map(String::from))
            .expect("the new backup is listed")
    }
}

/// A python process writing orders in transactions that keep an invariant:
/// `totals.n = count(orders)` and `totals.s = sum(orders.amount)`. It stops
/// by itself after 120 s and is killed on drop.
struct Writer(Child);

impl Writer {
    fn start(db: &Path) -> Writer {
        let script = r#"
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
deadline = time.time() + 120
i = 0
while time.time() < deadline:
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO orders(amount) VALUES (?)", (i,))
    db.execute("UPDATE totals SET n = n + 1, s = s + ?", (i,))
    db.execute("COMMIT")
    i += 1
"#;
        let child = Command::new("python3")
            .args(["-c", script])
            .arg(db)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        Writer(child)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn make_db(path: &Path) {
    let c = rusqlite::Connection::open(path).expect("create db");
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
         CREATE TABLE totals (n INTEGER NOT NULL, s INTEGER NOT NULL);
         INSERT INTO totals VALUES (0, 0);",
    )
    .expect("schema");
}

/// (count, n, sum, s) — consistent when count == n and sum == s.
fn invariant(path: &Path) -> (i64, i64, i64, i64) {
    let c = rusqlite::Connection::open(path).expect("open db");
    let (count, sum): (i64, i64) = c
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM orders",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("orders");
    let (n, s): (i64, i64) = c
        .query_row("SELECT n, s FROM totals", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("totals");
    (count, n, sum, s)
}

#[test]
fn issue3_sqlite_backup_under_concurrent_writes_restores_consistently() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("shop.db");
    make_db(&db);
    let bed = Bed::new(
        "127.0.0.80",
        &format!("[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n"),
    );
    let writer = Writer::start(&db);
    // Let the writer get going (bounded wait for rows).
    let started = Instant::now();
    while invariant(&db).0 < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the writer wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = bed.create("manual", &["--verify"]);
    drop(writer);
    let listed = bed.list();
    let b = listed.iter().find(|b| b["id"] == id.as_str()).unwrap();
    assert_eq!(b["state"], "complete");
    assert_eq!(b["verified"], true, "{b}");
    assert!(
        b["verify_detail"]
            .as_str()
            .unwrap()
            .contains("integrity_check ok"),
        "{b}"
    );

    // Damage the live database, then restore (admin: an arbitrary backup).
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("DELETE FROM orders; UPDATE totals SET n = -1;")
        .unwrap();
    drop(c);
    let r = bed.ctl(&["backup", "restore", s(&bed.admin_plan), &id]);
    assert_eq!(r.code, 0, "{}", r.text());
    let (count, n, sum, total) = invariant(&db);
    assert!(count >= 200, "restored {count} orders");
    assert_eq!(
        (count, sum),
        (n, total),
        "the restored database is consistent"
    );

    // What was there before the restore is kept for the post-mortem.
    let saved = bed.list();
    let failed = saved
        .iter()
        .find(|b| b["label"] == "failed-state")
        .expect("a failed-state backup was taken before the restore");
    assert_eq!(failed["state"], "complete");
    assert!(
        r.stdout.contains(failed["id"].as_str().unwrap()),
        "{}",
        r.text()
    );
}

#[test]
fn issue3_operator_restores_only_a_deployments_rollback_point() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("shop.db");
    make_db(&db);
    let bed = Bed::new(
        "127.0.0.81",
        &format!("[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n"),
    );
    let id = bed.create("manual", &[]);
    let r = bed.ctl(&["backup", "restore", s(&bed.plan), &id]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.text().contains("needs the admin role"), "{}", r.text());
    let r = bed.ctl(&[
        "backup",
        "restore",
        s(&bed.plan),
        &id,
        "--deployment",
        "d-other",
    ]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.text().contains("belongs to no deployment"),
        "{}",
        r.text()
    );
    // A viewer may list but not create.
    let viewer = bed.pki.operator("vic", "viewer");
    let vplan = bed.dir.path().join("viewer.toml");
    write_plan(&vplan, &bed.pki, &viewer, "shop", None, &[&bed.agent]);
    let r = bed.ctl(&["backup", "create", s(&vplan)]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.text().contains("needs the operator role"), "{}", r.text());
    assert_eq!(bed.ctl(&["backup", "list", s(&vplan)]).code, 0);
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn snapshot(dir: &Path) -> Vec<(String, String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.push((
                    rel,
                    "link".into(),
                    0,
                    std::fs::read_link(&p)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes(),
                ));
            } else if meta.is_dir() {
                out.push((rel, "dir".into(), mode, vec![]));
                stack.push(p);
            } else {
                out.push((rel, "file".into(), mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn issue3_file_tree_round_trip_and_corrupt_backup_is_refused() {
    let bed = Bed::new(
        "127.0.0.82",
        "[[apps.shop.files]]\nname = \"uploads\"\npaths = [\"shared/uploads\", \"shared/settings.local.php\"]\nexclude = [\"*.tmp\"]\n",
    );
    let up = bed.root.join("shared/uploads");
    std::fs::create_dir_all(up.join("img/empty")).unwrap();
    std::fs::write(up.join("img/a.jpg"), noise(30 * 1024 * 1024, 7)).unwrap();
    std::fs::write(up.join("secret.txt"), b"s3cret").unwrap();
    std::fs::set_permissions(
        up.join("secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(up.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(up.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink("img/a.jpg", up.join("latest.jpg")).unwrap();
    std::fs::write(up.join("scratch.tmp"), b"not backed up").unwrap();
    let settings = bed.root.join("shared/settings.local.php");
    std::fs::write(&settings, b"<?php $db = 'x';").unwrap();
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = snapshot(&up);

    let id = bed.create("manual", &["--verify"]);
    // Change everything, then restore.
    std::fs::remove_file(up.join("latest.jpg")).unwrap();
    std::fs::write(up.join("img/a.jpg"), b"overwritten").unwrap();
    std::fs::write(up.join("new.txt"), b"added after the backup").unwrap();
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&settings, b"changed").unwrap();
    let r = bed.ctl(&["backup", "restore", s(&bed.admin_plan), &id]);
    assert_eq!(r.code, 0, "{}", r.text());
    let mut expected = before.clone();
    expected.retain(|(rel, ..)| rel != "scratch.tmp");
    let mut after = snapshot(&up);
    after.retain(|(rel, ..)| rel != "scratch.tmp");
    assert_eq!(
        after, expected,
        "the tree is back as it was (excluded files aside)"
    );
    assert_eq!(std::fs::read(&settings).unwrap(), b"<?php $db = 'x';");
    assert_eq!(
        std::fs::metadata(&settings).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert!(
        std::fs::symlink_metadata(up.join("latest.jpg"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // No staging or old copies left next to the targets.
    let leftovers: Vec<_> = std::fs::read_dir(bed.root.join("shared"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("golive-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Corrupt the archive: verify fails and records it; restore refuses.
    let archive = find_file(
        &bed.agent.state_dir.join("backups/shop").join(&id),
        ".tar.zst",
    );
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&archive, &bytes).unwrap();
    let r = bed.ctl(&["backup", "verify", s(&bed.plan), &id]);
    assert_ne!(r.code, 0, "{}", r.text());
    assert!(r.text().contains("checksum mismatch"), "{}", r.text());
    let b = bed
        .list()
        .into_iter()
        .find(|b| b["id"] == id.as_str())
        .unwrap();
    assert_eq!(b["verified"], false, "{b}");
    std::fs::write(up.join("marker"), b"after").unwrap();
    let r = bed.ctl(&["backup", "restore", s(&bed.admin_plan), &id]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.text().contains("restore refused"), "{}", r.text());
    assert!(
        up.join("marker").exists(),
        "a refused restore changes nothing"
    );
}

fn find_file(dir: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no *{suffix} in {}", dir.display()))
}

/// A tmpfs of `size` mounted by the test and always unmounted.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs failed (the tests run as root)"
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn issue3_disk_full_is_refused_before_writing_and_enospc_mid_write_cleans_up() {
    let holder = tempfile::tempdir().unwrap();
    let small = Tmpfs::mount(&holder.path().join("small"), "8m");
    let bed = Bed::new(
        "127.0.0.83",
        &format!(
            "[apps.shop.backup]\ndir = {:?}\nmargin_percent = 0\nmin_free_bytes = 0\nzstd_level = 19\n\
             [[apps.shop.files]]\nname = \"uploads\"\npaths = [\"shared/uploads\"]\n",
            small.0
        ),
    );
    let up = bed.root.join("shared/uploads");
    // 1. Estimate (20 MiB) > free (8 MiB): refused before a byte is written.
    std::fs::write(up.join("big.bin"), noise(20 * 1024 * 1024, 3)).unwrap();
    let r = bed.ctl(&["backup", "create", s(&bed.plan)]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.text().contains("not enough free space"), "{}", r.text());
    assert!(
        entries(&small.0).is_empty(),
        "nothing written: {:?}",
        entries(&small.0)
    );

    // 2. The estimate fits, then another process fills the disk while the
    // backup writes: ENOSPC mid-write removes the partial backup and says so.
    std::fs::write(up.join("big.bin"), noise(5 * 1024 * 1024, 3)).unwrap();
    // backup.dir is used as is: backups land directly in it.
    let shop_dir = small.0.clone();
    let filler_path = small.0.join("filler");
    let filler = {
        let shop_dir = shop_dir.clone();
        let filler_path = filler_path.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            // Wait (bounded) for the backup's partial directory, then fill the disk.
            while started.elapsed() < Duration::from_secs(30) {
                if entries(&shop_dir)
                    .iter()
                    .any(|n| n.starts_with(".partial-"))
                {
                    use std::io::Write;
                    let mut f = std::fs::File::create(&filler_path).unwrap();
                    let chunk = vec![0u8; 64 * 1024];
                    for _ in 0..1024 {
                        if f.write_all(&chunk).is_err() {
                            return true;
                        }
                    }
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        })
    };
    let r = bed.ctl(&["backup", "create", s(&bed.plan)]);
    assert!(
        filler.join().unwrap(),
        "the filler filled the tmpfs during the backup"
    );
    assert_ne!(r.code, 0, "{}", r.text());
    assert!(r.text().contains("disk filled up"), "{}", r.text());
    assert!(
        r.text().contains("partial backup was removed"),
        "{}",
        r.text()
    );
    std::fs::remove_file(&filler_path).unwrap();
    let left: Vec<_> = entries(&shop_dir);
    assert!(left.is_empty(), "no partial backup left: {left:?}");
    let listed = bed.list();
    assert!(
        listed.iter().all(|b| b["state"] != "complete"),
        "{listed:?}"
    );
    assert!(listed.iter().any(|b| b["state"] == "failed"), "{listed:?}");
}

#[test]
fn issue3_kill9_mid_backup_leaves_no_complete_backup_and_cleans_the_partial() {
    let mut bed = Bed::new(
        "127.0.0.84",
        "[[apps.shop.files]]\nname = \"uploads\"\npaths = [\"shared/uploads\"]\n[apps.shop.backup]\nzstd_level = 19\n",
    );
    let up = bed.root.join("shared/uploads");
    for i in 0..8u64 {
        std::fs::write(up.join(format!("f{i}.bin")), noise(16 * 1024 * 1024, i + 1)).unwrap();
    }
    let mut child = bed
        .ctl
        .cmd(&["backup", "create", s(&bed.plan)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until the backup is journaled as running.
    let started = Instant::now();
    let partial_dir = loop {
        let running: Option<String> = bed
            .agent
            .journal()
            .query_row(
                "SELECT partial_dir FROM backups WHERE state = 'running'",
                [],
                |r| r.get(0),
            )
            .ok();
        if let Some(p) = running
            && Path::new(&p).exists()
        {
            break PathBuf::from(p);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the backup never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    bed.agent.kill9();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        partial_dir.exists(),
        "the kill left the partial directory behind"
    );
    bed.agent.spawn();
    bed.rewrite_plans();
    assert!(!partial_dir.exists(), "start-up removed the partial backup");
    let listed = bed.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "interrupted", "{listed:?}");
    assert!(
        bed.agent.log_text().contains("removed the partial backup"),
        "{}",
        bed.agent.log_text()
    );
}

#[test]
fn issue3_retention_keeps_the_newest_verified_and_offsite_copies_are_checked() {
    let offsite = tempfile::tempdir().unwrap();
    let bed = Bed::new(
        "127.0.0.85",
        &format!(
            "[[apps.shop.files]]\nname = \"uploads\"\npaths = [\"shared/uploads\"]\n\
             [apps.shop.backup]\nkeep = 2\n[apps.shop.backup.offsite]\ndir = {:?}\n",
            offsite.path()
        ),
    );
    std::fs::write(bed.root.join("shared/uploads/a.txt"), b"one").unwrap();
    let verified = bed.create("first", &["--verify"]);
    let _b = bed.create("second", &[]);
    let _c = bed.create("third", &[]);
    let d = bed.create("fourth", &[]);
    let ids: Vec<String> = bed
        .list()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    // keep = 2 plus the newest verified one, which is never pruned.
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&verified) && ids.contains(&d), "{ids:?}");
    let deleted = deleted_ids(&bed);
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(!ids.contains(&deleted[0]));
    assert!(
        !bed.agent
            .state_dir
            .join("backups/shop")
            .join(&deleted[0])
            .exists()
    );
    // Offsite: every backup has a checked copy in the offsite directory.
    let b = bed
        .list()
        .into_iter()
        .find(|b| b["id"] == d.as_str())
        .unwrap();
    let loc = b["offsite"].as_str().unwrap();
    assert!(loc.starts_with("dir:"), "{b}");
    let copy = PathBuf::from(&loc[4..]);
    let part = &b["parts"][0];
    let data = std::fs::read(copy.join(part["file"].as_str().unwrap())).unwrap();
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&data)),
        part["sha256"].as_str().unwrap()
    );
    assert!(copy.join("manifest.json").is_file());
}

/// Ids the journal records as pruned.
fn deleted_ids(bed: &Bed) -> Vec<String> {
    let j = bed.agent.journal();
    let mut stmt = j
        .prepare("SELECT id FROM backups WHERE state = 'deleted'")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .flatten()
        .collect()
}

#[test]
fn issue3_deploy_takes_a_verified_pre_deploy_backup_the_operator_may_restore() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("shop.db");
    make_db(&db);
    let bed = Bed::new(
        "127.0.0.86",
        &format!("[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n"),
    );
    let art = bed.dir.path().join("dist/shop-v1.tar.gz");
    artifact(&art, &[("index.html", b"v1")]);
    let op = (
        bed.pki.dir.join("operators/alice.crt"),
        bed.pki.dir.join("operators/alice.key"),
    );
    let dplan = bed.dir.path().join("deploy.toml");
    write_plan(
        &dplan,
        &bed.pki,
        &op,
        "shop",
        Some(("v1", &art)),
        &[&bed.agent],
    );
    let mut text = std::fs::read_to_string(&dplan).unwrap();
    text.push_str("[deploy]\nbackup = \"verified\"\n");
    std::fs::write(&dplan, text).unwrap();
    let r = bed.ctl(&["--output", "json", "deploy", s(&dplan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let events = r.json_lines();
    let deployment = events
        .iter()
        .find(|e| e["event"] == "result")
        .and_then(|e| e["deployment"].as_str())
        .unwrap()
        .to_string();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "step" && e["step"] == "backup" && e["state"] == "ok"),
        "{}",
        r.stdout
    );
    let b = bed
        .list()
        .into_iter()
        .find(|b| b["label"] == "pre-deploy")
        .expect("pre-deploy backup listed");
    assert_eq!(b["deployment"], deployment.as_str());
    assert_eq!(b["verified"], true);
    assert_eq!(
        b["release"],
        Value::Null,
        "taken before the first release went live"
    );
    let id = b["id"].as_str().unwrap().to_string();
    // The operator may restore this deployment's rollback point.
    let r = bed.ctl(&[
        "backup",
        "restore",
        s(&bed.plan),
        &id,
        "--deployment",
        &deployment,
    ]);
    assert_eq!(r.code, 0, "{}", r.text());
}

/// Issue 12 part 9: a restore of the pre-deploy backup says what it throws
/// away (rows per table now and in the backup, and the failed-state backup
/// that keeps them), in its output, its JSON, the job events and the
/// deployment's record.
#[test]
fn issue12_restore_reports_the_rows_it_discards() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode=WAL; \
             CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER); \
             CREATE TABLE customers (id INTEGER PRIMARY KEY); \
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 16) \
             INSERT INTO orders (amount) SELECT i FROM c; \
             INSERT INTO customers VALUES (1), (2);",
        )
        .unwrap();
    let bed = Bed::new(
        "127.0.0.87",
        &format!("[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n"),
    );
    let art = bed.dir.path().join("dist/shop-v1.tar.gz");
    artifact(&art, &[("index.html", b"v1")]);
    let op = (
        bed.pki.dir.join("operators/alice.crt"),
        bed.pki.dir.join("operators/alice.key"),
    );
    let dplan = bed.dir.path().join("deploy.toml");
    write_plan(
        &dplan,
        &bed.pki,
        &op,
        "shop",
        Some(("v1", &art)),
        &[&bed.agent],
    );
    let mut text = std::fs::read_to_string(&dplan).unwrap();
    text.push_str("[deploy]\nbackup = \"verified\"\n");
    std::fs::write(&dplan, text).unwrap();
    let r = bed.ctl(&["--output", "json", "deploy", s(&dplan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let deployment = r
        .json_lines()
        .iter()
        .find(|e| e["event"] == "result")
        .and_then(|e| e["deployment"].as_str().map(String::from))
        .unwrap();
    let id = bed
        .list()
        .into_iter()
        .find(|b| b["label"] == "pre-deploy")
        .and_then(|b| b["id"].as_str().map(String::from))
        .expect("pre-deploy backup");

    // The app goes on writing: 71 orders, a new table.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 71) \
             INSERT INTO orders (amount) SELECT i FROM c; \
             CREATE TABLE coupons (code TEXT); INSERT INTO coupons VALUES ('X');",
        )
        .unwrap();

    let r = bed.ctl(&[
        "--output",
        "json",
        "backup",
        "restore",
        s(&bed.plan),
        &id,
        "--deployment",
        &deployment,
    ]);
    assert_eq!(r.code, 0, "{}", r.text());
    let lines = r.json_lines();
    let result = lines
        .iter()
        .find(|e| e["event"] == "result")
        .expect("a result event");
    let failed_state = result["failed_state_backup"].as_str().unwrap().to_string();
    assert!(failed_state.contains("failed-state"), "{result}");
    assert_eq!(result["rows_discarded"], 72, "{result}");
    let table = |name: &str| {
        result["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == name)
            .unwrap_or_else(|| panic!("no {name} in {result}"))
            .clone()
    };
    let orders = table("orders");
    assert_eq!(
        (&orders["now"], &orders["backup"], &orders["difference"]),
        (&Value::from(87), &Value::from(16), &Value::from(71)),
        "{orders}"
    );
    assert_eq!(orders["database"], "main");
    let customers = table("customers");
    assert_eq!(
        (&customers["now"], &customers["difference"]),
        (&Value::from(2), &Value::from(0))
    );
    let coupons = table("coupons");
    assert_eq!(
        (&coupons["now"], &coupons["backup"]),
        (&Value::from(1), &Value::Null)
    );
    // The job events said it before the replace.
    let wanted = format!(
        "orders: 87 rows now, 16 in the backup: 71 rows are only in failed-state backup {failed_state}"
    );
    assert!(r.stdout.contains(&wanted), "{}", r.stdout);
    assert_eq!(
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM orders", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        16
    );

    // The human output, on a second restore of the same backup.
    let r = bed.ctl(&[
        "backup",
        "restore",
        s(&bed.plan),
        &id,
        "--deployment",
        &deployment,
    ]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout
            .contains("main: orders: 16 rows now and in the backup")
            && r.stdout.contains("no row was discarded"),
        "{}",
        r.text()
    );

    // The deployment's record has the restore, with who and the figures.
    let r = bed.ctl(&["--output", "json", "show", &deployment]);
    assert_eq!(r.code, 0, "{}", r.text());
    let record = r.json_lines().pop().unwrap();
    let restores: Vec<&Value> = record["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "backup-restored")
        .collect();
    assert_eq!(restores.len(), 2, "{record}");
    assert_eq!(restores[0]["by"], "alice");
    let detail = restores[0]["detail"].as_str().unwrap();
    assert!(detail.contains(&wanted) && detail.contains(&id), "{detail}");
    let r = bed.ctl(&["show", &deployment]);
    assert!(r.stdout.contains("backup-restored"), "{}", r.text());
}

/// Issue 14, part 8: a failed backup job's exit code comes from the code the
/// agent gave the failure, never from its text. A backup that fails (the
/// database file is not a database) is exit 1 though its message says
/// "refused" (the file's name); a refusal that wrote nothing (a name the
/// app does not declare) is exit 2.
#[test]
fn issue14_backup_exit_codes_come_from_the_jobs_error_code_not_its_text() {
    let holder = tempfile::tempdir().unwrap();
    let db = holder.path().join("refused.db");
    std::fs::write(
        &db,
        b"this is not a SQLite database, whatever it is called\n".repeat(100),
    )
    .unwrap();
    let bed = Bed::new(
        "127.0.0.88",
        &format!("[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n"),
    );
    let r = bed.ctl(&["backup", "create", s(&bed.plan)]);
    assert!(r.text().contains("FAILED"), "{}", r.text());
    assert!(r.text().contains("refused.db"), "{}", r.text());
    assert_eq!(r.code, 1, "a failure whatever its text says: {}", r.text());
    assert!(
        bed.list().iter().all(|b| b["state"] != "complete"),
        "{:?}",
        bed.list()
    );

    let r = bed.ctl(&["backup", "create", s(&bed.plan), "--only", "nosuch"]);
    assert_eq!(r.code, 2, "a refusal: {}", r.text());
    assert!(
        r.text()
            .contains("declares no database or file set \"nosuch\""),
        "{}",
        r.text()
    );
}
