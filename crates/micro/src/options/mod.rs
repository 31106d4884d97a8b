//! Service options from flags, environment and files.
//!
//! Every option of a service has a flag, an environment variable and a key in a config
//! file, with go-micro's names (`--register_ttl`, `MICRO_REGISTER_TTL`,
//! `micro.register_ttl`). A value is taken from the first of these that sets it:
//!
//! 1. a flag (`--server_address :9090`),
//! 2. an environment variable (`MICRO_SERVER_ADDRESS=:9090`),
//! 3. the `micro` table of the config file named by `--config_file` /
//!    `MICRO_CONFIG_FILE` (JSON, YAML or TOML by extension),
//! 4. a value set in code by the service builder (a [`PartialOptions`]),
//! 5. the built-in default ([`ServiceOptions::default`]).
//!
//! An environment variable that is set but empty counts as not set, and so does an
//! empty value (or `null`) in the file.
//!
//! Flags are parsed by clap ([`ServiceArgs`]); environment variables are read by this
//! module through a lookup function ([`ServiceOptions::load_with_env`]), not by clap,
//! so that tests can pass their own environment without touching the process's, and
//! so that an error names the variable that holds the bad value:
//!
//! ```text
//! MICRO_REGISTER_TTL="abc": expected a duration like 30, 30s, 500ms or 1m
//! ```
//!
//! A config file keeps the service options under `micro`; everything else in it
//! belongs to the application's config:
//!
//! ```yaml
//! micro:
//!   server_address: 127.0.0.1:9090
//!   register_ttl: 30s        # or 30: durations may be plain seconds
//!   server_metadata: { region: eu }
//!   registry_address: [10.0.0.1:2379, 10.0.0.2:2379]
//! greeter:
//!   greeting: Hello
//! ```

mod args;
pub(crate) mod file;
mod values;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args as _, Command, FromArgMatches as _};

pub use args::{BrokerArgs, ClientArgs, RegistryArgs, ServerArgs, ServiceArgs};
pub use values::{format_duration, format_size, parse_address, parse_duration, parse_size, Secret};

use crate::metadata::{parse_pairs, Metadata};
use crate::wrapper::Settings;
use values::{complete_host, parse_dial_address, parse_list};

/// The key of every option: the flag without `--`, the key under `micro` in a file,
/// and, upper-cased behind `MICRO_`, the environment variable.
const KEYS: &[&str] = &[
    "server_name",
    "server_version",
    "server_id",
    "server_address",
    "server_advertise",
    "server_metadata",
    "server_drain_timeout",
    "server_read_timeout",
    "server_max_body",
    "register_ttl",
    "register_interval",
    "registry",
    "registry_address",
    "registry_tls_ca",
    "registry_tls_cert",
    "registry_tls_key",
    "registry_username",
    "registry_password",
    "broker",
    "broker_address",
    "selector",
    "client_retries",
    "client_request_timeout",
    "client_pool_size",
    "client_dial_timeout",
    "wrappers",
    "wrapper",
    "proxy",
    "config_file",
    "config",
    "config_address",
];

/// The environment variable of an option key: `register_ttl` -> `MICRO_REGISTER_TTL`.
fn env_var(key: &str) -> String {
    format!("MICRO_{}", key.to_ascii_uppercase())
}

