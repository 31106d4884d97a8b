//! The service: a server, a client and a registration, with a lifecycle.
//!
//! Starting runs the before-start hooks, listens, registers the node (and keeps
//! re-registering every `register_interval` with `register_ttl`), then runs the
//! after-start hooks. Stopping — on SIGINT, SIGTERM or SIGQUIT for [`Service::run`],
//! or when the shutdown future completes for [`Service::serve`] — runs the
//! before-stop hooks, deregisters first (so callers stop choosing this node), then
//! drains in-flight requests for at most the drain timeout, then runs the after-stop
//! hooks.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::net::TcpListener;

use crate::broker::{self, Broker, Publisher, SubscribeOptions};
use crate::client::Client;
use crate::config::Config;
use crate::options::{OptionsError, PartialOptions, ServiceOptions};
use crate::registry::{self, Node, RegisterOptions, Registry};
use crate::selector::Strategy;
use crate::server::{Handler, HandlerDesc, Server};
use crate::wrapper::{self, WrapperContext, Wrappers};
use crate::{BoxError, Error, Metadata};

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), BoxError>> + Send>;

const ID: &str = "micro.service";

/// A micro service: build one with [`Service::builder`].
pub struct Service {
    options: ServiceOptions,
    handlers: Vec<HandlerDesc>,
    subscribers: Vec<Subscriber>,
    registry: Arc<dyn Registry>,
    broker: Arc<dyn Broker>,
    client: Client,
    wrappers: Wrappers,
    config: Config,
    /// Where changes to `micro.wrapper` in the live config go, for wrappers that
    /// can be reconfigured while the service runs (`chaos`).
    wrapper_updates: WrapperUpdates,
    hooks: Hooks,
}

/// The wrapper settings the service started with, and the channel that carries
/// them, updated by the live config, to the wrappers.
struct WrapperUpdates {
    startup: wrapper::Settings,
    sender: tokio::sync::watch::Sender<wrapper::Settings>,
}

impl WrapperUpdates {
    /// Follows `micro.wrapper` in `config` until the returned task is aborted: each
    /// change is layered over the startup settings and sent on. A change that is
    /// not a table of settings is logged and skipped.
    fn follow(self, config: &Config) -> tokio::task::JoinHandle<()> {
        use futures_util::StreamExt;
        let mut changes = config.watch(WRAPPER_CONFIG_PATH);
        tokio::spawn(async move {
            while let Some(value) = changes.next().await {
                let live = match value {
                    serde_json::Value::Null => Ok(wrapper::Settings::default()),
                    table => wrapper::Settings::from_file_table(&table),
                };
                match live {
                    Ok(live) => {
                        let _ = self.sender.send(live.or(self.startup.clone()));
                    }
                    Err(e) => tracing::warn!(
                        path = WRAPPER_CONFIG_PATH,
                        error = %e,
                        "ignoring a config change that is not wrapper settings"
                    ),
                }
            }
        })
    }
}

/// Stops a background task when the service stops, on every path out of `serve`.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the wrapper settings live in a service's config.
const WRAPPER_CONFIG_PATH: &str = "micro.wrapper";

/// A subscription the service opens when it starts.
struct Subscriber {
    topic: String,
    options: SubscribeOptions,
    handler: broker::Handler,
    /// The message type's name, for the registry record.
    message_type: &'static str,
}

#[derive(Default)]
struct Hooks {
    before_start: Vec<Hook>,
    after_start: Vec<Hook>,
    before_stop: Vec<Hook>,
    after_stop: Vec<Hook>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.options.server_name)
            .field("version", &self.options.server_version)
            .field("registry", &self.registry.name())
            .finish()
    }
}

/// Builds a [`Service`]. Values set here are code defaults: flags, environment
/// variables and the config file override them, in that order, when
/// [`parse_args`](Self::parse_args) (or [`args`](Self::args)) is used.
///
/// ```no_run
/// # async fn demo() -> Result<(), micro::BoxError> {
/// use std::time::Duration;
///
/// let service = micro::Service::builder()
///     .name("greeter")
///     .version("1.0.0")
///     .address("127.0.0.1:9090")
///     .metadata("region", "eu")
///     .register_ttl(Duration::from_secs(30))
///     .before_start(|| async { println!("starting"); Ok(()) })
///     // .handler(GreeterServer::new(MyGreeter))
///     .parse_args()
///     .build()?;
/// service.run().await
/// # }
/// ```
pub struct ServiceBuilder {
    code: PartialOptions,
    metadata: Metadata,
    args: Option<(Vec<OsString>, bool)>,
    about: Option<String>,
    registry: Option<Arc<dyn Registry>>,
    broker: Option<Arc<dyn Broker>>,
    config: Option<Config>,
    handlers: Vec<HandlerDesc>,
    wrappers: Wrappers,
    hooks: Hooks,
}

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("code", &self.code)
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

