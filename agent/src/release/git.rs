//! Git release sources (issue 4, part 7): a release fetched on this host
//! from the repository its config declares (`[apps.APP.git] url`), at a ref
//! the controller names.
//!
//! One bare mirror per app lives at `STATE_DIR/git/APP.git`: created once
//! (`git init --bare` under a temporary name, then renamed), fetched before
//! every stage (branches and tags, forced and pruned, so it follows the
//! repository). The URL is passed on each fetch and never written into the
//! mirror's config; https credentials reach git through a credential helper
//! that reads them from the environment, so neither the mirror nor a command
//! line (readable by every local user in `/proc`) holds a secret, and every
//! line git prints is scrubbed before it becomes an event or an error.
//!
//! The ref is resolved to a commit (`rev-parse --verify REF^{commit}`), the
//! commit's tree is exported with `git archive` into a tar file, and that
//! tar is staged through the same safe path as an uploaded artifact
//! ([`AppLayout::stage_with`]: traversal checks, limits, shared links) with
//! a `REVISION` file holding the commit, as Capistrano writes one. Before
//! that, the exported tar is searched for the plan's forbidden patterns
//! ([`crate::scan`], issue 12); a hit fails the stage and stages nothing.
//!
//! Every git command runs through [`crate::exec`] (own process group, the
//! configured timeout, bounded output) with `GIT_TERMINAL_PROMPT=0`. A ref
//! is checked with [`names::check_git_ref`] and always follows
//! `--end-of-options`, so it can never be read as an option. Jobs run one at
//! a time per app, so a mirror never sees two git commands at once.
//!
//! Current limitations: submodules and Git LFS content are not part of what
//! `git archive` exports; `export-ignore` attributes are honoured.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use golive_shared::config::{AgentConfig, AppConfig, GitSource, find_tool};
use golive_shared::names;
use golive_shared::protocol::{ErrorCode, EventKind, LogLevel, StageGitRelease};

use super::layout::{AppLayout, LayoutError};
use super::unpack::{UnpackLimits, UnpackStats};
use crate::exec::{self, Prepared};

/// Output kept per git command, for events and error messages.
const MAX_OUTPUT: usize = 16 * 1024;

/// What staging a git ref produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub stats: UnpackStats,
    /// The full commit id the ref resolved to.
    pub commit: String,
}

/// `STATE_DIR/git`: the mirrors and, briefly, exported trees.
pub fn git_dir(config: &AgentConfig) -> PathBuf {
    config.agent.state_dir.join("git")
}

