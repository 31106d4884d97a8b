//! `micro config get|set|del|watch`: read and change config in a store.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use micro::config::{Config, StoreSource};
use micro::options::{PartialOptions, ServiceOptions};
use serde_json::Value;

use crate::context::Output;
use crate::output::print_line;

#[derive(Debug, Subcommand)]
pub enum ConfigVerb {
    /// Print the value at PATH (JSON).
    Get(PathArgs),
    /// Set PATH to VALUE: JSON if it parses as JSON, else the text as a string.
    Set(SetArgs),
    /// Delete PATH and everything under it.
    Del(PathArgs),
    /// Print the value at PATH, then each new value as it changes, until Ctrl-C.
    Watch(PathArgs),
}

/// Which store, and how to print.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct StoreArgs {
    /// The config store: service (the config service of `micro server`, through
    /// its proxy) or etcd [env: MICRO_CONFIG] [default: service]
    #[arg(long, value_name = "NAME", value_parser = ["etcd", "service"])]
    config: Option<String>,
    /// Addresses of the store, comma-separated [env: MICRO_CONFIG_ADDRESS]
    /// [default: 127.0.0.1:8081 for service, 127.0.0.1:2379 for etcd]
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    config_address: Vec<String>,
    /// Use the config service of the micro proxy at this address, whatever
    /// --config says [env: MICRO_PROXY]
    #[arg(long, value_name = "HOST:PORT")]
    proxy: Option<String>,
    /// Output format: indented JSON (table) or one compact JSON line (json).
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, Args)]
pub struct PathArgs {
    /// A dot-separated path, e.g. greeter.greeting.
    path: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// A dot-separated path, e.g. greeter.greeting.
    path: String,
    /// The value: JSON (`30`, `true`, `{"a":1}`, `"quoted"`), else a string.
    value: String,
    #[command(flatten)]
    store: StoreArgs,
}

impl StoreArgs {
    /// The store the flags, `MICRO_CONFIG*` or the `MICRO_CONFIG_FILE` name; the
    /// config service of `micro server` when none does.
    fn open(&self) -> anyhow::Result<Arc<dyn StoreSource>> {
        let flags = PartialOptions {
            config: self.config.clone(),
            config_address: (!self.config_address.is_empty()).then(|| self.config_address.clone()),
            proxy: self.proxy.clone(),
            ..PartialOptions::default()
        };
        let options = ServiceOptions::from_layers(flags, &PartialOptions::default(), &|v| {
            std::env::var(v).ok()
        })?;
        if let Some(proxy) = &options.proxy {
            return Ok(micro::config::store(
                "service",
                std::slice::from_ref(proxy),
            )?);
        }
        // With no store named, the config service of a `micro server` on this
        // machine (or at --config_address).
        let name = options.config.unwrap_or_else(|| "service".to_string());
        Ok(micro::config::store(&name, &options.config_address)?)
    }

    fn print(&self, value: &Value) -> anyhow::Result<()> {
        let text = match self.output {
            Output::Table => serde_json::to_string_pretty(value)?,
            Output::Json => serde_json::to_string(value)?,
        };
        print_line(&text)
    }
}

pub async fn run(verb: ConfigVerb) -> anyhow::Result<()> {
    match verb {
        ConfigVerb::Get(args) => {
            let store = args.store.open()?;
            match store.get(&args.path).await? {
                Some(value) => args.store.print(&value),
                None => Err(anyhow!(
                    "{} is not set in {}; set it with `micro config set {} VALUE`",
                    args.path,
                    store.name(),
                    args.path
                )),
            }
        }
        ConfigVerb::Set(args) => {
            let store = args.store.open()?;
            let value = serde_json::from_str::<Value>(&args.value)
                .unwrap_or_else(|_| Value::String(args.value.clone()));
            store.write(&args.path, value.clone()).await?;
            match args.store.output {
                Output::Json => args
                    .store
                    .print(&serde_json::json!({"path": args.path, "value": value})),
                Output::Table => {
                    print_line(&format!("set {} = {value} in {}", args.path, store.name()))
                }
            }
        }
        ConfigVerb::Del(args) => {
            let store = args.store.open()?;
            store.delete(&args.path).await?;
            match args.store.output {
                Output::Json => args
                    .store
                    .print(&serde_json::json!({"path": args.path, "deleted": true})),
                Output::Table => print_line(&format!("deleted {} in {}", args.path, store.name())),
            }
        }
        ConfigVerb::Watch(args) => watch(args).await,
    }
}

async fn watch(args: PathArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let name = store.name();
    let config = Config::builder()
        .shared_source(store.as_source())
        .load()
        .await?;
    let mut changes = config.watch(&args.path);
    let print = |value: &Value| match args.store.output {
        Output::Json => args
            .store
            .print(&serde_json::json!({"path": args.path, "value": value})),
        Output::Table => args.store.print(value),
    };
    print(&config.value(&args.path).unwrap_or(Value::Null))?;
    eprintln!("watching {} in {name}; Ctrl-C to stop", args.path);
    let shutdown = micro::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            change = changes.next() => {
                let value = change.context("the config watch ended")?;
                print(&value)?;
            }
        }
    }
}
