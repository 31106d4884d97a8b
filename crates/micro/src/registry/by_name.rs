//! Choosing a registry by the name users give in `--registry` / `MICRO_REGISTRY`.

use std::sync::Arc;

use super::{LocalRegistry, MemoryRegistry, Registry};
use crate::options::ServiceOptions;
use crate::Error;

/// The registry names this build knows, for help texts and errors.
pub const NAMES: &[&str] = &[
    #[cfg(feature = "mdns")]
    "mdns",
    "local",
    "memory",
    "service",
    #[cfg(feature = "etcd")]
    "etcd",
];

/// The registry a service uses when none is named: this machine's local registry,
/// merged with mDNS for the LAN where multicast works.
pub const DEFAULT: &str = if cfg!(feature = "mdns") {
    "mdns"
} else {
    "local"
};

/// Who owns the registrations made through a registry handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// This process: its registrations end when it dies (a service registering
    /// itself). On the local registry a `kill -9` removes them at once.
    Process,
    /// Nobody: registrations live until their TTL (`micro register service`, a
    /// proxy registering nodes for other programs).
    Detached,
}

/// The registry `name` stands for, reaching it at `addresses` where it has any
/// (`local` and `mdns`: the directory shared by the processes of this machine;
/// `etcd`: its members, `host:port` or `http://host:port`, default
/// `127.0.0.1:2379`). For TLS and credentials (etcd), see [`from_options`].
///
/// ```
/// use micro::registry::{from_name, Ownership};
///
/// let registry = from_name("memory", &[], Ownership::Process).unwrap();
/// assert_eq!(registry.name(), "memory");
/// assert_eq!(from_name("zookeeper", &[], Ownership::Process).unwrap_err().code(), 400);
/// ```
pub fn from_name(
    name: &str,
    addresses: &[String],
    ownership: Ownership,
) -> Result<Arc<dyn Registry>, Error> {
    let local = || {
        let registry = match addresses.first() {
            Some(dir) if !dir.is_empty() => LocalRegistry::at(dir),
            _ => LocalRegistry::new(),
        };
        match ownership {
            Ownership::Process => registry,
            Ownership::Detached => registry.owner_pid(None),
        }
    };
    match name {
        "memory" => Ok(Arc::new(MemoryRegistry::new())),
        "local" => Ok(Arc::new(local())),
        "service" => Ok(Arc::new(super::ServiceRegistry::new(
            addresses
                .first()
                .filter(|a| !a.is_empty())
                .map_or(super::ServiceRegistry::DEFAULT_ADDRESS, String::as_str),
        ))),
        #[cfg(feature = "mdns")]
        "mdns" | "default" => Ok(Arc::new(super::DefaultRegistry::with_local(local()))),
        #[cfg(feature = "etcd")]
        "etcd" => {
            let client = crate::etcd::EtcdClient::builder(addresses.iter().cloned())
                .build()
                .map_err(|e| etcd_settings(e.to_string()))?;
            Ok(Arc::new(super::EtcdRegistry::new(client)))
        }
        other => Err(Error::bad_request(
            "micro.registry",
            format!(
                "unknown registry {other:?}: choose one of {}",
                NAMES.join(", ")
            ),
        )),
    }
}

/// The registry the options name (`registry`), at `registry_address`, with the
/// TLS and credential options (`registry_tls_ca`, `registry_tls_cert`,
/// `registry_tls_key`, `registry_username`, `registry_password`) for the
/// backends that use them (etcd). What services and `micro` commands call.
///
/// ```
/// use micro::options::ServiceOptions;
/// use micro::registry::{from_options, Ownership};
///
/// let options = ServiceOptions { registry: "memory".into(), ..ServiceOptions::default() };
/// assert_eq!(from_options(&options, Ownership::Process).unwrap().name(), "memory");
/// ```
pub fn from_options(
    options: &ServiceOptions,
    ownership: Ownership,
) -> Result<Arc<dyn Registry>, Error> {
    #[cfg(feature = "etcd")]
    if options.registry == "etcd" {
        return Ok(Arc::new(etcd_from_options(options)?));
    }
    let secured = options.registry_tls_ca.is_some()
        || options.registry_tls_cert.is_some()
        || options.registry_tls_key.is_some()
        || options.registry_username.is_some()
        || options.registry_password.is_some();
    if secured {
        tracing::warn!(
            registry = %options.registry,
            "the registry TLS and username/password options are for etcd; this registry ignores them"
        );
    }
    from_name(&options.registry, &options.registry_address, ownership)
}

/// The etcd registry of the options.
#[cfg(feature = "etcd")]
fn etcd_from_options(options: &ServiceOptions) -> Result<super::EtcdRegistry, Error> {
    let mut client = crate::etcd::EtcdClient::builder(options.registry_address.iter().cloned());
    if let Some(ca) = &options.registry_tls_ca {
        client = client.tls_ca(ca);
    }
    match (&options.registry_tls_cert, &options.registry_tls_key) {
        (Some(cert), Some(key)) => client = client.tls_identity(cert, key),
        (None, None) => {}
        _ => {
            return Err(etcd_settings(
                "--registry_tls_cert / MICRO_REGISTRY_TLS_CERT and --registry_tls_key / \
                 MICRO_REGISTRY_TLS_KEY go together: give both (a client certificate and its \
                 key) or neither"
                    .into(),
            ))
        }
    }
    match (&options.registry_username, &options.registry_password) {
        (Some(user), Some(password)) => client = client.user(user, password.expose()),
        (None, None) => {}
        (Some(user), None) => {
            return Err(etcd_settings(format!(
                "--registry_username {user:?} needs a password: set MICRO_REGISTRY_PASSWORD \
                 or micro.registry_password in the config file"
            )))
        }
        (None, Some(_)) => {
            return Err(etcd_settings(
                "a registry password is set but no user: set --registry_username / \
                 MICRO_REGISTRY_USERNAME too"
                    .into(),
            ))
        }
    }
    let client = client.build().map_err(|e| etcd_settings(e.to_string()))?;
    Ok(super::EtcdRegistry::new(client))
}

#[cfg(feature = "etcd")]
fn etcd_settings(detail: String) -> Error {
    Error::bad_request("micro.registry", format!("the etcd registry: {detail}"))
}
