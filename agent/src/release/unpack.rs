//! Safe unpacking of a release artifact (tar, tar.gz or tar.zst) into a fresh
//! directory, enforcing SPEC §3 entry by entry while streaming: no absolute
//! paths, no `..`, no link leaving the release, size and entry-count limits.
//!
//! # Policy
//!
//! - **Paths** are taken from `Entry::path`, so GNU long names and pax `path`
//!   records count. `.` components are dropped; `/…` and any `..` are refused.
//! - **Never write through a symlink.** Every existing parent of an entry must be
//!   a real directory: an archive with `dir -> sub` followed by `dir/file` is
//!   refused, not followed, even though `sub` is inside. Honest tools archive a
//!   link and its target's contents separately, so only crafted archives hit
//!   this, and refusing is simpler to prove safe than re-resolving each link.
//!   The last component is never opened through a link either: a later entry
//!   with the same name unlinks the old one and creates a new file.
//! - **Control characters** (C0 such as newline, tab and CR; DEL; C1) are
//!   refused in member names and link targets: a name with a newline would
//!   go live and then split every log line, listing and hook argument that
//!   shows it (issue 11). Bytes that are not UTF-8 are read as Latin-1, where
//!   0x80-0x9f are the C1 controls.
//! - **Symlink targets** must be relative and stay inside the release when
//!   resolved from the link's own directory. They must also have the shape
//!   `../../name/name`: `..` only at the front. `x/b -> ..` followed by
//!   `x/a -> b/../..` looks inside lexically but leaves the release once the
//!   kernel follows `b`; with `..` only at the front, each `..` climbs a real
//!   directory and every link lands inside by induction.
//! - **Hard links** name an entry unpacked earlier, by a plain relative path. A
//!   hard link to a symlink is re-checked from the new link's directory.
//! - **Modes**: permission bits are kept, setuid/setgid/sticky dropped.
//!   Directories always keep `u+rwx` so the agent can build into the release
//!   and prune it later; permission rules for the app run as a later step.
//!   File and directory mtimes are kept; symlink times are not (nothing reads
//!   them).
//! - **Limits**: entries are counted, declared sizes are summed before any data
//!   is read, file bytes are counted again while written, and the decompressed
//!   stream as a whole is capped, because the `tar` crate buffers pax and GNU
//!   long-name records in memory before we see the entry they describe.
//! - **Failure** removes `dest` entirely: no half-unpacked release is left.
//!
//! `dest` is created here and nothing else writes into it while we work, so
//! checking a path and then creating it is not a race worth closing with
//! `openat` gymnastics.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;
use golive_shared::protocol::ErrorCode;
use nix::fcntl::OFlag;
use tar::{Archive, Entry, EntryType, Header};

/// Caps on what one archive may unpack to (`limits.max_unpacked_bytes` and
/// `limits.max_archive_entries` in the agent config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Entries of any kind, directories and links included.
    pub max_entries: u64,
}

impl From<&golive_shared::config::Limits> for UnpackLimits {
    fn from(limits: &golive_shared::config::Limits) -> Self {
        UnpackLimits {
            max_bytes: limits.max_unpacked_bytes,
            max_entries: limits.max_archive_entries,
        }
    }
}

/// What an unpack produced, for progress events and the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnpackStats {
    /// Archive entries seen, of every kind.
    pub entries: u64,
    /// Regular files written (hard links not included).
    pub files: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Why an archive was not unpacked. `dest` no longer exists when this is
/// returned, except for [`UnpackError::DestinationExists`], where it is not ours.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "archive entry {entry:?} has an absolute path; rebuild the artifact with paths relative to the release root (e.g. `tar -C build -czf app.tar.gz .`)"
    )]
    AbsolutePath { entry: String },
    #[error(
        "archive entry {entry:?} has a `..` component; rebuild the artifact so every path stays inside the release root"
    )]
    ParentTraversal { entry: String },
    #[error(
        "archive entry {entry:?} has the control character {what} in its name, which would reach file listings, logs and hooks as it is; rename the file so its name holds no newline, tab or other control character and rebuild the artifact"
    )]
    ControlCharacter { entry: String, what: String },
    #[error(
        "link {entry:?} -> {target:?} has the control character {what} in its target; point the link at a name without newlines, tabs or other control characters and rebuild the artifact"
    )]
    LinkControlCharacter {
        entry: String,
        target: String,
        what: String,
    },
    #[error(
        "link {entry:?} -> {target:?} points outside the release directory; make it a relative link to a path inside the release, or ship the file itself"
    )]
    LinkEscapes { entry: String, target: String },
    #[error(
        "symlink {entry:?} -> {target:?} uses `..` after a directory name, which can leave the release through another link; write the target as leading `../` steps followed by names"
    )]
    LinkNotNormalised { entry: String, target: String },
    #[error(
        "archive entry {entry:?} would be written through the symlink {link:?} unpacked earlier; store it under the link's target directory instead"
    )]
    ThroughSymlink { entry: String, link: String },
    #[error(
        "archive entry {entry:?} clashes with {existing:?} unpacked earlier (a directory cannot become a file, nor a file hold entries); rebuild the artifact without conflicting paths"
    )]
    Conflict { entry: String, existing: String },
    #[error(
        "archive entry {entry:?} is a {kind}, which a release may not contain; only files, directories, symlinks and hard links are unpacked, remove it from the artifact"
    )]
    UnsupportedEntry { entry: String, kind: String },
    #[error(
        "archive has more than {limit} entries; raise `limits.max_archive_entries` in the agent config or ship fewer files"
    )]
    TooManyEntries { limit: u64 },
    #[error(
        "archive unpacks to more than {limit} bytes; raise `limits.max_unpacked_bytes` in the agent config or shrink the artifact"
    )]
    TooLarge { limit: u64 },
    #[error(
        "{} already exists; unpack only into a new directory (remove the leftover or pick another release id)",
        path.display()
    )]
    DestinationExists { path: PathBuf },
    #[error(
        "archive is damaged or not a tar, tar.gz or tar.zst: {detail}; rebuild and upload it again"
    )]
    Corrupt { detail: String },
}

