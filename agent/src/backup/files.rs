//! Backup engine `files`: the configured paths of a file set as one tar
//! stream through zstd and sha256 (`<name>.tar.zst`), never held in memory.
//!
//! Archive layout: entry `<i>` is the i-th configured path itself (a
//! directory or a single file such as `settings.local.php`) and `<i>/<rel>`
//! is something inside it. Restore maps each index to a target path, so a
//! backup does not depend on the absolute paths it was made from.
//!
//! What is archived, and how:
//! - A configured path that is a symlink is followed (the operator named it;
//!   e.g. `current/sites/default/files -> shared/files`); everything inside
//!   is stored as is: symlinks as symlinks, never followed, wherever they
//!   point (it is the operator's own tree).
//! - Files, directories (empty ones too) and symlinks with mode, owner and
//!   mtime (whole seconds, as in tar). Hard links become separate copies.
//!   Sockets, fifos and devices are skipped: they are runtime objects, not
//!   data.
//! - A file or directory that disappears during the walk is left out (live
//!   trees such as caches change); a file that shrinks while it is read is an
//!   error, since its archived copy would be silently wrong. A file that grows
//!   is archived at its size when it was opened.
//! - Excludes are glob patterns ([`golive_shared::glob`]) matched against the path relative to the
//!   configured path, anchored there: `*` and `?` match within one name
//!   (leading dots included), a `**` component matches any number of
//!   components (also none), a trailing `/` matches directories only. So
//!   `*.tmp` only matches at the top; use `**/*.tmp` for any depth. An
//!   excluded directory is skipped with everything under it.
//!
//! Restore extracts each subtree into a staging sibling of its target (same
//! filesystem), then swaps it in with two renames and removes the previous
//! copy, so a failed restore leaves the target untouched. Entry names that are
//! absolute, contain `..`, or lead through a symlink are refused.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use golive_shared::config::FileSet;
use golive_shared::glob::Globs;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use tar::{Builder, EntryType, Header};

use super::stream::{HashingFile, Tracked, Written, finish_zstd, io_err, zstd_writer};
use super::{BackupError, Progress};

/// Read buffer of a restore.
const READ_BUF: usize = 256 * 1024;
/// File bodies of a dump are read into one buffer of this size and handed
/// to zstd whole: one zstd job's worth per call.
const BODY_BUF: usize = 1024 * 1024;
/// Progress is reported every this many bytes (not per file: trees can
/// hold millions of small files).
const PROGRESS_EVERY: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of regular file content.
    pub bytes: u64,
}

/// The configured paths: absolute as-is, relative joined to the app's `root`.
pub fn resolve(root: &Path, set: &FileSet) -> Vec<PathBuf> {
    set.paths
        .iter()
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                root.join(p)
            }
        })
        .collect()
}

/// Sum of the regular file sizes a [`dump`] would archive; missing paths
/// count 0 (the dump itself reports them).
pub fn estimate(root: &Path, set: &FileSet) -> Result<u64, BackupError> {
    let ex = Globs::new(&set.exclude);
    let mut total = 0u64;
    for top in resolve(root, set) {
        let meta = match fs::metadata(&top) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("cannot read", &top, e)),
        };
        walk(&top, &meta, &ex, &mut |_, _, m| {
            if m.is_file() {
                total += m.len();
            }
            Ok(())
        })?;
    }
    Ok(total)
}

/// Writes `out_dir/<name>.tar.zst`. Every configured path must exist: a
/// missing one is a config error and nothing is written. `progress` gets the
/// file bytes archived so far (comparable with [`estimate`]).
pub fn dump(
    root: &Path,
    set: &FileSet,
    out_dir: &Path,
    level: i32,
    progress: Progress,
) -> Result<(Written, FilesStats), BackupError> {
    let tops = resolve(root, set);
    let mut metas = Vec::with_capacity(tops.len());
    for (j, top) in tops.iter().enumerate() {
        metas.push(top_meta(set, j, top)?);
    }
    let ex = Globs::new(&set.exclude);
    let out = out_dir.join(format!("{}.tar.zst", set.name));
    let mut enc = zstd_writer(HashingFile::create(&out)?, level)?;
    enc.include_checksum(true)
        .map_err(|e| io_err("cannot configure zstd for", &out, e))?;
    // Each multithreaded zstd call has bookkeeping: gather headers and small
    // files before handing them to zstd (docs/bench-backup.md).
    let mut tar = Builder::new(io::BufWriter::with_capacity(ZSTD_FEED, enc));
    tar.follow_symlinks(false);
    let mut stats = FilesStats::default();
    let mut buf = vec![0u8; BODY_BUF];
    let mut done = 0u64;
    let mut reported = 0u64;
    for (i, (top, meta)) in tops.iter().zip(&metas).enumerate() {
        walk(top, meta, &ex, &mut |abs, rel, meta| {
            let name = if rel.as_os_str().is_empty() {
                PathBuf::from(i.to_string())
            } else {
                Path::new(&i.to_string()).join(rel)
            };
            append(
                &mut tar,
                abs,
                &name,
                meta,
                rel.as_os_str().is_empty(),
                &mut Ctx {
                    stats: &mut stats,
                    buf: &mut buf,
                    done: &mut done,
                    reported: &mut reported,
                    progress: &mut *progress,
                },
            )
        })?;
    }
    // finish() before into_inner(): its write error can still be mapped
    // through the output file (ENOSPC -> DiskFull).
    tar.finish()
        .map_err(|e| tar.get_ref().get_ref().get_ref().write_err(e))?;
    let mut feed = tar
        .into_inner()
        .map_err(|e| io_err("cannot finish the archive", &out, e))?;
    feed.flush()
        .map_err(|e| feed.get_ref().get_ref().write_err(e))?;
    let mut enc = feed
        .into_inner()
        .map_err(|e| io_err("cannot finish the archive", &out, e.into_error()))?;
    enc.do_finish().map_err(|e| enc.get_ref().write_err(e))?;
    progress(done);
    Ok((finish_zstd(enc)?, stats))
}

