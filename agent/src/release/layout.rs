//! One app's release directories (SPEC §6 "Releases"): `ROOT/releases/<id>`,
//! `ROOT/shared`, and `ROOT/current -> releases/<id>`, with staging, atomic
//! activation, pruning and crash clean-up.
//!
//! Every change becomes visible through a single rename(2), so a crash leaves
//! either the old state or the new one plus a leftover with a reserved name:
//! `releases/.staging-*` (an unpack or shared linking that did not finish),
//! `releases/.removing-*` (a prune that did not finish) and `ROOT/current.tmp-*`
//! (an activation that did not finish). [`AppLayout::clean_staging`] removes
//! them; [`AppLayout::list_releases`] never reports them.
//!
//! **Architecture Invariant:** nothing here deletes `current`, the release it
//! points to, or anything in `ROOT/shared`. A `current` that is not a symlink
//! made by us is refused, never replaced.
//!
//! None of this is safe against itself running concurrently for the same app;
//! the caller holds the app's lock.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use golive_shared::config::{SharedPath, is_plain_relative};
use golive_shared::names::check_release_id;
use golive_shared::protocol::ErrorCode;

use super::unpack::{UnpackError, UnpackLimits, UnpackStats, unpack};

/// Reserved name prefixes for crash leftovers; release ids start with a letter
/// or digit, so they can never clash.
const STAGING_PREFIX: &str = ".staging-";
const REMOVING_PREFIX: &str = ".removing-";
const CURRENT_TMP_PREFIX: &str = "current.tmp-";

/// Paths of one app under its `ROOT`, and the operations on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLayout {
    root: PathBuf,
}

/// Why a release operation failed; each message names the path or release id
/// and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("unpacking the release failed: {0}")]
    Unpack(#[from] UnpackError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "release {id:?} already exists at {}; pick a new release id (only a release that never went live gives its id back)",
        path.display()
    )]
    ReleaseExists { id: String, path: PathBuf },
    #[error(
        "release {id:?} is not unpacked at {}; stage it first or pick an id from the release list",
        path.display()
    )]
    NoSuchRelease { id: String, path: PathBuf },
    #[error("{reason}")]
    InvalidReleaseId { id: String, reason: String },
    #[error(
        "shared path {path:?} must be relative to ROOT/shared with plain names only (no `.`, `..` or leading `/`); fix the app's `shared` list in the agent config"
    )]
    InvalidSharedPath { path: PathBuf },
    #[error(
        "cannot link shared path {path:?}: {parent:?} in the release is a {kind}, not a directory; ship it as a plain directory in the artifact"
    )]
    SharedParent {
        path: PathBuf,
        parent: PathBuf,
        kind: &'static str,
    },
    #[error(
        "shared path {path:?} exists neither in ROOT/shared ({}) nor in the release: put the file there \
         (golive links it into every release and never creates a file), or, if it is a directory to \
         create empty, declare it with a trailing `/` (\"{path}/\") in the app's `shared` list",
        in_shared.display()
    )]
    SharedMissing { path: String, in_shared: PathBuf },
    #[error(
        "shared path {path:?}: {} is a symlink to {}, which does not exist; restore what it points \
         to or replace the link with the real {kind}",
        in_shared.display(),
        target.display()
    )]
    SharedDangling {
        path: String,
        in_shared: PathBuf,
        target: PathBuf,
        kind: &'static str,
    },
    #[error(
        "shared path {path:?}: {} is {shared_is}, but {what} a {other_kind}; a shared path \
         never changes kind, and golive does not replace one with the other: {fix}",
        in_shared.display()
    )]
    SharedKind {
        path: String,
        in_shared: PathBuf,
        shared_is: String,
        what: &'static str,
        other_kind: &'static str,
        fix: &'static str,
    },
    #[error(
        "cannot seed {} from {}: they are on different filesystems; copy it there by hand (e.g. `cp -a`) and stage again",
        to.display(),
        from.display()
    )]
    SeedAcrossDevices { from: PathBuf, to: PathBuf },
    #[error(
        "{} is a {kind}, not a symlink, and golive never deletes it; move it aside (e.g. `mv current current.before-golive`) and activate again",
        path.display()
    )]
    CurrentNotSymlink { path: PathBuf, kind: &'static str },
    #[error(
        "{} points to {}, which is not a release under {}; golive only replaces links it made, so move it aside and activate again",
        path.display(),
        target.display(),
        releases.display()
    )]
    CurrentForeign {
        path: PathBuf,
        target: PathBuf,
        releases: PathBuf,
    },
    #[error(
        "release {id:?} at {} is the one `current` points to and is never removed; switch to \
         another release first",
        path.display()
    )]
    DiscardCurrent { id: String, path: PathBuf },
}

impl LayoutError {
    /// The class of this failure (issue 14): an I/O fault on the host is
    /// `Internal` (exit 1); an unpack's is the unpack's class
    /// ([`UnpackError::code`]); a release id that is not there `NotFound`;
    /// the rest (a taken or invalid id, a shared path the release or
    /// `ROOT/shared` gets wrong, a `current` golive did not make) are the
    /// operator's to fix, `BadRequest` (exit 2).
    pub fn code(&self) -> ErrorCode {
        use LayoutError as E;
        match self {
            E::Unpack(e) => e.code(),
            E::Io { .. } => ErrorCode::Internal,
            E::NoSuchRelease { .. } => ErrorCode::NotFound,
            E::ReleaseExists { .. }
            | E::InvalidReleaseId { .. }
            | E::InvalidSharedPath { .. }
            | E::SharedParent { .. }
            | E::SharedMissing { .. }
            | E::SharedDangling { .. }
            | E::SharedKind { .. }
            | E::SeedAcrossDevices { .. }
            | E::CurrentNotSymlink { .. }
            | E::CurrentForeign { .. }
            | E::DiscardCurrent { .. } => ErrorCode::BadRequest,
        }
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayoutError {
    let path = path.to_owned();
    move |source| LayoutError::Io {
        action,
        path,
        source,
    }
}

fn check_id(id: &str) -> Result<(), LayoutError> {
    check_release_id(id).map_err(|reason| LayoutError::InvalidReleaseId {
        id: id.to_owned(),
        reason,
    })
}

/// `<pid>-<nanos>`: unique enough for names that live for one operation.
fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

fn fsync_dir(dir: &Path) -> Result<(), LayoutError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Up to this many entries, a staged tree is made durable entry by entry
/// (issue 14, speed); above it, one syncfs(2).
pub(crate) const FSYNC_EACH_UP_TO: usize = 512;

/// How [`sync_tree`] made a tree durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeSync {
    /// fsync of each of this many files and directories (the tree's own).
    EachEntry(usize),
    /// One syncfs(2) of the whole filesystem.
    Filesystem,
}

/// Flushes a freshly unpacked release before it is renamed into place:
/// nothing goes live that is not on disk.
///
/// A small tree (the usual release: up to [`FSYNC_EACH_UP_TO`] files and
/// directories) gets an fsync of each file and directory. syncfs(2), the
/// previous way, flushes every dirty page of the filesystem: on a host that
/// is the app's logs and database writes too, and in the fan-out bench the
/// other agents' artifacts and trees, so each agent waited for all of them
/// (issue 14, speed). A large tree still gets one syncfs, where an fsync per
/// file would cost a journal commit each; so does a tree with an entry the
/// agent cannot open (a file of mode 000 when the agent is not root).
///
/// `outside`: the staging also wrote outside the tree (it seeded a shared
/// path into `ROOT/shared`, once in an app's life): then one syncfs covers
/// both.
pub(crate) fn sync_tree(dir: &Path, outside: bool) -> Result<TreeSync, LayoutError> {
    let mut entries = Vec::new();
    if !outside && list_tree(dir, &mut entries).is_ok() {
        let each = entries.iter().try_for_each(|(path, is_dir)| {
            let f = if *is_dir {
                File::open(path)
            } else {
                // fsync needs no write access; O_RDONLY works for any file
                // the agent may read.
                fs::OpenOptions::new().read(true).open(path)
            };
            f.and_then(|f| f.sync_all())
        });
        if each.is_ok() {
            return Ok(TreeSync::EachEntry(entries.len()));
        }
    }
    let handle = File::open(dir).map_err(io_err("open", dir))?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    nix::unistd::syncfs(&handle).map_err(|e| io_err("syncfs", dir)(e.into()))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        drop(handle);
        nix::unistd::sync();
    }
    Ok(TreeSync::Filesystem)
}

