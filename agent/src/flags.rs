//! Feature flags (issue 4, part 8): named toggles declared per app under
//! `[apps.APP.flags]`, kept in the app's flag file (`.json` or `.toml`, by
//! extension) as `"NAME": {"enabled": bool, "percent": N}`.
//!
//! Setting a flag rewrites only its own key (other keys and unknown content
//! are kept) atomically (temp file, fsync, rename), and journals who changed
//! it and when in `flag_changes`. A missing file means every flag is off.

use std::path::{Path, PathBuf};

use golive_shared::config::{AgentConfig, AppConfig, FlagsConfig};
use golive_shared::protocol::{EventKind, FlagState, JobResult, LogLevel, SetFlag, now_millis};

use crate::journal::{FlagChange, Journal};

/// The flag file's path: absolute, or relative to the app's ROOT.
pub fn file_path(app: &AppConfig, flags: &FlagsConfig) -> PathBuf {
    crate::maintenance::flag_path(&app.root, &flags.file)
}

/// The app's flags config, or the message naming what to add.
pub fn config<'a>(app_name: &str, app: &'a AppConfig) -> Result<&'a FlagsConfig, String> {
    app.flags.as_ref().ok_or_else(|| {
        format!("app {app_name} declares no feature flags; add [apps.{app_name}.flags] (file and declared flags) to its config")
    })
}

/// Refuses a name the config does not declare (listing the declared ones)
/// and a percentage above 100.
pub fn check_request(app_name: &str, flags: &FlagsConfig, req: &SetFlag) -> Result<(), String> {
    if !flags.declared.contains_key(&req.name) {
        let valid: Vec<&str> = flags.declared.keys().map(String::as_str).collect();
        return Err(format!(
            "app {app_name} declares no flag {:?}; declared flags: {}",
            req.name,
            if valid.is_empty() {
                "(none)".to_string()
            } else {
                valid.join(", ")
            }
        ));
    }
    if let Some(p) = req.percent
        && p > 100
    {
        return Err(format!("percent must be between 0 and 100, not {p}"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Toml,
}

fn format_of(path: &Path) -> Result<Format, String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Ok(Format::Json),
        Some("toml") => Ok(Format::Toml),
        _ => Err(format!(
            "flag file {}: use a .json or .toml file",
            path.display()
        )),
    }
}

/// The flag file's content, parsed; `None` when it does not exist.
enum Doc {
    Json(serde_json::Map<String, serde_json::Value>),
    Toml(toml::Table),
}

fn read(path: &Path) -> Result<Doc, String> {
    let format = format_of(path)?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read flag file {}: {e}", path.display())),
    };
    let unreadable = |e: String| format!("flag file {} is unreadable: {e}", path.display());
    Ok(match format {
        Format::Json if text.trim().is_empty() => Doc::Json(serde_json::Map::new()),
        Format::Json => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(m)) => Doc::Json(m),
            Ok(_) => return Err(unreadable("the top level is not an object".into())),
            Err(e) => return Err(unreadable(e.to_string())),
        },
        Format::Toml => Doc::Toml(
            text.parse::<toml::Table>()
                .map_err(|e| unreadable(e.to_string()))?,
        ),
    })
}

fn percent_of(n: Option<i64>) -> Option<u8> {
    n.and_then(|n| u8::try_from(n).ok()).filter(|p| *p <= 100)
}

impl Doc {
    /// (on, percent) of a flag; absent or malformed means off.
    fn get(&self, name: &str) -> (bool, Option<u8>) {
        match self {
            Doc::Json(m) => match m.get(name) {
                Some(serde_json::Value::Bool(b)) => (*b, None),
                Some(serde_json::Value::Object(o)) => (
                    o.get("enabled").and_then(|v| v.as_bool()).unwrap_or(false),
                    percent_of(o.get("percent").and_then(|v| v.as_i64())),
                ),
                _ => (false, None),
            },
            Doc::Toml(t) => match t.get(name) {
                Some(toml::Value::Boolean(b)) => (*b, None),
                Some(toml::Value::Table(o)) => (
                    o.get("enabled").and_then(|v| v.as_bool()).unwrap_or(false),
                    percent_of(o.get("percent").and_then(|v| v.as_integer())),
                ),
                _ => (false, None),
            },
        }
    }