/// Every option of a service, resolved: each field holds the value from the highest
/// layer that set it (flag, environment, config file, code, built-in default).
///
/// ```
/// use std::time::Duration;
/// use clap::Command;
/// use micro::options::{PartialOptions, ServiceOptions};
///
/// // What the service builder set in code.
/// let code = PartialOptions {
///     server_name: Some("greeter".into()),
///     register_ttl: Some(Duration::from_secs(60)),
///     ..PartialOptions::default()
/// };
/// let env = |var: &str| (var == "MICRO_REGISTER_TTL").then(|| "45s".to_string());
/// let opts = ServiceOptions::load_with_env(
///     Command::new("greeter"),
///     &code,
///     ["greeter", "--server_address", ":9090"],
///     &env,
/// )
/// .unwrap();
/// assert_eq!(opts.server_name, "greeter");
/// assert_eq!(opts.server_address, "0.0.0.0:9090");
/// assert_eq!(opts.register_ttl, Duration::from_secs(45));
/// assert_eq!(opts.register_interval, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOptions {
    /// `--server_name` / `MICRO_SERVER_NAME`: the service's name; empty unless the
    /// builder or the user gives one.
    pub server_name: String,
    /// `--server_version` / `MICRO_SERVER_VERSION`, default `latest`.
    pub server_version: String,
    /// `--server_id` / `MICRO_SERVER_ID`; `None` lets the service make
    /// `<name>-<uuid>`.
    pub server_id: Option<String>,
    /// `--server_address` / `MICRO_SERVER_ADDRESS`, `host:port` to listen on, default
    /// `0.0.0.0:0` (any free port). `:8080` is completed to `0.0.0.0:8080`.
    pub server_address: String,
    /// `--server_advertise` / `MICRO_SERVER_ADVERTISE`: the address to register, if
    /// not the listening one.
    pub server_advertise: Option<String>,
    /// `--server_metadata` / `MICRO_SERVER_METADATA` (`k=v,k2=v2`): metadata of the
    /// registered node.
    pub server_metadata: Metadata,
    /// `--server_drain_timeout` / `MICRO_SERVER_DRAIN_TIMEOUT`, default 10s: how long
    /// a graceful stop waits for requests in flight.
    pub server_drain_timeout: Duration,
    /// `--server_read_timeout` / `MICRO_SERVER_READ_TIMEOUT`, default 30s: how long a
    /// client may take to send request headers or a whole unary request body; slower
    /// clients get a 408 and lose the connection, so they cannot hold it forever.
    pub server_read_timeout: Duration,
    /// `--server_max_body` / `MICRO_SERVER_MAX_BODY`, bytes, default 4 MiB: the
    /// largest request body accepted.
    pub server_max_body: usize,
    /// `--register_ttl` / `MICRO_REGISTER_TTL`, default 90s.
    pub register_ttl: Duration,
    /// `--register_interval` / `MICRO_REGISTER_INTERVAL`, default 30s.
    pub register_interval: Duration,
    /// `--registry` / `MICRO_REGISTRY`: name of the registry, default `mdns` (the
    /// local registry of this machine merged with mDNS; see `registry::NAMES`).
    pub registry: String,
    /// `--registry_address` / `MICRO_REGISTRY_ADDRESS` (comma-separated).
    pub registry_address: Vec<String>,
    /// `--registry_tls_ca` / `MICRO_REGISTRY_TLS_CA`: the PEM file of the CA that
    /// signed the registry's (etcd's) certificate; turns TLS on.
    pub registry_tls_ca: Option<PathBuf>,
    /// `--registry_tls_cert` / `MICRO_REGISTRY_TLS_CERT`: a client certificate (PEM)
    /// for mutual TLS with the registry, with `registry_tls_key`.
    pub registry_tls_cert: Option<PathBuf>,
    /// `--registry_tls_key` / `MICRO_REGISTRY_TLS_KEY`: the private key (PEM) of
    /// `registry_tls_cert`.
    pub registry_tls_key: Option<PathBuf>,
    /// `--registry_username` / `MICRO_REGISTRY_USERNAME`: the user to authenticate
    /// to the registry (etcd) as.
    pub registry_username: Option<String>,
    /// `MICRO_REGISTRY_PASSWORD`, or `micro.registry_password` in the config file
    /// (no flag: a command line is visible to every user of the machine): the
    /// password of `registry_username`. Never shown by `Debug` or `--help`.
    pub registry_password: Option<Secret>,
    /// `--broker` / `MICRO_BROKER`: name of the broker; `None` for the default.
    pub broker: Option<String>,
    /// `--broker_address` / `MICRO_BROKER_ADDRESS` (comma-separated).
    pub broker_address: Vec<String>,
    /// `--selector` / `MICRO_SELECTOR`: name of the node selector, default `random`.
    pub selector: String,
    /// `--client_retries` / `MICRO_CLIENT_RETRIES`, default 1.
    pub client_retries: u32,
    /// `--client_request_timeout` / `MICRO_CLIENT_REQUEST_TIMEOUT`, default 5s.
    pub client_request_timeout: Duration,
    /// `--client_pool_size` / `MICRO_CLIENT_POOL_SIZE`, default 100.
    pub client_pool_size: usize,
    /// `--client_dial_timeout` / `MICRO_CLIENT_DIAL_TIMEOUT`, default 5s.
    pub client_dial_timeout: Duration,
    /// `--wrappers` / `MICRO_WRAPPERS` (comma-separated): names of middleware.
    pub wrappers: Vec<String>,
    /// `--wrapper <name>.<key>=<value>` / `MICRO_WRAPPER_<NAME>_<KEY>` /
    /// `micro.wrapper.<name>.<key>`: settings of the wrappers, merged key by key.
    pub wrapper: Settings,
    /// `--proxy` / `MICRO_PROXY`: `host:port` of a micro proxy to send every call
    /// through (`:8081` means `127.0.0.1:8081`).
    pub proxy: Option<String>,
    /// `--config_file` / `MICRO_CONFIG_FILE`: the file these options were read from,
    /// which the service also loads as a config source.
    pub config_file: Option<PathBuf>,
    /// `--config` / `MICRO_CONFIG`: the remote config store the service also loads
    /// (`etcd`, or `service`, the config service of `micro server`); `None` for
    /// none.
    pub config: Option<String>,
    /// `--config_address` / `MICRO_CONFIG_ADDRESS` (comma-separated): addresses of
    /// that store.
    pub config_address: Vec<String>,
}