/// Decompresses and reads every entry of a `.tar.zst` to the end (so
/// corruption or truncation anywhere is found); returns "N entries, M bytes".
pub fn verify(file: &Path) -> Result<String, BackupError> {
    let (mut entries, mut bytes) = (0u64, 0u64);
    read_archive(file, &mut |entry| {
        entries += 1;
        bytes += io::copy(entry, &mut io::sink()).map_err(|e| corrupt(file, e))?;
        Ok(())
    })?;
    Ok(format!("{entries} entries, {bytes} bytes"))
}

/// Restores a `.tar.zst` made by [`dump`]: subtree `<i>` replaces
/// `targets[i]` (missing parent directories are created). A target that is a
/// symlink is restored where it points, keeping the link. Nothing is swapped
/// in until the whole archive has been extracted and checked; with several
/// targets the swaps happen one after another.
pub fn restore(file: &Path, targets: &[PathBuf]) -> Result<FilesStats, BackupError> {
    let mut real = Vec::with_capacity(targets.len());
    for t in targets {
        real.push(real_target(t)?);
    }
    let mut staging = Staging(vec![None; real.len()]);
    let mut made_dirs: HashSet<PathBuf> = HashSet::new();
    let mut deferred: Vec<(PathBuf, Attrs)> = Vec::new();
    let mut stats = FilesStats::default();
    let as_root = nix::unistd::geteuid().is_root();
    let mut buf = vec![0u8; READ_BUF];

    read_archive(file, &mut |entry| {
        let name = entry.path().map_err(|e| corrupt(file, e))?.into_owned();
        let (i, rel) = parse_name(file, &name, real.len())?;
        let dest = match (&staging.0[i], rel.as_os_str().is_empty()) {
            (None, true) => {
                let s = sibling(&real[i], "golive-restore")?;
                staging.0[i] = Some(s.clone());
                s
            }
            (Some(_), true) => return Err(bad_archive(file, &name, "appears twice")),
            (None, false) => return Err(bad_archive(file, &name, "comes before its top entry")),
            (Some(s), false) => {
                ensure_parents(file, &name, s, &rel, &mut made_dirs)?;
                s.join(&rel)
            }
        };
        let h = entry.header();
        let attrs = Attrs {
            mode: h.mode().map_err(|e| corrupt(file, e))? & 0o7777,
            mtime: h.mtime().map_err(|e| corrupt(file, e))?,
            owner: if as_root {
                Some((
                    h.uid().map_err(|e| corrupt(file, e))? as u32,
                    h.gid().map_err(|e| corrupt(file, e))? as u32,
                ))
            } else {
                None
            },
        };
        match h.entry_type() {
            EntryType::Directory => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dest)
                    .map_err(|e| io_err("cannot create directory", &dest, e))?;
                made_dirs.insert(dest.clone());
                // Modes and mtimes of directories are set at the end:
                // creating their contents would change the mtime, and a
                // read-only mode would stop the extraction.
                deferred.push((dest, attrs));
                stats.dirs += 1;
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .map_err(|e| io_err("cannot create", &dest, e))?;
                let mut body = Tracked::new(&mut *entry);
                let n = copy_buf(&mut body, &mut f, &mut buf).map_err(|e| {
                    if body.failed {
                        corrupt(file, e)
                    } else {
                        io_err("cannot write", &dest, e)
                    }
                })?;
                set_attrs_file(&f, &dest, &attrs)?;
                stats.files += 1;
                stats.bytes += n;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(file, e))?
                    .ok_or_else(|| bad_archive(file, &name, "is a symlink without a target"))?
                    .into_owned();
                std::os::unix::fs::symlink(&target, &dest)
                    .map_err(|e| io_err("cannot create symlink", &dest, e))?;
                if let Some((uid, gid)) = attrs.owner {
                    std::os::unix::fs::lchown(&dest, Some(uid), Some(gid))
                        .map_err(|e| io_err("cannot change the owner of", &dest, e))?;
                }
                set_mtime(&dest, attrs.mtime, UtimensatFlags::NoFollowSymlink)?;
                stats.symlinks += 1;
            }
            other => {
                return Err(bad_archive(
                    file,
                    &name,
                    &format!("has entry type {other:?}, which golive never writes"),
                ));
            }
        }
        Ok(())
    })?;

    if let Some(i) = staging.0.iter().position(Option::is_none) {
        return Err(BackupError::Invalid(format!(
            "archive {} has no entries for path #{i} ({}) of the {} targets given: the file set's \
             `paths` changed since the backup; restore with the paths the backup was made with",
            file.display(),
            targets[i].display(),
            real.len()
        )));
    }
    for (dir, attrs) in deferred.iter().rev() {
        if let Some((uid, gid)) = attrs.owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| io_err("cannot change the owner of", dir, e))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(attrs.mode))
            .map_err(|e| io_err("cannot set the mode of", dir, e))?;
        set_mtime(dir, attrs.mtime, UtimensatFlags::FollowSymlink)?;
    }

    for (i, target) in real.iter().enumerate() {
        let stage = staging.0[i].clone().expect("checked above");
        let old = sibling(target, "golive-old")?;
        let had = match fs::symlink_metadata(target) {
            Ok(_) => {
                fs::rename(target, &old)
                    .map_err(|e| io_err("cannot move aside the current", target, e))?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("cannot read", target, e)),
        };
        if let Err(e) = fs::rename(&stage, target) {
            if had {
                let _ = fs::rename(&old, target);
            }
            return Err(io_err(
                "cannot move the restored copy into place at",
                target,
                e,
            ));
        }
        staging.0[i] = None;
        if had {
            remove_tree(&old).map_err(|e| {
                io_err(
                    "restored, but cannot remove the previous copy (remove it by hand)",
                    &old,
                    e,
                )
            })?;
        }
    }
    Ok(stats)
}

