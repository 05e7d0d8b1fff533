//! The content-addressed artifact store, `STATE_DIR/artifacts/<sha256>`
//! (issue 11): what it holds, which artifacts something still needs, and the
//! two ways an artifact leaves it: *discarded* after a stage from it failed,
//! or *evicted*, oldest first, to make room for an upload under
//! `limits.max_artifact_store_bytes`.
//!
//! # What keeps an artifact
//!
//! After a failed stage the artifact is removed unless it is still
//! **referenced**: a release of a declared app that exists on disk was staged
//! from it, another queued or running stage job names it, an upload of it is
//! in progress, or a controller asked for it (upload or `HasArtifact`) after
//! the failed job was submitted (another deployment is about to use it).
//!
//! Eviction is stricter about space and only spares what is **pinned**: the
//! artifact of each app's current release and of its rollback target, one a
//! queued or running stage job names, one being uploaded, and one asked for
//! since the oldest app lock still in force was taken (the deployment that
//! holds it uploads, then stages; between the two nothing references the
//! artifact but the lock). The artifacts of older releases still on disk are
//! evictable: their releases are unpacked already, and a controller that
//! needs one again finds it missing and uploads it.
//!
//! An artifact's age is its file's mtime, which the agent sets when it is
//! stored and whenever a controller asks for it, so "oldest" means least
//! recently asked for. Every decision and removal happens under the store
//! lock ([`crate::state::Agent::store_lock`]), which the upload,
//! `HasArtifact` and stage-submission paths also take: none of them can see
//! an artifact that is about to go.
//! `HasArtifact` reads the file itself, so a removed artifact answers "not
//! here" and the controller uploads it again.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use golive_shared::config::AgentConfig;
use golive_shared::protocol::UnixMillis;

use crate::journal::Journal;
use crate::release::layout::AppLayout;
use crate::state::artifacts_dir;

/// One artifact in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha: String,
    pub bytes: u64,
    /// The file's mtime: when it was stored or last asked for.
    pub touched: UnixMillis,
}

/// Why an upload does not fit even with every unpinned artifact evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    /// Bytes stored plus bytes of uploads in progress.
    pub used: u64,
    /// Of `used`, what eviction may not touch.
    pub pinned: u64,
}

/// The artifacts in `dir` (files named by a sha256; partial uploads and
/// anything else are not artifacts).
pub fn list(dir: &Path) -> io::Result<Vec<Stored>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if golive_shared::names::check_sha256(&name).is_err() {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.push(Stored {
            sha: name,
            bytes: meta.len(),
            touched: meta.modified().map(millis).unwrap_or(0),
        });
    }
    Ok(out)
}

fn millis(t: SystemTime) -> UnixMillis {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as UnixMillis)
}

/// Marks an artifact as just asked for (its mtime is its age in the store).
/// A failure only costs eviction order, so the caller may ignore it.
pub fn touch(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.set_modified(SystemTime::now())
}

/// Which artifacts to evict so that `incoming` more bytes fit under `cap`:
/// indexes into `stored`, oldest first, as few as the oldest-first order
/// allows. `in_flight` is the bytes of uploads in progress. Pure.
pub fn choose_evictions(
    stored: &[Stored],
    in_flight: u64,
    incoming: u64,
    cap: u64,
    pinned: &dyn Fn(&Stored) -> bool,
) -> Result<Vec<usize>, Full> {
    let used = stored
        .iter()
        .map(|s| s.bytes)
        .sum::<u64>()
        .saturating_add(in_flight);
    let Some(need) = used.saturating_add(incoming).checked_sub(cap) else {
        return Ok(Vec::new());
    };
    if need == 0 {
        return Ok(Vec::new());
    }
    let mut candidates: Vec<usize> = (0..stored.len()).filter(|&i| !pinned(&stored[i])).collect();
    candidates.sort_by(|&a, &b| {
        (stored[a].touched, &stored[a].sha).cmp(&(stored[b].touched, &stored[b].sha))
    });
    let mut freed = 0u64;
    let mut out = Vec::new();
    for i in candidates {
        if freed >= need {
            break;
        }
        freed += stored[i].bytes;
        out.push(i);
    }
    if freed < need {
        let pinned = used - in_flight - freed;
        return Err(Full {
            used,
            pinned: pinned + in_flight,
        });
    }
    Ok(out)
}

