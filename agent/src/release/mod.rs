//! Release files on disk: unpacking an uploaded artifact safely
//! ([`unpack`](mod@unpack)) and the per-app `releases/`, `shared/`, `current`
//! layout built on it ([`layout`]), and releases exported from a git
//! repository the host declares ([`git`]).
//!
//! Everything here is synchronous filesystem work; callers run it on a blocking
//! thread. **Security invariant** (SPEC §3): nothing an archive contains can make
//! the agent write, link or point outside the release directory.

pub mod git;
pub mod layout;
pub mod unpack;

pub use layout::{AppLayout, LayoutError};
pub use unpack::{UnpackError, UnpackLimits, UnpackStats, unpack};

/// Archive builders shared by the unit tests of both submodules.
#[cfg(test)]
mod testutil {
    use std::io::Write;
    use std::path::Path;

    use tar::{EntryType, Header};

    /// One archive member, written with a hand-made header so tests can say
    /// things the `tar` crate's checked setters refuse (`..`, `/abs`).
    pub(crate) struct Raw<'a> {
        pub name: &'a [u8],
        pub kind: EntryType,
        pub mode: u32,
        pub link: &'a [u8],
        pub data: &'a [u8],
    }

    pub(crate) fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            kind: EntryType::Regular,
            mode: 0o644,
            link: b"",
            data,
        }
    }

    pub(crate) fn dir(name: &str) -> Raw<'_> {
        Raw {
            name: name.as_bytes(),
            kind: EntryType::Directory,
            mode: 0o755,
            link: b"",
            data: b"",
        }
    }

    pub(crate) fn symlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            kind: EntryType::Symlink,
            mode: 0o777,
            link: target.as_bytes(),
            data: b"",
        }
    }

    pub(crate) fn hardlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            kind: EntryType::Link,
            mode: 0o644,
            ..symlink(name, target)
        }
    }

    /// The header exactly as given: name and link bytes go straight into the
    /// old-style fields, so nothing is normalised or rejected on the way.
    pub(crate) fn raw_header(raw: &Raw<'_>) -> Header {
        let mut header = Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..raw.name.len()].copy_from_slice(raw.name);
            old.linkname[..raw.link.len()].copy_from_slice(raw.link);
        }
        header.set_entry_type(raw.kind);
        header.set_mode(raw.mode);
        header.set_size(raw.data.len() as u64);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        header
    }

    /// A plain tar holding `members` in order.
    pub(crate) fn tar_bytes(members: &[Raw<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for member in members {
            builder.append(&raw_header(member), member.data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    pub(crate) fn write_tar(path: &Path, members: &[Raw<'_>]) {
        std::fs::File::create(path)
            .unwrap()
            .write_all(&tar_bytes(members))
            .unwrap();
    }
}

/// Issue 14: the class each staging failure carries into the job's
/// `error_code`, checked on real stagings.
#[cfg(test)]
mod tests {
    use golive_shared::config::SharedPath;
    use golive_shared::protocol::ErrorCode;

    use super::testutil::{file, write_tar};
    use super::*;

    const LIMITS: UnpackLimits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };

    /// The job's failure made of `e`: its class, the message kept whole.
    fn class(e: LayoutError) -> ErrorCode {
        let message = e.to_string();
        let job = crate::jobs::JobError::from(e);
        assert_eq!(job.message, message);
        job.code
    }

    #[test]
    fn issue14_staging_failures_are_classed_the_artifacts_or_the_hosts() {
        let tmp = tempfile::TempDir::new().unwrap();
        let layout = AppLayout::new(tmp.path().join("app"));
        let stage = |id: &str, archive: &std::path::Path, shared: &[&str]| {
            let shared: Vec<SharedPath> = shared.iter().map(|s| SharedPath::from(*s)).collect();
            layout.stage(id, archive, &shared, &LIMITS).unwrap_err()
        };

        let damaged = tmp.path().join("damaged.tar.gz");
        std::fs::write(&damaged, [0x1f, 0x8b, 8, 0, 0xab, 0xcd, 0xef]).unwrap();
        let e = stage("r1", &damaged, &[]);
        assert!(
            matches!(e, LayoutError::Unpack(UnpackError::Corrupt { .. })),
            "{e}"
        );
        assert_eq!(class(e), ErrorCode::BadRequest);

        let escaping = tmp.path().join("escaping.tar");
        write_tar(&escaping, &[file("../evil", b"x")]);
        assert_eq!(class(stage("r1", &escaping, &[])), ErrorCode::BadRequest);

        let big = tmp.path().join("big.tar");
        write_tar(&big, &[file("big", &[7u8; 2 << 20])]);
        assert_eq!(class(stage("r1", &big, &[])), ErrorCode::TooLarge);

        let good = tmp.path().join("good.tar");
        write_tar(&good, &[file("index.html", b"ok\n")]);
        let e = stage("r1", &good, &["config/settings.local.php"]);
        assert!(matches!(e, LayoutError::SharedMissing { .. }), "{e}");
        assert_eq!(class(e), ErrorCode::BadRequest);

        layout.stage("r1", &good, &[], &LIMITS).unwrap();
        assert_eq!(class(stage("r1", &good, &[])), ErrorCode::BadRequest);
        assert_eq!(
            class(layout.discard("r9").unwrap_err()),
            ErrorCode::NotFound
        );

        // The host's faults: an archive the store lost, a releases
        // directory that cannot be made.
        let e = stage("r2", &tmp.path().join("gone.tar"), &[]);
        assert!(
            matches!(e, LayoutError::Unpack(UnpackError::Io { .. })),
            "{e}"
        );
        assert_eq!(class(e), ErrorCode::Internal);
        let other = AppLayout::new(tmp.path().join("other"));
        std::fs::create_dir_all(other.root()).unwrap();
        std::fs::write(other.releases_dir(), b"a file where a directory goes").unwrap();
        let e = other.stage("r1", &good, &[], &LIMITS).unwrap_err();
        assert!(matches!(e, LayoutError::Io { .. }), "{e}");
        assert_eq!(class(e), ErrorCode::Internal);
    }
}