/// The files and directories of the tree at `dir` (itself included,
/// directories after their entries, symlinks left out: a link is an entry of
/// its directory), or an error once there are more than [`FSYNC_EACH_UP_TO`].
fn list_tree(dir: &Path, out: &mut Vec<(PathBuf, bool)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_tree(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push((entry.path(), false));
        }
        if out.len() > FSYNC_EACH_UP_TO {
            return Err(io::Error::other("too many entries to fsync one by one"));
        }
    }
    out.push((dir.to_path_buf(), true));
    if out.len() > FSYNC_EACH_UP_TO {
        return Err(io::Error::other("too many entries to fsync one by one"));
    }
    Ok(())
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else {
        "special file"
    }
}

/// What the release ships at a shared path: `None` when nothing, or a
/// symlink (replaced by golive's link, never judged or moved into shared).
fn release_copy(in_release: &Path) -> Result<Option<fs::Metadata>, LayoutError> {
    match fs::symlink_metadata(in_release) {
        Ok(m) if m.file_type().is_symlink() => Ok(None),
        Ok(m) => Ok(Some(m)),
        // NotADirectory: a parent is a file; link_shared names that.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_err("inspect", in_release)(e)),
    }
}

/// Drops `.` and applies `..` lexically, to compare link targets with paths.
pub(crate) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Removes whatever is at `path` without following a symlink there.
fn remove_any(path: &Path) -> Result<(), LayoutError> {
    remove_tree(path).map_err(io_err("remove", path))
}

/// Removes `path` and everything under it, never following a symlink, also
/// when the tree holds directories without write permission (issue 12: a
/// permission rule's 0555 `sites/default` made old releases undeletable, and
/// `.removing-*` leftovers filled the disk).
///
/// The usual case is one `remove_dir_all` (std's walks with openat/unlinkat
/// and never follows links). Only when that is refused (EACCES/EPERM) are
/// the tree's directories given `u+rwx` (`make_removable`) and the removal
/// repeated. Root never gets here: it ignores permission bits.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                make_removable(path)?;
                fs::remove_dir_all(path)
            }
            other => other,
        },
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gives every directory under `top` (itself included) `u+rwx`, so its
/// entries can be listed and unlinked. Directories are reached with openat
/// and `O_NOFOLLOW` from their parent's descriptor and changed through their
/// own descriptor, so a symlink in the tree (a shared path, a link an
/// archive shipped) is never followed: what it points to keeps its mode.
fn make_removable(top: &Path) -> io::Result<()> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;

    let (parent, name) = match (top.parent(), top.file_name()) {
        (Some(p), Some(n)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            n,
        ),
        _ => return Ok(()),
    };
    let parent = open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot open {}: {e}", parent.display()),
        )
    })?;
    let Some(dir) = open_dir_writable(&parent, name, top)? else {
        return Ok(());
    };
    fix_tree(dir, top, 0)
}

/// Deeper than this, a tree is not one golive unpacked (a path is at most
/// 4096 bytes, so 2048 levels of one-letter names).
const MAX_DEPTH: usize = 2048;

fn fix_tree(mut dir: nix::dir::Dir, shown: &Path, depth: usize) -> io::Result<()> {
    use nix::dir::Type;
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{} is nested more than {MAX_DEPTH} levels deep",
            shown.display()
        )));
    }
    let mut subdirs = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot list {}: {e}", shown.display()),
            )
        })?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        // Unknown types (some filesystems) are looked at by opening them.
        if matches!(entry.file_type(), Some(Type::Directory) | None) {
            subdirs.push(std::ffi::OsStr::from_bytes(name).to_os_string());
        }
    }
    for name in subdirs {
        let path = shown.join(&name);
        if let Some(sub) = open_dir_writable(&dir, &name, &path)? {
            fix_tree(sub, &path, depth + 1)?;
        }
    }
    Ok(())
}

/// Opens the directory `name` in `parent` without following a symlink and
/// makes sure its owner may read, write and search it. `None` when `name`
/// is not a directory (a symlink, a file: unlinked as they are).
fn open_dir_writable(
    parent: &impl std::os::fd::AsFd,
    name: &std::ffi::OsStr,
    shown: &Path,
) -> io::Result<Option<nix::dir::Dir>> {
    use nix::errno::Errno;
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};
    use std::os::fd::AsRawFd;

    let ctx = |action: &str, e: Errno| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot {action} {}: {e}", shown.display()),
        )
    };
    let wanted = |mode: u32| mode & 0o700 == 0o700;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => {
            let st = fstat(&fd).map_err(|e| ctx("inspect", e))?;
            if !wanted(st.st_mode) {
                nix::sys::stat::fchmod(
                    &fd,
                    Mode::from_bits_truncate((st.st_mode & 0o7777) | 0o700),
                )
                .map_err(|e| ctx("make writable (to remove it)", e))?;
            }
            return nix::dir::Dir::from_fd(fd)
                .map(Some)
                .map_err(|e| ctx("list", e));
        }
        // A symlink (ELOOP) or not a directory: never followed.
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(None),
        Err(Errno::ENOENT) => return Ok(None),
        // No read permission on it: changed through an O_PATH handle below.
        Err(Errno::EACCES) => {}
        Err(e) => return Err(ctx("open", e)),
    }
    let handle = openat(
        parent,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ctx("open", e))?;
    let st = fstat(&handle).map_err(|e| ctx("inspect", e))?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
        return Ok(None);
    }
    // fchmod does not take an O_PATH descriptor; its /proc link names the
    // very inode opened above, so no path can be swapped in between.
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let mode = fs::Permissions::from_mode((st.st_mode & 0o7777) | 0o700);
    fs::set_permissions(&by_fd, mode).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot make {} writable (to remove it): {e}",
                shown.display()
            ),
        )
    })?;
    let fd = nix::fcntl::open(
        &by_fd,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ctx("open", e))?;
    nix::dir::Dir::from_fd(fd)
        .map(Some)
        .map_err(|e| ctx("list", e))
}

