//! Service options from a config file: the `micro` table of a JSON, YAML or TOML file.

use std::path::Path;

use serde_json::Value;

use super::{OptionsError, PartialOptions, KEYS};
use crate::metadata::Metadata;
use crate::wrapper::Settings;

/// The formats a config file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
    Toml,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Yaml => "YAML",
            Format::Toml => "TOML",
        }
    }

    fn parse(self, text: &str) -> Result<Value, String> {
        match self {
            Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
            Format::Yaml => serde_yaml::from_str(text).map_err(|e| e.to_string()),
            Format::Toml => toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string()),
        }
    }
}

/// Reads the options in the `micro` table of the file at `path`.
pub(super) fn read(path: &Path) -> Result<PartialOptions, OptionsError> {
    let text = std::fs::read_to_string(path).map_err(|e| OptionsError::File {
        path: path.to_path_buf(),
        message: format!("cannot read the config file: {e}"),
    })?;
    parse(path, &text)
}

/// Parses `text`, the content of the file at `path` (whose extension tells the format).
pub(super) fn parse(path: &Path, text: &str) -> Result<PartialOptions, OptionsError> {
    let file_error = |message: String| OptionsError::File {
        path: path.to_path_buf(),
        message,
    };
    if text.trim().is_empty() {
        return Ok(PartialOptions::default());
    }
    let document = document(path, text).map_err(file_error)?;
    let top = match document {
        Value::Object(map) => map,
        Value::Null => return Ok(PartialOptions::default()),
        _ => {
            return Err(file_error(
                "expected a table of keys at the top level".into(),
            ))
        }
    };
    let table = match top.get("micro") {
        None | Some(Value::Null) => return Ok(PartialOptions::default()),
        Some(Value::Object(table)) => table,
        Some(_) => {
            return Err(file_error(
                "`micro` must be a table of service options".into(),
            ))
        }
    };

    let mut options = PartialOptions::default();
    for (key, value) in table {
        if key == "wrapper" {
            let settings =
                Settings::from_file_table(value).map_err(|e| file_error(e.to_string()))?;
            options.wrapper = Some(settings);
            continue;
        }
        if !KEYS.contains(&key.as_str()) {
            return Err(OptionsError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
            });
        }
        let invalid = |expected: String| OptionsError::FileValue {
            path: path.to_path_buf(),
            key: key.clone(),
            value: if key == "registry_password" {
                "<redacted>".to_string()
            } else {
                value.to_string()
            },
            expected,
        };
        if key == "config_file" {
            return Err(invalid(
                "config_file can only be given by flag, environment or code".into(),
            ));
        }
        if key == "server_metadata" {
            if let Value::Object(map) = value {
                let mut md = Metadata::new();
                for (k, v) in map {
                    let v = scalar(v).ok_or_else(|| {
                        invalid("expected a table of metadata with text values".into())
                    })?;
                    md.insert(k, v);
                }
                options.server_metadata = Some(md);
                continue;
            }
        }
        let text = match value {
            Value::Null => continue,
            Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|items| items.join(","))
                .ok_or_else(|| invalid("expected a list of text values".into()))?,
            other => scalar(other).ok_or_else(|| invalid("expected a single value".into()))?,
        };
        if text.trim().is_empty() {
            continue;
        }
        options.set(key, &text).map_err(invalid)?;
    }
    Ok(options)
}

/// The whole document in `text`, the content of the file at `path`, in the format
/// its extension names (`.json`, `.yaml`/`.yml`, `.toml`; else the first that reads
/// it as a table). Also read by the config file source.
pub(crate) fn document(path: &Path, text: &str) -> Result<Value, String> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let known = match extension.as_deref() {
        Some("json") => Some(Format::Json),
        Some("yaml" | "yml") => Some(Format::Yaml),
        Some("toml") => Some(Format::Toml),
        _ => None,
    };
    match known {
        Some(format) => format
            .parse(text)
            .map_err(|e| format!("not valid {}: {e}", format.name())),
        None => guess(text),
    }
}

/// A file of no known extension: the first of JSON, YAML and TOML that reads it as a
/// table.
fn guess(text: &str) -> Result<Value, String> {
    let mut errors = Vec::new();
    for format in [Format::Json, Format::Yaml, Format::Toml] {
        match format.parse(text) {
            Ok(value @ (Value::Object(_) | Value::Null)) => return Ok(value),
            Ok(_) => errors.push(format!("{}: not a table", format.name())),
            Err(e) => errors.push(format!("{}: {e}", format.name())),
        }
    }
    Err(format!(
        "not valid JSON, YAML or TOML (name the file .json, .yaml or .toml for exact errors)\n{}",
        errors.join("\n")
    ))
}

/// A string, number or boolean as text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