impl ServiceBuilder {
    /// The service name (`greeter`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.code.server_name = Some(name.into());
        self
    }
    /// The version (default `latest`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.code.server_version = Some(version.into());
        self
    }
    /// Where to listen, `host:port` (default `0.0.0.0:0`, any free port).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.code.server_address = Some(address.into());
        self
    }
    /// The address to register, when callers reach this node at another one.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.code.server_advertise = Some(address.into());
        self
    }
    /// The node id (default `<name>-<uuid>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.code.server_id = Some(id.into());
        self
    }
    /// Adds node metadata (merged under `MICRO_SERVER_METADATA`).
    pub fn metadata(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }
    /// How long a registration lives without a refresh (default 90 s).
    pub fn register_ttl(mut self, ttl: Duration) -> Self {
        self.code.register_ttl = Some(ttl);
        self
    }
    /// How often to refresh the registration (default 30 s).
    pub fn register_interval(mut self, interval: Duration) -> Self {
        self.code.register_interval = Some(interval);
        self
    }
    /// How long a graceful stop waits for in-flight requests (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.code.server_drain_timeout = Some(timeout);
        self
    }
    /// Largest request message in bytes (default 4 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.code.server_max_body = Some(bytes);
        self
    }
    /// The registry to use, instead of the one `--registry` names.
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }
    /// The broker to use, instead of the one `--broker` names.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }
    /// The config to use instead of the default one (the `--config_file`, the
    /// `--config` store, then `<NAME>_*` environment variables: see
    /// [`config::for_service`](crate::config::for_service)). Loaded when the
    /// service starts unless already loaded.
    ///
    /// ```
    /// use micro::config::{Config, MemorySource};
    ///
    /// let defaults = MemorySource::new("defaults").with(serde_json::json!({"greeter": {"greeting": "Hi"}}));
    /// let service = micro::Service::builder()
    ///     .name("greeter")
    ///     .registry(std::sync::Arc::new(micro::registry::MemoryRegistry::new()))
    ///     .config(Config::builder().source(defaults).build())
    ///     .build()?;
    /// assert_eq!(service.config().sources(), ["memory:defaults"]);
    /// # Ok::<(), micro::Error>(())
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }
    /// Adds a handler (a generated `XxxServer`).
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handlers.push(handler.into_desc());
        self
    }
    /// Adds middleware written in code (see [`crate::wrapper`]). They sit inside
    /// the wrappers named by `MICRO_WRAPPERS`.
    pub fn wrap(mut self, wrappers: Wrappers) -> Self {
        self.wrappers = self.wrappers.and(wrappers);
        self
    }
    /// The text `--help` shows under the name.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }
    /// Runs before the server starts listening; an error aborts the start.
    pub fn before_start<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hooks
            .before_start
            .push(Box::new(move || hook().boxed()));
        self
    }
    /// Runs once the service listens and is registered.
    pub fn after_start<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hooks
            .after_start
            .push(Box::new(move || hook().boxed()));
        self
    }
    /// Runs when a stop begins, before deregistering.
    pub fn before_stop<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hooks
            .before_stop
            .push(Box::new(move || hook().boxed()));
        self
    }
    /// Runs after the service deregistered and drained.
    pub fn after_stop<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hooks.after_stop.push(Box::new(move || hook().boxed()));
        self
    }

    /// Reads options from the process's command line, environment and config file
    /// when building. `--help` prints every option and exits; a bad flag prints the
    /// problem and exits with status 2, as command-line programs do.
    pub fn parse_args(mut self) -> Self {
        self.args = Some((std::env::args_os().collect(), true));
        self
    }

    /// Like [`parse_args`](Self::parse_args) with `args` instead of the process's
    /// command line: for programs that take flags of their own and pass the rest.
    pub fn parse_args_from<I, T>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        self.args = Some((args.into_iter().map(Into::into).collect(), true));
        self
    }

    /// Reads options from `args` (the first being the program name), the process
    /// environment and the config file when building; errors, `--help` included,
    /// come back from [`build`](Self::build).
    pub fn args<I, T>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        self.args = Some((args.into_iter().map(Into::into).collect(), false));
        self
    }

    fn resolve_options(&mut self) -> Result<ServiceOptions, OptionsError> {
        let name = self.code.server_name.clone().unwrap_or_default();
        let mut command = clap::Command::new(if name.is_empty() {
            "service".to_string()
        } else {
            name
        });
        if let Some(about) = &self.about {
            command = command.about(about.clone());
        }
        let mut options = match self.args.take() {
            Some((args, exit_on_error)) => {
                let loaded = ServiceOptions::load(command, &self.code, args);
                if exit_on_error {
                    loaded.map_err(OptionsError::exit_if_clap)?
                } else {
                    loaded?
                }
            }
            None => ServiceOptions::from_layers(PartialOptions::default(), &self.code, &|_| None)?,
        };
        // Code metadata sits under the user's: the user's keys win.
        let mut metadata = self.metadata.clone();
        metadata.merge(&options.server_metadata);
        options.server_metadata = metadata;
        Ok(options)
    }

    /// The service, ready to [`run`](Service::run).
    pub fn build(mut self) -> Result<Service, Error> {
        let options = self
            .resolve_options()
            .map_err(|e| Error::bad_request(ID, e.to_string()))?;
        if options.register_interval.is_zero() || options.register_interval >= options.register_ttl
        {
            return Err(Error::bad_request(
                ID,
                format!(
                    "register_interval ({}) must be above zero and below register_ttl ({}), \
                     or the registration lapses between renewals",
                    crate::options::format_duration(options.register_interval),
                    crate::options::format_duration(options.register_ttl)
                ),
            ));
        }
        if options.server_name.is_empty() {
            return Err(Error::bad_request(
                ID,
                "the service has no name: call .name(..) or pass --server_name",
            ));
        }
        let registry = match self.registry.take() {
            Some(r) => r,
            None => registry::from_options(&options, registry::Ownership::Process)?,
        };
        let broker = match self.broker.take() {
            Some(b) => b,
            None => broker::from_name(
                options.broker.as_deref().unwrap_or(broker::DEFAULT),
                &options.broker_address,
                registry.clone(),
            )?,
        };
        let config = match self.config.take() {
            Some(c) => c,
            None => crate::config::for_service(&options)?,
        };
        let strategy: Strategy = options.selector.parse()?;
        let ctx = WrapperContext {
            service: options.server_name.clone(),
            version: options.server_version.clone(),
            client_retries: options.client_retries,
            client_request_timeout: options.client_request_timeout,
            updates: None,
        };
        let (sender, updates) = tokio::sync::watch::channel(options.wrapper.clone());
        let wrapper_updates = WrapperUpdates {
            startup: options.wrapper.clone(),
            sender,
        };
        let ctx = WrapperContext {
            updates: Some(updates),
            ..ctx
        };
        let wrappers =
            wrapper::from_names(&options.wrappers, &options.wrapper, &ctx)?.and(self.wrappers);
        let mut client = Client::builder()
            .from_service(options.server_name.clone())
            .registry(registry.clone())
            .strategy(strategy)
            .request_timeout(
                wrappers
                    .request_timeout
                    .unwrap_or(options.client_request_timeout),
            )
            .retries(options.client_retries)
            .pool_size(options.client_pool_size)
            .dial_timeout(options.client_dial_timeout)
            .max_body(options.server_max_body);
        if let Some(policy) = &wrappers.retry {
            client = client.retry(policy.clone());
        }
        // MICRO_PROXY: every call goes through the micro proxy there.
        if let Some(proxy) = &options.proxy {
            client = client.proxy(proxy.clone());
        }
        for call in &wrappers.call {
            client = client.wrap(call.clone());
        }
        let client = client.build();
        Ok(Service {
            options,
            handlers: self.handlers,
            subscribers: Vec::new(),
            registry,
            broker,
            client,
            wrappers,
            config,
            wrapper_updates,
            hooks: self.hooks,
        })
    }
}

