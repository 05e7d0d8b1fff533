//! The agent's preflight (issue 5 part 3): read-only checks of one app
//! before a deployment, each a [`PreflightCheck`] with a severity and a
//! message that names the fix. Nothing on the host changes: no job, no lock,
//! no file written; databases get one trivial query each.
//!
//! - `lock`: nobody holds the app lock ("locked by deployment D, started by
//!   NAME at TIME").
//! - `maintenance`: the app is not left in maintenance; a declared flag
//!   file's directory is writable and no stray flag file makes the web
//!   server answer 503.
//! - `database NAME`: every declared database answers (SQLite: the file opens
//!   read-only and its schema reads; PostgreSQL/MariaDB: a trivial query
//!   through the client tools, the password only in the environment or an
//!   option file, never in argv or in a message).
//! - `backup tools`, `backup space`: when a pre-deploy backup will be taken
//!   (the plan asks, or the app's migration command makes one mandatory):
//!   the dump tools exist, and the estimate plus margin fits
//!   ([`crate::backup::run::room_for`], the check `create` makes).
//! - `git source`: git will read the app's local repository (owned by the
//!   agent's user, or listed in git's `safe.directory`; issue 12).
//! - `permissions`, `required files`: the rules `hooks` applies after unpack
//!   still hold on the current release.
//! - `migrations`: the applied migrations match the current release's files
//!   (an edited applied migration or a gap is reported, [`crate::migrate`]).
//!
//! Before the first deployment there is no current release: the checks of
//! it are `n/a` ("nothing live yet"), never failures (issue 12).
//!
//! Everything runs on the blocking pool: database clients and statvfs block.

use std::path::Path;
use std::sync::Arc;

use golive_shared::config::{AgentConfig, AppConfig, DatabaseConfig, find_tool};
use golive_shared::protocol::{
    DeclaredProbe, ErrorBody, MigrationStatusRequest, PreflightCheck, PreflightReport,
    PreflightRequest, ProbeStatus, Severity, now_millis,
};
use golive_shared::timefmt::utc;

use crate::backup::{mariadb, postgres, run, sqlite};
use crate::release::layout::AppLayout;
use crate::state::{Agent, internal};

/// Answers a `Preflight` request.
pub async fn handle(
    agent: &Arc<Agent>,
    req: PreflightRequest,
) -> Result<PreflightReport, ErrorBody> {
    let app = &agent.known_app(&req.app)?;
    let probes = declared_probes(app);
    if req.probes_only {
        return Ok(PreflightReport {
            app: req.app,
            checks: Vec::new(),
            probes,
        });
    }
    let agent = Arc::clone(agent);
    let name = req.app.clone();
    let checks = tokio::task::spawn_blocking(move || checks(&agent, &req))
        .await
        .map_err(internal)??;
    Ok(PreflightReport {
        app: name,
        checks,
        probes,
    })
}

/// The app's probes as declared (what `RunProbes` runs).
pub fn declared_probes(app: &AppConfig) -> Vec<DeclaredProbe> {
    app.probes
        .iter()
        .map(|p| DeclaredProbe {
            name: p.name().to_string(),
            kind: p.kind().to_string(),
            severity: p.severity(),
            tags: p.tags().to_vec(),
        })
        .collect()
}

fn check(name: impl Into<String>, ok: bool, severity: Severity, message: String) -> PreflightCheck {
    PreflightCheck {
        name: name.into(),
        status: if ok {
            ProbeStatus::Pass
        } else {
            ProbeStatus::Fail
        },
        severity,
        message,
    }
}

/// A check of the live release on an app that has none yet (issue 12: a
/// first install is not a failure); staging checks the new release itself.
fn not_applicable(name: &str, severity: Severity, app: &AppConfig, then: &str) -> PreflightCheck {
    PreflightCheck {
        name: name.into(),
        status: ProbeStatus::NotApplicable,
        severity,
        message: format!(
            "nothing live yet: no release at {} (first deployment); {then}",
            app.root.join("current").display()
        ),
    }
}

