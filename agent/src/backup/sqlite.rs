//! Backup engine `sqlite`: SQLite's online backup API (through rusqlite), so
//! a backup is a consistent snapshot even while the app keeps writing.
//!
//! - [`dump`] copies the live database page by page into a private temporary
//!   file in the backup directory, then streams that file through zstd and
//!   sha256 into `<name>.sqlite.zst` and removes the temporary file. The
//!   backup directory therefore briefly needs the uncompressed size plus the
//!   compressed size.
//!   - WAL databases: the copy runs inside one read transaction on the
//!     source, a fixed snapshot that writers do not disturb (WAL readers never
//!     block writers; checkpoints just wait for the snapshot to end).
//!   - Rollback-journal databases: a read lock would block the app's
//!     writers, so the copy takes 256 pages at a time with a pause between
//!     steps. A write in between restarts the copy (SQLite's rule for
//!     consistency); after a bounded number of passes the rest is copied in
//!     one step under a read lock, so a busy app cannot starve the backup.
//! - [`verify`] is a test restore: decompress into a scratch file,
//!   `PRAGMA integrity_check`, count the tables, delete the scratch file.
//! - [`restore`] checks the backup in a temporary file next to the live
//!   database and then copies it *into* the live database with the backup
//!   API, so connections that hold the database open see the restored content
//!   and the WAL stays consistent (replacing the file by rename would leave
//!   them on the old inode with a stale WAL).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use golive_shared::config::SqliteDb;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::stream::{
    HashingFile, Tracked, Written, copy_with_progress, finish_zstd, io_err, zstd_writer,
};
use super::{BackupError, Progress};

/// Pages copied per backup step (1 MiB with 4 KiB pages).
const PAGES_PER_STEP: i32 = 256;
/// Pause between steps on rollback-journal databases, so the app's writers
/// get the lock between steps.
const PAUSE: Duration = Duration::from_millis(5);
/// Full copies that may be restarted by the app's writes before the rest is
/// copied in one step.
const MAX_PASSES: u64 = 3;
/// How long a single lock wait may take inside SQLite (busy handler).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a backup or restore keeps retrying a locked database in total.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Size of the live database plus its WAL: what a backup copies at most.
pub fn estimate(db: &SqliteDb) -> Result<u64, BackupError> {
    let main = live_size(db)?;
    let wal = sidecar(&db.path, "-wal");
    let wal_len = match fs::metadata(&wal) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err("cannot read the size of", &wal, e)),
    };
    Ok(main + wal_len)
}

