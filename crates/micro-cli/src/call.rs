//! `micro call` and `micro stream`.

use std::io::Write;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use micro::client::CallOptions;
use micro::options::{ClientArgs, PartialOptions, RegistryArgs, ServiceOptions};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Indented JSON, for people.
    Pretty,
    /// One line of compact JSON, for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The service's registered name, e.g. greeter.
    service: String,
    /// The endpoint, Service.Method as in the proto, e.g. Greeter.Hello.
    endpoint: String,
    /// The request as JSON; `{}` when left out, `-` to read it from stdin.
    request: Option<String>,
    /// Call this host:port directly instead of looking the service up.
    #[arg(long, env = "MICRO_ADDRESS", value_parser = parse_host_port)]
    address: Option<String>,
    /// Metadata sent as headers, key=value; repeatable or comma-separated.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// How long the call may take, e.g. 5s, 500ms, or plain seconds
    /// [default: --client_request_timeout, 5s].
    #[arg(long, value_parser = micro::options::parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "pretty")]
    output: Output,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    client: ClientArgs,
}

impl CallArgs {
    fn request(&self) -> anyhow::Result<serde_json::Value> {
        let text = match self.request.as_deref() {
            None => return Ok(serde_json::json!({})),
            Some("-") => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("reading the request from stdin")?;
                s
            }
            Some(s) => s.to_string(),
        };
        serde_json::from_str(&text).with_context(|| {
            format!("the request is not valid JSON: {text:?} (example: '{{\"name\":\"John\"}}')")
        })
    }

    fn options(&self) -> anyhow::Result<(micro::Client, CallOptions)> {
        let mut flags = self.registry.to_partial();
        flags = flags.or(self.client.to_partial());
        let options = ServiceOptions::from_layers(flags, &PartialOptions::default(), &|v| {
            std::env::var(v).ok()
        })?;
        if let Some(proxy) = &options.proxy {
            bail!(
                "MICRO_PROXY/--proxy ({proxy}) is set, but sending calls through a micro proxy is \
                 not available in this version: unset it, or call the node with --address"
            );
        }
        if options.registry != "memory" {
            bail!(
                "unknown registry {:?}: available registries are: memory",
                options.registry
            );
        }
        let client = micro::Client::builder()
            .request_timeout(options.client_request_timeout)
            .retries(options.client_retries)
            .dial_timeout(options.client_dial_timeout)
            .pool_size(options.client_pool_size)
            .strategy(options.selector.parse()?)
            .build();
        let mut call = CallOptions::default();
        if let Some(a) = &self.address {
            call = call.address(a.clone());
        }
        if let Some(t) = self.timeout {
            call = call.timeout(t);
        }
        for pair in &self.metadata {
            let md = micro::metadata::parse_pairs(pair).map_err(anyhow::Error::msg)?;
            call = call.with_metadata(&md);
        }
        Ok((client, call))
    }

    fn print(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        let text = match self.output {
            Output::Pretty => serde_json::to_string_pretty(value)?,
            Output::Json => serde_json::to_string(value)?,
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()?;
        Ok(())
    }
}

/// Checks that an address is `host:port`.
fn parse_host_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(format!(
            "{text:?} is not host:port (for example 127.0.0.1:9090)"
        )),
    }
}

/// Explains a failed call, with what to do next where it is clear.
fn explain(service: &str, err: micro::Error) -> anyhow::Error {
    let hint = match err.code() {
        404 if err.id() == "micro.registry" => format!(
            "\nhint: is {service} running? Pass --address host:port to call a node directly"
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

pub async fn call(args: CallArgs) -> anyhow::Result<()> {
    let request = args.request()?;
    let (client, opts) = args.options()?;
    let rsp = client
        .call_json(&args.service, &args.endpoint, &request, &opts)
        .await
        .map_err(|e| explain(&args.service, e))?;
    args.print(&rsp)
}

pub async fn stream(args: CallArgs) -> anyhow::Result<()> {
    let request = args.request()?;
    let (client, opts) = args.options()?;
    let mut messages = client
        .stream_json(&args.service, &args.endpoint, &request, &opts)
        .await
        .map_err(|e| explain(&args.service, e))?;
    while let Some(item) = messages.next().await {
        let value = item.map_err(|e| explain(&args.service, e))?;
        args.print(&value)?;
    }
    Ok(())
}
