//! MariaDB/MySQL backups: `mariadb-dump --single-transaction` (or
//! `mysqldump`) streamed through zstd and sha256 to `<name>.sql.zst`; verify
//! by decompressing the whole stream and checking the `-- Dump completed`
//! trailer (a truncated dump lacks it).
//!
//! Restore returns the database to exactly the backup's state: after the
//! same check (a truncated dump is refused before anything is touched), one
//! `mariadb DB` session gets `SET FOREIGN_KEY_CHECKS=0`, a `DROP` for every
//! view, table, sequence, stored procedure, function and event the database
//! holds now (listed from `information_schema` just before), then the dump.
//! So tables created after the backup are gone afterwards, not left beside
//! the restored ones.
//!
//! MariaDB DDL is not transactional: a restore that fails midway (a lost
//! connection, a full disk on the server) leaves the database partly
//! restored. The safety net is the `failed-state` backup that the agent
//! takes of the current database before any restore (`backup::run`), which
//! can itself be restored.
//!
//! The password (from `password_file`) reaches the tools only through a
//! temporary option file (mode 0600, in a private 0700 directory, removed
//! afterwards) named by the first argument `--defaults-extra-file=PATH`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use golive_shared::config::MariadbDb;

use super::stream::{HashingFile, Written, finish_zstd, io_err, zstd_writer};
use super::tools::{self, redact};
use super::{BackupError, Progress};

const DUMP_TOOLS: &[&str] = &["mariadb-dump", "mysqldump"];
const CLIENT_TOOLS: &[&str] = &["mariadb", "mysql"];
/// The last line `mariadb-dump`/`mysqldump` writes (with `--comments`, the default).
const TRAILER: &[u8] = b"-- Dump completed";

/// A private option file holding the password; removed (with its
/// directory) on drop.
pub struct OptionFile {
    dir: PathBuf,
    path: PathBuf,
}

