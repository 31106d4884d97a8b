//! `greeter`: the example micro service. Every option is a flag or `MICRO_*`
//! environment variable; `greeter --help` lists them.

use greeter::{Greeter, GreeterServer, SERVICE_NAME};

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
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    micro::Service::builder()
        .name(SERVICE_NAME)
        .about("The example micro service: Greeter.Hello and Greeter.Stream")
        .handler(GreeterServer::new(Greeter::default()))
        .parse_args()
        .build()?
        .run()
        .await
}