/// Owner, mode and mtime from a tar header.
#[derive(Clone, Copy)]
struct Attrs {
    mode: u32,
    mtime: u64,
    /// Only restored when running as root (others cannot give files away).
    owner: Option<(u32, u32)>,
}

fn set_attrs_file(f: &File, path: &Path, a: &Attrs) -> Result<(), BackupError> {
    // Owner before mode: chown clears setuid/setgid bits.
    if let Some((uid, gid)) = a.owner {
        std::os::unix::fs::fchown(f, Some(uid), Some(gid))
            .map_err(|e| io_err("cannot change the owner of", path, e))?;
    }
    f.set_permissions(fs::Permissions::from_mode(a.mode))
        .map_err(|e| io_err("cannot set the mode of", path, e))?;
    f.set_modified(UNIX_EPOCH + Duration::from_secs(a.mtime))
        .map_err(|e| io_err("cannot set the mtime of", path, e))
}

fn set_mtime(path: &Path, mtime: u64, flag: UtimensatFlags) -> Result<(), BackupError> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(secs as _, 0),
        flag,
    )
    .map_err(|e| io_err("cannot set the mtime of", path, io::Error::from(e)))
}

/// Splits an entry name into its index and the path inside the target,
/// refusing anything that could land outside the staging directory.
fn parse_name(file: &Path, name: &Path, targets: usize) -> Result<(usize, PathBuf), BackupError> {
    let mut comps = name.components();
    let i = match comps.next() {
        Some(Component::Normal(s)) => {
            let s = s.to_str().unwrap_or("");
            match s.parse::<usize>() {
                Ok(i) if i.to_string() == s => i,
                _ => return Err(bad_archive(file, name, "does not start with a path index")),
            }
        }
        _ => {
            return Err(bad_archive(
                file,
                name,
                "is absolute or starts with `.`/`..`",
            ));
        }
    };
    let mut rel = PathBuf::new();
    for c in comps {
        match c {
            Component::Normal(s) => rel.push(s),
            _ => return Err(bad_archive(file, name, "contains `..` or `.`")),
        }
    }
    if i >= targets {
        return Err(BackupError::Invalid(format!(
            "archive {} has entries for path #{i} but only {targets} targets were given: the file set's \
             `paths` changed since the backup; restore with the paths the backup was made with",
            file.display()
        )));
    }
    Ok((i, rel))
}

