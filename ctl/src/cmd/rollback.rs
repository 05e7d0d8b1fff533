//! `golivectl rollback ID [--plan FILE] [--hosts ...]`: the deployment's
//! rollback plan, each host through its one host rollback job under a lease
//! (run by [`crate::deployment::rollback_run`], which `no-go` runs too).

use std::path::Path;

use crate::deployment::rollback_run;
use crate::output::{Exit, Out};

pub async fn rollback(
    out: Out,
    state: &Path,
    id: &str,
    plan_override: Option<&Path>,
    only: Option<&[String]>,
) -> anyhow::Result<Exit> {
    rollback_run::rollback(out, state, id, plan_override, only).await
}
