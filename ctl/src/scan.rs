//! The release artifact scan of `golivectl preflight` (and of `deploy`'s
//! checks): the plan's forbidden patterns searched in the artifact's text
//! files, on the controller, before anything is uploaded.
//!
//! The matcher (patterns, globs, word starts, binary files, the hit cap) is
//! [`golive_shared::scan`], which the agent also runs on a git release's
//! exported tree (issue 12); this module opens the artifact: tar, tar.gz or
//! tar.zst, told apart by their magic bytes, decompressed as a stream.

use std::io::Read;
use std::path::Path;

pub use golive_shared::scan::{
    DEFAULT_EXCLUDE, DEFAULT_INCLUDE, Hit, MAX_HITS, MAX_LINE, ScanConfig, ScanReport, scan_tar,
};

/// Scans `artifact` (tar, tar.gz or tar.zst). An unreadable or malformed
/// archive is an error naming the file.
pub fn scan(artifact: &Path, cfg: &ScanConfig) -> Result<ScanReport, String> {
    let err = |e: std::io::Error| format!("cannot scan {}: {e}", artifact.display());
    let mut file = std::fs::File::open(artifact).map_err(err)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(err)?;
    let file = std::fs::File::open(artifact).map_err(err)?;
    let reader: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(file)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::new(file).map_err(err)?),
        _ => Box::new(file),
    };
    scan_tar(reader, cfg).map_err(|e| {
        format!(
            "cannot scan {}: {e}; is it a tar, tar.gz or tar.zst archive?",
            artifact.display()
        )
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(forbidden: &[&str]) -> ScanConfig {
        ScanConfig {
            forbidden: forbidden.iter().map(|s| s.to_string()).collect(),
            include: DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect(),
            exclude: DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn compressed_archives_and_garbage() {
        let tar = tar_of(&[("x.php", b"var_dump($a);\n")]);
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("a.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &tar).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let zst = dir.path().join("a.tar.zst");
        std::fs::write(&zst, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        for p in [&gz, &zst] {
            let r = scan(p, &cfg(&["var_dump("])).unwrap();
            assert_eq!(r.hits.len(), 1, "{}", p.display());
        }
        let bad = dir.path().join("bad.tar.gz");
        std::fs::write(&bad, b"\x1f\x8bnot gzip at all").unwrap();
        let e = scan(&bad, &cfg(&["x"])).unwrap_err();
        assert!(e.contains("bad.tar.gz"), "{e}");
    }
}