impl Service {
    /// A builder with nothing set.
    pub fn builder() -> ServiceBuilder {
        ServiceBuilder {
            code: PartialOptions::default(),
            metadata: Metadata::new(),
            args: None,
            about: None,
            registry: None,
            broker: None,
            config: None,
            handlers: Vec::new(),
            wrappers: Wrappers::new(),
            hooks: Hooks::default(),
        }
    }

    /// The resolved options.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }
    /// The service name.
    pub fn name(&self) -> &str {
        &self.options.server_name
    }
    /// A client that calls other services as this one (`Micro-From-Service`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }
    /// The service's config (cheap to clone). It is loaded when the service starts
    /// (before the before-start hooks); until then every path reads as unset
    /// unless it was loaded earlier with [`Config::load`].
    pub fn config(&self) -> Config {
        self.config.clone()
    }
    /// The registry the service registers in.
    pub fn registry(&self) -> Arc<dyn Registry> {
        self.registry.clone()
    }

    /// The broker the service publishes and subscribes with.
    pub fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    /// A publisher of `topic` that names this service as the sender.
    pub fn publisher(&self, topic: impl Into<String>) -> Publisher {
        Publisher::new(topic, self.broker.clone())
            .from_service(self.options.server_name.clone())
            .wrap(&self.wrappers.publish)
    }