/// Why a git ref was not staged (issue 14): each variant's message names
/// what failed and the fix, and [`GitError::code`] is the class the job's
/// failure carries (`JobInfo::error_code`), from which the controller takes
/// its exit code. Every message is scrubbed of the URL's credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The app declares no `[apps.APP.git]`.
    #[error("{}", not_declared(app, agent))]
    NotDeclared { app: String, agent: String },
    /// The ref is not one golive passes to git ([`names::check_git_ref`]).
    #[error("{0}")]
    BadRef(String),
    /// No `git` program where the config says.
    #[error(
        "cannot find `git` {place}; install git (2.30 or newer) or set bin_dir in [apps.APP.git] \
         (`golive-agent check-config` reports it)"
    )]
    NoGit { place: String },
    /// A path git would be given is not UTF-8.
    #[error("{} is not valid UTF-8; move the agent's state_dir to a UTF-8 path", path.display())]
    NotUtf8 { path: PathBuf },
    /// The host's filesystem failed (the git directory, the export file).
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `git init` of the mirror failed.
    #[error("creating the mirror {} failed: {detail}", mirror.display())]
    Init { mirror: PathBuf, detail: String },
    /// git refuses the repository: it belongs to another user and
    /// `safe.directory` does not list it; the message gives the fix.
    #[error("fetching from {url} failed: {why}; nothing was staged")]
    Dubious { url: String, why: String },
    /// The fetch failed (the network, the server, credentials).
    #[error("fetching from {url} failed: {detail}; nothing was staged")]
    Fetch { url: String, detail: String },
    /// The ref names no branch, tag or commit in the repository.
    #[error(
        "git ref {git_ref:?} is not a branch, tag or commit in {url} (fetched just now); check the \
         name (e.g. `git ls-remote {url}`); nothing was staged"
    )]
    UnknownRef { git_ref: String, url: String },
    /// `git rev-parse` failed otherwise.
    #[error("resolving {git_ref:?} failed: {detail}; nothing was staged")]
    Resolve { git_ref: String, detail: String },
    /// `git archive` failed.
    #[error("exporting commit {commit} failed: {detail}; nothing was staged")]
    Export { commit: String, detail: String },
    /// The exported tree could not be searched.
    #[error("scanning commit {commit} for forbidden text failed: {detail}")]
    Scan { commit: String, detail: String },
    /// The exported tree holds the plan's forbidden text.
    #[error(
        "commit {commit} of {git_ref} contains forbidden text ([preflight] forbidden: {patterns}): \
         {total} hit(s), first {first}; remove it from the repository and deploy a new commit, or \
         exclude the path with [preflight] exclude in the plan; nothing was staged"
    )]
    Forbidden {
        commit: String,
        git_ref: String,
        patterns: String,
        total: u64,
        first: String,
    },
    /// The release id is taken.
    #[error(transparent)]
    Layout(Box<LayoutError>),
    /// Unpacking the exported tree or linking its shared paths failed.
    #[error("commit {commit} of {git_ref}: {source}")]
    Stage {
        commit: String,
        git_ref: String,
        source: Box<LayoutError>,
    },
}

impl From<LayoutError> for GitError {
    fn from(e: LayoutError) -> GitError {
        GitError::Layout(Box::new(e))
    }
}

impl GitError {
    /// The class of this failure: a ref the repository does not have is
    /// `NotFound`; the ref, the config or the repository's content
    /// (forbidden text, a bad tree) the operator's to fix, `BadRequest`; a
    /// git command or the host that failed at what it should do (the fetch,
    /// the disk) `Internal`; unpacking takes [`LayoutError::code`].
    pub fn code(&self) -> ErrorCode {
        use GitError as E;
        match self {
            E::UnknownRef { .. } => ErrorCode::NotFound,
            E::NotDeclared { .. }
            | E::BadRef(_)
            | E::NoGit { .. }
            | E::NotUtf8 { .. }
            | E::Dubious { .. }
            | E::Forbidden { .. } => ErrorCode::BadRequest,
            E::Io { .. }
            | E::Init { .. }
            | E::Fetch { .. }
            | E::Resolve { .. }
            | E::Export { .. }
            | E::Scan { .. } => ErrorCode::Internal,
            E::Layout(e) | E::Stage { source: e, .. } => e.code(),
        }
    }
}

/// The operator-facing refusal for an app that declares no git source.
pub fn not_declared(app: &str, agent: &str) -> String {
    format!(
        "app {app} on agent {agent} declares no git source; add [apps.{app}.git] with the \
         repository's url to that agent's config (the controller only names the ref)"
    )
}

