//! `golivectl unlock PLAN --reason TEXT`: breaks the app lock on every host.

use std::path::Path;

use golive_shared::protocol::{LockRequest, LockResponse, Request, Response};
use golive_shared::timefmt::utc;

use crate::jobs::step;
use crate::output::{Exit, Out, usage};
use crate::plan::{self};

pub async fn unlock(out: Out, plan_path: &Path, reason: &str) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    for host in &plan.hosts {
        let r = host
            .client
            .call(&Request::Lock(LockRequest::Break {
                app: plan.app.clone(),
                reason: reason.into(),
            }))
            .await
            .map_err(|e| usage(e.to_string()))?;
        let msg = match r {
            Response::Lock(LockResponse::Broken { previous: Some(p) }) => format!(
                "broke the lock of deployment {} (held by {} since {})",
                p.deployment,
                p.holder,
                utc(p.since)
            ),
            _ => "was not locked".into(),
        };
        step(out, &host.name, "unlock", "ok", &msg);
    }
    Ok(Exit::Done)
}
