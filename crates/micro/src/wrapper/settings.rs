//! The settings of named wrappers, from flags, environment and the config file.
//!
//! Each built-in wrapper declares its keys ([`Key`]). A key is set, highest first:
//!
//! 1. by the flag `--wrapper <name>.<key>=<value>` (repeatable),
//! 2. by the environment variable `MICRO_WRAPPER_<NAME>_<KEY>`,
//! 3. in the config file under `micro.wrapper.<name>.<key>`,
//! 4. by the key's default.
//!
//! Flag and environment values are text: JSON when they parse as JSON (`100`,
//! `true`, `["a","b"]`), else a string. File values keep their type. Layers merge key
//! by key: `MICRO_WRAPPER_RATELIMIT_RATE=50` overrides the file's rate and keeps its
//! burst.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// One setting of a wrapper: its key, what it means and its default (as shown in
/// `--help`).
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key (`rate`).
    pub name: &'static str,
    /// The default, as text (empty: none).
    pub default: &'static str,
    /// One line of help.
    pub about: &'static str,
}

/// The settings of every wrapper: wrapper name -> key -> value.
///
/// ```
/// use micro::wrapper::Settings;
///
/// let flags = Settings::from_flags(["ratelimit.rate=50"]).unwrap();
/// let file = Settings::from_file_table(&serde_json::json!({"ratelimit": {"rate": 10, "burst": 20}})).unwrap();
/// let merged = flags.or(file);
/// assert_eq!(merged.value("ratelimit", "rate"), Some(&serde_json::json!(50)));
/// assert_eq!(merged.value("ratelimit", "burst"), Some(&serde_json::json!(20)));
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Settings {
    by_wrapper: BTreeMap<String, Map<String, Value>>,
}

impl fmt::Debug for Settings {
    /// Values of secret settings (`auth.secret`, `auth.token`, `trace.headers`, …)
    /// are shown as `"<redacted>"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (wrapper, keys) in &self.by_wrapper {
            for (key, value) in keys {
                let shown = if is_secret(key) {
                    Value::String("<redacted>".into())
                } else {
                    value.clone()
                };
                map.entry(&format!("{wrapper}.{key}"), &shown);
            }
        }
        map.finish()
    }
}

/// A setting that could not be read: where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub(crate) String);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

/// Text from a flag or variable: JSON if it parses, else the string itself. A
/// number that would not read back as written (too many digits for a 64-bit
/// number: a long numeric secret) stays text.
fn text_value(text: &str) -> Value {
    match serde_json::from_str(text) {
        Ok(Value::Number(n)) if n.to_string() != text.trim() => Value::String(text.to_string()),
        Ok(value) => value,
        Err(_) => Value::String(text.to_string()),
    }
}

/// Whether a setting holds a secret, so that `Debug` output hides its value.
fn is_secret(key: &str) -> bool {
    ["secret", "token", "password", "api_keys", "headers"]
        .iter()
        .any(|word| key.contains(word))
}

