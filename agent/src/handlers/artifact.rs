//! Family `artifact`: streamed, content-addressed uploads.
//!
//! The body streams into `artifacts/.partial-<sha>-<n>` while it is hashed;
//! only when size and sha256 both match is it fsynced and renamed to
//! `artifacts/<sha256>`. The upload is journaled before the first byte, so a
//! crash mid-upload is found at start-up and its partial file removed.
//!
//! Before an upload is accepted the store makes room for it under
//! `limits.max_artifact_store_bytes`, evicting unreferenced artifacts oldest
//! first, or refuses it (`crate::store`). Finding an artifact present, by
//! `HasArtifact` or an upload of one already stored, marks it as just asked
//! for, which is its age in the store.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use golive_shared::identity::PeerIdentity;
use golive_shared::names;
use golive_shared::protocol::{
    ArtifactInfo, ErrorBody, ErrorCode, PROTOCOL_HEADER, PROTOCOL_VERSION, SIZE_HEADER, now_millis,
};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::state::{Agent, internal};

static UPLOAD_SEQ: AtomicU64 = AtomicU64::new(0);

pub fn has(agent: &Agent, sha: &str) -> Result<ArtifactInfo, ErrorBody> {
    names::check_sha256(sha).map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e))?;
    let _store = agent.lock_store();
    present(agent, sha)
}

/// Answers for an artifact from its file, and marks it as just asked for.
/// The caller holds the store lock.
fn present(agent: &Agent, sha: &str) -> Result<ArtifactInfo, ErrorBody> {
    let path = agent.artifacts_dir().join(sha);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => {
            // A stale age only moves it up the eviction order; the answer holds.
            if let Err(e) = crate::store::touch(&path) {
                tracing::warn!("cannot mark artifact {} as asked for: {e}", path.display());
            }
            Ok(ArtifactInfo {
                sha256: sha.into(),
                size: m.len(),
                already_present: true,
            })
        }
        _ => Err(ErrorBody::new(
            ErrorCode::NotFound,
            format!("agent {} has no artifact {sha}", agent.config().agent.name),
        )),
    }
}

/// At most this much of a refused upload's body is read and thrown away
/// before the refusal is sent, and for at most [`DRAIN_TIME`].
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// The upload's write buffer.
const WRITE_BUFFER: usize = 256 * 1024;

/// What an admitted upload needs to be received.
struct Admitted {
    size: u64,
    row: i64,
    partial: std::path::PathBuf,
    final_path: std::path::PathBuf,
}

pub async fn upload(
    agent: &Arc<Agent>,
    peer: &PeerIdentity,
    sha: &str,
    headers: &hyper::HeaderMap,
    mut body: Incoming,
) -> Result<ArtifactInfo, ErrorBody> {
    let admitted = match admit(agent, peer, sha, headers) {
        Ok(Ok(a)) => a,
        // Already stored, or refused: the body is not wanted. A client still
        // sending it when the connection closes sees a broken pipe instead
        // of our answer (issue 12: a refused upload read as "error writing a
        // body"), so read it away first, bounded, like a lingering close.
        Ok(Err(present)) => {
            drain(&mut body).await;
            return Ok(present);
        }
        Err(e) => {
            drain(&mut body).await;
            return Err(e);
        }
    };
    let Admitted {
        size,
        row,
        partial,
        final_path,
    } = admitted;
    // The whole upload has a deadline (issue 11): a client trickling bytes
    // must not hold a connection and a store reservation for as long as it
    // likes. The slowest rate waited for is `limits.min_upload_bytes_per_sec`.
    let limits = &agent.config().limits;
    let allowed = std::time::Duration::from_secs(
        limits.request_timeout_secs + size / limits.min_upload_bytes_per_sec,
    );
    let outcome = match tokio::time::timeout(
        allowed,
        receive(&partial, &final_path, sha, size, body),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(ErrorBody::new(
            ErrorCode::Timeout,
            format!(
                "the upload of {size} bytes did not finish within {}s (limits.request_timeout_secs \
                 plus its size at limits.min_upload_bytes_per_sec); upload from a faster link or \
                 lower min_upload_bytes_per_sec",
                allowed.as_secs()
            ),
        )),
    };
    if outcome.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    let err_text = outcome.as_ref().err().map(|e| e.message.clone());
    agent
        .journal
        .upload_finished(row, err_text.as_deref(), now_millis())
        .map_err(internal)?;
    outcome.map(|()| ArtifactInfo {
        sha256: sha.into(),
        size,
        already_present: false,
    })
}

