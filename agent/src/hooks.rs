//! Hooks, allow-listed named commands, permission rules and required files
//! (issue 4, parts 2-4): everything here runs or checks only what the app's
//! config declares; the controller merely names it.
//!
//! - [`run_hooks`]: the programs of one lifecycle point (`after_unpack`,
//!   `before_activate`, `after_activate`, `after_rollback`), in order, each
//!   through [`crate::exec`] (own process group, timeout, bounded output).
//! - [`run_command`]: one `[apps.APP.commands.NAME]` in `ROOT/current`.
//! - [`apply_permissions`] / [`check_permissions`]: mode changes on paths of a
//!   release; a path may lead into `ROOT/shared` (shared paths are linked in
//!   by design) but never anywhere else outside the release.
//! - [`check_required_files`]: paths that must exist once shared paths are
//!   linked.
//!
//! Every error is an operator-facing message naming the hook or path; the
//! staging steps' ([`finish_stage`]) are typed ([`FinishError`], issue 14)
//! so the job's failure carries their class.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use golive_shared::config::{AgentConfig, AppConfig, CommandSpec};
use golive_shared::protocol::{ErrorCode, EventKind, JobResult, LogLevel, RunCommand};

use crate::exec::{self, Outcome, Prepared};
use crate::jobs::JobError;
use crate::release::layout::AppLayout;

/// Why the steps after unpacking ([`finish_stage`]) refused or failed a
/// release; [`FinishError::code`] is the job's class (issue 14).
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// The agent config has no such app or hook point (never once the
    /// job was accepted: the config was checked).
    #[error("{0}")]
    Config(String),
    /// A permission rule's path is missing from the release, leads out of
    /// the app, or could not be resolved.
    #[error("permission rule for {}: {problem}", rule.display())]
    RulePath { rule: PathBuf, problem: PathProblem },
    /// chmod of a rule's path failed.
    #[error("permission rule for {}: cannot chmod {mode:04o} {}: {source}", rule.display(), real.display())]
    Chmod {
        rule: PathBuf,
        mode: u32,
        real: PathBuf,
        source: io::Error,
    },
    /// Required files not in place ([`check_required_files`]'s message).
    #[error("{0}")]
    RequiredFiles(String),
    /// An `after_unpack` hook could not run or did not succeed.
    #[error(transparent)]
    Hook(#[from] HookError),
}

impl FinishError {
    /// What the release or the config gets wrong (a rule's path, a
    /// required file, a hook that exits non-zero or times out) is
    /// `BadRequest`: the operator's to fix, nothing live changed. A fault
    /// of the host (chmod, a path it cannot resolve, a hook it fails to
    /// start for another reason than the config's) is `Internal`.
    pub fn code(&self) -> ErrorCode {
        match self {
            FinishError::RulePath { problem, .. } => problem.code(),
            FinishError::RequiredFiles(_) => ErrorCode::BadRequest,
            FinishError::Hook(e) => e.code(),
            FinishError::Config(_) | FinishError::Chmod { .. } => ErrorCode::Internal,
        }
    }
}

/// Why a path of a release is not one a rule may touch.
#[derive(Debug, thiserror::Error)]
pub enum PathProblem {
    #[error("{} does not exist in release {}", rel.display(), release.display())]
    Missing { rel: PathBuf, release: PathBuf },
    #[error(
        "{} in release {} leads to {}, outside the release and ROOT/shared; golive does not \
         follow links out of the app",
        rel.display(),
        release.display(),
        real.display()
    )]
    Outside {
        rel: PathBuf,
        release: PathBuf,
        real: PathBuf,
    },
    #[error("cannot resolve {}: {source}", path.display())]
    Unresolved { path: PathBuf, source: io::Error },
}

impl PathProblem {
    fn code(&self) -> ErrorCode {
        match self {
            PathProblem::Missing { .. } | PathProblem::Outside { .. } => ErrorCode::BadRequest,
            PathProblem::Unresolved { .. } => ErrorCode::Internal,
        }
    }
}

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// No such app or hook point in the agent config.
    #[error("{0}")]
    Config(String),
    /// The program could not be started.
    #[error("hook {name} of app {app} could not run: {source}")]
    Start {
        name: String,
        app: String,
        source: exec::ExecError,
    },
    /// It exited non-zero, was killed, or timed out.
    #[error(transparent)]
    Failed(Box<HookFailed>),
}