    /// Sets a flag's `enabled` and `percent` (removed when `None`), keeping
    /// any other fields of its object.
    fn set(&mut self, name: &str, on: bool, percent: Option<u8>) {
        match self {
            Doc::Json(m) => {
                let entry = m
                    .entry(name.to_string())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if !entry.is_object() {
                    *entry = serde_json::Value::Object(Default::default());
                }
                let o = entry.as_object_mut().expect("object");
                o.insert("enabled".into(), on.into());
                match percent {
                    Some(p) => o.insert("percent".into(), p.into()),
                    None => o.remove("percent"),
                };
            }
            Doc::Toml(t) => {
                let entry = t
                    .entry(name.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                if !entry.is_table() {
                    *entry = toml::Value::Table(Default::default());
                }
                let o = entry.as_table_mut().expect("table");
                o.insert("enabled".into(), on.into());
                match percent {
                    Some(p) => o.insert("percent".into(), i64::from(p).into()),
                    None => o.remove("percent"),
                };
            }
        }
    }

    fn render(&self) -> Result<String, String> {
        match self {
            Doc::Json(m) => serde_json::to_string_pretty(m)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string()),
            Doc::Toml(t) => toml::to_string(t).map_err(|e| e.to_string()),
        }
    }
}

/// The declared flags of an app with their values and last change.
pub fn list(journal: &Journal, app_name: &str, app: &AppConfig) -> Result<Vec<FlagState>, String> {
    let flags = config(app_name, app)?;
    let doc = read(&file_path(app, flags))?;
    let changes = journal
        .flag_changes(app_name, 10_000)
        .map_err(|e| e.to_string())?;
    Ok(flags
        .declared
        .keys()
        .map(|name| {
            let (on, percent) = doc.get(name);
            let last = changes.iter().find(|c| &c.name == name);
            FlagState {
                name: name.clone(),
                on,
                percent,
                changed_by: last.map(|c| c.by.clone()),
                changed_at: last.map(|c| c.at),
            }
        })
        .collect())
}