impl UnpackError {
    /// The class of this failure, from which the job's `error_code` and the
    /// controller's exit code come (issue 14): an I/O fault on the host
    /// (`Internal`, exit 1), an archive over a configured limit
    /// (`TooLarge`), else what the archive holds, the operator's to fix
    /// (`BadRequest`); every one exit 2.
    pub fn code(&self) -> ErrorCode {
        use UnpackError as E;
        match self {
            E::Io { .. } => ErrorCode::Internal,
            E::TooManyEntries { .. } | E::TooLarge { .. } => ErrorCode::TooLarge,
            E::AbsolutePath { .. }
            | E::ParentTraversal { .. }
            | E::ControlCharacter { .. }
            | E::LinkControlCharacter { .. }
            | E::LinkEscapes { .. }
            | E::LinkNotNormalised { .. }
            | E::ThroughSymlink { .. }
            | E::Conflict { .. }
            | E::UnsupportedEntry { .. }
            | E::DestinationExists { .. }
            | E::Corrupt { .. } => ErrorCode::BadRequest,
        }
    }
}

/// Unpacks `archive` into `dest`, which must not exist yet and is created.
///
/// The format is sniffed from magic bytes (gzip `1f 8b`, zstd `28 b5 2f fd`,
/// else plain tar) and the archive is streamed, never held in memory. See the
/// module docs for what is refused. On any error `dest` is removed.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let file = File::open(archive).map_err(io_err("open archive", archive))?;
    match fs::symlink_metadata(dest) {
        Ok(_) => {
            return Err(UnpackError::DestinationExists {
                path: dest.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", dest)(e)),
    }
    if let Some(parent) = dest.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
    }
    DirBuilder::new().mode(0o755).create(dest).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            UnpackError::DestinationExists {
                path: dest.to_owned(),
            }
        } else {
            io_err("create directory", dest)(e)
        }
    })?;

    let result = Unpacker::new(dest, limits).run(file, archive);
    if result.is_err() {
        // The unpack error is what the operator needs; if removal fails too, the
        // leftover sits under a staging name that `AppLayout::clean_staging`
        // removes at the next start.
        let _ = super::layout::remove_tree(dest);
    }
    result
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UnpackError {
    let path = path.to_owned();
    move |source| UnpackError::Io {
        action,
        path,
        source,
    }
}

fn corrupt(detail: String) -> UnpackError {
    UnpackError::Corrupt { detail }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    Gzip,
    Zstd,
}

fn sniff(file: &mut File) -> io::Result<Format> {
    let mut magic = Vec::with_capacity(4);
    Read::by_ref(file).take(4).read_to_end(&mut magic)?;
    file.rewind()?;
    Ok(match magic.as_slice() {
        [0x1f, 0x8b, ..] => Format::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Format::Zstd,
        _ => Format::Tar,
    })
}

/// Header and long-name bytes allowed per entry on top of file content. Real
/// archives need about 1 KiB (header, padding, maybe a long name); the cap only
/// has to stop a compressed stream from expanding without bound.
const METADATA_PER_ENTRY: u64 = 16 * 1024;
/// Slack for the end-of-archive blocks and record padding.
const METADATA_FIXED: u64 = 1024 * 1024;

fn stream_budget(limits: &UnpackLimits) -> u64 {
    limits
        .max_bytes
        .saturating_add(
            limits
                .max_entries
                .saturating_add(1)
                .saturating_mul(METADATA_PER_ENTRY),
        )
        .saturating_add(METADATA_FIXED)
}

/// Caps the decompressed stream. `tripped` lets the caller tell "over budget"
/// from damage, since the `tar` crate may wrap our error in its own.
struct StreamBudget<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for StreamBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // Exactly at the budget is fine if the stream ends here.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped.set(true);
                    Err(io::Error::other(
                        "decompressed archive exceeds the unpack budget",
                    ))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
enum CopyError {
    Read(io::Error),
    Write(io::Error),
    OverCap,
}

/// Copies until `from` ends, failing before writing the byte that would take
/// the total past `cap`: the byte guard does not trust declared sizes.
fn copy_capped(
    from: &mut impl Read,
    to: &mut impl Write,
    cap: u64,
    buf: &mut [u8],
) -> Result<u64, CopyError> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        total += n as u64;
        if total > cap {
            return Err(CopyError::OverCap);
        }
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

/// The entry's path relative to the release root, with `.` dropped.
fn relative_path(path: &Path, entry: &str) -> Result<PathBuf, UnpackError> {
    let mut rel = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::ParentTraversal {
                    entry: entry.to_owned(),
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::AbsolutePath {
                    entry: entry.to_owned(),
                });
            }
        }
    }
    Ok(rel)
}

/// Checks a symlink at `rel` (relative to the release root) pointing at
/// `target`; see the module docs for why `..` may only lead.
fn check_symlink_target(rel: &Path, target: &Path, entry: &str) -> Result<(), UnpackError> {
    let shown = || target.to_string_lossy().into_owned();
    if target.as_os_str().is_empty() {
        return Err(corrupt(format!("symlink {entry:?} has an empty target")));
    }
    let mut depth = rel.components().count().saturating_sub(1);
    let mut named = false;
    for part in target.components() {
        match part {
            Component::CurDir => {}
            Component::Normal(_) => named = true,
            Component::ParentDir if named => {
                return Err(UnpackError::LinkNotNormalised {
                    entry: entry.to_owned(),
                    target: shown(),
                });
            }
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::LinkEscapes {
                    entry: entry.to_owned(),
                    target: shown(),
                });
            }
        }
    }
    Ok(())
}

fn describe(kind: EntryType) -> String {
    match kind {
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "fifo (named pipe)".to_owned(),
        EntryType::GNUSparse => "GNU sparse file".to_owned(),
        other => format!("entry of tar type {:?}", other.as_byte() as char),
    }
}

