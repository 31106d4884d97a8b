//! The command-line flags of a service, as clap `Args` that `micro` commands can
//! `#[command(flatten)]`.
//!
//! The flags carry no clap default and no clap `env`: a flag that was not given is
//! `None` (or an empty list), so the layers below it (environment, config file, code
//! defaults) can still decide. Environment variables are read by
//! [`PartialOptions::from_env`] instead, through a lookup function that tests can
//! replace. The help text names each variable and default itself.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{parse_address, parse_dial_address, parse_duration, parse_list, parse_size};
use super::PartialOptions;
use crate::metadata::{parse_pairs, Metadata};

// Not a doc comment for clap: on an `Args` struct it would become the `about` of
// every command that flattens it. Rustdoc still sees it.
#[cfg_attr(
    any(doc, doctest),
    doc = r#"Every flag of a service: the groups below, plus `--wrappers` and `--config_file`.

A `micro` command can flatten the whole set or single groups:

```
use clap::Parser;
use micro::options::{ClientArgs, RegistryArgs};

#[derive(Parser, Debug)]
struct Call {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    client: ClientArgs,
    service: String,
}

let call = Call::try_parse_from(["call", "--registry", "etcd", "--client_retries", "3", "greeter"]).unwrap();
assert_eq!(call.registry.registry.as_deref(), Some("etcd"));
let flags = call.registry.to_partial().or(call.client.to_partial());
assert_eq!(flags.client_retries, Some(3));
```"#
)]
#[derive(Args, Debug, Clone, Default, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct ServiceArgs {
    /// A JSON, YAML or TOML file whose `micro` table sets these options (and that the
    /// service loads as a config source) [env: MICRO_CONFIG_FILE]
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// A config store the service also loads, after the file: service (the config
    /// service of `micro server`) or etcd [env: MICRO_CONFIG]
    #[arg(long, value_name = "NAME", value_parser = super::parse_store)]
    pub config: Option<String>,

    /// Addresses of the config store, comma-separated [env: MICRO_CONFIG_ADDRESS]
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub config_address: Vec<String>,

    /// Names of middleware to wrap handlers and calls in, comma-separated
    /// [env: MICRO_WRAPPERS]
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub wrappers: Vec<String>,

    /// A setting of a wrapper, repeatable: --wrapper ratelimit.rate=100
    /// [env: MICRO_WRAPPER_<NAME>_<KEY>]
    #[arg(long, value_name = "NAME.KEY=VALUE", value_parser = parse_wrapper_setting)]
    pub wrapper: Vec<String>,

    /// The server flags.
    #[command(flatten)]
    pub server: ServerArgs,

    /// The registry flags.
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// The broker flags.
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// The client flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

#[cfg_attr(
    any(doc, doctest),
    doc = r#"The server flags: name, version, id, addresses, metadata, limits."#
)]
#[derive(Args, Debug, Clone, Default, PartialEq)]
#[command(rename_all = "snake_case", next_help_heading = "Server")]
pub struct ServerArgs {
    /// Name of the service [env: MICRO_SERVER_NAME]
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Version of the service [env: MICRO_SERVER_VERSION] [default: latest]
    #[arg(long, value_name = "VERSION")]
    pub server_version: Option<String>,

    /// Id of this instance [env: MICRO_SERVER_ID] [default: <name>-<uuid>]
    #[arg(long, value_name = "ID")]
    pub server_id: Option<String>,

    /// Address to listen on; ":8080" means every interface [env: MICRO_SERVER_ADDRESS]
    /// [default: 0.0.0.0:0]
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_address)]
    pub server_address: Option<String>,

    /// Address to register instead of the listening one [env: MICRO_SERVER_ADVERTISE]
    #[arg(long, value_name = "HOST:PORT")]
    pub server_advertise: Option<String>,

    /// Metadata of this instance, k=v pairs, comma-separated; repeatable
    /// [env: MICRO_SERVER_METADATA]
    #[arg(long, value_name = "K=V,...", value_parser = parse_pairs)]
    pub server_metadata: Vec<Metadata>,

    /// How long a graceful stop waits for requests in flight
    /// [env: MICRO_SERVER_DRAIN_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub server_drain_timeout: Option<Duration>,

    /// How long a client may take to send request headers or a whole unary request
    /// body before it gets a 408 and the connection closes
    /// [env: MICRO_SERVER_READ_TIMEOUT] [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub server_read_timeout: Option<Duration>,

    /// Largest request body accepted, e.g. 4MiB, 512KiB, 1MB or bytes
    /// [env: MICRO_SERVER_MAX_BODY] [default: 4MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub server_max_body: Option<usize>,
}

