use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::command;
use super::*;

fn from_env(name: &str, value: &str) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();
    s.apply_env(|k| (k == name).then(|| value.to_owned()))?;
    Ok(s)
}

fn from_toml(text: &str) -> Result<Settings, String> {
    let mut s = Settings::default();
    s.apply_file(text)?;
    Ok(s)
}

/// Settings have no `PartialEq` (nothing else needs one); their debug form shows every field.
fn same(a: &Settings, b: &Settings) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// A valid value other than the default for every variable.
fn sample(env: &str) -> Option<&'static str> {
    let samples: HashMap<&str, &str> = [
        ("WORKSPACE_BASE_PATH", "/mnt/efs/data"),
        ("DATABASE_URL", "sqlite:///var/lib/w.db"),
        ("WORKSPACED_LISTEN", "0.0.0.0:80"),
        ("WORKSPACED_PUBLIC_URL", "https://ide.example.edu"),
        ("WORKSPACED_INSTANCE", "course-7"),
        ("WORKSPACED_EGRESS_RULES", "check"),
        ("WORKSPACED_RUNTIME", "Swarm"),
        ("WORKSPACED_SWARM_CONSTRAINTS", "node.labels.workspaced==true, node.role!=manager"),
        ("WORKSPACED_SWARM_SPREAD", "node.labels.zone"),
        ("WORKSPACED_SWARM_CPU_RESERVATION", "0.5"),
        ("WORKSPACED_IMAGE", "my/jupyter:latest"),
        ("WORKSPACED_COMMAND", "jupyter lab --ip 0.0.0.0"),
        ("WORKSPACED_CONTAINER_PORT", "8888"),
        ("WORKSPACED_READINESS_PATH", "/api/status"),
        ("WORKSPACED_MOUNT_TARGET", "/home/jovyan/work"),
        ("WORKSPACED_IDE_STATE_PATH", "/home/jovyan/.local/share/jupyter"),
        ("WORKSPACED_CPUS", "2.5"),
        ("WORKSPACED_MEMORY", "2g"),
        ("WORKSPACED_PIDS_LIMIT", "512"),
        ("WORKSPACED_UID", "1001"),
        ("WORKSPACED_GID", "1002"),
        ("WORKSPACED_PROXY_MAX_CONNECTIONS_PER_STUDENT", "16"),
        ("WORKSPACED_CAP_DROP_ALL", "false"),
        ("WORKSPACED_NOFILE", "8192"),
        ("WORKSPACED_TMP_SIZE", "64m"),
        ("WORKSPACED_READ_ONLY_ROOT", "true"),
        ("WORKSPACED_IDE_AUTH", "header:Authorization:token "),
        ("WORKSPACED_IDE_SECRET_ENV", "JUPYTER_TOKEN"),
        ("WORKSPACED_PROXY_PATH", "full"),
        ("WORKSPACED_HEADER_READ_TIMEOUT", "5s"),
        ("WORKSPACED_LEASE_TTL", "3s"),
        ("WORKSPACED_STORAGE_TIMEOUT", "4s"),
        ("WORKSPACED_STORAGE_MAX_BLOCKED", "8"),
        ("WORKSPACED_TEMPLATES_PATH", "/srv/templates"),
        ("WORKSPACED_ALLOWED_IMAGES", "a/b:1, c/d:2"),
        ("WORKSPACED_COURSE_MAX_CPUS", "8"),
        ("WORKSPACED_COURSE_MAX_MEMORY", "16g"),
        ("WORKSPACED_COURSE_MAX_PIDS_LIMIT", "8192"),
        ("WORKSPACED_ADMIN_HOST", "Admin.IDE.example.edu:8443"),
        ("WORKSPACED_START_TIMEOUT", "2m"),
        ("WORKSPACED_STOP_GRACE", "3s"),
        ("WORKSPACED_IDLE_TIMEOUT", "20m"),
        ("WORKSPACED_CULL_INTERVAL", "30s"),
        ("WORKSPACED_WARNING_LEAD", "1m"),
        ("WORKSPACED_MAX_AGE", "8h"),
        ("WORKSPACED_OPEN_TAB_KEEPS_ALIVE", "yes"),
        ("WORKSPACED_ACTIVITY_FLUSH_INTERVAL", "500ms"),
        ("WORKSPACED_RECONCILE_INTERVAL", "90"),
        ("WORKSPACED_MAX_CONCURRENT_STARTS", "8"),
        ("WORKSPACED_MAX_QUEUED_STARTS", "0"),
        ("WORKSPACED_MAX_RUNNING", "150"),
        ("WORKSPACED_USAGE_INTERVAL", "1h"),
        ("WORKSPACED_STATS_INTERVAL", "15s"),
        ("WORKSPACED_DISK_SOFT_QUOTA", "5g"),
        ("WORKSPACED_DISK_HARD_QUOTA", "8g"),
        ("WORKSPACED_WEBHOOK_URL", "https://lms.example.edu/hook"),
        ("WORKSPACED_WEBHOOK_SECRET", "s3cret"),
        ("WORKSPACED_SECRET_KEY", "0123456789abcdef0123456789abcdef"),
        ("WORKSPACED_SECRET_KEY_FILE", "/etc/workspaced/key"),
        ("WORKSPACED_LAUNCH_TTL", "30s"),
        ("WORKSPACED_SESSION_TTL", "8h"),
        ("WORKSPACED_COOKIE_SECURE", "false"),
        ("WORKSPACED_LOGIN_URL", "https://lms.example.edu/course/42"),
        ("WORKSPACED_CORS_ORIGINS", "https://lms.example.edu/, https://other.example.edu"),
        ("WORKSPACED_LTI_EMBED", "true"),
        ("WORKSPACED_LTI_LOGIN_CLAIM", "https://purl.imsglobal.org/spec/lti/claim/lis#person_sourcedid"),
        ("WORKSPACED_PROXY_TIMEOUT", "2m"),
        ("WORKSPACED_PROXY_CONNECT_TIMEOUT", "1s"),
        ("WORKSPACED_PROXY_MAX_BODY", "10m"),
        ("WORKSPACED_PROXY_HOST_SUFFIX", ".WS.example.org"),
    ]
    .into();
    samples.get(env).copied()
}