/// What eviction may not touch, read from the journal and the app layouts.
struct Pins {
    shas: HashSet<String>,
    /// Artifacts asked for at or after this instant are pinned too.
    asked_since: Option<UnixMillis>,
}

impl Pins {
    fn read(config: &AgentConfig, journal: &Journal, now: UnixMillis) -> Result<Pins, String> {
        let j = |e: crate::journal::JournalError| e.to_string();
        let releases = journal.release_artifacts().map_err(j)?;
        let mut shas = HashSet::new();
        for (name, app) in &config.apps {
            let layout = AppLayout::new(&app.root);
            let of_app = || releases.iter().filter(|(a, _, _)| a == name);
            match layout.current() {
                Ok(current) => {
                    let back = journal
                        .rollback_target(name, current.as_deref(), |id| {
                            layout.release_dir(id).is_dir()
                        })
                        .map_err(j)?;
                    for (_, id, sha) in of_app() {
                        if Some(id) == current.as_ref() || Some(id) == back.as_ref() {
                            shas.insert(sha.clone());
                        }
                    }
                }
                // Which release is live cannot be told: spare every release's
                // artifact of this app rather than guess.
                Err(_) => shas.extend(of_app().map(|(_, _, sha)| sha.clone())),
            }
        }
        shas.extend(
            journal
                .stage_jobs_in_flight()
                .map_err(j)?
                .into_iter()
                .map(|(_, sha)| sha),
        );
        shas.extend(
            journal
                .uploads_in_flight()
                .map_err(j)?
                .into_iter()
                .map(|(sha, _)| sha),
        );
        Ok(Pins {
            shas,
            asked_since: journal.oldest_live_lock(now).map_err(j)?,
        })
    }

    fn holds(&self, s: &Stored) -> bool {
        self.shas.contains(&s.sha) || self.asked_since.is_some_and(|t| s.touched >= t)
    }
}

/// Why [`make_room`] did not make room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The upload cannot fit; the message names the cap, the sizes and the fix.
    #[error("{0}")]
    Full(String),
    /// The store or the journal could not be read or changed.
    #[error("{0}")]
    Store(String),
}

/// Makes room for an upload of `incoming` bytes under
/// `limits.max_artifact_store_bytes`, evicting unpinned artifacts oldest
/// first and logging each; or, when even that is not enough, evicts nothing
/// and refuses. The caller holds the store lock.
pub fn make_room(
    config: &AgentConfig,
    journal: &Journal,
    sha: &str,
    incoming: u64,
    now: UnixMillis,
) -> Result<(), RoomError> {
    let dir = artifacts_dir(config);
    let cap = config.limits.max_artifact_store_bytes;
    let stored =
        list(&dir).map_err(|e| RoomError::Store(format!("cannot list {}: {e}", dir.display())))?;
    let j = |e: crate::journal::JournalError| RoomError::Store(e.to_string());
    let in_flight: u64 = journal
        .uploads_in_flight()
        .map_err(j)?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let used = stored.iter().map(|s| s.bytes).sum::<u64>() + in_flight;
    if used.saturating_add(incoming) <= cap {
        return Ok(());
    }
    let pins = Pins::read(config, journal, now).map_err(RoomError::Store)?;
    let evict = choose_evictions(&stored, in_flight, incoming, cap, &|s| pins.holds(s)).map_err(
        |full| {
            RoomError::Full(format!(
                "agent {} cannot take artifact {sha} ({incoming} bytes): its artifact store would pass \
                 limits.max_artifact_store_bytes ({cap} bytes). The store holds {} bytes, {} of them \
                 needed (the current and rollback releases' artifacts, queued or running stage jobs, \
                 uploads in progress, artifacts a deployment holding a lock is about to stage), so \
                 evicting everything else would still leave {} bytes with this upload; nothing was \
                 evicted. Raise limits.max_artifact_store_bytes in the agent config and restart the \
                 agent, or retry once the uploads in progress have finished",
                config.agent.name,
                full.used,
                full.pinned,
                full.pinned.saturating_add(incoming),
            ))
        },
    )?;
    for i in evict {
        let victim = &stored[i];
        let path = dir.join(&victim.sha);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RoomError::Store(format!(
                    "cannot evict {}: {e}",
                    path.display()
                )));
            }
        }
        let why = format!(
            "evicted to make room for {} under limits.max_artifact_store_bytes ({cap} bytes)",
            &sha[..12]
        );
        journal
            .artifact_removed(&victim.sha, "evicted", &why)
            .map_err(j)?;
        tracing::info!(
            "evicted artifact {} ({} bytes, last asked for {}) from the store to make room for {sha} \
             ({incoming} bytes) under limits.max_artifact_store_bytes ({cap} bytes)",
            victim.sha,
            victim.bytes,
            golive_shared::timefmt::utc(victim.touched)
        );
    }
    Ok(())
}