#[cfg_attr(
    any(doc, doctest),
    doc = r#"The registry flags: which registry, where, and how registrations are kept alive."#
)]
#[derive(Args, Debug, Clone, Default, PartialEq)]
#[command(rename_all = "snake_case", next_help_heading = "Registry")]
pub struct RegistryArgs {
    /// Registry to use: mdns (this machine's local registry plus mDNS on the LAN),
    /// local (this machine only), memory (this process only), service (a micro
    /// server's) or etcd [env: MICRO_REGISTRY] [default: mdns]
    #[arg(long, value_name = "NAME")]
    pub registry: Option<String>,

    /// Addresses of the registry, comma-separated; for local and mdns, the directory
    /// the processes of this machine share; for etcd, its members (host:port or
    /// http(s)://host:port, default 127.0.0.1:2379) [env: MICRO_REGISTRY_ADDRESS]
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub registry_address: Vec<String>,

    /// The CA certificate (PEM) that signed the registry's certificate; turns TLS on
    /// for etcd [env: MICRO_REGISTRY_TLS_CA]
    #[arg(long, value_name = "PATH")]
    pub registry_tls_ca: Option<PathBuf>,

    /// A client certificate (PEM) for mutual TLS with the registry, with
    /// --registry_tls_key [env: MICRO_REGISTRY_TLS_CERT]
    #[arg(long, value_name = "PATH")]
    pub registry_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --registry_tls_cert [env: MICRO_REGISTRY_TLS_KEY]
    #[arg(long, value_name = "PATH")]
    pub registry_tls_key: Option<PathBuf>,

    /// The user to authenticate to the registry (etcd) as; its password comes from
    /// MICRO_REGISTRY_PASSWORD or micro.registry_password in the config file, never
    /// a flag [env: MICRO_REGISTRY_USERNAME]
    #[arg(long, value_name = "NAME")]
    pub registry_username: Option<String>,

    /// How long a registration lives unless renewed [env: MICRO_REGISTER_TTL]
    /// [default: 1m30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub register_ttl: Option<Duration>,

    /// How often the registration is renewed [env: MICRO_REGISTER_INTERVAL]
    /// [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub register_interval: Option<Duration>,
}

#[cfg_attr(any(doc, doctest), doc = r#"The broker flags."#)]
#[derive(Args, Debug, Clone, Default, PartialEq)]
#[command(rename_all = "snake_case", next_help_heading = "Broker")]
pub struct BrokerArgs {
    /// Broker to use for pub/sub: http (default), nats, jetstream (NATS, publishes
    /// stored before they return), memory or service [env: MICRO_BROKER]
    #[arg(long, value_name = "NAME")]
    pub broker: Option<String>,

    /// Addresses of the broker, comma-separated [env: MICRO_BROKER_ADDRESS]
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub broker_address: Vec<String>,
}

#[cfg_attr(
    any(doc, doctest),
    doc = r#"The client flags: node selection, retries, timeouts, pool, proxy."#
)]
#[derive(Args, Debug, Clone, Default, PartialEq)]
#[command(rename_all = "snake_case", next_help_heading = "Client")]
pub struct ClientArgs {
    /// How to pick a node of a service: random, roundrobin or leastconn
    /// [env: MICRO_SELECTOR] [default: random]
    #[arg(long, value_name = "NAME")]
    pub selector: Option<String>,

    /// How many times a failed call is retried [env: MICRO_CLIENT_RETRIES] [default: 1]
    #[arg(long, value_name = "N")]
    pub client_retries: Option<u32>,

