//! Configuration loading for every nowpilot process.
//!
//! One TOML file (plus the files it names in a top-level `include = [...]`), then environment
//! overrides `NOWPILOT_<SECTION>__<KEY>=value` (`__` separates nesting levels), deserialized into
//! the caller's typed config. Errors always say **where** (file or environment variable),
//! **which key**, and **why**: `nowpilot.toml: servicenow.timeout: invalid duration "3x"`.
//!
//! Rules that keep configuration predictable:
//! - A key may be set in only one file: the same key in the main file and an included file is an
//!   error naming both. (Environment variables deliberately override files.)
//! - Included paths are relative to the including file; includes may nest, not loop.
//! - Environment values are read as TOML values when they parse as one (`30`, `true`,
//!   `["a","b"]`) and as strings otherwise; a value that parsed as a number where the config wants
//!   a string (a numeric-looking password) is retried as the string it was.
//! - A key that is set nowhere (a missing required key, a validation problem about a default) is
//!   reported against the main file, which is where it should be added.
//! - An error about a key whose name says it holds a secret (`*secret*`, `*password*`,
//!   `*token*`) never quotes the value, even when the value has the wrong type.

mod error;
mod merge;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;
use toml::{Table, Value};

pub use error::{ConfigError, Origin};
use merge::{Provenance, merge_file};

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "NOWPILOT_";

/// How deep `include` may nest.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Largest configuration file read. Real ones are a few KiB; the bound is applied while
/// reading, so naming a device or a pipe (`include = "/dev/zero"`) is an error, not a hang.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Parts of key names whose values are secrets (`ingress.secrets[0]`, `servicenow.password`,
/// `admin.token`): errors about them name the key and the expected type, never the value.
const SENSITIVE_KEY_PARTS: [&str; 3] = ["secret", "password", "token"];

/// Where configuration comes from: an optional main file and the environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The main TOML file. `None` means defaults plus environment only.
    pub path: Option<PathBuf>,
    /// Environment variables to consider (name, value); only `NOWPILOT_*__*` names are used.
    pub env: Vec<(String, String)>,
}

impl ConfigSource {
    /// A source reading `path` (if any) and this process's environment.
    pub fn from_process(path: Option<PathBuf>) -> Self {
        ConfigSource {
            path,
            env: std::env::vars().collect(),
        }
    }
}

/// A deserialized configuration and what is needed to explain it.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The typed configuration.
    pub config: T,
    /// The directory relative paths in the config (e.g. `*_file`) are resolved against.
    pub base_dir: PathBuf,
    /// Every file read, main file first.
    pub files: Vec<PathBuf>,
    provenance: Provenance,
}

impl<T> Loaded<T> {
    /// Where a dotted key (`servicenow.password_file`) was set.
    pub fn origin_of(&self, key: &str) -> Origin {
        self.provenance.origin_of(key)
    }

    /// An error about `key`, attributed to wherever it was set, or to the main file when it is
    /// set nowhere (that is where it belongs). For validation after loading.
    pub fn error(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        let key = key.into();
        ConfigError::Invalid {
            origin: or_main_file(
                self.origin_of(&key),
                self.files.first().map(PathBuf::as_path),
            ),
            key,
            reason: reason.into(),
        }
    }

    /// Resolves a path from the config against [`Loaded::base_dir`].
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }
}

/// Loads, merges and deserializes the configuration.
pub fn load<T: DeserializeOwned>(source: &ConfigSource) -> Result<Loaded<T>, ConfigError> {
    let mut table = Table::new();
    let mut provenance = Provenance::default();
    let mut files = Vec::new();
    let base_dir = match &source.path {
        Some(path) => {
            read_with_includes(
                path,
                &mut table,
                &mut provenance,
                &mut files,
                &mut Vec::new(),
            )?;
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        }
        None => PathBuf::from("."),
    };
    let env_keys = apply_env(&source.env, &mut table, &mut provenance)?;
    let config = deserialize(table, &provenance, &env_keys, source.path.as_deref())?;
    Ok(Loaded {
        config,
        base_dir,
        files,
        provenance,
    })
}

/// Parses one TOML document from a string, for tests and for `plans test` style tools.
pub fn from_toml_str<T: DeserializeOwned>(text: &str, name: &str) -> Result<T, ConfigError> {
    let path = PathBuf::from(name);
    let table = parse_toml(text, &path)?;
    let mut provenance = Provenance::default();
    let mut merged = Table::new();
    merge_file(&mut merged, table, &path, &mut provenance)?;
    deserialize(merged, &provenance, &BTreeMap::new(), Some(&path))
}