impl AppLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AppLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ROOT/releases`
    pub fn releases_dir(&self) -> PathBuf {
        self.root.join("releases")
    }

    /// `ROOT/releases/<id>`; the id is not checked here, the operations check it.
    pub fn release_dir(&self, id: &str) -> PathBuf {
        self.releases_dir().join(id)
    }

    /// `ROOT/shared`
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// `ROOT/current`
    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    /// Creates `ROOT`, `ROOT/releases` and `ROOT/shared` if missing.
    pub fn ensure_dirs(&self) -> io::Result<()> {
        for dir in [self.root.clone(), self.releases_dir(), self.shared_dir()] {
            fs::create_dir_all(&dir).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        Ok(())
    }

    /// The release id `current` points to, `None` if there is no `current`.
    /// An error if `current` is not a symlink or points anywhere but directly at
    /// a release under `ROOT/releases`.
    pub fn current(&self) -> io::Result<Option<String>> {
        self.read_current().map_err(|e| {
            let kind = match &e {
                LayoutError::Io { source, .. } => source.kind(),
                _ => io::ErrorKind::InvalidData,
            };
            io::Error::new(kind, e)
        })
    }

    fn read_current(&self) -> Result<Option<String>, LayoutError> {
        let link = self.current_link();
        let target = match fs::read_link(&link) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // EINVAL: it exists but is not a symlink.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                let meta = fs::symlink_metadata(&link).map_err(io_err("inspect", &link))?;
                return Err(LayoutError::CurrentNotSymlink {
                    path: link,
                    kind: kind_of(&meta),
                });
            }
            Err(e) => return Err(io_err("read symlink", &link)(e)),
        };
        self.release_id_of(&target)
            .map(Some)
            .ok_or_else(|| LayoutError::CurrentForeign {
                path: link,
                target,
                releases: self.releases_dir(),
            })
    }

    /// The id if `target` (as read from `ROOT/current`) names a release dir.
    fn release_id_of(&self, target: &Path) -> Option<String> {
        let full = normalise(&self.root.join(target));
        let releases = normalise(&self.releases_dir());
        let rest = full.strip_prefix(&releases).ok()?;
        let mut parts = rest.components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(id)), None) => {
                let id = id.to_str()?;
                check_release_id(id).ok()?;
                Some(id.to_owned())
            }
            _ => None,
        }
    }

    /// Release directory names, sorted; staging and removal leftovers (names
    /// starting with `.`) and non-directories are left out.
    pub fn list_releases(&self) -> io::Result<Vec<String>> {
        let dir = self.releases_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot list {}: {e}", dir.display()),
                ));
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with('.') && entry.file_type()?.is_dir() {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Unpacks `archive` as release `id` and links the `shared` paths into it.
    ///
    /// The work happens in `releases/.staging-<id>-<pid>-<nanos>`, which is
    /// flushed and then renamed to `releases/<id>`, so a crash never leaves a
    /// half-staged release under its real name.
    ///
    /// Each shared path `P` (relative to `ROOT/shared`) ends up as a symlink
    /// `release/P -> ../../shared/P` (one more `../` per extra level of `P`):
    ///
    /// - If `ROOT/shared/P` does not exist and the release ships `P`, the
    ///   release's copy is moved there: the first release seeds shared state
    ///   such as a default `uploads/` layout, later ones never overwrite it. A
    ///   seeded copy keeps its depth below the root, so links that unpacking
    ///   proved to stay inside the release stay inside `ROOT/shared`.
    /// - If neither exists, `ROOT/shared/P` is created as an empty directory
    ///   only when the config declares a directory (`"P/"`); anything else
    ///   fails the staging ([`LayoutError::SharedMissing`]): a missing
    ///   settings file must stop a deployment, not become a directory.
    /// - Once it exists, its kind never changes: a release shipping a
    ///   directory where `ROOT/shared/P` is a file (or the other way round),
    ///   or a declared directory that is a file, is refused.
    /// - If the release ships `P` as a symlink (artifacts built for another
    ///   layout often do), it is replaced, never moved into `shared`.
    ///
    /// The links are relative so that the whole `ROOT` can be moved or mounted
    /// elsewhere (a container, a restored backup) and still resolve.
    pub fn stage(
        &self,
        id: &str,
        archive: &Path,
        shared: &[SharedPath],
        limits: &UnpackLimits,
    ) -> Result<UnpackStats, LayoutError> {
        self.stage_with(id, archive, shared, limits, &[])
    }

    /// [`AppLayout::stage`], also writing `files` (plain names at the
    /// release's top level, e.g. git's `REVISION`) into the release before
    /// it is renamed into place. Whatever the archive had under such a name
    /// is replaced, never written through.
    pub fn stage_with(
        &self,
        id: &str,
        archive: &Path,
        shared: &[SharedPath],
        limits: &UnpackLimits,
        files: &[(&str, &[u8])],
    ) -> Result<UnpackStats, LayoutError> {
        check_id(id)?;
        for entry in shared {
            if !is_plain_relative(&entry.path) {
                return Err(LayoutError::InvalidSharedPath {
                    path: entry.path.clone(),
                });
            }
        }
        self.ensure_dirs().map_err(io_err("prepare", &self.root))?;
        let release = self.release_dir(id);
        if fs::symlink_metadata(&release).is_ok() {
            return Err(LayoutError::ReleaseExists {
                id: id.to_owned(),
                path: release,
            });
        }
        let releases = self.releases_dir();
        let staging = releases.join(format!("{STAGING_PREFIX}{id}-{}", unique_suffix()));
        let stats = unpack(archive, &staging, limits)?;

        let finish = || {
            for (name, content) in files {
                let path = staging.join(name);
                if !is_plain_relative(Path::new(name)) || name.contains('/') {
                    return Err(LayoutError::Io {
                        action: "write",
                        path,
                        source: io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "not a plain file name",
                        ),
                    });
                }
                remove_any(&path)?;
                let mut opts = fs::OpenOptions::new();
                opts.write(true).create_new(true);
                std::io::Write::write_all(
                    &mut opts.open(&path).map_err(io_err("create", &path))?,
                    content,
                )
                .map_err(io_err("write", &path))?;
            }
            for entry in shared {
                self.check_shared(&staging, entry)?;
            }
            let mut seeded = false;
            for entry in shared {
                seeded |= self.link_shared(&staging, entry)?;
            }
            sync_tree(&staging, seeded)?;
            fs::rename(&staging, &release).map_err(|e| match e.kind() {
                // Another stage won a race the app lock should have prevented.
                io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty => {
                    LayoutError::ReleaseExists {
                        id: id.to_owned(),
                        path: release.clone(),
                    }
                }
                _ => io_err("rename staged release to", &release)(e),
            })?;
            fsync_dir(&releases)?;
            // `releases` itself may be new (a first staging): its entry in
            // ROOT, which syncfs used to cover (clean: nearly free).
            fsync_dir(&self.root)
        };
        match finish() {
            Ok(()) => Ok(stats),
            Err(e) => {
                // The error explains what went wrong; a leftover is clean_staging's.
                let _ = remove_any(&staging);
                Err(e)
            }
        }
    }

    /// Whether shared path `entry` can be linked into `release` without
    /// creating a file or changing a kind (see [`AppLayout::stage`]). Only
    /// reads: every entry is checked before any is linked, so a refused
    /// staging seeds nothing into `ROOT/shared`.
    fn check_shared(&self, release: &Path, entry: &SharedPath) -> Result<(), LayoutError> {
        let shared = entry.path.as_path();
        let in_shared = self.shared_dir().join(shared);
        let copy = release_copy(&release.join(shared))?;
        let name = shared.display().to_string();
        let kind_error = |shared_is: String, what, other_kind, fix| LayoutError::SharedKind {
            path: name.clone(),
            in_shared: in_shared.clone(),
            shared_is,
            what,
            other_kind,
            fix,
        };
        match fs::symlink_metadata(&in_shared) {
            Ok(m) => {
                // What the shared path is, through an operator's link
                // (`shared/uploads -> /mnt/nfs/uploads`).
                let have = if m.file_type().is_symlink() {
                    match fs::metadata(&in_shared) {
                        Ok(target) => kind_of(&target),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Err(LayoutError::SharedDangling {
                                path: name,
                                target: fs::read_link(&in_shared).unwrap_or_default(),
                                in_shared,
                                kind: if entry.dir { "directory" } else { "file" },
                            });
                        }
                        Err(e) => return Err(io_err("inspect", &in_shared)(e)),
                    }
                } else {
                    kind_of(&m)
                };
                if entry.dir && have != "directory" {
                    return Err(kind_error(
                        format!("a {have}"),
                        "the config declares",
                        "directory (a trailing `/`)",
                        "move the file aside and create the directory, or drop the `/` from the \
                         `shared` entry if it is meant to be a file",
                    ));
                }
                if let Some(copy) = &copy
                    && kind_of(copy) != have
                {
                    return Err(kind_error(
                        format!("a {have}"),
                        "the release ships",
                        kind_of(copy),
                        "build the artifact without that path (the shared one is linked in), or \
                         move ROOT/shared's copy aside if the kind really changed",
                    ));
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match &copy {
                Some(m) if entry.dir && !m.is_dir() => Err(kind_error(
                    "not there yet".into(),
                    "the config declares a directory and the release ships",
                    kind_of(m),
                    "ship it as a directory, or drop the `/` from the `shared` entry",
                )),
                None if !entry.dir => Err(LayoutError::SharedMissing {
                    path: name,
                    in_shared,
                }),
                _ => Ok(()),
            },
            Err(e) => Err(io_err("inspect", &in_shared)(e)),
        }
    }

    /// Replaces the release's own `shared` path with a link into `ROOT/shared`;
    /// see [`AppLayout::stage`]. `true` when it seeded `ROOT/shared` (wrote
    /// outside the release).
    fn link_shared(&self, release: &Path, entry: &SharedPath) -> Result<bool, LayoutError> {
        let shared = entry.path.as_path();
        // Parents must be real directories: the link's `../` count assumes its
        // own directory sits at `shared`'s depth in the release.
        let mut parents = shared.components();
        parents.next_back();
        let mut here = release.to_path_buf();
        let mut rel = PathBuf::new();
        for part in parents {
            here.push(part);
            rel.push(part);
            match fs::symlink_metadata(&here) {
                Ok(m) if m.is_dir() => {}
                Ok(m) => {
                    return Err(LayoutError::SharedParent {
                        path: shared.to_owned(),
                        parent: rel,
                        kind: kind_of(&m),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                    .mode(0o755)
                    .create(&here)
                    .map_err(io_err("create directory", &here))?,
                Err(e) => return Err(io_err("inspect", &here)(e)),
            }
        }

        let in_release = release.join(shared);
        let in_shared = self.shared_dir().join(shared);
        let seeding = fs::symlink_metadata(&in_shared).is_err();
        if seeding {
            // check_shared established that the release's copy seeds it, or
            // that it is a declared directory to create.
            let parent = in_shared.parent().unwrap_or(&in_shared);
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
            match release_copy(&in_release)? {
                Some(_) => {
                    fs::rename(&in_release, &in_shared).map_err(|e| {
                        if e.kind() == io::ErrorKind::CrossesDevices {
                            LayoutError::SeedAcrossDevices {
                                from: in_release.clone(),
                                to: in_shared.clone(),
                            }
                        } else {
                            io_err("move the release's copy to", &in_shared)(e)
                        }
                    })?;
                }
                None => DirBuilder::new()
                    .mode(0o755)
                    .create(&in_shared)
                    .map_err(io_err("create directory", &in_shared))?,
            }
            fsync_dir(parent)?;
        }
        remove_any(&in_release)?;

        let mut target = PathBuf::new();
        for _ in 0..shared.components().count() + 1 {
            target.push("..");
        }
        target.push("shared");
        target.push(shared);
        symlink(&target, &in_release).map_err(io_err("create symlink", &in_release))?;
        Ok(seeding)
    }

    /// Points `current` at release `id` with one atomic rename and returns the
    /// id it pointed at before (`None` on first activation).
    ///
    /// A `current` that is a real directory or file, or a link to anything but
    /// a release, is refused: it holds something golive did not put there.
    pub fn activate(&self, id: &str) -> Result<Option<String>, LayoutError> {
        check_id(id)?;
        let release = self.release_dir(id);
        match fs::symlink_metadata(&release) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(LayoutError::NoSuchRelease {
                    id: id.to_owned(),
                    path: release,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NoSuchRelease {
                    id: id.to_owned(),
                    path: release,
                });
            }
            Err(e) => return Err(io_err("inspect", &release)(e)),
        }
        let previous = self.read_current()?;

        let link = self.current_link();
        let tmp = self
            .root
            .join(format!("{CURRENT_TMP_PREFIX}{}", unique_suffix()));
        symlink(Path::new("releases").join(id), &tmp).map_err(io_err("create symlink", &tmp))?;
        if let Err(e) = fs::rename(&tmp, &link) {
            let _ = fs::remove_file(&tmp);
            // The kernel refuses to rename a link over a directory; that covers
            // a directory that appeared since read_current looked.
            return Err(if e.kind() == io::ErrorKind::IsADirectory {
                LayoutError::CurrentNotSymlink {
                    path: link,
                    kind: "directory",
                }
            } else {
                io_err("rename symlink to", &link)(e)
            });
        }
        fsync_dir(&self.root)?;
        Ok(previous)
    }

    /// Removes old releases and returns the ids removed.
    ///
    /// `keep` is the number of releases left on disk among those named in
    /// `newest_first` (issue 12: it is not "the newest `keep` plus the
    /// protected ones"). The ids in `protect` (the caller passes current,
    /// previous and the rollback target) and whatever `current` points to,
    /// even if the caller forgot it (SPEC §5), are kept first; the remaining
    /// places go to the newest of the others. When the protected ones alone
    /// are more than `keep`, they all stay. Directories not named in
    /// `newest_first` are never touched. Each removal goes through
    /// [`AppLayout::discard`]; `.removing-*` leftovers of an earlier crash
    /// are finished first.
    pub fn prune(
        &self,
        keep: usize,
        newest_first: &[String],
        protect: &[String],
    ) -> Result<Vec<String>, LayoutError> {
        // Ids become paths: refuse the whole call before deleting anything.
        for id in newest_first {
            check_id(id)?;
        }
        self.finish_removals()?;
        let current = self.read_current()?;
        let is_protected =
            |id: &str| protect.iter().any(|p| p == id) || current.as_deref() == Some(id);
        let mut seen = HashSet::new();
        let mut on_disk = Vec::new();
        for id in newest_first {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let dir = self.release_dir(id);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => on_disk.push(id),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("inspect", &dir)(e)),
            }
        }
        let protected = on_disk.iter().filter(|id| is_protected(id)).count();
        let mut places = keep.saturating_sub(protected);
        let mut removed = Vec::new();
        for id in on_disk {
            if is_protected(id) {
                continue;
            }
            if places > 0 {
                places -= 1;
                continue;
            }
            self.discard(id)?;
            removed.push(id.clone());
        }
        Ok(removed)
    }

    /// Removes release `id` from disk: first renamed to `.removing-*` (the
    /// id is free at once, and a crash mid-way leaves a leftover that the
    /// next prune or start finishes, never a half-deleted release), then
    /// removed with [`remove_tree`], which copes with directories a
    /// permission rule made read-only. Refuses the release `current` points
    /// to; what else must stay (the rollback target, a release that went
    /// live) is the caller's to decide.
    pub fn discard(&self, id: &str) -> Result<(), LayoutError> {
        check_id(id)?;
        let dir = self.release_dir(id);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(LayoutError::NoSuchRelease {
                    id: id.to_owned(),
                    path: dir,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NoSuchRelease {
                    id: id.to_owned(),
                    path: dir,
                });
            }
            Err(e) => return Err(io_err("inspect", &dir)(e)),
        }
        if self.read_current()?.as_deref() == Some(id) {
            return Err(LayoutError::DiscardCurrent {
                id: id.to_owned(),
                path: dir,
            });
        }
        let doomed = self
            .releases_dir()
            .join(format!("{REMOVING_PREFIX}{id}-{}", unique_suffix()));
        fs::rename(&dir, &doomed).map_err(io_err("rename for removal", &dir))?;
        remove_tree(&doomed).map_err(io_err("remove", &doomed))
    }

    /// Finishes the removals a crash interrupted (`releases/.removing-*`).
    /// Safe at any time under the app lock: nothing else uses those names.
    fn finish_removals(&self) -> Result<(), LayoutError> {
        let dir = self.releases_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            if entry
                .file_name()
                .as_bytes()
                .starts_with(REMOVING_PREFIX.as_bytes())
            {
                let path = entry.path();
                remove_tree(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }

    /// Removes what an interrupted stage, prune or activate left behind:
    /// `releases/.staging-*`, `releases/.removing-*` and `ROOT/current.tmp-*`
    /// symlinks. Call it at start-up, under the app lock, never while a stage
    /// may be running. Returns the paths removed, sorted.
    pub fn clean_staging(&self) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let spots = [
            (self.releases_dir(), &[STAGING_PREFIX, REMOVING_PREFIX][..]),
            (self.root.clone(), &[CURRENT_TMP_PREFIX][..]),
        ];
        for (dir, prefixes) in spots {
            let context = |e: io::Error, path: &Path| {
                io::Error::new(e.kind(), format!("cannot clean {}: {e}", path.display()))
            };
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(context(e, &dir)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| context(e, &dir))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !prefixes.iter().any(|p| name.starts_with(p)) {
                    continue;
                }
                let path = entry.path();
                let file_type = entry.file_type().map_err(|e| context(e, &path))?;
                let result = if file_type.is_dir() && dir != self.root {
                    remove_tree(&path)
                } else if file_type.is_symlink() || dir != self.root {
                    fs::remove_file(&path)
                } else {
                    // Not something activate makes: an operator's file in ROOT.
                    continue;
                };
                result.map_err(|e| context(e, &path))?;
                removed.push(path);
            }
        }
        removed.sort();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::release::testutil::{Raw, dir, file, symlink as link, write_tar};

    const LIMITS: UnpackLimits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };

    fn setup() -> (TempDir, AppLayout) {
        let tmp = TempDir::new().unwrap();
        let layout = AppLayout::new(tmp.path().join("app"));
        (tmp, layout)
    }

    fn artifact(tmp: &TempDir, name: &str, members: &[Raw<'_>]) -> PathBuf {
        let path = tmp.path().join(name);
        write_tar(&path, members);
        path
    }

    fn stage(tmp: &TempDir, layout: &AppLayout, id: &str, members: &[Raw<'_>], shared: &[&str]) {
        try_stage(tmp, layout, id, members, shared).unwrap();
    }

    fn try_stage(
        tmp: &TempDir,
        layout: &AppLayout,
        id: &str,
        members: &[Raw<'_>],
        shared: &[&str],
    ) -> Result<UnpackStats, LayoutError> {
        let archive = artifact(tmp, &format!("{id}.tar"), members);
        let shared: Vec<SharedPath> = shared.iter().map(|s| SharedPath::from(*s)).collect();
        layout.stage(id, &archive, &shared, &LIMITS)
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn paths_hang_off_the_root() {
        let layout = AppLayout::new("/srv/shop");
        assert_eq!(layout.root(), Path::new("/srv/shop"));
        assert_eq!(layout.releases_dir(), Path::new("/srv/shop/releases"));
        assert_eq!(layout.release_dir("r1"), Path::new("/srv/shop/releases/r1"));
        assert_eq!(layout.shared_dir(), Path::new("/srv/shop/shared"));
        assert_eq!(layout.current_link(), Path::new("/srv/shop/current"));
    }

    #[test]
    fn ensure_dirs_is_idempotent() {
        let (_tmp, layout) = setup();
        layout.ensure_dirs().unwrap();
        layout.ensure_dirs().unwrap();
        assert_eq!(names_in(layout.root()), ["releases", "shared"]);
        assert_eq!(layout.list_releases().unwrap(), Vec::<String>::new());
        assert_eq!(layout.current().unwrap(), None);
    }

    #[test]
    fn stage_unpacks_under_the_real_name_only_when_done() {
        let (tmp, layout) = setup();
        let archive = artifact(
            &tmp,
            "r1.tar",
            &[dir("web"), file("web/index.php", b"<?php")],
        );
        let stats = layout.stage("r1", &archive, &[], &LIMITS).unwrap();
        assert_eq!(stats.files, 1);
        assert_eq!(
            fs::read(layout.release_dir("r1").join("web/index.php")).unwrap(),
            b"<?php"
        );
        assert_eq!(
            names_in(&layout.releases_dir()),
            ["r1"],
            "no staging leftovers"
        );
    }

    #[test]
    fn stage_with_adds_files_replacing_what_the_archive_had() {
        let (tmp, layout) = setup();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"untouched").unwrap();
        // An archive's own REVISION, here a link to a file in the release,
        // is replaced, not written through.
        let archive = artifact(
            &tmp,
            "r1.tar",
            &[file("target", b"t"), link("REVISION", "target")],
        );
        layout
            .stage_with("r1", &archive, &[], &LIMITS, &[("REVISION", b"abc\n")])
            .unwrap();
        let rev = layout.release_dir("r1").join("REVISION");
        assert!(fs::symlink_metadata(&rev).unwrap().is_file());
        assert_eq!(fs::read(&rev).unwrap(), b"abc\n");
        assert_eq!(
            fs::read(layout.release_dir("r1").join("target")).unwrap(),
            b"t"
        );

        let archive = artifact(&tmp, "r2.tar", &[file("a", b"1")]);
        let err = layout
            .stage_with("r2", &archive, &[], &LIMITS, &[("../x", b"no")])
            .unwrap_err();
        assert!(err.to_string().contains("not a plain file name"), "{err}");
        assert_eq!(names_in(&layout.releases_dir()), ["r1"]);
    }

    #[test]
    fn stage_refuses_an_existing_id() {
        let (tmp, layout) = setup();
        stage(&tmp, &layout, "r1", &[file("a", b"1")], &[]);
        let archive = artifact(&tmp, "again.tar", &[file("a", b"2")]);
        let err = layout.stage("r1", &archive, &[], &LIMITS).unwrap_err();
        assert!(
            matches!(err, LayoutError::ReleaseExists { ref id, .. } if id == "r1"),
            "{err}"
        );
        assert!(err.to_string().contains("pick a new release id"), "{err}");
        assert_eq!(fs::read(layout.release_dir("r1").join("a")).unwrap(), b"1");
        assert_eq!(names_in(&layout.releases_dir()), ["r1"]);
    }

    #[test]
    fn stage_refuses_bad_ids_and_shared_paths_before_touching_disk() {
        let (tmp, layout) = setup();
        let archive = artifact(&tmp, "a.tar", &[file("a", b"1")]);
        for id in ["../x", ".staging-x", "", "a/b"] {
            let err = layout.stage(id, &archive, &[], &LIMITS).unwrap_err();
            assert!(
                matches!(err, LayoutError::InvalidReleaseId { .. }),
                "{id:?}: {err}"
            );
        }
        for shared in ["../etc", "/etc", "./x", ""] {
            let err = layout
                .stage("r1", &archive, &[SharedPath::from(shared)], &LIMITS)
                .unwrap_err();
            assert!(
                matches!(err, LayoutError::InvalidSharedPath { .. }),
                "{shared:?}: {err}"
            );
        }
        assert!(!layout.root().exists());
    }

    #[test]
    fn a_failed_stage_leaves_no_trace() {
        let (tmp, layout) = setup();
        let evil = Raw {
            name: b"../../escape",
            ..file("x", b"x")
        };
        let archive = artifact(&tmp, "evil.tar", &[file("ok", b"1"), evil]);
        let err = layout.stage("r1", &archive, &[], &LIMITS).unwrap_err();
        assert!(
            matches!(
                err,
                LayoutError::Unpack(UnpackError::ParentTraversal { .. })
            ),
            "{err}"
        );
        assert!(names_in(&layout.releases_dir()).is_empty());

        // Failing after the unpack (a shared path under a file) cleans up too.
        let archive = artifact(&tmp, "file.tar", &[file("web", b"not a dir")]);
        let err = layout
            .stage("r1", &archive, &[SharedPath::from("web/files/")], &LIMITS)
            .unwrap_err();
        assert!(
            matches!(err, LayoutError::SharedParent { kind: "file", .. }),
            "{err}"
        );
        assert!(names_in(&layout.releases_dir()).is_empty());
    }

    #[test]
    fn shared_paths_are_seeded_once_and_linked_relatively() {
        let (tmp, layout) = setup();
        let shared = ["uploads", "web/files/", "logs/", "cache/"];
        stage(
            &tmp,
            &layout,
            "r1",
            &[
                dir("uploads"),
                file("uploads/a.txt", b"seed"),
                dir("web"),
                file("web/index.php", b""),
                link("cache", "web"),
            ],
            &shared,
        );
        let r1 = layout.release_dir("r1");
        let sh = layout.shared_dir();
        // Seeded: the release's copy moved into shared.
        assert_eq!(fs::read(sh.join("uploads/a.txt")).unwrap(), b"seed");
        assert_eq!(
            fs::read_link(r1.join("uploads")).unwrap(),
            Path::new("../../shared/uploads")
        );
        assert_eq!(fs::read(r1.join("uploads/a.txt")).unwrap(), b"seed");
        // Absent everywhere: an empty directory, one more `../` per level.
        assert!(fs::symlink_metadata(sh.join("web/files")).unwrap().is_dir());
        assert_eq!(
            fs::read_link(r1.join("web/files")).unwrap(),
            Path::new("../../../shared/web/files")
        );
        assert!(fs::metadata(r1.join("logs")).unwrap().is_dir());
        // A symlink the release ships is replaced, not moved into shared.
        assert!(fs::symlink_metadata(sh.join("cache")).unwrap().is_dir());
        assert_eq!(
            fs::read_link(r1.join("cache")).unwrap(),
            Path::new("../../shared/cache")
        );

        // The next release's own copy is dropped: shared state wins.
        stage(
            &tmp,
            &layout,
            "r2",
            &[dir("uploads"), file("uploads/b.txt", b"r2's")],
            &shared,
        );
        let r2 = layout.release_dir("r2");
        assert_eq!(names_in(&sh.join("uploads")), ["a.txt"]);
        fs::write(r1.join("uploads/from-r1.txt"), b"written via r1").unwrap();
        assert_eq!(
            fs::read(r2.join("uploads/from-r1.txt")).unwrap(),
            b"written via r1"
        );
    }

    #[test]
    fn shared_path_below_a_release_symlink_is_refused() {
        let (tmp, layout) = setup();
        let archive = artifact(&tmp, "r1.tar", &[dir("public"), link("web", "public")]);
        let err = layout
            .stage("r1", &archive, &[SharedPath::from("web/files/")], &LIMITS)
            .unwrap_err();
        assert!(
            matches!(err, LayoutError::SharedParent { ref parent, kind: "symlink", .. } if parent == Path::new("web")),
            "{err}"
        );
        assert!(!layout.shared_dir().join("web").exists());
    }

    #[test]
    fn links_still_resolve_after_moving_root() {
        let (tmp, layout) = setup();
        stage(
            &tmp,
            &layout,
            "r1",
            &[dir("uploads"), file("uploads/a.txt", b"seed")],
            &["uploads"],
        );
        layout.activate("r1").unwrap();
        let moved = tmp.path().join("moved");
        fs::rename(layout.root(), &moved).unwrap();
        assert_eq!(
            fs::read(moved.join("current/uploads/a.txt")).unwrap(),
            b"seed"
        );
        assert_eq!(
            AppLayout::new(&moved).current().unwrap().as_deref(),
            Some("r1")
        );
    }

    #[test]
    fn activate_switches_current_and_reports_the_previous_release() {
        let (tmp, layout) = setup();
        stage(&tmp, &layout, "r1", &[file("v", b"1")], &[]);
        stage(&tmp, &layout, "r2", &[file("v", b"2")], &[]);
        assert_eq!(layout.activate("r1").unwrap(), None);
        assert_eq!(layout.current().unwrap().as_deref(), Some("r1"));
        assert_eq!(
            fs::read_link(layout.current_link()).unwrap(),
            Path::new("releases/r1")
        );
        assert_eq!(layout.activate("r2").unwrap().as_deref(), Some("r1"));
        assert_eq!(fs::read(layout.current_link().join("v")).unwrap(), b"2");
        assert_eq!(layout.activate("r2").unwrap().as_deref(), Some("r2"));
        assert_eq!(
            names_in(layout.root()),
            ["current", "releases", "shared"],
            "no current.tmp-* left"
        );
    }

    #[test]
    fn activate_refuses_a_missing_release() {
        let (tmp, layout) = setup();
        stage(&tmp, &layout, "r1", &[file("v", b"1")], &[]);
        layout.activate("r1").unwrap();
        fs::write(layout.releases_dir().join("plainfile"), b"").unwrap();
        for id in ["r9", "plainfile"] {
            let err = layout.activate(id).unwrap_err();
            assert!(
                matches!(err, LayoutError::NoSuchRelease { .. }),
                "{id}: {err}"
            );
        }
        assert!(matches!(
            layout.activate("../r1"),
            Err(LayoutError::InvalidReleaseId { .. })
        ));
        assert_eq!(layout.current().unwrap().as_deref(), Some("r1"));
    }

    #[test]
    fn activate_never_replaces_a_real_current_directory() {
        let (tmp, layout) = setup();
        stage(&tmp, &layout, "r1", &[file("v", b"1")], &[]);
        fs::create_dir(layout.current_link()).unwrap();
        fs::write(layout.current_link().join("index.html"), b"hand-made").unwrap();
        let err = layout.activate("r1").unwrap_err();
        assert!(
            matches!(
                err,
                LayoutError::CurrentNotSymlink {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("move it aside"), "{err}");
        assert_eq!(
            fs::read(layout.current_link().join("index.html")).unwrap(),
            b"hand-made"
        );
        assert_eq!(
            layout.current().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(names_in(layout.root()), ["current", "releases", "shared"]);
    }

    #[test]
    fn current_understands_only_links_to_releases() {
        let (tmp, layout) = setup();
        stage(&tmp, &layout, "r1", &[file("v", b"1")], &[]);
        let set = |target: &Path| {
            let _ = fs::remove_file(layout.current_link());
            symlink(target, layout.current_link()).unwrap();
        };
        set(&layout.release_dir("r1"));
        assert_eq!(
            layout.current().unwrap().as_deref(),
            Some("r1"),
            "absolute link into releases/"
        );
        set(Path::new("./releases/../releases/r1/"));
        assert_eq!(layout.current().unwrap().as_deref(), Some("r1"));
        for foreign in [
            "/etc",
            "releases",
            "releases/r1/sub",
            "../app/shared",
            "releases/.staging-r1-1-2",
        ] {
            set(Path::new(foreign));
            let err = layout.current().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{foreign}");
            assert!(
                err.to_string().contains("not a release"),
                "{foreign}: {err}"
            );
            assert!(
                matches!(
                    layout.activate("r1"),
                    Err(LayoutError::CurrentForeign { .. })
                ),
                "{foreign}"
            );
        }
    }

    #[test]
    fn list_releases_skips_leftovers_and_files() {
        let (_tmp, layout) = setup();
        layout.ensure_dirs().unwrap();
        for d in ["r2", "r1", ".staging-r3-1-2", ".removing-r0-1-2"] {
            fs::create_dir(layout.releases_dir().join(d)).unwrap();
        }
        fs::write(layout.releases_dir().join("notes.txt"), b"").unwrap();
        symlink("r1", layout.releases_dir().join("alias")).unwrap();
        assert_eq!(layout.list_releases().unwrap(), ids(&["r1", "r2"]));
    }

    #[test]
    fn issue12_prune_keeps_keep_releases_on_disk_protected_ones_first() {
        let (_tmp, layout) = setup();
        layout.ensure_dirs().unwrap();
        for d in ["r1", "r2", "r3", "r4", "r5", "r6", "manual"] {
            fs::create_dir(layout.release_dir(d)).unwrap();
            fs::write(layout.release_dir(d).join("f"), b"").unwrap();
        }
        // A crash left a removal half done: the next prune finishes it.
        fs::create_dir_all(layout.releases_dir().join(".removing-r0-1-2/sub")).unwrap();
        layout.activate("r3").unwrap();
        let newest_first = ids(&["r7-never-staged", "r6", "r5", "r6", "r4", "r3", "r2", "r1"]);
        // 4 on disk: current r3 and protected r1, then the newest others.
        let removed = layout.prune(4, &newest_first, &ids(&["r1"])).unwrap();
        assert_eq!(removed, ids(&["r4", "r2"]));
        assert_eq!(
            names_in(&layout.releases_dir()),
            ["manual", "r1", "r3", "r5", "r6"],
            "no .removing-* left; a directory golive never staged is not touched"
        );
        assert_eq!(
            layout.prune(4, &newest_first, &ids(&["r1"])).unwrap(),
            Vec::<String>::new()
        );
        // Today's count was "the newest `keep` plus the protected ones":
        // with keep 2, r6 and r5 stayed beside r3 and r1 (4 on disk).
        let removed = layout.prune(2, &newest_first, &ids(&["r1"])).unwrap();
        assert_eq!(removed, ids(&["r6", "r5"]));
        assert_eq!(
            layout.list_releases().unwrap(),
            ids(&["manual", "r1", "r3"])
        );
        // More protected than `keep`: all of them stay.
        let removed = layout.prune(1, &newest_first, &ids(&["r1"])).unwrap();
        assert!(removed.is_empty(), "{removed:?}");
    }

    #[test]
    fn issue12_discard_removes_read_only_trees_and_never_current() {
        let (tmp, layout) = setup();
        stage(&tmp, &layout, "r1", &[file("v", b"1")], &[]);
        stage(
            &tmp,
            &layout,
            "r2",
            &[
                dir("sites"),
                dir("sites/default"),
                file("sites/default/settings.php", b"x"),
            ],
            &[],
        );
        layout.activate("r1").unwrap();
        // A permission rule's relock; and a link out of the release to a
        // read-only directory, whose mode must survive the removal.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o555)).unwrap();
        let r2 = layout.release_dir("r2");
        symlink(&outside, r2.join("out")).unwrap();
        fs::set_permissions(r2.join("sites/default"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(r2.join("sites"), fs::Permissions::from_mode(0o500)).unwrap();

        make_removable(&r2).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&r2.join("sites")), 0o700);
        assert_eq!(mode(&r2.join("sites/default")), 0o755);
        assert_eq!(
            mode(&outside),
            0o555,
            "followed a symlink out of the release"
        );

        fs::set_permissions(r2.join("sites/default"), fs::Permissions::from_mode(0o555)).unwrap();
        layout.discard("r2").unwrap();
        assert_eq!(names_in(&layout.releases_dir()), ["r1"]);
        assert_eq!(mode(&outside), 0o555);
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"k");

        let err = layout.discard("r1").unwrap_err();
        assert!(matches!(err, LayoutError::DiscardCurrent { .. }), "{err}");
        assert!(matches!(
            layout.discard("r9"),
            Err(LayoutError::NoSuchRelease { .. })
        ));
        assert_eq!(names_in(&layout.releases_dir()), ["r1"]);
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn issue12_a_shared_path_is_never_created_as_a_directory_unless_declared() {
        let (tmp, layout) = setup();
        // Missing everywhere, not declared a directory: refused, and the
        // other entry's copy is not seeded either (checked before linking).
        let err = try_stage(
            &tmp,
            &layout,
            "r1",
            &[dir("uploads"), file("uploads/a", b"a")],
            &["uploads", "config/settings.local.php"],
        )
        .unwrap_err();
        assert!(matches!(err, LayoutError::SharedMissing { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("config/settings.local.php")
                && text.contains("shared/config/settings.local.php")
                && text.contains("put the file there"),
            "{text}"
        );
        assert!(names_in(&layout.releases_dir()).is_empty());
        assert!(names_in(&layout.shared_dir()).is_empty(), "nothing seeded");

        // The file in ROOT/shared: linked, and it stays a file.
        let sh = layout.shared_dir();
        fs::create_dir_all(sh.join("config")).unwrap();
        fs::write(sh.join("config/settings.local.php"), b"<?php").unwrap();
        stage(
            &tmp,
            &layout,
            "r1",
            &[file("index.php", b"")],
            &["config/settings.local.php", "logs/"],
        );
        assert!(sh.join("logs").is_dir(), "a declared directory is created");
        assert_eq!(
            fs::read(layout.release_dir("r1").join("config/settings.local.php")).unwrap(),
            b"<?php"
        );

        // A release shipping a directory where shared holds a file: refused.
        let err = try_stage(
            &tmp,
            &layout,
            "r2",
            &[dir("config"), dir("config/settings.local.php")],
            &["config/settings.local.php"],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("is a file, but the release ships a directory"),
            "{err}"
        );
        // A declared directory that is a file in shared: refused.
        let err = try_stage(
            &tmp,
            &layout,
            "r2",
            &[file("index.php", b"")],
            &["config/settings.local.php/"],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("is a file, but the config declares a directory"),
            "{err}"
        );
        // A dangling link in shared: refused, naming where it points.
        fs::remove_file(sh.join("config/settings.local.php")).unwrap();
        symlink(
            "/nonexistent/settings.php",
            sh.join("config/settings.local.php"),
        )
        .unwrap();
        let err = try_stage(
            &tmp,
            &layout,
            "r2",
            &[file("index.php", b"")],
            &["config/settings.local.php"],
        )
        .unwrap_err();
        assert!(
            matches!(err, LayoutError::SharedDangling { .. })
                && err.to_string().contains("/nonexistent/settings.php"),
            "{err}"
        );
        assert_eq!(names_in(&layout.releases_dir()), ["r1"]);
    }

    #[test]
    fn prune_refuses_bad_ids_before_removing_anything() {
        let (_tmp, layout) = setup();
        layout.ensure_dirs().unwrap();
        fs::create_dir(layout.release_dir("r1")).unwrap();
        fs::create_dir(layout.root().join("precious")).unwrap();
        let err = layout
            .prune(0, &ids(&["r1", "../precious"]), &[])
            .unwrap_err();
        assert!(
            matches!(err, LayoutError::InvalidReleaseId { ref id, .. } if id == "../precious"),
            "{err}"
        );
        assert!(layout.release_dir("r1").exists());
        assert!(layout.root().join("precious").exists());
    }

    /// Issue 14 (speed): a small staged tree is made durable by an fsync of
    /// each of its files and directories, not by a syncfs of the whole
    /// filesystem (every other writer's dirty pages); a large tree, or a
    /// staging that seeded `ROOT/shared`, still gets the one syncfs.
    #[test]
    fn issue14_a_small_tree_is_fsynced_entry_by_entry() {
        let tmp = TempDir::new().unwrap();
        let tree = tmp.path().join("t");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("one"), b"1").unwrap();
        fs::write(tree.join("a/two"), b"2").unwrap();
        fs::write(tree.join("a/b/three"), b"3").unwrap();
        symlink("one", tree.join("link")).unwrap();
        // 3 files and 3 directories (t, a, a/b); the link is t's entry.
        assert_eq!(sync_tree(&tree, false).unwrap(), TreeSync::EachEntry(6));
        assert_eq!(sync_tree(&tree, true).unwrap(), TreeSync::Filesystem);

        let big = tmp.path().join("big");
        fs::create_dir(&big).unwrap();
        for i in 0..FSYNC_EACH_UP_TO {
            fs::write(big.join(format!("f{i}")), b"x").unwrap();
        }
        assert_eq!(sync_tree(&big, false).unwrap(), TreeSync::Filesystem);
    }

    #[test]
    fn clean_staging_removes_only_crash_leftovers() {
        let (_tmp, layout) = setup();
        layout.ensure_dirs().unwrap();
        let releases = layout.releases_dir();
        fs::create_dir_all(releases.join(".staging-r2-10-20/deep")).unwrap();
        fs::write(releases.join(".staging-r2-10-20/deep/f"), b"").unwrap();
        fs::create_dir(releases.join(".removing-r0-10-20")).unwrap();
        fs::create_dir(releases.join("r1")).unwrap();
        symlink("releases/r1", layout.root().join("current.tmp-10-20")).unwrap();
        fs::create_dir(layout.root().join("current.tmp-not-ours")).unwrap();
        let removed = layout.clean_staging().unwrap();
        assert_eq!(
            removed,
            [
                layout.root().join("current.tmp-10-20"),
                releases.join(".removing-r0-10-20"),
                releases.join(".staging-r2-10-20"),
            ]
        );
        assert_eq!(names_in(&releases), ["r1"]);
        assert!(layout.root().join("current.tmp-not-ours").is_dir());
        assert!(layout.clean_staging().unwrap().is_empty());
        assert!(
            AppLayout::new(layout.root().join("missing"))
                .clean_staging()
                .unwrap()
                .is_empty()
        );
    }
}
