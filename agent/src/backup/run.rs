//! Backup orchestration: ids, the backup directory and manifest, the
//! catalog rows, the free-space check, verify, restore (with a failed-state
//! backup first), retention and the offsite copy. The engines only dump,
//! verify and restore one part each.
//!
//! A backup is written into `DIR/.partial-<id>/` and renamed to `DIR/<id>/`
//! only when every part and the manifest are on disk and fsynced; the
//! catalog row goes `running` → `complete`. A crash leaves a `running` row
//! and a partial directory, which start-up marks `interrupted` and removes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use golive_shared::config::{AgentConfig, AppConfig, DatabaseConfig, FileSet};
use golive_shared::protocol::{
    BackupInfo, BackupPart, CreateBackup, EventKind, JobResult, LogLevel, RestoreBackup, TableRows,
    VerifyBackup, now_millis,
};
use golive_shared::timefmt::utc;
use serde::{Deserialize, Serialize};

use super::stream::{Written, hash_file};
use super::{BackupError, files, mariadb, offsite, postgres, sqlite};
use crate::jobs::JobError;
use crate::journal::{BackupRow, Journal};
use crate::release::layout::AppLayout;

/// The manifest written as `manifest.json` in every backup directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub app: String,
    pub label: String,
    pub created_at: String,
    pub release: Option<String>,
    pub deployment: Option<String>,
    pub golive_version: String,
    pub parts: Vec<BackupPart>,
    /// For file parts: the absolute paths archived, in archive index order.
    pub file_targets: Vec<(String, Vec<String>)>,
}

/// What one backup part comes from.
enum Source<'a> {
    Db(&'a DatabaseConfig),
    Files(&'a FileSet),
}

impl Source<'_> {
    fn name(&self) -> &str {
        match self {
            Source::Db(d) => d.name(),
            Source::Files(f) => &f.name,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Source::Db(d) => d.engine(),
            Source::Files(_) => "files",
        }
    }
}

/// Labels end up in ids and directory names: `[a-z0-9-]{1,32}`.
pub fn check_label(label: &str) -> Result<(), String> {
    if !label.is_empty()
        && label.len() <= 32
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "invalid backup label {label:?}: use 1-32 lowercase letters, digits or '-'"
        ))
    }
}

pub fn backup_dir(config: &AgentConfig, app_name: &str, app: &AppConfig) -> PathBuf {
    app.backup
        .dir
        .clone()
        .unwrap_or_else(|| config.agent.state_dir.join("backups").join(app_name))
}

fn sources<'a>(
    app_name: &str,
    app: &'a AppConfig,
    only: &[String],
) -> Result<Vec<Source<'a>>, String> {
    let all: Vec<Source<'a>> = app
        .databases
        .iter()
        .map(Source::Db)
        .chain(app.files.iter().map(Source::Files))
        .collect();
    if all.is_empty() {
        return Err(format!(
            "app {app_name} declares no databases and no file sets to back up; \
             add [[apps.{app_name}.databases]] or [[apps.{app_name}.files]] to the agent config"
        ));
    }
    if only.is_empty() {
        return Ok(all);
    }
    let valid: Vec<String> = all.iter().map(|s| s.name().to_string()).collect();
    for name in only {
        if !valid.contains(name) {
            return Err(format!(
                "app {app_name} declares no database or file set {name:?}; declared: {}",
                valid.join(", ")
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| only.iter().any(|o| o == s.name()))
        .collect())
}

/// A SQLite database whose file does not exist (yet): on an app with
/// nothing live, a first install, its migrations or the app create it.
pub fn not_created_yet(db: &golive_shared::config::DatabaseConfig) -> bool {
    matches!(db, golive_shared::config::DatabaseConfig::Sqlite(d)
        if matches!(std::fs::symlink_metadata(&d.path), Err(e) if e.kind() == std::io::ErrorKind::NotFound))
}

/// Leaves out of a backup what a first install has not created yet (issue
/// 12: the gate and the backup judge only what exists). On an app with a
/// live release a missing database is an error, as before.
fn existing<'a>(
    app: &AppConfig,
    sources: Vec<Source<'a>>,
    emit: &dyn Fn(EventKind),
) -> Vec<Source<'a>> {
    if !matches!(AppLayout::new(&app.root).current(), Ok(None)) {
        return sources;
    }
    sources
        .into_iter()
        .filter(|s| match s {
            Source::Db(db) if not_created_yet(db) => {
                log(
                    emit,
                    format!(
                        "database {}: nothing to save, it does not exist yet and nothing is live \
                         (a first install; its migrations or the app create it)",
                        db.name()
                    ),
                );
                false
            }
            _ => true,
        })
        .collect()
}

