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