impl OptionFile {
    /// Also used by the migration engine (`crate::migrate`).
    pub(crate) fn create(password: &str) -> Result<OptionFile, BackupError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "golive-my-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_err("cannot create private directory", &dir, e))?;
        let opt = OptionFile {
            path: dir.join("client.cnf"),
            dir,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&opt.path)
            .map_err(|e| io_err("cannot create option file", &opt.path, e))?;
        f.write_all(format!("[client]\npassword=\"{}\"\n", escape_option(password)).as_bytes())
            .and_then(|()| f.flush())
            .map_err(|e| io_err("cannot write option file", &opt.path, e))?;
        Ok(opt)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OptionFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Escapes a value for a double-quoted option-file value (the client library
/// understands `\\`, `\"`, `\n`, `\r`, `\t`; `#` inside quotes is literal).
fn escape_option(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// Database names are passed as arguments and inside SQL literals, so only
/// the plain identifier alphabet is accepted.
fn check_database(name: &str) -> Result<(), BackupError> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
    {
        Ok(())
    } else {
        Err(BackupError::Invalid(format!(
            "MariaDB database name {name:?} is not supported: use letters, digits, '_' or '$'"
        )))
    }
}

/// Connection settings for one operation; the option file lives as long as this.
struct Conn {
    password: Option<String>,
    option_file: Option<OptionFile>,
}

impl Conn {
    fn new(db: &MariadbDb) -> Result<Conn, BackupError> {
        check_database(&db.database)?;
        let password = match &db.password_file {
            Some(p) => Some(tools::read_secret(p)?),
            None => None,
        };
        let option_file = password.as_deref().map(OptionFile::create).transpose()?;
        Ok(Conn {
            password,
            option_file,
        })
    }

    /// `TOOL [--defaults-extra-file=F] --user=U (--socket=S | --protocol=TCP --host=H --port=P)`.
    fn cmd(&self, db: &MariadbDb, names: &[&str]) -> Result<Command, BackupError> {
        let tool = tools::find(names, db.bin_dir.as_deref())?;
        let mut cmd = tool.command();
        if let Some(opt) = &self.option_file {
            // Must be the first argument.
            let mut arg = std::ffi::OsString::from("--defaults-extra-file=");
            arg.push(opt.path());
            cmd.arg(arg);
        }
        // The option file is the one channel for the password; an inherited
        // MYSQL_PWD must not mix in.
        cmd.env_remove("MYSQL_PWD");
        cmd.arg(format!("--user={}", db.user));
        match &db.socket {
            Some(sock) => {
                let mut arg = std::ffi::OsString::from("--socket=");
                arg.push(sock);
                cmd.arg("--protocol=SOCKET").arg(arg);
            }
            None => {
                cmd.arg("--protocol=TCP")
                    .arg(format!("--host={}", db.host))
                    .arg(format!("--port={}", db.port));
            }
        }
        Ok(cmd)
    }

    /// `mariadb --batch --skip-column-names -e SQL`, stdout trimmed.
    fn query(&self, db: &MariadbDb, sql: &str, what: &str) -> Result<String, BackupError> {
        let mut cmd = self.cmd(db, CLIENT_TOOLS)?;
        cmd.args([
            "--connect-timeout=10",
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ]);
        tools::run(cmd, what, db.tool_timeout())
            .map(|s| s.trim().to_string())
            .map_err(|e| self.redact(e))
    }

    fn number(&self, db: &MariadbDb, sql: &str, what: &str) -> Result<u64, BackupError> {
        let out = self.query(db, sql, what)?;
        out.parse()
            .map_err(|_| BackupError::Invalid(format!("mariadb {what}: unexpected output {out:?}")))
    }

    fn redact(&self, e: BackupError) -> BackupError {
        redact(e, self.password.as_deref())
    }
}

/// A trivial query through the `mariadb` client: the server answers, the
/// credentials work and the database exists. Errors carry no secret.
pub fn ping(db: &MariadbDb) -> Result<(), BackupError> {
    let conn = Conn::new(db)?;
    // check_database made the name safe inside a literal.
    let n = conn.number(
        db,
        &format!(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{}'",
            db.database
        ),
        "reachability check",
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(BackupError::Invalid(format!(
            "the server answers but has no database {:?} that user {} can see; \
             create it or fix `database` in the agent config",
            db.database, db.user
        )))
    }
}

/// Data plus index size of the database's tables, for the free-space check.
pub fn estimate(db: &MariadbDb) -> Result<u64, BackupError> {
    let conn = Conn::new(db)?;
    // check_database made the name safe inside a literal.
    conn.number(
        db,
        &format!(
            "SELECT COALESCE(SUM(data_length+index_length),0) FROM information_schema.tables \
             WHERE table_schema = '{}'",
            db.database
        ),
        "size estimate",
    )
}

/// Dumps to `out_dir/<name>.sql.zst`. On any failure the partial file is removed.
pub fn dump(
    db: &MariadbDb,
    out_dir: &Path,
    level: i32,
    progress: Progress,
) -> Result<Written, BackupError> {
    let conn = Conn::new(db)?;
    let mut cmd = conn.cmd(db, DUMP_TOOLS)?;
    cmd.args([
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--no-tablespaces",
        "--default-character-set=utf8mb4",
        &db.database,
    ]);
    let path = out_dir.join(format!("{}.sql.zst", db.name));
    let mut enc = zstd_writer(HashingFile::create(&path)?, level)?;
    tools::stream_out(cmd, &mut enc, &path, progress, db.tool_timeout())
        .map_err(|e| conn.redact(e))
        .map_err(|e| e.with_written(enc.get_ref().bytes()))?;
    finish_zstd(enc).map_err(|e| match e {
        // finish_zstd does not know the path.
        BackupError::Io { action, source, .. } => io_err(action, &path, source),
        other => other,
    })
}

/// Decompresses the whole dump and checks its `-- Dump completed` trailer;
/// returns the uncompressed size.
fn check_complete(file: &Path) -> Result<u64, BackupError> {
    let f = File::open(file).map_err(|e| io_err("cannot open", file, e))?;
    let mut dec = zstd::stream::read::Decoder::new(f)
        .map_err(|e| io_err("cannot start zstd for", file, e))?;
    let mut buf = vec![0u8; 256 * 1024];
    // The last bytes seen, enough to hold the trailer line.
    let mut tail: Vec<u8> = Vec::with_capacity(1024);
    let mut total = 0u64;
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(BackupError::Invalid(format!(
                    "{} is corrupt or truncated: zstd cannot decompress it after {total} bytes ({e})",
                    file.display()
                )));
            }
        };
        total += n as u64;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 512 {
            tail.drain(..tail.len() - 512);
        }
    }
    let last_line = tail
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or_default();
    if !last_line.starts_with(TRAILER) {
        return Err(BackupError::Invalid(format!(
            "{} is truncated: the dump ({total} bytes of SQL) does not end with the \
             \"-- Dump completed\" line that the dump tool writes last",
            file.display()
        )));
    }
    Ok(total)
}

