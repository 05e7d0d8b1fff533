//! Feature flags (issue 4, part 8; the app's own format, issue 12, part
//! 11): named toggles declared per app under `[apps.APP.flags]`, kept in
//! the app's flag file (`.json` or `.toml`, by extension). Each declared
//! flag names where the file keeps it: a key (nested keys allowed) holding
//! an object with an on/off field and a percent field (golive's default
//! `"NAME": {"enabled": bool, "percent": N}`; `percent_field = false`: no
//! percentage, and `--percent` is refused), or a plain `true`/`false`.
//!
//! Setting a flag changes only its own fields, in place: a JSON file is
//! edited byte by byte (`json.rs`), a TOML file through toml_edit
//! (`tomlfile.rs`), so the app's other fields, key order, indentation and
//! comments stay. Every edit is checked before it is written: the new file,
//! parsed, must equal the old one with exactly the flag's change
//! (`apply`). The write is atomic (temp file, fsync, rename), and who
//! changed what is journaled in `flag_changes`. A missing file means every
//! flag is off.

mod json;
mod tomlfile;

use std::path::{Path, PathBuf};

use golive_shared::config::{AgentConfig, AppConfig, FlagDecl, FlagsConfig};
use golive_shared::protocol::{
    ErrorCode, EventKind, FlagState, FlagValue, JobResult, LogLevel, SetFlag, now_millis,
};
use serde_json::Value;

use crate::jobs::JobError;
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
    if req.percent.is_some() && flags.declared[&req.name].percent_field().is_none() {
        return Err(no_percent(app_name, &req.name));
    }
    Ok(())
}

/// Where the file keeps one declared flag.
pub(crate) struct Place {
    /// The declared name (what golivectl uses).
    name: String,
    /// Keys from the top of the file to the flag's value.
    path: Vec<String>,
    on_field: String,
    /// `None`: the flag has no percentage (`percent_field = false`).
    percent_field: Option<String>,
}

impl Place {
    fn of(name: &str, decl: &FlagDecl) -> Place {
        Place {
            name: name.to_string(),
            path: decl.key_path(name),
            on_field: decl.on_field().to_string(),
            percent_field: decl.percent_field().map(str::to_string),
        }
    }

    /// The key as the operator wrote it, `FASES.FASE_37_BI_ANALYTICS`.
    fn key(&self) -> String {
        self.path.join(".")
    }

    /// A flag written where the file had none.
    fn new_flag(&self, on: bool, percent: Option<u8>) -> Value {
        let mut o = serde_json::Map::new();
        o.insert(self.on_field.clone(), on.into());
        if let (Some(p), Some(field)) = (percent, &self.percent_field) {
            o.insert(field.clone(), p.into());
        }
        Value::Object(o)
    }
}

/// The refusal of a percentage for a flag the file keeps as a plain boolean.
fn plain_boolean(place: &Place) -> String {
    format!(
        "flag {} is a plain true/false at {:?} in the file, so it has no rollout percentage; \
         set it without --percent, or make it an object with {:?} and {:?} fields",
        place.name,
        place.key(),
        place.on_field,
        place.percent_field.as_deref().unwrap_or("percent")
    )
}

/// The refusal of a percentage for a flag declared without one (issue 12,
/// part 11): naming the flag and both ways out.
fn no_percent(app_name: &str, name: &str) -> String {
    format!(
        "flag {name} of app {app_name} has no rollout percentage (percent_field = false in \
         [apps.{app_name}.flags.declared.{name}]); set it without --percent, or name the field \
         that holds its percentage with percent_field in the agent's config"
    )
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

/// The flag file: its text (empty when it does not exist) and its content
/// as a JSON value (a TOML file's tables become objects).
struct Doc {
    format: Format,
    text: String,
    value: Value,
}

/// A file of another format or content the operator's to fix
/// (`BadRequest`), one the host cannot read `Internal`.
fn read(path: &Path) -> Result<Doc, JobError> {
    let format = format_of(path).map_err(JobError::refused)?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(JobError::failed(format!(
                "cannot read flag file {}: {e}",
                path.display()
            )));
        }
    };
    let value = parse(format, &text).map_err(|e| {
        JobError::refused(format!("flag file {} is unreadable: {e}", path.display()))
    })?;
    Ok(Doc {
        format,
        text,
        value,
    })
}

