//! The optional offsite copy of a complete backup: to a directory, or
//! through operator-written `copy` and `fetch` commands (e.g. rclone or the
//! aws CLI). Either way the copy's sha256 is checked after the copy: the
//! directory copy is re-read, and `fetch` must stream the remote copy back
//! to stdout. Commands are programs with arguments, never a shell string.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use golive_shared::config::Offsite;
use golive_shared::protocol::BackupPart;
use sha2::{Digest, Sha256};

use super::stream::hash_file;

/// Copies every part and the manifest; returns where they went.
pub fn copy(
    o: &Offsite,
    app: &str,
    backup_dir: &Path,
    parts: &[BackupPart],
) -> Result<String, String> {
    let id = backup_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut files: Vec<(String, Option<String>)> = parts
        .iter()
        .map(|p| (p.file.clone(), Some(p.sha256.clone())))
        .collect();
    files.push(("manifest.json".into(), None));
    if let Some(dir) = &o.dir {
        let dest = dir.join(app).join(&id);
        std::fs::create_dir_all(&dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        for (file, _) in &files {
            let src = backup_dir.join(file);
            let (_, want) = hash_file(&src).map_err(|e| e.to_string())?;
            let tmp = dest.join(format!(".{file}.partial"));
            std::fs::copy(&src, &tmp)
                .map_err(|e| format!("cannot copy to {}: {e}", tmp.display()))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("cannot fsync {}: {e}", tmp.display()))?;
            let (_, got) = hash_file(&tmp).map_err(|e| e.to_string())?;
            if got != want {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!(
                    "the copy of {file} in {} hashes to {got}, not {want}",
                    dest.display()
                ));
            }
            std::fs::rename(&tmp, dest.join(file)).map_err(|e| e.to_string())?;
        }
        return Ok(format!("dir:{}", dest.display()));
    }
    let (Some(copy_cmd), Some(fetch_cmd)) = (&o.copy, &o.fetch) else {
        return Err("offsite needs `dir`, or `copy` and `fetch`".into());
    };
    let timeout = Duration::from_secs(o.timeout_secs);
    for (file, _) in &files {
        let src = backup_dir.join(file);
        let (_, want) = hash_file(&src).map_err(|e| e.to_string())?;
        let name = format!("{id}/{file}");
        let fill = |arg: &String| {
            arg.replace("{file}", &src.display().to_string())
                .replace("{name}", &name)
                .replace("{app}", app)
        };
        let args: Vec<String> = copy_cmd.iter().map(fill).collect();
        run(&args, timeout, None)?;
        let args: Vec<String> = fetch_cmd.iter().map(fill).collect();
        let mut hasher = Sha256::new();
        run(&args, timeout, Some(&mut hasher))?;
        let got = hex::encode(hasher.finalize());
        if got != want {
            return Err(format!(
                "`{}` returned {name} hashing to {got}, not {want}; the offsite copy is not trustworthy",
                fetch_cmd.join(" ")
            ));
        }
    }
    Ok(format!("command:{}", copy_cmd.join(" ")))
}

/// Runs a program under a deadline; stdout goes into `hash` when given.
fn run(args: &[String], timeout: Duration, hash: Option<&mut Sha256>) -> Result<(), String> {
    let (program, rest) = args.split_first().ok_or("empty offsite command")?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(if hash.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + timeout;
    // stderr is drained on a thread (bounded tail) so a chatty tool cannot block.
    let mut stderr = child.stderr.take().expect("piped");
    let tail = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 4096 {
                buf.drain(..buf.len() - 4096);
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    if let Some(h) = hash {
        let mut out = child.stdout.take().expect("piped");
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not finish within {}s",
                    timeout.as_secs()
                ));
            }
            let n = out.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            h.update(&chunk[..n]);
        }
    }
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program} did not finish within {}s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = tail.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{program} failed ({status}): {}", err.trim()));
    }
    Ok(())
}