/// Fetches `s.git_ref` into the app's mirror and stages its tree as release
/// `s.release` with a `REVISION` file. The caller finishes the stage
/// (permissions, required files, `after_unpack` hooks) and journals it.
pub fn stage(
    config: &AgentConfig,
    app_name: &str,
    app: &AppConfig,
    layout: &AppLayout,
    s: &StageGitRelease,
    emit: &dyn Fn(EventKind),
) -> Result<Staged, GitError> {
    let source = app.git.as_ref().ok_or_else(|| GitError::NotDeclared {
        app: app_name.to_string(),
        agent: config.agent.name.clone(),
    })?;
    names::check_git_ref(&s.git_ref).map_err(GitError::BadRef)?;
    let release_dir = layout.release_dir(&s.release);
    if fs::symlink_metadata(&release_dir).is_ok() {
        return Err(LayoutError::ReleaseExists {
            id: s.release.clone(),
            path: release_dir,
        }
        .into());
    }
    let git = Git::new(config, app, source, emit)?;
    let shown = source.redacted_url();

    let mirror = git.dir.join(format!("{app_name}.git"));
    remove_leftovers(&git.dir, app_name);
    if !mirror.join("HEAD").is_file() {
        git.init(&mirror)?;
    }
    info(emit, format!("fetching branches and tags from {shown}"));
    let (url, credentials) = source.fetch_target();
    let mut args: Vec<String> = Vec::new();
    let mut env = Vec::new();
    if let Some(c) = credentials {
        args.extend(credential_args());
        env.push(("GOLIVE_GIT_USERNAME", c.username));
        env.push(("GOLIVE_GIT_PASSWORD", c.password));
    }
    args.extend(git_dir_arg(&mirror)?);
    args.extend(
        [
            "fetch",
            "--quiet",
            "--prune",
            "--force",
            "--no-write-fetch-head",
            "--",
            &url,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ]
        .map(String::from),
    );
    git.run(&args, &env).map_err(|e| {
        // Say what git means and how to fix it (issue 12), not only its
        // words: git's own output is what tells this refusal apart.
        if e.contains("detected dubious ownership") {
            let why = match ownership(app_name, app) {
                Ok(Ownership::Dubious(why)) => why,
                _ => format!("{e}; git refuses a repository owned by another user than the agent's unless safe.directory lists it (see the README, Git release sources)"),
            };
            GitError::Dubious {
                url: shown.clone(),
                why,
            }
        } else {
            GitError::Fetch {
                url: shown.clone(),
                detail: e,
            }
        }
    })?;

    let commit = git.resolve(&mirror, &s.git_ref).map_err(|e| match e {
        Resolve::Unknown => GitError::UnknownRef {
            git_ref: s.git_ref.clone(),
            url: shown.clone(),
        },
        Resolve::Failed(detail) => GitError::Resolve {
            git_ref: s.git_ref.clone(),
            detail,
        },
    })?;
    info(emit, format!("{} is commit {commit}", s.git_ref));

    let export = Export(git.dir.join(format!(
        "export.{app_name}.{}-{}.tar",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )));
    // Created here, owner-only: git writes into it and keeps its mode.
    {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&export.0)
            .map_err(io_err("create", &export.0))?;
    }
    let mut args = git_dir_arg(&mirror)?;
    args.extend(["archive".into(), "--format=tar".into(), "--output".into()]);
    args.push(path_arg(&export.0)?);
    args.extend(["--end-of-options".into(), commit.clone()]);
    git.run(&args, &[]).map_err(|detail| GitError::Export {
        commit: commit.clone(),
        detail,
    })?;
    scan_export(&export.0, &s.scan, &commit, &s.git_ref, emit)?;
    info(
        emit,
        format!(
            "unpacking commit {} into {}",
            &commit[..12],
            release_dir.display()
        ),
    );
    let revision = format!("{commit}\n");
    let stats = layout
        .stage_with(
            &s.release,
            &export.0,
            &app.shared,
            &UnpackLimits::from(&config.limits),
            &[("REVISION", revision.as_bytes())],
        )
        .map_err(|source| GitError::Stage {
            commit: commit.clone(),
            git_ref: s.git_ref.clone(),
            source: Box::new(source),
        })?;
    Ok(Staged { stats, commit })
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GitError {
    let path = path.to_owned();
    move |source| GitError::Io {
        action,
        path,
        source,
    }
}