fn parse(format: Format, text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match format {
        Format::Json => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err("the top level is not an object".into()),
            Err(e) => Err(e.to_string()),
        },
        Format::Toml => {
            let t = text.parse::<toml::Table>().map_err(|e| e.to_string())?;
            serde_json::to_value(t).map_err(|e| e.to_string())
        }
    }
}

/// A short rendering of a value for an error message.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// (on, percent) of the flag at `place`: absent means off; a field that is
/// not what it should be is an error naming it (the file says something
/// golive cannot read, and showing "off" would be a guess).
fn get(doc: &Value, place: &Place) -> Result<(bool, Option<u8>), String> {
    let mut v = doc;
    for (i, key) in place.path.iter().enumerate() {
        match v {
            Value::Object(m) => match m.get(key) {
                Some(next) => v = next,
                None => return Ok((false, None)),
            },
            other => {
                return Err(format!(
                    "{} is {}, not an object, so flag {} ({}) cannot be in it",
                    place.path[..i].join("."),
                    shown(other),
                    place.name,
                    place.key()
                ));
            }
        }
    }
    match v {
        Value::Bool(b) => Ok((*b, None)),
        Value::Object(o) => {
            let on = match o.get(&place.on_field) {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(format!(
                        "{}.{} (on/off of flag {}) is {}, not true or false; fix the file, or \
                         name the right field with on_field",
                        place.key(),
                        place.on_field,
                        place.name,
                        shown(other)
                    ));
                }
            };
            let field = place.percent_field.as_deref();
            let percent = match field.and_then(|f| o.get(f)) {
                None => None,
                Some(n) => Some(n.as_u64().filter(|p| *p <= 100).ok_or_else(|| {
                    format!(
                        "{}.{} (rollout percentage of flag {}) is {}, not a whole number from 0 \
                         to 100; fix the file, or name the right field with percent_field",
                        place.key(),
                        field.unwrap_or_default(),
                        place.name,
                        shown(n)
                    )
                })? as u8),
            };
            Ok((on, percent))
        }
        other => Err(format!(
            "{} (flag {}) is {}, neither an object nor true/false",
            place.key(),
            place.name,
            shown(other)
        )),
    }
}

