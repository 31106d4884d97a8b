//! `micro list services`, `micro get service`, `micro register service`,
//! `micro deregister service`: the registry seen and changed by hand.

use anyhow::Context;
use clap::{Args, Subcommand};
use micro::registry::{RegisterOptions, Service};

use crate::context::{explain, Common, Output};
use crate::output::{print_line, Table};

#[derive(Debug, Subcommand)]
pub enum ListWhat {
    /// Every registered service with its versions and node counts.
    Services(Common),
}

#[derive(Debug, Subcommand)]
pub enum GetWhat {
    /// One service: versions, nodes, endpoints with request/response schemas.
    Service(NameArgs),
}

#[derive(Debug, Subcommand)]
pub enum ChangeWhat {
    /// A registry record as JSON: {"name","version","endpoints":[..],"nodes":[{"id","address"}]}.
    Service(RecordArgs),
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The service name, e.g. greeter.
    name: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The record as JSON, or `-` to read it from stdin.
    record: String,
    #[command(flatten)]
    common: Common,
}

impl RecordArgs {
    fn record(&self) -> anyhow::Result<Service> {
        let text = if self.record == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the record from stdin")?;
            s
        } else {
            self.record.clone()
        };
        let mut service: Service = serde_json::from_str(&text).with_context(|| {
            format!(
                "the record is not a service record: {text:?}\nexample: \
                 '{{\"name\":\"greeter\",\"nodes\":[{{\"id\":\"greeter-1\",\"address\":\"127.0.0.1:9090\"}}]}}'"
            )
        })?;
        if service.version.is_empty() {
            service.version = "latest".into();
        }
        Ok(service)
    }
}

pub async fn list(what: ListWhat) -> anyhow::Result<()> {
    let ListWhat::Services(common) = what;
    let services = common
        .registry()?
        .list_services()
        .await
        .map_err(|e| explain("the registry", e))?;
    if common.output == Output::Json {
        return common.print_json(&services);
    }
    let mut table = Table::new(&["SERVICE", "VERSION", "NODES", "ENDPOINTS"]);
    for s in &services {
        table.row(vec![
            s.name.clone(),
            s.version.clone(),
            s.nodes.len().to_string(),
            s.endpoints.len().to_string(),
        ]);
    }
    table.print()
}

pub async fn get(what: GetWhat) -> anyhow::Result<()> {
    let GetWhat::Service(args) = what;
    let versions = args
        .common
        .registry()?
        .get_service(&args.name)
        .await
        .map_err(|e| explain(&args.name, e))?;
    if args.common.output == Output::Json {
        return args.common.print_json(&versions);
    }
    for (i, s) in versions.iter().enumerate() {
        if i > 0 {
            print_line("")?;
        }
        print_line(&format!("service  {}\nversion  {}\n", s.name, s.version))?;
        let mut nodes = Table::new(&["ID", "ADDRESS", "METADATA"]);
        for n in &s.nodes {
            let md: Vec<String> = n.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            nodes.row(vec![n.id.clone(), n.address.clone(), md.join(",")]);
        }
        nodes.print()?;
        for e in &s.endpoints {
            let stream = e
                .metadata
                .get("stream")
                .map(String::as_str)
                .unwrap_or("false");
            let kind = if stream == "false" {
                String::new()
            } else {
                format!(" (stream: {stream})")
            };
            print_line(&format!("\nEndpoint: {}{kind}", e.name))?;
            for (label, ty) in [("Request", &e.request), ("Response", &e.response)] {
                print_line(&format!("  {label}: {}", ty.name))?;
                if !ty.schema.is_null() {
                    let schema = serde_json::to_string_pretty(&ty.schema)?;
                    for line in schema.lines() {
                        print_line(&format!("    {line}"))?;
                    }
                }
            }
        }
    }
    Ok(())
}

pub async fn register(what: ChangeWhat) -> anyhow::Result<()> {
    let ChangeWhat::Service(args) = what;
    let service = args.record()?;
    let ttl = args.common.options()?.register_ttl;
    args.common
        .registry()?
        .register(&service, RegisterOptions { ttl })
        .await
        .map_err(|e| explain(&service.name, e))?;
    if args.common.output == Output::Json {
        return args.common.print_json(&serde_json::json!({
            "registered": service, "ttl": micro::options::format_duration(ttl)
        }));
    }
    print_line(&format!(
        "registered {} {} ({} node(s)) for {}",
        service.name,
        service.version,
        service.nodes.len(),
        micro::options::format_duration(ttl)
    ))
}

pub async fn deregister(what: ChangeWhat) -> anyhow::Result<()> {
    let ChangeWhat::Service(args) = what;
    let service = args.record()?;
    args.common
        .registry()?
        .deregister(&service)
        .await
        .map_err(|e| explain(&service.name, e))?;
    if args.common.output == Output::Json {
        return args
            .common
            .print_json(&serde_json::json!({ "deregistered": service }));
    }
    print_line(&format!(
        "deregistered {} {} ({} node(s))",
        service.name,
        service.version,
        service.nodes.len()
    ))
}