/// The plan's forbidden patterns in the exported tree (issue 12): what
/// `golivectl preflight` does to an artifact, done here because a git
/// release never passes through the controller. It runs on the tar `git
/// archive` wrote, before anything is unpacked, so a hit stages nothing; and
/// before `after_unpack` hooks, so what they install (composer's `vendor/`)
/// is not searched, as a built artifact's would be.
fn scan_export(
    export: &Path,
    cfg: &golive_shared::protocol::ScanConfig,
    commit: &str,
    git_ref: &str,
    emit: &dyn Fn(EventKind),
) -> Result<(), GitError> {
    if cfg.forbidden.is_empty() {
        return Ok(());
    }
    let file = fs::File::open(export).map_err(io_err("open", export))?;
    let report =
        crate::scan::scan_tar(std::io::BufReader::new(file), cfg).map_err(|e| GitError::Scan {
            commit: commit.to_string(),
            detail: e.to_string(),
        })?;
    let patterns = cfg
        .forbidden
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if report.hits.is_empty() {
        info(
            emit,
            format!(
                "scanned commit {}: {} file(s), {} bytes searched for {patterns}: clean",
                &commit[..12],
                report.files,
                report.bytes
            ),
        );
        return Ok(());
    }
    for h in &report.hits {
        emit(EventKind::Log {
            level: LogLevel::Error,
            line: format!("forbidden: {h}"),
        });
    }
    // Every hit is an event above; the error names the first, as the
    // controller's artifact scan does, so a failure line stays one line.
    let first = report
        .hits
        .first()
        .map(|h| h.to_string())
        .unwrap_or_default();
    Err(GitError::Forbidden {
        commit: commit.to_string(),
        git_ref: git_ref.to_string(),
        patterns,
        total: report.total(),
        first,
    })
}

/// Whether git will read the repository an app fetches from (issue 12):
/// since 2.35.2 git refuses a repository owned by another user than the one
/// running it ("detected dubious ownership") unless its `safe.directory`
/// setting lists it. Only a local repository (a path or `file://` URL) is
/// checked on this side; the mirror is named with `--git-dir`, which git
/// does not check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// A network URL: ownership is the server's business.
    Remote,
    /// Git reads it; says why (owned by the agent's user, or listed).
    Trusted(String),
    /// Git refuses it; the message says why and how to fix it.
    Dubious(String),
}

/// [`Ownership`] of `app`'s git source, without fetching: the owner of the
/// git directory git would open for the URL, against the agent's user, and
/// git's own `safe.directory` values read as the agent runs git (its
/// environment, the app's `[run] env`). An error says why it cannot tell
/// (no repository at the path, git's config unreadable).
pub fn ownership(app_name: &str, app: &AppConfig) -> Result<Ownership, String> {
    use std::os::unix::fs::MetadataExt;
    let Some(source) = &app.git else {
        return Ok(Ownership::Remote);
    };
    let Some(path) = local_path(&source.url) else {
        return Ok(Ownership::Remote);
    };
    let repo = git_dir_at(&path).ok_or_else(|| {
        format!(
            "{} is not a git repository (no HEAD in it or in its .git); fix url in \
             [apps.{app_name}.git]",
            path.display()
        )
    })?;
    let owner = fs::metadata(&repo)
        .map_err(|e| format!("cannot inspect {}: {e}", repo.display()))?
        .uid();
    let me = nix::unistd::geteuid();
    let who = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(
                || format!("uid {uid}"),
                |u| format!("{} (uid {uid})", u.name),
            )
    };
    if owner == me.as_raw() {
        return Ok(Ownership::Trusted(format!(
            "repository {} is owned by the agent's user {}",
            repo.display(),
            who(owner)
        )));
    }
    let home = app
        .run
        .env
        .get("HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from));
    let values = safe_directories(app, source)?;
    if let Some(v) = safe_listed(&values, &repo, home.as_deref()) {
        return Ok(Ownership::Trusted(format!(
            "repository {} is owned by {}, not by the agent's user {}, and git's safe.directory \
             lists it ({v:?})",
            repo.display(),
            who(owner),
            who(me.as_raw())
        )));
    }
    Ok(Ownership::Dubious(dubious(
        &repo,
        &format!(
            "it is owned by {}, and the agent runs git as {}",
            who(owner),
            who(me.as_raw())
        ),
        home.as_deref(),
    )))
}