/// A hook that ran and did not succeed; `tail` is its output's last lines
/// (`tail_for_message`).
#[derive(Debug, thiserror::Error)]
#[error("hook {name} (`{command}`) of app {app} failed for release {release}: {what}{tail}")]
pub struct HookFailed {
    pub name: String,
    pub command: String,
    pub app: String,
    pub release: String,
    pub what: String,
    pub tail: String,
}

impl HookError {
    /// A hook that ran and failed refuses the release (`BadRequest`), as
    /// does one the config gets wrong (its program missing or not
    /// executable, a `user` the agent cannot switch to); one the host
    /// failed to start otherwise is the host's failure (`Internal`).
    pub fn code(&self) -> ErrorCode {
        match self {
            HookError::Failed(_) => ErrorCode::BadRequest,
            HookError::Start { source, .. } => start_code(source),
            HookError::Config(_) => ErrorCode::Internal,
        }
    }
}

/// The class of a declared program (hook, command, maintenance `on`/`off`)
/// that could not be started: the config's problem (the program missing
/// or not executable, a `user` the agent cannot switch to, an empty
/// command) is a refusal (`BadRequest`); any other spawn failure is the
/// host's (`Internal`).
pub fn start_code(e: &exec::ExecError) -> ErrorCode {
    use exec::ExecError as X;
    match e {
        X::Spawn { source, .. }
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) =>
        {
            ErrorCode::BadRequest
        }
        X::Spawn { .. } => ErrorCode::Internal,
        X::NotRoot { .. } | X::NoUser { .. } | X::Empty => ErrorCode::BadRequest,
    }
}

/// The lifecycle points, in the order a deployment reaches them.
pub const POINTS: [&str; 4] = [
    "after_unpack",
    "before_activate",
    "after_activate",
    "after_rollback",
];

/// At most this much of a failed program's output goes into its error
/// message (the whole bounded output was streamed as job events).
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4 * 1024;

fn hooks_at<'a>(app: &'a AppConfig, point: &str) -> Result<&'a [CommandSpec], String> {
    Ok(match point {
        "after_unpack" => &app.hooks.after_unpack,
        "before_activate" => &app.hooks.before_activate,
        "after_activate" => &app.hooks.after_activate,
        "after_rollback" => &app.hooks.after_rollback,
        other => {
            return Err(format!(
                "unknown hook point {other:?}; the points are {}",
                POINTS.join(", ")
            ));
        }
    })
}

fn app_of<'a>(config: &'a AgentConfig, app_name: &str) -> Result<&'a AppConfig, String> {
    config.app(app_name).ok_or_else(|| {
        format!(
            "no app {app_name:?} in the agent config; declared apps: {}",
            config.app_names()
        )
    })
}

fn info(emit: &dyn Fn(EventKind), line: String) {
    emit(EventKind::Log {
        level: LogLevel::Info,
        line,
    });
}

/// Runs the hooks of `point` in order in `release_dir` (the release they run
/// for); the first failure stops the rest and fails the step.
///
/// Each output line becomes a job log event prefixed `[hook POINT.N]` (N is
/// the hook's index under `[apps.APP.hooks]`). Hooks get `GOLIVE_APP`,
/// `GOLIVE_RELEASE`, `GOLIVE_RELEASE_DIR`, `GOLIVE_ROOT` and `GOLIVE_HOOK`
/// (the point) in their environment. A hook that fails (or cannot be
/// started for the config's reasons) is a refusal, its class
/// [`HookError::code`] (issue 14).
pub fn run_hooks(
    config: &AgentConfig,
    app_name: &str,
    point: &str,
    release_dir: &Path,
    emit: &dyn Fn(EventKind),
) -> Result<(), JobError> {
    run_point(config, app_name, point, release_dir, emit).map_err(|e| JobError {
        code: e.code(),
        message: e.to_string(),
    })
}