impl Default for ServiceOptions {
    /// The built-in defaults.
    fn default() -> Self {
        ServiceOptions {
            server_name: String::new(),
            server_version: "latest".into(),
            server_id: None,
            server_address: "0.0.0.0:0".into(),
            server_advertise: None,
            server_metadata: Metadata::new(),
            server_drain_timeout: Duration::from_secs(10),
            server_read_timeout: Duration::from_secs(30),
            server_max_body: 4 << 20,
            register_ttl: Duration::from_secs(90),
            register_interval: Duration::from_secs(30),
            registry: crate::registry::DEFAULT.into(),
            registry_address: Vec::new(),
            registry_tls_ca: None,
            registry_tls_cert: None,
            registry_tls_key: None,
            registry_username: None,
            registry_password: None,
            broker: None,
            broker_address: Vec::new(),
            selector: "random".into(),
            client_retries: 1,
            client_request_timeout: Duration::from_secs(5),
            client_pool_size: 100,
            client_dial_timeout: Duration::from_secs(5),
            wrappers: Vec::new(),
            wrapper: Settings::default(),
            proxy: None,
            config_file: None,
            config: None,
            config_address: Vec::new(),
        }
    }
}

impl ServiceOptions {
    /// Parses `args` (the first being the program name, as in `std::env::args_os()`)
    /// with `command` (which gives the name, about and version for `--help`), reads
    /// the process environment and the config file, and layers `code_defaults` and
    /// the built-in defaults under them.
    ///
    /// `--help`, `--version` and bad flags come back as [`OptionsError::Clap`]; see
    /// [`OptionsError::exit_if_clap`].
    ///
    /// ```no_run
    /// use micro::options::{PartialOptions, ServiceOptions};
    ///
    /// let command = clap::Command::new("greeter").about("Says hello");
    /// let opts = ServiceOptions::load(command, &PartialOptions::default(), std::env::args_os())
    ///     .map_err(|e| e.exit_if_clap())?;
    /// # Ok::<(), micro::options::OptionsError>(())
    /// ```
    pub fn load<I, T>(
        command: Command,
        code_defaults: &PartialOptions,
        args: I,
    ) -> Result<ServiceOptions, OptionsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::load_with_env(command, code_defaults, args, &|var| std::env::var(var).ok())
    }

    /// [`load`](Self::load) with the environment read through `env` (a variable's
    /// name to its value) instead of the process's.
    pub fn load_with_env<I, T>(
        command: Command,
        code_defaults: &PartialOptions,
        args: I,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServiceOptions, OptionsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = help_with_defaults(ServiceArgs::augment_args(command), code_defaults);
        let matches = command
            .try_get_matches_from(args)
            .map_err(OptionsError::Clap)?;
        let flags = ServiceArgs::from_arg_matches(&matches).map_err(OptionsError::Clap)?;
        Self::from_layers(flags.to_partial(), code_defaults, env)
    }

    /// Resolves options from flags already parsed (e.g. by a `micro` command that
    /// flattens [`ServiceArgs`] or some of its groups), the environment read through
    /// `env`, the config file, `code_defaults` and the built-in defaults.
    ///
    /// ```
    /// use micro::options::{PartialOptions, ServiceOptions};
    ///
    /// let flags = PartialOptions { selector: Some("roundrobin".into()), ..Default::default() };
    /// let opts = ServiceOptions::from_layers(flags, &PartialOptions::default(), &|_| None).unwrap();
    /// assert_eq!(opts.selector, "roundrobin");
    /// assert_eq!(opts.client_retries, 1);
    /// ```
    pub fn from_layers(
        flags: PartialOptions,
        code_defaults: &PartialOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServiceOptions, OptionsError> {
        let env = PartialOptions::from_env(env)?;
        let config_file = flags
            .config_file
            .as_ref()
            .or(env.config_file.as_ref())
            .or(code_defaults.config_file.as_ref());
        let file = match config_file {
            Some(path) => PartialOptions::from_file(path)?,
            None => PartialOptions::default(),
        };
        Ok(flags.or(env).or(file).or(code_defaults.clone()).resolve())
    }
}

