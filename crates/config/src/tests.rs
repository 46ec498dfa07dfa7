use std::{fs, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    servicenow: Option<Snow>,
    #[serde(default)]
    queue: Queue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snow {
    instance_url: String,
    password: Option<SecretString>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Queue {
    partitions: u16,
    secrets: Vec<String>,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn source(path: &Path, env: &[(&str, &str)]) -> ConfigSource {
    ConfigSource {
        path: Some(path.to_path_buf()),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[test]
fn loads_file_include_and_env() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "conn.toml",
        "[servicenow]\ninstance_url = \"https://x.service-now.com\"\n",
    );
    let main = write(
        dir.path(),
        "nowpilot.toml",
        "include = [\"conn.toml\"]\n[queue]\npartitions = 4\n",
    );
    let loaded: Loaded<Config> = load(&source(
        &main,
        &[
            ("NOWPILOT_SERVICENOW__TIMEOUT", "10s"),
            ("NOWPILOT_SERVICENOW__PASSWORD", "0012345"),
            ("NOWPILOT_QUEUE__SECRETS", "[\"a\",\"b\"]"),
            ("NOWPILOT_CONFIG", "ignored.toml"),
            ("OTHER__THING", "1"),
        ],
    ))
    .unwrap();
    let snow = loaded.config.servicenow.as_ref().unwrap();
    assert_eq!(snow.instance_url, "https://x.service-now.com");
    assert_eq!(snow.timeout, Some(Duration::from_secs(10)));
    // A numeric-looking secret keeps its leading zeros.
    assert_eq!(snow.password.as_ref().unwrap().expose_secret(), "0012345");
    assert_eq!(loaded.config.queue.partitions, 4);
    assert_eq!(loaded.config.queue.secrets, vec!["a", "b"]);
    assert_eq!(loaded.files.len(), 2);
    assert_eq!(
        loaded.origin_of("servicenow.instance_url"),
        Origin::File(dir.path().join("conn.toml"))
    );
    assert_eq!(
        loaded.origin_of("servicenow.timeout"),
        Origin::Env("NOWPILOT_SERVICENOW__TIMEOUT".into())
    );
}

#[test]
fn errors_name_origin_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "nowpilot.toml",
        "[servicenow]\ninstance_url = \"https://x\"\ntimeout = \"3x\"\n",
    );
    let err = load::<Config>(&source(&main, &[])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("nowpilot.toml"), "{msg}");
    assert!(msg.contains("servicenow.timeout"), "{msg}");

    let err =
        load::<Config>(&source(&main, &[("NOWPILOT_QUEUE__PARTITIONS", "many")])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("NOWPILOT_QUEUE__PARTITIONS"), "{msg}");
    assert!(msg.contains("queue.partitions"), "{msg}");

    let bad = write(
        dir.path(),
        "bad.toml",
        "[queue]\npartitions = 2\nbogus = 1\n",
    );
    let err = load::<Config>(&source(&bad, &[])).unwrap_err();
    assert_eq!(err.key(), Some("queue.bogus"));
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "nowpilot.toml", "[queue]\npartitions = = 3\n");
    match load::<Config>(&source(&main, &[])).unwrap_err() {
        ConfigError::Syntax { line, .. } => assert_eq!(line, 2),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn same_key_in_two_files_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "[queue]\npartitions = 8\n");
    let main = write(
        dir.path(),
        "nowpilot.toml",
        "include = \"a.toml\"\n[queue]\npartitions = 4\n",
    );
    let err = load::<Config>(&source(&main, &[])).unwrap_err();
    assert!(matches!(err, ConfigError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("queue.partitions"));
}

#[test]
fn include_problems_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "nowpilot.toml",
        "include = [\"missing.toml\"]\n",
    );
    let err = load::<Config>(&source(&main, &[])).unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");

    write(dir.path(), "loop_b.toml", "include = \"loop_a.toml\"\n");
    let a = write(dir.path(), "loop_a.toml", "include = \"loop_b.toml\"\n");
    let err = load::<Config>(&source(&a, &[])).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = load::<Config>(&source(Path::new("/nonexistent/nowpilot.toml"), &[])).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/nowpilot.toml"));
}

#[test]
fn secrets_never_appear_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "nowpilot.toml", "[queue]\npartitions = 1\n");
    // A secret set on a key that is not a section: the error names the key, not the value.
    let err = load::<Config>(&source(
        &main,
        &[("NOWPILOT_QUEUE__PARTITIONS__X", "hunter2-secret")],
    ))
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn no_file_means_defaults_and_env() {
    let loaded: Loaded<Config> = load(&ConfigSource {
        path: None,
        env: vec![("NOWPILOT_QUEUE__PARTITIONS".into(), "3".into())],
    })
    .unwrap();
    assert_eq!(loaded.config.queue.partitions, 3);
    assert!(loaded.config.servicenow.is_none());
}

#[test]
fn secrets_of_the_wrong_type_are_not_quoted() {
    let dir = tempfile::tempdir().unwrap();
    // `secrets` is a list; a single string is the wrong type, and serde would quote it.
    let main = write(
        dir.path(),
        "nowpilot.toml",
        "[queue]\nsecrets = \"whsec_hunter2-in-a-file\"\n",
    );
    let err = load::<Config>(&source(&main, &[])).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("queue.secrets"), "{msg}");
    assert!(msg.contains("nowpilot.toml"), "{msg}");
    assert!(msg.contains("expected a sequence"), "{msg}");

    let main = write(dir.path(), "env.toml", "[queue]\npartitions = 1\n");
    let err = load::<Config>(&source(
        &main,
        &[("NOWPILOT_QUEUE__SECRETS", "whsec_hunter2-in-env")],
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("NOWPILOT_QUEUE__SECRETS"), "{msg}");

    // A numeric password where a string is wanted is retried as a string (no error at all);
    // a list is an error that names the type only.
    let main = write(
        dir.path(),
        "list.toml",
        "[servicenow]\ninstance_url = \"https://x\"\npassword = [\"hunter2-list\"]\n",
    );
    let msg = load::<Config>(&source(&main, &[])).unwrap_err().to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("servicenow.password"), "{msg}");
}

#[test]
fn keys_set_nowhere_are_reported_against_the_main_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "nowpilot.toml", "[servicenow]\n");
    let msg = load::<Config>(&source(&main, &[])).unwrap_err().to_string();
    assert!(msg.starts_with(&main.display().to_string()), "{msg}");
    assert!(msg.contains("instance_url"), "{msg}");

    let main = write(dir.path(), "ok.toml", "[queue]\npartitions = 1\n");
    let loaded: Loaded<Config> = load(&source(&main, &[])).unwrap();
    let msg = loaded.error("servicenow.timeout", "too long").to_string();
    assert!(msg.starts_with(&main.display().to_string()), "{msg}");
}

#[test]
fn files_that_never_end_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "nowpilot.toml", "include = \"/dev/zero\"\n");
    let err = load::<Config>(&source(&main, &[])).unwrap_err();
    assert_eq!(err.key(), Some("include"), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot read /dev/zero: larger than 4 MiB"),
        "{msg}"
    );
    assert!(msg.starts_with(&main.display().to_string()), "{msg}");

    let err = load::<Config>(&source(Path::new("/dev/zero"), &[])).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");
}