/// [`run_hooks`], its error typed.
fn run_point(
    config: &AgentConfig,
    app_name: &str,
    point: &str,
    release_dir: &Path,
    emit: &dyn Fn(EventKind),
) -> Result<(), HookError> {
    let app = app_of(config, app_name).map_err(HookError::Config)?;
    let hooks = hooks_at(app, point).map_err(HookError::Config)?;
    let release = release_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (i, spec) in hooks.iter().enumerate() {
        let name = format!("{point}.{i}");
        let mut p = Prepared::new(spec, &app.run, release_dir);
        for (k, v) in [
            ("GOLIVE_APP", app_name.to_string()),
            ("GOLIVE_RELEASE", release.clone()),
            ("GOLIVE_RELEASE_DIR", release_dir.display().to_string()),
            ("GOLIVE_ROOT", app.root.display().to_string()),
            ("GOLIVE_HOOK", point.to_string()),
        ] {
            p.env.insert(k.into(), v);
        }
        info(
            emit,
            format!(
                "hook {name}: running `{}` in {} (timeout {})",
                p.display(),
                p.cwd.display(),
                exec::seconds(p.timeout)
            ),
        );
        let outcome =
            run_logged(&p, &format!("[hook {name}]"), emit).map_err(|source| HookError::Start {
                name: name.clone(),
                app: app_name.to_string(),
                source,
            })?;
        if !outcome.success() {
            return Err(HookError::Failed(Box::new(HookFailed {
                name,
                command: p.display(),
                app: app_name.to_string(),
                release,
                what: what_happened(&p, &outcome),
                tail: tail_for_message(&outcome),
            })));
        }
        info(
            emit,
            format!(
                "hook {name}: exit 0 in {}",
                exec::seconds(round_ms(outcome.duration))
            ),
        );
    }
    Ok(())
}