#[test]
fn every_setting_means_the_same_text_in_the_file_and_in_the_environment() {
    for setting in SETTINGS {
        let text = sample(setting.env).unwrap_or_else(|| panic!("no sample for {}", setting.env));
        let by_env = from_env(setting.env, text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!same(&by_env, &Settings::default()), "{} = {text:?} changed nothing", setting.env);
        let Some(key) = setting.key else { continue };
        let by_file = from_toml(&format!("{key} = {}", toml::Value::from(text))).unwrap_or_else(|e| panic!("{e}"));
        assert!(same(&by_env, &by_file), "{key} and {} disagree on {text:?}", setting.env);
    }
}

#[test]
fn toml_numbers_booleans_and_arrays_mean_what_their_text_means_in_the_environment() {
    let pairs = [
        ("cpus = 2.5", "WORKSPACED_CPUS", "2.5"),
        ("container_port = 8888", "WORKSPACED_CONTAINER_PORT", "8888"),
        ("idle_timeout = 900", "WORKSPACED_IDLE_TIMEOUT", "900"),
        ("memory = 1073741824", "WORKSPACED_MEMORY", "1g"),
        ("max_running = 0", "WORKSPACED_MAX_RUNNING", "0"),
        ("open_tab_keeps_alive = true", "WORKSPACED_OPEN_TAB_KEEPS_ALIVE", "on"),
        ("cookie_secure = false", "WORKSPACED_COOKIE_SECURE", "no"),
        (r#"command = ["a", "b c", ""]"#, "WORKSPACED_COMMAND", r#"["a", "b c", ""]"#),
        (r#"cors_origins = ["https://a.edu/", " "]"#, "WORKSPACED_CORS_ORIGINS", "https://a.edu,"),
    ];
    for (toml_line, env, text) in pairs {
        let by_file = from_toml(toml_line).unwrap_or_else(|e| panic!("{toml_line}: {e}"));
        let by_env = from_env(env, text).unwrap_or_else(|e| panic!("{e}"));
        assert!(same(&by_file, &by_env), "{toml_line} and {env}={text:?} disagree");
    }
}

#[test]
fn an_empty_value_means_the_same_in_the_file_and_in_the_environment() {
    for setting in SETTINGS {
        let Some(key) = setting.key else { continue };
        let by_file = from_toml(&format!("{key} = \"\""));
        let by_env = from_env(setting.env, "");
        match (by_file, by_env) {
            (Ok(f), Ok(e)) => assert!(same(&f, &e), "{key} and {} disagree on an empty value", setting.env),
            (Err(_), Err(_)) => {}
            (f, e) => panic!("{key}: {:?} but {}: {:?}", f.err(), setting.env, e.err()),
        }
    }
    let s = from_toml("webhook_url = \"\"\nwebhook_secret = \"\"").unwrap();
    assert_eq!((s.notify.webhook_url, s.notify.webhook_secret), (None, None));
}

#[test]
fn an_unknown_toml_key_is_an_error_that_names_it() {
    let err = from_toml("idle_timeout = \"5m\"\nidle_timout = \"5m\"").unwrap_err();
    assert!(err.contains("idle_timout"), "{err}");
    let err = from_toml("secret_key = \"0123456789abcdef0123456789abcdef\"").unwrap_err();
    assert!(err.contains("unknown key `secret_key`"), "the signing key never sits in the file: {err}");
    let err = from_toml("[workspace]\ncpus = 2").unwrap_err();
    assert!(err.contains("`workspace`"), "{err}");
}

#[test]
fn every_backquoted_default_in_the_docs_is_the_default_in_the_code() {
    for setting in SETTINGS {
        let Some(text) = setting.default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) else { continue };
        if text.contains(['`', '<']) {
            continue; // a description such as `http://<listen>`, not a value
        }
        let s = from_env(setting.env, text).unwrap_or_else(|e| panic!("{e}"));
        assert!(same(&s, &Settings::default()), "{}: the docs say {text}, the code differs", setting.env);
    }
}

#[test]
fn the_table_in_docs_configuration_md_is_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- settings:begin -->\n", "<!-- settings:end -->");
    let start = doc.find(begin).expect("begin marker") + begin.len();
    let stop = doc[start..].find(end).expect("end marker") + start;
    let table = docs_table();
    if doc[start..stop] == table {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
        std::fs::write(&path, format!("{}{table}{}", &doc[..start], &doc[stop..])).unwrap();
        println!("UPDATE_DOCS=1: rewrote the settings table in {}", path.display());
        return;
    }
    panic!("docs/configuration.md differs from config::docs_table(); run with UPDATE_DOCS=1 to rewrite it");
}

