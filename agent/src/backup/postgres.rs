//! PostgreSQL backups: `pg_dump -Fc` (custom format, already compressed)
//! streamed through sha256 to `<name>.pgdump`; verify by a test restore into
//! a scratch database that is always dropped.
//!
//! Restore returns the database to exactly the backup's state, atomically:
//! `pg_restore -f - FILE` (no connection) converts the dump to SQL, which is
//! streamed into one `psql --single-transaction` session after a prefix that,
//! in the same transaction, drops every schema the restoring role owns and
//! every schema the dump contains (CASCADE: tables, views, sequences,
//! functions, types and extensions created after the backup go too), unlinks
//! the role's large objects, and either recreates `public` with its owner,
//! comment and privileges as they are now (pg_dump never emits `CREATE
//! SCHEMA public`) or, when the role does not own `public` (the default
//! before PostgreSQL 15), drops what the role owns in it. Objects of other
//! roles are left alone (a dump that recreates them fails, harmlessly).
//!
//! Any error, including a dump that `pg_restore` cannot read to the end,
//! rolls everything back: `psql` only commits at a clean end of input, and it
//! is killed before its input is closed when `pg_restore` fails. Privileges
//! in the dump are restored (a grant to a role dropped since fails the
//! restore, which then changes nothing); ownership goes to the restoring
//! role (`--no-owner`).
//!
//! The password (from `password_file`) reaches the tools only through
//! `PGPASSWORD` in their environment; host, port, user and database are
//! separate arguments, never a shell line. Every tool runs with `-w` (never
//! prompt) and `PGCONNECT_TIMEOUT=10`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use golive_shared::config::PostgresDb;

use super::stream::{HashingFile, Written};
use super::tools::{self, Guard, StderrTail, redact};
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
        tools::run(cmd, what, db.tool_timeout())
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

/// A trivial query (`select 1`) through `psql` in the configured database:
/// the server answers and the credentials work. Errors carry no secret.
pub fn ping(db: &PostgresDb) -> Result<(), BackupError> {
    let conn = Conn::new(db)?;
    let out = conn.query(db, &db.dbname, "select 1", "reachability check")?;
    if out == "1" {
        Ok(())
    } else {
        Err(BackupError::Invalid(format!(
            "psql `select 1` answered {out:?}"
        )))
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
    tools::stream_out(cmd, &mut file, &path, progress, db.tool_timeout())
        .map_err(|e| conn.redact(e))?;
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
    tools::run(create, "create scratch database", db.tool_timeout()).map_err(|e| conn.redact(e))?;

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
        tools::run(restore, "test restore", db.tool_timeout()).map_err(|e| conn.redact(e))?;
        conn.count_tables(db, &scratch)
    })();

    let mut drop = conn.cmd(db, "dropdb")?;
    drop.arg("--maintenance-db")
        .arg(&db.dbname)
        .args(["--if-exists", &scratch]);
    let dropped =
        tools::run(drop, "drop scratch database", db.tool_timeout()).map_err(|e| conn.redact(e));

    match (result, dropped) {
        (Ok(n), Ok(_)) => Ok(format!("test restore ok, {n} tables")),
        (Err(e), _) => Err(e),
        (Ok(n), Err(e)) => Err(BackupError::Invalid(format!(
            "test restore ok ({n} tables), but the scratch database {scratch} could not be \
             dropped; drop it by hand: {e}"
        ))),
    }
}

/// Lists the schemas in a dump's table of contents (`pg_restore -l`, whose
/// lines read `ID; TABLEOID OID SCHEMA - NAME OWNER`).
fn dump_schemas(db: &PostgresDb, file: &Path) -> Result<Vec<String>, BackupError> {
    let tool = tools::find(&["pg_restore"], db.bin_dir.as_deref())?;
    let mut cmd = tool.command();
    cmd.arg("-l").arg(file);
    let toc = tools::run(cmd, "read the dump's table of contents", db.tool_timeout())?;
    Ok(parse_toc_schemas(&toc))
}