/// The `flag` job: writes one flag into the file and journals the change.
pub fn set(
    config: &AgentConfig,
    journal: &Journal,
    req: &SetFlag,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, String> {
    let app = config
        .app(&req.app)
        .ok_or_else(|| format!("no app {:?} in the agent config", req.app))?;
    let flags = self::config(&req.app, app)?;
    check_request(&req.app, flags, req)?;
    let by = journal
        .running_job_submitter(&req.app, "flag")
        .ok()
        .flatten()
        .unwrap_or_else(|| "agent".to_string());
    let path = file_path(app, flags);
    let mut doc = read(&path)?;
    let (previous_on, previous_percent) = doc.get(&req.name);
    doc.set(&req.name, req.on, req.percent);
    let body = doc.render()?;
    crate::maintenance::write_atomic(&path, body.as_bytes())
        .map_err(|e| format!("cannot write flag file {}: {e}", path.display()))?;
    journal
        .record_flag_change(
            &req.app,
            &FlagChange {
                name: req.name.clone(),
                on: req.on,
                percent: req.percent,
                previous_on,
                previous_percent,
                by: by.clone(),
                at: now_millis(),
            },
        )
        .map_err(|e| e.to_string())?;
    let show = |on: bool, p: Option<u8>| {
        format!(
            "{}{}",
            if on { "on" } else { "off" },
            p.map(|p| format!(" ({p}%)")).unwrap_or_default()
        )
    };
    emit(EventKind::Log {
        level: LogLevel::Info,
        line: format!(
            "flag {} of {}: {} -> {} (by {by}, in {})",
            req.name,
            req.app,
            show(previous_on, previous_percent),
            show(req.on, req.percent),
            path.display()
        ),
    });
    Ok(JobResult::FlagSet {
        name: req.name.clone(),
        on: req.on,
        percent: req.percent,
        previous_on,
        previous_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_config(root: &Path, file: &str) -> AgentConfig {
        let mut app: AppConfig = serde_json::from_value(serde_json::json!({
            "root": root,
            "flags": {"file": file, "declared": {"new_checkout": {}, "bi": {"description": "BI"}}},
        }))
        .unwrap();
        app.keep_releases = 5;
        let mut config: AgentConfig = toml::from_str(
            r#"
[agent]
name = "a1"
listen = "127.0.0.1:7443"
state_dir = "/tmp/x"
[tls]
ca = "/x"
cert = "/x"
key = "/x"
"#,
        )
        .unwrap();
        config.apps.insert("shop".into(), app);
        config
    }

    fn req(name: &str, on: bool, percent: Option<u8>) -> SetFlag {
        SetFlag {
            app: "shop".into(),
            name: name.into(),
            on,
            percent,
        }
    }

    #[test]
    fn json_set_keeps_other_keys_and_journals() {
        let dir = tempfile::tempdir().unwrap();
        let config = agent_config(dir.path(), "shared/config/feature_flags.json");
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let file = dir.path().join("shared/config/feature_flags.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            r#"{"FASES": {"x": 1}, "bi": {"enabled": true, "niveles": ["a"]}}"#,
        )
        .unwrap();
        let app = config.app("shop").unwrap();
        let before = list(&journal, "shop", app).unwrap();
        assert!(before.iter().any(|f| f.name == "bi" && f.on));
        let r = set(
            &config,
            &journal,
            &req("new_checkout", true, Some(25)),
            &|_| {},
        )
        .unwrap();
        assert!(
            matches!(&r, JobResult::FlagSet { name, on: true, percent: Some(25), previous_on: false, .. } if name == "new_checkout"),
            "{r:?}"
        );
        set(&config, &journal, &req("bi", false, None), &|_| {}).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(v["FASES"]["x"], 1);
        assert_eq!(v["bi"]["niveles"][0], "a");
        assert_eq!(v["bi"]["enabled"], false);
        assert_eq!(v["new_checkout"]["percent"], 25);
        let changes = journal.flag_changes("shop", 10).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(
            (changes[0].name.as_str(), changes[0].previous_on),
            ("bi", true)
        );
        assert_eq!(changes[0].by, "agent");
        let after = list(&journal, "shop", app).unwrap();
        let nc = after.iter().find(|f| f.name == "new_checkout").unwrap();
        assert_eq!((nc.on, nc.percent), (true, Some(25)));
        assert!(nc.changed_at.is_some());
    }

    #[test]
    fn toml_file_missing_means_off_and_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let config = agent_config(dir.path(), "flags.toml");
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let app = config.app("shop").unwrap();
        assert!(list(&journal, "shop", app).unwrap().iter().all(|f| !f.on));
        std::fs::write(dir.path().join("flags.toml"), "other = \"kept\"\n").unwrap();
        set(&config, &journal, &req("bi", true, None), &|_| {}).unwrap();
        let t: toml::Table = std::fs::read_to_string(dir.path().join("flags.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(t["other"].as_str(), Some("kept"));
        assert_eq!(t["bi"]["enabled"].as_bool(), Some(true));
    }

    #[test]
    fn unknown_names_and_big_percent_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = agent_config(dir.path(), "f.json");
        let flags = config.app("shop").unwrap().flags.as_ref().unwrap();
        let e = check_request("shop", flags, &req("nope", true, None)).unwrap_err();
        assert!(e.contains("bi, new_checkout"), "{e}");
        let e = check_request("shop", flags, &req("bi", true, Some(101))).unwrap_err();
        assert!(e.contains("0 and 100"), "{e}");
    }

    #[test]
    fn config_validation_names_bad_flag_names_paths_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = agent_config(dir.path(), "../flags.yaml");
        let flags = config.apps.get_mut("shop").unwrap().flags.as_mut().unwrap();
        flags.declared.insert("Bad Name".into(), Default::default());
        let issues = golive_shared::config::validate(&config);
        let flag_issues: Vec<_> = issues
            .iter()
            .filter(|(k, _)| k.starts_with("apps.shop.flags"))
            .collect();
        assert!(
            flag_issues.iter().any(|(_, m)| m.contains("`..`")),
            "{issues:?}"
        );
        assert!(
            flag_issues
                .iter()
                .any(|(_, m)| m.contains(".json or .toml")),
            "{issues:?}"
        );
        assert!(
            flag_issues
                .iter()
                .any(|(k, _)| k == "apps.shop.flags.declared.Bad Name"),
            "{issues:?}"
        );
        let ok = agent_config(dir.path(), "shared/config/feature_flags.json");
        assert!(
            !golive_shared::config::validate(&ok)
                .iter()
                .any(|(k, _)| k.starts_with("apps.shop.flags")),
        );
    }
}
