//! What every CLI verb shares: registry and client options resolved the go-micro way
//! (flag > MICRO_* env > MICRO_CONFIG_FILE > default), the output format, and
//! errors explained with what to do next.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use micro::options::{ClientArgs, PartialOptions, RegistryArgs, ServiceOptions};
use micro::registry::{Ownership, Registry};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and indented JSON, for people.
    Table,
    /// Compact JSON, one document per line, for scripts.
    Json,
}

/// Options shared by the verbs that talk to services or the registry.
#[derive(Debug, Args)]
pub struct Common {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub output: Output,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl Common {
    /// The resolved options.
    pub fn options(&self) -> anyhow::Result<ServiceOptions> {
        let flags = self.registry.to_partial().or(self.client.to_partial());
        let options = ServiceOptions::from_layers(flags, &PartialOptions::default(), &|v| {
            std::env::var(v).ok()
        })?;
        Ok(options)
    }

    /// The micro proxy `--proxy` / `MICRO_PROXY` names (`host:port`), if any.
    pub fn proxy(&self) -> anyhow::Result<Option<String>> {
        Ok(self.options()?.proxy)
    }

    /// The registry the options name; with a proxy (`--proxy` / `MICRO_PROXY`),
    /// the registry of the `micro server` behind it (`service` at the proxy's
    /// address), whatever `--registry` says. Records registered through it by hand
    /// live until their TTL, not just as long as this short-lived command.
    pub fn registry(&self) -> anyhow::Result<Arc<dyn Registry>> {
        let options = self.options()?;
        if let Some(proxy) = &options.proxy {
            return Ok(micro::registry::from_name(
                "service",
                std::slice::from_ref(proxy),
                Ownership::Detached,
            )?);
        }
        Ok(micro::registry::from_options(
            &options,
            Ownership::Detached,
        )?)
    }

    /// A client over that registry.
    pub fn client(&self) -> anyhow::Result<micro::Client> {
        let options = self.options()?;
        let registry = self.registry()?;
        let mut client = micro::Client::builder()
            .registry(registry)
            .request_timeout(options.client_request_timeout)
            .retries(options.client_retries)
            .dial_timeout(options.client_dial_timeout)
            .pool_size(options.client_pool_size)
            .strategy(options.selector.parse()?);
        // MICRO_PROXY: every call goes through the micro proxy there.
        if let Some(proxy) = &options.proxy {
            client = client.proxy(proxy.clone());
        }
        Ok(client.build())
    }

    /// Prints a JSON value: indented for people, one line for scripts.
    pub fn print_json(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        let text = match self.output {
            Output::Table => serde_json::to_string_pretty(value)?,
            Output::Json => serde_json::to_string(value)?,
        };
        crate::output::print_line(&text)
    }
}

/// Explains a failed call or lookup, with what to do next where it is clear.
pub fn explain(service: &str, err: micro::Error) -> anyhow::Error {
    let hint = match err.code() {
        404 if err.id() == "micro.registry" => format!(
            "\nhint: is {service} running? `micro list services` shows what is registered; \
             pass --address host:port to call a node directly"
        ),
        503 => "\nhint: the node did not answer; check that it is running and the address is right"
            .to_string(),
        _ => String::new(),
    };
    anyhow::anyhow!(
        "{} ({} {}){hint}\n{}",
        err.detail(),
        err.code(),
        err.status(),
        err.to_json()
    )
}
