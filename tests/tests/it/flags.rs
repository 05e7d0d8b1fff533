//! Issue 4 part 8, feature flags: real `golivectl` and two `golive-agent`s
//! over mTLS. Flags are set on both hosts, changed, and the flag files (other
//! keys kept) and journals (who, when) are read back.
//!
//! Each test owns a temp dir and loopback addresses in 127.0.0.150-159.

use std::path::{Path, PathBuf};

use golive_tests::*;
use serde_json::Value;

/// The seed's file, trimmed: an unknown nested section and a declared flag.
const SEED_FLAGS: &str = r#"{
  "FASES": {"FASE_8_DATA_QUALITY": {"habilitado": true, "porcentaje_rollout": 100}},
  "bi_analytics": {"enabled": true, "percent": 50, "note": "kept"}
}
"#;

fn agent_with_flags(dir: &Path, pki: &TestPki, name: &str, ip: &str) -> (AgentProc, PathBuf) {
    let root = dir.join(name).join("srv/shop");
    let file = root.join("shared/config/feature_flags.json");
    std::fs::create_dir_all(file.parent().unwrap()).expect("flag dir");
    std::fs::write(&file, SEED_FLAGS).expect("seed flags");
    let mut spec = AgentSpec::new(name, ip);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n[apps.shop.flags]\nfile = \"shared/config/feature_flags.json\"\n\n\
         [apps.shop.flags.declared.new_checkout]\ndescription = \"the new checkout\"\n\n\
         [apps.shop.flags.declared.bi_analytics]\n"
    );
    (AgentProc::start(dir, pki, &spec), file)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("flag file")).expect("json flag file")
}

#[test]
fn flags_are_set_on_two_hosts_keep_other_keys_and_are_journaled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let (a1, f1) = agent_with_flags(dir.path(), &pki, "web1", "127.0.0.150");
    let (a2, f2) = agent_with_flags(dir.path(), &pki, "web2", "127.0.0.151");
    let plan = dir.path().join("flags.toml");
    write_plan(&plan, &pki, &op, "shop", None, &[&a1, &a2]);

    let list = ctl.run(&["--output", "json", "flag", "list", s(&plan)]);
    assert_eq!(list.code, 0, "{}", list.text());
    let v = list.json_lines().pop().expect("list json");
    assert_eq!(v["hosts"].as_array().map(Vec::len), Some(2), "{v}");
    let bi = &v["hosts"][0]["flags"][0];
    assert_eq!(
        (&bi["name"], &bi["on"], &bi["percent"]),
        (
            &Value::from("bi_analytics"),
            &Value::from(true),
            &Value::from(50)
        ),
        "{v}"
    );

    let set = ctl.run(&[
        "flag",
        "set",
        s(&plan),
        "new_checkout",
        "on",
        "--percent",
        "25",
    ]);
    assert_eq!(set.code, 0, "{}", set.text());
    assert!(
        set.stdout
            .contains("[web1] flag new_checkout: off -> on (25%)"),
        "{}",
        set.text()
    );
    assert!(
        set.stdout
            .contains("[web2] flag new_checkout: off -> on (25%)"),
        "{}",
        set.text()
    );
    let changed = ctl.run(&["flag", "set", s(&plan), "bi_analytics", "off"]);
    assert_eq!(changed.code, 0, "{}", changed.text());
    assert!(
        changed.stdout.contains("on (50%) -> off (50%)"),
        "{}",
        changed.text()
    );

    for (agent, file) in [(&a1, &f1), (&a2, &f2)] {
        let v = read_json(file);
        assert_eq!(v["new_checkout"]["enabled"], true, "{v}");
        assert_eq!(v["new_checkout"]["percent"], 25, "{v}");
        assert_eq!(v["bi_analytics"]["enabled"], false, "{v}");
        assert_eq!(v["bi_analytics"]["note"], "kept", "{v}");
        assert_eq!(
            v["FASES"]["FASE_8_DATA_QUALITY"]["porcentaje_rollout"], 100,
            "{v}"
        );
        let rows: Vec<(String, bool, String, i64)> = {
            let j = agent.journal();
            let mut stmt = j
                .prepare("SELECT name, enabled, by, at FROM flag_changes WHERE app = 'shop' ORDER BY seq")
                .expect("flag_changes");
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1), ("new_checkout", true));
        assert_eq!((rows[1].0.as_str(), rows[1].1), ("bi_analytics", false));
        assert!(rows.iter().all(|r| r.2 == "alice" && r.3 > 0), "{rows:?}");
    }

    let listed = ctl.run(&["flag", "list", s(&plan)]);
    assert_eq!(listed.code, 0, "{}", listed.text());
    assert!(listed.stdout.contains("by alice"), "{}", listed.text());
}

