//! Reading a role's TOML config file into its config struct, with errors that fit on one line
//! and name the file, the line, the column and the key.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read (missing, permissions, a directory, not UTF-8).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or holds an unknown key or a value of the wrong type.
    #[error(
        "config file {}: TOML parse error at line {line}, column {column}{}: {message}",
        path.display(),
        key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// One-based line of the error.
        line: usize,
        /// One-based column (in characters) of the error.
        column: usize,
        /// The key whose value was refused, when the error points at a value.
        key: Option<String>,
        /// What the TOML parser said, on one line.
        message: String,
    },
    /// The file was refused with no position (should not happen for a flat config table).
    #[error("config file {}: TOML parse error: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, on one line.
        message: String,
    },
}

/// Reads `path` into `T`. Keys missing from the file keep `T`'s defaults (`T` is
/// `#[serde(default)]`); unknown keys are errors (`deny_unknown_fields`).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses `text`, the content of `path`, into `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigFileError> {
    toml::from_str(text).map_err(|err| describe(path, text, &err))
}

fn describe(path: &Path, text: &str, err: &toml::de::Error) -> ConfigFileError {
    let message = one_line(err.message());
    let Some(span) = err.span() else {
        return ConfigFileError::Invalid {
            path: path.to_owned(),
            message,
        };
    };
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    // When the error points at a value, name its key: the text before `=` on that line. The
    // value itself is never echoed (it may be a secret). Errors that point at a key (an
    // unknown key) already name it in their message.
    let key = text[line_start..start]
        .split_once('=')
        .map(|(key, _)| key.trim().to_owned())
        .filter(|key| !key.is_empty());
    let message = match &key {
        Some(key) if SECRET_KEYS.contains(&key.trim_matches('"')) => hide_quoted(&message),
        _ => message,
    };
    ConfigFileError::Parse {
        path: path.to_owned(),
        line,
        column,
        key,
        message,
    }
}

/// Keys whose values are secrets (or may hold one, like a Redis URL with a password).
const SECRET_KEYS: [&str; 3] = ["ticket_key", "redis", "store"];

/// `message` with every `` `…` `` or `"…"` segment (where serde quotes the value it refused)
/// replaced by `<redacted>`.
fn hide_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..]
            .chars()
            .next()
            .expect("invariant: found at `open`");
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        match after.find(quote) {
            Some(close) => {
                out.push_str("<redacted>");
                out.push(quote);
                rest = &after[close + 1..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// Joins the lines of a multi-line message with `; `.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_shard::config::ShardConfig;

    fn parse_shard(text: &str) -> Result<ShardConfig, ConfigFileError> {
        parse(Path::new("/etc/meridian/shard.toml"), text)
    }

    #[test]
    fn keys_override_defaults_and_missing_keys_keep_them() {
        let cfg = parse_shard("tick_hz = 60\nzone = \"west\"\ndev_cert = true\n").expect("valid");
        assert_eq!(cfg.tick_hz, 60);
        assert_eq!(cfg.zone, "west");
        assert!(cfg.dev_cert);
        assert_eq!(cfg.npcs, ShardConfig::default().npcs);
        assert_eq!(parse_shard("").expect("empty file"), ShardConfig::default());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse_shard("zone = \"west\"\n\ntickhz = 30\n").expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            matches!(
                &err,
                ConfigFileError::Parse {
                    line: 3,
                    column: 1,
                    key: None,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            msg.starts_with("config file /etc/meridian/shard.toml: "),
            "{msg}"
        );
        assert!(msg.contains("line 3, column 1"), "{msg}");
        assert!(
            msg.contains("unknown field `tickhz`") && msg.contains("`tick_hz`"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key_without_echoing_the_value() {
        let err = parse_shard("id = \"a\"\ntick_hz = 300000\n").expect_err("overflow");
        assert!(
            matches!(&err, ConfigFileError::Parse { line: 2, column: 11, key: Some(k), .. } if k == "tick_hz"),
            "{err:?}"
        );
        let err = parse_shard("ticket_key = 1234567890\n").expect_err("not a string");
        let msg = err.to_string();
        assert!(msg.contains("key `ticket_key`"), "{msg}");
        assert!(
            !msg.contains("1234567890") && msg.contains("expected a string"),
            "{msg}"
        );
        let err = parse_shard("redis = [\"redis://:pw@db\"]\n").expect_err("not a string");
        assert!(!err.to_string().contains("pw@"), "{err}");
        let err = parse_shard("listen = \"nowhere\"\n").expect_err("not an address");
        assert!(err.to_string().contains("key `listen`"), "{err}");
    }

    #[test]
    fn quoted_values_are_hidden() {
        assert_eq!(
            hide_quoted("invalid type: integer `123`, expected a string"),
            "invalid type: integer `<redacted>`, expected a string"
        );
        assert_eq!(
            hide_quoted(r#"invalid value "abc" and `x"#),
            r#"invalid value "<redacted>" and `x"#
        );
        assert_eq!(hide_quoted("no quotes"), "no quotes");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse_shard("zone = \"west\"\nnpcs = = 3\n").expect_err("syntax");
        assert!(
            matches!(&err, ConfigFileError::Parse { line: 2, .. }),
            "{err:?}"
        );
        let err = parse_shard("zone = \"wé\nnpcs = 3\n").expect_err("unterminated string");
        assert!(
            matches!(&err, ConfigFileError::Parse { line: 1, .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn unreadable_file_names_path_and_os_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.toml");
        let err = load::<ShardConfig>(&missing).expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(msg.contains("os error"), "{msg}");
        let err = load::<ShardConfig>(dir.path()).expect_err("a directory");
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err:?}");
    }
}
