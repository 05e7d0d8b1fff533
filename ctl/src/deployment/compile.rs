//! Plan + hosts + options → [`Deployment`]: a pure function (no I/O), so
//! the same inputs always give the same keys and requests, and a dry run
//! shows exactly what a deployment would send.

use golive_shared::protocol::{
    ActivateRelease, ArmWatchdog, CreateBackup, DiscardRelease, HostRollback, JobSpec,
    RestorePolicy, RollbackPolicy, RollbackRequester, RunMigrations, ScanConfig, SetMaintenance,
    StageGitRelease, StageRelease, WatchdogSpec,
};

use super::{Deployment, HostSteps, StageRef, Staged, Step, StepRequest, Wave, When, key};
use crate::plan::{Plan, PreDeployBackup, Source};

/// Everything a deployment is compiled from, as plain data.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub id: &'a str,
    pub app: &'a str,
    pub release: &'a str,
    pub source: SourceInput,
    pub plan_sha256: &'a str,
    pub hosts: Vec<HostInput>,
    pub waves: &'a [crate::waves::Wave],
    pub parallel: usize,
    pub maintenance: bool,
    pub backup: PreDeployBackup,
    pub contract_at_commit: bool,
    pub restore_allowed: bool,
    pub watchdog: Option<&'a WatchdogSpec>,
}

#[derive(Debug, Clone)]
pub enum SourceInput {
    Artifact { sha256: String, bytes: u64 },
    Git { git_ref: String, scan: ScanConfig },
}

#[derive(Debug, Clone)]
pub struct HostInput {
    pub name: String,
    pub address: String,
    /// The release live there now.
    pub previous: Option<String>,
}

impl<'a> Input<'a> {
    /// The input of a validated plan (with a release), its hosts' live
    /// releases (`previous`, in plan order) and the artifact's hash.
    pub fn from_plan(
        plan: &'a Plan,
        id: &'a str,
        plan_sha256: &'a str,
        sha256: &str,
        bytes: u64,
        previous: &[Option<String>],
    ) -> Input<'a> {
        let release = plan.release.as_ref().expect("a plan with a release");
        Input {
            id,
            app: &plan.app,
            release: &release.id,
            source: match &release.source {
                Source::Artifact(_) => SourceInput::Artifact {
                    sha256: sha256.into(),
                    bytes,
                },
                Source::Git(r) => SourceInput::Git {
                    git_ref: r.clone(),
                    scan: plan.scan.clone(),
                },
            },
            plan_sha256,
            hosts: plan
                .hosts
                .iter()
                .zip(previous)
                .map(|(h, p)| HostInput {
                    name: h.name.clone(),
                    address: h.client.addr.clone(),
                    previous: p.clone(),
                })
                .collect(),
            waves: &plan.waves,
            parallel: plan.parallel,
            maintenance: plan.maintenance,
            backup: plan.backup,
            contract_at_commit: plan.contract_at_commit,
            restore_allowed: plan.restore_allowed,
            watchdog: plan.watchdog.as_ref(),
        }
    }
}

/// One stage of a staged deployment, as plain data.
#[derive(Debug, Clone)]
pub struct StageInput<'a> {
    pub name: &'a str,
    pub app: &'a str,
    pub release: &'a str,
    pub plan: String,
    /// The stage's own deployment id.
    pub deployment: &'a str,
    pub hosts: Vec<String>,
}

/// The staged deployment `id` of `stages`, in run order.
pub fn compile_stages(id: &str, stages_sha256: &str, stages: &[StageInput]) -> Staged {
    Staged {
        id: id.into(),
        stages_sha256: stages_sha256.into(),
        stages: stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageRef {
                position: i as u32 + 1,
                label: crate::stages::label(i + 1, stages.len(), s.name),
                name: s.name.into(),
                app: s.app.into(),
                release: s.release.into(),
                plan: s.plan.clone(),
                deployment: s.deployment.into(),
                hosts: s.hosts.clone(),
            })
            .collect(),
    }
}