/// The steps after a release is unpacked and its shared paths linked:
/// permission rules, required files, then the `after_unpack` hooks in the
/// new release. On any failure the release directory is removed (so the same
/// id can be staged again) and the error says so; its class is the step's
/// ([`FinishError::code`]), or `Internal` when the removal failed too.
pub fn finish_stage(
    config: &AgentConfig,
    app_name: &str,
    layout: &AppLayout,
    release: &str,
    emit: &dyn Fn(EventKind),
) -> Result<(), JobError> {
    let app = app_of(config, app_name).map_err(JobError::failed)?;
    let dir = layout.release_dir(release);
    let steps = || -> Result<(), FinishError> {
        for line in apply_permissions(app, &dir)? {
            info(emit, format!("permission rule applied: {line}"));
        }
        check_required_files(app, &dir).map_err(FinishError::RequiredFiles)?;
        if !app.required_files.is_empty() {
            info(
                emit,
                format!(
                    "required files present: {}",
                    app.required_files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        Ok(run_point(config, app_name, "after_unpack", &dir, emit)?)
    };
    steps().map_err(|e| {
        let (code, e) = (e.code(), e.to_string());
        match discard_release(layout, release) {
            Ok(()) => JobError {
                code,
                message: golive_shared::protocol::error_with(
                    &e,
                    &format!(
                        "; the staged release {release} was removed, so the same id can be \
                         staged again"
                    ),
                ),
            },
            Err(why) => JobError::failed(golive_shared::protocol::error_with(
                &e,
                &format!("; removing the staged release {release} failed too: {why}"),
            )),
        }
    })
}

/// Removes `releases/<id>` ([`AppLayout::discard`]: renamed to a
/// `.removing-*` name first, so the id is free at once, then removed even
/// where a permission rule made a directory read-only).
fn discard_release(layout: &AppLayout, release: &str) -> Result<(), String> {
    layout.discard(release).map_err(|e| {
        format!("{e} (the id is free again; the next prune or start finishes the removal)")
    })
}

/// Checks before a release goes live: its permission rules still hold and
/// its required files exist. An error refuses the activation
/// (`BadRequest`: the release's or the config's problem, nothing switched).
pub fn preflight(app: &AppConfig, release: &str, release_dir: &Path) -> Result<(), JobError> {
    let bad = check_permissions(app, release_dir);
    if !bad.is_empty() {
        return Err(JobError::refused(format!(
            "release {release} is refused before switching: permission rules not met: {}",
            bad.join("; ")
        )));
    }
    check_required_files(app, release_dir)
        .map_err(|e| JobError::refused(format!("{e}; nothing was switched")))
}

/// Checks before a rollback (or a deployment's switch-back) makes an
/// earlier release live again (issue 12: "the switch-back never makes things
/// worse"). Its permission rules are applied again, as at staging (modes
/// drift; putting them back is what staging did), then its required files
/// must be in place. An error names what is wrong, and nothing is switched:
/// the release that is live stays, since switching to a broken one would
/// not help.
pub fn before_switch_back(
    app: &AppConfig,
    release: &str,
    release_dir: &Path,
    current: Option<&str>,
    emit: &dyn Fn(EventKind),
) -> Result<(), String> {
    let stays = match current {
        Some(c) => format!("current stays at {c}"),
        None => "nothing is live".into(),
    };
    let refused = |why: String| {
        format!(
            "not switching back to release {release}: it is broken too: {why}; nothing was \
             switched ({stays}). Fix what is named (e.g. put the file back under ROOT/shared) \
             and roll back again, or deploy a fixed release"
        )
    };
    for line in apply_permissions(app, release_dir).map_err(|e| refused(e.to_string()))? {
        info(emit, format!("permission rule applied again: {line}"));
    }
    check_required_files(app, release_dir).map_err(refused)?;
    if !app.required_files.is_empty() {
        info(
            emit,
            format!("required files in place in release {release}"),
        );
    }
    Ok(())
}

/// Runs the declared command `req.name` of `req.app` in `ROOT/current` (a
/// relative `cwd` is taken inside it). A non-zero exit fails the job with
/// the exit code and the tail of the output.
///
/// Classes (issue 14): a command that cannot be started for the config's
/// reasons ([`start_code`]) is the operator's (`BadRequest`: nothing ran);
/// a name the app does not declare `NotFound`; no current release to run
/// it in `Conflict`. A command that ran and exited non-zero, was killed or
/// timed out is a failure (`Internal`, exit 1): it ran, so nothing says the
/// host is as it was. The agent's own faults (reading `current`, a spawn
/// failure of the host) are `Internal` too.
pub fn run_command(
    config: &AgentConfig,
    req: &RunCommand,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    let app = app_of(config, &req.app).map_err(|m| JobError {
        code: ErrorCode::NotFound,
        message: m,
    })?;
    let spec = app.commands.get(&req.name).ok_or_else(|| {
        let valid: Vec<&str> = app.commands.keys().map(String::as_str).collect();
        JobError {
            code: ErrorCode::NotFound,
            message: format!(
                "app {} on agent {} declares no command {:?}; declared commands: {}",
                req.app,
                config.agent.name,
                req.name,
                if valid.is_empty() {
                    "(none)".to_string()
                } else {
                    valid.join(", ")
                }
            ),
        }
    })?;
    let layout = AppLayout::new(&app.root);
    let current = layout
        .current()
        .map_err(|e| {
            JobError::failed(format!(
                "cannot read the current release of {}: {e}",
                req.app
            ))
        })?
        .ok_or_else(|| JobError {
            code: ErrorCode::Conflict,
            message: format!(
                "app {} has no current release on agent {}; deploy one before running commands",
                req.app, config.agent.name
            ),
        })?;
    let base = layout.current_link();
    let mut p = Prepared::new(spec, &app.run, &base);
    for (k, v) in [
        ("GOLIVE_APP", req.app.clone()),
        ("GOLIVE_RELEASE", current.clone()),
        (
            "GOLIVE_RELEASE_DIR",
            layout.release_dir(&current).display().to_string(),
        ),
        ("GOLIVE_ROOT", app.root.display().to_string()),
        ("GOLIVE_COMMAND", req.name.clone()),
    ] {
        p.env.insert(k.into(), v);
    }
    info(
        emit,
        format!(
            "command {}: running `{}` in {} (release {current}, timeout {})",
            req.name,
            p.display(),
            p.cwd.display(),
            exec::seconds(p.timeout)
        ),
    );
    let outcome =
        run_logged(&p, &format!("[command {}]", req.name), emit).map_err(|e| JobError {
            code: start_code(&e),
            message: format!("command {} could not run: {e}", req.name),
        })?;
    let duration_ms = outcome.duration.as_millis() as u64;
    if !outcome.success() {
        return Err(JobError::failed(format!(
            "command {} (`{}`) failed: {}{}",
            req.name,
            p.display(),
            what_happened(&p, &outcome),
            tail_for_message(&outcome)
        )));
    }
    info(
        emit,
        format!(
            "command {}: exit 0 in {}",
            req.name,
            exec::seconds(round_ms(outcome.duration))
        ),
    );
    Ok(JobResult::Command {
        name: req.name.clone(),
        exit_code: 0,
        duration_ms,
    })
}

/// Runs `p`, each output line a log event behind `prefix`.
fn run_logged(
    p: &Prepared,
    prefix: &str,
    emit: &dyn Fn(EventKind),
) -> Result<Outcome, exec::ExecError> {
    exec::run(p, &mut |line| info(emit, format!("{prefix} {line}")))
}

/// "exit 7 after 0.5 s", or the timeout story.
fn what_happened(p: &Prepared, o: &Outcome) -> String {
    if o.timed_out {
        o.describe(p.timeout)
    } else {
        format!(
            "{} after {}",
            o.describe(p.timeout),
            exec::seconds(round_ms(o.duration))
        )
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// "; last output:\n..." with the last lines of the tail, or "; no output".
fn tail_for_message(o: &Outcome) -> String {
    let lines: Vec<&str> = o.tail.lines().collect();
    let from = lines.len().saturating_sub(TAIL_LINES);
    let mut text = lines[from..].join("\n");
    if text.len() > TAIL_BYTES {
        let cut = text.len() - TAIL_BYTES;
        let cut = (cut..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text.drain(..cut);
    }
    if text.trim().is_empty() {
        "; it printed nothing".into()
    } else {
        format!("{}{text}", golive_shared::protocol::OUTPUT_TAIL_MARKER)
    }
}

/// Where a release path really leads, following symlinks, provided that is
/// inside the release or inside `ROOT/shared` (where shared paths are
/// linked). A path that leads anywhere else is refused: a rule must never
/// touch another release or a file outside the app.
fn resolve_inside(app: &AppConfig, release_dir: &Path, rel: &Path) -> Result<PathBuf, PathProblem> {
    let path = release_dir.join(rel);
    let real = std::fs::canonicalize(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            PathProblem::Missing {
                rel: rel.to_owned(),
                release: release_dir.to_owned(),
            }
        } else {
            PathProblem::Unresolved { path, source }
        }
    })?;
    let release = std::fs::canonicalize(release_dir).map_err(|source| PathProblem::Unresolved {
        path: release_dir.to_owned(),
        source,
    })?;
    let shared = std::fs::canonicalize(AppLayout::new(&app.root).shared_dir()).ok();
    if real.starts_with(&release) || shared.as_ref().is_some_and(|s| real.starts_with(s)) {
        Ok(real)
    } else {
        Err(PathProblem::Outside {
            rel: rel.to_owned(),
            release: release_dir.to_owned(),
            real,
        })
    }
}

/// Applies the app's permission rules to `release_dir` (after unpack and
/// linking). Returns one "PATH MODE" line per rule applied. A rule whose path
/// does not exist, or leads outside the release and `ROOT/shared`, is an
/// error naming it. Modes apply to the path itself, not recursively.
pub fn apply_permissions(app: &AppConfig, release_dir: &Path) -> Result<Vec<String>, FinishError> {
    let mut done = Vec::new();
    for rule in &app.permissions {
        let real = resolve_inside(app, release_dir, &rule.path).map_err(|problem| {
            FinishError::RulePath {
                rule: rule.path.clone(),
                problem,
            }
        })?;
        let mode = rule.mode_bits();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode)).map_err(
            |source| FinishError::Chmod {
                rule: rule.path.clone(),
                mode,
                real: real.clone(),
                source,
            },
        )?;
        done.push(format!("{} {:04o}", rule.path.display(), mode));
    }
    Ok(done)
}

/// The app's permission rules that `release_dir` does not satisfy, one
/// message each (missing path, a link out of the app, a different mode).
pub fn check_permissions(app: &AppConfig, release_dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for rule in &app.permissions {
        let want = rule.mode_bits();
        match resolve_inside(app, release_dir, &rule.path) {
            Err(e) => bad.push(e.to_string()),
            Ok(real) => match std::fs::metadata(&real) {
                Err(e) => bad.push(format!("cannot inspect {}: {e}", real.display())),
                Ok(m) => {
                    let have = m.permissions().mode() & 0o7777;
                    if have != want {
                        bad.push(format!(
                            "{} has mode {have:04o}, the rule wants {want:04o}",
                            rule.path.display()
                        ));
                    }
                }
            },
        }
    }
    bad
}

/// Every `required_files` path must be, in `release_dir`, a regular
/// non-empty file (a trailing `/`: a directory), following symlinks (a
/// shared file linked in counts only through its target) as long as they
/// stay inside the app's root. The error lists every path that is not, with
/// what was found instead (missing, a dangling link, a directory, an empty
/// file, a link out of the app), and the fix (issue 12: an empty directory
/// standing in for `settings.local.php` passed the old existence check).
pub fn check_required_files(app: &AppConfig, release_dir: &Path) -> Result<(), String> {
    let root = std::fs::canonicalize(&app.root).unwrap_or_else(|_| app.root.clone());
    let bad: Vec<String> = app
        .required_files
        .iter()
        .filter_map(|f| {
            required_file_problem(&root, release_dir, f).map(|why| format!("{} {why}", f.display()))
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let release = release_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Err(format!(
        "release {release} is refused: required file(s) not in place after linking shared paths: {} \
         (declared in required_files; ship them in the artifact, or put them under {} and list \
         them in `shared`)",
        bad.join("; "),
        AppLayout::new(&app.root).shared_dir().display()
    ))
}

/// What is wrong with one required path, `None` when it is fine.
fn required_file_problem(root: &Path, release_dir: &Path, declared: &Path) -> Option<String> {
    use golive_shared::config::wants_dir;
    let rel: PathBuf = declared.components().collect();
    let path = release_dir.join(&rel);
    let link = match std::fs::symlink_metadata(&path) {
        Ok(m) => m.file_type().is_symlink(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some("is missing".into()),
        Err(e) => return Some(format!("cannot be inspected: {e}")),
    };
    let real = match std::fs::canonicalize(&path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !link {
                return Some(
                    "is behind a dangling link (a directory on its way points to nothing)".into(),
                );
            }
            let to = std::fs::read_link(&path).unwrap_or_default();
            let at =
                crate::release::layout::normalise(&path.parent().unwrap_or(release_dir).join(&to));
            return Some(format!(
                "is a dangling link to {} (nothing at {})",
                to.display(),
                at.display()
            ));
        }
        Err(e) => return Some(format!("cannot be resolved: {e}")),
    };
    if !real.starts_with(root) {
        return Some(format!(
            "leads to {}, outside the app's root {}",
            real.display(),
            root.display()
        ));
    }
    let meta = match std::fs::metadata(&real) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot be inspected: {e}")),
    };
    let via = if link || real != path {
        format!(" ({})", real.display())
    } else {
        String::new()
    };
    if wants_dir(declared) {
        return (!meta.is_dir()).then(|| format!("is a file{via}, not the directory it must be"));
    }
    if meta.is_dir() {
        Some(format!("is a directory{via}, not a file"))
    } else if !meta.is_file() {
        Some(format!("is a special file{via}, not a regular file"))
    } else if meta.len() == 0 {
        Some(format!("is empty (0 bytes){via}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golive_shared::config::PermissionRule;
    use std::os::unix::fs::symlink;

    fn app(root: &Path, required: &[&str]) -> AppConfig {
        serde_json::from_value(serde_json::json!({
            "root": root,
            "required_files": required,
        }))
        .expect("app config")
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        let release = root.join("releases/r1");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::create_dir_all(root.join("shared")).unwrap();
        (tmp, root, release)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn permissions_apply_inside_the_release_and_shared_and_are_checked() {
        let (_tmp, root, release) = setup();
        std::fs::write(release.join("settings.php"), "x").unwrap();
        std::fs::write(root.join("shared/local.php"), "x").unwrap();
        symlink("../../shared/local.php", release.join("local.php")).unwrap();
        let mut a = app(&root, &[]);
        for (path, m) in [("settings.php", "0444"), ("local.php", "0440")] {
            a.permissions.push(PermissionRule {
                path: path.into(),
                mode: m.into(),
            });
        }
        assert_eq!(check_permissions(&a, &release).len(), 2);
        let done = apply_permissions(&a, &release).unwrap();
        assert_eq!(done, ["settings.php 0444", "local.php 0440"]);
        assert_eq!(mode(&release.join("settings.php")), 0o444);
        assert_eq!(mode(&root.join("shared/local.php")), 0o440);
        assert!(check_permissions(&a, &release).is_empty());

        std::fs::set_permissions(
            release.join("settings.php"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let bad = check_permissions(&a, &release);
        assert_eq!(bad, ["settings.php has mode 0644, the rule wants 0444"]);
    }

    #[test]
    fn permissions_refuse_missing_paths_and_links_out_of_the_app() {
        let (tmp, root, release) = setup();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
        symlink(&outside, release.join("evil")).unwrap();
        // Another release is inside ROOT but not this release: refused too.
        std::fs::create_dir_all(root.join("releases/r0")).unwrap();
        std::fs::write(root.join("releases/r0/live.php"), "x").unwrap();
        symlink("../r0/live.php", release.join("other")).unwrap();
        for (path, what) in [
            ("evil", "outside the release"),
            ("other", "outside the release"),
            ("missing.php", "missing.php does not exist"),
        ] {
            let mut a = app(&root, &[]);
            a.permissions.push(PermissionRule {
                path: path.into(),
                mode: "0777".into(),
            });
            let err = apply_permissions(&a, &release).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadRequest, "{err}");
            let err = err.to_string();
            assert!(err.contains(path) && err.contains(what), "{err}");
            assert_eq!(check_permissions(&a, &release).len(), 1);
        }
        assert_eq!(mode(&outside), 0o600, "followed a link out of the app");
    }

    #[test]
    fn issue12_required_files_are_regular_non_empty_files_inside_the_app() {
        let (tmp, root, release) = setup();
        let a = app(
            &root,
            &[
                "settings.php",
                "sites/local.php",
                "present",
                "empty",
                "dir",
                "outside",
                "wanted-dir/",
            ],
        );
        std::fs::write(release.join("present"), "x").unwrap();
        std::fs::write(release.join("empty"), "").unwrap();
        std::fs::create_dir(release.join("dir")).unwrap();
        std::fs::write(tmp.path().join("elsewhere"), "x").unwrap();
        symlink(tmp.path().join("elsewhere"), release.join("outside")).unwrap();
        std::fs::create_dir(release.join("wanted-dir")).unwrap();
        symlink("../../shared/settings.php", release.join("settings.php")).unwrap();
        let err = check_required_files(&a, &release).unwrap_err();
        for says in [
            "release r1 is refused",
            "settings.php is a dangling link to ../../shared/settings.php (nothing at ",
            "app/shared/settings.php)",
            "sites/local.php is missing",
            "empty is empty (0 bytes)",
            "dir is a directory, not a file",
            "outside leads to ",
            "outside the app's root",
        ] {
            assert!(err.contains(says), "{says:?} not in: {err}");
        }
        assert!(
            !err.contains("present") && !err.contains("wanted-dir"),
            "{err}"
        );

        // The seed 000 trap: an empty directory where the file should be.
        std::fs::create_dir(root.join("shared/settings.php")).unwrap();
        let err = check_required_files(&a, &release).unwrap_err();
        assert!(err.contains("settings.php is a directory ("), "{err}");
        std::fs::remove_dir(root.join("shared/settings.php")).unwrap();

        std::fs::write(root.join("shared/settings.php"), "<?php").unwrap();
        std::fs::create_dir(release.join("sites")).unwrap();
        std::fs::write(release.join("sites/local.php"), "x").unwrap();
        std::fs::write(release.join("empty"), "x").unwrap();
        std::fs::remove_dir(release.join("dir")).unwrap();
        std::fs::write(release.join("dir"), "x").unwrap();
        std::fs::remove_file(release.join("outside")).unwrap();
        std::fs::write(release.join("outside"), "x").unwrap();
        check_required_files(&a, &release).unwrap();
        std::fs::remove_dir(release.join("wanted-dir")).unwrap();
        std::fs::write(release.join("wanted-dir"), "x").unwrap();
        let err = check_required_files(&a, &release).unwrap_err();
        assert!(
            err.contains("wanted-dir/ is a file, not the directory it must be"),
            "{err}"
        );
    }

    /// Issue 14: a hook's failure is the release's or the config's
    /// (`BadRequest`) unless the host failed to start it.
    #[test]
    fn issue14_hook_failures_are_classed_by_what_failed() {
        let start = |source| HookError::Start {
            name: "after_unpack.0".into(),
            app: "shop".into(),
            source,
        };
        let spawn = |kind| exec::ExecError::Spawn {
            cmd: "composer install".into(),
            cwd: "/srv/shop/releases/r1".into(),
            source: io::Error::from(kind),
        };
        for kind in [io::ErrorKind::NotFound, io::ErrorKind::PermissionDenied] {
            assert_eq!(start(spawn(kind)).code(), ErrorCode::BadRequest);
        }
        assert_eq!(
            start(spawn(io::ErrorKind::OutOfMemory)).code(),
            ErrorCode::Internal
        );
        let no_user = exec::ExecError::NoUser {
            cmd: "composer install".into(),
            user: "deploy".into(),
        };
        assert_eq!(start(no_user).code(), ErrorCode::BadRequest);
        let failed = HookError::Failed(Box::new(HookFailed {
            name: "after_unpack.0".into(),
            command: "composer install".into(),
            app: "shop".into(),
            release: "r1".into(),
            what: "exit 4 after 0.1 s".into(),
            tail: "; it printed nothing".into(),
        }));
        assert_eq!(
            failed.to_string(),
            "hook after_unpack.0 (`composer install`) of app shop failed for release r1: exit 4 \
             after 0.1 s; it printed nothing"
        );
        let finish = FinishError::from(failed);
        assert_eq!(finish.code(), ErrorCode::BadRequest);
        let chmod = FinishError::Chmod {
            rule: "settings.php".into(),
            mode: 0o444,
            real: "/srv/shop/releases/r1/settings.php".into(),
            source: io::Error::from(io::ErrorKind::ReadOnlyFilesystem),
        };
        assert_eq!(chmod.code(), ErrorCode::Internal);
        assert_eq!(
            FinishError::RequiredFiles("release r1 is refused".into()).code(),
            ErrorCode::BadRequest
        );
    }

    /// An agent config whose app `shop` (at `root`) declares `app`'s
    /// fields.
    fn agent_with(root: &Path, app: serde_json::Value) -> AgentConfig {
        let mut config: AgentConfig = toml::from_str(
            "[agent]\nname = \"a1\"\nlisten = \"127.0.0.1:7443\"\nstate_dir = \"/tmp/x\"\n\
             [tls]\nca = \"/x\"\ncert = \"/x\"\nkey = \"/x\"\n",
        )
        .unwrap();
        let mut app = app;
        app["root"] = serde_json::json!(root);
        config
            .apps
            .insert("shop".into(), serde_json::from_value(app).unwrap());
        config
    }

    /// Issue 14: a named command's failures carry their class, the words
    /// as before. A missing program is the operator's (`BadRequest`:
    /// nothing ran), an undeclared name `NotFound`, no current release
    /// `Conflict`; a command that ran and exited non-zero or timed out is
    /// a failure (`Internal`); a run that succeeds is exit 0.
    #[test]
    fn issue14_a_named_commands_failures_are_classed() {
        let (_tmp, root, _release) = setup();
        let config = agent_with(
            &root,
            serde_json::json!({"commands": {
                "ok": {"cmd": ["true"]},
                "fails": {"cmd": ["sh", "-c", "echo broken; exit 3"]},
                "slow": {"cmd": ["sleep", "5"], "timeout_secs": 1},
                "missing": {"cmd": ["/nonexistent/golive-prog"]},
            }}),
        );
        let req = |name: &str| RunCommand {
            app: "shop".into(),
            name: name.into(),
        };
        let e = run_command(&config, &req("ok"), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict, "{e}");
        assert!(e.message.contains("has no current release"), "{e}");
        AppLayout::new(&root).activate("r1").unwrap();
        assert!(matches!(
            run_command(&config, &req("ok"), &|_| {}),
            Ok(JobResult::Command { exit_code: 0, .. })
        ));
        let e = run_command(&config, &req("fails"), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal, "{e}");
        assert!(
            e.message
                .starts_with("command fails (`sh -c 'echo broken; exit 3'`) failed: exit 3"),
            "{e}"
        );
        assert!(e.message.ends_with("broken"), "{e}");
        let e = run_command(&config, &req("slow"), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal, "{e}");
        let e = run_command(&config, &req("missing"), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
        assert!(
            e.message.starts_with("command missing could not run"),
            "{e}"
        );
        let e = run_command(&config, &req("nope"), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "{e}");
        assert!(e.message.contains("declares no command \"nope\""), "{e}");
    }

    /// Issue 14: an activation's checks and hooks are refusals
    /// (`BadRequest`): a `before_activate` hook that fails, a required
    /// file gone.
    #[test]
    fn issue14_activation_hooks_and_checks_are_refusals() {
        let (_tmp, root, release) = setup();
        let config = agent_with(
            &root,
            serde_json::json!({"hooks": {"before_activate": [{"cmd": ["false"]}]}}),
        );
        let e = run_hooks(&config, "shop", "before_activate", &release, &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
        assert!(
            e.message
                .starts_with("hook before_activate.0 (`false`) of app shop failed for release r1"),
            "{e}"
        );
        let app = app(&root, &["settings.php"]);
        let e = preflight(&app, "r1", &release).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
        assert!(e.message.ends_with("; nothing was switched"), "{e}");
    }

    #[test]
    fn failure_messages_keep_only_the_last_lines() {
        let o = Outcome {
            exit_code: Some(1),
            signal: None,
            timed_out: false,
            duration: Duration::ZERO,
            tail: (0..100).map(|i| format!("l{i}\n")).collect(),
        };
        let m = tail_for_message(&o);
        assert!(
            m.starts_with("; last output:\nl80\n") && m.ends_with("l99"),
            "{m}"
        );
        let empty = Outcome {
            tail: String::new(),
            ..o
        };
        assert_eq!(tail_for_message(&empty), "; it printed nothing");
    }
}
