//! [`VaultSource`]: a secret of Vault's KV version 2 engine, re-read on an interval.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use serde_json::{Map, Value};

use super::error::{ConfigError, ErrorKind};
use super::http::{authority, call};
use super::{value, Source};

/// How often a secret is read again unless told otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(5);

/// One secret of a Vault KV v2 engine, read with a token, named
/// `vault:<mount>/<path>`, mapped under a config path (the root by default).
///
/// It reads `GET <address>/v1/<mount>/data/<path>` with the header
/// `X-Vault-Token`, and takes the keys of the answer's `data.data`. It reads the
/// secret again every refresh interval (default 60 s), or sooner when Vault gives
/// the secret a lease (`lease_duration`), so a rotated secret reaches the service
/// without a restart.
///
/// Its values are secret: errors and logs name the source and the path, never a
/// value, and `Debug` hides the token. Plain `http://` only in this version (a
/// Vault agent on loopback, or a TLS-terminating proxy, for a remote Vault).
///
/// ```no_run
/// use micro::config::{Config, VaultSource};
///
/// # async fn demo() -> Result<(), micro::config::ConfigError> {
/// // VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=... ; the secret secret/myapp/db
/// let db = VaultSource::from_env("myapp/db")?.at("secrets.db");
/// let config = Config::builder().source(db).load().await?;
/// let password: String = config.get("secrets.db.password")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VaultSource {
    address: String,
    token: String,
    mount: String,
    path: String,
    at: String,
    refresh: Duration,
    /// The lease of the last read, in seconds (0: none).
    lease: Arc<AtomicU64>,
}

impl fmt::Debug for VaultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSource")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("mount", &self.mount)
            .field("path", &self.path)
            .field("at", &self.at)
            .field("refresh", &self.refresh)
            .finish()
    }
}

impl VaultSource {
    /// The secret at `path` of the KV v2 engine mounted at `secret`, in the Vault at
    /// `address` (`http://host:port`), read with `token`.
    pub fn new(
        address: impl Into<String>,
        token: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        VaultSource {
            address: address.into(),
            token: token.into(),
            mount: "secret".into(),
            path: path.into().trim_matches('/').to_string(),
            at: String::new(),
            refresh: DEFAULT_REFRESH,
            lease: Arc::new(AtomicU64::new(0)),
        }
    }

    /// [`new`](Self::new) with the address and token of the `VAULT_ADDR` and
    /// `VAULT_TOKEN` environment variables, as the `vault` CLI reads them.
    pub fn from_env(path: impl Into<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| {
            std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::new(
                    ErrorKind::Invalid,
                    format!("{name} is not set: set VAULT_ADDR and VAULT_TOKEN to read secrets from Vault"),
                )
            })
        };
        Ok(VaultSource::new(
            var("VAULT_ADDR")?,
            var("VAULT_TOKEN")?,
            path,
        ))
    }

    /// The mount of the KV v2 engine (default `secret`).
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into().trim_matches('/').to_string();
        self
    }

    /// The config path the secret's keys go under (default: the root), e.g.
    /// `secrets.db` makes key `password` the path `secrets.db.password`.
    pub fn at(mut self, path: impl Into<String>) -> Self {
        self.at = path.into();
        self
    }

    /// How often to read the secret again (default 60 s; a shorter lease wins).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every.max(Duration::from_millis(10));
        self
    }

    fn error(&self, kind: ErrorKind, message: impl fmt::Display) -> ConfigError {
        ConfigError::source_error(kind, &self.name(), message)
    }

    async fn read_secret(&self) -> Result<Value, ConfigError> {
        let authority = authority(&self.address).map_err(|e| self.error(ErrorKind::Invalid, e))?;
        let api_path = format!("/v1/{}/data/{}", self.mount, self.path);
        let (status, body) = call(
            &authority,
            Method::GET,
            &api_path,
            &[("X-Vault-Token", &self.token)],
            None,
            TIMEOUT,
        )
        .await
        .map_err(|e| {
            self.error(
                ErrorKind::Unavailable,
                format!("{e}; is Vault running at {}? (VAULT_ADDR)", self.address),
            )
        })?;
        match status {
            StatusCode::OK => {}
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                return Err(self.error(
                    ErrorKind::Denied,
                    format!(
                        "permission denied reading {api_path}: check the token (VAULT_TOKEN) \
                         and that its policy allows reading {}/data/{}",
                        self.mount, self.path
                    ),
                ))
            }
            StatusCode::NOT_FOUND => {
                return Err(self.error(
                    ErrorKind::Unavailable,
                    format!(
                        "no secret at {api_path}: write it (vault kv put {}/{} key=value) or \
                         fix the mount and path",
                        self.mount, self.path
                    ),
                ))
            }
            other => {
                // Vault's error bodies are {"errors": [...]}: messages, no secrets.
                let errors = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("errors").cloned())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(self.error(
                    ErrorKind::Unavailable,
                    format!("Vault answered {other} for {api_path}{errors}"),
                ));
            }
        }
        // Only the shape is reported on failure: serde's messages on a malformed
        // document do not quote its text, and type errors cannot happen on a Value.
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| self.error(ErrorKind::Parse, format!("the answer is not JSON ({e})")))?;
        let Some(data) = answer.pointer("/data/data").and_then(Value::as_object) else {
            return Err(self.error(
                ErrorKind::Parse,
                "the answer has no data.data object: is the mount a KV version 2 engine?",
            ));
        };
        let lease = answer["lease_duration"].as_u64().unwrap_or(0);
        self.lease.store(lease, Ordering::Relaxed);
        let mut tree = Value::Object(Map::new());
        value::set(&mut tree, &self.at, Value::Object(data.clone()));
        Ok(tree)
    }

    fn interval(&self) -> Duration {
        match self.lease.load(Ordering::Relaxed) {
            0 => self.refresh,
            lease => self.refresh.min(Duration::from_secs(lease)),
        }
    }
}

impl Source for VaultSource {
    fn name(&self) -> String {
        format!("vault:{}/{}", self.mount, self.path)
    }

    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        Box::pin(self.read_secret())
    }

    fn watch(&self) -> Option<BoxStream<'static, Result<Value, ConfigError>>> {
        // (source, last tree sent, failing: the last failure was sent)
        let state = (self.clone(), None::<Value>, false);
        let updates = stream::unfold(state, |(source, mut last, mut failing)| async move {
            loop {
                tokio::time::sleep(source.interval()).await;
                match source.read_secret().await {
                    Ok(tree) => {
                        failing = false;
                        if last.as_ref() == Some(&tree) {
                            continue;
                        }
                        last = Some(tree.clone());
                        return Some((Ok(tree), (source, last, failing)));
                    }
                    Err(e) if !failing => {
                        failing = true;
                        return Some((Err(e), (source, last, failing)));
                    }
                    Err(_) => continue,
                }
            }
        });
        Some(updates.boxed())
    }

    fn secret(&self) -> bool {
        true
    }
}