/// What a change means for the file's content: the flag's on field set,
/// its percent field set (or removed for none), objects created on the
/// way; a plain boolean stays one. The edited text must parse to this.
fn apply(doc: &mut Value, place: &Place, on: bool, percent: Option<u8>) -> Result<(), String> {
    let (parents, name) = place.path.split_at(place.path.len() - 1);
    let mut v = doc;
    for key in parents {
        let Value::Object(m) = v else {
            return Err(format!(
                "a parent of {} is not an object, so flag {} cannot be written",
                place.key(),
                place.name
            ));
        };
        v = m
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    let Value::Object(m) = v else {
        return Err(format!(
            "the parent of {} is not an object, so flag {} cannot be written",
            place.key(),
            place.name
        ));
    };
    match m.get_mut(&name[0]) {
        None => {
            m.insert(name[0].clone(), place.new_flag(on, percent));
        }
        Some(b @ Value::Bool(_)) => {
            if percent.is_some() {
                return Err(plain_boolean(place));
            }
            *b = Value::Bool(on);
        }
        Some(Value::Object(o)) => {
            o.insert(place.on_field.clone(), on.into());
            match (percent, &place.percent_field) {
                (Some(p), Some(field)) => {
                    o.insert(field.clone(), p.into());
                }
                (None, Some(field)) => {
                    o.remove(field);
                }
                // A flag without a percentage: the app's other fields stay,
                // whatever their names.
                (None, None) => {}
                (Some(_), None) => {
                    return Err(format!(
                        "flag {} has no rollout percentage (percent_field = false); set it \
                         without --percent",
                        place.name
                    ));
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "{} (flag {}) is {}, neither an object nor true/false",
                place.key(),
                place.name,
                shown(other)
            ));
        }
    }
    Ok(())
}

/// The file's new text with the flag changed, checked to change exactly
/// that.
fn changed(doc: &Doc, place: &Place, on: bool, percent: Option<u8>) -> Result<String, String> {
    let mut want = doc.value.clone();
    apply(&mut want, place, on, percent)?;
    let text = match doc.format {
        Format::Json => json::edit(&doc.text, place, on, percent)?,
        Format::Toml => tomlfile::edit(&doc.text, place, on, percent)?,
    };
    match parse(doc.format, &text) {
        Ok(got) if got == want => Ok(text),
        _ => Err(format!(
            "the edit of flag {} would change more than its fields (a bug in golive); \
             nothing was written",
            place.name
        )),
    }
}

/// The declared flags of an app with their values and last change.
pub fn list(journal: &Journal, app_name: &str, app: &AppConfig) -> Result<Vec<FlagState>, String> {
    let flags = config(app_name, app)?;
    let path = file_path(app, flags);
    let doc = read(&path).map_err(|e| e.message)?;
    let changes = journal
        .flag_changes(app_name, 10_000)
        .map_err(|e| e.to_string())?;
    flags
        .declared
        .iter()
        .map(|(name, decl)| {
            let (on, percent) = get(&doc.value, &Place::of(name, decl))
                .map_err(|e| format!("flag file {}: {e}", path.display()))?;
            let last = changes.iter().find(|c| &c.name == name);
            Ok(FlagState {
                name: name.clone(),
                on,
                percent,
                changed_by: last.map(|c| c.by.clone()),
                changed_at: last.map(|c| c.at),
            })
        })
        .collect()
}

/// The declared flags' values in the flag file, for a rollback point
/// (issue 13); `None` when the app declares no flags.
pub fn values(app: &AppConfig) -> Result<Option<Vec<FlagValue>>, String> {
    let Some(flags) = &app.flags else {
        return Ok(None);
    };
    let path = file_path(app, flags);
    let doc = read(&path).map_err(|e| e.message)?;
    flags
        .declared
        .iter()
        .map(|(name, decl)| {
            let (on, percent) = get(&doc.value, &Place::of(name, decl))
                .map_err(|e| format!("flag file {}: {e}", path.display()))?;
            Ok(FlagValue {
                name: name.clone(),
                on,
                percent,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

/// The `flag` job: writes one flag into the file and journals the change.
///
/// Classes (issue 14): a flag the app does not declare `NotFound`; no
/// flags declared, a bad percentage, or a flag file whose content cannot
/// hold the flag (not the app's format, a key of another type) a refusal
/// (`BadRequest`), the file unchanged; reading or writing the file, or the
/// journal, failing is the host's fault (`Internal`).
pub fn set(
    config: &AgentConfig,
    journal: &Journal,
    req: &SetFlag,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    let by = journal
        .running_job_submitter(&req.app, "flag")
        .ok()
        .flatten()
        .unwrap_or_else(|| "agent".to_string());
    set_by(config, journal, req, &by, emit)
}

/// [`set`] on behalf of `by` (a host rollback names itself, issue 13).
pub fn set_by(
    config: &AgentConfig,
    journal: &Journal,
    req: &SetFlag,
    by: &str,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    let app = config
        .app(&req.app)
        .ok_or_else(|| JobError::refused(format!("no app {:?} in the agent config", req.app)))?;
    let flags = self::config(&req.app, app).map_err(JobError::refused)?;
    check_request(&req.app, flags, req).map_err(|m| JobError {
        code: if flags.declared.contains_key(&req.name) {
            ErrorCode::BadRequest
        } else {
            ErrorCode::NotFound
        },
        message: m,
    })?;
    let by = by.to_string();
    let path = file_path(app, flags);
    let place = Place::of(&req.name, &flags.declared[&req.name]);
    let in_file = |e: String| JobError::refused(format!("flag file {}: {e}", path.display()));
    let doc = read(&path)?;
    let (previous_on, previous_percent) = get(&doc.value, &place).map_err(in_file)?;
    let body = changed(&doc, &place, req.on, req.percent).map_err(in_file)?;
    crate::maintenance::write_atomic(&path, body.as_bytes())
        .map_err(|e| JobError::failed(format!("cannot write flag file {}: {e}", path.display())))?;
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
            "flag {} of {}: {} -> {} (by {by}, {} in {})",
            req.name,
            req.app,
            show(previous_on, previous_percent),
            show(req.on, req.percent),
            place.key(),
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

    /// Issue 12, part 11: seed 004's flag, nested in `FASES`, in the app's
    /// own fields: read as it is, and written back changing only them.
    #[test]
    fn issue12_the_apps_own_format_is_read_and_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = agent_config(dir.path(), "config/feature_flags.json");
        let flags = config.apps.get_mut("shop").unwrap().flags.as_mut().unwrap();
        flags.declared.insert(
            "fase_37".into(),
            serde_json::from_value(serde_json::json!({
                "key": "FASES.FASE_37_BI_ANALYTICS",
                "on_field": "habilitado",
                "percent_field": "porcentaje_rollout",
            }))
            .unwrap(),
        );
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let file = dir.path().join("config/feature_flags.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let seed = r#"{
  "FASES": {
    "FASE_37_BI_ANALYTICS": {
      "habilitado": true,
      "niveles": ["produccion_abierta"],
      "porcentaje_rollout": 75,
      "version_minima": "1.2.0"
    }
  }
}
"#;
        std::fs::write(&file, seed).unwrap();
        let app = config.app("shop").unwrap();
        let f = list(&journal, "shop", app).unwrap();
        let fase = f.iter().find(|f| f.name == "fase_37").unwrap();
        assert_eq!((fase.on, fase.percent), (true, Some(75)));
        set(&config, &journal, &req("fase_37", false, Some(75)), &|_| {}).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            seed.replace("\"habilitado\": true", "\"habilitado\": false")
        );
        // A field the file holds as something else is named, not read as off.
        std::fs::write(&file, seed.replace(": 75", ": \"75%\"")).unwrap();
        let e = list(&journal, "shop", app).unwrap_err();
        assert!(
            e.contains("FASES.FASE_37_BI_ANALYTICS.porcentaje_rollout") && e.contains("\"75%\""),
            "{e}"
        );
        let e = set(&config, &journal, &req("fase_37", true, None), &|_| {}).unwrap_err();
        assert!(e.message.contains("porcentaje_rollout"), "{e}");
        // The file's content is the operator's to fix (issue 14).
        assert_eq!(e.code, ErrorCode::BadRequest);
        // A plain boolean stays one, and takes no percentage.
        std::fs::write(&file, "{\"bi\": true}").unwrap();
        set(&config, &journal, &req("bi", false, None), &|_| {}).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"bi\": false}");
        let e = set(&config, &journal, &req("bi", true, Some(5)), &|_| {}).unwrap_err();
        assert!(e.message.contains("plain true/false"), "{e}");
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"bi\": false}");
    }

    /// Issue 12, part 11: a flag declared with `percent_field = false` has
    /// no percentage: a request with one is refused naming the flag and the
    /// fix, the list shows none (whatever the object holds), and on/off
    /// leaves every other member, `percent` included, as it was.
    #[test]
    fn issue12_a_flag_without_a_percentage_refuses_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = agent_config(dir.path(), "f.json");
        let flags = config.apps.get_mut("shop").unwrap().flags.as_mut().unwrap();
        flags.declared.insert(
            "alerta".into(),
            serde_json::from_value(serde_json::json!({
                "key": "ALERTAS.BAJA", "on_field": "habilitado", "percent_field": false,
            }))
            .unwrap(),
        );
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let file = dir.path().join("f.json");
        let seed = "{\"ALERTAS\": {\"BAJA\": {\"habilitado\": true, \"percent\": 50}}}";
        std::fs::write(&file, seed).unwrap();
        let flags = config.app("shop").unwrap().flags.as_ref().unwrap();
        let e = check_request("shop", flags, &req("alerta", true, Some(20))).unwrap_err();
        assert!(
            e.contains("flag alerta")
                && e.contains("[apps.shop.flags.declared.alerta]")
                && e.contains("without --percent"),
            "{e}"
        );
        let e = set(&config, &journal, &req("alerta", true, Some(20)), &|_| {}).unwrap_err();
        assert!(e.message.contains("no rollout percentage"), "{e}");
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), seed);
        assert!(journal.flag_changes("shop", 10).unwrap().is_empty());
        let app = config.app("shop").unwrap();
        let listed = list(&journal, "shop", app).unwrap();
        let a = listed.iter().find(|f| f.name == "alerta").unwrap();
        assert_eq!((a.on, a.percent), (true, None));
        set(&config, &journal, &req("alerta", false, None), &|_| {}).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            seed.replace("true", "false")
        );
        // A new flag without a percentage, in TOML too.
        let toml_file = dir.path().join("f.toml");
        config
            .apps
            .get_mut("shop")
            .unwrap()
            .flags
            .as_mut()
            .unwrap()
            .file = toml_file.clone();
        std::fs::write(
            &toml_file,
            "[ALERTAS.BAJA]\nhabilitado = false\npercent = 5\n",
        )
        .unwrap();
        set(&config, &journal, &req("alerta", true, None), &|_| {}).unwrap();
        assert_eq!(
            std::fs::read_to_string(&toml_file).unwrap(),
            "[ALERTAS.BAJA]\nhabilitado = true\npercent = 5\n"
        );
        std::fs::remove_file(&toml_file).unwrap();
        set(&config, &journal, &req("alerta", true, None), &|_| {}).unwrap();
        let t: toml::Table = std::fs::read_to_string(&toml_file)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(t["ALERTAS"]["BAJA"].as_table().unwrap().len(), 1, "{t}");
    }

    #[test]
    fn issue12_flag_keys_and_fields_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = agent_config(dir.path(), "f.json");
        let flags = config.apps.get_mut("shop").unwrap().flags.as_mut().unwrap();
        let decl = |v: serde_json::Value| serde_json::from_value(v).unwrap();
        flags
            .declared
            .insert("FASE_8".into(), decl(serde_json::json!({"key": "A..B"})));
        flags
            .declared
            .insert("dup".into(), decl(serde_json::json!({"key": ["bi"]})));
        flags.declared.insert(
            "same".into(),
            decl(serde_json::json!({"key": "S", "on_field": "x", "percent_field": "x"})),
        );
        flags.declared.insert(
            "deep".into(),
            decl(serde_json::json!({"key": "a.b.c.d.e.f.g.h.i"})),
        );
        let issues: Vec<_> = golive_shared::config::validate(&config)
            .into_iter()
            .filter(|(k, _)| k.starts_with("apps.shop.flags"))
            .collect();
        let has = |key: &str, text: &str| issues.iter().any(|(k, m)| k == key && m.contains(text));
        // Upper case names are fine (the app's own names); the empty key part is not.
        assert!(
            has("apps.shop.flags.declared.FASE_8.key", "\"\""),
            "{issues:?}"
        );
        assert!(
            has("apps.shop.flags.declared.dup.key", "already uses"),
            "{issues:?}"
        );
        assert!(
            has("apps.shop.flags.declared.same.percent_field", "two fields"),
            "{issues:?}"
        );
        assert!(
            has("apps.shop.flags.declared.deep.key", "1 to 8 levels"),
            "{issues:?}"
        );
        assert_eq!(issues.len(), 4, "{issues:?}");
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

    /// Issue 14: the flag job's failures carry their class. A name the app
    /// does not declare is `NotFound`, a bad percentage `BadRequest` (both
    /// exit 2, the file untouched); a flag file the host cannot read is
    /// `Internal` (exit 1).
    #[test]
    fn issue14_the_flag_jobs_failures_are_classed() {
        let dir = tempfile::tempdir().unwrap();
        let config = agent_config(dir.path(), "f.json");
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let e = set(&config, &journal, &req("nope", true, None), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "{e}");
        assert!(e.message.contains("declares no flag \"nope\""), "{e}");
        let e = set(&config, &journal, &req("bi", true, Some(101)), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
        assert!(!dir.path().join("f.json").exists());
        // A directory where the file should be: the host's problem.
        std::fs::create_dir(dir.path().join("f.json")).unwrap();
        let e = set(&config, &journal, &req("bi", true, None), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal, "{e}");
        assert!(e.message.starts_with("cannot read flag file"), "{e}");
        assert!(journal.flag_changes("shop", 10).unwrap().is_empty());
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
