//! Request handlers, one module per message family, behind one dispatch that
//! owns authorisation: every request names the role it needs, and the peer's
//! certificate role must allow it.

pub mod agent;
pub mod artifact;

use std::sync::Arc;

use golive_shared::identity::{PeerIdentity, Role};
use golive_shared::protocol::{ErrorBody, ErrorCode, LockRequest, Request, Response};

use crate::state::Agent;
use crate::{jobs, lock, probe};

/// The role each request needs (SPEC §3). Reads are viewer; anything that
/// changes the host is operator; breaking someone else's lock is operator
/// too, but audited with its reason.
pub fn required_role(req: &Request) -> Role {
    match req {
        Request::Hello(_)
        | Request::Status(_)
        | Request::JobEvents(_)
        | Request::ListJobs(_)
        | Request::RunProbes(_)
        | Request::HasArtifact(_)
        | Request::ListBackups(_)
        | Request::MigrationStatus(_)
        | Request::ListFlags(_)
        | Request::Preflight(_)
        | Request::WatchdogStatus(_) => Role::Viewer,
        Request::SubmitJob(_)
        | Request::ArmWatchdog(_)
        | Request::ConfirmWatchdog(_)
        | Request::DisarmWatchdog(_) => Role::Operator,
        Request::Lock(LockRequest::Break { .. }) => Role::Operator,
        Request::Lock(_) => Role::Operator,
    }
}

/// Refuses, whatever the request: revoked certificates (revoked after the
/// connection opened; the handshake refuses the others), certificates
/// without a role, and agent certificates. The server asks this before it
/// reads a body, so such a peer costs no decoding and no audit row.
pub fn admissible(agent: &Agent, peer: &PeerIdentity) -> Result<(), ErrorBody> {
    if agent.is_revoked(&peer.serial) {
        return Err(ErrorBody::new(
            ErrorCode::Revoked,
            format!(
                "agent {} refuses certificate {:?} (serial {}): it is on the revocation list; \
                 issue a new certificate with golivectl cert",
                agent.config().agent.name,
                peer.name,
                peer.serial
            ),
        ));
    }
    match peer.role {
        None => Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "certificate {:?} carries no golive role; issue one with `golivectl cert operator NAME --role viewer|operator|admin`",
                peer.name
            ),
        )),
        Some(Role::Agent) => Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "certificate {:?} is an agent certificate and is never accepted as an operator; \
                 use an operator certificate (`golivectl cert operator NAME --role operator`)",
                peer.name
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// [`admissible`], then the role: refuses roles below `required`.
pub fn admit(
    agent: &Agent,
    peer: &PeerIdentity,
    operation: &str,
    required: Role,
) -> Result<(), ErrorBody> {
    admissible(agent, peer)?;
    match peer.role {
        Some(role) if !role.allows(required) => Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "{role} certificate {:?} may not {operation}: it needs the {required} role \
                 (`golivectl cert operator NAME --role {required}`)",
                peer.name
            ),
        )),
        _ => Ok(()),
    }
}

pub async fn dispatch(
    agent: &Arc<Agent>,
    peer: &PeerIdentity,
    req: Request,
) -> Result<Response, ErrorBody> {
    match req {
        Request::Hello(h) => Ok(Response::Hello(agent::hello(agent, peer, h))),
        Request::Status(s) => agent::status(agent, s).map(Response::Status),
        Request::SubmitJob(s) => jobs::submit(agent, peer, s).map(Response::Job),
        Request::JobEvents(e) => jobs::events(agent, e).await.map(Response::Events),
        Request::ListJobs(l) => agent
            .journal
            .jobs(l.limit.min(1000))
            .map(Response::Jobs)
            .map_err(crate::state::internal),
        Request::Lock(l) => lock::handle(agent, &peer.name, l).map(Response::Lock),
        Request::RunProbes(p) => {
            let app = &agent.known_app(&p.app)?;
            // golive's maintenance windows, left out of access-log figures.
            let maintenance = if app
                .probes
                .iter()
                .any(|p| matches!(p, golive_shared::config::ProbeConfig::AccessLog(_)))
            {
                crate::maintenance::excluded_spans(
                    &agent.journal,
                    &p.app,
                    golive_shared::protocol::now_millis(),
                    std::time::Duration::from_secs(crate::accesslog::MAX_WINDOW_SECS),
                )
                .map_err(crate::state::internal)?
            } else {
                Vec::new()
            };
            let report = probe::run_app(&p.app, app, &p.tags, maintenance).await;
            agent.probes_seen.record_all(&report);
            Ok(Response::Probes(report))
        }
        Request::HasArtifact(h) => artifact::has(agent, &h.sha256).map(Response::Artifact),
        Request::MigrationStatus(m) => {
            let app = agent.known_app(&m.app)?;
            crate::migrate::declared(&m.app, &app)
                .map_err(|e| ErrorBody::new(ErrorCode::NotDeclared, e))?;
            if let Some(r) = &m.release {
                golive_shared::names::check_release_id(r)
                    .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e))?;
            }
            let config = agent.config().clone();
            let req = m.clone();
            // psql/mariadb clients block: run them off the async thread.
            tokio::task::spawn_blocking(move || crate::migrate::release_status(&config, &req))
                .await
                .map_err(crate::state::internal)?
                .map(Response::MigrationStatus)
                .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e))
        }
        Request::ListFlags(l) => {
            let app = &agent.known_app(&l.app)?;
            crate::flags::config(&l.app, app)
                .map_err(|e| ErrorBody::new(ErrorCode::NotDeclared, e))?;
            crate::flags::list(&agent.journal, &l.app, app)
                .map(Response::Flags)
                .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e))
        }
        Request::Preflight(p) => crate::preflight::handle(agent, p)
            .await
            .map(Response::Preflight),
        Request::ArmWatchdog(a) => crate::watchdog::arm(agent, &peer.name, a)
            .await
            .map(Response::Watchdog),
        Request::ConfirmWatchdog(c) => crate::watchdog::confirm(agent, &peer.name, c)
            .await
            .map(Response::Watchdog),
        Request::DisarmWatchdog(d) => crate::watchdog::disarm(agent, &peer.name, d)
            .await
            .map(Response::Watchdog),
        Request::WatchdogStatus(w) => {
            crate::watchdog::status(agent, &w).map(Response::WatchdogStatus)
        }
        Request::ListBackups(l) => {
            agent.known_app(&l.app)?;
            crate::backup::run::list(&agent.config(), &agent.journal, &l.app)
                .map(Response::Backups)
                .map_err(crate::state::internal)
        }
    }
}