/// Opens the live database read-only and reads its schema: the file
/// exists, is readable and is a SQLite database. Changes nothing (a missing
/// file is an error, never created).
pub fn ping(db: &SqliteDb) -> Result<(), BackupError> {
    live_size(db)?;
    let conn = open(&db.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(sq(&db.path, "cannot read the schema of"))?;
    close(conn, &db.path)
}

/// Writes `out_dir/<name>.sqlite.zst`, a consistent snapshot of the live
/// database. `progress` gets the uncompressed bytes compressed so far.
pub fn dump(
    db: &SqliteDb,
    out_dir: &Path,
    level: i32,
    progress: Progress,
) -> Result<Written, BackupError> {
    live_size(db)?;
    let out = out_dir.join(format!("{}.sqlite.zst", db.name));
    let tmp = out_dir.join(format!(".{}.sqlite.tmp", db.name));
    // The output first: an unusable backup directory fails here with an I/O
    // error before anything else is created.
    let file = HashingFile::create(&out)?;
    // The temp name is fixed, so a leftover from a killed agent is removed
    // now (by the guard's constructor) and this run's copy on every exit.
    let _tmp = TempDb::new(tmp.clone());
    snapshot(db, &tmp)?;

    let mut enc = zstd_writer(file, level)?;
    enc.include_checksum(true)
        .map_err(|e| io_err("cannot configure zstd for", &out, e))?;
    let mut src = Tracked::new(File::open(&tmp).map_err(|e| io_err("cannot open", &tmp, e))?);
    if let Err(e) = copy_with_progress(&mut src, &mut enc, progress) {
        return Err(if src.failed {
            io_err("cannot read", &tmp, e)
        } else {
            enc.get_ref().write_err(e)
        });
    }
    enc.do_finish().map_err(|e| enc.get_ref().write_err(e))?;
    finish_zstd(enc)
}

/// Test restore of a `.sqlite.zst` into a scratch file in `scratch_dir`
/// (always removed): the backup must decompress, pass `PRAGMA
/// integrity_check`, and open as a database.
pub fn verify(file: &Path, scratch_dir: &Path) -> Result<String, BackupError> {
    let scratch = scratch_dir.join(format!(".golive-verify-{}.sqlite", unique()));
    let _guard = TempDb::new(scratch.clone());
    decompress(file, &scratch)?;
    let conn = open(&scratch, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let tables = check(&conn, &scratch, file)?;
    close(conn, &scratch)?;
    Ok(format!("integrity_check ok, {tables} tables"))
}

/// Restores a `.sqlite.zst` into the live database `db.path` (created, with
/// its parent directories, if missing). The backup is decompressed and
/// checked next to the database first, so a bad backup never touches it.
pub fn restore(file: &Path, db: &SqliteDb) -> Result<String, BackupError> {
    restore_with(file, db, &mut |_| Ok(()))
}

/// [`restore`], calling `before` with the checked backup (decompressed,
/// open read-write on its temporary copy) just before it replaces the live
/// database: the restore counts what it is about to throw away there
/// without decompressing the backup twice.
pub fn restore_with(
    file: &Path,
    db: &SqliteDb,
    before: &mut dyn FnMut(&Connection) -> Result<(), BackupError>,
) -> Result<String, BackupError> {
    let parent = db.path.parent().filter(|p| !p.as_os_str().is_empty()).ok_or_else(|| {
        BackupError::Invalid(format!(
            "sqlite database `{}`: path {} has no parent directory; set an absolute path in apps.APP.databases",
            db.name,
            db.path.display()
        ))
    })?;
    fs::create_dir_all(parent).map_err(|e| io_err("cannot create directory", parent, e))?;
    let base = db.path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{base}.golive-restore-{}", unique()));
    let _guard = TempDb::new(tmp.clone());
    decompress(file, &tmp)?;
    let src = open(&tmp, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    check(&src, &tmp, file)?;
    before(&src)?;

    let existed = db.path.exists();
    let r = copy_into(&src, &db.path);
    if r.is_err() && !existed {
        // Do not leave an empty database where there was none.
        TempDb::new(db.path.clone());
    }
    let tables = r?;
    close(src, &tmp)?;
    Ok(format!("restored {tables} tables"))
}

/// Exact rows of every table of an open database (`count(*)` of each).
pub fn rows_of(conn: &Connection, path: &Path) -> Result<BTreeMap<String, u64>, BackupError> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sq(path, "cannot list the tables of"))?;
    let mut out = BTreeMap::new();
    for name in names {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")),
                [],
                |r| r.get(0),
            )
            .map_err(sq(path, "cannot count the rows of"))?;
        out.insert(name, n.max(0) as u64);
    }
    Ok(out)
}