    /// Time limit of a call [env: MICRO_CLIENT_REQUEST_TIMEOUT] [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub client_request_timeout: Option<Duration>,

    /// Most connections the client keeps open in all, one per node it calls
    /// [env: MICRO_CLIENT_POOL_SIZE] [default: 100]
    #[arg(long, value_name = "N")]
    pub client_pool_size: Option<usize>,

    /// Time limit of opening a connection [env: MICRO_CLIENT_DIAL_TIMEOUT] [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub client_dial_timeout: Option<Duration>,

    /// Send every call through the micro proxy at this address [env: MICRO_PROXY]
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_dial_address)]
    pub proxy: Option<String>,
}

/// A list flag: absent if not given; given but empty (`--registry_address ""`)
/// clears the list.
fn list(values: &[String]) -> Option<Vec<String>> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().flat_map(|v| parse_list(v)).collect())
    }
}

impl ServiceArgs {
    /// The options these flags set; the rest stay `None`.
    pub fn to_partial(&self) -> PartialOptions {
        PartialOptions {
            config_file: self.config_file.clone(),
            config: self.config.clone(),
            config_address: list(&self.config_address),
            wrappers: list(&self.wrappers),
            wrapper: (!self.wrapper.is_empty())
                .then(|| crate::wrapper::Settings::from_flags(&self.wrapper).ok())
                .flatten(),
            ..PartialOptions::default()
        }
        .or(self.server.to_partial())
        .or(self.registry.to_partial())
        .or(self.broker.to_partial())
        .or(self.client.to_partial())
    }
}

impl ServerArgs {
    /// The options these flags set; the rest stay `None`. Repeated
    /// `--server_metadata` flags are merged, later ones winning per key.
    pub fn to_partial(&self) -> PartialOptions {
        let metadata = (!self.server_metadata.is_empty()).then(|| {
            let mut all = Metadata::new();
            for md in &self.server_metadata {
                all.merge(md);
            }
            all
        });
        PartialOptions {
            server_name: self.server_name.clone(),
            server_version: self.server_version.clone(),
            server_id: self.server_id.clone(),
            server_address: self.server_address.clone(),
            server_advertise: self.server_advertise.clone(),
            server_metadata: metadata,
            server_drain_timeout: self.server_drain_timeout,
            server_read_timeout: self.server_read_timeout,
            server_max_body: self.server_max_body,
            ..PartialOptions::default()
        }
    }
}

impl RegistryArgs {
    /// The options these flags set; the rest stay `None`.
    pub fn to_partial(&self) -> PartialOptions {
        PartialOptions {
            registry: self.registry.clone(),
            registry_address: list(&self.registry_address),
            registry_tls_ca: self.registry_tls_ca.clone(),
            registry_tls_cert: self.registry_tls_cert.clone(),
            registry_tls_key: self.registry_tls_key.clone(),
            registry_username: self.registry_username.clone(),
            register_ttl: self.register_ttl,
            register_interval: self.register_interval,
            ..PartialOptions::default()
        }
    }
}

impl BrokerArgs {
    /// The options these flags set; the rest stay `None`.
    pub fn to_partial(&self) -> PartialOptions {
        PartialOptions {
            broker: self.broker.clone(),
            broker_address: list(&self.broker_address),
            ..PartialOptions::default()
        }
    }
}

impl ClientArgs {
    /// The options these flags set; the rest stay `None`.
    pub fn to_partial(&self) -> PartialOptions {
        PartialOptions {
            selector: self.selector.clone(),
            client_retries: self.client_retries,
            client_request_timeout: self.client_request_timeout,
            client_pool_size: self.client_pool_size,
            client_dial_timeout: self.client_dial_timeout,
            proxy: self.proxy.clone(),
            ..PartialOptions::default()
        }
    }
}

/// Checks a `--wrapper` flag's shape (`name.key=value`) when it is parsed.
fn parse_wrapper_setting(text: &str) -> Result<String, String> {
    crate::wrapper::Settings::from_flags([text]).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}