/// Some options, each possibly unset: one layer of [`ServiceOptions`] (the flags, the
/// environment, a file, or what the service builder set in code).
///
/// ```
/// use micro::options::PartialOptions;
///
/// let env = PartialOptions { registry: Some("mdns".into()), ..Default::default() };
/// let code = PartialOptions {
///     registry: Some("etcd".into()),
///     selector: Some("roundrobin".into()),
///     ..Default::default()
/// };
/// let merged = env.or(code);
/// assert_eq!(merged.registry.as_deref(), Some("mdns"));
/// assert_eq!(merged.selector.as_deref(), Some("roundrobin"));
/// assert_eq!(merged.resolve().client_retries, 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)] // each field is the option of the same name in ServiceOptions
pub struct PartialOptions {
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    pub server_id: Option<String>,
    pub server_address: Option<String>,
    pub server_advertise: Option<String>,
    pub server_metadata: Option<Metadata>,
    pub server_drain_timeout: Option<Duration>,
    pub server_read_timeout: Option<Duration>,
    pub server_max_body: Option<usize>,
    pub register_ttl: Option<Duration>,
    pub register_interval: Option<Duration>,
    pub registry: Option<String>,
    pub registry_address: Option<Vec<String>>,
    pub registry_tls_ca: Option<PathBuf>,
    pub registry_tls_cert: Option<PathBuf>,
    pub registry_tls_key: Option<PathBuf>,
    pub registry_username: Option<String>,
    pub registry_password: Option<Secret>,
    pub broker: Option<String>,
    pub broker_address: Option<Vec<String>>,
    pub selector: Option<String>,
    pub client_retries: Option<u32>,
    pub client_request_timeout: Option<Duration>,
    pub client_pool_size: Option<usize>,
    pub client_dial_timeout: Option<Duration>,
    pub wrappers: Option<Vec<String>>,
    pub wrapper: Option<Settings>,
    pub proxy: Option<String>,
    pub config_file: Option<PathBuf>,
    pub config: Option<String>,
    pub config_address: Option<Vec<String>>,
}

impl PartialOptions {
    /// Layers `self` over `lower`: each option set in `self` wins, the others come
    /// from `lower`. Whole values win: metadata and lists are not merged.
    pub fn or(self, lower: PartialOptions) -> PartialOptions {
        PartialOptions {
            server_name: self.server_name.or(lower.server_name),
            server_version: self.server_version.or(lower.server_version),
            server_id: self.server_id.or(lower.server_id),
            server_address: self.server_address.or(lower.server_address),
            server_advertise: self.server_advertise.or(lower.server_advertise),
            server_metadata: self.server_metadata.or(lower.server_metadata),
            server_drain_timeout: self.server_drain_timeout.or(lower.server_drain_timeout),
            server_read_timeout: self.server_read_timeout.or(lower.server_read_timeout),
            server_max_body: self.server_max_body.or(lower.server_max_body),
            register_ttl: self.register_ttl.or(lower.register_ttl),
            register_interval: self.register_interval.or(lower.register_interval),
            registry: self.registry.or(lower.registry),
            registry_address: self.registry_address.or(lower.registry_address),
            registry_tls_ca: self.registry_tls_ca.or(lower.registry_tls_ca),
            registry_tls_cert: self.registry_tls_cert.or(lower.registry_tls_cert),
            registry_tls_key: self.registry_tls_key.or(lower.registry_tls_key),
            registry_username: self.registry_username.or(lower.registry_username),
            registry_password: self.registry_password.or(lower.registry_password),
            broker: self.broker.or(lower.broker),
            broker_address: self.broker_address.or(lower.broker_address),
            selector: self.selector.or(lower.selector),
            client_retries: self.client_retries.or(lower.client_retries),
            client_request_timeout: self.client_request_timeout.or(lower.client_request_timeout),
            client_pool_size: self.client_pool_size.or(lower.client_pool_size),
            client_dial_timeout: self.client_dial_timeout.or(lower.client_dial_timeout),
            wrappers: self.wrappers.or(lower.wrappers),
            wrapper: match (self.wrapper, lower.wrapper) {
                (Some(upper), Some(lower)) => Some(upper.or(lower)),
                (upper, lower) => upper.or(lower),
            },
            proxy: self.proxy.or(lower.proxy),
            config_file: self.config_file.or(lower.config_file),
            config: self.config.or(lower.config),
            config_address: self.config_address.or(lower.config_address),
        }
    }

