//! `greeter`: the example micro service. Every option is a flag or `MICRO_*`
//! environment variable; `greeter --help` lists them. The greeting word is the
//! config value `greeter.greeting`: from the `--config_file`, the `--config etcd`
//! store or `GREETER_GREETING`, changed live.

use greeter::{Greeter, GreeterServer, HELLO_TOPIC, SERVICE_NAME};

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
    let greeter = Greeter::default()
        .with_config(service.config())
        .with_publisher(service.publisher(HELLO_TOPIC));
    service.handler(GreeterServer::new(greeter)).run().await
}
