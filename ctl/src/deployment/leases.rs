//! The app locks a deployment holds on its hosts (leases renewed in the
//! background) and the controller's heartbeat in the journal.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use golive_shared::protocol::{LockRequest, LockResponse, Request, Response};

use crate::client::ClientError;
use crate::journal::Journal;
use crate::plan::Plan;
use crate::transport::Link;

/// Why a deployment has no lock, or lost one (issue 14: typed, the exit
/// code from [`crate::deployment::DeployError::exit`]).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A host refused the lock (held by another deployment, or the agent
    /// could not be asked): nothing was changed, none is held.
    #[error("could not lock {app} on {host}: {source}")]
    Refused {
        app: String,
        host: String,
        source: Box<ClientError>,
    },
    /// Someone broke or took a lock this deployment held.
    #[error("the lock on {app} at {host} was broken or taken by someone else; stopping")]
    Lost { app: String, host: String },
}

/// A held app lock on one host, renewed in the background until dropped.
pub(crate) struct Lease {
    pub(crate) client: Link,
    pub(crate) app: String,
    pub(crate) token: String,
    pub(crate) renewer: tokio::task::JoinHandle<()>,
    pub(crate) lost: Arc<AtomicBool>,
}

impl Lease {
    pub(crate) async fn acquire(
        client: &Link,
        app: &str,
        deployment: &str,
        ttl: u32,
    ) -> Result<Lease, ClientError> {
        let resp = client
            .call(&Request::Lock(LockRequest::Acquire {
                app: app.into(),
                deployment: deployment.into(),
                ttl_secs: ttl,
            }))
            .await?;
        let LockResponse::Held { token, .. } = (match resp {
            Response::Lock(l) => l,
            other => return Err(client.unexpected(&other)),
        }) else {
            return Err(client.unexpected(&Response::Jobs(vec![])));
        };
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let client = client.clone();
            let app = app.to_string();
            let token = token.clone();
            let lost = Arc::clone(&lost);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs((ttl / 3).max(1) as u64)).await;
                    let renew = Request::Lock(LockRequest::Renew {
                        app: app.clone(),
                        token: token.clone(),
                        ttl_secs: ttl,
                    });
                    match client.call(&renew).await {
                        Ok(_) => {}
                        // Someone broke or took the lock: stop at the next step.
                        Err(ClientError::Agent { .. }) => {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        // Unreachable for a moment: the lease still has time.
                        Err(_) => {}
                    }
                }
            })
        };
        Ok(Lease {
            client: client.clone(),
            app: app.into(),
            token,
            renewer,
            lost,
        })
    }

    pub(crate) fn check(&self) -> Result<(), LeaseError> {
        if self.lost.load(Ordering::SeqCst) {
            Err(LeaseError::Lost {
                app: self.app.clone(),
                host: self.client.host.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Stops renewing the lock and sends nothing: the host keeps it until
    /// its lease runs out (`lock_ttl_secs`). For a host lost in the
    /// deployment, which would not answer a release.
    pub(crate) fn abandon(self) {
        self.renewer.abort();
    }

    pub(crate) async fn release(self) {
        self.renewer.abort();
        let release = Request::Lock(LockRequest::Release {
            app: self.app,
            token: self.token,
        });
        let _ = tokio::time::timeout(RELEASE_WITHIN, self.client.call(&release)).await;
    }
}

/// How long a lock's release may take: a host that does not answer keeps
/// the lock until its lease runs out (`lock_ttl_secs`), and the end of the
/// deployment does not wait for it (issue 14: found by the sequencer's
/// test of a hung host, whose release waited for the client's 90 s).
pub(crate) const RELEASE_WITHIN: Duration = Duration::from_secs(10);

/// Releases every lease, [`RELEASE_AT_ONCE`] hosts at a time.
pub(crate) async fn release_all(leases: Vec<Lease>) {
    crate::fanout::all(RELEASE_AT_ONCE, leases, Lease::release).await;
}

/// Locks are released this many hosts at a time: one small request each,
/// on every way out of a deployment (the plan's limit is not at hand
/// there, and releasing changes nothing live).
pub(crate) const RELEASE_AT_ONCE: usize = crate::plan::DEFAULT_PARALLEL as usize;

/// Phase 2: the app lock on every host, `[deploy] parallel` at a time, or
/// on none: after a refusal no more are asked for and those taken are
/// released. `Err` names the first host in plan order that refused.
pub(crate) async fn lock_all(plan: &Plan, id: &str) -> Result<Vec<Lease>, LeaseError> {
    let taken = crate::fanout::until(
        plan.parallel,
        &plan.hosts,
        |h| Lease::acquire(&h.client, &plan.app, id, plan.lock_ttl_secs),
        Result::is_err,
    )
    .await;
    let mut leases = Vec::new();
    let mut refused = None;
    for (host, r) in plan.hosts.iter().zip(taken) {
        match r {
            Some(Ok(l)) => leases.push(l),
            Some(Err(source)) if refused.is_none() => {
                refused = Some(LeaseError::Refused {
                    app: plan.app.clone(),
                    host: host.name.clone(),
                    source: Box::new(source),
                });
            }
            Some(Err(_)) | None => {}
        }
    }
    match refused {
        None => Ok(leases),
        Some(e) => {
            release_all(leases).await;
            Err(e)
        }
    }
}

/// The controller's heartbeat in the journal (issue 14), written from its
/// own thread and connection every [`crate::journal::HEARTBEAT_EVERY`]
/// while the deployment runs; stopped when dropped. A deployment whose
/// heartbeat went stale (or whose pid died) shows as interrupted.
pub(crate) struct Heartbeat {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub(crate) fn start(state: &Path, id: &str) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, state, id) = (Arc::clone(&stop), state.to_path_buf(), id.to_string());
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || {
                    let Ok(journal) = Journal::open(&state) else {
                        return;
                    };
                    let pid = std::process::id();
                    let tick = Duration::from_millis(100);
                    let mut since = std::time::Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        // Unparked by the drop: a deploy's end waits for no tick.
                        std::thread::park_timeout(tick);
                        if since.elapsed() >= crate::journal::HEARTBEAT_EVERY {
                            since = std::time::Instant::now();
                            let _ = journal.heartbeat(&id, pid);
                        }
                    }
                })
                .ok()
        };
        Heartbeat { stop, thread }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
