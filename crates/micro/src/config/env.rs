//! [`EnvSource`]: environment variables with a prefix.

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use super::error::ConfigError;
use super::{value, Source};

/// Environment variables with a prefix, as go-config maps them: after the prefix,
/// `_` separates path segments and names are lower-cased.
///
/// - [`EnvSource::prefix("MYAPP")`](EnvSource::prefix) strips the prefix:
///   `MYAPP_DATABASE_ADDRESS` -> `database.address`.
/// - [`EnvSource::service("greeter")`](EnvSource::service) keeps it, as the
///   service's own name: `GREETER_GREETING` -> `greeter.greeting`. The prefix is
///   the name upper-cased with `-` and `.` as `_` (`my-app` reads `MY_APP_*` into
///   `my-app.*`). This is what every service loads by default.
///
/// A value is JSON when it reads as a number, boolean, array or object (`30`,
/// `true`, `[1,2]`), else the text as it is. A key with `_` in it cannot be set
/// this way (`_` always splits).
///
/// ```
/// use micro::config::{Config, EnvSource};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let env = [("MYAPP_DATABASE_ADDRESS", "db:5432"), ("MYAPP_DATABASE_POOL", "20"), ("OTHER", "x")];
/// let config = Config::builder().source(EnvSource::prefix("MYAPP").vars(env)).load().await?;
/// assert_eq!(config.get::<String>("database.address")?, "db:5432");
/// assert_eq!(config.get::<u32>("database.pool")?, 20);
///
/// let env = [("GREETER_GREETING", "Hi")];
/// let config = Config::builder().source(EnvSource::service("greeter").vars(env)).load().await?;
/// assert_eq!(config.get::<String>("greeter.greeting")?, "Hi");
/// # Ok::<(), micro::config::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct EnvSource {
    /// Upper-case, without the trailing `_`.
    prefix: String,
    /// The path segment the prefix becomes, when kept.
    root: Option<String>,
    /// The variables to read instead of the process's.
    vars: Option<Vec<(String, String)>>,
}

impl EnvSource {
    /// Variables starting `<PREFIX>_`, the prefix stripped from the path.
    pub fn prefix(prefix: impl AsRef<str>) -> Self {
        EnvSource {
            prefix: env_prefix(prefix.as_ref()),
            root: None,
            vars: None,
        }
    }

    /// Variables starting `<PREFIX>_`, the prefix kept (lower-cased) as the first
    /// path segment: `prefix_kept("MYAPP")` maps `MYAPP_DB_HOST` to `myapp.db.host`.
    pub fn prefix_kept(prefix: impl AsRef<str>) -> Self {
        let prefix = env_prefix(prefix.as_ref());
        EnvSource {
            root: Some(prefix.to_ascii_lowercase()),
            prefix,
            vars: None,
        }
    }

    /// The variables of service `name`: `GREETER_GREETING` -> `greeter.greeting`.
    pub fn service(name: impl AsRef<str>) -> Self {
        EnvSource {
            prefix: env_prefix(name.as_ref()),
            root: Some(name.as_ref().to_string()),
            vars: None,
        }
    }

    /// Reads these variables instead of the process environment (for tests).
    pub fn vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.vars = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    fn tree(&self) -> Value {
        let vars: Vec<(String, String)> = match &self.vars {
            Some(vars) => vars.clone(),
            None => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        };
        let mut tree = Value::Object(Map::new());
        let start = format!("{}_", self.prefix);
        let mut sorted: Vec<&(String, String)> = vars.iter().collect();
        sorted.sort();
        for (key, text) in sorted {
            let Some(rest) = key.strip_prefix(&start) else {
                continue;
            };
            if rest.is_empty() || text.is_empty() {
                continue;
            }
            let mut path: Vec<String> = self.root.iter().cloned().collect();
            path.extend(
                rest.split('_')
                    .filter(|s| !s.is_empty())
                    .map(str::to_ascii_lowercase),
            );
            value::set(&mut tree, &path.join("."), value::parse_text(text));
        }
        tree
    }
}

/// `my-app.v2` -> `MY_APP_V2`.
fn env_prefix(name: &str) -> String {
    name.trim_end_matches('_')
        .chars()
        .map(|c| match c {
            '-' | '.' | '/' | ' ' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

impl Source for EnvSource {
    fn name(&self) -> String {
        format!("env:{}", self.prefix)
    }

    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        let tree = self.tree();
        Box::pin(async move { Ok(tree) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_mapping_strip_keep_and_service() {
        let vars = [
            ("MYAPP_DATABASE_ADDRESS", "db:1"),
            ("MYAPP_DEBUG", "true"),
            ("MYAPP_", "ignored"),
            ("MYAPPX_Y", "ignored"),
            ("MYAPP_EMPTY", ""),
        ];
        assert_eq!(
            EnvSource::prefix("MYAPP").vars(vars).tree(),
            json!({"database": {"address": "db:1"}, "debug": true})
        );
        assert_eq!(
            EnvSource::prefix_kept("myapp").vars(vars).tree(),
            json!({"myapp": {"database": {"address": "db:1"}, "debug": true}})
        );
        let vars = [("MY_APP_GREETING", "Hi"), ("MY_APP_TIMEOUT", "30s")];
        let source = EnvSource::service("my-app").vars(vars);
        assert_eq!(source.name(), "env:MY_APP");
        assert_eq!(
            source.tree(),
            json!({"my-app": {"greeting": "Hi", "timeout": "30s"}})
        );
    }
}
