//! PostgreSQL backups: `pg_dump -Fc` (custom format, already compressed)
//! streamed through sha256 to `<name>.pgdump`; verify by a test restore into
//! a scratch database that is always dropped; restore with `pg_restore
//! --single-transaction` (all or nothing).
//!
//! The password (from `password_file`) reaches the tools only through
//! `PGPASSWORD` in their environment; host, port, user and database are
//! separate arguments, never a shell line. Every tool runs with `-w` (never
//! prompt) and `PGCONNECT_TIMEOUT=10`.

use std::path::Path;
use std::process::Command;

use golive_shared::config::PostgresDb;

use super::stream::{HashingFile, Written};
use super::tools::{self, redact};
use super::{BackupError, Progress};

/// Counts user tables (and views) in the connected database.
const COUNT_TABLES: &str = "select count(*) from information_schema.tables \
     where table_schema not in ('pg_catalog','information_schema')";

/// A client tool with the connection environment set.
struct Conn {
    password: Option<String>,
}

impl Conn {
    fn new(db: &PostgresDb) -> Result<Conn, BackupError> {
        let password = match &db.password_file {
            Some(p) => Some(tools::read_secret(p)?),
            None => None,
        };
        Ok(Conn { password })
    }

    /// `tool -w -h HOST -p PORT -U USER` with PGPASSWORD in the environment.
    fn cmd(&self, db: &PostgresDb, tool: &str) -> Result<Command, BackupError> {
        let tool = tools::find(&[tool], db.bin_dir.as_deref())?;
        let mut cmd = tool.command();
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "golive-agent")
            .arg("-w")
            .arg("-h")
            .arg(&db.host)
            .arg("-p")
            .arg(db.port.to_string())
            .arg("-U")
            .arg(&db.user);
        match &self.password {
            Some(pw) => {
                cmd.env("PGPASSWORD", pw);
            }
            None => {
                cmd.env_remove("PGPASSWORD");
            }
        }
        Ok(cmd)
    }

    /// `psql -XAt -d DBNAME -c SQL`, stdout trimmed.
    fn query(
        &self,
        db: &PostgresDb,
        dbname: &str,
        sql: &str,
        what: &str,
    ) -> Result<String, BackupError> {
        let mut cmd = self.cmd(db, "psql")?;
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            dbname,
            "-c",
            sql,
        ]);
        tools::run(cmd, what)
            .map(|s| s.trim().to_string())
            .map_err(|e| self.redact(e))
    }

    fn count_tables(&self, db: &PostgresDb, dbname: &str) -> Result<u64, BackupError> {
        let out = self.query(db, dbname, COUNT_TABLES, "table count")?;
        out.parse().map_err(|_| {
            BackupError::Invalid(format!("psql table count: unexpected output {out:?}"))
        })
    }

    fn redact(&self, e: BackupError) -> BackupError {
        redact(e, self.password.as_deref())
    }
}

/// The live database's size (`pg_database_size`), for the free-space check.
pub fn estimate(db: &PostgresDb) -> Result<u64, BackupError> {
    let conn = Conn::new(db)?;
    let out = conn.query(
        db,
        &db.dbname,
        "select pg_database_size(current_database())",
        "size estimate",
    )?;
    out.parse()
        .map_err(|_| BackupError::Invalid(format!("psql size estimate: unexpected output {out:?}")))
}

/// Dumps to `out_dir/<name>.pgdump` (custom format). On any failure the
/// partial file is removed.
pub fn dump(db: &PostgresDb, out_dir: &Path, progress: Progress) -> Result<Written, BackupError> {
    let conn = Conn::new(db)?;
    let mut cmd = conn.cmd(db, "pg_dump")?;
    cmd.args(["-F", "c", "-d"]).arg(&db.dbname);
    let path = out_dir.join(format!("{}.pgdump", db.name));
    let mut file = HashingFile::create(&path)?;
    tools::stream_out(cmd, &mut file, &path, progress).map_err(|e| conn.redact(e))?;
    file.finish()
}

/// Test restore of `file` into a scratch database (`golive_verify_<pid>_<nanos>`)
/// on the same server, which is dropped afterwards whatever happened.
/// Needs the CREATEDB privilege.
pub fn verify(db: &PostgresDb, file: &Path) -> Result<String, BackupError> {
    let conn = Conn::new(db)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let scratch = format!("golive_verify_{}_{nanos}", std::process::id());

    let mut create = conn.cmd(db, "createdb")?;
    create
        .arg("--maintenance-db")
        .arg(&db.dbname)
        .args(["-T", "template0", &scratch]);
    tools::run(create, "create scratch database").map_err(|e| conn.redact(e))?;

    let result = (|| {
        let mut restore = conn.cmd(db, "pg_restore")?;
        restore
            .args([
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
                "-d",
                &scratch,
            ])
            .arg(file);
        tools::run(restore, "test restore").map_err(|e| conn.redact(e))?;
        conn.count_tables(db, &scratch)
    })();

    let mut drop = conn.cmd(db, "dropdb")?;
    drop.arg("--maintenance-db")
        .arg(&db.dbname)
        .args(["--if-exists", &scratch]);
    let dropped = tools::run(drop, "drop scratch database").map_err(|e| conn.redact(e));

    match (result, dropped) {
        (Ok(n), Ok(_)) => Ok(format!("test restore ok, {n} tables")),
        (Err(e), _) => Err(e),
        (Ok(n), Err(e)) => Err(BackupError::Invalid(format!(
            "test restore ok ({n} tables), but the scratch database {scratch} could not be \
             dropped; drop it by hand: {e}"
        ))),
    }
}

/// Restores `file` over the live database in one transaction (on any error
/// nothing changes). Objects in the dump are dropped and recreated; objects
/// created after the backup that are not in it are left alone.
pub fn restore(db: &PostgresDb, file: &Path) -> Result<String, BackupError> {
    let conn = Conn::new(db)?;
    let mut cmd = conn.cmd(db, "pg_restore")?;
    cmd.args([
        "--clean",
        "--if-exists",
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        "-d",
    ])
    .arg(&db.dbname)
    .arg(file);
    tools::run(cmd, "restore").map_err(|e| conn.redact(e))?;
    let one = conn.query(db, &db.dbname, "select 1", "check after restore")?;
    if one != "1" {
        return Err(BackupError::Invalid(format!(
            "restore finished but `select 1` answered {one:?}"
        )));
    }
    let n = conn.count_tables(db, &db.dbname)?;
    Ok(format!("restore ok, {n} tables"))
}