/// The operator-facing refusal: what git will say, why, and the two fixes.
fn dubious(repo: &Path, why: &str, home: Option<&Path>) -> String {
    format!(
        "git refuses the repository {repo} (\"detected dubious ownership\"): {why}, and git's \
         safe.directory does not list it{home}; fix: as the agent's user run \
         `git config --global --add safe.directory {repo}`, or give the repository to that \
         user (`chown -R`) (see the README, Git release sources)",
        repo = repo.display(),
        home = home
            .map(|h| format!(
                " (git's global config under HOME={}, and its system config)",
                h.display()
            ))
            .unwrap_or_default()
    )
}

/// The path of a local repository URL: an absolute path or `file://PATH`.
fn local_path(url: &str) -> Option<PathBuf> {
    if url.starts_with('/') {
        return Some(PathBuf::from(url));
    }
    let (scheme, rest) = url.split_once("://")?;
    (scheme.eq_ignore_ascii_case("file") && rest.starts_with('/')).then(|| PathBuf::from(rest))
}

/// The git directory git opens for a local URL, tried as `upload-pack`
/// does: `PATH/.git`, `PATH`, `PATH.git/.git`, `PATH.git`.
fn git_dir_at(path: &Path) -> Option<PathBuf> {
    let with_git = PathBuf::from(format!("{}.git", path.display()));
    [
        path.join(".git"),
        path.to_path_buf(),
        with_git.join(".git"),
        with_git,
    ]
    .into_iter()
    .find(|d| d.is_dir() && d.join("HEAD").is_file())
}

/// `git config --get-all safe.directory` as the agent runs git: its own
/// environment's HOME and system config, the app's `[run] env` on top.
fn safe_directories(app: &AppConfig, source: &GitSource) -> Result<Vec<String>, String> {
    let program = find_tool(&["git"], source.bin_dir.as_deref())
        .ok_or_else(|| "cannot find `git` to read its safe.directory setting".to_string())?;
    let mut env = app.run.env.clone();
    env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    let p = Prepared {
        argv: vec![
            path_arg(&program).map_err(|e| e.to_string())?,
            "config".into(),
            "--get-all".into(),
            "safe.directory".into(),
        ],
        // Outside any repository: only the system and global files count,
        // as for the check itself.
        cwd: PathBuf::from("/"),
        env,
        user: None,
        timeout: Duration::from_secs(30),
        grace: Duration::from_secs(2),
        max_output: MAX_OUTPUT,
    };
    let mut stdout = Vec::new();
    let outcome = exec::run_with_stdout(&p, &mut |b| stdout.extend_from_slice(b), &mut |_| {})
        .map_err(|e| format!("cannot read git's safe.directory setting: {e}"))?;
    match outcome.exit_code {
        // 1: the key is not set.
        Some(0 | 1) if !outcome.timed_out => Ok(String::from_utf8_lossy(&stdout)
            .lines()
            .map(str::to_string)
            .collect()),
        _ => Err(format!(
            "cannot read git's safe.directory setting: `git config` {}: {}",
            outcome.describe(p.timeout),
            outcome.tail.trim()
        )),
    }
}

