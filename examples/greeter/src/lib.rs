//! The greeter: micro's example service.
//!
//! `Greeter.Hello` answers `{"name":"John"}` with `{"message":"Hello John"}`;
//! `Greeter.Stream` sends `count` greetings. The greeting word is the config value
//! `greeter.greeting` (default `Hello`), read from the service's config on every
//! request, so a change in the config file, etcd or the environment takes effect
//! without a restart. With a publisher, every greeting is also
//! announced as a `HelloEvent` on the topic [`HELLO_TOPIC`].

use std::time::Duration;

use futures_util::StreamExt;
use micro::{Error, Request, ResponseStream};

/// The generated messages, server trait and client of `proto/greeter.proto`.
pub mod proto {
    micro::include_proto!("greeter");
}

pub use proto::greeter_client::GreeterClient;
pub use proto::greeter_server::GreeterServer;
use proto::{HelloEvent, HelloRequest, HelloResponse, StreamRequest, StreamResponse};

/// The topic a `HelloEvent` is published on after each greeting.
pub const HELLO_TOPIC: &str = "greeter.hello";
/// The config path of the greeting word.
pub const GREETING_KEY: &str = "greeter.greeting";
/// The service's name in the registry.
pub const SERVICE_NAME: &str = "greeter";
/// Greetings sent by `Greeter.Stream` when the request does not say.
pub const DEFAULT_STREAM_COUNT: i32 = 3;
/// Most greetings one `Greeter.Stream` call may ask for.
pub const MAX_STREAM_COUNT: i32 = 1000;

/// The greeter's implementation.
#[derive(Debug, Clone)]
pub struct Greeter {
    /// The greeting when the config does not set one.
    greeting: String,
    /// Where `greeter.greeting` is read on each request.
    config: Option<micro::config::Config>,
    /// Pause between streamed greetings.
    interval: Duration,
    /// Announces each greeting on [`HELLO_TOPIC`].
    publisher: Option<micro::broker::Publisher>,
}

impl Default for Greeter {
    fn default() -> Self {
        Greeter::new("Hello")
    }
}

impl Greeter {
    /// A greeter that greets with `greeting` ("Hello").
    pub fn new(greeting: impl Into<String>) -> Self {
        Greeter {
            greeting: greeting.into(),
            config: None,
            interval: Duration::ZERO,
            publisher: None,
        }
    }

    /// Reads the greeting word from `config` (its [`GREETING_KEY`]) on every
    /// request; the word given to [`new`](Self::new) is the default.
    pub fn with_config(mut self, config: micro::config::Config) -> Self {
        self.config = Some(config);
        self
    }

    /// The greeting word now.
    pub fn greeting(&self) -> String {
        match &self.config {
            Some(config) => config
                .get::<String>(GREETING_KEY)
                .unwrap_or_else(|_| self.greeting.clone()),
            None => self.greeting.clone(),
        }
    }

    /// Pauses between streamed greetings (for demos and tests of slow streams).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Announces every greeting with `publisher` (made by `Service::publisher`).
    pub fn with_publisher(mut self, publisher: micro::broker::Publisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    fn greet(&self, name: &str) -> Result<String, Error> {
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::bad_request(SERVICE_NAME, "name is required"));
        }
        Ok(format!("{} {}", self.greeting(), name))
    }
}

impl proto::greeter_server::Greeter for Greeter {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<HelloResponse, Error> {
        let message = self.greet(&request.get_ref().name)?;
        if let Some(publisher) = &self.publisher {
            let event = HelloEvent {
                name: request.get_ref().name.trim().to_string(),
                message: message.clone(),
            };
            // The greeting is the answer; a failed announcement is logged, not
            // turned into a failed call.
            if let Err(e) = publisher.publish(&event).await {
                tracing::warn!(topic = HELLO_TOPIC, error = %e, "announcing a greeting failed");
            }
        }
        Ok(HelloResponse { message })
    }

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<ResponseStream<StreamResponse>, Error> {
        let req = request.into_inner();
        let message = self.greet(&req.name)?;
        let count = match req.count {
            0 => DEFAULT_STREAM_COUNT,
            n if (1..=MAX_STREAM_COUNT).contains(&n) => n,
            n => {
                return Err(Error::bad_request(
                    SERVICE_NAME,
                    format!("count must be between 1 and {MAX_STREAM_COUNT}, got {n}"),
                ))
            }
        };
        let interval = self.interval;
        let greetings = futures_util::stream::iter(1..=count).then(move |sequence| {
            let message = message.clone();
            async move {
                if !interval.is_zero() && sequence > 1 {
                    tokio::time::sleep(interval).await;
                }
                Ok(StreamResponse { message, sequence })
            }
        });
        Ok(greetings.boxed())
    }
}