impl Settings {
    /// Settings from `--wrapper name.key=value` flags.
    pub fn from_flags<I, S>(flags: I) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut settings = Settings::default();
        for flag in flags {
            let flag = flag.as_ref();
            let parsed = flag
                .split_once('=')
                .and_then(|(path, value)| path.split_once('.').map(|(w, k)| (w, k, value)));
            match parsed {
                Some((wrapper, key, value)) if !wrapper.is_empty() && !key.is_empty() => {
                    settings.set(wrapper, key, text_value(value));
                }
                _ => {
                    return Err(SettingsError(format!(
                    "--wrapper {flag:?}: expected <wrapper>.<key>=<value>, e.g. ratelimit.rate=100"
                )))
                }
            }
        }
        Ok(settings)
    }

    /// Settings from `MICRO_WRAPPER_<NAME>_<KEY>` variables, for the keys the built-in
    /// wrappers declare, read through `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Settings {
        let mut settings = Settings::default();
        for builtin in super::builtin::BUILTINS {
            for key in builtin.keys {
                let var = env_var(builtin.name, key.name);
                if let Some(value) = env(&var).filter(|v| !v.trim().is_empty()) {
                    settings.set(builtin.name, key.name, text_value(&value));
                }
            }
        }
        settings
    }

    /// Settings from the `micro.wrapper` table of a config file.
    pub fn from_file_table(table: &Value) -> Result<Settings, SettingsError> {
        let mut settings = Settings::default();
        let Value::Object(wrappers) = table else {
            return Err(SettingsError(
                "`micro.wrapper` must be a table of wrapper names, e.g. wrapper: { ratelimit: { rate: 100 } }".into(),
            ));
        };
        for (wrapper, keys) in wrappers {
            match keys {
                Value::Object(keys) => {
                    for (key, value) in keys {
                        settings.set(wrapper, key, value.clone());
                    }
                }
                Value::Null => {}
                _ => {
                    return Err(SettingsError(format!(
                        "`micro.wrapper.{wrapper}` must be a table of settings"
                    )))
                }
            }
        }
        Ok(settings)
    }

    /// Sets one key.
    pub fn set(&mut self, wrapper: &str, key: &str, value: Value) {
        self.by_wrapper
            .entry(wrapper.to_string())
            .or_default()
            .insert(key.to_string(), value);
    }

    /// Layers `self` over `lower`, key by key.
    pub fn or(mut self, lower: Settings) -> Settings {
        for (wrapper, keys) in lower.by_wrapper {
            let mine = self.by_wrapper.entry(wrapper).or_default();
            for (key, value) in keys {
                mine.entry(key).or_insert(value);
            }
        }
        self
    }

    /// One value, if set.
    pub fn value(&self, wrapper: &str, key: &str) -> Option<&Value> {
        self.by_wrapper.get(wrapper).and_then(|keys| keys.get(key))
    }

    /// The wrappers that have settings.
    pub fn wrappers(&self) -> impl Iterator<Item = &str> {
        self.by_wrapper.keys().map(String::as_str)
    }

    /// The settings of `wrapper` as `T`, each declared key that is not set taking
    /// its default; an unknown key is an error (a typo must not pass silently).
    pub(crate) fn typed<T: DeserializeOwned>(
        &self,
        wrapper: &str,
        keys: &[Key],
    ) -> Result<T, SettingsError> {
        let mut object = Map::new();
        for key in keys {
            if !key.default.is_empty() {
                object.insert(key.name.to_string(), text_value(key.default));
            }
        }
        let defaults = object.clone();
        let set = self.by_wrapper.get(wrapper);
        for (name, value) in set.into_iter().flatten() {
            if !keys.iter().any(|k| k.name == name) {
                let known: Vec<_> = keys.iter().map(|k| k.name).collect();
                return Err(SettingsError(format!(
                    "wrapper {wrapper} has no setting {name:?}; its settings are: {}",
                    known.join(", ")
                )));
            }
            object.insert(name.clone(), value.clone());
        }
        serde_json::from_value(Value::Object(object)).map_err(|e| {
            // serde_json does not say which field failed: find the first key that
            // fails on its own over the defaults, and name it with its value.
            let culprit = set.into_iter().flatten().find(|(name, value)| {
                let mut alone = defaults.clone();
                alone.insert((*name).clone(), (*value).clone());
                serde_json::from_value::<T>(Value::Object(alone)).is_err()
            });
            match culprit {
                Some((name, value)) => SettingsError(format!(
                    "wrapper {wrapper}: {name}={value}: {e} (set it with --wrapper {wrapper}.{name}=…, \
                     {} or micro.wrapper.{wrapper}.{name})",
                    env_var(wrapper, name)
                )),
                None => SettingsError(format!("wrapper {wrapper}: {e}")),
            }
        })
    }
}