fn parse_toc_schemas(toc: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in toc.lines() {
        if line.starts_with(';') {
            continue;
        }
        // "ID; TABLEOID OID " then "SCHEMA - NAME OWNER".
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        let mut fields = rest.splitn(3, ' ');
        let (Some(_), Some(_), Some(entry)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(named) = entry.strip_prefix("SCHEMA - ") else {
            continue;
        };
        // The owner is the last word (empty when the dump has none).
        let name = named.rsplit_once(' ').map_or(named, |(name, _owner)| name);
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// A JSON array of strings.
fn json_strings(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

/// An escape-string literal (`E'...'`), valid whatever
/// `standard_conforming_strings` says.
fn sql_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The SQL run before the dump, in the restore's transaction: it empties the
/// database of everything the restoring role may drop, so that what the dump
/// creates is all there is afterwards. `schemas` are the dump's schemas.
fn restore_prefix(schemas: &[String]) -> String {
    format!(
        "SET client_min_messages = warning;\n\
         SELECT pg_catalog.set_config('golive.restore_schemas', {}, true);\n{RESET_DATABASE}\n",
        sql_literal(&json_strings(schemas))
    )
}

/// Drops the schemas (see [`restore_prefix`]) and large objects the role
/// may drop, then `public`: dropped and recreated with its current owner,
/// comment and privileges when the role owns it (directly or through
/// `pg_database_owner`, the PostgreSQL 15+ default for a database owner);
/// otherwise (before 15 `public` belongs to the bootstrap superuser) emptied
/// of the relations, routines, types and extensions the role owns. A fixed
/// text: names come only from the catalogs and the `golive.restore_schemas`
/// setting, quoted with `%I`.
const RESET_DATABASE: &str = r#"DO $golive_reset$
DECLARE
    r record;
    pub record;
    had_public boolean;
BEGIN
    SELECT n.oid, n.nspowner, n.nspacl, d.description INTO pub
        FROM pg_catalog.pg_namespace n
        LEFT JOIN pg_catalog.pg_description d ON d.objoid = n.oid
            AND d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objsubid = 0
        WHERE n.nspname = 'public';
    had_public := FOUND;
    FOR r IN SELECT lo.oid FROM pg_catalog.pg_largeobject_metadata lo
            WHERE pg_catalog.pg_has_role(lo.lomowner, 'USAGE') LOOP
        PERFORM pg_catalog.lo_unlink(r.oid);
    END LOOP;
    FOR r IN SELECT n.nspname FROM pg_catalog.pg_namespace n
            WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
              AND n.nspname <> 'public'
              AND (pg_catalog.pg_has_role(n.nspowner, 'USAGE')
                   OR n.nspname IN (SELECT pg_catalog.json_array_elements_text(
                          pg_catalog.current_setting('golive.restore_schemas')::pg_catalog.json)))
            ORDER BY 1 LOOP
        EXECUTE pg_catalog.format('DROP SCHEMA %I CASCADE', r.nspname);
    END LOOP;
    IF NOT had_public THEN
        CREATE SCHEMA public;
    ELSIF pg_catalog.pg_has_role(pub.nspowner, 'USAGE') THEN
        DROP SCHEMA public CASCADE;
        EXECUTE pg_catalog.format('CREATE SCHEMA public AUTHORIZATION %I',
            pg_catalog.pg_get_userbyid(pub.nspowner));
        IF pub.description IS NOT NULL THEN
            EXECUTE pg_catalog.format('COMMENT ON SCHEMA public IS %L', pub.description);
        END IF;
        FOR r IN SELECT a.grantee, a.privilege_type, a.is_grantable
                FROM pg_catalog.aclexplode(pub.nspacl) a WHERE a.grantee <> pub.nspowner LOOP
            EXECUTE pg_catalog.format('GRANT %s ON SCHEMA public TO %s%s', r.privilege_type,
                CASE WHEN r.grantee = 0 THEN 'PUBLIC'
                     ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r.grantee)) END,
                CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    ELSE
        -- Objects that are part of an extension go with the extension.
        FOR r IN SELECT e.extname FROM pg_catalog.pg_extension e
                WHERE e.extnamespace = pub.oid AND pg_catalog.pg_has_role(e.extowner, 'USAGE') LOOP
            EXECUTE pg_catalog.format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
        END LOOP;
        FOR r IN SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
                WHERE c.relnamespace = pub.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                  AND pg_catalog.pg_has_role(c.relowner, 'USAGE')
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend x
                      WHERE x.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                        AND x.objid = c.oid AND x.deptype = 'e') LOOP
            EXECUTE pg_catalog.format('DROP %s IF EXISTS public.%I CASCADE',
                CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                    WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                r.relname);
        END LOOP;
        -- With an empty search_path, regprocedure names every type in full.
        PERFORM pg_catalog.set_config('search_path', '', true);
        FOR r IN SELECT p.oid::pg_catalog.regprocedure::text AS sig FROM pg_catalog.pg_proc p
                WHERE p.pronamespace = pub.oid AND pg_catalog.pg_has_role(p.proowner, 'USAGE')
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend x
                      WHERE x.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                        AND x.objid = p.oid AND x.deptype = 'e') LOOP
            EXECUTE pg_catalog.format('DROP ROUTINE IF EXISTS %s CASCADE', r.sig);
        END LOOP;
        FOR r IN SELECT t.typname, t.typtype FROM pg_catalog.pg_type t
                WHERE t.typnamespace = pub.oid AND t.typtype IN ('c', 'd', 'e', 'r')
                  AND (t.typtype <> 'c' OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                      WHERE c.oid = t.typrelid AND c.relkind = 'c'))
                  AND pg_catalog.pg_has_role(t.typowner, 'USAGE')
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend x
                      WHERE x.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                        AND x.objid = t.oid AND x.deptype = 'e') LOOP
            EXECUTE pg_catalog.format('DROP %s IF EXISTS public.%I CASCADE',
                CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.typname);
        END LOOP;
    END IF;