/// The `safe.directory` value that lets git open `repo`, if any, with
/// git's rules: values in order, an empty one clears the list, `*` is any
/// directory, `PREFIX/*` any directory under PREFIX, `~/` is HOME, and paths
/// compare once resolved (symlinks, trailing slashes).
fn safe_listed(values: &[String], repo: &Path, home: Option<&Path>) -> Option<String> {
    let mut list: Vec<&String> = Vec::new();
    for v in values {
        if v.is_empty() {
            list.clear();
        } else {
            list.push(v);
        }
    }
    let real = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let repo = real(repo);
    list.into_iter()
        .find(|v| {
            if v.as_str() == "*" {
                return true;
            }
            let expanded = match (v.strip_prefix("~/"), home) {
                (Some(rest), Some(h)) => h.join(rest),
                _ => PathBuf::from(v.as_str()),
            };
            match expanded.to_str().and_then(|e| e.strip_suffix("/*")) {
                Some(prefix) => repo.starts_with(real(Path::new(prefix))),
                None => real(&expanded) == repo,
            }
        })
        .cloned()
}

/// How git commands run for one app's source.
struct Git<'a> {
    program: String,
    dir: PathBuf,
    /// The app's declared `[run] env` (e.g. `GIT_SSH_COMMAND`), on top of
    /// the minimal environment every child gets.
    env: &'a std::collections::BTreeMap<String, String>,
    source: &'a GitSource,
    timeout: Duration,
    grace: Duration,
    emit: &'a dyn Fn(EventKind),
}

/// Why a ref did not resolve.
enum Resolve {
    Unknown,
    Failed(String),
}