/// Permission bits and mtime from a header.
fn mode_and_mtime(header: &Header, entry: &str) -> Result<(u32, SystemTime), UnpackError> {
    let mode = header
        .mode()
        .map_err(|e| corrupt(format!("entry {entry:?} has a bad mode field: {e}")))?;
    let mtime = header
        .mtime()
        .ok()
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .ok_or_else(|| corrupt(format!("entry {entry:?} has a bad mtime field")))?;
    Ok((mode & 0o777, mtime))
}

struct Unpacker<'a> {
    dest: &'a Path,
    limits: &'a UnpackLimits,
    stats: UnpackStats,
    /// Sum of every entry's declared size, checked before its data is read.
    declared: u64,
    /// Directory modes and mtimes, applied last: a read-only directory must
    /// still receive its entries, and each entry bumps its directory's mtime.
    dirs: BTreeMap<PathBuf, (u32, SystemTime)>,
    buf: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    fn new(dest: &'a Path, limits: &'a UnpackLimits) -> Self {
        Unpacker {
            dest,
            limits,
            stats: UnpackStats::default(),
            declared: 0,
            dirs: BTreeMap::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    fn run(mut self, mut file: File, archive: &Path) -> Result<UnpackStats, UnpackError> {
        let format = sniff(&mut file).map_err(io_err("read archive", archive))?;
        let decoded: Box<dyn Read> = match format {
            Format::Tar => Box::new(BufReader::new(file)),
            // Multi-member: pigz and concatenated gzip files are valid tar.gz.
            Format::Gzip => Box::new(MultiGzDecoder::new(BufReader::new(file))),
            Format::Zstd => Box::new(
                zstd::stream::read::Decoder::new(file)
                    .map_err(io_err("start the zstd decoder for", archive))?,
            ),
        };
        let tripped = Rc::new(Cell::new(false));
        let mut tar = Archive::new(StreamBudget {
            inner: decoded,
            left: stream_budget(self.limits),
            tripped: Rc::clone(&tripped),
        });
        let limit = self.limits.max_bytes;
        let stream_err = |e: io::Error| {
            if tripped.get() {
                UnpackError::TooLarge { limit }
            } else {
                corrupt(format!("{}: {e}", archive.display()))
            }
        };

        for entry in tar.entries().map_err(stream_err)? {
            let mut entry = entry.map_err(stream_err)?;
            self.entry(&mut entry, &stream_err)?;
        }
        if self.stats.entries == 0 {
            return Err(corrupt(format!("{} holds no entries", archive.display())));
        }
        self.finish_dirs()?;
        Ok(self.stats)
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        stream_err: &dyn Fn(io::Error) -> UnpackError,
    ) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        self.declared = self.declared.saturating_add(entry.size());
        if self.declared > self.limits.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Archive-wide metadata (`git archive` stores the commit id here).
            return Ok(());
        }
        let raw_name = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        if let Some(what) = control_char(&raw_name) {
            return Err(UnpackError::ControlCharacter { entry: name, what });
        }
        drop(raw_name);
        let path = entry
            .path()
            .map_err(|e| corrupt(format!("entry {name:?} has an unreadable path: {e}")))?;
        let rel = relative_path(&path, &name)?;
        if rel.as_os_str().is_empty() && !kind.is_dir() {
            return Err(corrupt(format!(
                "entry {name:?} names the release root but is not a directory"
            )));
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => self.file(entry, &rel, &name, stream_err),
            EntryType::Directory => self.dir(entry.header(), &rel, &name),
            EntryType::Symlink => self.symlink(entry, &rel, &name),
            EntryType::Link => self.hard_link(entry, &rel, &name),
            other => Err(UnpackError::UnsupportedEntry {
                entry: name,
                kind: describe(other),
            }),
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        rel: &Path,
        name: &str,
        stream_err: &dyn Fn(io::Error) -> UnpackError,
    ) -> Result<(), UnpackError> {
        let (mode, mtime) = mode_and_mtime(entry.header(), name)?;
        let declared = entry.size();
        let target = self.prepare(rel, name, false)?;
        // create_new is O_EXCL: it refuses even a dangling symlink in the way.
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .map_err(io_err("create", &target))?;
        let cap = self.limits.max_bytes - self.stats.bytes;
        let written = match copy_capped(entry, &mut out, cap, &mut self.buf) {
            Ok(n) => n,
            Err(CopyError::OverCap) => {
                return Err(UnpackError::TooLarge {
                    limit: self.limits.max_bytes,
                });
            }
            Err(CopyError::Read(e)) => return Err(stream_err(e)),
            Err(CopyError::Write(e)) => return Err(io_err("write", &target)(e)),
        };
        self.stats.bytes += written;
        if written != declared {
            return Err(corrupt(format!(
                "entry {name:?} declares {declared} bytes but the archive holds {written}"
            )));
        }
        out.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err("set the mode of", &target))?;
        out.set_modified(mtime)
            .map_err(io_err("set the mtime of", &target))?;
        self.stats.files += 1;
        Ok(())
    }

    fn dir(&mut self, header: &Header, rel: &Path, name: &str) -> Result<(), UnpackError> {
        let (mode, mtime) = mode_and_mtime(header, name)?;
        if !rel.as_os_str().is_empty() {
            self.prepare(rel, name, true)?;
        }
        self.dirs.insert(rel.to_owned(), (mode, mtime));
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        rel: &Path,
        name: &str,
    ) -> Result<(), UnpackError> {
        let target = link_name(entry, name)?;
        check_symlink_target(rel, &target, name)?;
        let path = self.prepare(rel, name, false)?;
        std::os::unix::fs::symlink(&target, &path).map_err(io_err("create symlink", &path))
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        rel: &Path,
        name: &str,
    ) -> Result<(), UnpackError> {
        let target = link_name(entry, name)?;
        let escapes = || UnpackError::LinkEscapes {
            entry: name.to_owned(),
            target: target.to_string_lossy().into_owned(),
        };
        let source_rel = match relative_path(&target, name) {
            Ok(p) if !p.as_os_str().is_empty() => p,
            _ => return Err(escapes()),
        };
        let missing = || {
            corrupt(format!(
                "hard link {name:?} -> {:?}: the target is not an earlier file in the archive",
                target.to_string_lossy()
            ))
        };
        if source_rel == rel {
            return Err(missing());
        }
        if !self.check_parents(&source_rel, name, false)? {
            return Err(missing());
        }
        let source = self.dest.join(&source_rel);
        let meta = match fs::symlink_metadata(&source) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(io_err("inspect", &source)(e)),
        };
        if meta.is_dir() {
            return Err(UnpackError::UnsupportedEntry {
                entry: name.to_owned(),
                kind: "hard link to a directory".to_owned(),
            });
        }
        if meta.file_type().is_symlink() {
            // The linked symlink keeps its text but now lives in another
            // directory, where that text may resolve elsewhere.
            let text = fs::read_link(&source).map_err(io_err("read symlink", &source))?;
            check_symlink_target(rel, &text, name)?;
        }
        let path = self.prepare(rel, name, false)?;
        // std's hard_link uses linkat without AT_SYMLINK_FOLLOW: a symlink
        // source is linked itself, never followed.
        fs::hard_link(&source, &path).map_err(io_err("create hard link", &path))
    }

    /// Makes `rel` ready to be created: parents exist as real directories, and
    /// a non-directory already at `rel` is unlinked (a later entry wins, and
    /// unlinking never touches what a symlink or another hard link points to).
    /// An existing directory stays when a directory is wanted.
    fn prepare(&self, rel: &Path, name: &str, want_dir: bool) -> Result<PathBuf, UnpackError> {
        self.check_parents(rel, name, true)?;
        let path = self.dest.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && want_dir => return Ok(path),
            Ok(m) if m.is_dir() => {
                return Err(UnpackError::Conflict {
                    entry: name.to_owned(),
                    existing: rel.to_string_lossy().into_owned(),
                });
            }
            Ok(_) => fs::remove_file(&path).map_err(io_err("replace", &path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
        if want_dir {
            DirBuilder::new()
                .mode(0o755)
                .create(&path)
                .map_err(io_err("create directory", &path))?;
        }
        Ok(path)
    }

    /// Checks that every parent of `rel` inside the release is a real directory,
    /// creating missing ones when `create`; returns `false` if one is missing
    /// and `create` is off.
    fn check_parents(&self, rel: &Path, name: &str, create: bool) -> Result<bool, UnpackError> {
        let mut parents = rel.components();
        parents.next_back();
        let mut here = self.dest.to_path_buf();
        for part in parents {
            here.push(part);
            let shown = || {
                here.strip_prefix(self.dest)
                    .unwrap_or(&here)
                    .to_string_lossy()
                    .into_owned()
            };
            match fs::symlink_metadata(&here) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::ThroughSymlink {
                        entry: name.to_owned(),
                        link: shown(),
                    });
                }
                Ok(_) => {
                    return Err(UnpackError::Conflict {
                        entry: name.to_owned(),
                        existing: shown(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&here)
                        .map_err(io_err("create directory", &here))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_err("inspect", &here)(e)),
            }
        }
        Ok(true)
    }

    fn finish_dirs(&self) -> Result<(), UnpackError> {
        for (rel, (mode, mtime)) in &self.dirs {
            let path = self.dest.join(rel);
            // O_NOFOLLOW: a recorded directory cannot have become a link (that
            // is refused as a conflict), but chmod must not follow one anyway.
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
                .open(&path)
                .map_err(io_err("open directory", &path))?;
            dir.set_permissions(Permissions::from_mode(mode | 0o700))
                .map_err(io_err("set the mode of", &path))?;
            dir.set_modified(*mtime)
                .map_err(io_err("set the mtime of", &path))?;
        }
        Ok(())
    }
}