    /// Adds a handler after building, e.g. one that holds a [`Publisher`] made by
    /// [`Service::publisher`].
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handlers.push(handler.into_desc());
        self
    }

    /// Subscribes `f` to `topic` while the service runs: every instance of the
    /// service receives every message. Messages are decoded as `M` by their
    /// content type; one that cannot be decoded goes to `<topic>.dead`.
    ///
    /// ```no_run
    /// # fn demo(service: micro::Service) -> micro::Service {
    /// use micro::proto::debug::v1::HealthResponse;
    ///
    /// service.subscribe("health.changed", |event: micro::broker::Event<HealthResponse>| async move {
    ///     println!("{} from {:?}", event.message.status, event.from_service());
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn subscribe<M, F, Fut>(self, topic: impl Into<String>, f: F) -> Self
    where
        M: crate::Message,
        F: Fn(broker::Event<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.subscribe_with(topic, SubscribeOptions::default(), f)
    }

    /// [`subscribe`](Self::subscribe) with options: a queue group (one instance
    /// of the group gets each message), manual acks, a durable name.
    pub fn subscribe_with<M, F, Fut>(
        mut self,
        topic: impl Into<String>,
        options: SubscribeOptions,
        f: F,
    ) -> Self
    where
        M: crate::Message,
        F: Fn(broker::Event<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let handler = broker::typed_handler::<M, F, Fut>(self.broker.clone(), f);
        let message_type = std::any::type_name::<M>().rsplit("::").next().unwrap_or("");
        self.subscribers.push(Subscriber {
            topic: topic.into(),
            options,
            handler,
            message_type,
        });
        self
    }

    /// Listens on the configured address and serves until SIGINT, SIGTERM or
    /// SIGQUIT, then stops gracefully.
    pub async fn run(self) -> Result<(), BoxError> {
        let listener = TcpListener::bind(&self.options.server_address)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.options.server_address))?;
        self.serve(listener, shutdown_signal()).await?;
        Ok(())
    }

    /// Serves on `listener` until `shutdown` completes, then stops gracefully.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BoxError> {
        let Service {
            options,
            handlers,
            subscribers,
            registry,
            broker,
            client: _,
            wrappers,
            config,
            wrapper_updates,
            mut hooks,
        } = self;
        if !config.is_loaded() {
            config.load().await?;
        }
        let _following = AbortOnDrop(wrapper_updates.follow(&config));
        for hook in hooks.before_start.drain(..) {
            hook().await?;
        }
        let local = listener.local_addr()?;
        let mut server = Server::new(options.server_name.clone())
            .version(options.server_version.clone())
            .max_body(options.server_max_body)
            .read_timeout(options.server_read_timeout)
            .drain_timeout(options.server_drain_timeout);
        for handler in handlers {
            server = server.handler(handler);
        }
        for wrapper in &wrappers.handler {
            server = server.wrap(wrapper.clone());
        }
        for route in &wrappers.routes {
            server = server.route(route.clone());
        }
        let mut endpoints = server.endpoints()?;
        endpoints.extend(subscribers.iter().map(subscriber_endpoint));
        let record = registry::Service {
            name: options.server_name.clone(),
            version: options.server_version.clone(),
            metadata: BTreeMap::new(),
            endpoints,
            nodes: vec![Node {
                id: options
                    .server_id
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}", options.server_name, uuid::Uuid::new_v4())),
                address: advertise_address(&options, local),
                metadata: node_metadata(&options, registry.name()),
            }],
        };

        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let server_task = tokio::spawn(server.serve(listener, async move {
            let _ = server_stopped.await;
        }));
        // Subscribe before registering: once others can find us, we are listening.
        let mut subscriptions = Vec::new();
        let subscribed = async {
            broker.connect().await?;
            for s in subscribers {
                let handler = wrapper::wrap_subscriber(s.handler, &wrappers.subscriber);
                let sub = broker
                    .subscribe(&s.topic, handler, s.options)
                    .await
                    .map_err(|e| format!("subscribing to {}: {e}", s.topic))?;
                subscriptions.push(sub);
            }
            Ok::<(), BoxError>(())
        };
        if let Err(e) = subscribed.await {
            let _ = broker.disconnect().await;
            let _ = stop_server.send(());
            let _ = server_task.await;
            return Err(e);
        }
        let ttl = RegisterOptions {
            ttl: options.register_ttl,
        };
        if let Err(e) = registry.register(&record, ttl).await {
            let _ = broker.disconnect().await;
            let _ = stop_server.send(());
            let _ = server_task.await;
            return Err(format!(
                "registering {} in the {} registry: {e}",
                record.name,
                registry.name()
            )
            .into());
        }
        tracing::info!(
            service = %record.name,
            version = %record.version,
            address = %record.nodes[0].address,
            listen = %local,
            registry = registry.name(),
            "service started"
        );
        for hook in hooks.after_start.drain(..) {
            hook().await?;
        }

        // Keep the registration alive until asked to stop.
        let refresh = async {
            let mut ticker = tokio::time::interval(options.register_interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = registry.register(&record, ttl).await {
                    tracing::warn!(error = %e, "refreshing the registration failed; will retry");
                }
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = refresh => {}
        }

        tracing::info!(service = %record.name, "stopping");
        let mut first_error: Option<BoxError> = None;
        for hook in hooks.before_stop.drain(..) {
            if let Err(e) = hook().await {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = registry.deregister(&record).await {
            tracing::warn!(error = %e, "deregistering failed; the node will expire after its TTL");
        }
        for sub in subscriptions {
            let topic = sub.topic().to_string();
            if let Err(e) = sub.unsubscribe().await {
                tracing::warn!(%topic, error = %e, "unsubscribing failed");
            }
        }
        let _ = stop_server.send(());
        match server_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e.into());
            }
            Err(e) => {
                first_error.get_or_insert(Box::new(e));
            }
        }
        if let Err(e) = broker.disconnect().await {
            tracing::warn!(error = %e, "disconnecting from the broker failed");
        }
        for hook in hooks.after_stop.drain(..) {
            if let Err(e) = hook().await {
                first_error.get_or_insert(e);
            }
        }
        tracing::info!(service = %record.name, "stopped");
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The registry endpoint of a subscriber: named by its topic, with metadata
/// `topic`, `queue` and `subscriber`.
fn subscriber_endpoint(s: &Subscriber) -> registry::Endpoint {
    let mut metadata = BTreeMap::from([
        ("topic".to_string(), s.topic.clone()),
        ("subscriber".to_string(), "true".to_string()),
    ]);
    if let Some(q) = &s.options.queue {
        metadata.insert("queue".into(), q.clone());
    }
    registry::Endpoint {
        name: s.topic.clone(),
        request: registry::Type {
            name: s.message_type.to_string(),
            schema: serde_json::Value::Null,
        },
        response: registry::Type::default(),
        metadata,
    }
}

/// The address other processes reach this node at: the advertised one if set, the
/// bound one if it is a specific IP, else loopback (a wildcard bind is reachable
/// there from this machine).
fn advertise_address(options: &ServiceOptions, local: SocketAddr) -> String {
    if let Some(advertise) = &options.server_advertise {
        return advertise.clone();
    }
    if local.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if local.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        return SocketAddr::new(loopback, local.port()).to_string();
    }
    local.to_string()
}

fn node_metadata(options: &ServiceOptions, registry: &str) -> BTreeMap<String, String> {
    let mut md: BTreeMap<String, String> = options
        .server_metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    md.insert(
        registry::PROTOCOL_KEY.into(),
        registry::PROTOCOL_GRPC.into(),
    );
    md.insert("server".into(), "micro".into());
    md.insert("registry".into(), registry.into());
    md
}

/// Completes on SIGINT, SIGTERM or SIGQUIT: what [`Service::run`] waits for, for
/// programs that run something else until asked to stop.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut quit = signal(SignalKind::quit()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
            _ = async { match quit.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
