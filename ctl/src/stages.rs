//! Stages files (issue 14, seed 002): several apps deployed in order in one
//! deployment, each stage naming the plan of one app. Parsed raw, then
//! validated with every stage's plan, before anything connects.
//!
//! ```toml
//! [[stage]]
//! name = "database"     # optional; default: the plan's app
//! plan = "db.toml"      # relative to this file
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::plan::{self, Plan};

/// A validated stages file: its stages in order, each with its plan loaded.
pub struct StagesFile {
    pub path: PathBuf,
    pub stages: Vec<StageSpec>,
}

/// One stage: a name and the validated plan of one app.
pub struct StageSpec {
    pub name: String,
    /// The plan file (resolved against the stages file's directory).
    pub plan_path: PathBuf,
    pub plan: Plan,
}

/// What is wrong with a stages file or one of its plans; each problem names
/// the file (and the stage) it is in.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct StagesError(pub Vec<String>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    stage: Vec<RawStage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Option<String>,
    plan: PathBuf,
}

/// Whether `path` is a stages file rather than a plan: a TOML table with
/// `[[stage]]` entries (a plan has no `stage` key; an unreadable file is a
/// plan's problem, reported by [`plan::load`]).
pub fn is_stages_file(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("stage"))
}

/// The label of stage `position` (1-based) of `of`: "stage 2/5 (auth)".
pub fn label(position: usize, of: usize, name: &str) -> String {
    format!("stage {position}/{of} ({name})")
}