#[test]
fn unknown_flags_and_big_percentages_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let (a1, f1) = agent_with_flags(dir.path(), &pki, "web1", "127.0.0.152");
    let (a2, _f2) = agent_with_flags(dir.path(), &pki, "web2", "127.0.0.153");
    let plan = dir.path().join("flags.toml");
    write_plan(&plan, &pki, &op, "shop", None, &[&a1, &a2]);

    let unknown = ctl.run(&["flag", "set", s(&plan), "dark_mode", "on"]);
    assert_eq!(unknown.code, 2, "{}", unknown.text());
    assert!(
        unknown
            .text()
            .contains("declared flags: bi_analytics, new_checkout"),
        "{}",
        unknown.text()
    );
    // Issue 14: refused when submitted (`NotFound`, as an undeclared
    // command): no flag job ran on either host.
    for a in [&a1, &a2] {
        let jobs: i64 = a
            .journal()
            .query_row("SELECT COUNT(*) FROM jobs WHERE kind = 'flag'", [], |r| {
                r.get(0)
            })
            .expect("count flag jobs");
        assert_eq!(jobs, 0);
    }
    let big = ctl.run(&[
        "flag",
        "set",
        s(&plan),
        "new_checkout",
        "on",
        "--percent",
        "101",
    ]);
    assert_eq!(big.code, 2, "{}", big.text());
    assert!(big.text().contains("from 0 to 100"), "{}", big.text());
    let negative = ctl.run(&[
        "flag",
        "set",
        s(&plan),
        "new_checkout",
        "on",
        "--percent",
        "-5",
    ]);
    assert_eq!(negative.code, 2, "{}", negative.text());
    assert!(
        negative
            .text()
            .contains("\"-5\" is not a percentage: use a whole number from 0 to 100"),
        "{}",
        negative.text()
    );
    assert_eq!(std::fs::read_to_string(&f1).expect("flag file"), SEED_FLAGS);
    let n: i64 = a1
        .journal()
        .query_row("SELECT COUNT(*) FROM flag_changes", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 0);
}