/// Verifies a dump: the zstd stream decompresses fully and the SQL ends
/// with the dump tool's completion trailer.
pub fn verify(file: &Path) -> Result<String, BackupError> {
    let total = check_complete(file)?;
    Ok(format!("dump complete, {total} bytes of SQL"))
}

/// Lists, as SQL, a `DROP` for every view, table, sequence, procedure,
/// function and event in the database (views first; names quoted with
/// backticks). `--raw` keeps names exactly as they are.
fn drop_everything(conn: &Conn, db: &MariadbDb) -> Result<String, BackupError> {
    // check_database made the name safe inside a literal.
    let name = &db.database;
    let quoted = |col: &str| format!("'`', REPLACE({col}, '`', '``'), '`;'");
    let sql = format!(
        "SELECT CONCAT('DROP ', CASE table_type WHEN 'VIEW' THEN 'VIEW' WHEN 'SEQUENCE' THEN 'SEQUENCE' \
             ELSE 'TABLE' END, ' IF EXISTS ', {t}) FROM information_schema.tables \
             WHERE table_schema = '{name}' ORDER BY table_type <> 'VIEW', table_name; \
         SELECT CONCAT('DROP ', routine_type, ' IF EXISTS ', {r}) FROM information_schema.routines \
             WHERE routine_schema = '{name}' AND routine_type IN ('PROCEDURE', 'FUNCTION') \
             ORDER BY routine_name; \
         SELECT CONCAT('DROP EVENT IF EXISTS ', {e}) FROM information_schema.events \
             WHERE event_schema = '{name}' ORDER BY event_name;",
        t = quoted("table_name"),
        r = quoted("routine_name"),
        e = quoted("event_name"),
    );
    let mut cmd = conn.cmd(db, CLIENT_TOOLS)?;
    cmd.args([
        "--connect-timeout=10",
        "--batch",
        "--raw",
        "--skip-column-names",
        "--default-character-set=utf8mb4",
        "-e",
        &sql,
    ]);
    tools::run(cmd, "list the tables to replace", db.tool_timeout()).map_err(|e| conn.redact(e))
}

/// Restores a dump into the live database (after checking it is complete)
/// so that it holds exactly what the dump holds: everything in the database
/// is dropped first, in the same session (see the module docs; not atomic).
pub fn restore(db: &MariadbDb, file: &Path) -> Result<String, BackupError> {
    check_complete(file)?;
    let conn = Conn::new(db)?;
    let mut prefix = String::from("SET FOREIGN_KEY_CHECKS=0;\n");
    prefix.push_str(&drop_everything(&conn, db)?);
    prefix.push('\n');
    let mut cmd = conn.cmd(db, CLIENT_TOOLS)?;
    cmd.args([
        "--connect-timeout=10",
        "--batch",
        "--default-character-set=utf8mb4",
        &db.database,
    ]);
    let f = File::open(file).map_err(|e| io_err("cannot open", file, e))?;
    let dec = zstd::stream::read::Decoder::new(f)
        .map_err(|e| io_err("cannot start zstd for", file, e))?;
    let mut input = io::Cursor::new(prefix.into_bytes()).chain(dec);
    tools::stream_in(cmd, &mut input, file, &mut |_| {}, db.tool_timeout())
        .map_err(|e| conn.redact(e))?;
    let one = conn.query(db, "SELECT 1", "check after restore")?;
    if one != "1" {
        return Err(BackupError::Invalid(format!(
            "restore finished but `SELECT 1` answered {one:?}"
        )));
    }
    let n = conn.number(
        db,
        &format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{}'",
            db.database
        ),
        "table count",
    )?;
    Ok(format!("restore ok, {n} tables"))
}