fn read_with_includes(
    path: &Path,
    into: &mut Table,
    provenance: &mut Provenance,
    files: &mut Vec<PathBuf>,
    stack: &mut Vec<PathBuf>,
) -> Result<(), ConfigError> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if stack.contains(&canonical) {
        return Err(ConfigError::Invalid {
            origin: Origin::File(path.to_path_buf()),
            key: "include".into(),
            reason: "include cycle: this file includes itself through other files".into(),
        });
    }
    if stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(ConfigError::Invalid {
            origin: Origin::File(path.to_path_buf()),
            key: "include".into(),
            reason: format!("includes nest deeper than {MAX_INCLUDE_DEPTH} levels"),
        });
    }
    let text = read_file(path)?;
    let mut table = parse_toml(&text, path)?;
    files.push(path.to_path_buf());

    let includes = match table.remove("include") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(ConfigError::Invalid {
                    origin: Origin::File(path.to_path_buf()),
                    key: "include".into(),
                    reason: format!("expected file names (strings), found {}", other.type_str()),
                }),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ConfigError::Invalid {
                origin: Origin::File(path.to_path_buf()),
                key: "include".into(),
                reason: format!(
                    "expected a file name or a list of file names, found {}",
                    other.type_str()
                ),
            });
        }
    };

    merge_file(into, table, path, provenance)?;

    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    stack.push(canonical);
    for include in includes {
        let included = dir.join(&include);
        if !included.exists() {
            stack.pop();
            return Err(ConfigError::Invalid {
                origin: Origin::File(path.to_path_buf()),
                key: "include".into(),
                reason: format!("included file {} does not exist", included.display()),
            });
        }
        read_with_includes(&included, into, provenance, files, stack).map_err(|e| match e {
            // An included file that cannot be read is a problem of the `include` naming it.
            ConfigError::Io {
                path: io_path,
                reason,
            } if io_path == included => ConfigError::Invalid {
                origin: Origin::File(path.to_path_buf()),
                key: "include".into(),
                reason: format!("cannot read {}: {reason}", included.display()),
            },
            other => other,
        })?;
    }
    stack.pop();
    Ok(())
}

/// Reads a configuration file, at most [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let io = |reason: String| ConfigError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| io(e.to_string()))?;
    if read as u64 > MAX_FILE_BYTES {
        return Err(io(format!(
            "larger than {} MiB; is this the right file?",
            MAX_FILE_BYTES / (1024 * 1024)
        )));
    }
    Ok(text)
}

fn parse_toml(text: &str, path: &Path) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((0, 0));
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            reason: e.message().trim().to_owned(),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

/// Applies `NOWPILOT_A__B=v` overrides. Returns the dotted keys set from the environment with
/// the raw string each came from, so a mistyped guess can be retried as a string.
fn apply_env(
    env: &[(String, String)],
    table: &mut Table,
    provenance: &mut Provenance,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut set = BTreeMap::new();
    let mut vars: Vec<_> = env
        .iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            rest.contains("__").then_some((name, rest, value))
        })
        .collect();
    vars.sort();
    for (name, rest, raw) in vars {
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid {
                origin: Origin::Env(name.clone()),
                key: path.join("."),
                reason: "empty key segment (use NOWPILOT_SECTION__KEY)".into(),
            });
        }
        let value = guess_env_value(raw);
        let key = path.join(".");
        insert_path(table, &path, value).map_err(|reason| ConfigError::Invalid {
            origin: Origin::Env(name.clone()),
            key: key.clone(),
            reason,
        })?;
        provenance.set(&key, Origin::Env(name.clone()));
        set.insert(key, raw.clone());
    }
    Ok(set)
}

fn guess_env_value(raw: &str) -> Value {
    // A TOML scalar or array parses as `v = <raw>`; anything else is a plain string.
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, Value::Table(_)))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

fn insert_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(format!(
                    "`{}` is not a section, it cannot have keys",
                    path[..=depth].join(".")
                ));
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn deserialize<T: DeserializeOwned>(
    mut table: Table,
    provenance: &Provenance,
    env_keys: &BTreeMap<String, String>,
    main_file: Option<&Path>,
) -> Result<T, ConfigError> {
    // Each retry turns one env-typed guess back into a string; bounded by the number of env keys.
    let mut retried = std::collections::BTreeSet::new();
    loop {
        let value = Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(config) => return Ok(config),
            Err(err) => {
                let key = err.path().to_string();
                let key = if key == "." { String::new() } else { key };
                if let Some(raw) = env_keys.get(&key)
                    && !retried.contains(&key)
                {
                    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
                    if insert_path(&mut table, &path, Value::String(raw.clone())).is_ok() {
                        retried.insert(key);
                        continue;
                    }
                }
                let message = err.into_inner().message().trim().to_owned();
                let reason = if is_sensitive(&key) {
                    redact_value(&message)
                } else {
                    message
                };
                return Err(ConfigError::Invalid {
                    origin: or_main_file(provenance.origin_of(&key), main_file),
                    key,
                    reason,
                });
            }
        }
    }
}

/// `origin`, or the main file when the key is set nowhere.
fn or_main_file(origin: Origin, main_file: Option<&Path>) -> Origin {
    match (origin, main_file) {
        (Origin::Default, Some(path)) => Origin::File(path.to_path_buf()),
        (origin, _) => origin,
    }
}

/// Whether a dotted key names a secret (any segment contains a [`SENSITIVE_KEY_PARTS`] word).
fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// A deserialization message about a secret, without the value. serde writes
/// `invalid type: string "<value>", expected a sequence`; this keeps the kind of value and what
/// was expected. Messages that quote no value (unknown or missing field) are kept; any other
/// message might quote it, so it is replaced.
fn redact_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The expected part comes last and describes a type, never the value.
            let (unexpected, expected) = match rest.rfind(", expected ") {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let kind = unexpected
                .split(['"', '`', '\''])
                .next()
                .unwrap_or("")
                .trim();
            return format!("{prefix}{kind} (value not shown: it is a secret){expected}");
        }
    }
    if ["unknown field", "missing field", "invalid length"]
        .iter()
        .any(|start| message.starts_with(start))
    {
        return message.to_owned();
    }
    "invalid value (not shown: it is a secret)".to_owned()
}

#[cfg(test)]
mod tests;