impl<'a> Git<'a> {
    fn new(
        config: &AgentConfig,
        app: &'a AppConfig,
        source: &'a GitSource,
        emit: &'a dyn Fn(EventKind),
    ) -> Result<Git<'a>, GitError> {
        let program =
            find_tool(&["git"], source.bin_dir.as_deref()).ok_or_else(|| GitError::NoGit {
                place: match &source.bin_dir {
                    Some(d) => format!("in {}", d.display()),
                    None => "on PATH".into(),
                },
            })?;
        let dir = git_dir(config);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create", &dir))?;
        Ok(Git {
            program: path_arg(&program)?,
            dir,
            env: &app.run.env,
            source,
            timeout: Duration::from_secs(source.timeout_secs),
            grace: Duration::from_secs(app.run.grace_secs),
            emit,
        })
    }

    /// Runs git with `args`; `Ok(output lines)` on exit 0.
    fn run(&self, args: &[String], env: &[(&str, String)]) -> Result<Vec<String>, String> {
        let (outcome, lines) = self.run_outcome(args, env)?;
        if outcome.success() {
            Ok(lines)
        } else {
            Err(self.failure(args, &outcome))
        }
    }

    /// Runs git with `args` to its end: the outcome and the output lines.
    /// Every line is scrubbed of the URL's credentials before anyone sees it.
    fn run_outcome(
        &self,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<(exec::Outcome, Vec<String>), String> {
        // The mirror's files are the agent's alone, whatever the umask
        // (issue 11): directories 0700, files 0600 (objects 0400).
        let mut argv = vec![
            self.program.clone(),
            "-c".into(),
            "core.sharedRepository=0600".into(),
        ];
        argv.extend_from_slice(args);
        let mut vars = self.env.clone();
        vars.insert("GIT_TERMINAL_PROMPT".to_string(), "0".to_string());
        for (k, v) in env {
            vars.insert(k.to_string(), v.clone());
        }
        let p = Prepared {
            argv,
            cwd: self.dir.clone(),
            env: vars,
            user: None,
            timeout: self.timeout,
            grace: self.grace,
            max_output: MAX_OUTPUT,
        };
        let mut lines = Vec::new();
        let outcome = exec::run(&p, &mut |line| {
            let line = self.source.scrub(line);
            info(self.emit, format!("git: {line}"));
            lines.push(line);
        })
        .map_err(|e| self.source.scrub(&e.to_string()))?;
        Ok((outcome, lines))
    }

    /// "`git fetch` exit 128: fatal: ...", scrubbed.
    fn failure(&self, args: &[String], outcome: &exec::Outcome) -> String {
        let tail = self.source.scrub(outcome.tail.trim());
        format!(
            "`git {}` {}{}",
            args.iter()
                .find(|a| !a.starts_with('-') && !a.contains('='))
                .map_or("", String::as_str),
            outcome.describe(self.timeout),
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )
    }

    /// Creates the bare mirror under a temporary name, then renames it.
    fn init(&self, mirror: &Path) -> Result<(), GitError> {
        let name = mirror
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.dir.join(format!("{name}.init-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let args = vec![
            "init".into(),
            "--quiet".into(),
            "--bare".into(),
            "--initial-branch=golive-mirror".into(),
            "--".into(),
            path_arg(&tmp)?,
        ];
        self.run(&args, &[])
            .and_then(|_| {
                fs::rename(&tmp, mirror)
                    .map_err(|e| format!("cannot rename {} into place: {e}", tmp.display()))
            })
            .map_err(|detail| {
                let _ = fs::remove_dir_all(&tmp);
                GitError::Init {
                    mirror: mirror.to_owned(),
                    detail,
                }
            })
    }

    /// The full commit id `git_ref` names in the mirror.
    fn resolve(&self, mirror: &Path, git_ref: &str) -> Result<String, Resolve> {
        let mut args = git_dir_arg(mirror).map_err(|e| Resolve::Failed(e.to_string()))?;
        args.extend(
            [
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &format!("{git_ref}^{{commit}}"),
            ]
            .map(String::from),
        );
        let (outcome, lines) = self.run_outcome(&args, &[]).map_err(Resolve::Failed)?;
        // `--verify --quiet`: exit 1, silently, for a name that is not there.
        if outcome.exit_code == Some(1) && !outcome.timed_out {
            return Err(Resolve::Unknown);
        }
        if !outcome.success() {
            return Err(Resolve::Failed(self.failure(&args, &outcome)));
        }
        lines
            .iter()
            .map(|l| l.trim())
            .find(|l| is_commit_id(l))
            .map(str::to_string)
            .ok_or_else(|| {
                Resolve::Failed(format!("git printed no commit id: {:?}", lines.join(" / ")))
            })
    }
}

/// `-c` options that make git take https credentials from
/// `GOLIVE_GIT_USERNAME` and `GOLIVE_GIT_PASSWORD`. The empty value first
/// drops helpers configured elsewhere; the helper itself is fixed text, the
/// secrets only ever sit in the environment (readable by the agent's user
/// alone), never on a command line.
fn credential_args() -> [String; 4] {
    [
        "-c".into(),
        "credential.helper=".into(),
        "-c".into(),
        concat!(
            "credential.helper=!f() { test \"$1\" = get || exit 0; ",
            "printf 'username=%s\\npassword=%s\\n' \"$GOLIVE_GIT_USERNAME\" \"$GOLIVE_GIT_PASSWORD\"; }; f"
        )
        .into(),
    ]
}

/// 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn git_dir_arg(mirror: &Path) -> Result<Vec<String>, GitError> {
    Ok(vec![format!("--git-dir={}", path_arg(mirror)?)])
}

fn path_arg(p: &Path) -> Result<String, GitError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| GitError::NotUtf8 { path: p.to_owned() })
}

/// An exported tree, removed when staging is over, however it ends.
struct Export(PathBuf);