/// What [`discard_after_failed_stage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discard {
    Removed {
        bytes: u64,
    },
    /// Kept, and why (something still references it).
    Kept(String),
    /// Not in the store (already gone).
    Absent,
}

/// After stage job `job` from artifact `sha` failed: removes the artifact
/// unless something still references it (see the module docs). `submitted`
/// is when the failed job was submitted.
pub fn discard_after_failed_stage(
    config: &AgentConfig,
    journal: &Journal,
    sha: &str,
    job: u64,
    submitted: UnixMillis,
) -> Result<Discard, String> {
    let j = |e: crate::journal::JournalError| e.to_string();
    let path = artifacts_dir(config).join(sha);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Discard::Absent),
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    };
    for (app, id, used) in journal.release_artifacts().map_err(j)? {
        if used == sha
            && let Some(declared) = config.app(&app)
            && AppLayout::new(&declared.root).release_dir(&id).is_dir()
        {
            return Ok(Discard::Kept(format!(
                "release {id} of app {app} was staged from it"
            )));
        }
    }
    if let Some((other, _)) = journal
        .stage_jobs_in_flight()
        .map_err(j)?
        .into_iter()
        .find(|(other, used)| *other != job && used == sha)
    {
        return Ok(Discard::Kept(format!("job {other} is about to stage it")));
    }
    if journal
        .uploads_in_flight()
        .map_err(j)?
        .iter()
        .any(|(s, _)| s == sha)
    {
        return Ok(Discard::Kept("an upload of it is in progress".into()));
    }
    if meta.modified().map(millis).unwrap_or(0) > submitted {
        return Ok(Discard::Kept(
            "a controller asked for it after this job was submitted".into(),
        ));
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Discard::Absent),
        Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
    }
    journal
        .artifact_removed(
            sha,
            "discarded",
            &format!("removed after stage job {job} from it failed"),
        )
        .map_err(j)?;
    Ok(Discard::Removed { bytes: meta.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(sha: char, bytes: u64, touched: UnixMillis) -> Stored {
        Stored {
            sha: sha.to_string().repeat(64),
            bytes,
            touched,
        }
    }

    fn shas(stored: &[Stored], picked: &[usize]) -> String {
        picked.iter().map(|&i| &stored[i].sha[..1]).collect()
    }

    #[test]
    fn nothing_is_evicted_while_the_upload_fits() {
        let stored = [art('a', 40, 1), art('b', 40, 2)];
        let none = |_: &Stored| false;
        assert_eq!(choose_evictions(&stored, 0, 20, 100, &none), Ok(vec![]));
        // Exactly at the cap fits.
        assert_eq!(choose_evictions(&stored, 10, 10, 100, &none), Ok(vec![]));
    }

    #[test]
    fn the_oldest_unpinned_go_first_and_no_more_than_needed() {
        let stored = [
            art('c', 30, 3),
            art('a', 30, 1),
            art('b', 30, 2),
            art('d', 30, 4),
        ];
        let none = |_: &Stored| false;
        // 120 stored + 30 incoming, cap 100: 50 must go -> the two oldest.
        let picked = choose_evictions(&stored, 0, 30, 100, &none).unwrap();
        assert_eq!(shas(&stored, &picked), "ab");
        // The oldest is pinned (live): it stays, the next two go.
        let live = |s: &Stored| s.sha.starts_with('a');
        let picked = choose_evictions(&stored, 0, 30, 100, &live).unwrap();
        assert_eq!(shas(&stored, &picked), "bc");
    }

    #[test]
    fn uploads_in_flight_count_against_the_cap() {
        let stored = [art('a', 30, 1), art('b', 30, 2)];
        let none = |_: &Stored| false;
        let picked = choose_evictions(&stored, 40, 20, 100, &none).unwrap();
        assert_eq!(shas(&stored, &picked), "a");
    }

    #[test]
    fn an_upload_that_cannot_fit_evicts_nothing_and_says_why() {
        let stored = [art('a', 50, 1), art('b', 30, 2)];
        let live = |s: &Stored| s.sha.starts_with('a');
        // 80 stored + 10 in flight + 50 incoming, cap 100; only b (30) may
        // go, which leaves 110.
        assert_eq!(
            choose_evictions(&stored, 10, 50, 100, &live),
            Err(Full {
                used: 90,
                pinned: 60
            })
        );
    }

    /// An agent config with state in `dir/state` and app `shop` at `dir/shop`,
    /// its store capped at `cap` bytes.
    fn world(dir: &Path, cap: u64) -> (AgentConfig, Journal) {
        let mut config: AgentConfig = toml::from_str(&format!(
            "[agent]\nname = \"a1\"\nlisten = \"127.0.0.1:7443\"\nstate_dir = {:?}\n\
             [tls]\nca = \"/x\"\ncert = \"/x\"\nkey = \"/x\"\n\
             [limits]\nmax_artifact_bytes = {cap}\nmax_artifact_store_bytes = {cap}\n",
            dir.join("state")
        ))
        .unwrap();
        let app = serde_json::from_value(serde_json::json!({ "root": dir.join("shop") })).unwrap();
        config.apps.insert("shop".into(), app);
        fs::create_dir_all(artifacts_dir(&config)).unwrap();
        let journal = Journal::open(&dir.join("j.db")).unwrap();
        (config, journal)
    }

    /// Stores `bytes` bytes as artifact `c…c`, uploaded and asked for at `at`.
    fn put(config: &AgentConfig, journal: &Journal, c: char, bytes: usize, at: u64) -> String {
        let sha = c.to_string().repeat(64);
        let path = artifacts_dir(config).join(&sha);
        fs::write(&path, vec![0u8; bytes]).unwrap();
        fs::File::open(&path)
            .unwrap()
            .set_modified(UNIX_EPOCH + std::time::Duration::from_secs(at))
            .unwrap();
        let row = journal
            .upload_started(&sha, bytes as u64, "p", "alice", 1)
            .unwrap();
        journal.upload_finished(row, None, 2).unwrap();
        sha
    }

    /// Stages release `id` of shop from `sha`: its directory and its row.
    fn staged(config: &AgentConfig, journal: &Journal, id: &str, sha: &str) {
        fs::create_dir_all(config.apps["shop"].root.join("releases").join(id)).unwrap();
        journal
            .record_staged("shop", id, Some(sha), None, 1)
            .unwrap();
    }

    fn states(journal: &Journal) -> Vec<(String, i64)> {
        journal.upload_states().unwrap()
    }

    #[test]
    fn a_failed_stage_discards_its_artifact_unless_something_uses_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, journal) = world(tmp.path(), 1 << 20);
        let stage = |sha: &str, key: &str| {
            let spec =
                golive_shared::protocol::JobSpec::Stage(golive_shared::protocol::StageRelease {
                    app: "shop".into(),
                    release: key.into(),
                    artifact_sha256: sha.into(),
                });
            journal.insert_job(key, &spec, "alice", 5_000).unwrap().0.id
        };
        let now = 10_000_000;
        let discard = |sha: &str, job: u64| {
            discard_after_failed_stage(&config, &journal, sha, job, now).unwrap()
        };
        // Nothing else uses it: removed, its row says so, and the store
        // answers for it no more.
        let lone = put(&config, &journal, 'a', 10, 1_000);
        let job = stage(&lone, "k1");
        assert_eq!(discard(&lone, job), Discard::Removed { bytes: 10 });
        assert!(!artifacts_dir(&config).join(&lone).exists());
        assert_eq!(discard(&lone, job), Discard::Absent);
        // A release on disk was staged from it.
        let used = put(&config, &journal, 'b', 10, 1_000);
        staged(&config, &journal, "v1", &used);
        let job = stage(&used, "k2");
        assert!(
            matches!(discard(&used, job), Discard::Kept(ref why) if why.contains("release v1 of app shop")),
        );
        // ... but a release row whose directory is gone keeps nothing.
        fs::remove_dir(config.apps["shop"].root.join("releases/v1")).unwrap();
        assert_eq!(discard(&used, job), Discard::Removed { bytes: 10 });
        // Another queued stage job names it.
        let queued = put(&config, &journal, 'c', 10, 1_000);
        let job = stage(&queued, "k3");
        let other = stage(&queued, "k4");
        assert!(
            matches!(discard(&queued, job), Discard::Kept(ref why) if why.contains(&format!("job {other}"))),
        );
        // Asked for after the failed job was submitted (at `now`).
        let asked = put(&config, &journal, 'd', 10, now as u64 / 1000 + 5);
        let job = stage(&asked, "k5");
        assert!(
            matches!(discard(&asked, job), Discard::Kept(ref why) if why.contains("asked for it")),
        );
        assert_eq!(
            states(&journal),
            vec![("discarded".into(), 2), ("stored".into(), 2)]
        );
    }

    #[test]
    fn make_room_evicts_the_oldest_unpinned_and_refuses_what_cannot_fit() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, journal) = world(tmp.path(), 100);
        let root = &config.apps["shop"].root;
        // Live (current) and oldest; then two unpinned, the older evicted first.
        let live = put(&config, &journal, 'a', 40, 1_000);
        let old = put(&config, &journal, 'b', 20, 2_000);
        let newer = put(&config, &journal, 'c', 20, 3_000);
        staged(&config, &journal, "v1", &live);
        std::os::unix::fs::symlink("releases/v1", root.join("current")).unwrap();
        let incoming = "f".repeat(64);
        make_room(&config, &journal, &incoming, 30, 10_000_000).unwrap();
        let left: Vec<String> = list(&artifacts_dir(&config))
            .unwrap()
            .into_iter()
            .map(|s| s.sha)
            .collect();
        assert!(left.contains(&live) && left.contains(&newer) && !left.contains(&old));
        assert_eq!(
            states(&journal),
            vec![("evicted".into(), 1), ("stored".into(), 2)]
        );
        // 60 stored, 40 of them live: 70 more cannot fit; nothing goes.
        let err = make_room(&config, &journal, &incoming, 70, 10_000_000).unwrap_err();
        let RoomError::Full(msg) = err else {
            panic!("{err}")
        };
        assert!(
            msg.contains("limits.max_artifact_store_bytes (100 bytes)")
                && msg.contains("holds 60 bytes, 40 of them needed")
                && msg.contains("still leave 110 bytes")
                && msg.contains("nothing was evicted"),
            "{msg}"
        );
        assert_eq!(list(&artifacts_dir(&config)).unwrap().len(), 2);
        // An app lock taken before `newer` was asked for pins it too.
        journal
            .put_lock(
                &golive_shared::protocol::LockInfo {
                    app: "shop".into(),
                    deployment: "d1".into(),
                    holder: "alice".into(),
                    since: 2_500_000,
                    expires_at: 20_000_000,
                },
                "t",
            )
            .unwrap();
        assert!(matches!(
            make_room(&config, &journal, &incoming, 50, 10_000_000),
            Err(RoomError::Full(_))
        ));
        // Once the lock has expired, `newer` may go.
        make_room(&config, &journal, &incoming, 50, 30_000_000).unwrap();
        assert_eq!(list(&artifacts_dir(&config)).unwrap().len(), 1);
    }

    #[test]
    fn the_store_lists_only_artifacts_with_their_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let sha = "e".repeat(64);
        fs::write(tmp.path().join(&sha), b"12345").unwrap();
        fs::write(tmp.path().join(format!(".partial-{sha}-1-0")), b"xx").unwrap();
        fs::write(tmp.path().join("notes.txt"), b"xx").unwrap();
        fs::create_dir(tmp.path().join("f".repeat(64))).unwrap();
        let old = UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::open(tmp.path().join(&sha))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            list(tmp.path()).unwrap(),
            vec![Stored {
                sha: sha.clone(),
                bytes: 5,
                touched: 1_000_000_000
            }]
        );
        touch(&tmp.path().join(&sha)).unwrap();
        assert!(list(tmp.path()).unwrap()[0].touched > 1_000_000_000);
    }
}
