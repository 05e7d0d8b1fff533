//! Owner-only files and directories (0700 / 0600 whatever the umask), for
//! the state both binaries keep: the agent's journal, dumps and uploads, the
//! controller's journal and exported records. Moved from the agent so that
//! golivectl uses the agent crate for its demo only (issue 14, part 8).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The mode of every directory the agent (or the controller) keeps.
pub const PRIVATE_DIR: u32 = 0o700;
/// The mode of every file the agent (or the controller) keeps.
pub const PRIVATE_FILE: u32 = 0o600;

/// Creates `path`, and its missing parents, as 0700 directories whatever
/// the umask. An existing directory is left as it is (the agent's `state::tighten` takes
/// care of those at start).
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        create_private_dir(parent)?;
    }
    match std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(path) {
        // The umask may have taken owner bits too; set the mode outright.
        Ok(()) => std::fs::set_permissions(path, PermissionsExt::from_mode(PRIVATE_DIR)),
        // Created meanwhile by someone else (another job): fine if a directory.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets `path` (a file we just created or keep) to 0600, whatever the umask
/// gave it. Symlinks are not followed: a missing or linked path is an error.
pub fn make_private_file(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o777 != PRIVATE_FILE {
        std::fs::set_permissions(path, PermissionsExt::from_mode(PRIVATE_FILE))?;
    }
    Ok(())
}

/// Makes the SQLite database `path` owner-only (issue 11), whatever the
/// umask: creates it empty with mode 0600 when missing (SQLite starts an
/// empty file as a new database), else sets it to 0600, and sets its `-wal`,
/// `-shm` and `-journal` files to 0600 when they exist. SQLite creates those
/// with the database file's own mode, so new ones follow. The controller's
/// journal uses it too.
pub fn make_private_db(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    make_private_file(path)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match make_private_file(Path::new(&side)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}