fn app_of<'a>(config: &'a AgentConfig, app: &str) -> Result<&'a AppConfig, String> {
    config.app(app).ok_or_else(|| {
        format!(
            "no app {app:?} in the agent config; declared: {}",
            config.app_names()
        )
    })
}

fn log(emit: &dyn Fn(EventKind), line: String) {
    emit(EventKind::Log {
        level: LogLevel::Info,
        line,
    });
}

fn warn(emit: &dyn Fn(EventKind), line: String) {
    emit(EventKind::Log {
        level: LogLevel::Warn,
        line,
    });
}

/// Bytes available to unprivileged writers on the filesystem holding `dir`
/// (or its nearest existing ancestor).
pub fn free_bytes(dir: &Path) -> Result<u64, BackupError> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let st = nix::sys::statvfs::statvfs(&probe).map_err(|e| BackupError::Io {
        action: "cannot statvfs",
        path: probe.clone(),
        source: e.into(),
    })?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The free-space check of a backup: its estimate, what it needs (estimate
/// plus `margin_percent`, plus `min_free_bytes` left over) and what the
/// backup directory's filesystem has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub dir: PathBuf,
    pub estimate: u64,
    pub needed: u64,
    pub available: u64,
}

impl Room {
    /// [`BackupError::NoSpace`] when the backup would not fit.
    pub fn check(&self) -> Result<(), BackupError> {
        if self.available < self.needed {
            return Err(BackupError::NoSpace {
                dir: self.dir.clone(),
                needed: self.needed,
                estimate: self.estimate,
                available: self.available,
            });
        }
        Ok(())
    }
}

/// [`Room`] for a full backup of `app` (every database and file set), as
/// `create` would compute it; reads only (preflight uses it).
pub fn room_for(config: &AgentConfig, app_name: &str) -> Result<Room, String> {
    let app = app_of(config, app_name)?;
    let sources = existing(app, sources(app_name, app, &[])?, &|_| {});
    room_in(&backup_dir(config, app_name, app), &app.root, app, &sources).map_err(|e| e.to_string())
}

fn room_in(
    dir: &Path,
    root: &Path,
    app: &AppConfig,
    sources: &[Source],
) -> Result<Room, BackupError> {
    let mut estimate_total = 0u64;
    for s in sources {
        estimate_total += estimate(root, s)?;
    }
    let available = free_bytes(dir)?;
    let needed = estimate_total.saturating_mul(100 + app.backup.margin_percent as u64) / 100
        + app.backup.min_free_bytes;
    Ok(Room {
        dir: dir.to_path_buf(),
        estimate: estimate_total,
        needed,
        available,
    })
}

fn estimate(root: &Path, source: &Source) -> Result<u64, BackupError> {
    match source {
        // The online backup first writes an uncompressed copy next to the
        // compressed output: count the database twice.
        Source::Db(DatabaseConfig::Sqlite(d)) => sqlite::estimate(d).map(|n| n.saturating_mul(2)),
        Source::Db(DatabaseConfig::Postgres(d)) => postgres::estimate(d),
        Source::Db(DatabaseConfig::Mariadb(d)) => mariadb::estimate(d),
        Source::Files(f) => files::estimate(root, f),
    }
}

fn dump(
    root: &Path,
    source: &Source,
    out: &Path,
    level: i32,
    progress: super::Progress,
) -> Result<Written, BackupError> {
    match source {
        Source::Db(DatabaseConfig::Sqlite(d)) => sqlite::dump(d, out, level, progress),
        Source::Db(DatabaseConfig::Postgres(d)) => postgres::dump(d, out, progress),
        Source::Db(DatabaseConfig::Mariadb(d)) => mariadb::dump(d, out, level, progress),
        Source::Files(f) => files::dump(root, f, out, level, progress).map(|(w, _)| w),
    }
}

/// Throttled progress events: at most one every 500 ms, plus the last.
struct Throttle<'a> {
    emit: &'a dyn Fn(EventKind),
    step: String,
    total: u64,
    last: Instant,
}

