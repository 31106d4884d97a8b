//! `micro publish` and `micro subscribe`.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use micro::broker::{self, Broker, Message, SubscribeOptions};
use micro::options::BrokerArgs;

use crate::context::{explain, Common, Output};
use crate::output::print_line;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic, e.g. greeter.hello.
    topic: String,
    /// The message as JSON, or `-` to read it from stdin.
    message: String,
    /// Headers sent with the message, key=value; repeatable or comma-separated.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The topic, e.g. greeter.hello.
    topic: String,
    /// Join this queue group: each message goes to one member of the group.
    #[arg(long)]
    queue: Option<String>,
    /// Keep messages for this durable subscriber while it is away (NATS JetStream).
    #[arg(long)]
    durable: Option<String>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    common: Common,
}

/// The broker the flags name, finding subscribers through the registry flags;
/// with a proxy (`--proxy` / `MICRO_PROXY`), the broker of the `micro server`
/// behind it (`service` at the proxy's address), whatever `--broker` says.
fn broker_of(args: &BrokerArgs, common: &Common) -> anyhow::Result<Arc<dyn Broker>> {
    if let Some(proxy) = common.proxy()? {
        return Ok(broker::from_name(
            "service",
            std::slice::from_ref(&proxy),
            common.registry()?,
        )?);
    }
    let options = micro::options::ServiceOptions::from_layers(
        args.to_partial(),
        &micro::options::PartialOptions::default(),
        &|v| std::env::var(v).ok(),
    )?;
    let name = options.broker.as_deref().unwrap_or(broker::DEFAULT);
    Ok(broker::from_name(
        name,
        &options.broker_address,
        common.registry()?,
    )?)
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let text = if args.message == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading the message from stdin")?;
        s
    } else {
        args.message.clone()
    };
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!("the message is not valid JSON: {text:?} (example: '{{\"name\":\"John\"}}')")
    })?;
    broker::validate_topic(&args.topic).map_err(|e| explain(&args.topic, e))?;
    let mut message = Message::new(serde_json::to_vec(&json)?)
        .header(broker::HEADER_TOPIC, args.topic.clone())
        .header(broker::HEADER_ID, new_id())
        .header(broker::HEADER_CONTENT_TYPE, "application/json")
        .header(broker::HEADER_FROM, "micro-cli");
    for pair in &args.metadata {
        for (k, v) in micro::metadata::parse_pairs(pair)
            .map_err(anyhow::Error::msg)?
            .iter()
        {
            message = message.header(k, v);
        }
    }
    let id = message.id().unwrap_or_default().to_string();
    let broker = broker_of(&args.broker, &args.common)?;
    broker
        .connect()
        .await
        .map_err(|e| explain(&args.topic, e))?;
    broker
        .publish(&args.topic, message)
        .await
        .map_err(|e| explain(&args.topic, e))?;
    // Delivers what is still buffered before this short-lived process exits.
    broker
        .disconnect()
        .await
        .map_err(|e| explain(&args.topic, e))?;
    if args.common.output == Output::Json {
        args.common
            .print_json(&serde_json::json!({"topic": args.topic, "id": id}))
    } else {
        print_line(&format!(
            "published {id} on {} ({})",
            args.topic,
            broker.name()
        ))
    }
}

fn new_id() -> String {
    // A time-ordered, unique enough id without another dependency.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", std::process::id())
}

pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    broker::validate_topic(&args.topic).map_err(|e| explain(&args.topic, e))?;
    let broker = broker_of(&args.broker, &args.common)?;
    let mut options = SubscribeOptions::default();
    if let Some(q) = &args.queue {
        options = options.queue(q.clone());
    }
    if let Some(d) = &args.durable {
        options = options.durable(d.clone());
    }
    let output = args.common.output;
    let print = broker::handler(move |delivery| async move {
        let body = &delivery.message.body;
        let text = match output {
            Output::Json => {
                let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
                });
                serde_json::json!({"topic": delivery.topic, "headers": delivery.message.headers, "body": body}).to_string()
            }
            Output::Table => {
                let headers: Vec<String> = delivery
                    .message
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!(
                    "{}  {}\n{}",
                    delivery.topic,
                    headers.join("  "),
                    String::from_utf8_lossy(body)
                )
            }
        };
        print_line(&text)
            .map_err(|e| micro::Error::internal_server_error("micro.cli", e.to_string()))
    });
    broker
        .connect()
        .await
        .map_err(|e| explain(&args.topic, e))?;
    let subscription = broker
        .subscribe(&args.topic, print, options)
        .await
        .map_err(|e| explain(&args.topic, e))?;
    eprintln!(
        "subscribed to {}{} on the {} broker; Ctrl-C to stop",
        args.topic,
        args.queue
            .as_deref()
            .map(|q| format!(" (queue {q})"))
            .unwrap_or_default(),
        broker.name()
    );
    micro::shutdown_signal().await;
    subscription
        .unsubscribe()
        .await
        .map_err(|e| explain(&args.topic, e))?;
    broker
        .disconnect()
        .await
        .map_err(|e| explain(&args.topic, e))?;
    Ok(())
}