/// Reads and discards an unwanted body, at most [`DRAIN_BYTES`] within
/// [`DRAIN_TIME`]; errors end it quietly (the answer is what matters).
async fn drain(body: &mut Incoming) {
    let read = async {
        let mut seen = 0u64;
        while seen < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// The checks before an upload's first byte: `Ok(Err(info))` when the
/// artifact is stored already, `Err` when refused; else room is made and
/// the upload journaled.
fn admit(
    agent: &Arc<Agent>,
    peer: &PeerIdentity,
    sha: &str,
    headers: &hyper::HeaderMap,
) -> Result<Result<Admitted, ArtifactInfo>, ErrorBody> {
    let bad = |m: String| ErrorBody::new(ErrorCode::BadRequest, m);
    names::check_sha256(sha).map_err(bad)?;
    if let Some(v) = headers.get(PROTOCOL_HEADER) {
        let theirs: u16 = v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("header {PROTOCOL_HEADER} must be a number")))?;
        if theirs != PROTOCOL_VERSION {
            return Err(ErrorBody::new(
                ErrorCode::VersionMismatch,
                format!(
                    "protocol mismatch: the peer speaks golive protocol {theirs}, this agent speaks {PROTOCOL_VERSION}; \
                     upgrade the older of golivectl and golive-agent"
                ),
            ));
        }
    }
    let size: u64 = headers
        .get(SIZE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("an upload needs a numeric {SIZE_HEADER} header")))?;
    let max = agent.config().limits.max_artifact_bytes;
    if size > max {
        return Err(ErrorBody::new(
            ErrorCode::TooLarge,
            format!(
                "artifact of {size} bytes exceeds this agent's limit of {max} bytes (limits.max_artifact_bytes)"
            ),
        ));
    }
    let dir = agent.artifacts_dir();
    let final_path = dir.join(sha);
    let partial = dir.join(format!(
        ".partial-{sha}-{}-{}",
        std::process::id(),
        UPLOAD_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let partial_str = partial.display().to_string();
    // Room is made and the upload journaled under one hold of the store
    // lock, so a concurrent upload counts this one's bytes.
    let row = {
        let _store = agent.lock_store();
        if final_path.is_file() {
            return present(agent, sha).map(Err);
        }
        crate::store::make_room(&agent.config(), &agent.journal, sha, size, now_millis()).map_err(
            |e| match e {
                crate::store::RoomError::Full(m) => ErrorBody::new(ErrorCode::TooLarge, m),
                crate::store::RoomError::Store(m) => internal(m),
            },
        )?;
        agent
            .journal
            .upload_started(sha, size, &partial_str, &peer.name, now_millis())
            .map_err(internal)?
    };
    Ok(Ok(Admitted {
        size,
        row,
        partial,
        final_path,
    }))
}

async fn receive(
    partial: &Path,
    final_path: &Path,
    sha: &str,
    size: u64,
    mut body: Incoming,
) -> Result<(), ErrorBody> {
    let io = |what: &str, e: std::io::Error| internal(format!("{what} {}: {e}", partial.display()));
    // Owner-only (issue 11): an archive may carry the app's secrets.
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::state::PRIVATE_FILE)
        .open(partial)
        .await
        .map_err(|e| io("cannot create", e))?;
    // The body's frames are a TLS record each (16 KiB): written one by one,
    // each was a hop to a blocking thread (issue 14, speed).
    let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!("the upload broke off after {received} of {size} bytes: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > size {
            return Err(ErrorBody::new(
                ErrorCode::TooLarge,
                format!("the upload sent more than the declared {size} bytes"),
            ));
        }
        hasher.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| io("cannot write", e))?;
    }
    if received != size {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("size mismatch: declared {size} bytes, received {received}"),
        ));
    }
    let got = hex::encode(hasher.finalize());
    if got != sha {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!(
                "sha256 mismatch: declared {sha}, received bytes hash to {got}; the artifact was corrupted in transit or the wrong file was sent"
            ),
        ));
    }
    file.flush().await.map_err(|e| io("cannot write", e))?;
    let file = file.into_inner();
    file.sync_all().await.map_err(|e| io("cannot fsync", e))?;
    drop(file);
    tokio::fs::rename(partial, final_path)
        .await
        .map_err(|e| io("cannot rename", e))?;
    if let Some(dir) = final_path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