/// The deployment `input` describes.
pub fn compile(input: &Input) -> Deployment {
    let first_install = input.hosts.iter().all(|h| h.previous.is_none());
    let of = input.waves.len();
    Deployment {
        id: input.id.into(),
        app: input.app.into(),
        release: input.release.into(),
        source: match &input.source {
            SourceInput::Artifact { sha256, bytes } => {
                format!("artifact sha256 {sha256}, {bytes} bytes")
            }
            SourceInput::Git { git_ref, .. } => format!("git ref {git_ref}"),
        },
        plan_sha256: input.plan_sha256.into(),
        parallel: input.parallel,
        waves: input
            .waves
            .iter()
            .enumerate()
            .map(|(w, wave)| Wave {
                label: wave.label(w + 1, of),
                name: wave.name.clone(),
                hosts: wave
                    .hosts
                    .iter()
                    .map(|&i| input.hosts[i].name.clone())
                    .collect(),
                max_fail: wave.max_fail,
                allowed_failures: wave.allowed_failures(),
                soak_secs: wave.soak.map(|s| s.as_secs()),
                steps: wave_steps(wave),
            })
            .collect(),
        hosts: input
            .hosts
            .iter()
            .map(|h| host_steps(input, h, first_install))
            .collect(),
    }
}

/// A wave's record steps: its outcome (the `wave-N` row), then its soak.
fn wave_steps(wave: &crate::waves::Wave) -> Vec<Step> {
    let record = |name: &str, label: String| Step {
        name: name.into(),
        label,
        when: When::Always,
        key: None,
        request: None,
    };
    let mut steps = vec![record("wave", "wave (its outcome)".into())];
    if let Some(soak) = wave.soak {
        steps.push(record(
            "soak",
            format!("soak {}", crate::jobs::human_secs(soak.as_secs())),
        ));
    }
    steps
}

