//! [`FlagSource`]: command-line flags with dotted names (`--db.timeout=5s`).

use std::ffi::OsString;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use super::error::ConfigError;
use super::{value, Source};

/// Command-line flags as config: `--db.timeout=5s` or `--db.timeout 5s` sets
/// `db.timeout`. Only flags whose name has a `.` are read, so a service's own
/// flags (`--server_address`) pass by. Values are parsed as for [`EnvSource`]:
/// JSON numbers, booleans, arrays and objects, else text. Also built from clap
/// matches with [`from_matches`](Self::from_matches).
///
/// [`EnvSource`]: super::EnvSource
///
/// ```
/// use micro::config::{Config, FlagSource};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let flags = FlagSource::new(["app", "--db.timeout=5s", "--db.pool", "20", "--verbose"]);
/// let config = Config::builder().source(flags).load().await?;
/// assert_eq!(config.get::<String>("db.timeout")?, "5s");
/// assert_eq!(config.get::<u32>("db.pool")?, 20);
/// # Ok::<(), micro::config::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FlagSource {
    tree: Value,
}

impl FlagSource {
    /// The dotted flags among `args` (the program name, if first, is skipped like
    /// any word that is not a flag).
    pub fn new<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.into().to_string_lossy().into_owned())
            .collect();
        let mut tree = Value::Object(Map::new());
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            let (key, text) = match flag.split_once('=') {
                Some((key, text)) => (key, text.to_string()),
                None => match args.get(i) {
                    Some(next) if !next.starts_with("--") => {
                        i += 1;
                        (flag, next.clone())
                    }
                    _ => (flag, "true".to_string()),
                },
            };
            if key.contains('.') {
                value::set(&mut tree, key, value::parse_text(&text));
            }
        }
        FlagSource { tree }
    }

    /// The arguments clap matched on the command line (not defaults, not env), each
    /// by its id as the path (`db.timeout`).
    pub fn from_matches(matches: &clap::ArgMatches) -> Self {
        let mut tree = Value::Object(Map::new());
        for id in matches.ids() {
            let id = id.as_str();
            if matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let Ok(Some(raw)) = matches.try_get_raw(id) else {
                continue;
            };
            let values: Vec<Value> = raw
                .map(|v| value::parse_text(&v.to_string_lossy()))
                .collect();
            let value = match <[Value; 1]>::try_from(values) {
                Ok([one]) => one,
                Err(many) => Value::Array(many),
            };
            value::set(&mut tree, id, value);
        }
        FlagSource { tree }
    }
}

impl Source for FlagSource {
    fn name(&self) -> String {
        "flags".into()
    }

    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        let tree = self.tree.clone();
        Box::pin(async move { Ok(tree) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_from_args_and_clap() {
        let source = FlagSource::new([
            "svc",
            "--server_address",
            ":1",
            "--a.b=1",
            "--a.c",
            "x",
            "--a.on",
            "--s.list=[1,2]",
        ]);
        assert_eq!(
            source.tree,
            json!({"a": {"b": 1, "c": "x", "on": true}, "s": {"list": [1, 2]}})
        );
        let command = clap::Command::new("svc")
            .arg(clap::Arg::new("db.timeout").long("db.timeout"))
            .arg(clap::Arg::new("db.pool").long("db.pool").default_value("5"));
        let matches = command
            .try_get_matches_from(["svc", "--db.timeout", "5s"])
            .unwrap();
        // Defaults are not flags the user gave: lower layers still decide.
        assert_eq!(
            FlagSource::from_matches(&matches).tree,
            json!({"db": {"timeout": "5s"}})
        );
    }
}