/// Makes sure every parent of `stage/rel` is a directory this restore made,
/// creating missing ones; refuses to go through anything else (a symlink
/// from the archive must never redirect later entries outside).
fn ensure_parents(
    file: &Path,
    name: &Path,
    stage: &Path,
    rel: &Path,
    made: &mut HashSet<PathBuf>,
) -> Result<(), BackupError> {
    let mut p = stage.to_path_buf();
    if !made.contains(&p) {
        return Err(bad_archive(
            file,
            name,
            "is inside a path that is not a directory",
        ));
    }
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        p.push(c);
        if made.contains(&p) {
            continue;
        }
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .map_err(|e| io_err("cannot create directory", &p, e))?;
                made.insert(p.clone());
            }
            Ok(_) => return Err(bad_archive(file, name, "goes through a symlink or a file")),
            Err(e) => return Err(io_err("cannot read", &p, e)),
        }
    }
    Ok(())
}

fn bad_archive(file: &Path, name: &Path, what: &str) -> BackupError {
    BackupError::Invalid(format!(
        "archive {}: entry {:?} {what}; the archive was not written by golive or was altered. \
         Nothing was restored; use another backup",
        file.display(),
        name
    ))
}

fn corrupt(file: &Path, e: io::Error) -> BackupError {
    BackupError::Io {
        action: "cannot read the archive (it is corrupt or truncated; use another backup)",
        path: file.to_path_buf(),
        source: e,
    }
}

type Decoder = zstd::stream::read::Decoder<'static, BufReader<File>>;

/// Runs `each` on every entry of a `.tar.zst`, then checks the archive ends
/// with tar's end marker and a complete zstd frame (checksum included).
fn read_archive(
    file: &Path,
    each: &mut dyn FnMut(&mut tar::Entry<'_, Decoder>) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    let f = File::open(file).map_err(|e| io_err("cannot open", file, e))?;
    let dec = Decoder::new(f).map_err(|e| corrupt(file, e))?;
    let mut archive = tar::Archive::new(dec);
    for entry in archive.entries().map_err(|e| corrupt(file, e))? {
        let mut entry = entry.map_err(|e| corrupt(file, e))?;
        each(&mut entry)?;
    }
    // tar stops at the first zero block, or silently at end of input; the
    // second zero block our writer adds must still be there.
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 4096];
    let mut tail = 0usize;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(file, e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(corrupt(
                file,
                io::Error::other("data after the end of the archive"),
            ));
        }
        tail += n;
    }
    if tail == 0 {
        return Err(corrupt(
            file,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends without its end marker",
            ),
        ));
    }
    Ok(())
}

/// `fs::metadata` of a configured path (following a symlink); a missing path
/// is a config error.
fn top_meta(set: &FileSet, j: usize, top: &Path) -> Result<fs::Metadata, BackupError> {
    match fs::metadata(top) {
        Ok(m) if m.is_dir() || m.is_file() => Ok(m),
        Ok(_) => Err(BackupError::Invalid(format!(
            "file set `{}`: {} (paths[{j}] in apps.APP.files) is neither a file nor a directory; fix the config",
            set.name,
            top.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BackupError::Invalid(format!(
            "file set `{}`: {} (paths[{j}] in apps.APP.files) does not exist or is a broken symlink; \
             create it, or remove it from the config",
            set.name,
            top.display()
        ))),
        Err(e) => Err(io_err("cannot read", top, e)),
    }
}

/// Calls `f(abs, rel, lstat)` for the configured path `top` (rel empty,
/// `meta` followed) and, if it is a directory, for everything under it in
/// sorted depth-first order (a directory before its contents), skipping
/// excluded paths, special files and entries that vanish meanwhile. Only
/// one directory's names are held at each level.
fn walk(
    top: &Path,
    meta: &fs::Metadata,
    ex: &Globs,
    f: &mut dyn FnMut(&Path, &Path, &fs::Metadata) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    f(top, Path::new(""), meta)?;
    if !meta.is_dir() {
        return Ok(());
    }
    struct Level {
        abs: PathBuf,
        rel: PathBuf,
        names: std::vec::IntoIter<OsString>,
    }
    let mut stack = match list(top)? {
        Some(names) => vec![Level {
            abs: top.to_path_buf(),
            rel: PathBuf::new(),
            names: names.into_iter(),
        }],
        None => return Ok(()),
    };
    while let Some(level) = stack.last_mut() {
        let Some(name) = level.names.next() else {
            stack.pop();
            continue;
        };
        let abs = level.abs.join(&name);
        let rel = level.rel.join(&name);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("cannot read", &abs, e)),
        };
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) || ex.matches(&rel, ft.is_dir()) {
            continue;
        }
        f(&abs, &rel, &meta)?;
        if ft.is_dir()
            && let Some(names) = list(&abs)?
        {
            stack.push(Level {
                abs,
                rel,
                names: names.into_iter(),
            });
        }
    }
    Ok(())
}