fn host_steps(input: &Input, host: &HostInput, first_install: bool) -> HostSteps {
    let id = input.id;
    let app = input.app.to_string();
    let release = input.release.to_string();
    let mut steps = Vec::new();
    let check = |name: &str| Step {
        name: name.into(),
        label: name.into(),
        when: When::Always,
        key: None,
        request: None,
    };
    let change = |name: &str, label: String, when: When, request: StepRequest| Step {
        name: name.into(),
        label,
        when,
        key: Some(key(id, &host.name, name)),
        request: Some(request),
    };
    let maintenance = |on: bool| {
        StepRequest::Job(JobSpec::Maintenance(SetMaintenance {
            app: app.clone(),
            on,
            reason: format!("deployment {id}"),
        }))
    };
    steps.push(check("lock"));
    steps.push(check("read flags"));
    match &input.source {
        SourceInput::Artifact { sha256, bytes } => {
            steps.push(change(
                "upload",
                "upload (skipped when the agent has the artifact)".into(),
                When::Always,
                StepRequest::Upload {
                    sha256: sha256.clone(),
                    bytes: *bytes,
                },
            ));
            steps.push(change(
                "stage",
                format!("stage {release}"),
                When::Always,
                StepRequest::Job(JobSpec::Stage(StageRelease {
                    app: app.clone(),
                    release: release.clone(),
                    artifact_sha256: sha256.clone(),
                })),
            ));
        }
        SourceInput::Git { git_ref, scan } => steps.push(change(
            "stage",
            format!("stage {release} (fetch git ref {git_ref})"),
            When::Always,
            StepRequest::Job(JobSpec::StageGit(StageGitRelease {
                app: app.clone(),
                release: release.clone(),
                git_ref: git_ref.clone(),
                // Each host scans the tree it exports (issue 12).
                scan: scan.clone(),
            })),
        )),
    }
    steps.push(check("probe-before"));
    // What the staged release would migrate, read once (a record step):
    // it decides maintenance, the backup's verification and migrate.
    steps.push(Step {
        label: "read pending migrations".into(),
        ..check("migrations")
    });
    // Maintenance: asked by the plan, or (not on a first install) needed by
    // pending migrations.
    let maintenance_when = if input.maintenance {
        Some(When::Always)
    } else if !first_install {
        Some(When::PendingMigrations)
    } else {
        None
    };
    if let Some(when) = &maintenance_when {
        steps.push(change(
            "maintenance-on",
            "maintenance-on".into(),
            when.clone(),
            maintenance(true),
        ));
    }
    let (backup_label, backup_when) = match input.backup {
        PreDeployBackup::None => ("backup (verified)", When::PendingMigrations),
        PreDeployBackup::Before => ("backup", When::Always),
        PreDeployBackup::Verified => ("backup (verified)", When::Always),
    };
    steps.push(change(
        "backup",
        backup_label.into(),
        backup_when,
        StepRequest::Job(JobSpec::Backup(CreateBackup {
            app: app.clone(),
            label: "pre-deploy".into(),
            only: vec![],
            deployment: Some(id.to_string()),
            // Pending migrations make it verified whatever the plan says
            // (the sequencer sends it so, and journals what it sent).
            verify: input.backup != PreDeployBackup::Before,
        })),
    ));
    steps.push(change(
        "migrate",
        "migrate".into(),
        When::PendingMigrations,
        StepRequest::Job(JobSpec::Migrate(RunMigrations {
            app: app.clone(),
            release: Some(release.clone()),
            down_to: None,
            stop_before_contract: input.contract_at_commit,
            backup_first: false,
        })),
    ));
    steps.push(change(
        "activate",
        "activate".into(),
        When::Always,
        StepRequest::Job(JobSpec::Activate(ActivateRelease {
            app: app.clone(),
            release: release.clone(),
            // The plan's rollback policy, kept in the host's rollback point.
            rollback: RollbackPolicy {
                restore: if input.restore_allowed {
                    RestorePolicy::Allow
                } else {
                    RestorePolicy::Forbid
                },
                maintenance: input.maintenance,
            },
        })),
    ));
    if let Some(when) = &maintenance_when {
        steps.push(change(
            "maintenance-off",
            "maintenance-off".into(),
            when.clone(),
            maintenance(false),
        ));
    }
    steps.push(check("probe"));
    steps.push(check("gate"));
    steps.push(Step {
        label: "decision (go / no-go)".into(),
        when: When::GatePauses,
        ..check("decision")
    });
    if let Some(spec) = input.watchdog {
        let mut arm = change(
            "watchdog-arm",
            "watchdog-arm".into(),
            When::Always,
            StepRequest::ArmWatchdog(ArmWatchdog {
                app: app.clone(),
                deployment: id.to_string(),
                spec: spec.clone(),
            }),
        );
        if host.previous.is_none() {
            arm.when = When::Skipped(
                "a first install: nothing to roll back to, so it is not watched".into(),
            );
        }
        steps.push(arm);
    }
    if input.contract_at_commit && input.watchdog.is_none() {
        steps.push(change(
            "commit-migrate",
            "commit-migrate".into(),
            When::AtCommit,
            StepRequest::Job(JobSpec::Migrate(RunMigrations {
                app: app.clone(),
                release: Some(release.clone()),
                down_to: None,
                stop_before_contract: false,
                backup_first: true,
            })),
        ));
    }
    steps.push(check("unlock"));
    // After a failure: the host's one rollback (its reason is the failure,
    // known then), maintenance off again, the never-live release removed.
    steps.push(change(
        "switch-back",
        "switch-back".into(),
        When::OnFailure,
        StepRequest::Job(JobSpec::HostRollback(HostRollback {
            app: app.clone(),
            deployment: Some(id.into()),
            to: None,
            reason: format!("deployment {id} failed"),
            requested_by: RollbackRequester::Controller,
            force: false,
            restore: None,
        })),
    ));
    if maintenance_when.is_some() {
        steps.push(change(
            "maintenance-off-after-switch-back",
            "maintenance-off-after-switch-back".into(),
            When::OnFailure,
            maintenance(false),
        ));
    }
    steps.push(change(
        "discard",
        "discard".into(),
        When::OnFailure,
        StepRequest::Job(JobSpec::DiscardRelease(DiscardRelease {
            app,
            release,
            reason: format!("deployment {id} did not go live on {}", host.name),
        })),
    ));
    HostSteps {
        host: host.name.clone(),
        address: host.address.clone(),
        previous: host.previous.clone(),
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(waves: &'a [crate::waves::Wave], previous: Option<&str>) -> Input<'a> {
        Input {
            id: "d1",
            app: "shop",
            release: "v2",
            source: SourceInput::Artifact {
                sha256: "ab".repeat(32),
                bytes: 10,
            },
            plan_sha256: "cd",
            hosts: ["web1", "web2"]
                .iter()
                .map(|n| HostInput {
                    name: n.to_string(),
                    address: format!("{n}:7443"),
                    previous: previous.map(String::from),
                })
                .collect(),
            waves,
            parallel: 4,
            maintenance: false,
            backup: PreDeployBackup::None,
            contract_at_commit: false,
            restore_allowed: false,
            watchdog: None,
        }
    }

    fn names(d: &Deployment, host: usize) -> Vec<&str> {
        d.hosts[host]
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    #[test]
    fn issue14_compile_is_pure_and_keys_are_deployment_host_step() {
        let a = compile(&input(&[], Some("v1")));
        let b = compile(&input(&[], Some("v1")));
        assert_eq!(a, b, "the same inputs compile to the same deployment");
        assert_eq!(
            names(&a, 0),
            [
                "lock",
                "read flags",
                "upload",
                "stage",
                "probe-before",
                "migrations",
                "maintenance-on",
                "backup",
                "migrate",
                "activate",
                "maintenance-off",
                "probe",
                "gate",
                "decision",
                "unlock",
                "switch-back",
                "maintenance-off-after-switch-back",
                "discard"
            ]
        );
        let activate = a.step("web2", "activate").expect("activate");
        assert_eq!(activate.key.as_deref(), Some("d1:web2:activate"));
        assert!(matches!(
            activate.request,
            Some(StepRequest::Job(JobSpec::Activate(ref r))) if r.release == "v2" && r.app == "shop"
        ));
        // Read-only steps have no key and send nothing.
        let gate = a.step("web1", "gate").expect("gate");
        assert_eq!((gate.key.as_ref(), gate.request.as_ref()), (None, None));
        // Every key is unique.
        let mut keys: Vec<&str> = a
            .hosts
            .iter()
            .flat_map(|h| h.steps.iter().filter_map(|s| s.key.as_deref()))
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
        // Pending migrations decide maintenance, backup and migrate.
        assert_eq!(
            a.step("web1", "migrate").unwrap().when,
            When::PendingMigrations
        );
        // A round trip through the journal's JSON keeps it whole.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Deployment>(&json).unwrap(), a);
    }

    #[test]
    fn issue14_compile_a_first_install_with_waves_and_a_watchdog() {
        let waves = vec![
            crate::waves::Wave {
                name: Some("canary".into()),
                hosts: vec![0],
                soak: Some(std::time::Duration::from_secs(30)),
                max_fail: 0,
            },
            crate::waves::Wave {
                name: None,
                hosts: vec![1],
                soak: None,
                max_fail: 100,
            },
        ];
        let spec = golive_shared::protocol::WatchdogSpec::defaults();
        let mut i = input(&waves, None);
        i.watchdog = Some(&spec);
        i.backup = PreDeployBackup::Verified;
        let d = compile(&i);
        assert_eq!(d.waves.len(), 2);
        assert_eq!(d.waves[0].label, "wave 1/2 (canary)");
        assert_eq!(d.waves[0].hosts, ["web1"]);
        assert_eq!(d.waves[0].soak_secs, Some(30));
        assert_eq!(d.waves[1].allowed_failures, 1);
        // Each wave's own record steps: its outcome, then its soak.
        let wave_steps =
            |w: usize| -> Vec<&str> { d.waves[w].steps.iter().map(|s| s.name.as_str()).collect() };
        assert_eq!(wave_steps(0), ["wave", "soak"]);
        assert_eq!(wave_steps(1), ["wave"]);
        // A first install needs no maintenance; the backup always runs.
        assert!(d.step("web1", "maintenance-on").is_none());
        assert_eq!(d.step("web1", "backup").unwrap().when, When::Always);
        assert!(matches!(
            d.step("web1", "watchdog-arm").unwrap().when,
            When::Skipped(_)
        ));
        let labels = d.labels(&d.hosts[0], false);
        assert!(labels.contains(&"stage v2".to_string()), "{labels:?}");
        assert_eq!(
            d.labels(&d.hosts[0], true),
            ["switch-back", "discard"],
            "what runs after a failure"
        );
    }

    #[test]
    fn issue14_stages_are_compiled_in_order_with_their_own_ids() {
        let stage = |name: &'static str, id: &'static str| StageInput {
            name,
            app: name,
            release: "v2",
            plan: format!("{name}.toml"),
            deployment: id,
            hosts: vec![format!("{name}1")],
        };
        let staged = compile_stages("p1", "ef", &[stage("db", "s1"), stage("auth", "s2")]);
        assert_eq!(staged.id, "p1");
        assert_eq!(staged.stages_sha256, "ef");
        let got: Vec<(u32, &str, &str)> = staged
            .stages
            .iter()
            .map(|s| (s.position, s.label.as_str(), s.deployment.as_str()))
            .collect();
        assert_eq!(
            got,
            [(1, "stage 1/2 (db)", "s1"), (2, "stage 2/2 (auth)", "s2")]
        );
        // The same input, the same data (stored, then compared on resume).
        assert_eq!(
            staged,
            compile_stages("p1", "ef", &[stage("db", "s1"), stage("auth", "s2")])
        );
    }
}
