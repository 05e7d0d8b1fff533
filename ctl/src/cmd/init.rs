//! `golivectl init` (issue 16, part 9): a commented example plan and agent
//! config for the operator to edit, and the commands that take them to a
//! first deployment. The templates are `packaging/examples/*.toml`, the
//! same files the packages ship; they name relative paths, so the written
//! directory works as it is once its certificates exist (tested).

use std::path::Path;

use serde_json::json;

use crate::output::{Exit, Out, usage};

const PLAN: &str = include_str!("../../../packaging/examples/golive.toml");
const AGENT: &str = include_str!("../../../packaging/examples/agent.toml");

pub fn init(out: Out, dir: &Path, force: bool) -> anyhow::Result<Exit> {
    let files = [
        (dir.join("golive.toml"), PLAN),
        (dir.join("agent.toml"), AGENT),
    ];
    if !force {
        let existing: Vec<String> = files
            .iter()
            .filter(|(p, _)| p.exists())
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(usage(format!(
                "{} already exist(s); nothing was written: edit it, or pass --force to overwrite \
                 with the examples",
                existing.join(" and ")
            )));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    for (path, text) in &files {
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let d = dir.display();
    let next = [
        format!("golivectl ca init --dir {d}/pki"),
        format!("golivectl cert agent web1 --san 127.0.0.1 --dir {d}/pki"),
        format!("golivectl cert operator alice --role operator --dir {d}/pki"),
        format!("golive-agent check-config --config {d}/agent.toml"),
        format!("golive-agent serve --config {d}/agent.toml &"),
        format!("golivectl preflight {d}/golive.toml"),
        format!("golivectl deploy {d}/golive.toml --dry-run"),
    ];
    out.line(format!(
        "wrote {d}/golive.toml (the plan) and {d}/agent.toml (the host's config); edit both \
         (app, hosts, probes), then:"
    ));
    for n in &next {
        out.line(format!("  {n}"));
    }
    out.event(&json!({"plan": dir.join("golive.toml"), "agent_config": dir.join("agent.toml"), "next": next}));
    Ok(Exit::Done)
}