    /// Fills every option left unset with its built-in default.
    pub fn resolve(self) -> ServiceOptions {
        let d = ServiceOptions::default();
        ServiceOptions {
            server_name: self.server_name.unwrap_or(d.server_name),
            server_version: self.server_version.unwrap_or(d.server_version),
            server_id: self.server_id.or(d.server_id),
            server_address: complete_host(
                self.server_address.unwrap_or(d.server_address),
                "0.0.0.0",
            ),
            server_advertise: self.server_advertise.or(d.server_advertise),
            server_metadata: self.server_metadata.unwrap_or(d.server_metadata),
            server_drain_timeout: self.server_drain_timeout.unwrap_or(d.server_drain_timeout),
            server_read_timeout: self.server_read_timeout.unwrap_or(d.server_read_timeout),
            server_max_body: self.server_max_body.unwrap_or(d.server_max_body),
            register_ttl: self.register_ttl.unwrap_or(d.register_ttl),
            register_interval: self.register_interval.unwrap_or(d.register_interval),
            registry: self.registry.unwrap_or(d.registry),
            registry_address: self.registry_address.unwrap_or(d.registry_address),
            registry_tls_ca: self.registry_tls_ca.or(d.registry_tls_ca),
            registry_tls_cert: self.registry_tls_cert.or(d.registry_tls_cert),
            registry_tls_key: self.registry_tls_key.or(d.registry_tls_key),
            registry_username: self.registry_username.or(d.registry_username),
            registry_password: self.registry_password.or(d.registry_password),
            broker: self.broker.or(d.broker),
            broker_address: self.broker_address.unwrap_or(d.broker_address),
            selector: self.selector.unwrap_or(d.selector),
            client_retries: self.client_retries.unwrap_or(d.client_retries),
            client_request_timeout: self
                .client_request_timeout
                .unwrap_or(d.client_request_timeout),
            client_pool_size: self.client_pool_size.unwrap_or(d.client_pool_size),
            client_dial_timeout: self.client_dial_timeout.unwrap_or(d.client_dial_timeout),
            wrappers: self.wrappers.unwrap_or(d.wrappers),
            wrapper: self.wrapper.unwrap_or(d.wrapper),
            proxy: self
                .proxy
                .map(|p| complete_host(p, "127.0.0.1"))
                .or(d.proxy),
            config_file: self.config_file.or(d.config_file),
            config: self.config.or(d.config),
            config_address: self.config_address.unwrap_or(d.config_address),
        }
    }

    /// The options set by `MICRO_*` environment variables, read through `env` (pass
    /// `&|var| std::env::var(var).ok()` for the process's environment). Variables that
    /// are set but empty are ignored.
    ///
    /// ```
    /// use micro::options::PartialOptions;
    ///
    /// let env = |var: &str| match var {
    ///     "MICRO_REGISTRY_ADDRESS" => Some("10.0.0.1:2379, 10.0.0.2:2379".to_string()),
    ///     _ => None,
    /// };
    /// let opts = PartialOptions::from_env(&env).unwrap();
    /// assert_eq!(opts.registry_address.unwrap(), ["10.0.0.1:2379", "10.0.0.2:2379"]);
    ///
    /// let err = PartialOptions::from_env(&|var| {
    ///     (var == "MICRO_REGISTER_TTL").then(|| "abc".to_string())
    /// })
    /// .unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     r#"MICRO_REGISTER_TTL="abc": expected a duration like 30, 30s, 500ms or 1m"#
    /// );
    /// ```
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<PartialOptions, OptionsError> {
        let mut options = PartialOptions::default();
        for key in KEYS {
            let var = env_var(key);
            let Some(value) = env(&var) else { continue };
            if value.trim().is_empty() {
                continue;
            }
            options
                .set(key, &value)
                .map_err(|expected| OptionsError::Env {
                    var,
                    value,
                    expected,
                })?;
        }
        let wrapper = Settings::from_env(env);
        if wrapper != Settings::default() {
            options.wrapper = Some(wrapper);
        }
        Ok(options)
    }