END
$golive_reset$;"#;

/// `pg_restore -f - FILE` as a reader of SQL: at the end of its output the
/// exit status is checked, and a failure is a read error (so that
/// [`tools::stream_in`] kills `psql` before its input is closed, and the
/// transaction rolls back). Like every tool run it is killed and reaped if
/// dropped early, and killed past the database's deadline (a converter stuck
/// on its file would otherwise hold the restore: `psql` waits on it).
struct DumpAsSql {
    stdout: Option<ChildStdout>,
    run: Option<(Guard, StderrTail)>,
    /// The tool's failure, for the caller's error.
    failure: Option<BackupError>,
}

impl DumpAsSql {
    fn spawn(cmd: Command, timeout: Duration) -> Result<DumpAsSql, BackupError> {
        let (mut guard, tail) = Guard::spawn(cmd, Stdio::null(), Stdio::piped(), timeout)?;
        Ok(DumpAsSql {
            stdout: guard.child().stdout.take(),
            run: Some((guard, tail)),
            failure: None,
        })
    }

    /// Called at the end of the output: waits and checks the exit status.
    fn finish(&mut self) -> io::Result<()> {
        self.stdout = None;
        let Some((guard, tail)) = self.run.take() else {
            return Ok(());
        };
        guard
            .check(tail, Some("convert the dump to SQL"))
            .map_err(|failure| {
                let text = failure.to_string();
                self.failure = Some(failure);
                io::Error::other(text)
            })
    }
}

impl Read for DumpAsSql {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(stdout) = self.stdout.as_mut() else {
            return Ok(0);
        };
        match stdout.read(buf)? {
            0 => self.finish().map(|()| 0),
            n => Ok(n),
        }
    }
}

/// Restores `file` over the live database so that it is exactly as it was
/// at backup time (objects created since are dropped), in one transaction:
/// on any error nothing changes. Privileges in the dump are restored;
/// ownership goes to the restoring role (`--no-owner`).
pub fn restore(db: &PostgresDb, file: &Path) -> Result<String, BackupError> {
    let conn = Conn::new(db)?;
    let schemas = dump_schemas(db, file)?;
    let prefix = restore_prefix(&schemas);

    let tool = tools::find(&["pg_restore"], db.bin_dir.as_deref())?;
    let mut convert = tool.command();
    convert.args(["--no-owner", "-f", "-"]).arg(file);
    let mut sql = DumpAsSql::spawn(convert, db.tool_timeout())?;

    let mut psql = conn.cmd(db, "psql")?;
    psql.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "-d",
        &db.dbname,
        "-f",
        "-",
    ]);
    let mut input = io::Cursor::new(prefix.into_bytes()).chain(&mut sql);
    let loaded = tools::stream_in(psql, &mut input, file, &mut |_| {}, db.tool_timeout());
    drop(input);
    if let Some(failure) = sql.failure.take() {
        return Err(rolled_back(conn.redact(failure)));
    }
    drop(sql);
    loaded.map_err(|e| rolled_back(conn.redact(e)))?;

    let one = conn.query(db, &db.dbname, "select 1", "check after restore")?;
    if one != "1" {
        return Err(BackupError::Invalid(format!(
            "restore finished but `select 1` answered {one:?}"
        )));
    }
    let n = conn.count_tables(db, &db.dbname)?;
    Ok(format!("restore ok, {n} tables"))
}

