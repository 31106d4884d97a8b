//! `subscriber`: counts the `greeter.hello` events the greeter publishes on each
//! call, and logs each one. Run it next to `greeter`, then call the greeter.
//!
//! Run several with `--queue counters` and each event is counted by one of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use greeter::proto::HelloEvent;
use micro::broker::{Event, SubscribeOptions};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        // Colours only for a person at a terminal, not for logs read by programs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<micro::Error>() {
                Some(err) => eprintln!("subscriber: {}", err.detail()),
                None => eprintln!("subscriber: {e}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), micro::BoxError> {
    // `--queue NAME` makes instances share the events instead of each getting all.
    let mut args: Vec<String> = std::env::args().collect();
    let queue = match args.iter().position(|a| a == "--queue") {
        Some(i) if i + 1 < args.len() => {
            let q = args.remove(i + 1);
            args.remove(i);
            Some(q)
        }
        _ => None,
    };
    let service = micro::Service::builder()
        .name("subscriber")
        .about("Counts greeter.hello events. Extra flag: --queue NAME to share events with other instances")
        .parse_args_from(args)
        .build()?;
    let count = Arc::new(AtomicU64::new(0));
    let options = match queue {
        Some(q) => SubscribeOptions::default().queue(q),
        None => SubscribeOptions::default(),
    };
    service
        .subscribe_with(
            greeter::HELLO_TOPIC,
            options,
            move |event: Event<HelloEvent>| {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                async move {
                    tracing::info!(
                        count = n,
                        id = event.id().unwrap_or("-"),
                        from = event.from_service().unwrap_or("-"),
                        name = %event.message.name,
                        "{}",
                        event.message.message
                    );
                    Ok(())
                }
            },
        )
        .run()
        .await
}