/// Sorted names in `dir` (None if it vanished).
fn list(dir: &Path) -> Result<Option<Vec<OsString>>, BackupError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot list", dir, e)),
    };
    let mut names = Vec::new();
    for e in rd {
        names.push(e.map_err(|e| io_err("cannot list", dir, e))?.file_name());
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(Some(names))
}

struct Ctx<'a, 'p> {
    stats: &'a mut FilesStats,
    /// File bodies are read into this (one allocation per backup).
    buf: &'a mut [u8],
    done: &'a mut u64,
    reported: &'a mut u64,
    progress: &'a mut (dyn FnMut(u64) + 'p),
}

type Out = io::BufWriter<zstd::stream::write::Encoder<'static, HashingFile>>;

/// Bytes buffered between tar and zstd: headers and small files are
/// gathered; a body chunk of this size or more goes to zstd directly.
const ZSTD_FEED: usize = 256 * 1024;

/// Appends one walked path as entry `name`.
fn append(
    tar: &mut Builder<Out>,
    abs: &Path,
    name: &Path,
    meta: &fs::Metadata,
    follow: bool,
    cx: &mut Ctx,
) -> Result<(), BackupError> {
    let mut header = Header::new_gnu();
    let write_err =
        |tar: &Builder<Out>, e: io::Error| tar.get_ref().get_ref().get_ref().write_err(e);
    let ft = meta.file_type();
    if ft.is_dir() {
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        header.set_entry_type(EntryType::Directory);
        header.set_size(0);
        tar.append_data(&mut header, name, io::empty())
            .map_err(|e| write_err(tar, e))?;
        cx.stats.dirs += 1;
    } else if ft.is_symlink() {
        let target = match fs::read_link(abs) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("cannot read symlink", abs, e)),
        };
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        header.set_entry_type(EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, name, &target)
            .map_err(|e| write_err(tar, e))?;
        cx.stats.symlinks += 1;
    } else {
        // O_NOFOLLOW: a file swapped for a symlink since the walk saw it must
        // not smuggle the link's target into the backup. O_NONBLOCK: a file
        // swapped for a fifo must not hang the backup.
        let mut flags = nix::fcntl::OFlag::O_NONBLOCK;
        if !follow {
            flags |= nix::fcntl::OFlag::O_NOFOLLOW;
        }
        let f = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits())
            .open(abs)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
                return Err(changed(abs, "was replaced by a symlink"));
            }
            Err(e) => return Err(io_err("cannot open", abs, e)),
        };
        let meta = f.metadata().map_err(|e| io_err("cannot read", abs, e))?;
        if !meta.is_file() {
            return Err(changed(abs, "is no longer a regular file"));
        }
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_entry_type(EntryType::Regular);
        let size = meta.len();
        header.set_size(size);
        // The tar crate copies bodies 8 KiB at a time through two buffers;
        // it writes the header (and a GNU long-name entry when the name needs
        // one) and we stream the body ourselves, file -> one large buffer ->
        // zstd (docs/bench-backup.md). An empty reader writes no body.
        tar.append_data(&mut header, name, io::empty())
            .map_err(|e| write_err(tar, e))?;
        body(tar, f, size, abs, cx)?;
        cx.stats.files += 1;
        cx.stats.bytes += size;
        if *cx.done - *cx.reported >= PROGRESS_EVERY {
            *cx.reported = *cx.done;
            (cx.progress)(*cx.done);
        }
    }
    Ok(())
}

