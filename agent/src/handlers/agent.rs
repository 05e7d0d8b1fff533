//! Family `agent`: hello (version handshake) and status.

use golive_shared::GOLIVE_VERSION;
use golive_shared::identity::PeerIdentity;
use golive_shared::protocol::{
    AppStatus, ErrorBody, HelloRequest, HelloResponse, MaintenanceInfo, PROTOCOL_VERSION,
    ReleaseSummary, StatusRequest, StatusResponse, now_millis,
};

use crate::release::layout::AppLayout;
use crate::state::{Agent, internal};

pub fn hello(agent: &Agent, peer: &PeerIdentity, _req: HelloRequest) -> HelloResponse {
    HelloResponse {
        agent_name: agent.config().agent.name.clone(),
        agent_version: GOLIVE_VERSION.into(),
        protocol: PROTOCOL_VERSION,
        peer_name: peer.name.clone(),
        peer_role: peer.role_str().into(),
    }
}

pub fn status(agent: &Agent, req: StatusRequest) -> Result<StatusResponse, ErrorBody> {
    for name in &req.apps {
        agent.known_app(name)?;
    }
    let now = now_millis();
    let mut apps = Vec::new();
    for (name, app) in &agent.config().apps {
        if !req.apps.is_empty() && !req.apps.contains(name) {
            continue;
        }
        let layout = AppLayout::new(&app.root);
        let current = layout.current().ok().flatten();
        let previous = agent
            .journal
            .rollback_target(name, current.as_deref(), |id| {
                layout.release_dir(id).is_dir()
            })
            .map_err(internal)?;
        let on_disk = layout.list_releases().unwrap_or_default();
        let mut releases: Vec<ReleaseSummary> = agent
            .journal
            .releases(name)
            .map_err(internal)?
            .into_iter()
            .filter(|r| on_disk.contains(&r.id))
            .collect();
        // What is on disk but not in the journal (made by hand, or an agent
        // crash between the rename and the journal row) is listed too, with
        // no staging time: `status` says what is on disk (issue 12).
        for id in on_disk {
            if !releases.iter().any(|r| r.id == id) {
                releases.push(ReleaseSummary {
                    id,
                    artifact_sha256: None,
                    staged_at: None,
                    activated_at: None,
                    commit: None,
                });
            }
        }
        let lock = agent
            .journal
            .lock(name)
            .map_err(internal)?
            .map(|(info, _)| info)
            .filter(|info| info.expires_at > now);
        apps.push(AppStatus {
            name: name.clone(),
            root: app.root.display().to_string(),
            current,
            previous,
            releases,
            lock,
            maintenance: agent.journal.maintenance(name).map_err(internal)?.map(|m| {
                MaintenanceInfo {
                    on_since: m.on_since,
                    reason: m.reason,
                    by: m.by,
                }
            }),
            // One indexed row: cheap enough for every status (issue 13).
            rollback_point: agent
                .journal
                .rollback_points(name, 1)
                .map_err(internal)?
                .pop(),
            watchdog: crate::watchdog::summary(agent, name)?,
        });
    }
    Ok(StatusResponse {
        agent_name: agent.config().agent.name.clone(),
        agent_version: GOLIVE_VERSION.into(),
        protocol: PROTOCOL_VERSION,
        started_at: agent.started_at,
        apps,
        revocation: agent.deny.info(),
        refused_connections: agent.refusals.total(),
    })
}