#[test]
fn defaults_follow_the_seeds() {
    let s = Settings::default();
    assert_eq!(s.workspace.cpus, 1.0);
    assert_eq!(s.workspace.memory_bytes, 1 << 30);
    assert_eq!(s.cull.idle_timeout, Duration::from_secs(900));
    assert_eq!(s.cull.warning_lead, Duration::from_secs(120));
    assert_eq!(s.cull.interval, Duration::from_secs(60));
    assert_eq!(s.workspace.uid, 1000);
    assert!(s.listen.starts_with("127.0.0.1:"));
    s.check().unwrap();
}

#[test]
fn env_wins_over_file() {
    let mut s = from_toml("base_path = \"/from/file\"\nmemory = \"2g\"\nidle_timeout = \"10m\"\n").unwrap();
    let env: HashMap<&str, &str> =
        [("WORKSPACE_BASE_PATH", "/mnt/efs/workspace-data"), ("WORKSPACED_IDLE_TIMEOUT", "4s")].into();
    s.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(s.base_path, PathBuf::from("/mnt/efs/workspace-data"));
    assert_eq!(s.workspace.memory_bytes, 2 << 30);
    assert_eq!(s.cull.idle_timeout, Duration::from_secs(4));
}

#[test]
fn an_empty_ide_state_path_means_no_state_folder() {
    assert_eq!(Settings::default().workspace.ide_state_path.as_deref(), Some("/home/coder/.local/share/code-server"));
    assert_eq!(from_env("WORKSPACED_IDE_STATE_PATH", "").unwrap().workspace.ide_state_path, None);
    assert_eq!(from_toml("ide_state_path = \"\"").unwrap().workspace.ide_state_path, None);
}