/// Reads a stages file and validates it with every stage's plan: at least
/// one stage; each plan loads and has a `[release]`; no app and no name
/// twice. Every problem found is reported, not only the first.
pub fn load(path: &Path) -> Result<StagesFile, StagesError> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| StagesError(vec![format!("{file}: cannot read the stages file: {e}")]))?;
    let raw: Raw = toml::from_str(&text).map_err(|e| {
        let site = golive_shared::config::error_site(&text, &e);
        let at = match (site.line, site.key.is_empty()) {
            (Some(line), false) => format!(" line {line}, key `{}`", site.key),
            (Some(line), true) => format!(" line {line}"),
            (None, false) => format!(" key `{}`", site.key),
            (None, true) => String::new(),
        };
        StagesError(vec![format!(
            "{file}:{at}: {}; a stages file holds only [[stage]] entries, each with \
             plan = \"PLAN.toml\" and an optional name",
            e.message()
        )])
    })?;
    if raw.stage.is_empty() {
        return Err(StagesError(vec![format!(
            "{file}: no stages; add one [[stage]] per app, in the order they go live:\n\
             [[stage]]\nname = \"database\"\nplan = \"db.toml\""
        )]));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let of = raw.stage.len();
    let mut problems = Vec::new();
    let mut stages: Vec<StageSpec> = Vec::new();
    for (i, s) in raw.stage.into_iter().enumerate() {
        let plan_path = if s.plan.is_absolute() {
            s.plan.clone()
        } else {
            dir.join(&s.plan)
        };
        let at = format!("{file}: stage {}/{of}", i + 1);
        let plan = match plan::load(&plan_path) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!(
                    "{at} (plan = {:?}): its plan is not valid:\n{e}",
                    s.plan.display().to_string()
                ));
                continue;
            }
        };
        if plan.release.is_none() {
            problems.push(format!(
                "{at}: {} has no [release]; each stage deploys one release of its app",
                plan_path.display()
            ));
        }
        if plan.on_wave_failure == plan::OnWaveFailure::RollbackWave {
            // A staged deployment goes back whole: a stage that keeps some
            // hosts on the new release while the stages before it roll
            // back would leave an app ahead of the services it needs.
            problems.push(format!(
                "{at}: {} has `on_wave_failure = \"rollback-wave\"`; a staged deployment \
                 goes back whole (a failed stage rolls back the stages before it), so each \
                 stage must roll back all its waves: remove the key or set it to \
                 \"rollback-all\"",
                plan_path.display()
            ));
        }
        let name = s.name.unwrap_or_else(|| plan.app.clone());
        if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            problems.push(format!(
                "{at}: name {name:?}: give 1 to 100 printable characters, or leave it out \
                 (the app's name is used)"
            ));
        }
        if let Some(j) = stages.iter().position(|o| o.plan.app == plan.app) {
            problems.push(format!(
                "{at}: app {} is already deployed by stage {} ({}); an app goes live once in \
                 a staged deployment: put its hosts in one plan, or remove one stage",
                plan.app,
                j + 1,
                stages[j].plan_path.display()
            ));
        } else if let Some(j) = stages.iter().position(|o| o.name == name) {
            problems.push(format!(
                "{at}: name {name:?} is also stage {}'s; give each stage its own name",
                j + 1
            ));
        }
        stages.push(StageSpec {
            name,
            plan_path,
            plan,
        });
    }
    if problems.is_empty() {
        Ok(StagesFile {
            path: path.to_path_buf(),
            stages,
        })
    } else {
        Err(StagesError(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_plan_is_not_a_stages_file_and_a_stages_file_is() {
        let d = tempfile::tempdir().unwrap();
        let plan = write(d.path(), "p.toml", "app = \"shop\"\n");
        let stages = write(d.path(), "s.toml", "[[stage]]\nplan = \"p.toml\"\n");
        assert!(!is_stages_file(&plan));
        assert!(is_stages_file(&stages));
        assert!(!is_stages_file(&d.path().join("missing.toml")));
    }

    #[test]
    fn problems_name_the_file_and_the_stage() {
        let d = tempfile::tempdir().unwrap();
        let empty = write(d.path(), "empty.toml", "stage = []\n");
        let e = load(&empty).err().expect("refused").to_string();
        assert!(e.contains("empty.toml: no stages"), "{e}");

        let unknown = write(d.path(), "u.toml", "[[stage]]\nplan = \"a.toml\"\nap = 1\n");
        let e = load(&unknown).err().expect("refused").to_string();
        assert!(e.contains("u.toml") && e.contains("ap"), "{e}");

        let missing = write(
            d.path(),
            "m.toml",
            "[[stage]]\nplan = \"nope.toml\"\n\n[[stage]]\nplan = \"nope2.toml\"\n",
        );
        let e = load(&missing).err().expect("refused").to_string();
        assert!(
            e.contains("m.toml: stage 1/2") && e.contains("nope.toml"),
            "{e}"
        );
        assert!(
            e.contains("m.toml: stage 2/2") && e.contains("nope2.toml"),
            "{e}"
        );
    }

    /// A stage that would keep some hosts on the new release is refused
    /// (issue 14: a staged deployment goes back whole).
    #[test]
    fn issue14_a_stage_plan_with_rollback_wave_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let pki = d.path().join("pki");
        crate::pki::ca_init(&pki, 30).unwrap();
        crate::pki::issue_operator(&pki, "alice", golive_shared::identity::Role::Operator, 10)
            .unwrap();
        write(d.path(), "shop.tar.gz", "x");
        let plan = |policy: &str| {
            format!(
                "app = \"shop\"\n\n[release]\nartifact = \"shop.tar.gz\"\n\n\
                 [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/operators/alice.crt\"\n\
                 key = \"pki/operators/alice.key\"\n\n\
                 [[hosts]]\nname = \"web1\"\naddress = \"127.0.0.1:7443\"\n\n\
                 [deploy]\non_wave_failure = \"{policy}\"\n"
            )
        };
        write(d.path(), "all.toml", &plan("rollback-all"));
        write(d.path(), "wave.toml", &plan("rollback-wave"));
        let ok = write(d.path(), "ok.toml", "[[stage]]\nplan = \"all.toml\"\n");
        assert!(load(&ok).is_ok());
        let bad = write(d.path(), "bad.toml", "[[stage]]\nplan = \"wave.toml\"\n");
        let e = load(&bad).err().expect("refused").to_string();
        assert!(
            e.contains("bad.toml: stage 1/1")
                && e.contains("rollback-wave")
                && e.contains("goes back whole"),
            "{e}"
        );
    }

    #[test]
    fn labels_count_from_one() {
        assert_eq!(label(2, 5, "auth"), "stage 2/5 (auth)");
    }
}
