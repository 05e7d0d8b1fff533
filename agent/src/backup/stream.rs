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

/// Output is handed to the writer thread in chunks of this size.
const CHUNK: usize = 256 * 1024;
/// Full chunks queued for the writer thread. Memory in flight is at most
/// (QUEUE + 2) chunks: this many queued, one being written, one being filled.
const QUEUE: usize = 2;

/// A file that hashes and counts everything written to it.
///
/// Writing and sha256 run on a writer thread of their own, fed chunks over a
/// bounded queue: on a small host the thread that produces the stream (tar,
/// zstd's input side) is the bottleneck, and hashing is a quarter of its
/// work (docs/bench-backup.md). A write error on that thread (ENOSPC) is
/// returned by the next `write`, or by `finish`, with its OS error intact.
pub struct HashingFile {
    path: PathBuf,
    /// The chunk being filled.
    chunk: Vec<u8>,
    /// Bytes accepted so far (queued or written).
    bytes: u64,
    writer: Option<Writer>,
    /// Set once the writer has stopped: what it left behind.
    tail: Option<Tail>,
    finished: bool,
}

struct Writer {
    full: std::sync::mpsc::SyncSender<Vec<u8>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Tail>,
}

/// What the writer thread hands back when it stops.
struct Tail {
    /// None if the thread panicked.
    file: Option<File>,
    hasher: Sha256,
    written: u64,
    error: Option<io::Error>,
}

impl HashingFile {
    /// Creates `path` (which must not exist).
    pub fn create(path: &Path) -> Result<HashingFile, BackupError> {
        use std::os::unix::fs::OpenOptionsExt;
        // A backup part is a copy of the app's data: owner-only (issue 11).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::state::PRIVATE_FILE)
            .open(path)
            .map_err(|e| io_err("cannot create", path, e))?;
        let (full, full_rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (empty_tx, empty) = std::sync::mpsc::sync_channel(QUEUE + 2);
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = failed.clone();
        let handle = std::thread::Builder::new()
            .name("backup-writer".into())
            .spawn(move || write_loop(file, full_rx, empty_tx, flag))
            .map_err(|e| io_err("cannot start the writer thread for", path, e))?;
        Ok(HashingFile {
            path: path.to_path_buf(),
            chunk: Vec::with_capacity(CHUNK),
            bytes: 0,
            writer: Some(Writer {
                full,
                empty,
                failed,
                handle,
            }),
            tail: None,
            finished: false,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer thread (after it has written what is queued).
    fn stop(&mut self) -> &mut Tail {
        if let Some(w) = self.writer.take() {
            drop(w.full);
            let tail = w.handle.join().unwrap_or_else(|_| Tail {
                file: None,
                hasher: Sha256::new(),
                written: 0,
                error: Some(io::Error::other("the backup writer thread panicked")),
            });
            self.tail = Some(tail);
        }
        self.tail.as_mut().expect("stopped writer leaves a tail")
    }

    /// The writer's error (taken once; later calls get a generic one).
    fn writer_error(&mut self) -> io::Error {
        self.stop()
            .error
            .take()
            .unwrap_or_else(|| io::Error::other("an earlier write to this backup failed"))
    }

    /// Queues the current chunk for the writer thread.
    fn send(&mut self) -> io::Result<()> {
        let Some(w) = &self.writer else {
            return Err(self.writer_error());
        };
        let next = w
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        if w.full.send(full).is_err() {
            return Err(self.writer_error());
        }
        Ok(())
    }

    /// Flushes and fsyncs; the file stays.
    pub fn finish(mut self) -> Result<Written, BackupError> {
        if !self.chunk.is_empty() {
            self.send().map_err(|e| self.write_err(e))?;
        }
        let tail = self.stop();
        if let Some(e) = tail.error.take() {
            return Err(self.write_err(e));
        }
        let tail = self.tail.take().expect("stopped");
        let file = tail
            .file
            .expect("a writer that reports no error kept its file");
        file.sync_all().map_err(|e| self.write_err(e))?;
        self.finished = true;
        Ok(Written {
            path: self.path.clone(),
            bytes: tail.written,
            sha256: hex::encode(tail.hasher.finalize()),
        })
    }

    /// Maps a write error on this file; a full disk becomes [`BackupError::DiskFull`].
    pub fn write_err(&self, e: io::Error) -> BackupError {
        io_err("cannot write", &self.path, e).with_written(self.bytes)
    }
}

/// The writer thread: writes and hashes chunks in order, starts background
/// write-back every [`FLUSH_EVERY`] bytes, returns emptied chunks for reuse.
/// After a write error it stops writing but keeps draining, so the producer
/// never blocks on a full queue; the error is handed back at the end.
fn write_loop(
    mut file: File,
    full: std::sync::mpsc::Receiver<Vec<u8>>,
    empty: std::sync::mpsc::SyncSender<Vec<u8>>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Tail {
    // Background `fdatasync` of a cloned fd, so the disk writes while we
    // compress and the final fsync has little left to flush (tar + zstd
    // never fsyncs; a backup must).
    let flusher = file.try_clone().ok().map(|clone| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let handle = std::thread::spawn(move || {
            while rx.recv().is_ok() {
                let _ = clone.sync_data();
            }
        });
        (tx, handle)
    });
    let mut hasher = Sha256::new();
    let (mut written, mut flushed_at) = (0u64, 0u64);
    let mut error = None;
    for mut chunk in full {
        if error.is_none() {
            match file.write_all(&chunk) {
                Ok(()) => {
                    hasher.update(&chunk);
                    written += chunk.len() as u64;
                    if written - flushed_at >= FLUSH_EVERY
                        && let Some((tx, _)) = &flusher
                    {
                        flushed_at = written;
                        // Busy flusher: skip this tick rather than wait for the disk.
                        let _ = tx.try_send(());
                    }
                }
                Err(e) => {
                    error = Some(e);
                    failed.store(true, std::sync::atomic::Ordering::Release);
                }
            }
        }
        chunk.clear();
        let _ = empty.try_send(chunk);
    }
    if let Some((tx, handle)) = flusher {
        drop(tx);
        let _ = handle.join();
    }
    Tail {
        file: Some(file),
        hasher,
        written,
        error,
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.writer {
            Some(w) if !w.failed.load(std::sync::atomic::Ordering::Acquire) => {}
            _ => return Err(self.writer_error()),
        }
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        self.bytes += n as u64;
        if self.chunk.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Hands the partial chunk to the writer thread (it is on its way to the
    /// kernel, not on disk: only [`HashingFile::finish`] syncs).
    fn flush(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

impl Drop for HashingFile {
    fn drop(&mut self) {
        if self.writer.is_some() || self.tail.is_some() {
            self.stop();
        }
        if !self.finished {
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
    fn hashes_many_chunks_in_order_through_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let data: Vec<u8> = (0..(3 * CHUNK + 17))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut f = HashingFile::create(&p).unwrap();
        // Odd-sized writes, a flush in the middle: chunk edges anywhere.
        for (i, piece) in data.chunks(70_001).enumerate() {
            f.write_all(piece).unwrap();
            if i == 3 {
                f.flush().unwrap();
            }
        }
        assert_eq!(f.bytes(), data.len() as u64);
        let w = f.finish().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), data);
        assert_eq!(hash_file(&p).unwrap(), (data.len() as u64, w.sha256));
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
