//! `micro`: the command line of micro. A thin `main`: parse, run, print errors.

mod call;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// micro: the simplest way to build microservices.
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
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MICRO_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Call(args) => call::call(args).await,
        Command::Stream(args) => call::stream(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
