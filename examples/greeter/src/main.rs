//! `greeter`: the example micro service. Every option is a flag or `MICRO_*`
//! environment variable; `greeter --help` lists them. The greeting word is the
//! config value `greeter.greeting`: from the `--config_file`, the `--config etcd`
//! store or `GREETER_GREETING`, changed live.

use futures_util::StreamExt;
use greeter::{Greeter, GreeterServer, GREETING_KEY, HELLO_TOPIC, SERVICE_NAME};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A micro error's detail is the readable part; anything else as it is.
            match e.downcast_ref::<micro::Error>() {
                Some(err) => eprintln!("greeter: {}", err.detail()),
                None => eprintln!("greeter: {e}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), micro::BoxError> {
    tracing_subscriber::fmt()
        // Colours only for a person at a terminal, not for logs read by programs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let service = micro::Service::builder()
        .name(SERVICE_NAME)
        .about("The example micro service: Greeter.Hello and Greeter.Stream; announces each greeting on greeter.hello")
        .parse_args()
        .build()?;
    // Loaded now rather than when serving starts, to say which word is in use.
    let config = service.config();
    config.load().await?;
    let greeter = Greeter::default()
        .with_config(config.clone())
        .with_publisher(service.publisher(HELLO_TOPIC));
    tracing::info!(greeting = %greeter.greeting(), sources = ?config.sources(), "greeting word ({GREETING_KEY})");
    let mut changes = config.watch(GREETING_KEY);
    tokio::spawn(async move {
        while let Some(value) = changes.next().await {
            tracing::info!(greeting = %value, "greeting word changed ({GREETING_KEY})");
        }
    });
    service.handler(GreeterServer::new(greeter)).run().await
}
