//! Streaming output for backups: every byte goes through sha256 and a byte
//! count on its way to disk, optionally through zstd first, so no backup is
//! ever held in memory (issue 3: peak RSS under 32 MiB for a 1 GiB backup).
//! An output dropped before [`HashingFile::finish`] removes its file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BackupError;

/// Write buffer: large enough for throughput, small for memory.
const BUF: usize = 256 * 1024;

/// Bytes of input per zstd worker job (the minimum zstd accepts is 512 KiB).
const JOB_SIZE: u32 = 1024 * 1024;

/// A finished output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// Bytes written between two background write-back flushes.
const FLUSH_EVERY: u64 = 32 * 1024 * 1024;

/// A file that hashes and counts everything written to it.
pub struct HashingFile {
    path: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Sha256,
    bytes: u64,
    /// Background `fdatasync` of a cloned fd, so the disk writes while we
    /// compress and the final fsync has little left to flush (tar + zstd
    /// never fsyncs; a backup must).
    flusher: Option<(std::sync::mpsc::SyncSender<()>, std::thread::JoinHandle<()>)>,
    flushed_at: u64,
}

impl HashingFile {
    /// Creates `path` (which must not exist).
    pub fn create(path: &Path) -> Result<HashingFile, BackupError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io_err("cannot create", path, e))?;
        let flusher = file.try_clone().ok().map(|clone| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            let handle = std::thread::spawn(move || {
                while rx.recv().is_ok() {
                    let _ = clone.sync_data();
                }
            });
            (tx, handle)
        });
        Ok(HashingFile {
            path: path.to_path_buf(),
            file: Some(io::BufWriter::with_capacity(BUF, file)),
            hasher: Sha256::new(),
            bytes: 0,
            flusher,
            flushed_at: 0,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stop_flusher(&mut self) {
        if let Some((tx, handle)) = self.flusher.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// Flushes and fsyncs; the file stays.
    pub fn finish(mut self) -> Result<Written, BackupError> {
        self.stop_flusher();
        let mut w = self.file.take().expect("finish called once");
        w.flush().map_err(|e| self.write_err(e))?;
        let file = w.into_inner().map_err(|e| self.write_err(e.into_error()))?;
        file.sync_all().map_err(|e| self.write_err(e))?;
        Ok(Written {
            path: self.path.clone(),
            bytes: self.bytes,
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
        })
    }

    /// Maps a write error on this file; a full disk becomes [`BackupError::DiskFull`].
    pub fn write_err(&self, e: io::Error) -> BackupError {
        io_err("cannot write", &self.path, e).with_written(self.bytes)
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("not finished").write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes - self.flushed_at >= FLUSH_EVERY
            && let Some((tx, _)) = &self.flusher
        {
            self.flushed_at = self.bytes;
            // Busy flusher: skip this tick rather than wait for the disk.
            let _ = tx.try_send(());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not finished").flush()
    }
}

impl Drop for HashingFile {
    fn drop(&mut self) {
        self.stop_flusher();
        if self.file.take().is_some() {
            // Unfinished: never leave a partial file that could pass for a backup.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A zstd encoder in front of a [`HashingFile`]; uses two worker threads
/// (zstd `-T2`) so compression keeps up with the disk on small hosts.
pub fn zstd_writer(
    file: HashingFile,
    level: i32,
) -> Result<zstd::stream::write::Encoder<'static, HashingFile>, BackupError> {
    let path = file.path().to_path_buf();
    let mut enc = zstd::stream::write::Encoder::new(file, level)
        .map_err(|e| io_err("cannot start zstd for", &path, e))?;
    // A frame checksum lets decompression itself detect corruption.
    enc.include_checksum(true)
        .map_err(|e| io_err("cannot configure zstd for", &path, e))?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().min(4) as u32)
        .unwrap_or(1);
    if threads > 1 {
        enc.multithread(threads)
            .map_err(|e| io_err("cannot start zstd workers for", &path, e))?;
        // zstd's default job is 4x the window (8 MiB at level 3), with an
        // input and an output buffer per job in flight: ~75 MiB peak RSS on a
        // 2-core host. 1 MiB jobs keep the agent well under 32 MiB (issue 3)
        // at the same throughput; see docs/bench-backup.md.
        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))
            .map_err(|e| io_err("cannot configure zstd workers for", &path, e))?;
    }
    Ok(enc)
}

/// Finishes a zstd stream and the file under it.
pub fn finish_zstd(
    mut enc: zstd::stream::write::Encoder<'static, HashingFile>,
) -> Result<Written, BackupError> {
    // Flush the last frame while the file is still reachable, so a full disk
    // here is reported as DiskFull on the right path.
    if let Err(e) = enc.do_finish() {
        return Err(enc.get_ref().write_err(e));
    }
    let file = enc.finish().map_err(|e| BackupError::Io {
        action: "cannot finish zstd stream",
        path: PathBuf::new(),
        source: e,
    })?;
    file.finish()
}

/// Copies `r` to `w` in 256 KiB chunks, calling `progress` with the running total.
pub fn copy_with_progress(
    r: &mut dyn Read,
    w: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
        progress(total);
    }
    Ok(total)
}

/// A reader that remembers whether it failed, so a copy error can name the
/// right file (the source or the output).
pub struct Tracked<R> {
    inner: R,
    pub failed: bool,
}

impl<R> Tracked<R> {
    pub fn new(inner: R) -> Self {
        Tracked {
            inner,
            failed: false,
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        self.failed = r.is_err();
        r
    }
}

/// sha256 and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut f = File::open(path).map_err(|e| io_err("cannot open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| io_err("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// An I/O error on `path`; ENOSPC becomes [`BackupError::DiskFull`].
pub fn io_err(action: &'static str, path: &Path, e: io::Error) -> BackupError {
    if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
        BackupError::DiskFull {
            path: path.to_path_buf(),
            written: 0,
        }
    } else {
        BackupError::Io {
            action,
            path: path.to_path_buf(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_it_writes_and_removes_unfinished_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        let mut f = HashingFile::create(&p).unwrap();
        f.write_all(b"hello").unwrap();
        let w = f.finish().unwrap();
        assert_eq!(w.bytes, 5);
        assert_eq!(hash_file(&p).unwrap(), (5, w.sha256.clone()));
        let q = dir.path().join("b");
        let mut g = HashingFile::create(&q).unwrap();
        g.write_all(b"partial").unwrap();
        drop(g);
        assert!(!q.exists());
    }

    #[test]
    fn zstd_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.zst");
        let mut enc = zstd_writer(HashingFile::create(&p).unwrap(), 3).unwrap();
        let data = vec![7u8; 1 << 20];
        enc.write_all(&data).unwrap();
        let w = finish_zstd(enc).unwrap();
        assert!(w.bytes < 1 << 20);
        let back = zstd::stream::decode_all(File::open(&p).unwrap()).unwrap();
        assert_eq!(back, data);
    }
}