/// Issue 4 part 8: a deployment's rollback point includes the flag values;
/// `golivectl rollback ID` restores flags changed since the deployment.
#[test]
fn issue4_rollback_restores_the_flag_values_of_the_rollback_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let (agent, file) = agent_with_flags(dir.path(), &pki, "web7", "127.0.0.157");
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let plan = dir.path().join("deploy.toml");
    let deploy = |v: &str| {
        let art = dir.path().join(format!("dist/shop-{v}.tar.gz"));
        artifact(&art, &[("index.html", v.as_bytes())]);
        write_plan(&plan, &pki, &op, "shop", Some((v, &art)), &[&agent]);
        let r = ctl.run(&["--output", "json", "deploy", s(&plan)]);
        assert_eq!(r.code, 0, "{}", r.text());
        r.json_lines()
            .into_iter()
            .find(|e| e["event"] == "result")
            .and_then(|e| e["deployment"].as_str().map(String::from))
            .expect("deployment id")
    };
    deploy("v1");
    let v2 = deploy("v2");
    // After the deployment, someone turns the new checkout on and changes
    // the analytics rollout.
    let r = ctl.run(&[
        "flag",
        "set",
        s(&plan),
        "new_checkout",
        "on",
        "--percent",
        "10",
    ]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = ctl.run(&["flag", "set", s(&plan), "bi_analytics", "off"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(read_json(&file)["new_checkout"]["enabled"], true);

    let r = ctl.run(&["rollback", &v2]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("restored"), "{}", r.text());
    let flags = read_json(&file);
    assert_eq!(flags["new_checkout"]["enabled"], false, "{flags}");
    assert_eq!(flags["bi_analytics"]["enabled"], true, "{flags}");
    assert_eq!(flags["bi_analytics"]["percent"], 50, "{flags}");
    assert_eq!(
        flags["FASES"]["FASE_8_DATA_QUALITY"]["habilitado"], true,
        "other keys are kept: {flags}"
    );
    assert_eq!(
        std::fs::read_link(dir.path().join("web7/srv/shop/current")).unwrap(),
        Path::new("releases/v1")
    );
    // Issue 12 part 14: the rollback and the flags it restored are later
    // actions in the deployment's record, with who.
    let show = ctl.run(&["--output", "json", "show", &v2]);
    let record: serde_json::Value = serde_json::from_str(show.stdout.trim()).expect("show");
    let action = &record["actions"][0];
    assert_eq!(action["action"], "rollback", "{record}");
    assert_eq!(action["by"], "alice", "{record}");
    let detail = action["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("web7: v2 -> v1")
            && detail.contains("database: code only")
            && detail.contains("flags: restored")
            && detail.contains("new_checkout"),
        "{record}"
    );
}

/// Seed 004's `config/feature_flags.json`, as its runbook shows it, with
/// FASE_37 turned on at 75 % as in the replay of issue 12.
const SEED_004: &str = r#"{
  "FASES": {
    "FASE_8_DATA_QUALITY": {
      "habilitado": true,
      "niveles": ["piloto", "produccion_controlada", "produccion_abierta"],
      "porcentaje_rollout": 100,
      "version_minima": "1.0.0"
    },
    "FASE_9_OBSERVABILITY": {
      "habilitado": true,
      "niveles": ["produccion_controlada", "produccion_abierta"],
      "porcentaje_rollout": 75,
      "version_minima": "1.0.0"
    },
    "FASE_37_BI_ANALYTICS": {
      "habilitado": true,
      "niveles": ["produccion_abierta"],
      "porcentaje_rollout": 75,
      "version_minima": "1.2.0",
      "notas": "Disponible en v1.2.0+"
    }
  },
  "ALERTAS": {
    "ALERTA_BAJA": {
      "habilitado": true,
      "nivel_minimo": "piloto"
    }
  }
}
"#;

/// Issue 12, part 11: a flag in the app's own format (nested key, Spanish
/// field names) is listed as the app has it, `flag set ... off` changes
/// only its on/off field (every other byte of the file stays), and a
/// rollback restores the file byte for byte.
#[test]
fn issue12_flags_in_the_apps_own_format_are_read_written_and_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let root = dir.path().join("finca1/srv/finca");
    let file = root.join("shared/config/feature_flags.json");
    std::fs::create_dir_all(file.parent().unwrap()).expect("flag dir");
    std::fs::write(&file, SEED_004).expect("seed flags");
    let mut spec = AgentSpec::new("finca1", "127.0.0.158");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n[apps.shop.flags]\nfile = \"shared/config/feature_flags.json\"\n\n\
         [apps.shop.flags.declared.FASE_37_BI_ANALYTICS]\nkey = \"FASES.FASE_37_BI_ANALYTICS\"\n\
         on_field = \"habilitado\"\npercent_field = \"porcentaje_rollout\"\n\n\
         [apps.shop.flags.declared.alerta_baja]\nkey = [\"ALERTAS\", \"ALERTA_BAJA\"]\non_field = \"habilitado\"\n"
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let plan = dir.path().join("deploy.toml");
    let deploy = |v: &str| {
        let art = dir.path().join(format!("dist/finca-{v}.tar.gz"));
        artifact(&art, &[("index.html", v.as_bytes())]);
        write_plan(&plan, &pki, &op, "shop", Some((v, &art)), &[&agent]);
        let r = ctl.run(&["--output", "json", "deploy", s(&plan)]);
        assert_eq!(r.code, 0, "{}", r.text());
        r.json_lines()
            .into_iter()
            .find(|e| e["event"] == "result")
            .and_then(|e| e["deployment"].as_str().map(String::from))
            .expect("deployment id")
    };
    deploy("v1");
    let v2 = deploy("v2");

    let list = ctl.run(&["flag", "list", s(&plan)]);
    assert_eq!(list.code, 0, "{}", list.text());
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains("FASE_37_BI_ANALYTICS"))
        .unwrap_or_else(|| panic!("{}", list.text()));
    assert!(line.contains("on (75%)"), "{}", list.text());
    assert!(
        list.stdout
            .lines()
            .any(|l| l.contains("alerta_baja") && l.contains(" on ")),
        "{}",
        list.text()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), SEED_004);

    let off = ctl.run(&["flag", "set", s(&plan), "FASE_37_BI_ANALYTICS", "off"]);
    assert_eq!(off.code, 0, "{}", off.text());
    assert!(
        off.stdout.contains("on (75%) -> off (75%)"),
        "{}",
        off.text()
    );
    let want = SEED_004.replace(
        "\"habilitado\": true,\n      \"niveles\": [\"produccion_abierta\"]",
        "\"habilitado\": false,\n      \"niveles\": [\"produccion_abierta\"]",
    );
    assert_ne!(want, SEED_004);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
    let listed = ctl.run(&["--output", "json", "flag", "list", s(&plan)]);
    let v = listed.json_lines().pop().expect("list json");
    let fase = v["hosts"][0]["flags"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "FASE_37_BI_ANALYTICS"))
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(
        (&fase["on"], &fase["percent"]),
        (&Value::from(false), &Value::from(75))
    );

    let r = ctl.run(&["rollback", &v2]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout
            .contains("restored FASE_37_BI_ANALYTICS -> on (75%)"),
        "{}",
        r.text()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), SEED_004);
}

