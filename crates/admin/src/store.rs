//! The saved ServiceNow connection: `connection.toml` next to the main config file.
//!
//! `nowpilot connect` (and the admin API) write the `[servicenow]` section into
//! `connection.toml` with mode 0600, because it may hold secrets, and make sure the main config
//! includes it; `disconnect` removes both. The main file is edited with `toml_edit`, so the
//! operator's comments and layout survive. Only one connection exists at a time: saving replaces
//! it, and an inline `[servicenow]` section in the main file is moved out (a key may be set in only
//! one file, see `nowpilot-config`).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use toml_edit::{Array, DocumentMut, Item, Value};

/// The file name of the saved connection, relative to the main config's directory.
pub const CONNECTION_FILE: &str = "connection.toml";

/// A failure to read or write the saved connection. Messages name the file, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The main config is not valid TOML, so it cannot be edited safely.
    #[error("{}: cannot edit, it is not valid TOML: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
    /// The main config's `include` is not a string or a list of strings.
    #[error("{}: `include` must be a file name or a list of file names", path.display())]
    BadInclude {
        /// The file.
        path: PathBuf,
    },
}

/// What saving or removing changed, so the CLI can tell the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The main config file was created.
    pub created_main: bool,
    /// An inline `[servicenow]` section was removed from the main file.
    pub removed_inline_section: bool,
    /// The `include` entry was added (save) or removed (remove).
    pub changed_include: bool,
    /// A connection file existed before (save: replaced; remove: deleted).
    pub had_connection_file: bool,
}

/// Reads and writes the saved connection for one main config file.
#[derive(Debug, Clone)]
pub struct ConnectionStore {
    main_config: PathBuf,
    connection_file: PathBuf,
}

impl ConnectionStore {
    /// The store for the main config at `main_config` (which need not exist yet).
    pub fn new(main_config: impl Into<PathBuf>) -> Self {
        let main_config = main_config.into();
        let dir = main_config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        ConnectionStore {
            connection_file: dir.join(CONNECTION_FILE),
            main_config,
        }
    }

    /// The main config file.
    pub fn main_config(&self) -> &Path {
        &self.main_config
    }

    /// The connection file.
    pub fn connection_file(&self) -> &Path {
        &self.connection_file
    }

    /// Saves `section` as the `[servicenow]` section of the connection file (mode 0600, written
    /// atomically), and makes the main config include it.
    pub fn save(&self, section: toml::Table) -> Result<StoreOutcome, StoreError> {
        let mut outcome = StoreOutcome {
            had_connection_file: self.connection_file.exists(),
            ..StoreOutcome::default()
        };
        // Read the main file first: if it cannot be edited, nothing is written.
        let (mut doc, created) = self.read_main()?;
        let mut root = toml::Table::new();
        root.insert("servicenow".into(), toml::Value::Table(section));
        let body = toml::to_string(&root).map_err(|e| StoreError::Io {
            path: self.connection_file.clone(),
            reason: format!("cannot encode the connection: {e}"),
        })?;
        let text = format!(
            "# The ServiceNow connection, written by `nowpilot connect`. It may hold secrets:\n\
             # keep it private (mode 0600). `nowpilot disconnect` removes it.\n{body}"
        );
        write_private_atomically(&self.connection_file, text.as_bytes())?;

        outcome.created_main = created;
        outcome.removed_inline_section = doc.remove("servicenow").is_some();
        outcome.changed_include =
            add_include(&mut doc, CONNECTION_FILE).map_err(|()| StoreError::BadInclude {
                path: self.main_config.clone(),
            })?;
        if created || outcome.removed_inline_section || outcome.changed_include {
            write_atomically(&self.main_config, doc.to_string().as_bytes(), None)?;
        }
        Ok(outcome)
    }

