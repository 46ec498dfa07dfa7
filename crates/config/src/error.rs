//! Configuration errors: where, which key, and why.

use std::{fmt, path::PathBuf};

/// Where a configuration value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A TOML file.
    File(PathBuf),
    /// An environment variable (its name; never its value).
    Env(String),
    /// Not set anywhere: the built-in default applies.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Default => f.write_str("configuration"),
        }
    }
}

/// A configuration that cannot be used. The message names the origin, the key and the reason,
/// and never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{}: cannot read: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {reason}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's reason.
        reason: String,
    },
    /// A key has an unusable value, is unknown, or is missing.
    #[error("{origin}: {}{reason}", key_prefix(key))]
    Invalid {
        /// Where it was set (or `Default` when it is missing).
        origin: Origin,
        /// The dotted key (`servicenow.timeout`); empty for the document root.
        key: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The same key is set in two files.
    #[error("{key} is set in both {} and {}: set it in one place", first.display(), second.display())]
    Conflict {
        /// The dotted key.
        key: String,
        /// The file read first.
        first: PathBuf,
        /// The file that set it again.
        second: PathBuf,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("`{key}`: ")
    }
}

impl ConfigError {
    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::Conflict { key, .. } => Some(key),
            _ => None,
        }
    }
}
