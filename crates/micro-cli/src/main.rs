//! `micro`: the command line of micro. A thin `main`: parse, run, print errors.

mod call;
mod config_cmd;
mod context;
mod debug_cmd;
mod output;
mod pubsub;
mod registry_cmd;
mod server_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc: the gateway and proxy allocate small buffers per request on several
// threads, where it is markedly cheaper than glibc's malloc.
#[global_allocator]
static ALLOCATOR: micro_alloc::MiMalloc = micro_alloc::MiMalloc;

/// micro: the simplest way to build microservices.
///
/// Every option can also be set by its MICRO_* environment variable or, under a
/// `micro:` table, in the file MICRO_CONFIG_FILE names.
#[derive(Debug, Parser)]
#[command(name = "micro", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Call an endpoint of a service with a JSON request and print the response.
    Call(call::CallArgs),
    /// Call a server-streaming endpoint and print each message as it arrives.
    Stream(call::CallArgs),
    /// List registered services.
    #[command(subcommand)]
    List(registry_cmd::ListWhat),
    /// Show one registered service: versions, nodes, endpoints and their schemas.
    #[command(subcommand)]
    Get(registry_cmd::GetWhat),
    /// Call Debug.Health on every node of a service; non-zero exit if any is unhealthy.
    Health(debug_cmd::DebugArgs),
    /// Call Debug.Stats on every node of a service.
    Stats(debug_cmd::DebugArgs),
    /// Publish a JSON message on a topic.
    Publish(pubsub::PublishArgs),
    /// Print each message published on a topic, with its headers, as it arrives.
    Subscribe(pubsub::SubscribeArgs),
    /// Register a service record by hand (it expires after --register_ttl).
    #[command(subcommand)]
    Register(registry_cmd::ChangeWhat),
    /// Remove the nodes of a service record from the registry.
    #[command(subcommand)]
    Deregister(registry_cmd::ChangeWhat),
    /// Read, change and watch config: in micro server (the default) or etcd.
    #[command(subcommand)]
    Config(config_cmd::ConfigVerb),
    /// Serve the API gateway: HTTP requests become service calls
    /// (POST /greeter/hello calls Greeter.Hello of service greeter).
    Api(server_cmd::ApiArgs),
    /// Serve the proxy: the API of micro (Registry, Broker, Config, Client, health)
    /// as gRPC and as JSON over HTTP on one port.
    Proxy(server_cmd::ProxyArgs),
    /// Run micro server: the proxy (8081) with the registry, broker and a persistent
    /// config store, plus the ports of the API gateway (8080) and dashboard (8082).
    Server(server_cmd::ServerArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The long-running commands say where they listen; the others only warn.
    let default_log = match cli.command {
        Command::Api(_) | Command::Proxy(_) | Command::Server(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MICRO_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Call(args) => call::call(args).await,
        Command::Stream(args) => call::stream(args).await,
        Command::List(what) => registry_cmd::list(what).await,
        Command::Get(what) => registry_cmd::get(what).await,
        Command::Health(args) => debug_cmd::health(args).await,
        Command::Stats(args) => debug_cmd::stats(args).await,
        Command::Publish(args) => pubsub::publish(args).await,
        Command::Subscribe(args) => pubsub::subscribe(args).await,
        Command::Register(what) => registry_cmd::register(what).await,
        Command::Deregister(what) => registry_cmd::deregister(what).await,
        Command::Config(verb) => config_cmd::run(verb).await,
        Command::Api(args) => server_cmd::api(args).await,
        Command::Proxy(args) => server_cmd::proxy(args).await,
        Command::Server(args) => server_cmd::server(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
