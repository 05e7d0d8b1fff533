//! The controller's journal (SQLite): deployments, their hosts and steps, so
//! `golivectl rollback ID` and `golivectl show ID` work after the fact.

use std::path::{Path, PathBuf};

use golive_shared::protocol::{UnixMillis, now_millis};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

const SCHEMA_VERSION: i64 = 3;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    plan_path TEXT NOT NULL,
    app TEXT NOT NULL,
    release TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    operator TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    state TEXT NOT NULL,
    message TEXT
);
CREATE TABLE deployment_hosts (
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    address TEXT NOT NULL,
    previous_release TEXT,
    state TEXT NOT NULL,
    PRIMARY KEY (deployment, host)
);
CREATE TABLE steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    step TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    state TEXT NOT NULL,
    detail TEXT
);
"#,
    r#"
CREATE TABLE flag_snapshots (
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    percent INTEGER,
    PRIMARY KEY (deployment, host, name)
);
"#,
    // v3: why a deployment started outside its window (`--hotfix --reason`).
    r#"
ALTER TABLE deployments ADD COLUMN hotfix_reason TEXT;
"#,
];

pub struct Journal {
    conn: Connection,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub id: String,
    pub plan_path: String,
    pub app: String,
    pub release: String,
    pub artifact_sha256: String,
    pub operator: String,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub state: String,
    pub message: Option<String>,
    /// `--hotfix --reason TEXT`: why it was deployed (outside the window).
    pub hotfix_reason: Option<String>,
    pub hosts: Vec<DeploymentHost>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentHost {
    pub host: String,
    pub address: String,
    pub previous_release: Option<String>,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub host: String,
    pub step: String,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub state: String,
    pub detail: Option<String>,
}

/// The controller's state directory: `--state DIR`, else `$GOLIVE_STATE_DIR`,
/// else `$XDG_STATE_HOME/golive`, else `~/.local/state/golive`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GOLIVE_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("golive");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".local/state/golive")
}

impl Journal {
    pub fn open(dir: &Path) -> anyhow::Result<Journal> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the controller state directory {}: {e}",
                dir.display()
            )
        })?;
        let path = dir.join("golivectl.db");
        let conn = Connection::open(&path).map_err(|e| {
            anyhow::anyhow!("cannot open the controller journal {}: {e}", path.display())
        })?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        anyhow::ensure!(
            found <= SCHEMA_VERSION,
            "controller journal {} has schema {found}, newer than this golivectl ({SCHEMA_VERSION}); use the newer golivectl",
            path.display()
        );
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(Journal { conn })
    }

    pub fn create_deployment(
        &self,
        id: &str,
        plan_path: &str,
        app: &str,
        release: &str,
        sha: &str,
        operator: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO deployments (id, plan_path, app, release, artifact_sha256, operator, started_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running')",
            params![id, plan_path, app, release, sha, operator, now_millis()],
        )?;
        Ok(())
    }

    /// Records a deployment as a hotfix, with its reason.
    pub fn set_hotfix(&self, id: &str, reason: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET hotfix_reason = ?2 WHERE id = ?1",
            params![id, reason],
        )?;
        Ok(())
    }

    pub fn finish_deployment(
        &self,
        id: &str,
        state: &str,
        message: Option<&str>,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET state = ?2, message = ?3, finished_at = ?4 WHERE id = ?1",
            params![id, state, message, now_millis()],
        )?;
        Ok(())
    }

    pub fn set_host(
        &self,
        deployment: &str,
        host: &str,
        address: &str,
        previous: Option<&str>,
        state: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO deployment_hosts (deployment, host, address, previous_release, state)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (deployment, host) DO UPDATE SET
                previous_release = COALESCE(excluded.previous_release, previous_release),
                state = excluded.state",
            params![deployment, host, address, previous, state],
        )?;
        Ok(())
    }

    pub fn start_step(&self, deployment: &str, host: &str, step: &str) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT INTO steps (deployment, host, step, started_at, state) VALUES (?1, ?2, ?3, ?4, 'running')",
            params![deployment, host, step, now_millis()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_step(&self, seq: i64, state: &str, detail: Option<&str>) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE steps SET state = ?2, detail = ?3, finished_at = ?4 WHERE seq = ?1",
            params![seq, state, detail, now_millis()],
        )?;
        Ok(())
    }

    pub fn deployment(&self, id: &str) -> rusqlite::Result<Option<Deployment>> {
        let Some(mut d) = self
            .conn
            .query_row(
                "SELECT id, plan_path, app, release, artifact_sha256, operator, started_at, finished_at, state, message,
                        hotfix_reason
                 FROM deployments WHERE id = ?1",
                params![id],
                |r| {
                    Ok(Deployment {
                        id: r.get(0)?,
                        plan_path: r.get(1)?,
                        app: r.get(2)?,
                        release: r.get(3)?,
                        artifact_sha256: r.get(4)?,
                        operator: r.get(5)?,
                        started_at: r.get(6)?,
                        finished_at: r.get(7)?,
                        state: r.get(8)?,
                        message: r.get(9)?,
                        hotfix_reason: r.get(10)?,
                        hosts: Vec::new(),
                        steps: Vec::new(),
                    })
                },
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare(
            "SELECT host, address, previous_release, state FROM deployment_hosts WHERE deployment = ?1 ORDER BY rowid",
        )?;
        d.hosts = stmt
            .query_map(params![id], |r| {
                Ok(DeploymentHost {
                    host: r.get(0)?,
                    address: r.get(1)?,
                    previous_release: r.get(2)?,
                    state: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT host, step, started_at, finished_at, state, detail FROM steps WHERE deployment = ?1 ORDER BY seq",
        )?;
        d.steps = stmt
            .query_map(params![id], |r| {
                Ok(Step {
                    host: r.get(0)?,
                    step: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    state: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(d))
    }

    /// The feature-flag values of a host when the deployment started: part
    /// of its rollback point.
    pub fn save_flags(
        &self,
        deployment: &str,
        host: &str,
        flags: &[(String, bool, Option<u8>)],
    ) -> rusqlite::Result<()> {
        for (name, on, percent) in flags {
            self.conn.execute(
                "INSERT OR REPLACE INTO flag_snapshots (deployment, host, name, enabled, percent)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![deployment, host, name, on, percent.map(i64::from)],
            )?;
        }
        Ok(())
    }

    pub fn flags(
        &self,
        deployment: &str,
        host: &str,
    ) -> rusqlite::Result<Vec<(String, bool, Option<u8>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, enabled, percent FROM flag_snapshots WHERE deployment = ?1 AND host = ?2 ORDER BY name",
        )?;
        stmt.query_map(params![deployment, host], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, Option<i64>>(2)?.map(|p| p as u8),
            ))
        })?
        .collect()
    }

    /// Deployment ids, newest first.
    pub fn deployment_ids(&self, limit: u32) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM deployments ORDER BY started_at DESC, rowid DESC LIMIT ?1")?;
        stmt.query_map(params![limit as i64], |r| r.get(0))?
            .collect()
    }
}