/// The first control character in a member name or link target, described
/// for the operator: C0 and DEL (`U+000A (line feed)`), C1 in UTF-8
/// (`U+0085`), or a byte 0x80-0x9f outside UTF-8, read as Latin-1 C1.
fn control_char(name: &[u8]) -> Option<String> {
    for chunk in name.utf8_chunks() {
        if let Some(c) = chunk.valid().chars().find(|c| c.is_control()) {
            let known = match c {
                '\0' => " (NUL)",
                '\t' => " (tab)",
                '\n' => " (line feed)",
                '\r' => " (carriage return)",
                '\x1b' => " (escape)",
                '\x7f' => " (delete)",
                _ => "",
            };
            return Some(format!("U+{:04X}{known}", c as u32));
        }
        if let Some(b) = chunk.invalid().iter().find(|b| (0x80..=0x9f).contains(*b)) {
            return Some(format!("byte 0x{b:02X}"));
        }
    }
    None
}

fn link_name<R: Read>(entry: &Entry<'_, R>, name: &str) -> Result<PathBuf, UnpackError> {
    if let Some(raw) = entry.link_name_bytes()
        && let Some(what) = control_char(&raw)
    {
        return Err(UnpackError::LinkControlCharacter {
            entry: name.to_owned(),
            target: String::from_utf8_lossy(&raw).into_owned(),
            what,
        });
    }
    match entry.link_name() {
        Ok(Some(target)) => Ok(target.into_owned()),
        Ok(None) => Err(corrupt(format!("link {name:?} has no target"))),
        Err(e) => Err(corrupt(format!(
            "link {name:?} has an unreadable target: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use tar::Builder;
    use tempfile::TempDir;

    use super::*;
    use crate::release::testutil::{Raw, dir, file, hardlink, raw_header, symlink, tar_bytes};

    const LIMITS: UnpackLimits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    const MTIME: u64 = 1_650_000_000;

    /// A temp dir with the archive written in it and a destination not yet made.
    struct Case {
        tmp: TempDir,
        archive: PathBuf,
        dest: PathBuf,
    }

    fn case(bytes: &[u8]) -> Case {
        let tmp = TempDir::new().unwrap();
        let archive = tmp.path().join("artifact");
        fs::write(&archive, bytes).unwrap();
        let dest = tmp.path().join("releases").join("r1");
        Case { tmp, archive, dest }
    }

    impl Case {
        fn run(&self, limits: &UnpackLimits) -> Result<UnpackStats, UnpackError> {
            unpack(&self.archive, &self.dest, limits)
        }
    }

    fn ok(members: &[Raw<'_>]) -> Case {
        let c = case(&tar_bytes(members));
        c.run(&LIMITS).unwrap();
        c
    }

    /// Unpacks, expects a refusal, and checks nothing is left behind.
    fn refused_with(bytes: &[u8], limits: &UnpackLimits) -> UnpackError {
        let c = case(bytes);
        let err = c.run(limits).unwrap_err();
        assert!(
            fs::symlink_metadata(&c.dest).is_err(),
            "dest left behind after: {err}"
        );
        let names: Vec<_> = fs::read_dir(c.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "something was written outside dest: {names:?}"
        );
        err
    }

    fn refused(members: &[Raw<'_>]) -> UnpackError {
        refused_with(&tar_bytes(members), &LIMITS)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(MTIME);
        h.set_size(size);
        h
    }

    fn long_dir() -> String {
        "d".repeat(120)
    }

    /// A legitimate archive made with the tar crate's own builder: modes,
    /// links, a GNU long name and a pax path.
    fn sample_tar() -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        let put = |b: &mut Builder<Vec<u8>>, kind, mode, path: &str, data: &[u8]| {
            b.append_data(&mut header(kind, mode, data.len() as u64), path, data)
                .unwrap();
        };
        put(&mut b, EntryType::Directory, 0o750, "app/", b"");
        put(
            &mut b,
            EntryType::Regular,
            0o755,
            "app/bin/run.sh",
            b"#!/bin/sh\necho hi\n",
        );
        put(&mut b, EntryType::Regular, 0o4755, "app/bin/suid", b"x");
        put(&mut b, EntryType::Directory, 0o555, "app/locked/", b"");
        put(
            &mut b,
            EntryType::Regular,
            0o444,
            "app/locked/inner.txt",
            b"ro",
        );
        put(
            &mut b,
            EntryType::Regular,
            0o644,
            &format!("app/{}/long.txt", long_dir()),
            b"long",
        );
        let mut link = |kind, path: &str, target: &str| {
            b.append_link(&mut header(kind, 0o777, 0), path, target)
                .unwrap();
        };
        link(EntryType::Symlink, "app/conf", "locked/inner.txt");
        link(EntryType::Symlink, "app/up", "../app/bin");
        link(EntryType::Link, "app/bin/run2.sh", "app/bin/run.sh");
        let pax_path = format!("app/pax/{}/file.txt", "p".repeat(150));
        let record = pax_record("path", &pax_path);
        let pax = Raw {
            name: b"PaxHeader",
            kind: EntryType::XHeader,
            mode: 0o644,
            link: b"",
            data: &record,
        };
        b.append(&raw_header(&pax), &record[..]).unwrap();
        b.append(&raw_header(&file("placeholder", b"pax")), &b"pax"[..])
            .unwrap();
        b.into_inner().unwrap()
    }

    fn check_sample(c: &Case, stats: UnpackStats) {
        let app = c.dest.join("app");
        let run = app.join("bin/run.sh");
        assert_eq!(fs::read(&run).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(mode(&run), 0o755);
        let mtime = fs::metadata(&run).unwrap().modified().unwrap();
        assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(MTIME));
        assert_eq!(mode(&app.join("bin/suid")), 0o755, "setuid must be dropped");
        assert_eq!(mode(&app), 0o750);
        let app_mtime = fs::metadata(&app).unwrap().modified().unwrap();
        assert_eq!(
            app_mtime,
            UNIX_EPOCH + Duration::from_secs(MTIME),
            "dir mtime set after its entries"
        );
        assert_eq!(mode(&app.join("locked")), 0o755, "directories keep u+rwx");
        assert_eq!(mode(&app.join("locked/inner.txt")), 0o444);
        assert_eq!(
            fs::read_link(app.join("conf")).unwrap(),
            Path::new("locked/inner.txt")
        );
        assert_eq!(fs::read(app.join("conf")).unwrap(), b"ro");
        assert_eq!(
            fs::read_link(app.join("up")).unwrap(),
            Path::new("../app/bin")
        );
        let ino = |p: &str| fs::metadata(app.join(p)).unwrap().ino();
        assert_eq!(
            ino("bin/run.sh"),
            ino("bin/run2.sh"),
            "hard link shares the inode"
        );
        assert_eq!(
            fs::read(app.join(format!("{}/long.txt", long_dir()))).unwrap(),
            b"long"
        );
        let pax_file = app.join(format!("pax/{}/file.txt", "p".repeat(150)));
        assert_eq!(fs::read(pax_file).unwrap(), b"pax");
        assert!(
            !c.dest.join("placeholder").exists(),
            "pax path overrides the header name"
        );
        assert_eq!(
            stats,
            UnpackStats {
                entries: 10,
                files: 5,
                bytes: 18 + 1 + 2 + 4 + 3
            }
        );
    }

    #[test]
    fn plain_tar_round_trip_keeps_modes_mtimes_and_links() {
        let c = case(&sample_tar());
        let stats = c.run(&LIMITS).unwrap();
        check_sample(&c, stats);
    }

    #[test]
    fn gzip_round_trip() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&sample_tar()).unwrap();
        let bytes = gz.finish().unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        let c = case(&bytes);
        let stats = c.run(&LIMITS).unwrap();
        check_sample(&c, stats);
    }

    #[test]
    fn zstd_round_trip() {
        let bytes = zstd::encode_all(&sample_tar()[..], 3).unwrap();
        assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        let c = case(&bytes);
        let stats = c.run(&LIMITS).unwrap();
        check_sample(&c, stats);
    }

    #[test]
    fn dot_components_are_normalised_and_root_entry_skipped() {
        let c = ok(&[
            dir("./"),
            dir("./a/"),
            file("./a/./b", b"x"),
            file("c//d", b"y"),
        ]);
        assert_eq!(fs::read(c.dest.join("a/b")).unwrap(), b"x");
        assert_eq!(fs::read(c.dest.join("c/d")).unwrap(), b"y");
    }

    #[test]
    fn control_characters_in_names_are_refused() {
        // C0 (newline, tab, CR, escape, ...), DEL and C1, in the middle of a
        // path or at its end; the entry is named escaped, with the character.
        for (name, code) in [
            (&b"evil\nname"[..], "U+000A (line feed)"),
            (b"dir/a\tb", "U+0009 (tab)"),
            (b"a\r", "U+000D (carriage return)"),
            (b"\x1b[31mred", "U+001B (escape)"),
            (b"del\x7f", "U+007F (delete)"),
            ("nel\u{85}x".as_bytes(), "U+0085"),
            ("csi\u{9b}x".as_bytes(), "U+009B"),
            // Not UTF-8: the byte is read as Latin-1, where 0x9b is CSI.
            (b"latin\x9bx", "byte 0x9B"),
        ] {
            let raw = Raw {
                name,
                kind: EntryType::Regular,
                mode: 0o644,
                link: b"",
                data: b"x",
            };
            let err = refused(&[dir("dir"), file("ok", b"x"), raw]);
            let shown = String::from_utf8_lossy(name).into_owned();
            assert!(
                matches!(err, UnpackError::ControlCharacter { ref entry, .. } if *entry == shown),
                "{shown:?}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("archive entry {shown:?}"))
                    && text.contains(code)
                    && text.contains("rebuild the artifact")
                    && !text.contains('\n'),
                "{shown:?}: {text}"
            );
        }
        // A directory's name, and a name that arrives in a GNU long-name
        // record. (A pax `path` cannot carry one: the tar crate splits pax
        // records at newlines and falls back to the header's name.)
        let err = refused(&[dir("a\nb")]);
        assert!(matches!(err, UnpackError::ControlCharacter { .. }), "{err}");
        let long = format!("{}/x\ny\0", long_dir());
        let gnu = Raw {
            name: b"././@LongLink",
            kind: EntryType::GNULongName,
            mode: 0o644,
            link: b"",
            data: long.as_bytes(),
        };
        let err = refused(&[gnu, file("short", b"x")]);
        assert!(
            matches!(err, UnpackError::ControlCharacter { ref entry, .. } if entry.ends_with("/x\ny")),
            "{err}"
        );
    }

    #[test]
    fn control_characters_in_link_targets_are_refused() {
        for (members, entry) in [
            (vec![file("t", b"x"), symlink("s", "t\n")], "s"),
            (vec![file("t", b"x"), symlink("s2", "\u{85}t")], "s2"),
            (vec![file("t", b"x"), hardlink("h", "t\r")], "h"),
        ] {
            let err = refused(&members);
            assert!(
                matches!(err, UnpackError::LinkControlCharacter { entry: ref e, .. } if e == entry),
                "{entry}: {err}"
            );
            assert!(
                err.to_string().contains(&format!("link {entry:?} -> ")),
                "{err}"
            );
        }
    }

    #[test]
    fn printable_unicode_names_are_kept() {
        let c = ok(&[
            file("café/ü ñ.txt", b"x"),
            file("日本語", b"y"),
            symlink("link é", "日本語"),
        ]);
        assert_eq!(fs::read(c.dest.join("café/ü ñ.txt")).unwrap(), b"x");
        assert_eq!(fs::read(c.dest.join("link é")).unwrap(), b"y");
    }

    #[test]
    fn pax_global_header_is_skipped() {
        let record = pax_record("comment", "0123abcd");
        let global = Raw {
            name: b"pax_global_header",
            kind: EntryType::XGlobalHeader,
            mode: 0o644,
            link: b"",
            data: &record,
        };
        let c = case(&tar_bytes(&[global, file("a", b"x")]));
        let stats = c.run(&LIMITS).unwrap();
        assert_eq!(
            stats,
            UnpackStats {
                entries: 2,
                files: 1,
                bytes: 1
            }
        );
        assert!(!c.dest.join("pax_global_header").exists());
    }

    #[test]
    fn absolute_paths_are_refused() {
        let err = refused(&[file("/tmp/golive-evil", b"x")]);
        assert!(
            matches!(err, UnpackError::AbsolutePath { ref entry } if entry == "/tmp/golive-evil"),
            "{err}"
        );
        assert!(
            err.to_string().contains("relative to the release root"),
            "{err}"
        );
        let err = refused(&[dir("/")]);
        assert!(matches!(err, UnpackError::AbsolutePath { .. }), "{err}");
    }

    #[test]
    fn parent_components_are_refused() {
        for name in ["../evil", "a/../../evil", "a/.."] {
            let err = refused(&[dir("a"), file(name, b"x")]);
            assert!(
                matches!(err, UnpackError::ParentTraversal { ref entry } if entry == name),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn escaping_symlinks_are_refused() {
        for (name, target) in [
            ("etc", "../../etc"),
            ("a/up", "../.."),
            ("passwd", "/etc/passwd"),
            ("evil", ".."),
            ("a/b/deep", "../../../x"),
        ] {
            let err = refused(&[dir("a"), dir("a/b"), symlink(name, target)]);
            assert!(
                matches!(err, UnpackError::LinkEscapes { ref entry, target: ref t } if entry == name && t == target),
                "{name} -> {target}: {err}"
            );
        }
    }

    #[test]
    fn symlinks_inside_the_release_are_kept() {
        let c = ok(&[
            dir("a"),
            dir("a/b"),
            symlink("evil", "."),
            symlink("a/b/top", "../.."),
            symlink("a/sib", "./b"),
        ]);
        assert_eq!(fs::read_link(c.dest.join("evil")).unwrap(), Path::new("."));
        assert_eq!(
            fs::read_link(c.dest.join("a/b/top")).unwrap(),
            Path::new("../..")
        );
        assert_eq!(
            fs::read_link(c.dest.join("a/sib")).unwrap(),
            Path::new("./b")
        );
    }

    #[test]
    fn dotdot_after_a_name_is_refused() {
        // `x/b -> ..` is fine alone, but `x/a -> b/../..` would climb from the
        // release root once the kernel follows `b`.
        ok(&[dir("x"), symlink("x/b", "..")]);
        let err = refused(&[dir("x"), symlink("x/b", ".."), symlink("x/a", "b/../..")]);
        assert!(
            matches!(err, UnpackError::LinkNotNormalised { ref entry, .. } if entry == "x/a"),
            "{err}"
        );
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        // `evil -> .` is inside, but nothing may be written through it.
        let err = refused(&[symlink("evil", "."), file("evil/x", b"x")]);
        assert!(
            matches!(err, UnpackError::ThroughSymlink { ref entry, ref link } if entry == "evil/x" && link == "evil"),
            "{err}"
        );
        // Nor through a link to a real directory inside the release.
        let err = refused(&[dir("sub"), symlink("dir", "sub"), file("dir/file", b"x")]);
        assert!(
            matches!(err, UnpackError::ThroughSymlink { ref link, .. } if link == "dir"),
            "{err}"
        );
        let err = refused(&[dir("sub"), symlink("dir", "sub"), dir("dir/deeper/")]);
        assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    }

    #[test]
    fn a_later_entry_replaces_a_link_instead_of_writing_through_it() {
        let c = ok(&[
            dir("d"),
            file("d/target", b"orig"),
            symlink("f", "d/target"),
            file("f", b"new"),
            hardlink("h", "d/target"),
            file("h", b"newer"),
        ]);
        assert_eq!(fs::read(c.dest.join("d/target")).unwrap(), b"orig");
        assert_eq!(fs::read(c.dest.join("f")).unwrap(), b"new");
        assert!(fs::symlink_metadata(c.dest.join("f")).unwrap().is_file());
        assert_eq!(fs::read(c.dest.join("h")).unwrap(), b"newer");
    }

    #[test]
    fn conflicting_paths_are_refused() {
        let err = refused(&[file("a", b"x"), file("a/b", b"y")]);
        assert!(
            matches!(err, UnpackError::Conflict { ref existing, .. } if existing == "a"),
            "{err}"
        );
        let err = refused(&[dir("a"), file("a", b"x")]);
        assert!(matches!(err, UnpackError::Conflict { .. }), "{err}");
    }

    #[test]
    fn escaping_hard_links_are_refused() {
        for target in ["/etc/passwd", "../outside", "a/../../x", "a/../f", "."] {
            let err = refused(&[dir("a"), file("f", b"x"), hardlink("h", target)]);
            assert!(
                matches!(err, UnpackError::LinkEscapes { ref entry, target: ref t } if entry == "h" && t == target),
                "{target}: {err}"
            );
        }
    }

    #[test]
    fn hard_link_through_a_symlinked_dir_is_refused() {
        let err = refused(&[
            dir("d"),
            file("d/f", b"x"),
            symlink("l", "d"),
            hardlink("h", "l/f"),
        ]);
        assert!(
            matches!(err, UnpackError::ThroughSymlink { ref link, .. } if link == "l"),
            "{err}"
        );
    }

    #[test]
    fn hard_link_to_a_symlink_is_checked_from_its_new_place() {
        // `a/b/s -> ../..` is the release root; linked to `t` at the top it
        // would name the release's parent.
        let members = [
            dir("a"),
            dir("a/b"),
            symlink("a/b/s", "../.."),
            hardlink("t", "a/b/s"),
        ];
        let err = refused(&members);
        assert!(
            matches!(err, UnpackError::LinkEscapes { ref entry, .. } if entry == "t"),
            "{err}"
        );
        let c = ok(&[
            dir("a"),
            dir("a/b"),
            symlink("a/b/s", "../.."),
            hardlink("a/b/t", "a/b/s"),
        ]);
        assert_eq!(
            fs::read_link(c.dest.join("a/b/t")).unwrap(),
            Path::new("../..")
        );
    }

    #[test]
    fn hard_link_to_a_missing_or_self_target_is_corrupt() {
        for members in [
            vec![hardlink("h", "nope")],
            vec![hardlink("h", "d/nope")],
            vec![file("h", b"x"), hardlink("h", "h")],
        ] {
            let err = refused(&members);
            assert!(
                matches!(err, UnpackError::Corrupt { ref detail } if detail.contains("not an earlier file")),
                "{err}"
            );
        }
    }

    #[test]
    fn devices_and_fifos_are_refused() {
        for (kind, word) in [
            (EntryType::Char, "character device"),
            (EntryType::Block, "block device"),
            (EntryType::Fifo, "fifo"),
            (EntryType::GNUSparse, "sparse"),
            (EntryType::new(b'V'), "tar type 'V'"),
        ] {
            let raw = Raw {
                name: b"dev/thing",
                kind,
                mode: 0o644,
                link: b"",
                data: b"",
            };
            let mut h = raw_header(&raw);
            if let Some(gnu) = h.as_gnu_mut() {
                // A well-formed, empty sparse map, so the tar crate hands the
                // entry over instead of failing to parse it.
                gnu.realsize.copy_from_slice(b"00000000000\0");
            }
            h.set_cksum();
            let mut bytes = h.as_bytes().to_vec();
            bytes.extend_from_slice(&[0; 1024]);
            let err = refused_with(&bytes, &LIMITS);
            assert!(
                matches!(err, UnpackError::UnsupportedEntry { ref entry, ref kind } if entry == "dev/thing" && kind.contains(word)),
                "{word}: {err}"
            );
        }
    }

    #[test]
    fn too_many_entries_are_refused() {
        let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        let members: Vec<_> = names.iter().map(|n| file(n, b"")).collect();
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 4,
        };
        let err = refused_with(&tar_bytes(&members), &limits);
        assert!(
            matches!(err, UnpackError::TooManyEntries { limit: 4 }),
            "{err}"
        );
        assert!(
            err.to_string().contains("limits.max_archive_entries"),
            "{err}"
        );
        let c = case(&tar_bytes(&members[..4]));
        assert_eq!(c.run(&limits).unwrap().entries, 4);
    }

    #[test]
    fn declared_sizes_over_the_limit_are_refused() {
        let limits = UnpackLimits {
            max_bytes: 1000,
            max_entries: 100,
        };
        let big = vec![7u8; 600];
        let err = refused_with(&tar_bytes(&[file("a", &big), file("b", &big)]), &limits);
        assert!(
            matches!(err, UnpackError::TooLarge { limit: 1000 }),
            "{err}"
        );
        assert!(
            err.to_string().contains("limits.max_unpacked_bytes"),
            "{err}"
        );

        // A header claiming 10 GiB is refused before any of it is read: the
        // archive below does not even hold the data, so reading would fail as
        // corrupt instead.
        let mut h = raw_header(&file("huge", b""));
        h.set_size(10 << 30);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 512]);
        let err = refused_with(&bytes, &limits);
        assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_decompression_bomb_in_metadata_is_refused() {
        // File content stays tiny, but a 4 MiB pax record expands from a few
        // KiB of zstd; the tar crate would buffer it whole.
        let limits = UnpackLimits {
            max_bytes: 1024,
            max_entries: 4,
        };
        let record = pax_record("comment", &"A".repeat(4 << 20));
        let pax = Raw {
            name: b"PaxHeader",
            kind: EntryType::XHeader,
            mode: 0o644,
            link: b"",
            data: &record,
        };
        let bytes = zstd::encode_all(&tar_bytes(&[pax, file("a", b"x")])[..], 19).unwrap();
        assert!(
            bytes.len() < 64 * 1024,
            "the bomb should be small: {}",
            bytes.len()
        );
        let err = refused_with(&bytes, &limits);
        assert!(
            matches!(err, UnpackError::TooLarge { limit: 1024 }),
            "{err}"
        );
    }

    #[test]
    fn written_bytes_are_capped_whatever_the_header_says() {
        let mut buf = [0u8; 16];
        let mut out = Vec::new();
        let over = copy_capped(&mut &[1u8; 100][..], &mut out, 10, &mut buf);
        assert!(matches!(over, Err(CopyError::OverCap)), "{over:?}");
        assert!(out.len() <= 10, "wrote {} bytes past the cap", out.len());
        let mut out = Vec::new();
        assert_eq!(
            copy_capped(&mut &[1u8; 10][..], &mut out, 10, &mut buf).unwrap(),
            10
        );
    }

    #[test]
    fn the_stream_budget_trips_only_past_the_budget() {
        let tripped = Rc::new(Cell::new(false));
        let mut exact = StreamBudget {
            inner: &[1u8; 8][..],
            left: 8,
            tripped: Rc::clone(&tripped),
        };
        assert_eq!(exact.read_to_end(&mut Vec::new()).unwrap(), 8);
        assert!(!tripped.get());
        let mut over = StreamBudget {
            inner: &[1u8; 9][..],
            left: 8,
            tripped: Rc::clone(&tripped),
        };
        assert!(over.read_to_end(&mut Vec::new()).is_err());
        assert!(tripped.get());
    }

    #[test]
    fn existing_destination_is_refused_and_kept() {
        let c = case(&tar_bytes(&[file("a", b"x")]));
        fs::create_dir_all(&c.dest).unwrap();
        fs::write(c.dest.join("keep"), b"mine").unwrap();
        let err = c.run(&LIMITS).unwrap_err();
        assert!(
            matches!(err, UnpackError::DestinationExists { ref path } if path == &c.dest),
            "{err}"
        );
        assert_eq!(fs::read(c.dest.join("keep")).unwrap(), b"mine");
        // A dangling symlink counts as existing too.
        let c = case(&tar_bytes(&[file("a", b"x")]));
        fs::create_dir_all(c.dest.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &c.dest).unwrap();
        assert!(matches!(
            c.run(&LIMITS),
            Err(UnpackError::DestinationExists { .. })
        ));
    }

    #[test]
    fn damaged_archives_are_corrupt_and_leave_nothing() {
        let err = refused_with(&[0xab; 2048], &LIMITS);
        assert!(
            matches!(err, UnpackError::Corrupt { ref detail } if detail.contains("artifact")),
            "{err}"
        );

        let err = refused_with(b"", &LIMITS);
        assert!(
            matches!(err, UnpackError::Corrupt { ref detail } if detail.contains("no entries")),
            "{err}"
        );

        // Truncated inside a file's data, after earlier entries were written.
        let mut bytes = tar_bytes(&[file("first", b"ok"), file("second", &[5u8; 4000])]);
        bytes.truncate(512 * 3 + 1000);
        let err = refused_with(&bytes, &LIMITS);
        assert!(
            matches!(err, UnpackError::Corrupt { ref detail } if detail.contains("second")),
            "{err}"
        );

        // A gzip stream cut short.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&sample_tar()).unwrap();
        let mut bytes = gz.finish().unwrap();
        bytes.truncate(bytes.len() / 2);
        let err = refused_with(&bytes, &LIMITS);
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn missing_archive_is_an_io_error_and_creates_nothing() {
        let tmp = TempDir::new().unwrap();
        let dest = tmp.path().join("r1");
        let err = unpack(&tmp.path().join("nope.tar"), &dest, &LIMITS).unwrap_err();
        assert!(
            matches!(err, UnpackError::Io { ref path, .. } if path.ends_with("nope.tar")),
            "{err}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn limits_come_from_the_agent_config() {
        let config = golive_shared::config::Limits::default();
        let limits = UnpackLimits::from(&config);
        assert_eq!(limits.max_bytes, config.max_unpacked_bytes);
        assert_eq!(limits.max_entries, config.max_archive_entries);
    }
}