    /// The options set in the `micro` table of a JSON, YAML or TOML file, told apart
    /// by the extension (`.json`, `.yaml`/`.yml`, `.toml`; for another extension, the
    /// first of JSON, YAML and TOML that reads the file). A file without a `micro`
    /// table sets nothing; a key under `micro` that is not an option is an error.
    /// Durations may be numbers (seconds) or strings (`"30s"`), metadata a table or
    /// `"k=v,…"`, lists arrays or comma-separated strings.
    ///
    /// ```no_run
    /// let opts = micro::options::PartialOptions::from_file("config.yaml".as_ref())?;
    /// # Ok::<(), micro::options::OptionsError>(())
    /// ```
    pub fn from_file(path: &Path) -> Result<PartialOptions, OptionsError> {
        file::read(path)
    }

    /// Sets option `key` from text, as an environment variable or a file gives it.
    /// On a bad value, the error says what was expected.
    fn set(&mut self, key: &str, raw: &str) -> Result<(), String> {
        let text = || raw.trim().to_string();
        match key {
            "wrapper" => {
                return Err(
                    "wrapper settings are set one by one: MICRO_WRAPPER_<NAME>_<KEY>=<value>, \
                     e.g. MICRO_WRAPPER_RATELIMIT_RATE=100"
                        .into(),
                )
            }
            "server_name" => self.server_name = Some(text()),
            "server_version" => self.server_version = Some(text()),
            "server_id" => self.server_id = Some(text()),
            "server_address" => self.server_address = Some(parse_address(raw)?),
            "server_advertise" => self.server_advertise = Some(text()),
            "server_metadata" => self.server_metadata = Some(parse_pairs(raw)?),
            "server_drain_timeout" => self.server_drain_timeout = Some(parse_duration(raw)?),
            "server_read_timeout" => self.server_read_timeout = Some(parse_duration(raw)?),
            "server_max_body" => self.server_max_body = Some(parse_size(raw)?),
            "register_ttl" => self.register_ttl = Some(parse_duration(raw)?),
            "register_interval" => self.register_interval = Some(parse_duration(raw)?),
            "registry" => self.registry = Some(text()),
            "registry_address" => self.registry_address = Some(parse_list(raw)),
            "registry_tls_ca" => self.registry_tls_ca = Some(PathBuf::from(text())),
            "registry_tls_cert" => self.registry_tls_cert = Some(PathBuf::from(text())),
            "registry_tls_key" => self.registry_tls_key = Some(PathBuf::from(text())),
            "registry_username" => self.registry_username = Some(text()),
            // Spaces may be part of a password: taken as given.
            "registry_password" => self.registry_password = Some(Secret::new(raw)),
            "broker" => self.broker = Some(text()),
            "broker_address" => self.broker_address = Some(parse_list(raw)),
            "selector" => self.selector = Some(text()),
            "client_retries" => self.client_retries = Some(parse_count(raw)?),
            "client_request_timeout" => self.client_request_timeout = Some(parse_duration(raw)?),
            "client_pool_size" => self.client_pool_size = Some(parse_count(raw)?),
            "client_dial_timeout" => self.client_dial_timeout = Some(parse_duration(raw)?),
            "wrappers" => self.wrappers = Some(parse_list(raw)),
            "proxy" => self.proxy = Some(parse_dial_address(raw)?),
            "config_file" => self.config_file = Some(PathBuf::from(text())),
            "config" => self.config = Some(parse_store(raw)?),
            "config_address" => self.config_address = Some(parse_list(raw)),
            other => return Err(format!("{other:?} is not an option")),
        }
        Ok(())
    }

