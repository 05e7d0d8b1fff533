//! The optional offsite copy of a complete backup: to a directory, or
//! through operator-written `copy` and `fetch` commands (e.g. rclone or the
//! aws CLI). Either way the copy's sha256 is checked after the copy: the
//! directory copy is re-read, and `fetch` must stream the remote copy back
//! to stdout. Commands are programs with arguments, never a shell string,
//! run by the one process supervisor, [`crate::exec`].

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use golive_shared::config::{Offsite, RunDefaults};
use golive_shared::protocol::BackupPart;
use sha2::{Digest, Sha256};

use super::stream::hash_file;
use crate::exec::{self, Prepared};

/// Copies every part and the manifest; returns where they went. Commands
/// get the app's `[run]` env and grace period.
pub fn copy(
    o: &Offsite,
    defaults: &RunDefaults,
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
        // Owner-only, as the local backup (issue 11); the copies keep the
        // parts' 0600.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dest)
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
        run(&args, defaults, timeout, None)?;
        let args: Vec<String> = fetch_cmd.iter().map(fill).collect();
        let mut hasher = Sha256::new();
        run(&args, defaults, timeout, Some(&mut hasher))?;
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

/// Output kept from a copy or fetch command (stderr) for error messages.
const MAX_OUTPUT: usize = 4 * 1024;

/// Runs one copy or fetch command through [`exec`]: its own process group,
/// the minimal environment plus the app's `[run] env`, and at the timeout
/// SIGTERM then SIGKILL to the whole group, even while its output is being
/// read. The fetch's stdout goes into `hash` as it arrives.
fn run(
    args: &[String],
    run: &RunDefaults,
    timeout: Duration,
    hash: Option<&mut Sha256>,
) -> Result<(), String> {
    let p = Prepared {
        argv: args.to_vec(),
        cwd: PathBuf::from("/"),
        env: run.env.clone(),
        user: None,
        timeout,
        grace: Duration::from_secs(run.grace_secs),
        max_output: MAX_OUTPUT,
    };
    let shown = p.display();
    let outcome = match hash {
        Some(h) => exec::run_with_stdout(&p, &mut |bytes| h.update(bytes), &mut |_| {}),
        None => exec::run(&p, &mut |_| {}),
    }
    .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if outcome.success() {
        return Ok(());
    }
    let tail = outcome.tail.trim();
    Err(format!(
        "`{shown}` {}{}",
        outcome.describe(timeout),
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A backup directory with one part; returns it and the part.
    fn backup(dir: &Path) -> (PathBuf, Vec<BackupPart>) {
        let b = dir.join("shop-20260101T000000Z-manual");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("uploads.tar.zst"), b"part bytes").unwrap();
        std::fs::write(b.join("manifest.json"), b"{}").unwrap();
        let (_, sha256) = hash_file(&b.join("uploads.tar.zst")).unwrap();
        let part = BackupPart {
            name: "uploads".into(),
            kind: "files".into(),
            file: "uploads.tar.zst".into(),
            bytes: 10,
            sha256,
        };
        (b, vec![part])
    }

    fn commands(copy: &[&str], fetch: &[&str], timeout_secs: u64) -> Offsite {
        let v = |a: &[&str]| Some(a.iter().map(|s| s.to_string()).collect());
        Offsite {
            dir: None,
            copy: v(copy),
            fetch: v(fetch),
            timeout_secs,
        }
    }

    fn defaults() -> RunDefaults {
        RunDefaults {
            grace_secs: 1,
            ..RunDefaults::default()
        }
    }

    /// Live (not zombie) processes whose command line contains `marker`.
    fn alive_with(marker: &str) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat
                    .rfind(')')
                    .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
                !zombie
                    && String::from_utf8_lossy(&cmd)
                        .replace('\0', " ")
                        .contains(marker)
            })
            .count()
    }

    /// Waits up to 5 s for no process to carry `marker`.
    fn all_gone(marker: &str) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while alive_with(marker) > 0 {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Runs `copy` on a thread, bounded: a supervisor that misses its
    /// timeout fails the test instead of hanging it.
    fn copy_bounded(o: Offsite, dir: &Path) -> Result<String, String> {
        let (b, parts) = backup(dir);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(copy(&o, &defaults(), "shop", &b, &parts));
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the offsite copy ignored its timeout")
    }

    #[test]
    fn commands_copy_and_the_fetch_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote");
        std::fs::create_dir(&remote).unwrap();
        let to = format!("{}/{{app}}-$(basename \"$1\")", remote.display());
        let o = commands(
            &["sh", "-c", &format!("cp \"$0\" {to}"), "{file}", "{name}"],
            &["sh", "-c", &format!("cat {to}"), "-", "{name}"],
            10,
        );
        let loc = copy_bounded(o, dir.path()).unwrap();
        assert!(loc.starts_with("command:sh -c"), "{loc}");
        assert_eq!(
            std::fs::read(remote.join("shop-uploads.tar.zst")).unwrap(),
            b"part bytes"
        );

        // A fetch that returns something else: the copy is not trusted.
        let o = commands(&["true"], &["echo", "not the part"], 10);
        let err = copy_bounded(o, dir.path()).unwrap_err();
        assert!(err.contains("not trustworthy"), "{err}");

        // A failing copy names the command and what it said.
        let o = commands(
            &["sh", "-c", "echo no credentials >&2; exit 3"],
            &["true"],
            10,
        );
        let err = copy_bounded(o, dir.path()).unwrap_err();
        assert!(
            err.contains("exit 3") && err.contains("no credentials"),
            "{err}"
        );
    }

    #[test]
    fn issue11_a_copy_past_its_timeout_is_ended_with_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = "1100.7341";
        let o = commands(
            &["sh", "-c", &format!("sleep {marker} & wait")],
            &["true"],
            1,
        );
        let started = Instant::now();
        let err = copy_bounded(o, dir.path()).unwrap_err();
        assert!(err.contains("timed out after 1 s"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(all_gone(marker), "the copy's child outlived its timeout");
    }

    /// The fetch writes a little and then blocks with a child that holds its
    /// stdout: the timeout still fires, for the whole group.
    #[test]
    fn issue11_a_fetch_blocked_mid_stream_is_ended_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = "1100.9257";
        let o = commands(
            &["true"],
            &["sh", "-c", &format!("printf part; sleep {marker} & wait")],
            1,
        );
        let started = Instant::now();
        let err = copy_bounded(o, dir.path()).unwrap_err();
        assert!(err.contains("timed out after 1 s"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(all_gone(marker), "the fetch's child outlived its timeout");
    }
}