/// Exact rows of every base table in the live database: the tables from
/// `information_schema`, then one `SELECT COUNT(*)` per table in a single
/// `UNION ALL` query (a full index scan of each, read-only).
pub fn live_rows(db: &MariadbDb) -> Result<BTreeMap<String, u64>, BackupError> {
    let conn = Conn::new(db)?;
    // check_database made the name safe inside a literal.
    let list = conn.query(
        db,
        &format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' \
             AND table_type = 'BASE TABLE' ORDER BY table_name",
            db.database
        ),
        "list the tables",
    )?;
    let tables: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sql = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "SELECT {i}, COUNT(*) FROM `{}`.`{}`",
                db.database,
                t.replace('`', "``")
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let out = conn.query(db, &sql, "row counts")?;
    let bad = || BackupError::Invalid(format!("mariadb row counts: unexpected output {out:?}"));
    let mut counts = BTreeMap::new();
    for line in out.lines() {
        let (i, n) = line.split_once('\t').ok_or_else(bad)?;
        let i: usize = i.trim().parse().map_err(|_| bad())?;
        let name = tables.get(i).ok_or_else(bad)?;
        counts.insert(name.to_string(), n.trim().parse().map_err(|_| bad())?);
    }
    Ok(counts)
}

/// Rows per table in a dump, read through zstd by
/// [`super::rows::InsertCounter`] in bounded memory (one read of the dump).
pub fn dump_rows(file: &Path) -> Result<BTreeMap<String, u64>, BackupError> {
    let f = File::open(file).map_err(|e| io_err("cannot open", file, e))?;
    let mut dec = zstd::stream::read::Decoder::new(f)
        .map_err(|e| io_err("cannot start zstd for", file, e))?;
    let mut counter = super::rows::InsertCounter::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => counter.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("cannot decompress", file, e)),
        }
    }
    Ok(counter.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_are_quoted_and_escaped() {
        assert_eq!(escape_option(r#"a"b\c#d"#), r#"a\"b\\c#d"#);
        assert_eq!(escape_option("x\ny"), "x\\ny");
    }

    #[test]
    fn only_plain_database_names() {
        assert!(check_database("shop_1$").is_ok());
        for bad in ["", "a'b", "a b", "-x", "a;drop", "ä"] {
            assert!(check_database(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn option_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let opt = OptionFile::create("pw").unwrap();
        let path = opt.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[client]\npassword=\"pw\"\n"
        );
        drop(opt);
        assert!(!path.exists() && !path.parent().unwrap().exists());
    }

    #[test]
    fn verify_needs_the_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.sql.zst");
        let sql = b"CREATE TABLE t (a int);\n-- Dump completed on 2024-01-01 10:00:00\n";
        std::fs::write(&good, zstd::encode_all(&sql[..], 3).unwrap()).unwrap();
        assert!(verify(&good).unwrap().contains(&sql.len().to_string()));
        let cut = dir.path().join("cut.sql.zst");
        std::fs::write(&cut, zstd::encode_all(&sql[..30], 3).unwrap()).unwrap();
        assert!(verify(&cut).unwrap_err().to_string().contains("truncated"));
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        assert!(verify(&cut).is_err());
    }
}
