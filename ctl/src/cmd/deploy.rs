//! `golivectl deploy PLAN [--dry-run | --resume ID]`: the command's entry
//! and its exit code. The deployment itself (phase 1 checks, the dry run,
//! the record, resume, the sequencing, the outcome's record) is
//! [`crate::deployment::start`]; a stages file goes to
//! [`crate::deployment::stages`] from `cmd/mod.rs`.

use std::path::Path;

pub use crate::deployment::start::Options;
use crate::deployment::start::deploy_with_id;
use crate::output::{Exit, Out};

pub async fn deploy(
    out: Out,
    state: &Path,
    plan_path: &Path,
    options: &Options,
) -> anyhow::Result<Exit> {
    Ok(deploy_with_id(out, state, plan_path, options).await?.0)
}