impl Drop for Export {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Exports and half-made mirrors an interrupted stage of this app left
/// behind. Jobs of one app never overlap, so any such file is a leftover;
/// app names have no `.`, so another app's files never match.
fn remove_leftovers(dir: &Path, app: &str) {
    let export = format!("export.{app}.");
    let init = format!("{app}.git.init-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&export) {
            let _ = fs::remove_file(entry.path());
        } else if name.starts_with(&init) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn info(emit: &dyn Fn(EventKind), line: String) {
    emit(EventKind::Log {
        level: LogLevel::Info,
        line,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids() {
        assert!(is_commit_id("c49f474726f1e29b6cee0d17f0d553a95822f98f"));
        assert!(is_commit_id(&"a".repeat(64)));
        assert!(!is_commit_id("c49f474"));
        assert!(!is_commit_id(&"A".repeat(40)));
    }

    /// The helper hands git exactly what the environment holds, spaces and
    /// shell metacharacters included, through real `git credential fill`.
    #[test]
    fn credentials_reach_git_through_the_helper() {
        use std::io::Write;
        let program = find_tool(&["git"], None).expect("git on PATH for the tests");
        let mut child = std::process::Command::new(program)
            .args(credential_args())
            .args(["credential", "fill"])
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GOLIVE_GIT_USERNAME", "deploy")
            .env("GOLIVE_GIT_PASSWORD", "s3cr@t $(x) 'q'")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"protocol=https\nhost=git.example.com\n\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("username=deploy\n"), "{text}");
        assert!(text.contains("password=s3cr@t $(x) 'q'\n"), "{text}");
    }

    #[test]
    fn leftovers_of_this_app_only_are_removed() {
        let tmp = tempfile::TempDir::new().unwrap();
        let d = tmp.path();
        fs::write(d.join("export.shop.1-2.tar"), b"x").unwrap();
        fs::write(d.join("export.shop-2.1-2.tar"), b"x").unwrap();
        fs::create_dir(d.join("shop.git.init-7")).unwrap();
        fs::create_dir(d.join("shop.git")).unwrap();
        remove_leftovers(d, "shop");
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["export.shop-2.1-2.tar", "shop.git"]);
    }

    #[test]
    fn issue12_local_urls_and_their_git_dirs() {
        assert_eq!(
            local_path("/srv/git/shop.git"),
            Some("/srv/git/shop.git".into())
        );
        assert_eq!(
            local_path("file:///srv/git/shop"),
            Some("/srv/git/shop".into())
        );
        assert_eq!(local_path("FILE:///x"), Some("/x".into()));
        assert_eq!(local_path("https://host/shop.git"), None);
        assert_eq!(local_path("git@host:org/shop.git"), None);

        let tmp = tempfile::TempDir::new().unwrap();
        let bare = tmp.path().join("shop.git");
        fs::create_dir_all(&bare).unwrap();
        fs::write(bare.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let work = tmp.path().join("work");
        fs::create_dir_all(work.join(".git")).unwrap();
        fs::write(work.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(git_dir_at(&bare), Some(bare.clone()));
        // `shop` finds `shop.git`, as git does.
        assert_eq!(git_dir_at(&tmp.path().join("shop")), Some(bare.clone()));
        assert_eq!(git_dir_at(&work), Some(work.join(".git")));
        assert_eq!(git_dir_at(&tmp.path().join("nothing")), None);
    }

    /// git's own rules for safe.directory values (checked against git 2.47).
    #[test]
    fn issue12_safe_directory_values() {
        let tmp = tempfile::TempDir::new().unwrap();
        let repo = tmp.path().join("srv/shop.git");
        fs::create_dir_all(&repo).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("srv"), &link).unwrap();
        let v = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let at = |p: &Path| p.display().to_string();
        let listed = |list: &[String]| safe_listed(list, &repo, Some(tmp.path()));
        assert_eq!(listed(&v(&[])), None);
        assert_eq!(listed(&v(&["*"])), Some("*".into()));
        assert_eq!(
            listed(&v(&["*", ""])),
            None,
            "an empty value clears the list"
        );
        assert!(listed(&[at(&repo)]).is_some());
        assert!(listed(&[format!("{}/", at(&repo))]).is_some());
        assert!(listed(&[at(&link.join("shop.git"))]).is_some(), "resolved");
        assert!(listed(&[format!("{}/*", at(&tmp.path().join("srv")))]).is_some());
        assert!(listed(&v(&["~/srv/shop.git"])).is_some(), "~ is HOME");
        assert_eq!(listed(&[at(&tmp.path().join("srv"))]), None, "not a prefix");
        assert_eq!(listed(&[at(&tmp.path().join("srv/shop"))]), None);
    }
}