impl Throttle<'_> {
    fn tick(&mut self, done: u64) {
        if self.last.elapsed().as_millis() >= 500 {
            self.last = Instant::now();
            (self.emit)(EventKind::Progress {
                step: self.step.clone(),
                done,
                total: self.total,
            });
        }
    }
}

/// Takes a backup. On any failure the partial directory is removed and the
/// catalog row says why.
pub fn create(
    config: &AgentConfig,
    journal: &Journal,
    req: &CreateBackup,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, String> {
    create_job(config, journal, req, emit).map_err(|e| e.message)
}

/// [`create`] as a job: a refusal that wrote nothing (an unknown name, no
/// room) is told from a failure by its code (issue 14).
pub fn create_job(
    config: &AgentConfig,
    journal: &Journal,
    req: &CreateBackup,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    create_with(config, journal, req, emit, true)
}

/// [`create`], optionally without retention (a restore must not prune the
/// backup it is about to read).
fn create_with(
    config: &AgentConfig,
    journal: &Journal,
    req: &CreateBackup,
    emit: &dyn Fn(EventKind),
    run_retention: bool,
) -> Result<JobResult, JobError> {
    let app = app_of(config, &req.app).map_err(JobError::refused)?;
    check_label(&req.label).map_err(JobError::refused)?;
    let sources = existing(
        app,
        sources(&req.app, app, &req.only).map_err(JobError::refused)?,
        emit,
    );
    let dir = backup_dir(config, &req.app, app);
    let root = app.root.clone();

    // Free space first: refuse before writing a byte.
    let room = room_in(&dir, &root, app, &sources).map_err(|e| e.to_string())?;
    room.check().map_err(|e| JobError::refused(e.to_string()))?;
    let (estimate_total, available) = (room.estimate, room.available);
    log(
        emit,
        format!(
            "backing up {} part(s) of {}: about {estimate_total} bytes, {available} free in {}",
            sources.len(),
            req.app,
            dir.display()
        ),
    );

    let now = now_millis();
    let id = new_id(journal, &req.app, &req.label, now)?;
    let final_dir = dir.join(&id);
    let partial = dir.join(format!(".partial-{id}"));
    let release = AppLayout::new(&root).current().ok().flatten();
    journal
        .backup_started(
            &id,
            &req.app,
            &req.label,
            &final_dir.display().to_string(),
            &partial.display().to_string(),
            release.as_deref(),
            req.deployment.as_deref(),
            now,
        )
        .map_err(|e| e.to_string())?;

    let written = write_backup(
        &root,
        &sources,
        &partial,
        &final_dir,
        app,
        &id,
        req,
        release,
        now,
        estimate_total,
        emit,
    );
    let (parts, total) = match written {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            let msg = e.to_string();
            let _ = journal.backup_failed(&id, &msg, now_millis());
            return Err(format!("backup {id} failed: {msg}").into());
        }
    };
    journal
        .backup_complete(&id, &parts, total, now_millis())
        .map_err(|e| e.to_string())?;
    log(
        emit,
        format!(
            "backup {id} complete: {} part(s), {total} bytes",
            parts.len()
        ),
    );

    let mut verified = None;
    if req.verify {
        let r = verify(
            config,
            journal,
            &VerifyBackup {
                app: req.app.clone(),
                id: id.clone(),
            },
            emit,
        );
        // A backup that fails its own verification fails the job: it is
        // not a rollback point anyone should rely on.
        r?;
        verified = Some(true);
    }
    if let Some(o) = &app.backup.offsite {
        match offsite::copy(o, &app.run, &req.app, &final_dir, &parts) {
            Ok(location) => {
                let _ = journal.backup_offsite(&id, &location);
                log(emit, format!("offsite copy checked: {location}"));
            }
            Err(e) => {
                let _ = journal.backup_offsite(&id, &format!("failed: {e}"));
                warn(
                    emit,
                    format!("offsite copy of {id} failed (the local backup is fine): {e}"),
                );
            }
        }
    }
    if run_retention {
        retention(config, journal, &req.app, emit);
    }
    Ok(JobResult::BackedUp {
        id,
        bytes: total,
        parts: parts.len() as u32,
        verified,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_backup(
    root: &Path,
    sources: &[Source],
    partial: &Path,
    final_dir: &Path,
    app: &AppConfig,
    id: &str,
    req: &CreateBackup,
    release: Option<String>,
    now: i64,
    estimate_total: u64,
    emit: &dyn Fn(EventKind),
) -> Result<(Vec<BackupPart>, u64), BackupError> {
    // Owner-only, with the backup directory above it (issue 11).
    crate::state::create_private_dir(partial)
        .map_err(|e| super::stream::io_err("cannot create", partial, e))?;
    let mut parts = Vec::new();
    let mut file_targets = Vec::new();
    let mut total = 0u64;
    for source in sources {
        let started = Instant::now();
        let mut throttle = Throttle {
            emit,
            step: format!("backup {}", source.name()),
            total: estimate_total,
            last: Instant::now(),
        };
        let base = total;
        let w = dump(root, source, partial, app.backup.zstd_level, &mut |n| {
            throttle.tick(base + n)
        })?;
        total += w.bytes;
        let file = w
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        log(
            emit,
            format!(
                "{} {} -> {file}: {} bytes in {:.1}s, sha256 {}",
                source.kind(),
                source.name(),
                w.bytes,
                started.elapsed().as_secs_f64(),
                &w.sha256[..16]
            ),
        );
        if let Source::Files(set) = source {
            file_targets.push((
                set.name.clone(),
                files::resolve(root, set)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            ));
        }
        parts.push(BackupPart {
            name: source.name().to_string(),
            kind: source.kind().to_string(),
            file,
            bytes: w.bytes,
            sha256: w.sha256,
        });
    }
    let manifest = Manifest {
        id: id.to_string(),
        app: req.app.clone(),
        label: req.label.clone(),
        created_at: utc(now),
        release,
        deployment: req.deployment.clone(),
        golive_version: golive_shared::GOLIVE_VERSION.into(),
        parts: parts.clone(),
        file_targets,
    };
    let mpath = partial.join("manifest.json");
    let mut mf = super::stream::HashingFile::create(&mpath)?;
    serde_json::to_writer_pretty(&mut mf, &manifest)
        .map_err(|e| BackupError::Invalid(e.to_string()))?;
    mf.finish()?;
    fsync_dir(partial)?;
    std::fs::rename(partial, final_dir)
        .map_err(|e| super::stream::io_err("cannot rename into place", final_dir, e))?;
    if let Some(parent) = final_dir.parent() {
        fsync_dir(parent)?;
    }
    Ok((parts, total))
}

fn fsync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| super::stream::io_err("cannot fsync", dir, e))
}

/// `shop-20261123T052802Z-pre-deploy`, with `-2`, `-3`... when taken twice
/// in one second.
fn new_id(journal: &Journal, app: &str, label: &str, now: i64) -> Result<String, String> {
    let stamp = utc(now).replace(['-', ':'], "");
    let base = format!("{app}-{stamp}-{label}");
    let mut id = base.clone();
    for n in 2..1000 {
        if !journal.backup_exists(&id).map_err(|e| e.to_string())? {
            return Ok(id);
        }
        id = format!("{base}-{n}");
    }
    Err(format!("too many backups named {base} in one second"))
}

fn complete_row(journal: &Journal, app: &str, id: &str) -> Result<BackupRow, String> {
    let row = journal
        .backup(id)
        .map_err(|e| e.to_string())?
        .filter(|r| r.info.app == app)
        .ok_or_else(|| {
            format!("app {app} has no backup {id:?}; see `golivectl backup list PLAN`")
        })?;
    if row.info.state != "complete" {
        return Err(format!(
            "backup {id} is {}{}; only complete backups can be verified or restored",
            row.info.state,
            row.info
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    Ok(row)
}

/// Checks every part's sha256 against the manifest.
fn check_sums(row: &BackupRow, emit: &dyn Fn(EventKind)) -> Result<(), BackupError> {
    for part in &row.info.parts {
        let path = Path::new(&row.dir).join(&part.file);
        let (_, actual) = hash_file(&path)?;
        if actual != part.sha256 {
            return Err(BackupError::Checksum {
                path,
                expected: part.sha256.clone(),
                actual,
            });
        }
    }
    log(
        emit,
        format!(
            "checksums of {} part(s) match the manifest",
            row.info.parts.len()
        ),
    );
    Ok(())
}

fn find_db<'a>(app: &'a AppConfig, name: &str) -> Option<&'a DatabaseConfig> {
    app.databases.iter().find(|d| d.name() == name)
}

/// Checksums, then a test restore where the engine allows it (SQLite and
/// PostgreSQL into a scratch database; MariaDB reads the dump to its
/// trailer; file archives are read through). Records `verified`.
pub fn verify(
    config: &AgentConfig,
    journal: &Journal,
    req: &VerifyBackup,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, String> {
    let app = app_of(config, &req.app)?;
    let row = complete_row(journal, &req.app, &req.id)?;
    let result = verify_row(app, &row, emit);
    let now = now_millis();
    match result {
        Ok(detail) => {
            journal
                .backup_verified(&req.id, true, &detail, now)
                .map_err(|e| e.to_string())?;
            log(emit, format!("backup {} verified: {detail}", req.id));
            Ok(JobResult::Verified {
                id: req.id.clone(),
                ok: true,
                detail,
            })
        }
        Err(e) => {
            let msg = e.to_string();
            journal
                .backup_verified(&req.id, false, &msg, now)
                .map_err(|e| e.to_string())?;
            Err(format!("backup {} failed verification: {msg}", req.id))
        }
    }
}

fn verify_row(
    app: &AppConfig,
    row: &BackupRow,
    emit: &dyn Fn(EventKind),
) -> Result<String, BackupError> {
    check_sums(row, emit)?;
    let mut details = Vec::new();
    for part in &row.info.parts {
        let path = Path::new(&row.dir).join(&part.file);
        let detail = match part.kind.as_str() {
            "sqlite" => {
                let scratch = Path::new(&row.dir).join(".verify-scratch");
                crate::state::create_private_dir(&scratch)
                    .map_err(|e| super::stream::io_err("cannot create", &scratch, e))?;
                let r = sqlite::verify(&path, &scratch);
                let _ = std::fs::remove_dir_all(&scratch);
                r?
            }
            "postgres" => match find_db(app, &part.name) {
                Some(DatabaseConfig::Postgres(d)) => postgres::verify(d, &path)?,
                _ => {
                    return Err(BackupError::Invalid(format!(
                        "the agent config no longer declares postgres database {:?}, needed for a test restore",
                        part.name
                    )));
                }
            },
            "mariadb" => mariadb::verify(&path)?,
            "files" => files::verify(&path)?,
            other => return Err(BackupError::Invalid(format!("unknown part kind {other:?}"))),
        };
        log(emit, format!("{} {}: {detail}", part.kind, part.name));
        details.push(format!("{}: {detail}", part.name));
    }
    Ok(if details.is_empty() {
        "checksums ok".to_string()
    } else {
        format!("checksums ok; {}", details.join("; "))
    })
}

/// Restores a backup: checksums first (a corrupt backup is refused before
/// anything is touched), then a `failed-state` backup of what is there now,
/// then each part, each checked by its engine. Before a database part is
/// replaced, its rows per table now and in the backup are counted and
/// reported (events and the job result): what the restore throws away, and
/// where it is kept.
pub fn restore(
    config: &AgentConfig,
    journal: &Journal,
    req: &RestoreBackup,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, String> {
    restore_job(config, journal, req, emit).map_err(|e| e.message)
}

/// [`restore`] as a job: a refusal that changed nothing (a corrupt backup,
/// no room for the failed-state backup) is told from a failure by its code
/// (issue 14).
pub fn restore_job(
    config: &AgentConfig,
    journal: &Journal,
    req: &RestoreBackup,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    let started = Instant::now();
    let app = app_of(config, &req.app).map_err(JobError::refused)?;
    let row = complete_row(journal, &req.app, &req.id)?;
    check_sums(&row, emit)
        .map_err(|e| JobError::refused(format!("restore refused, nothing was changed: {e}")))?;
    let manifest: Manifest = std::fs::read(Path::new(&row.dir).join("manifest.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| {
            JobError::refused(format!(
                "restore refused: cannot read the manifest of {}: {e}",
                req.id
            ))
        })?;

    // Nothing is lost: save what is there now before overwriting it.
    let names: Vec<String> = row.info.parts.iter().map(|p| p.name.clone()).collect();
    log(
        emit,
        "saving the current state as a failed-state backup before restoring".into(),
    );
    let saved = create_with(
        config,
        journal,
        &CreateBackup {
            app: req.app.clone(),
            label: "failed-state".into(),
            only: names,
            deployment: req.deployment.clone(),
            verify: false,
        },
        emit,
        false,
    )
    .map_err(|e| JobError::refused(format!("restore refused: the failed-state backup of the current state could not be taken, so nothing was changed: {e}")))?;
    let JobResult::BackedUp { id: saved_id, .. } = saved else {
        return Err("unexpected result of the failed-state backup".into());
    };

    // What each database part throws away: rows per table now and in the
    // backup, counted after the failed-state backup and before the replace.
    let mut tables: Vec<TableRows> = Vec::new();
    for part in &row.info.parts {
        let path = Path::new(&row.dir).join(&part.file);
        let mut counted =
            |now: Result<BTreeMap<String, u64>, BackupError>,
             backup: Result<BTreeMap<String, u64>, BackupError>| {
                match (now, backup) {
                    (Ok(now), Ok(backup)) => {
                        tables.extend(report_rows(&part.name, now, backup, &saved_id, emit));
                    }
                    (Err(e), _) | (_, Err(e)) => warn(
                        emit,
                        format!(
                            "the rows of database {} could not be counted ({e}); restoring anyway: \
                         failed-state backup {saved_id} keeps what is there now",
                            part.name
                        ),
                    ),
                }
            };
        let detail = match part.kind.as_str() {
            "sqlite" => match find_db(app, &part.name) {
                Some(DatabaseConfig::Sqlite(d)) => {
                    let now = sqlite::live_rows(d);
                    sqlite::restore_with(&path, d, &mut |src| {
                        counted(now.clone_ok(), sqlite::rows_of(src, &path));
                        Ok(())
                    })
                }
                _ => Err(missing(&part.name, "sqlite")),
            },
            "postgres" => match find_db(app, &part.name) {
                Some(DatabaseConfig::Postgres(d)) => {
                    counted(postgres::live_rows(d), postgres::dump_rows(d, &path));
                    postgres::restore(d, &path)
                }
                _ => Err(missing(&part.name, "postgres")),
            },
            "mariadb" => match find_db(app, &part.name) {
                Some(DatabaseConfig::Mariadb(d)) => {
                    counted(mariadb::live_rows(d), mariadb::dump_rows(&path));
                    mariadb::restore(d, &path)
                }
                _ => Err(missing(&part.name, "mariadb")),
            },
            "files" => {
                let targets: Vec<PathBuf> = manifest
                    .file_targets
                    .iter()
                    .find(|(n, _)| n == &part.name)
                    .map(|(_, t)| t.iter().map(PathBuf::from).collect())
                    .unwrap_or_default();
                files::restore(&path, &targets).map(|s| {
                    format!(
                        "{} files, {} dirs, {} symlinks, {} bytes",
                        s.files, s.dirs, s.symlinks, s.bytes
                    )
                })
            }
            other => Err(BackupError::Invalid(format!("unknown part kind {other:?}"))),
        }
        .map_err(|e| {
            format!(
                "restoring {} {} failed: {e}; what was there before is saved in backup {saved_id}",
                part.kind, part.name
            )
        })?;
        log(
            emit,
            format!("restored {} {}: {detail}", part.kind, part.name),
        );
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    log(
        emit,
        format!("restore of {} done in {duration_ms} ms", req.id),
    );
    retention(config, journal, &req.app, emit);
    Ok(JobResult::Restored {
        id: req.id.clone(),
        failed_state_backup: saved_id,
        duration_ms,
        tables,
    })
}

/// A count result that can be handed over once more (the SQLite hook runs
/// at most once; the error is kept as text).
trait CloneOk {
    fn clone_ok(&self) -> Self;
}

impl CloneOk for Result<BTreeMap<String, u64>, BackupError> {
    fn clone_ok(&self) -> Self {
        match self {
            Ok(m) => Ok(m.clone()),
            Err(e) => Err(BackupError::Invalid(e.to_string())),
        }
    }
}

/// Joins the counts of one database, logs one line per table (a warning
/// where rows are discarded) and a total, and returns the figures.
fn report_rows(
    database: &str,
    now: BTreeMap<String, u64>,
    backup: BTreeMap<String, u64>,
    failed_state: &str,
    emit: &dyn Fn(EventKind),
) -> Vec<TableRows> {
    let names: std::collections::BTreeSet<&String> = now.keys().chain(backup.keys()).collect();
    let rows: Vec<TableRows> = names
        .into_iter()
        .map(|t| TableRows {
            database: database.to_string(),
            table: t.clone(),
            now: now.get(t).copied(),
            backup: backup.get(t).copied(),
        })
        .collect();
    for r in &rows {
        let line = format!("{database}: {}", r.describe(failed_state));
        if r.lost() > 0 || (r.now.is_some() && r.backup.is_none()) {
            warn(emit, line);
        } else {
            log(emit, line);
        }
    }
    let lost: u64 = rows.iter().map(TableRows::lost).sum();
    log(
        emit,
        if lost == 0 {
            format!("database {database}: the restore discards no rows")
        } else {
            format!(
                "database {database}: the restore discards {lost} row(s) that are not in the \
                 backup; they stay in failed-state backup {failed_state}"
            )
        },
    );
    rows
}

fn missing(name: &str, engine: &str) -> BackupError {
    BackupError::Invalid(format!(
        "the agent config no longer declares {engine} database {name:?}; declare it again to restore into it"
    ))
}

fn retention(config: &AgentConfig, journal: &Journal, app: &str, emit: &dyn Fn(EventKind)) {
    match prune(config, journal, app) {
        Ok(removed) if !removed.is_empty() => log(
            emit,
            format!(
                "retention removed {} old backup(s): {}",
                removed.len(),
                removed.join(", ")
            ),
        ),
        Ok(_) => {}
        Err(e) => warn(emit, format!("retention could not run: {e}")),
    }
}

pub fn list(
    _config: &AgentConfig,
    journal: &Journal,
    app: &str,
) -> Result<Vec<BackupInfo>, String> {
    journal
        .backups(app)
        .map(|rows| rows.into_iter().map(|r| r.info).collect())
        .map_err(|e| e.to_string())
}

/// Retention: keep the newest `keep` complete backups (and, with
/// `keep_days`, none older than that), but never the newest verified backup
/// nor a backup that is the rollback point of a live deployment (one holding
/// the app lock, or the one that staged the current release).
pub fn prune(
    config: &AgentConfig,
    journal: &Journal,
    app_name: &str,
) -> Result<Vec<String>, String> {
    let app = app_of(config, app_name)?;
    let rows = journal.backups(app_name).map_err(|e| e.to_string())?;
    let now = now_millis();
    let mut live = Vec::new();
    if let Ok(Some((lock, _))) = journal.lock(app_name)
        && lock.expires_at > now
    {
        live.push(lock.deployment);
    }
    if let Ok(Some(current)) = AppLayout::new(&app.root).current()
        && let Ok(Some(d)) = journal.release_deployment(app_name, &current)
    {
        live.push(d);
    }
    let newest_verified = rows
        .iter()
        .find(|r| r.info.state == "complete" && r.info.verified == Some(true))
        .map(|r| r.info.id.clone());
    let max_age = app.backup.keep_days as i64 * 86_400_000;
    let mut kept = 0usize;
    let mut removed = Vec::new();
    for row in rows.iter().filter(|r| r.info.state == "complete") {
        let protected = Some(&row.info.id) == newest_verified.as_ref()
            || row
                .info
                .deployment
                .as_ref()
                .is_some_and(|d| live.contains(d));
        let too_old = max_age > 0 && now - row.info.created_at > max_age;
        if protected || (kept < app.backup.keep && !too_old) {
            kept += 1;
            continue;
        }
        match std::fs::remove_dir_all(&row.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", row.dir)),
        }
        journal
            .backup_deleted(&row.info.id)
            .map_err(|e| e.to_string())?;
        removed.push(row.info.id.clone());
    }
    Ok(removed)
}

/// Start-up: removes partial backup directories the journal knows about
/// and any `.partial-*` left in the apps' backup directories.
pub fn clean_partials(config: &AgentConfig, known: &[String]) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for p in known {
        if std::fs::remove_dir_all(p).is_ok() {
            removed.push(PathBuf::from(p));
        }
    }
    for (name, app) in &config.apps {
        let dir = backup_dir(config, name, app);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".partial-")
                    && std::fs::remove_dir_all(e.path()).is_ok()
                {
                    removed.push(e.path());
                }
            }
        }
    }
    removed
}