/// [`rows_of`] the live database, opened read-only (none when it does not
/// exist).
pub fn live_rows(db: &SqliteDb) -> Result<BTreeMap<String, u64>, BackupError> {
    if !db.path.exists() {
        return Ok(BTreeMap::new());
    }
    let conn = open(&db.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let rows = rows_of(&conn, &db.path)?;
    close(conn, &db.path)?;
    Ok(rows)
}

/// Copies `src` into the database at `path` (created if missing) in one
/// backup step; returns the table count.
fn copy_into(src: &Connection, path: &Path) -> Result<u64, BackupError> {
    let mut dst = open(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    {
        let backup =
            Backup::new(src, &mut dst).map_err(sq(path, "cannot start the restore into"))?;
        // One step: the destination is written in a single transaction, so
        // readers see either the old or the restored database, never a mix.
        step_until_done(&backup, -1, path, "restore into")?;
    }
    let tables = count_tables(&dst, path)?;
    close(dst, path)?;
    Ok(tables)
}

/// Copies the live database into `tmp` with the online backup API.
fn snapshot(db: &SqliteDb, tmp: &Path) -> Result<(), BackupError> {
    // Read-write without CREATE: WAL readers need to write the -shm index,
    // and a missing database must never be created by a backup.
    let src = open(&db.path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let mode: String = src
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sq(&db.path, "cannot read the journal mode of"))?;
    let wal = mode.eq_ignore_ascii_case("wal");
    if wal {
        // Pins one snapshot for the whole copy (see the module docs).
        src.execute_batch("BEGIN")
            .and_then(|()| {
                src.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .map_err(sq(&db.path, "cannot open a read transaction on"))?;
    }
    let mut dst = open(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    {
        let backup =
            Backup::new(&src, &mut dst).map_err(sq(&db.path, "cannot start the backup of"))?;
        let started = Instant::now();
        let mut steps = 0u64;
        loop {
            let r = backup
                .step(PAGES_PER_STEP)
                .map_err(sq_any(&db.path, tmp, "backup of"))?;
            match r {
                StepResult::Done => break,
                StepResult::More => {
                    steps += 1;
                    let pages = u64::try_from(backup.progress().pagecount).unwrap_or(0);
                    let per_pass = pages / PAGES_PER_STEP as u64 + 1;
                    if steps > MAX_PASSES * per_pass {
                        // Writers keep restarting the copy: finish it in one
                        // step under a read lock (writers wait meanwhile).
                        step_until_done(&backup, -1, &db.path, "backup of")?;
                        break;
                    }
                    if !wal {
                        std::thread::sleep(PAUSE);
                    }
                }
                _ => {
                    if started.elapsed() > LOCK_WAIT {
                        return Err(locked(&db.path, "backup of"));
                    }
                    std::thread::sleep(PAUSE);
                }
            }
        }
    }
    if wal {
        src.execute_batch("COMMIT")
            .map_err(sq(&db.path, "cannot end the read transaction on"))?;
    }
    close(dst, tmp)?;
    close(src, &db.path)
}

/// Steps `backup` until done, retrying busy/locked for up to [`LOCK_WAIT`].
fn step_until_done(
    backup: &Backup,
    pages: i32,
    path: &Path,
    what: &str,
) -> Result<(), BackupError> {
    let started = Instant::now();
    loop {
        match backup.step(pages).map_err(sq(path, what))? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            _ => {
                if started.elapsed() > LOCK_WAIT {
                    return Err(locked(path, what));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn locked(path: &Path, what: &str) -> BackupError {
    BackupError::Sqlite {
        path: path.to_path_buf(),
        detail: format!(
            "{what} gave up: the database stayed locked by another connection for {}s; \
             stop long write transactions (maintenance mode) and retry",
            LOCK_WAIT.as_secs()
        ),
    }
}

/// `PRAGMA integrity_check` must say exactly "ok"; returns the table count.
fn check(conn: &Connection, path: &Path, backup: &Path) -> Result<u64, BackupError> {
    let corrupt = |detail: String| BackupError::Sqlite {
        path: backup.to_path_buf(),
        detail: format!("the backup is not a sound database ({detail}); use another backup"),
    };
    let mut stmt = conn
        .prepare("PRAGMA integrity_check(20)")
        .map_err(|e| corrupt(e.to_string()))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| corrupt(e.to_string()))?;
    if lines != ["ok"] {
        return Err(corrupt(format!("integrity_check: {}", lines.join("; "))));
    }
    count_tables(conn, path)
}

fn count_tables(conn: &Connection, path: &Path) -> Result<u64, BackupError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(sq(path, "cannot list the tables of"))
}

/// Decompresses a `.zst` into `dst` (which must not exist).
fn decompress(file: &Path, dst: &Path) -> Result<(), BackupError> {
    let f = File::open(file).map_err(|e| io_err("cannot open", file, e))?;
    let dec = zstd::stream::read::Decoder::new(f)
        .map_err(|e| io_err("cannot start zstd for", file, e))?;
    let mut dec = Tracked::new(dec);
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| io_err("cannot create", dst, e))?;
    if let Err(e) = copy_with_progress(&mut dec, &mut out, &mut |_| {}) {
        return Err(if dec.failed {
            io_err(
                "cannot decompress (the backup is corrupt or truncated)",
                file,
                e,
            )
        } else {
            io_err("cannot write", dst, e)
        });
    }
    out.flush().map_err(|e| io_err("cannot write", dst, e))
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection, BackupError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sq(path, "cannot open"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sq(path, "cannot set a busy timeout on"))?;
    Ok(conn)
}

/// Closes explicitly so a failing close (e.g. a final WAL checkpoint) is
/// reported instead of ignored.
fn close(conn: Connection, path: &Path) -> Result<(), BackupError> {
    conn.close().map_err(|(_, e)| sq(path, "cannot close")(e))
}

/// Checks the live database exists and returns its size; a backup never
/// creates a missing database (SQLite would silently create an empty one).
fn live_size(db: &SqliteDb) -> Result<u64, BackupError> {
    match fs::metadata(&db.path) {
        Ok(m) if m.is_file() => Ok(m.len()),
        Ok(_) => Err(BackupError::Invalid(format!(
            "sqlite database `{}`: {} is not a file; fix its `path` in apps.APP.databases",
            db.name,
            db.path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BackupError::Invalid(format!(
            "sqlite database `{}`: {} does not exist; fix its `path` in apps.APP.databases \
             (or remove the entry if the app no longer uses it)",
            db.name,
            db.path.display()
        ))),
        Err(e) => Err(io_err("cannot read the size of", &db.path, e)),
    }
}

/// Maps a rusqlite error on `path`; SQLITE_FULL becomes [`BackupError::DiskFull`].
fn sq(path: &Path, what: &str) -> impl Fn(rusqlite::Error) -> BackupError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => BackupError::DiskFull {
            path: path.clone(),
            written: 0,
        },
        _ => BackupError::Sqlite {
            path: path.clone(),
            detail: format!("{what}: {e}"),
        },
    }
}

/// Like [`sq`] for a step that reads `src` and writes `dst`: a full disk is
/// always the destination's.
fn sq_any<'a>(
    src: &'a Path,
    dst: &'a Path,
    what: &'a str,
) -> impl Fn(rusqlite::Error) -> BackupError + 'a {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => sq(dst, what)(e),
        _ => sq(src, what)(e),
    }
}

/// `path` + suffix (`-wal`, `-shm`, `-journal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// A name part unique within this host: pid, time, counter.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary database file removed (with its WAL, shm and journal) when
/// created and when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new(path: PathBuf) -> TempDb {
        let t = TempDb(path);
        t.remove();
        t
    }

    fn remove(&self) {
        let _ = fs::remove_file(&self.0);
        for s in ["-wal", "-shm", "-journal"] {
            let _ = fs::remove_file(sidecar(&self.0, s));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn db_at(path: &Path) -> SqliteDb {
        SqliteDb {
            name: "main".into(),
            path: path.to_path_buf(),
        }
    }

    /// A database with `rows` rows of 400-byte payloads (about rows/8 pages)
    /// and a counter table: invariant `totals.n = count(items)` and
    /// `totals.s = sum(items.v)`.
    fn make_db(path: &Path, wal: bool, rows: i64) {
        let c = Connection::open(path).unwrap();
        if wal {
            c.pragma_update(None, "journal_mode", "wal").unwrap();
        }
        c.execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, payload BLOB NOT NULL);
             CREATE TABLE totals (n INTEGER NOT NULL, s INTEGER NOT NULL);
             INSERT INTO totals VALUES (0, 0);",
        )
        .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..rows {
            insert(&tx, i);
        }
        tx.commit().unwrap();
    }

    fn insert(c: &Connection, i: i64) {
        c.execute(
            "INSERT INTO items (v, payload) VALUES (?1, zeroblob(400))",
            [i % 7],
        )
        .unwrap();
        c.execute("UPDATE totals SET n = n + 1, s = s + ?1", [i % 7])
            .unwrap();
    }

    /// Returns the row count after checking the invariant.
    fn check_invariant(path: &Path) -> i64 {
        let c = Connection::open(path).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let (n, s): (i64, i64) = c
            .query_row("SELECT n, s FROM totals", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let (cnt, sum): (i64, i64) = c
            .query_row("SELECT count(*), coalesce(sum(v), 0) FROM items", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((n, s), (cnt, sum), "invariant broken in {}", path.display());
        n
    }

    #[test]
    fn round_trip_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.db");
        make_db(&live, true, 500);
        let db = db_at(&live);
        assert!(estimate(&db).unwrap() > 500 * 400);
        let mut last = 0;
        let w = dump(&db, dir.path(), 3, &mut |n| last = n).unwrap();
        assert_eq!(w.path, dir.path().join("main.sqlite.zst"));
        assert!(last > 0);
        assert_eq!(
            super::super::stream::hash_file(&w.path).unwrap(),
            (w.bytes, w.sha256.clone())
        );
        assert!(!dir.path().join(".main.sqlite.tmp").exists());

        let scratch = dir.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        assert_eq!(
            verify(&w.path, &scratch).unwrap(),
            "integrity_check ok, 2 tables"
        );
        assert_eq!(
            fs::read_dir(&scratch).unwrap().count(),
            0,
            "scratch file left behind"
        );

        // Restore into a new path (nested, missing directories).
        let target = dir.path().join("new/sub/restored.db");
        let detail = restore(&w.path, &db_at(&target)).unwrap();
        assert_eq!(detail, "restored 2 tables");
        assert_eq!(check_invariant(&target), 500);
        let left: Vec<_> = fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("golive-restore"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    fn concurrent(wal: bool) {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.db");
        // ~2500 pages: a copy takes about ten steps, so writes interleave.
        make_db(&live, wal, 20_000);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (live, stop) = (live.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = Connection::open(&live).unwrap();
                c.busy_timeout(Duration::from_secs(30)).unwrap();
                // Fast commits (no fsync): many more interleavings per backup.
                c.pragma_update(None, "synchronous", "off").unwrap();
                let mut commits = 0u64;
                for i in 0..200_000i64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let tx = c.unchecked_transaction().unwrap();
                    for j in 0..5 {
                        insert(&tx, i * 5 + j);
                    }
                    tx.commit().unwrap();
                    commits += 1;
                    // A busy app, not a lock hog: the backup's lock requests
                    // get a chance between transactions.
                    std::thread::sleep(Duration::from_millis(1));
                }
                commits
            })
        };
        let mut outs = Vec::new();
        for k in 0..4 {
            let out = dir.path().join(format!("b{k}"));
            fs::create_dir(&out).unwrap();
            outs.push(dump(&db_at(&live), &out, 1, &mut |_| {}).unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        let commits = writer.join().unwrap();
        assert!(commits > 0, "the writer never got to write");
        for (k, w) in outs.iter().enumerate() {
            let target = dir.path().join(format!("r{k}.db"));
            restore(&w.path, &db_at(&target)).unwrap();
            assert!(check_invariant(&target) >= 20_000);
        }
        check_invariant(&live);
    }

    #[test]
    fn consistent_under_concurrent_writes_wal() {
        concurrent(true);
    }

    #[test]
    fn consistent_under_concurrent_writes_rollback_journal() {
        concurrent(false);
    }

    #[test]
    fn missing_database_is_invalid_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("nope.db");
        let db = db_at(&live);
        for e in [
            estimate(&db).unwrap_err(),
            dump(&db, dir.path(), 3, &mut |_| {}).unwrap_err(),
        ] {
            match e {
                BackupError::Invalid(m) => {
                    assert!(
                        m.contains("nope.db") && m.contains("apps.APP.databases"),
                        "{m}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(!live.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn unusable_output_dir_is_an_io_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.db");
        make_db(&live, false, 10);
        let out = dir.path().join("missing");
        match dump(&db_at(&live), &out, 3, &mut |_| {}) {
            Err(BackupError::Io { path, .. }) => assert_eq!(path, out.join("main.sqlite.zst")),
            other => panic!("{other:?}"),
        }
        assert!(!out.exists());
        // An existing output is never overwritten, and no temp is left.
        let w = dump(&db_at(&live), dir.path(), 3, &mut |_| {}).unwrap();
        assert!(matches!(
            dump(&db_at(&live), dir.path(), 3, &mut |_| {}),
            Err(BackupError::Io { .. })
        ));
        assert!(w.path.exists());
        assert!(!dir.path().join(".main.sqlite.tmp").exists());
    }

    #[test]
    fn corrupted_backup_fails_verify_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.db");
        make_db(&live, true, 2000);
        let w = dump(&db_at(&live), dir.path(), 3, &mut |_| {}).unwrap();
        let mut bytes = fs::read(&w.path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 8] {
            *b ^= 0x5a;
        }
        fs::write(&w.path, &bytes).unwrap();
        assert!(verify(&w.path, dir.path()).is_err());
        let target = dir.path().join("t.db");
        assert!(restore(&w.path, &db_at(&target)).is_err());
        // The live-path database was opened only after the checks: never created.
        assert!(!target.exists());
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("golive") || n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn restore_into_open_database_is_seen_by_its_connections() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        make_db(&src, true, 300);
        let w = dump(&db_at(&src), dir.path(), 3, &mut |_| {}).unwrap();

        let live = dir.path().join("live.db");
        make_db(&live, true, 10);
        let app = Connection::open(&live).unwrap();
        let n: i64 = app
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 10);
        restore(&w.path, &db_at(&live)).unwrap();
        let n: i64 = app
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 300);
        drop(app);
        assert_eq!(check_invariant(&live), 300);
    }
}
