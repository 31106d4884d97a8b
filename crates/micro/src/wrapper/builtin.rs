//! The built-in wrappers, switched on by name (`MICRO_WRAPPERS=metrics,trace`).

use std::time::Duration;

use super::settings::{Key, Settings};
use super::Wrappers;
use crate::Error;

const ID: &str = "micro.wrapper";

/// What a built-in wrapper knows of the service it wraps.
#[derive(Debug, Clone)]
pub struct WrapperContext {
    /// The service name (`greeter`).
    pub service: String,
    /// The service version.
    pub version: String,
    /// Retries of the client when the `retry` wrapper's `retries` is not set
    /// (`MICRO_CLIENT_RETRIES`).
    pub client_retries: u32,
    /// Time a call may take when the `timeout` wrapper's `request` is not set
    /// (`MICRO_CLIENT_REQUEST_TIMEOUT`).
    pub client_request_timeout: Duration,
    /// New wrapper settings as the service's config changes (the `micro.wrapper`
    /// subtree), for built-ins that can be reconfigured at runtime (`chaos`); `None`
    /// when the settings never change.
    pub updates: Option<tokio::sync::watch::Receiver<Settings>>,
}

impl WrapperContext {
    /// The context of service `service` with the client defaults.
    pub fn new(service: impl Into<String>) -> Self {
        WrapperContext {
            service: service.into(),
            version: "latest".into(),
            client_retries: crate::client::DEFAULT_RETRIES,
            client_request_timeout: crate::client::DEFAULT_REQUEST_TIMEOUT,
            updates: None,
        }
    }
}

/// A built-in wrapper: its name, what it does, its settings, and how it is made.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name in `MICRO_WRAPPERS`.
    pub name: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// Its settings (`micro.wrapper.<name>.<key>`, `MICRO_WRAPPER_<NAME>_<KEY>`).
    pub keys: &'static [Key],
    /// Whether it is on even when not named (the client's `timeout` and `retry`:
    /// their settings apply to every client).
    pub always_on: bool,
    pub(crate) build: fn(&Settings, &WrapperContext) -> Result<Wrappers, Error>,
}

/// Every built-in wrapper.
pub const BUILTINS: &[Builtin] = &[
    super::log::BUILTIN,
    super::trace::BUILTIN,
    super::metrics::BUILTIN,
    super::timeout::BUILTIN,
    super::retry::BUILTIN,
    super::ratelimit::BUILTIN,
    super::concurrency::BUILTIN,
    super::breaker::BUILTIN,
    super::auth::BUILTIN,
    super::chaos::BUILTIN,
];

/// The wrappers named in `names` (in that order, the first outermost), made with
/// `settings`, followed by the always-on ones that are not named. An unknown name or
/// a bad setting is a 400 that says what is known.
pub fn from_names<S: AsRef<str>>(
    names: &[S],
    settings: &Settings,
    ctx: &WrapperContext,
) -> Result<Wrappers, Error> {
    let mut chosen: Vec<&Builtin> = Vec::new();
    for name in names {
        let name = name.as_ref().trim();
        if name.is_empty() {
            continue;
        }
        let builtin = BUILTINS.iter().find(|b| b.name == name).ok_or_else(|| {
            let known: Vec<_> = BUILTINS.iter().map(|b| b.name).collect();
            Error::bad_request(
                ID,
                format!(
                    "unknown wrapper {name:?}; the wrappers are: {}",
                    known.join(", ")
                ),
            )
        })?;
        if chosen.iter().any(|b| b.name == name) {
            return Err(Error::bad_request(
                ID,
                format!("wrapper {name} is named twice"),
            ));
        }
        chosen.push(builtin);
    }
    for builtin in BUILTINS.iter().filter(|b| b.always_on) {
        if !chosen.iter().any(|b| b.name == builtin.name) {
            chosen.push(builtin);
        }
    }
    for wrapper in settings.wrappers() {
        if !chosen.iter().any(|b| b.name == wrapper) {
            tracing::warn!(
                wrapper,
                "settings are given for wrapper {wrapper}, which is not switched on (add it to MICRO_WRAPPERS)"
            );
        }
    }
    let mut wrappers = Wrappers::new();
    for builtin in chosen {
        wrappers = wrappers.and((builtin.build)(settings, ctx)?);
    }
    Ok(wrappers)
}

/// The typed settings of `builtin`, or a 400 naming the wrapper and key.
pub(crate) fn settings_of<T: serde::de::DeserializeOwned>(
    settings: &Settings,
    name: &str,
    keys: &[Key],
) -> Result<T, Error> {
    settings
        .typed(name, keys)
        .map_err(|e| Error::bad_request(ID, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_repeated_names_are_errors() {
        let ctx = WrapperContext::new("s");
        let e = from_names(&["nope"], &Settings::default(), &ctx).unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(
            e.detail().contains("unknown wrapper \"nope\"") && e.detail().contains("retry"),
            "{e}"
        );
        let e = from_names(&["retry", "retry"], &Settings::default(), &ctx).unwrap_err();
        assert!(e.detail().contains("named twice"), "{e}");
    }

    #[test]
    fn every_builtin_has_documented_keys_and_builds_with_defaults() {
        let ctx = WrapperContext::new("s");
        for builtin in BUILTINS {
            assert!(!builtin.about.is_empty(), "{}", builtin.name);
            for key in builtin.keys {
                assert!(!key.about.is_empty(), "{}.{}", builtin.name, key.name);
            }
            (builtin.build)(&Settings::default(), &ctx)
                .unwrap_or_else(|e| panic!("{} with defaults: {e}", builtin.name));
        }
    }
}