#[test]
fn bad_values_name_the_setting() {
    let err = from_env("WORKSPACED_MEMORY", "lots").unwrap_err();
    assert!(err.to_string().contains("WORKSPACED_MEMORY"), "{err}");
    let err = from_toml("memory = \"lots\"").unwrap_err();
    assert!(err.starts_with("memory = "), "{err}");
    let err = from_env("WORKSPACED_INSTANCE", "../x").unwrap_err();
    assert!(err.to_string().contains("WORKSPACED_INSTANCE"));
}

#[test]
fn bad_values_of_the_security_and_replica_settings_are_refused_by_name() {
    for (env, bad) in [
        ("WORKSPACED_IDE_AUTH", "password"),
        ("WORKSPACED_IDE_AUTH", "header:X Token"),
        ("WORKSPACED_IDE_SECRET_ENV", "1ST"),
        ("WORKSPACED_IDE_SECRET_ENV", "A-B"),
        ("WORKSPACED_HEADER_READ_TIMEOUT", "0s"),
        ("WORKSPACED_HEADER_READ_TIMEOUT", "10m"),
        ("WORKSPACED_ADMIN_HOST", "https://admin.example.edu/"),
        ("WORKSPACED_LEASE_TTL", "100ms"),
        ("WORKSPACED_LEASE_TTL", "1h"),
        ("WORKSPACED_STORAGE_TIMEOUT", "0s"),
        ("WORKSPACED_STORAGE_TIMEOUT", "1h"),
        ("WORKSPACED_STORAGE_MAX_BLOCKED", "0"),
        ("WORKSPACED_STORAGE_MAX_BLOCKED", "5000"),
        ("WORKSPACED_DISK_HARD_QUOTA", "lots"),
        ("WORKSPACED_COURSE_MAX_CPUS", "0"),
        ("WORKSPACED_COURSE_MAX_CPUS", "many"),
        ("WORKSPACED_COURSE_MAX_MEMORY", "1m"),
        ("WORKSPACED_COURSE_MAX_PIDS_LIMIT", "0"),
        ("WORKSPACED_ALLOWED_IMAGES", "[1, 2]"),
        ("WORKSPACED_IDE_STATE_PATH", "home/coder/.local"),
        ("WORKSPACED_IDE_STATE_PATH", "/home/coder:/etc"),
        ("WORKSPACED_IDE_STATE_PATH", "/home/../etc"),
        ("WORKSPACED_PROXY_PATH", "prefix"),
        ("WORKSPACED_PROXY_PATH", ""),
        ("WORKSPACED_LTI_EMBED", "sometimes"),
    ] {
        let err = match from_env(env, bad) {
            Err(e) => e.to_string(),
            Ok(s) => s.check().expect_err(&format!("{env}={bad} was accepted")).to_string(),
        };
        assert!(err.contains(env), "{env}={bad}: {err}");
    }
}