/// Issue 14, part 8: an app that declares no feature flags (or no
/// migrations) is refused with the protocol's `NotDeclared` code, which
/// the deploy reads as "nothing to record" without matching the text.
#[test]
fn issue14_an_app_without_flags_or_migrations_is_refused_with_a_code() {
    use golive_shared::protocol::{ErrorCode, ListFlagsRequest, MigrationStatusRequest, Request};

    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let root = dir.path().join("web9/srv/shop");
    std::fs::create_dir_all(&root).expect("app root");
    let mut spec = AgentSpec::new("web9", "127.0.0.154");
    spec.apps_toml = format!("[apps.shop]\nroot = {root:?}\n");
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let tls = golivectl::tls::client_config(&pki.ca(), &op.0, &op.1).expect("client TLS config");
    let client =
        golivectl::client::AgentClient::new(&agent.name, &agent.addr.to_string(), None, tls)
            .expect("agent client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let flags = rt
        .block_on(client.call(&Request::ListFlags(ListFlagsRequest { app: "shop".into() })))
        .expect_err("an app without flags has none to list");
    assert_eq!(flags.agent_code(), Some(ErrorCode::NotDeclared), "{flags}");
    assert_eq!(flags.exit_code(), 2, "{flags}");
    assert!(
        flags.to_string().contains("[apps.shop.flags]"),
        "names the fix: {flags}"
    );

    let migrations = rt
        .block_on(
            client.call(&Request::MigrationStatus(MigrationStatusRequest {
                app: "shop".into(),
                release: None,
            })),
        )
        .expect_err("an app without migrations has none to report");
    assert_eq!(
        migrations.agent_code(),
        Some(ErrorCode::NotDeclared),
        "{migrations}"
    );
    assert!(
        migrations.to_string().contains("[apps.shop.migrations]"),
        "{migrations}"
    );

    // An app the agent does not declare at all is another refusal.
    let unknown = rt
        .block_on(client.call(&Request::ListFlags(ListFlagsRequest { app: "blog".into() })))
        .expect_err("an undeclared app is refused");
    assert_ne!(
        unknown.agent_code(),
        Some(ErrorCode::NotDeclared),
        "{unknown}"
    );
}

/// Issue 12, part 11: a flag declared with `percent_field = false` has no
/// percentage: `flag list` shows none, `flag set NAME on --percent N` is
/// refused with exit 2 naming the flag and the fix (the file untouched),
/// and on/off without `--percent` changes only its on/off field.
#[test]
fn issue12_a_flag_declared_without_a_percentage_refuses_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let root = dir.path().join("finca2/srv/finca");
    let file = root.join("shared/config/feature_flags.json");
    std::fs::create_dir_all(file.parent().unwrap()).expect("flag dir");
    std::fs::write(&file, SEED_004).expect("seed flags");
    let mut spec = AgentSpec::new("finca2", "127.0.0.159");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n[apps.shop.flags]\nfile = \"shared/config/feature_flags.json\"\n\n\
         [apps.shop.flags.declared.alerta_baja]\nkey = [\"ALERTAS\", \"ALERTA_BAJA\"]\n\
         on_field = \"habilitado\"\npercent_field = false\n"
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let plan = dir.path().join("flags.toml");
    write_plan(&plan, &pki, &op, "shop", None, &[&agent]);

    let listed = ctl.run(&["--output", "json", "flag", "list", s(&plan)]);
    assert_eq!(listed.code, 0, "{}", listed.text());
    let v = listed.json_lines().pop().expect("list json");
    let alerta = &v["hosts"][0]["flags"][0];
    assert_eq!(
        (&alerta["name"], &alerta["on"], &alerta["percent"]),
        (
            &Value::from("alerta_baja"),
            &Value::from(true),
            &Value::Null
        ),
        "{v}"
    );

    let r = ctl.run(&[
        "flag",
        "set",
        s(&plan),
        "alerta_baja",
        "on",
        "--percent",
        "30",
    ]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.text().contains("flag alerta_baja")
            && r.text().contains("percent_field = false")
            && r.text().contains("without --percent"),
        "{}",
        r.text()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), SEED_004);

    let r = ctl.run(&["flag", "set", s(&plan), "alerta_baja", "off"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("on -> off"), "{}", r.text());
    let want = SEED_004.replace(
        "\"habilitado\": true,\n      \"nivel_minimo\"",
        "\"habilitado\": false,\n      \"nivel_minimo\"",
    );
    assert_ne!(want, SEED_004);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
}
