//! `golivectl follow PLAN HOST JOB`: follows one job's events to its end.

use std::path::Path;

use golive_shared::protocol::JobState;
use serde_json::json;

use crate::jobs::follow;
use crate::output::{Exit, Out, usage};
use crate::plan::{self};

pub async fn follow_cmd(out: Out, plan_path: &Path, host: &str, job: u64) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    let Some(h) = plan.hosts.iter().find(|h| h.name == host) else {
        return Err(usage(format!(
            "no host {host:?} in {}; hosts: {}",
            plan_path.display(),
            plan.hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let info = follow(out, &h.client, job).await.map_err(|e| {
        if e.exit_code() == 2 {
            usage(e.to_string())
        } else {
            e.into()
        }
    })?;
    out.line(format!("job {job} {}", info.state.as_str()));
    out.event(
        &json!({"event": "result", "job": job, "state": info.state.as_str(), "error": info.error}),
    );
    Ok(if info.state == JobState::Succeeded {
        Exit::Done
    } else {
        Exit::Failed
    })
}
