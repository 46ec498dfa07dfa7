//! Merging files into one table while remembering where every key came from.

use std::{collections::BTreeMap, path::Path};

use toml::{Table, Value};

use crate::error::{ConfigError, Origin};

/// Dotted key → where it was set. Sections record the file that opened them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Provenance(BTreeMap<String, Origin>);

impl Provenance {
    pub(crate) fn set(&mut self, key: &str, origin: Origin) {
        self.0.insert(key.to_owned(), origin);
    }

    /// The origin of `key`; else of a key below it (an environment variable that turned a value
    /// into a section: `NOWPILOT_WORKER__QUICKSTART__ON` for `worker.quickstart`); else of its
    /// closest ancestor that has one.
    pub(crate) fn origin_of(&self, key: &str) -> Origin {
        if let Some(origin) = self.0.get(key) {
            return origin.clone();
        }
        if !key.is_empty()
            && let Some((_, origin)) = self
                .0
                .range::<str, _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(key))
                .find(|(k, _)| k[key.len()..].starts_with(['.', '[']))
        {
            return origin.clone();
        }
        let mut k = key;
        loop {
            if let Some(origin) = self.0.get(k) {
                return origin.clone();
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return Origin::Default,
            }
        }
    }
}

/// Merges `table` (read from `path`) into `into`; a leaf key already set is a conflict.
pub(crate) fn merge_file(
    into: &mut Table,
    table: Table,
    path: &Path,
    provenance: &mut Provenance,
) -> Result<(), ConfigError> {
    merge_at(into, table, "", path, provenance)
}

fn merge_at(
    into: &mut Table,
    table: Table,
    prefix: &str,
    path: &Path,
    provenance: &mut Provenance,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(incoming)) => {
                merge_at(existing, incoming, &dotted, path, provenance)?;
            }
            (Some(_), _) => {
                let first = match provenance.origin_of(&dotted) {
                    Origin::File(p) => p,
                    _ => path.to_path_buf(),
                };
                return Err(ConfigError::Conflict {
                    key: dotted,
                    first,
                    second: path.to_path_buf(),
                });
            }
            (None, value) => {
                record(&value, &dotted, path, provenance);
                into.insert(key, value);
            }
        }
    }
    Ok(())
}

fn record(value: &Value, dotted: &str, path: &Path, provenance: &mut Provenance) {
    provenance.set(dotted, Origin::File(path.to_path_buf()));
    if let Value::Table(t) = value {
        for (k, v) in t {
            record(v, &format!("{dotted}.{k}"), path, provenance);
        }
    }
}