    /// Option `key` as text, the way `--help` shows a default; `None` if unset or empty.
    fn display(&self, key: &str) -> Option<String> {
        let list = |l: &Option<Vec<String>>| l.as_ref().map(|l| l.join(","));
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let text = match key {
            "server_name" => self.server_name.clone(),
            "server_version" => self.server_version.clone(),
            "server_id" => self.server_id.clone(),
            "server_address" => self.server_address.clone(),
            "server_advertise" => self.server_advertise.clone(),
            "server_metadata" => self.server_metadata.as_ref().map(|md| {
                md.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            "server_drain_timeout" => self.server_drain_timeout.map(format_duration),
            "server_read_timeout" => self.server_read_timeout.map(format_duration),
            "server_max_body" => self.server_max_body.map(format_size),
            "register_ttl" => self.register_ttl.map(format_duration),
            "register_interval" => self.register_interval.map(format_duration),
            "registry" => self.registry.clone(),
            "registry_address" => list(&self.registry_address),
            "registry_tls_ca" => path(&self.registry_tls_ca),
            "registry_tls_cert" => path(&self.registry_tls_cert),
            "registry_tls_key" => path(&self.registry_tls_key),
            "registry_username" => self.registry_username.clone(),
            // Never shown.
            "registry_password" => None,
            "broker" => self.broker.clone(),
            "broker_address" => list(&self.broker_address),
            "selector" => self.selector.clone(),
            "client_retries" => self.client_retries.map(|n| n.to_string()),
            "client_request_timeout" => self.client_request_timeout.map(format_duration),
            "client_pool_size" => self.client_pool_size.map(|n| n.to_string()),
            "client_dial_timeout" => self.client_dial_timeout.map(format_duration),
            "wrappers" => list(&self.wrappers),
            "proxy" => self.proxy.clone(),
            "config_file" => self.config_file.as_ref().map(|p| p.display().to_string()),
            "config" => self.config.clone(),
            "config_address" => list(&self.config_address),
            _ => None,
        };
        text.filter(|t| !t.is_empty())
    }
}

impl From<ServiceOptions> for PartialOptions {
    /// Every option set, e.g. to use resolved options as the code defaults of another
    /// load.
    fn from(o: ServiceOptions) -> Self {
        PartialOptions {
            server_name: Some(o.server_name).filter(|n| !n.is_empty()),
            server_version: Some(o.server_version),
            server_id: o.server_id,
            server_address: Some(o.server_address),
            server_advertise: o.server_advertise,
            server_metadata: Some(o.server_metadata),
            server_drain_timeout: Some(o.server_drain_timeout),
            server_read_timeout: Some(o.server_read_timeout),
            server_max_body: Some(o.server_max_body),
            register_ttl: Some(o.register_ttl),
            register_interval: Some(o.register_interval),
            registry: Some(o.registry),
            registry_address: Some(o.registry_address),
            registry_tls_ca: o.registry_tls_ca,
            registry_tls_cert: o.registry_tls_cert,
            registry_tls_key: o.registry_tls_key,
            registry_username: o.registry_username,
            registry_password: o.registry_password,
            broker: o.broker,
            broker_address: Some(o.broker_address),
            selector: Some(o.selector),
            client_retries: Some(o.client_retries),
            client_request_timeout: Some(o.client_request_timeout),
            client_pool_size: Some(o.client_pool_size),
            client_dial_timeout: Some(o.client_dial_timeout),
            wrappers: Some(o.wrappers),
            wrapper: Some(o.wrapper),
            proxy: o.proxy,
            config_file: o.config_file,
            config: o.config,
            config_address: Some(o.config_address),
        }
    }
}

/// The name of a remote config store (`etcd`, `service`), lower-cased.
pub(crate) fn parse_store(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_ascii_lowercase();
    if crate::config::STORES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(format!(
            "expected a config store: {}",
            crate::config::STORES.join(" or ")
        ))
    }
}

fn parse_count<N: std::str::FromStr>(raw: &str) -> Result<N, String> {
    raw.trim()
        .parse()
        .map_err(|_| "expected a whole number, 0 or more".to_string())
}

/// Shows the code defaults in `--help` in place of the built-in ones.
fn help_with_defaults(mut command: Command, code_defaults: &PartialOptions) -> Command {
    command = command.after_long_help(crate::wrapper::help());
    for key in KEYS {
        let Some(value) = code_defaults.display(key) else {
            continue;
        };
        if command.get_arguments().all(|a| a.get_id() != *key) {
            continue;
        }
        command = command.mut_arg(*key, |arg| {
            let help = arg.get_help().map(|h| with_default(&h.to_string(), &value));
            let long_help = arg
                .get_long_help()
                .map(|h| with_default(&h.to_string(), &value));
            let arg = match help {
                Some(help) => arg.help(help),
                None => arg,
            };
            match long_help {
                Some(help) => arg.long_help(help),
                None => arg,
            }
        });
    }
    command
}

/// `help` with its `[default: …]` replaced by (or, if none, followed by) `value`.
fn with_default(help: &str, value: &str) -> String {
    let base = match help.find(" [default: ") {
        Some(start) => {
            let end = help[start..]
                .find(']')
                .map_or(help.len(), |i| start + i + 1);
            format!("{}{}", &help[..start], &help[end..])
        }
        None => help.to_string(),
    };
    format!("{base} [default: {value}]")
}

/// Why options could not be loaded.
///
/// [`OptionsError::Clap`] is clap's answer to `--help`, `--version` or a bad flag: a
/// binary should print it and exit, which [`exit_if_clap`](Self::exit_if_clap) does.
///
/// ```
/// use micro::options::{OptionsError, PartialOptions, ServiceOptions};
///
/// let err = ServiceOptions::load_with_env(
///     clap::Command::new("greeter"),
///     &PartialOptions::default(),
///     ["greeter", "--help"],
///     &|_| None,
/// )
/// .unwrap_err();
/// assert!(matches!(err, OptionsError::Clap(_)));
/// // In a binary: `let opts = ServiceOptions::load(..).map_err(|e| e.exit_if_clap())?;`
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum OptionsError {
    /// From clap: help or version was asked for, or a flag or its value is wrong.
    Clap(clap::Error),
    /// An environment variable holds a value its option does not accept.
    Env {
        /// The variable, e.g. `MICRO_REGISTER_TTL`.
        var: String,
        /// Its value.
        value: String,
        /// What the option accepts.
        expected: String,
    },
    /// The config file cannot be read or parsed, or is not shaped as expected.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the parser's line and column where it gives them.
        message: String,
    },
    /// A key under `micro` in the config file is not an option.
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `server_adress`.
        key: String,
    },
    /// The config file gives an option a value it does not accept.
    FileValue {
        /// The file.
        path: PathBuf,
        /// The option's key under `micro`.
        key: String,
        /// The value as written (in JSON notation).
        value: String,
        /// What the option accepts.
        expected: String,
    },
}