/// The variable of a wrapper setting: `ratelimit`, `rate` -> `MICRO_WRAPPER_RATELIMIT_RATE`.
pub fn env_var(wrapper: &str, key: &str) -> String {
    format!(
        "MICRO_WRAPPER_{}_{}",
        wrapper.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// Serde helpers for setting values written as text or numbers.
pub(crate) mod de {
    use super::*;
    use serde::{Deserialize, Deserializer};

    /// A duration: seconds as a number (`30`, `0.5`) or text with a unit (`500ms`).
    pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a duration"))),
            Value::String(s) => {
                crate::options::parse_duration(&s).map_err(serde::de::Error::custom)
            }
            other => Err(serde::de::Error::custom(format!(
                "expected a duration like 30, 30s or 500ms, found {other}"
            ))),
        }
    }

    /// An optional duration; `0`, `""` and `null` mean none.
    pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let value = Value::deserialize(d)?;
        if value.is_null() || value == Value::String(String::new()) {
            return Ok(None);
        }
        let d = duration(value).map_err(serde::de::Error::custom)?;
        Ok((!d.is_zero()).then_some(d))
    }

    /// A number written as a number or as text.
    pub(crate) fn number<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr + DeserializeOwned,
        T::Err: fmt::Display,
    {
        match Value::deserialize(d)? {
            Value::String(s) => s.trim().parse().map_err(serde::de::Error::custom),
            other => serde_json::from_value(other).map_err(serde::de::Error::custom),
        }
    }

    /// A list written as a JSON list or as comma-separated text.
    #[allow(dead_code)] // for list settings of the built-ins
    pub(crate) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Vec::new()),
            Value::String(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()),
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Ok(other.to_string()),
                })
                .collect(),
            other => Err(serde::de::Error::custom(format!(
                "expected a list, found {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_json_or_text() {
        let s = Settings::from_flags(["a.n=5", "a.s=hello", "a.l=[1,2]"]).unwrap();
        assert_eq!(s.value("a", "n"), Some(&Value::from(5)));
        assert_eq!(s.value("a", "s"), Some(&Value::from("hello")));
        assert_eq!(s.value("a", "l"), Some(&serde_json::json!([1, 2])));
        for bad in ["a=5", "a.=5", ".k=5", "nothing"] {
            let e = Settings::from_flags([bad]).unwrap_err();
            assert!(e.0.contains("expected <wrapper>.<key>=<value>"), "{e}");
        }
    }

    #[test]
    fn long_numbers_stay_text_and_secrets_are_redacted() {
        let s = Settings::from_flags(["auth.secret=123456789012345678901234567890", "a.n=1.5"])
            .unwrap();
        assert_eq!(
            s.value("auth", "secret"),
            Some(&Value::from("123456789012345678901234567890"))
        );
        assert_eq!(s.value("a", "n"), Some(&Value::from(1.5)));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("1234567890") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(shown.contains("\"a.n\": Number(1.5)"), "{shown}");
    }

    #[test]
    fn env_names_follow_the_wrapper_and_key() {
        assert_eq!(env_var("ratelimit", "rate"), "MICRO_WRAPPER_RATELIMIT_RATE");
        let s = Settings::from_env(&|var| {
            (var == "MICRO_WRAPPER_RETRY_BUDGET_RATIO").then(|| "0.5".to_string())
        });
        assert_eq!(s.value("retry", "budget_ratio"), Some(&Value::from(0.5)));
    }

    #[test]
    fn typed_settings_take_defaults_and_reject_unknown_keys() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[serde(deserialize_with = "de::number")]
            n: u32,
            #[serde(deserialize_with = "de::duration")]
            d: Duration,
        }
        const KEYS: &[Key] = &[
            Key {
                name: "n",
                default: "3",
                about: "",
            },
            Key {
                name: "d",
                default: "1s",
                about: "",
            },
        ];
        let t: T = Settings::default().typed("w", KEYS).unwrap();
        assert_eq!((t.n, t.d), (3, Duration::from_secs(1)));
        let s = Settings::from_flags(["w.n=\"7\"", "w.d=250ms"]).unwrap();
        let t: T = s.typed("w", KEYS).unwrap();
        assert_eq!((t.n, t.d), (7, Duration::from_millis(250)));
        let e = Settings::from_flags(["w.x=1"])
            .unwrap()
            .typed::<T>("w", KEYS)
            .unwrap_err();
        assert!(
            e.0.contains("has no setting \"x\"") && e.0.contains("n, d"),
            "{e}"
        );
        let e = Settings::from_flags(["w.d=soon"])
            .unwrap()
            .typed::<T>("w", KEYS)
            .unwrap_err();
        assert!(e.0.starts_with("wrapper w:"), "{e}");
    }
}
