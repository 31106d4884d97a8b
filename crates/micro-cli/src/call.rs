//! `micro call` and `micro stream`: call an endpoint with a JSON request.

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use micro::client::CallOptions;

use crate::context::{explain, Common};

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
    #[command(flatten)]
    common: Common,
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

    fn call_options(&self) -> anyhow::Result<CallOptions> {
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
        Ok(call)
    }
}

/// Checks that an address is `host:port`.
pub fn parse_host_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(format!(
            "{text:?} is not host:port (for example 127.0.0.1:9090)"
        )),
    }
}

pub async fn call(args: CallArgs) -> anyhow::Result<()> {
    let request = args.request()?;
    let client = args.common.client()?;
    let rsp = client
        .call_json(
            &args.service,
            &args.endpoint,
            &request,
            &args.call_options()?,
        )
        .await
        .map_err(|e| explain(&args.service, e))?;
    args.common.print_json(&rsp)
}

pub async fn stream(args: CallArgs) -> anyhow::Result<()> {
    let request = args.request()?;
    let client = args.common.client()?;
    let mut messages = client
        .stream_json(
            &args.service,
            &args.endpoint,
            &request,
            &args.call_options()?,
        )
        .await
        .map_err(|e| explain(&args.service, e))?;
    while let Some(item) = messages.next().await {
        let value = item.map_err(|e| explain(&args.service, e))?;
        args.common.print_json(&value)?;
    }
    Ok(())
}