/// Streams exactly `size` bytes of `f` (the size in the header already
/// written) and the zero padding to the next 512-byte block, counting them
/// into the running total with throttled progress.
fn body(
    tar: &mut Builder<Out>,
    mut f: File,
    size: u64,
    abs: &Path,
    cx: &mut Ctx,
) -> Result<(), BackupError> {
    let mut left = size;
    while left > 0 {
        let want = cx
            .buf
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match f.read(&mut cx.buf[..want]) {
            Ok(0) => {
                return Err(changed(
                    abs,
                    &format!("shrank while it was archived ({left} of {size} bytes missing)"),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("cannot read", abs, e)),
        };
        tar.get_mut()
            .write_all(&cx.buf[..n])
            .map_err(|e| tar.get_ref().get_ref().get_ref().write_err(e))?;
        left -= n as u64;
        *cx.done += n as u64;
        if *cx.done - *cx.reported >= PROGRESS_EVERY {
            *cx.reported = *cx.done;
            (cx.progress)(*cx.done);
        }
    }
    let pad = (BLOCK - size % BLOCK) % BLOCK;
    tar.get_mut()
        .write_all(&[0u8; BLOCK as usize][..pad as usize])
        .map_err(|e| tar.get_ref().get_ref().get_ref().write_err(e))
}

/// tar's block size: every entry's body is padded to a multiple of it.
const BLOCK: u64 = 512;

fn changed(path: &Path, what: &str) -> BackupError {
    BackupError::Invalid(format!(
        "{} {what} during the backup; run the backup again (ideally with the app's writers paused)",
        path.display()
    ))
}

/// Where a target really is: a symlink target is restored where it points,
/// so the link itself stays.
fn real_target(t: &Path) -> Result<PathBuf, BackupError> {
    let real = match fs::symlink_metadata(t) {
        Ok(m) if m.file_type().is_symlink() => match fs::canonicalize(t) {
            Ok(p) => p,
            Err(_) => {
                let link = fs::read_link(t).map_err(|e| io_err("cannot read symlink", t, e))?;
                t.parent().unwrap_or(Path::new("/")).join(link)
            }
        },
        Ok(_) => t.to_path_buf(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => t.to_path_buf(),
        Err(e) => return Err(io_err("cannot read", t, e)),
    };
    if let Some(parent) = real.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err("cannot create directory", parent, e))?;
    }
    Ok(real)
}

/// `<t>.<what>-<pid>-<nanos>` next to `t` (same filesystem, so renames work).
fn sibling(t: &Path, what: &str) -> Result<PathBuf, BackupError> {
    let name = t.file_name().ok_or_else(|| {
        BackupError::Invalid(format!(
            "restore target {} has no file name; fix the file set's `paths` in apps.APP.files",
            t.display()
        ))
    })?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut s = name.to_os_string();
    s.push(format!(".{what}-{}-{nanos}", std::process::id()));
    Ok(t.with_file_name(s))
}

/// Removes a file, symlink or tree; read-only directories are made writable
/// first if plain removal is refused.
fn remove_tree(p: &Path) -> io::Result<()> {
    let m = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !m.is_dir() {
        return fs::remove_file(p);
    }
    if fs::remove_dir_all(p).is_ok() {
        return Ok(());
    }
    make_writable(p);
    fs::remove_dir_all(p)
}

fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

/// Staging paths not yet swapped in; removed on drop (every error path).
struct Staging(Vec<Option<PathBuf>>);

impl Drop for Staging {
    fn drop(&mut self) {
        for p in self.0.iter().flatten() {
            let _ = remove_tree(p);
        }
    }
}

/// Copies with a reused buffer (one allocation per restore, not per file).
fn copy_buf(r: &mut dyn Read, w: &mut dyn Write, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn set(paths: &[&str], exclude: &[&str]) -> FileSet {
        FileSet {
            name: "site".into(),
            paths: paths.iter().map(PathBuf::from).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn touch(path: &Path, secs: u64) {
        set_mtime(path, secs, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    /// `len` pseudo-random bytes (xorshift64), written in chunks.
    fn random_file(path: &Path, len: usize) {
        let mut f = File::create(path).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = Vec::with_capacity(1 << 16);
        let mut left = len;
        while left > 0 {
            chunk.clear();
            while chunk.len() < (1 << 16).min(left) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.extend_from_slice(&x.to_le_bytes());
            }
            chunk.truncate((1 << 16).min(left));
            f.write_all(&chunk).unwrap();
            left -= chunk.len();
        }
    }

    /// Everything that must survive a round trip, by relative path.
    fn snapshot(top: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let abs = if rel.as_os_str().is_empty() {
                top.to_path_buf()
            } else {
                top.join(&rel)
            };
            let m = fs::symlink_metadata(&abs).unwrap();
            let what = if m.file_type().is_symlink() {
                format!(
                    "link {} {}",
                    fs::read_link(&abs).unwrap().display(),
                    m.mtime()
                )
            } else if m.is_dir() {
                for e in fs::read_dir(&abs).unwrap() {
                    todo.push(rel.join(e.unwrap().file_name()));
                }
                format!("dir {:o} {}", m.mode() & 0o7777, m.mtime())
            } else if m.is_file() {
                let (n, sha) = super::super::stream::hash_file(&abs).unwrap();
                format!("file {:o} {} {n} {sha}", m.mode() & 0o7777, m.mtime())
            } else {
                continue; // sockets are not archived
            };
            out.insert(rel, what);
        }
        out
    }

    /// A tree with nested and empty directories, symlinks (relative and
    /// pointing outside), modes, mtimes, a 20 MB file and a socket.
    fn make_tree(root: &Path) -> (PathBuf, PathBuf) {
        let up = root.join("shared/uploads");
        write(&up.join("a.txt"), b"secret", 0o600);
        write(&up.join("bin/run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
        write(&up.join("nested/deep/x.dat"), b"deep data", 0o644);
        fs::create_dir_all(up.join("empty")).unwrap();
        random_file(&up.join("big.bin"), 20 << 20);
        symlink("nested/deep/x.dat", up.join("link-rel")).unwrap();
        symlink("/etc/hostname", up.join("link-out")).unwrap();
        // Past the 100-byte tar name field (GNU long name / long link).
        let long = "n".repeat(150);
        write(&up.join("nested").join(&long), b"L", 0o640);
        symlink(format!("deep/{long}/../x.dat"), up.join("nested/long-link")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(up.join("sock")).unwrap();
        touch(&up.join("a.txt"), 1_600_000_000);
        touch(&up.join("link-rel"), 1_500_000_000);
        for d in ["nested/deep", "nested", "empty", "bin", ""] {
            touch(&up.join(d), 1_400_000_000);
        }
        let settings = root.join("settings.local.php");
        write(&settings, b"<?php $db = 'x';\n", 0o444);
        (up, settings)
    }

    #[test]
    fn round_trip_tree_and_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let (up, settings) = make_tree(&root);
        let s = set(&["shared/uploads", "settings.local.php"], &[]);
        assert_eq!(resolve(&root, &s), vec![up.clone(), settings.clone()]);
        let before = (snapshot(&up), snapshot(&settings));

        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let mut last = 0;
        let (w, stats) = dump(&root, &s, &out, 3, &mut |n| last = n).unwrap();
        assert_eq!(w.path, out.join("site.tar.zst"));
        let content = 6 + 18 + 9 + (20 << 20) + 1 + 17;
        assert_eq!(
            stats,
            FilesStats {
                files: 6,
                dirs: 5,
                symlinks: 3,
                bytes: content
            }
        );
        assert_eq!(last, content);
        assert_eq!(estimate(&root, &s).unwrap(), content);
        assert_eq!(
            verify(&w.path).unwrap(),
            format!("14 entries, {content} bytes")
        );

        // Into fresh targets (missing parents are created).
        let other = dir.path().join("other");
        let targets = vec![other.join("a/uploads"), other.join("b/settings.php")];
        assert_eq!(restore(&w.path, &targets).unwrap(), stats);
        assert_eq!((snapshot(&targets[0]), snapshot(&targets[1])), before);

        // In place over a modified tree: replaced, nothing left beside it.
        write(&up.join("a.txt"), b"changed", 0o644);
        write(&up.join("new.txt"), b"new", 0o644);
        fs::remove_file(up.join("nested/deep/x.dat")).unwrap();
        fs::write(&settings, b"changed").unwrap_or_else(|_| {
            fs::set_permissions(&settings, fs::Permissions::from_mode(0o644)).unwrap();
            fs::write(&settings, b"changed").unwrap();
        });
        restore(&w.path, &resolve(&root, &s)).unwrap();
        assert_eq!((snapshot(&up), snapshot(&settings)), before);
        for d in [up.parent().unwrap(), root.as_path()] {
            for e in fs::read_dir(d).unwrap() {
                let n = e.unwrap().file_name();
                assert!(
                    !n.to_string_lossy().contains("golive-"),
                    "left behind: {n:?}"
                );
            }
        }
    }

    #[test]
    fn excludes_in_dump_and_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("files");
        for p in [
            "a.tmp",
            "sub/b.tmp",
            "cache/x",
            "sub/cache",
            "x.log",
            "sub/deep/y.log",
            "keep.txt",
        ] {
            write(&top.join(p), b"12345", 0o644);
        }
        let s = set(&[top.to_str().unwrap()], &["*.tmp", "cache/", "**/*.log"]);
        assert_eq!(estimate(Path::new("/unused"), &s).unwrap(), 15);
        let (w, stats) = dump(Path::new("/unused"), &s, dir.path(), 1, &mut |_| {}).unwrap();
        assert_eq!((stats.files, stats.dirs), (3, 3));
        let back = dir.path().join("back");
        restore(&w.path, std::slice::from_ref(&back)).unwrap();
        let got: Vec<_> = snapshot(&back).into_keys().collect();
        let want: Vec<PathBuf> = ["", "keep.txt", "sub", "sub/b.tmp", "sub/cache", "sub/deep"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn verify_and_restore_refuse_a_truncated_archive() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("files");
        random_file(&top.join("r.bin").tap_parent(), 1 << 20);
        write(&top.join("small"), b"x", 0o644);
        let s = set(&[top.to_str().unwrap()], &[]);
        let (w, _) = dump(Path::new("/"), &s, dir.path(), 3, &mut |_| {}).unwrap();
        let before = snapshot(&top);
        let len = fs::metadata(&w.path).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&w.path).unwrap();
        f.set_len(len / 2).unwrap();
        assert!(matches!(verify(&w.path), Err(BackupError::Io { .. })));
        write(&top.join("small"), b"modified", 0o644);
        let modified = snapshot(&top);
        assert_ne!(before, modified);
        assert!(restore(&w.path, std::slice::from_ref(&top)).is_err());
        assert_eq!(snapshot(&top), modified, "target must be untouched");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no staging left"
        );
    }

    trait TapParent {
        fn tap_parent(self) -> Self;
    }
    impl TapParent for PathBuf {
        fn tap_parent(self) -> Self {
            fs::create_dir_all(self.parent().unwrap()).unwrap();
            self
        }
    }

    /// Name, type, body (or symlink target) of a raw tar entry.
    type Raw<'a> = (&'a [u8], EntryType, &'a [u8]);

    /// A zstd tar from raw headers (the tar crate refuses to write `..`).
    fn raw_archive(path: &Path, entries: &[Raw]) {
        let mut tar = Vec::new();
        for (name, kind, data) in entries {
            let mut h = Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            if *kind == EntryType::Symlink {
                h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
                h.set_size(0);
            } else {
                h.set_size(data.len() as u64);
            }
            h.set_cksum();
            tar.extend_from_slice(h.as_bytes());
            if *kind != EntryType::Symlink {
                tar.extend_from_slice(data);
                tar.resize(tar.len().div_ceil(512) * 512, 0);
            }
        }
        tar.resize(tar.len() + 1024, 0);
        fs::write(path, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    }

    #[test]
    fn verify_needs_the_end_marker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tar.zst");
        raw_archive(&file, &[(b"0", EntryType::Regular, b"data")]);
        assert_eq!(verify(&file).unwrap(), "1 entries, 4 bytes");
        let mut tar = zstd::decode_all(File::open(&file).unwrap()).unwrap();
        tar.truncate(tar.len() - 1024);
        fs::write(&file, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        match verify(&file) {
            Err(BackupError::Io { source, .. }) => {
                assert!(source.to_string().contains("end marker"), "{source}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn restore_refuses_escaping_entries() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t/files");
        write(&target.join("keep"), b"keep", 0o644);
        let before = snapshot(&target);
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let link = format!("{}", outside.display());
        let cases: Vec<Vec<Raw>> = vec![
            vec![
                (b"0/", EntryType::Directory, b""),
                (b"0/../evil", EntryType::Regular, b"evil"),
            ],
            vec![
                (b"0/", EntryType::Directory, b""),
                (b"/abs/evil", EntryType::Regular, b"evil"),
            ],
            vec![
                (b"0/", EntryType::Directory, b""),
                (b"x/evil", EntryType::Regular, b"evil"),
            ],
            vec![
                (b"0/", EntryType::Directory, b""),
                (b"0/l", EntryType::Symlink, link.as_bytes()),
                (b"0/l/evil", EntryType::Regular, b"evil"),
            ],
            vec![
                (b"0/", EntryType::Directory, b""),
                (b"1/evil", EntryType::Regular, b"evil"),
            ],
            vec![
                (b"0/", EntryType::Directory, b""),
                (b"0/dev", EntryType::Char, b""),
            ],
        ];
        for (k, entries) in cases.iter().enumerate() {
            let file = dir.path().join(format!("bad{k}.tar.zst"));
            raw_archive(&file, entries);
            match restore(&file, std::slice::from_ref(&target)) {
                Err(BackupError::Invalid(m)) => {
                    assert!(m.contains(&file.display().to_string()), "{m}")
                }
                other => panic!("case {k}: {other:?}"),
            }
            assert_eq!(snapshot(&target), before, "case {k}");
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "case {k}");
            assert!(!dir.path().join("t/evil").exists() && !dir.path().join("evil").exists());
            assert_eq!(
                fs::read_dir(dir.path().join("t")).unwrap().count(),
                1,
                "case {k}: staging left"
            );
        }
    }

    #[test]
    fn config_errors_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write(&root.join("present/f"), b"f", 0o644);
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        // A missing configured path.
        let s = set(&["present", "missing/settings.php"], &[]);
        match dump(&root, &s, &out, 3, &mut |_| {}) {
            Err(BackupError::Invalid(m)) => {
                assert!(
                    m.contains("missing/settings.php") && m.contains("apps.APP.files"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(estimate(&root, &s).unwrap(), 1);
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
        // An output directory where the file cannot be created.
        let s = set(&["present"], &[]);
        let gone = dir.path().join("gone");
        match dump(&root, &s, &gone, 3, &mut |_| {}) {
            Err(BackupError::Io { path, .. }) => assert_eq!(path, gone.join("site.tar.zst")),
            other => panic!("{other:?}"),
        }
        assert!(!gone.exists());
        // A backup of two paths restored with one target: the config changed.
        let s = set(&["present", "present/f"], &[]);
        let (w, _) = dump(&root, &s, &out, 3, &mut |_| {}).unwrap();
        let t = dir.path().join("t");
        match restore(&w.path, std::slice::from_ref(&t)) {
            Err(BackupError::Invalid(m)) => assert!(m.contains("#1"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!t.exists());
        match restore(
            &w.path,
            &[t.clone(), dir.path().join("u"), dir.path().join("v")],
        ) {
            Err(BackupError::Invalid(m)) => assert!(m.contains("#2"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "nothing staged or restored"
        );
    }
}