/// Every check for `req.app`, in the order an operator reads them.
fn checks(agent: &Agent, req: &PreflightRequest) -> Result<Vec<PreflightCheck>, ErrorBody> {
    let config = &agent.config();
    let name = req.app.as_str();
    let app = &agent.known_app(name)?;
    let mut out = vec![lock(agent, name)?];
    out.extend(maintenance(agent, name, app)?);
    let migrations_db = app.migrations.as_ref().map(|m| m.database.as_str());
    // The deploy takes a verified backup whenever the app's migration
    // command runs, which is on every deployment.
    let backup = req.backup || app.migration_command.is_some();
    let mut silent = Vec::new();
    let nothing_live = matches!(AppLayout::new(&app.root).current(), Ok(None));
    for db in &app.databases {
        let needed = backup || migrations_db == Some(db.name());
        // A first install whose SQLite file does not exist yet: there is
        // nothing to lose, and `migrate up` or the app creates it.
        if nothing_live && crate::backup::run::not_created_yet(db) {
            let then = if migrations_db == Some(db.name()) {
                "the first release's migrations create it"
            } else {
                "the app creates it; the pre-deploy backup has nothing to save"
            };
            out.push(not_applicable(
                &format!("database {}", db.name()),
                if needed {
                    Severity::Critical
                } else {
                    Severity::High
                },
                app,
                &format!("{} does not exist yet: {then}", db_path(db)),
            ));
            continue;
        }
        let c = database(db, needed);
        if c.status != ProbeStatus::Pass {
            silent.push(db.name().to_string());
        }
        out.push(c);
    }
    if backup {
        let why = if req.backup {
            "the plan takes a pre-deploy backup"
        } else {
            "the app's migration command runs behind a verified backup"
        };
        out.extend(backup_tools(app, why));
        out.push(if silent.is_empty() {
            backup_space(config, name, why)
        } else {
            // The estimate asks every database for its size.
            PreflightCheck {
                name: "backup space".into(),
                status: ProbeStatus::Error,
                severity: Severity::Critical,
                message: format!(
                    "{why}; its size cannot be estimated until database(s) {} answer",
                    silent.join(", ")
                ),
            }
        });
    }
    out.extend(git_source(name, app));
    out.extend(shared_paths(name, app));
    out.extend(release_files(name, app));
    out.extend(migrations(config, name, app));
    Ok(out)
}

fn lock(agent: &Agent, app: &str) -> Result<PreflightCheck, ErrorBody> {
    let now = now_millis();
    let held = agent
        .journal
        .lock(app)
        .map_err(internal)?
        .map(|(info, _)| info)
        .filter(|info| info.expires_at > now);
    Ok(match held {
        None => check(
            "lock",
            true,
            Severity::Critical,
            format!("app {app} is not locked"),
        ),
        Some(l) => check(
            "lock",
            false,
            Severity::Critical,
            format!(
                "app {app} is locked by deployment {}, started by {} at {} (lease until {}); \
                 wait for it to finish, or break a stale lock with `golivectl unlock PLAN --reason TEXT`",
                l.deployment,
                l.holder,
                utc(l.since),
                utc(l.expires_at)
            ),
        ),
    })
}