#[test]
fn bad_swarm_settings_are_refused_by_name_and_swarm_needs_an_ide_secret() {
    for (env, bad) in [
        ("WORKSPACED_RUNTIME", "kubernetes"),
        ("WORKSPACED_SWARM_CONSTRAINTS", "node.labels.workspaced"),
        ("WORKSPACED_SWARM_CONSTRAINTS", "==true"),
        ("WORKSPACED_SWARM_CONSTRAINTS", "node.role== "),
        ("WORKSPACED_SWARM_SPREAD", "zone"),
        ("WORKSPACED_SWARM_SPREAD", "node.labels."),
        ("WORKSPACED_SWARM_SPREAD", "node.labels.a b"),
        ("WORKSPACED_SWARM_CPU_RESERVATION", "0"),
        ("WORKSPACED_SWARM_CPU_RESERVATION", "-0.5"),
        ("WORKSPACED_SWARM_CPU_RESERVATION", "1.01"),
        ("WORKSPACED_SWARM_CPU_RESERVATION", "NaN"),
        ("WORKSPACED_SWARM_CPU_RESERVATION", "a quarter"),
    ] {
        let err = match from_env(env, bad) {
            Err(e) => e.to_string(),
            Ok(s) => s.check().expect_err(&format!("{env}={bad} was accepted")).to_string(),
        };
        assert!(err.contains(env), "{env}={bad}: {err}");
    }
    let many = vec!["node.role==worker"; 33].join(",");
    let err = from_env("WORKSPACED_SWARM_CONSTRAINTS", &many).unwrap().check().unwrap_err().to_string();
    assert!(err.contains("at most 32"), "{err}");
    let list = from_env("WORKSPACED_SWARM_CONSTRAINTS", " a==b ,, c!=d ").unwrap();
    assert_eq!(list.swarm_constraints, vec!["a==b", "c!=d"]);

    let mut s = from_env("WORKSPACED_RUNTIME", "swarm").unwrap();
    s.check().expect("swarm with code-server's secret is fine");
    s.workspace.ide_auth = crate::domain::IdeAuth::None;
    let err = s.check().unwrap_err().to_string();
    assert!(err.contains("WORKSPACED_IDE_AUTH") && err.contains("swarm"), "{err}");
    s.runtime = crate::runtime::RuntimeKind::Docker;
    s.check().expect("plain Docker publishes on 127.0.0.1 and may run without a secret");
}

#[test]
fn the_admin_host_cannot_be_a_students_host() {
    let mut s = Settings::default();
    s.proxy.host_suffix = Some("ws.example.edu".into());
    s.admin_host = Some("admin.ws.example.edu:443".into());
    let err = s.check().unwrap_err().to_string();
    assert!(err.contains("WORKSPACED_ADMIN_HOST") && err.contains("proxy_host_suffix"), "{err}");
    s.admin_host = Some("admin.example.edu".into());
    assert!(s.check().is_ok());
}

#[test]
fn each_zero_interval_is_reported_under_its_own_names() {
    for env in ["WORKSPACED_CULL_INTERVAL", "WORKSPACED_RECONCILE_INTERVAL", "WORKSPACED_ACTIVITY_FLUSH_INTERVAL"] {
        let err = from_env(env, "0").unwrap().check().unwrap_err().to_string();
        assert!(err.contains(env) && err.contains("more than zero"), "{err}");
    }
    let err = from_env("WORKSPACED_SECRET_KEY", "short").unwrap().check().unwrap_err().to_string();
    assert!(err.contains("WORKSPACED_SECRET_KEY"), "{err}");
}

#[test]
fn sizes_and_durations_parse() {
    assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
    assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
    assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
    assert!(parse_bytes("0").is_err());
    assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert_eq!(command("[\"a\", \"b c\"]").unwrap(), vec!["a", "b c"]);
    assert_eq!(command("jupyter lab --ip 0.0.0.0").unwrap().len(), 4);
}

#[test]
fn a_duration_above_one_year_is_refused_with_its_name() {
    let err = from_env("WORKSPACED_RECONCILE_INTERVAL", "366d").unwrap().check().unwrap_err().to_string();
    assert!(err.contains("reconcile_interval") && err.contains("one year"), "{err}");
    let s = from_env("WORKSPACED_MAX_AGE", "18446744073709551615").unwrap();
    assert!(s.check().unwrap_err().to_string().contains("max_age"));
    let s = from_env("WORKSPACED_SESSION_TTL", "365d").unwrap();
    s.check().expect("exactly one year is allowed");
}
