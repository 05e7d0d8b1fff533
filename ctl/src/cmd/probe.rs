//! `golivectl probe PLAN [--tag T]...`: the app's probes on every host of the
//! plan at once, a host × probe matrix, and the go/no-go verdict of the
//! plan's gate (issue 5 part 2).
//!
//! The verdict follows the plan's `[gate]` ([`crate::gate`]): a probe whose
//! severity maps to rollback or pause (by default `critical` and `high`), or
//! a host that cannot be probed, is NO-GO; warn is a warning and continue is
//! information. Tags select suites (seed 000's `--vertical=agroconecta`
//! becomes `--tag vertical:agroconecta`); a tag that no probe on any host
//! carries is refused before anything runs, listing the tags that exist.
//!
//! Exit codes: 0 GO (warnings allowed), 1 NO-GO, 2 bad plan, unknown tag, or
//! an agent refusing the request (an undeclared app, a certificate role, a
//! protocol version): those are fixed in the plan or the agent's config.

use std::collections::BTreeSet;
use std::path::Path;

use golive_shared::protocol::DeclaredProbe;
use serde_json::json;

use crate::client::ClientError;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Plan};
use crate::probes::{
    HostProbes, Verdict, declared_in, plain_label, print_matrix, print_verdict, run_in, use_color,
};
use crate::transport::Session;

/// Declared probes of every host, concurrently, in plan order, each with
/// its session: the probes then run on the same connection (issue 14).
async fn all_declared(plan: &Plan) -> Vec<(Session, Result<Vec<DeclaredProbe>, ClientError>)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, host) in plan.hosts.iter().enumerate() {
        let mut session = host.client.session();
        let app = plan.app.clone();
        set.spawn(async move {
            let r = declared_in(&mut session, &app).await;
            (i, (session, r))
        });
    }
    let mut got = set.join_all().await;
    got.sort_by_key(|(i, _)| *i);
    got.into_iter().map(|(_, r)| r).collect()
}

pub async fn probe(out: Out, plan_path: &Path, tags: &[String]) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    if let Some(t) = tags.iter().find(|t| t.trim().is_empty()) {
        return Err(usage(format!(
            "--tag {t:?} is empty: name a tag, e.g. --tag smoke"
        )));
    }
    let catalogs = all_declared(&plan).await;
    if !tags.is_empty() {
        let known: BTreeSet<&str> = catalogs
            .iter()
            .filter_map(|(_, c)| c.as_ref().ok())
            .flatten()
            .flat_map(|p| p.tags.iter().map(String::as_str))
            .collect();
        let answered = catalogs.iter().any(|(_, c)| c.is_ok());
        let unknown: Vec<&str> = tags
            .iter()
            .map(String::as_str)
            .filter(|t| !known.contains(t))
            .collect();
        if answered && !unknown.is_empty() {
            return Err(usage(format!(
                "no probe of {} on any reachable host carries the tag(s) {}; tags that exist: {}",
                plan.app,
                unknown.join(", "),
                if known.is_empty() {
                    "(none: add `tags = [...]` to the probes in the agents' configs)".to_string()
                } else {
                    known.into_iter().collect::<Vec<_>>().join(", ")
                }
            )));
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, (mut session, catalog)) in catalogs.into_iter().enumerate() {
        let app = plan.app.clone();
        let tags = tags.to_vec();
        set.spawn(async move {
            let outcome = match catalog {
                Err(e) => Err(e),
                Ok(declared) => run_in(&mut session, &app, &tags)
                    .await
                    .map(|r| (declared, r)),
            };
            (i, outcome)
        });
    }
    let mut results = set.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    // An agent that refuses (unknown app, role, protocol) is a plan or
    // config problem: exit 2. Unreachable hosts and failing probes: 1.
    let refused = results
        .iter()
        .any(|(_, r)| matches!(r, Err(e @ ClientError::Agent { .. }) if e.exit_code() == 2));
    let rows: Vec<HostProbes> = results
        .into_iter()
        .map(|(i, outcome)| HostProbes {
            host: plan.hosts[i].name.clone(),
            address: plan.hosts[i].client.addr.clone(),
            outcome: outcome.map_err(|e| e.to_string()),
        })
        .collect();

    let mut verdict = Verdict {
        policy: plan.gate,
        ..Verdict::default()
    };
    rows.iter()
        .for_each(|r| r.judge(&mut verdict, &|p| p.name.clone()));
    let exit = match (verdict.go(), refused) {
        (_, true) => Exit::Usage,
        (true, false) => Exit::Done,
        (false, false) => Exit::Failed,
    };
    let color = use_color(out);
    out.line(format!(
        "probes of {} on {} host(s){}",
        plan.app,
        rows.len(),
        if tags.is_empty() {
            String::new()
        } else {
            format!(", tags {}", tags.join(", "))
        }
    ));
    print_matrix(out, &rows, color, &plain_label);
    print_verdict(out, &verdict, color, "GO", "NO-GO");
    out.event(&json!({
        "app": plan.app,
        "tags": tags,
        "hosts": rows.iter().map(HostProbes::json).collect::<Vec<_>>(),
        "verdict": if verdict.go() { "go" } else { "no-go" },
        "reasons": verdict.json(),
        "exit": exit.code(),
    }));
    Ok(exit)
}