/// Left in maintenance; a flag file the deploy could not write, or one that
/// is there although the journal says maintenance is off.
fn maintenance(
    agent: &Agent,
    name: &str,
    app: &AppConfig,
) -> Result<Vec<PreflightCheck>, ErrorBody> {
    let mut out = Vec::new();
    let state = agent.journal.maintenance(name).map_err(internal)?;
    if let Some(m) = &state {
        out.push(check(
            "maintenance",
            false,
            Severity::Medium,
            format!(
                "app {name} is in maintenance since {} ({}, by {}); if that is left over, \
                 `golivectl maintenance off PLAN`",
                utc(m.on_since),
                m.reason,
                m.by
            ),
        ));
    }
    let Some(cfg) = &app.maintenance else {
        return Ok(out);
    };
    if let Some(flag) = &cfg.flag_file {
        let path = crate::maintenance::flag_path(&app.root, flag);
        let dir_problem = writable_dir(path.parent().unwrap_or(Path::new("/")));
        let stray = state.is_none() && path.exists();
        let (ok, message) = match (dir_problem, stray) {
            (Some(p), _) => (
                false,
                format!(
                    "maintenance flag file {}: {p}; fix flag_file in [apps.{name}.maintenance] \
                     or the directory",
                    path.display()
                ),
            ),
            (None, true) => (
                false,
                format!(
                    "maintenance flag file {} exists although maintenance is off: the web server \
                     answers 503; remove it (`golivectl maintenance off PLAN`)",
                    path.display()
                ),
            ),
            (None, false) => (
                true,
                format!("maintenance flag file {} can be written", path.display()),
            ),
        };
        out.push(check("maintenance flag", ok, Severity::High, message));
    }
    for (which, spec) in [("on", &cfg.on), ("off", &cfg.off)] {
        let Some(program) = spec.as_ref().and_then(|c| c.cmd.first()) else {
            continue;
        };
        // Bare names come from PATH and absolute paths are fixed; a relative
        // path runs inside the release, which preflight cannot see yet.
        let found = if program.starts_with('/') {
            Path::new(program).is_file()
        } else if !program.contains('/') {
            find_tool(&[program], None).is_some()
        } else {
            continue;
        };
        if !found {
            out.push(check(
                format!("maintenance {which}"),
                false,
                Severity::High,
                format!(
                    "maintenance `{which}` command: program {program:?} not found{}; install it or \
                     fix [apps.{name}.maintenance] {which}",
                    if program.starts_with('/') {
                        ""
                    } else {
                        " on PATH"
                    }
                ),
            ));
        }
    }
    Ok(out)
}

/// Why `dir` (or the nearest existing ancestor, which the flag file write
/// would create it under) cannot take a new file; `None` when it can.
fn writable_dir(dir: &Path) -> Option<String> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            return Some("no existing parent directory".into());
        }
    }
    if !probe.is_dir() {
        return Some(format!("{} is not a directory", probe.display()));
    }
    nix::unistd::access(
        &probe,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .err()
    .map(|e| format!("{} is not writable by the agent: {e}", probe.display()))
}

/// The file of a SQLite database, shown in a message.
fn db_path(db: &DatabaseConfig) -> String {
    match db {
        DatabaseConfig::Sqlite(d) => d.path.display().to_string(),
        _ => db.name().to_string(),
    }
}

fn database(db: &DatabaseConfig, needed: bool) -> PreflightCheck {
    let name = format!("database {}", db.name());
    // An unreachable database fails the backup or the migrations; otherwise
    // it is the app's own problem, still worth stopping for.
    let severity = if needed {
        Severity::Critical
    } else {
        Severity::High
    };
    let result = match db {
        DatabaseConfig::Sqlite(d) => {
            sqlite::ping(d).map(|()| format!("sqlite {} opens read-only", d.path.display()))
        }
        DatabaseConfig::Postgres(d) => postgres::ping(d).map(|()| {
            format!(
                "postgres {}:{} database {} answers as {}",
                d.host, d.port, d.dbname, d.user
            )
        }),
        DatabaseConfig::Mariadb(d) => mariadb::ping(d).map(|()| {
            let at = match &d.socket {
                Some(s) => s.display().to_string(),
                None => format!("{}:{}", d.host, d.port),
            };
            format!("mariadb {at} database {} answers as {}", d.database, d.user)
        }),
    };
    match (result, db) {
        (Ok(msg), _) => check(name, true, severity, msg),
        // The SQLite errors name the file and the fix already.
        (Err(e), DatabaseConfig::Sqlite(_)) => check(name, false, severity, e.to_string()),
        (Err(e), _) => check(
            name,
            false,
            severity,
            format!(
                "{} database {}: {e}; check that the server runs and the entry's host, port, \
                 user and password_file in the agent config",
                db.engine(),
                db.name()
            ),
        ),
    }
}

