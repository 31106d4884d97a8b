//! `micro health` and `micro stats`: ask every node of a service through the
//! built-in `Debug` endpoints.

use std::time::{Duration, Instant};

use clap::Args;
use micro::client::CallOptions;
use micro::registry::Node;
use serde::Serialize;

use crate::call::parse_host_port;
use crate::context::{explain, Common, Output};
use crate::output::Table;

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The service name, e.g. greeter.
    service: String,
    /// Ask only this host:port instead of every registered node.
    #[arg(long, value_parser = parse_host_port)]
    address: Option<String>,
    #[command(flatten)]
    common: Common,
}

impl DebugArgs {
    /// The proxy to ask through: with `--proxy` / `MICRO_PROXY` and no
    /// `--address`, the proxy forwards the call to one node of the service it
    /// picks (it cannot be told which), so the report has one row, `via-proxy`.
    fn through_proxy(&self) -> anyhow::Result<Option<String>> {
        if self.address.is_some() {
            return Ok(None);
        }
        self.common.proxy()
    }

    async fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        if let Some(address) = &self.address {
            return Ok(vec![Node {
                id: address.clone(),
                address: address.clone(),
                ..Default::default()
            }]);
        }
        if let Some(proxy) = self.through_proxy()? {
            return Ok(vec![Node {
                id: "via-proxy".to_string(),
                address: proxy,
                ..Default::default()
            }]);
        }
        let versions = self
            .common
            .registry()?
            .get_service(&self.service)
            .await
            .map_err(|e| explain(&self.service, e))?;
        Ok(versions.into_iter().flat_map(|s| s.nodes).collect())
    }

    /// Calls `endpoint` on every node concurrently; one result per node.
    async fn ask_all(
        &self,
        endpoint: &str,
    ) -> anyhow::Result<Vec<(Node, Duration, Result<serde_json::Value, micro::Error>)>> {
        let client = self.common.client()?;
        let nodes = self.nodes().await?;
        let direct = self.through_proxy()?.is_none();
        let calls = nodes.into_iter().map(|node| {
            let client = client.clone();
            let service = self.service.clone();
            async move {
                let started = Instant::now();
                let mut opts = CallOptions::default().retries(0);
                if direct {
                    opts = opts.address(node.address.clone());
                }
                let result = client
                    .call_json(&service, endpoint, &serde_json::json!({}), &opts)
                    .await;
                (node, started.elapsed(), result)
            }
        });
        Ok(futures_util::future::join_all(calls).await)
    }
}

#[derive(Debug, Serialize)]
struct NodeHealth {
    id: String,
    address: String,
    status: String,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<micro::Error>,
}

pub async fn health(args: DebugArgs) -> anyhow::Result<()> {
    let results = args.ask_all("Debug.Health").await?;
    let report: Vec<NodeHealth> = results
        .into_iter()
        .map(|(node, latency, result)| {
            let (status, error) = match result {
                Ok(v) => (v["status"].as_str().unwrap_or("unknown").to_string(), None),
                Err(e) => ("unreachable".to_string(), Some(e)),
            };
            NodeHealth {
                id: node.id,
                address: node.address,
                status,
                latency_ms: latency.as_secs_f64() * 1000.0,
                error,
            }
        })
        .collect();
    if args.common.output == Output::Json {
        args.common.print_json(&report)?;
    } else {
        let mut table = Table::new(&["NODE", "ADDRESS", "STATUS", "LATENCY", "ERROR"]);
        for n in &report {
            table.row(vec![
                n.id.clone(),
                n.address.clone(),
                n.status.clone(),
                format!("{:.1}ms", n.latency_ms),
                n.error
                    .as_ref()
                    .map(|e| e.detail().to_string())
                    .unwrap_or_default(),
            ]);
        }
        table.print()?;
    }
    let unhealthy = report.iter().filter(|n| n.status != "ok").count();
    if unhealthy > 0 {
        anyhow::bail!(
            "{unhealthy} of {} node(s) of {} are not healthy",
            report.len(),
            args.service
        );
    }
    Ok(())
}

pub async fn stats(args: DebugArgs) -> anyhow::Result<()> {
    let results = args.ask_all("Debug.Stats").await?;
    let mut failed = 0;
    let mut json = Vec::new();
    let mut table = Table::new(&[
        "NODE", "ADDRESS", "UPTIME", "MEMORY", "THREADS", "REQUESTS", "ERRORS",
    ]);
    for (node, _, result) in results {
        match result {
            Ok(v) => {
                let num = |k: &str| {
                    v[k].as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                        .or(v[k].as_u64())
                        .unwrap_or(0)
                };
                table.row(vec![
                    node.id.clone(),
                    node.address.clone(),
                    micro::options::format_duration(Duration::from_secs(num("uptime"))),
                    format!("{:.1}MiB", num("memory") as f64 / (1024.0 * 1024.0)),
                    num("threads").to_string(),
                    num("requests").to_string(),
                    num("errors").to_string(),
                ]);
                json.push(serde_json::json!({"id": node.id, "address": node.address, "stats": v}));
            }
            Err(e) => {
                failed += 1;
                table.row(vec![
                    node.id.clone(),
                    node.address.clone(),
                    format!("error: {}", e.detail()),
                ]);
                json.push(serde_json::json!({"id": node.id, "address": node.address, "error": e}));
            }
        }
    }
    if args.common.output == Output::Json {
        args.common.print_json(&json)?;
    } else {
        table.print()?;
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} node(s) of {} did not answer Debug.Stats",
            args.service
        );
    }
    Ok(())
}