impl OptionsError {
    /// For [`OptionsError::Clap`], prints the help, version or usage error and exits
    /// the process (status 0 for help and version, 2 for a usage error); any other
    /// error is returned unchanged.
    pub fn exit_if_clap(self) -> OptionsError {
        match self {
            OptionsError::Clap(e) => e.exit(),
            other => other,
        }
    }

    /// The clap error, if this is one.
    pub fn as_clap(&self) -> Option<&clap::Error> {
        match self {
            OptionsError::Clap(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsError::Clap(e) => write!(f, "{e}"),
            OptionsError::Env {
                var,
                value,
                expected,
            } => write!(f, "{var}={value:?}: {expected}"),
            OptionsError::File { path, message } => {
                write!(f, "config file {}: {message}", path.display())
            }
            OptionsError::UnknownKey { path, key } => {
                write!(
                    f,
                    "config file {}: \"micro.{key}\" is not an option",
                    path.display()
                )?;
                match closest_key(key) {
                    Some(near) => write!(f, "; did you mean \"{near}\"?"),
                    None => {
                        let keys: Vec<&str> = KEYS
                            .iter()
                            .copied()
                            .filter(|k| *k != "config_file")
                            .collect();
                        write!(f, "; the options are: {}", keys.join(", "))
                    }
                }
            }
            OptionsError::FileValue {
                path,
                key,
                value,
                expected,
            } => write!(
                f,
                "config file {}: micro.{key} = {value}: {expected}",
                path.display()
            ),
        }
    }
}

/// The option key nearest to a misspelt `key` (`server-address`, `server_adress`),
/// if one is near enough to be what was meant.
fn closest_key(key: &str) -> Option<&'static str> {
    let key = key.replace('-', "_").to_ascii_lowercase();
    KEYS.iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance of two ASCII-ish strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

impl std::error::Error for OptionsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OptionsError::Clap(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