fn backup_tools(app: &AppConfig, why: &str) -> Option<PreflightCheck> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for db in &app.databases {
        for names in db.tools() {
            match find_tool(names, db.bin_dir()) {
                Some(p) => found.push(p.display().to_string()),
                None => missing.push(format!(
                    "`{}` for database {} ({})",
                    names.join("` or `"),
                    db.name(),
                    match db.bin_dir() {
                        Some(d) => format!("in bin_dir {}", d.display()),
                        None => "on PATH".into(),
                    }
                )),
            }
        }
    }
    if found.is_empty() && missing.is_empty() {
        return None;
    }
    Some(if missing.is_empty() {
        check(
            "backup tools",
            true,
            Severity::Critical,
            format!("found {}", found.join(", ")),
        )
    } else {
        check(
            "backup tools",
            false,
            Severity::Critical,
            format!(
                "{why}, but these tools are missing: {}; install the database client tools or set \
                 bin_dir in the database's entry",
                missing.join("; ")
            ),
        )
    })
}

fn backup_space(config: &AgentConfig, name: &str, why: &str) -> PreflightCheck {
    match run::room_for(config, name) {
        Err(e) => PreflightCheck {
            name: "backup space".into(),
            status: ProbeStatus::Error,
            severity: Severity::Critical,
            message: format!("{why}, but its size cannot be estimated: {e}"),
        },
        Ok(room) => match room.check() {
            Ok(()) => check(
                "backup space",
                true,
                Severity::Critical,
                format!(
                    "the backup needs about {} (estimate {}, plus margin_percent and min_free_bytes), \
                     {} free in {}",
                    bytes(room.needed),
                    bytes(room.estimate),
                    bytes(room.available),
                    room.dir.display()
                ),
            ),
            Err(e) => check(
                "backup space",
                false,
                Severity::Critical,
                format!("{why}: {e}"),
            ),
        },
    }
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// Whether git will read the app's local repository (issue 12): a
/// repository owned by another user fails the fetch with "dubious
/// ownership" unless git's `safe.directory` lists it.
fn git_source(name: &str, app: &AppConfig) -> Option<PreflightCheck> {
    use crate::release::git::{Ownership, ownership};
    let source = app.git.as_ref()?;
    Some(match ownership(name, app) {
        Ok(Ownership::Remote) => return None,
        Ok(Ownership::Trusted(why)) => check("git source", true, Severity::Critical, why),
        Ok(Ownership::Dubious(why)) => check("git source", false, Severity::Critical, why),
        Err(e) => PreflightCheck {
            name: "git source".into(),
            status: ProbeStatus::Error,
            severity: Severity::Critical,
            message: format!("repository {}: {e}", source.redacted_url()),
        },
    })
}

/// The app's `shared` entries in `ROOT/shared` (issue 12): an entry without
/// a trailing `/` (a file, or whatever the first release seeded) that is
/// missing or a dangling link makes
/// the next staging fail, and leaves the live release's link dangling; a
/// declared directory that is something else is refused at staging too.
/// Before the first release a missing file is a warning: that release may
/// ship it (it then seeds `ROOT/shared`).
fn shared_paths(name: &str, app: &AppConfig) -> Option<PreflightCheck> {
    if app.shared.is_empty() {
        return None;
    }
    let layout = AppLayout::new(&app.root);
    let live = layout.current().ok().flatten().is_some();
    let mut bad = Vec::new();
    for entry in &app.shared {
        let at = layout.shared_dir().join(&entry.path);
        let found = match std::fs::metadata(&at) {
            Ok(m) if m.is_dir() => "a directory",
            Ok(_) => "a file",
            Err(_) if std::fs::symlink_metadata(&at).is_ok() => "a dangling link",
            Err(_) => "missing",
        };
        match (entry.dir, found) {
            // A declared directory missing is created empty at the next
            // staging; an entry without `/` is whatever exists.
            (true, "a directory" | "missing") | (false, "a directory" | "a file") => {}
            (false, "missing") => bad.push(format!(
                "{} is missing: put the file there (golive never creates a file)",
                at.display()
            )),
            (true, _) => bad.push(format!(
                "{} is {found}, but `shared` declares a directory ({entry})",
                at.display()
            )),
            (false, _) => bad.push(format!("{} is {found}", at.display())),
        }
    }
    Some(if bad.is_empty() {
        check(
            "shared paths",
            true,
            Severity::High,
            format!("{} shared path(s) in place", app.shared.len()),
        )
    } else if live {
        check(
            "shared paths",
            false,
            Severity::High,
            format!(
                "shared paths of app {name}: {}; the next deployment's staging is refused until \
                 they are fixed, and the live release links to them",
                bad.join("; ")
            ),
        )
    } else {
        check(
            "shared paths",
            false,
            Severity::Medium,
            format!(
                "shared paths of app {name}: {}; the first release must ship them (they are \
                 moved to ROOT/shared), or its staging is refused",
                bad.join("; ")
            ),
        )
    })
}

/// Permission rules and required files on the current release, read only.
fn release_files(name: &str, app: &AppConfig) -> Vec<PreflightCheck> {
    if app.permissions.is_empty() && app.required_files.is_empty() {
        return Vec::new();
    }
    let layout = AppLayout::new(&app.root);
    let current = match layout.current() {
        Ok(Some(c)) => c,
        Ok(None) => {
            let mut out = Vec::new();
            if !app.permissions.is_empty() {
                out.push(not_applicable(
                    "permissions",
                    Severity::Medium,
                    app,
                    "staging applies them to the new release",
                ));
            }
            if !app.required_files.is_empty() {
                out.push(not_applicable(
                    "required files",
                    Severity::High,
                    app,
                    "staging checks them in the new release",
                ));
            }
            return out;
        }
        Err(e) => {
            return vec![PreflightCheck {
                name: "current release".into(),
                status: ProbeStatus::Error,
                severity: Severity::High,
                message: format!("cannot read {}: {e}", layout.current_link().display()),
            }];
        }
    };
    let dir = layout.release_dir(&current);
    let mut out = Vec::new();
    if !app.permissions.is_empty() {
        let bad = crate::hooks::check_permissions(app, &dir);
        out.push(if bad.is_empty() {
            check(
                "permissions",
                true,
                Severity::Medium,
                format!(
                    "{} permission rule(s) hold on release {current}",
                    app.permissions.len()
                ),
            )
        } else {
            check(
                "permissions",
                false,
                Severity::Medium,
                format!(
                    "permission rules of [[apps.{name}.permissions]] do not hold on the live release \
                     {current}: {}; someone changed them since the deploy: chmod them back (the new \
                     release gets them applied when it is staged)",
                    bad.join("; ")
                ),
            )
        });
    }
    if !app.required_files.is_empty() {
        out.push(match crate::hooks::check_required_files(app, &dir) {
            Ok(()) => check(
                "required files",
                true,
                Severity::High,
                format!(
                    "{} required file(s) present in release {current}",
                    app.required_files.len()
                ),
            ),
            Err(e) => check("required files", false, Severity::High, e),
        });
    }
    out
}

/// Applied migrations against the current release's files.
fn migrations(config: &AgentConfig, name: &str, app: &AppConfig) -> Option<PreflightCheck> {
    app.migrations.as_ref()?;
    let current = match AppLayout::new(&app.root).current() {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Some(not_applicable(
                "migrations",
                Severity::High,
                app,
                "the deployment compares and applies the new release's migrations",
            ));
        }
        Err(_) => return None,
    };
    let req = MigrationStatusRequest {
        app: name.into(),
        release: Some(current.clone()),
    };
    Some(match crate::migrate::release_status(config, &req) {
        Ok(st) => {
            // Migrations a later release applied (after a code-only
            // rollback) are a normal state: a pass, with a note.
            let ahead: Vec<String> = st
                .applied
                .iter()
                .filter(|a| a.ahead)
                .map(|a| {
                    format!(
                        "{:04}_{} ({}, applied by release {})",
                        a.version,
                        a.name,
                        a.tag.as_deref().unwrap_or("untagged"),
                        a.release.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            check(
                "migrations",
                true,
                Severity::High,
                format!(
                    "{} applied to database {} match release {current}{}{}",
                    st.applied.len() - ahead.len(),
                    st.database,
                    if st.pending.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} pending in it (applied by the next deployment)",
                            st.pending.len()
                        )
                    },
                    if ahead.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; note: the schema is ahead of the release by {} (a code-only \
                             rollback leaves it so; `golivectl migrate down` reverts)",
                            ahead.join(", ")
                        )
                    }
                ),
            )
        }
        Err(e) => check(
            "migrations",
            false,
            Severity::High,
            format!("migrations of release {current}: {e}"),
        ),
    })
}