/// Exact rows of every ordinary table in the live database, in one query
/// (`count(*)` per table through `query_to_xml`): a full scan of each
/// table, read-only. Keys as [`super::rows::pg_display`] shows them.
pub fn live_rows(db: &PostgresDb) -> Result<BTreeMap<String, u64>, BackupError> {
    let conn = Conn::new(db)?;
    let out = conn.query(
        db,
        &db.dbname,
        "SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname, \
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', \
         n.nspname, c.relname), false, true, '')))[1]::text) ORDER BY 1), '[]') \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname !~ '^pg_(toast|temp)'",
        "row counts",
    )?;
    let bad = || BackupError::Invalid(format!("psql row counts: unexpected output {out:?}"));
    let rows: Vec<(String, String, String)> = serde_json::from_str(&out).map_err(|_| bad())?;
    rows.into_iter()
        .map(|(schema, table, n)| {
            Ok((
                super::rows::pg_display(&[schema, table]),
                n.parse().map_err(|_| bad())?,
            ))
        })
        .collect()
}

/// Rows per table in a dump: `pg_restore --data-only -f - FILE` (no
/// connection) streamed through [`super::rows::CopyCounter`], in bounded
/// memory. Costs one read of the dump.
pub fn dump_rows(db: &PostgresDb, file: &Path) -> Result<BTreeMap<String, u64>, BackupError> {
    let tool = tools::find(&["pg_restore"], db.bin_dir.as_deref())?;
    let mut convert = tool.command();
    convert.args(["--data-only", "-f", "-"]).arg(file);
    let mut sql = DumpAsSql::spawn(convert, db.tool_timeout())?;
    let mut counter = super::rows::CopyCounter::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match sql.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => counter.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(sql.failure.take().unwrap_or_else(|| {
                    BackupError::Invalid(format!("reading {}: {e}", file.display()))
                }));
            }
        }
    }
    Ok(counter.finish())
}

/// Adds to a failed restore's error that its transaction was rolled back.
fn rolled_back(e: BackupError) -> BackupError {
    match e {
        BackupError::Tool {
            tool,
            status,
            stderr,
        } => BackupError::Tool {
            tool,
            status,
            stderr: format!("{stderr} (the restore was rolled back; the database is unchanged)"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_converter_stuck_on_its_file_is_killed_at_the_deadline() {
        let started = std::time::Instant::now();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo reading the dump >&2; exec sleep 30"]);
        let mut sql = DumpAsSql::spawn(cmd, Duration::from_millis(300)).unwrap();
        let mut out = Vec::new();
        let err = sql.read_to_end(&mut out).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(20), "not killed");
        assert!(err.contains("killed after its deadline"), "{err}");
        assert!(err.contains("timeout_secs"), "{err}");
        assert!(err.contains("reading the dump"), "{err}");
        assert!(sql.failure.is_some());

        // A converter that finishes in time is read to its end.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo select 1\\;"]);
        let mut sql = DumpAsSql::spawn(cmd, Duration::from_secs(60)).unwrap();
        let mut out = String::new();
        sql.read_to_string(&mut out).unwrap();
        assert_eq!(out, "select 1;\n");
    }

    #[test]
    fn schemas_from_the_table_of_contents() {
        let toc = ";\n; Selected TOC Entries:\n;\n\
                   5; 2615 16387 SCHEMA - app golive\n\
                   6; 2615 2200 SCHEMA - public golive\n\
                   3355; 0 0 COMMENT - SCHEMA public golive\n\
                   7; 2615 16390 SCHEMA - two words golive\n\
                   215; 1259 16388 TABLE app t golive\n\
                   216; 1259 16391 TABLE public SCHEMA - x golive\n";
        assert_eq!(parse_toc_schemas(toc), ["app", "public", "two words"]);
    }

    #[test]
    fn names_reach_sql_only_as_escaped_literals() {
        let names = vec!["a\"b".to_string(), "c\\d'e".to_string(), "n\nl".to_string()];
        let json = json_strings(&names);
        assert_eq!(json, r#"["a\"b","c\\d'e","n\u000al"]"#);
        assert_eq!(
            sql_literal(&json),
            r#"E'["a\\"b","c\\\\d''e","n\\u000al"]'"#
        );
        assert!(restore_prefix(&names).contains("golive.restore_schemas"));
    }
}