    /// Removes the saved connection: the connection file, its `include` entry and any inline
    /// `[servicenow]` section of the main file.
    pub fn remove(&self) -> Result<StoreOutcome, StoreError> {
        let mut outcome = StoreOutcome::default();
        match fs::remove_file(&self.connection_file) {
            Ok(()) => outcome.had_connection_file = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Io {
                    path: self.connection_file.clone(),
                    reason: e.to_string(),
                });
            }
        }
        if self.main_config.exists() {
            let (mut doc, _) = self.read_main()?;
            outcome.removed_inline_section = doc.remove("servicenow").is_some();
            outcome.changed_include = remove_include(&mut doc, CONNECTION_FILE);
            if outcome.removed_inline_section || outcome.changed_include {
                write_atomically(&self.main_config, doc.to_string().as_bytes(), None)?;
            }
        }
        Ok(outcome)
    }

    /// Sets `[worker] quickstart = true` in the main config (creating the file or the section
    /// when needed, keeping everything else). Returns whether anything changed.
    pub fn enable_quickstart(&self) -> Result<bool, StoreError> {
        let (mut doc, created) = self.read_main()?;
        let worker = doc
            .entry("worker")
            .or_insert_with(|| Item::Table(toml_edit::Table::new()));
        let Some(table) = worker.as_table_like_mut() else {
            return Err(StoreError::Parse {
                path: self.main_config.clone(),
                reason: "`worker` is not a table".into(),
            });
        };
        if table.get("quickstart").and_then(Item::as_bool) == Some(true) && !created {
            return Ok(false);
        }
        table.insert("quickstart", toml_edit::value(true));
        write_atomically(&self.main_config, doc.to_string().as_bytes(), None)?;
        Ok(true)
    }

    fn read_main(&self) -> Result<(DocumentMut, bool), StoreError> {
        match fs::read_to_string(&self.main_config) {
            Ok(text) => text
                .parse::<DocumentMut>()
                .map(|doc| (doc, false))
                .map_err(|e| StoreError::Parse {
                    path: self.main_config.clone(),
                    reason: e.to_string().trim().to_owned(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = "# nowpilot configuration. See docs/configuration.md for every key.\n"
                    .parse::<DocumentMut>()
                    .unwrap_or_default();
                Ok((doc, true))
            }
            Err(e) => Err(StoreError::Io {
                path: self.main_config.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

/// Adds `file` to the top-level `include`, keeping it first in the document. Returns whether
/// anything changed; `Err` when `include` has a shape we must not rewrite.
fn add_include(doc: &mut DocumentMut, file: &str) -> Result<bool, ()> {
    match doc.get_mut("include") {
        None => {
            let mut array = Array::new();
            array.push(file);
            // Top-level keys are printed before tables, so `include` lands at the top.
            doc.insert("include", Item::Value(Value::Array(array)));
            Ok(true)
        }
        Some(Item::Value(Value::String(s))) if s.value() == file => Ok(false),
        Some(item @ Item::Value(Value::String(_))) => {
            let mut array = Array::new();
            if let Some(existing) = item.as_str() {
                array.push(existing);
            }
            array.push(file);
            // Assign in place: the key, and the comments above it, stay.
            *item = Item::Value(Value::Array(array));
            Ok(true)
        }
        Some(Item::Value(Value::Array(array))) => {
            if array.iter().any(|v| v.as_str() == Some(file)) {
                Ok(false)
            } else {
                array.push(file);
                Ok(true)
            }
        }
        Some(_) => Err(()),
    }
}

/// Removes `file` from the top-level `include`; drops the key when nothing is left.
fn remove_include(doc: &mut DocumentMut, file: &str) -> bool {
    match doc.get_mut("include") {
        Some(Item::Value(Value::String(s))) if s.value() == file => {
            doc.remove("include");
            true
        }
        Some(Item::Value(Value::Array(array))) => {
            let before = array.len();
            array.retain(|v| v.as_str() != Some(file));
            let changed = array.len() != before;
            if array.is_empty() {
                doc.remove("include");
            }
            changed
        }
        _ => false,
    }
}

fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomically(path, bytes, Some(0o600))
}

/// Writes through a temporary file in the same directory and renames it into place, so a crash
/// never leaves a half-written config. `mode` (Unix) is applied when the file is created, so a
/// secret is never readable by others, not even for an instant.
fn write_atomically(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Keep an existing file's permissions for the main config; secrets get 0600.
        let existing = fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o777
        });
        options.mode(mode.or(existing).unwrap_or(0o644));
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        #[cfg(unix)]
        if let Some(mode) = mode {
            // The umask may have narrowed or the file may have existed: set it exactly.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("instance_url".into(), "https://x.service-now.com".into());
        t.insert("auth".into(), "basic".into());
        t.insert("username".into(), "nowpilot".into());
        t.insert("password".into(), "s3cret".into());
        t
    }

    #[test]
    fn save_creates_private_file_and_include() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("nowpilot.toml");
        let store = ConnectionStore::new(&main);
        let outcome = store.save(section()).unwrap();
        assert!(outcome.created_main && outcome.changed_include);
        let main_text = fs::read_to_string(&main).unwrap();
        assert!(
            main_text.contains("include = [\"connection.toml\"]"),
            "{main_text}"
        );
        let conn = fs::read_to_string(store.connection_file()).unwrap();
        assert!(conn.contains("[servicenow]") && conn.contains("s3cret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(store.connection_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Saving again replaces, and does not add a second include.
        let outcome = store.save(section()).unwrap();
        assert!(outcome.had_connection_file && !outcome.changed_include);
    }

    #[test]
    fn save_moves_inline_section_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("nowpilot.toml");
        fs::write(
            &main,
            "# my comment\ninclude = \"plans.toml\"\n\n[servicenow]\ninstance_url = \"https://old\"\n\n[queue]\nkind = \"memory\" # inline\n",
        )
        .unwrap();
        let store = ConnectionStore::new(&main);
        let outcome = store.save(section()).unwrap();
        assert!(outcome.removed_inline_section);
        let text = fs::read_to_string(&main).unwrap();
        assert!(text.contains("# my comment"));
        assert!(text.contains("kind = \"memory\" # inline"));
        assert!(!text.contains("https://old"));
        assert!(text.contains("\"plans.toml\"") && text.contains("\"connection.toml\""));

        let outcome = store.remove().unwrap();
        assert!(outcome.had_connection_file && outcome.changed_include);
        let text = fs::read_to_string(&main).unwrap();
        assert!(text.contains("include = [\"plans.toml\"]"), "{text}");
        assert!(!store.connection_file().exists());
    }

    #[test]
    fn quickstart_is_switched_on_in_the_worker_section() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("nowpilot.toml");
        fs::write(&main, "# keep me\n[worker]\nconcurrency = 8\n").unwrap();
        let store = ConnectionStore::new(&main);
        assert!(store.enable_quickstart().unwrap());
        let text = fs::read_to_string(&main).unwrap();
        assert!(
            text.contains("# keep me") && text.contains("concurrency = 8"),
            "{text}"
        );
        assert!(text.contains("quickstart = true"), "{text}");
        assert!(!store.enable_quickstart().unwrap(), "already on");
    }

    #[test]
    fn remove_when_nothing_saved_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConnectionStore::new(dir.path().join("nowpilot.toml"));
        assert_eq!(store.remove().unwrap(), StoreOutcome::default());
    }

    #[test]
    fn invalid_main_config_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("nowpilot.toml");
        fs::write(&main, "[queue\n").unwrap();
        let err = ConnectionStore::new(&main).save(section()).unwrap_err();
        assert!(matches!(err, StoreError::Parse { .. }));
        assert_eq!(fs::read_to_string(&main).unwrap(), "[queue\n");
    }
}
