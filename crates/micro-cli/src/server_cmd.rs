//! `micro proxy` and `micro server`: the proxy's API (and, for `micro server`, the
//! ports of the API gateway and the dashboard) on this machine.
//!
//! Both keep config in a [`ConfigDb`] under `--data_dir`, use the registry and
//! broker `--registry` / `--broker` name (the embedded defaults, or etcd / NATS),
//! log where each part listens, and stop gracefully on SIGINT / SIGTERM.
//!
//! Security: they refuse to listen on an address that is not loopback unless the
//! `auth` wrapper is on (`--wrappers auth --wrapper auth.KEY=VALUE`, applied to
//! every API call) or `--insecure` says to serve without it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use micro::options::{BrokerArgs, PartialOptions, RegistryArgs, ServiceOptions};
use micro::registry::Ownership;
use micro::wrapper::auth::Auth;
use micro::wrapper::{Settings, WrapperContext};
use micro_cli::api::routes::RoutesWatcher;
use micro_cli::api::target::Cors;
use micro_cli::api::{Gateway, GatewayOptions};
use micro_cli::proxy::store::ConfigDb;
use micro_cli::proxy::{Proxy, ProxyOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Where the proxy listens by default.
pub const DEFAULT_PROXY_ADDRESS: &str = "127.0.0.1:8081";
/// Where the API gateway of `micro server` listens by default.
pub const DEFAULT_API_ADDRESS: &str = "127.0.0.1:8080";
/// Where the web dashboard of `micro server` listens by default.
pub const DEFAULT_WEB_ADDRESS: &str = "127.0.0.1:8082";

/// The options `micro proxy` and `micro server` share.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct RunArgs {
    /// Serve on an address that is not loopback without the auth wrapper: anyone
    /// who reaches it can call every service and change config
    #[arg(long, env = "MICRO_INSECURE")]
    insecure: bool,

    /// Names of middleware to wrap every API call in, comma-separated; `auth`
    /// makes callers show a token [env: MICRO_WRAPPERS]
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    wrappers: Vec<String>,

    /// A setting of a wrapper, repeatable: --wrapper auth.secret_file=/run/secret
    /// [env: MICRO_WRAPPER_<NAME>_<KEY>]
    #[arg(long, value_name = "NAME.KEY=VALUE")]
    wrapper: Vec<String>,

    /// How long a graceful stop waits for calls in flight
    /// [env: MICRO_SERVER_DRAIN_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = micro::options::parse_duration)]
    server_drain_timeout: Option<Duration>,

    #[command(flatten)]
    registry: RegistryArgs,

    #[command(flatten)]
    broker: BrokerArgs,
}

/// Where the proxy listens and keeps its config database.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ProxyPartArgs {
    /// Address the proxy (the gRPC API, also as JSON over HTTP) listens on
    #[arg(
        long,
        env = "MICRO_PROXY_ADDRESS",
        value_name = "HOST:PORT",
        default_value = DEFAULT_PROXY_ADDRESS,
        value_parser = micro::options::parse_address
    )]
    proxy_address: String,

    /// Directory of the config database [default: $XDG_DATA_HOME/micro, else
    /// ~/.local/share/micro]
    #[arg(long, env = "MICRO_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// `micro proxy`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ProxyArgs {
    #[command(flatten)]
    proxy: ProxyPartArgs,

    #[command(flatten)]
    run: RunArgs,
}

/// The API gateway's own options (`micro api`, and the gateway of `micro server`).
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct GatewayArgs {
    /// Services are registered as NAMESPACE.NAME and reached as /NAME/METHOD
    #[arg(long, env = "MICRO_API_NAMESPACE", value_name = "NAMESPACE")]
    namespace: Option<String>,

    /// Serve POST /rpc ({"service", "endpoint", "request", "address"}): lets any
    /// caller call any endpoint of any service, so it is off by default
    #[arg(long, env = "MICRO_API_ENABLE_RPC")]
    enable_rpc: bool,

    /// Origins allowed to call the gateway from a browser (CORS), comma-separated,
    /// or * for any; CORS is off without it
    #[arg(
        long,
        env = "MICRO_API_CORS_ORIGINS",
        value_name = "ORIGIN,...",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,

    /// Serve HTTPS with this PEM certificate chain (with --tls_key_file)
    #[arg(
        long,
        env = "MICRO_API_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    tls_cert_file: Option<PathBuf>,

    /// The PEM private key of --tls_cert_file
    #[arg(
        long,
        env = "MICRO_API_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    tls_key_file: Option<PathBuf>,

    /// Threads serving the gateway's connections; each runs its connections and
    /// their calls to services on one core (default: one per core)
    #[arg(long = "api_workers", env = "MICRO_API_WORKERS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    api_workers: Option<u16>,
}

impl GatewayArgs {
    fn options(&self, service: &ServiceOptions) -> GatewayOptions {
        let origins: Vec<String> = self
            .cors_origins
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        GatewayOptions {
            namespace: self.namespace.clone().filter(|n| !n.is_empty()),
            enable_rpc: self.enable_rpc,
            call_timeout: service.client_request_timeout,
            max_body: service.server_max_body,
            cors: (!origins.is_empty()).then(|| Cors {
                origins,
                ..Cors::default()
            }),
            drain_timeout: service.server_drain_timeout,
            // MICRO_SERVER_READ_TIMEOUT bounds slow clients, as it does for services.
            body_timeout: service.server_read_timeout,
            header_timeout: service
                .server_read_timeout
                .min(GatewayOptions::default().header_timeout),
            workers: self
                .api_workers
                .map_or_else(|| GatewayOptions::default().workers, usize::from),
            ..GatewayOptions::default()
        }
    }
}

/// `micro api`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ApiArgs {
    /// Address the API gateway listens on
    #[arg(
        long,
        env = "MICRO_API_ADDRESS",
        value_name = "HOST:PORT",
        default_value = DEFAULT_API_ADDRESS,
        value_parser = micro::options::parse_address
    )]
    address: String,

    /// A routes file (YAML or TOML) routing paths to services, endpoints and
    /// handlers; reloaded when it changes (see docs/api.md)
    #[arg(long, env = "MICRO_API_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    gateway: GatewayArgs,

    #[command(flatten)]
    run: RunArgs,
}

/// `micro server`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ServerArgs {
    /// Address the API gateway listens on (it answers 503 until the gateway
    /// arrives in a later version)
    #[arg(
        long,
        env = "MICRO_API_ADDRESS",
        value_name = "HOST:PORT",
        default_value = DEFAULT_API_ADDRESS,
        value_parser = micro::options::parse_address
    )]
    api_address: String,

    /// Address the web dashboard listens on (a page that says it arrives in a
    /// later version)
    #[arg(
        long,
        env = "MICRO_WEB_ADDRESS",
        value_name = "HOST:PORT",
        default_value = DEFAULT_WEB_ADDRESS,
        value_parser = micro::options::parse_address
    )]
    web_address: String,

    /// The API gateway's routes file (YAML or TOML; see docs/api.md), reloaded
    /// when it changes
    #[arg(long, env = "MICRO_API_CONFIG", value_name = "FILE")]
    api_config: Option<PathBuf>,

    #[command(flatten)]
    proxy: ProxyPartArgs,

    #[command(flatten)]
    gateway: GatewayArgs,

    #[command(flatten)]
    run: RunArgs,
}

/// The engines and wrappers the proxy and the gateway work with, resolved from
/// flags, environment and config file.
struct Prepared {
    options: ServiceOptions,
    registry: Arc<dyn micro::registry::Registry>,
    broker: Arc<dyn micro::broker::Broker>,
    wrappers: micro::wrapper::Wrappers,
}

impl Prepared {
    /// The proxy over these engines, with its config database under `data_dir`.
    fn proxy(&self, part: &ProxyPartArgs) -> anyhow::Result<Proxy> {
        let dir = match &part.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()?,
        };
        let db = ConfigDb::open(&dir)?;
        tracing::info!(
            file = %db.file().display(),
            revision = db.revision(),
            "config store opened"
        );
        let proxy_options = ProxyOptions {
            call_timeout: self.options.client_request_timeout,
            max_body: self.options.server_max_body,
            drain_timeout: self.options.server_drain_timeout,
            ..ProxyOptions::default()
        };
        Ok(
            Proxy::new(self.registry.clone(), self.broker.clone(), Arc::new(db))
                .options(proxy_options),
        )
    }

    /// The API gateway over these engines, routing by `routes` (a file) if given;
    /// with the `auth` wrapper on, its settings check every gateway request too.
    fn gateway(&self, args: &GatewayArgs, routes: Option<&PathBuf>) -> anyhow::Result<Gateway> {
        let client = micro::Client::builder()
            .registry(self.registry.clone())
            .request_timeout(self.options.client_request_timeout)
            .max_body(self.options.server_max_body)
            .pool_size(self.options.client_pool_size)
            // HTTP/1.1 JSON in, HTTP/1.1 JSON out: see bench/gateway/README.md.
            .json_over_http1(true)
            .build();
        let mut gateway = Gateway::new(
            client,
            self.registry.clone(),
            self.broker.clone(),
            args.options(&self.options),
        );
        if self.options.wrappers.iter().any(|w| w.trim() == "auth") {
            gateway = gateway.auth(Arc::new(Auth::from_settings(&self.options.wrapper)?));
        }
        if let Some(file) = routes {
            let watcher = RoutesWatcher::start(file)?;
            tracing::info!(
                file = %file.display(),
                routes = watcher.current().len(),
                "routes loaded; the file is watched for changes"
            );
            gateway = gateway.routes(watcher);
        }
        if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
            gateway = gateway.tls(micro_cli::api::tls::acceptor(cert, key)?);
        }
        Ok(gateway)
    }
}

impl RunArgs {
    fn options(&self) -> anyhow::Result<ServiceOptions> {
        let wrapper = if self.wrapper.is_empty() {
            None
        } else {
            Some(Settings::from_flags(&self.wrapper)?)
        };
        let flags = PartialOptions {
            wrappers: (!self.wrappers.is_empty()).then(|| self.wrappers.clone()),
            wrapper,
            server_drain_timeout: self.server_drain_timeout,
            ..PartialOptions::default()
        }
        .or(self.registry.to_partial())
        .or(self.broker.to_partial());
        Ok(ServiceOptions::from_layers(
            flags,
            &PartialOptions::default(),
            &|v| std::env::var(v).ok(),
        )?)
    }

    /// Checks the security rule for each `(flag, address)` and opens the engines.
    fn prepare(&self, binds: &[(&str, &str)]) -> anyhow::Result<Prepared> {
        let options = self.options()?;
        let auth = options.wrappers.iter().any(|w| w.trim() == "auth");
        for (flag, address) in binds {
            check_bind(flag, address, auth, self.insecure)?;
        }
        if options.registry == "service" {
            bail!(
                "--registry service / MICRO_REGISTRY=service names the registry of a micro \
                 server, and this is one: choose its own registry (mdns, local, memory or etcd)"
            );
        }
        if options.broker.as_deref() == Some("service") {
            bail!(
                "--broker service / MICRO_BROKER=service names the broker of a micro server, \
                 and this is one: choose its own broker (http, memory, nats or jetstream)"
            );
        }
        let registry = micro::registry::from_options(&options, Ownership::Process)?;
        let broker = micro::broker::from_name(
            options.broker.as_deref().unwrap_or(micro::broker::DEFAULT),
            &options.broker_address,
            registry.clone(),
        )?;
        tracing::info!(
            registry = %registry.name(),
            broker = %broker.name(),
            "engines"
        );
        let ctx = WrapperContext {
            version: env!("CARGO_PKG_VERSION").into(),
            client_retries: options.client_retries,
            client_request_timeout: options.client_request_timeout,
            ..WrapperContext::new(micro_cli::proxy::DEFAULT_NAME)
        };
        let wrappers = micro::wrapper::from_names(&options.wrappers, &options.wrapper, &ctx)?;
        Ok(Prepared {
            options,
            registry,
            broker,
            wrappers,
        })
    }
}

/// `micro proxy`: serves the proxy until SIGINT / SIGTERM.
pub async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let address = &args.proxy.proxy_address;
    let prepared = args.run.prepare(&[("--proxy_address", address)])?;
    let proxy = prepared.proxy(&args.proxy)?;
    let listener = listen("proxy", "--proxy_address", address).await?;
    let stop = stop_on_signal();
    let served = serve_proxy(&prepared, proxy, listener, stop).await;
    disconnect(&prepared).await;
    served
}

/// `micro api`: serves the API gateway until SIGINT / SIGTERM.
pub async fn api(args: ApiArgs) -> anyhow::Result<()> {
    let prepared = args.run.prepare(&[("--address", &args.address)])?;
    let gateway = prepared.gateway(&args.gateway, args.config.as_ref())?;
    let listener = listen("api", "--address", &args.address).await?;
    let stop = stop_on_signal();
    let served = gateway.serve(listener, stopped(stop)).await;
    disconnect(&prepared).await;
    tracing::info!("stopped");
    Ok(served?)
}

/// `micro server`: the proxy, plus the ports of the API gateway and the web
/// dashboard, until SIGINT / SIGTERM.
pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let proxy_address = &args.proxy.proxy_address;
    let prepared = args.run.prepare(&[
        ("--proxy_address", proxy_address),
        ("--api_address", &args.api_address),
        ("--web_address", &args.web_address),
    ])?;
    let proxy = prepared.proxy(&args.proxy)?;
    let gateway = prepared.gateway(&args.gateway, args.api_config.as_ref())?;
    let proxy_listener = listen("proxy", "--proxy_address", proxy_address).await?;
    let api = listen("api", "--api_address", &args.api_address).await?;
    let web = listen("web", "--web_address", &args.web_address).await?;
    let stop = stop_on_signal();
    let api = tokio::spawn(gateway.serve(api, stopped(stop.clone())));
    let web = tokio::spawn(placeholder(web, Placeholder::Web, stop.clone()));
    let served = serve_proxy(&prepared, proxy, proxy_listener, stop).await;
    if let Ok(Err(e)) = api.await {
        tracing::warn!(error = %e, "the API gateway stopped with an error");
    }
    let _ = web.await;
    disconnect(&prepared).await;
    tracing::info!("stopped");
    served
}

async fn serve_proxy(
    prepared: &Prepared,
    proxy: Proxy,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut server = proxy.server();
    for wrapper in prepared.wrappers.handler_wrappers() {
        server = server.wrap(wrapper.clone());
    }
    let names = prepared.wrappers.handler_names();
    if !names.is_empty() {
        tracing::info!(wrappers = %names.join(","), "every API call is wrapped");
    }
    // At the stop, end the watch and subscribe streams too: they never finish by
    // themselves, and would hold the drain to its timeout.
    let stopping = proxy.parts().stopping.clone();
    let shutdown = async move {
        stopped(stop).await;
        stopping.stop();
    };
    server.serve(listener, shutdown).await?;
    Ok(())
}

async fn disconnect(prepared: &Prepared) {
    if let Err(e) = prepared.broker.disconnect().await {
        tracing::warn!(error = %e, "the broker did not disconnect cleanly");
    }
}

/// A receiver that turns true once SIGINT or SIGTERM arrives.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        micro::shutdown_signal().await;
        tracing::info!("stopping: finishing the calls in flight");
        let _ = tx.send(true);
    });
    rx
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn listen(part: &str, flag: &str, address: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen on {address} ({flag}): is another micro server running? \
             stop it, or pick another address with {flag}"
        )
    })?;
    let local = listener.local_addr()?;
    let what = match part {
        "proxy" => "the gRPC API, also JSON over HTTP",
        "api" => "the API gateway: HTTP to services",
        _ => "a page that says the dashboard arrives in a later version",
    };
    tracing::info!("{part} listening on {local} ({what})");
    Ok(listener)
}

/// Refuses a bind that is not loopback without auth or `--insecure`.
fn check_bind(flag: &str, address: &str, auth: bool, insecure: bool) -> anyhow::Result<()> {
    if is_loopback(address) || auth {
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            "{flag} {address} is not a loopback address and auth is off (--insecure): \
             anyone who reaches it can call every service and change config"
        );
        return Ok(());
    }
    bail!(
        "refusing to listen on {address} ({flag}): it is not a loopback address, and without \
         auth anyone who reaches it could call every service and change config. Turn on auth \
         with --wrappers auth and its settings (--wrapper auth.secret_file=PATH, or \
         auth.jwks_file, auth.public_key_file, auth.api_keys; or MICRO_WRAPPERS=auth and \
         MICRO_WRAPPER_AUTH_*), or pass --insecure (MICRO_INSECURE=true) to serve without auth"
    )
}

/// Whether `host:port` names a loopback address (`127.0.0.0/8`, `[::1]`, `localhost`).
fn is_loopback(address: &str) -> bool {
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return socket.ip().is_loopback();
    }
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `$XDG_DATA_HOME/micro`, else `~/.local/share/micro` (on macOS
/// `~/Library/Application Support/micro`, on Windows `%APPDATA%\micro`).
fn default_data_dir() -> anyhow::Result<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if cfg!(windows) {
        if let Some(appdata) = var("APPDATA") {
            return Ok(appdata.join("micro"));
        }
    }
    if let Some(xdg) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(xdg.join("micro"));
    }
    if let Some(home) = var("HOME") {
        if cfg!(target_os = "macos") {
            return Ok(home.join("Library/Application Support/micro"));
        }
        return Ok(home.join(".local/share/micro"));
    }
    bail!(
        "cannot tell the user's data directory (no HOME): pass --data_dir DIR or set MICRO_DATA_DIR"
    )
}

/// The parts of `micro server` that later versions fill in.
#[derive(Debug, Clone, Copy)]
enum Placeholder {
    Web,
}

const WEB_PAGE: &str =
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>micro</title></head>\n\
<body><h1>micro server</h1>\n<p>The web dashboard arrives in a later version of micro.</p>\n\
<p>The proxy serves the API of micro now: <code>POST /micro.v1.Registry/ListServices</code> \
with <code>{}</code> on its port (8081 by default).</p>\n</body></html>\n";

/// Answers every HTTP request on `listener` with 503 until `stop`.
async fn placeholder(listener: TcpListener, what: Placeholder, stop: watch::Receiver<bool>) {
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    tokio::spawn(answer(socket, what));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn answer(mut socket: TcpStream, what: Placeholder) {
    // Read the request head (up to 16 KiB, 5 s), then answer and close.
    let mut head = vec![0u8; 16 * 1024];
    let mut len = 0;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while len < head.len() {
            match socket.read(&mut head[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
            if head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let (content_type, body) = match what {
        Placeholder::Web => ("text/html; charset=utf-8", WEB_PAGE.to_string()),
    };
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn loopback_addresses() {
        for a in [
            "127.0.0.1:8081",
            "127.9.9.9:1",
            "[::1]:8081",
            "localhost:8081",
        ] {
            assert!(is_loopback(a), "{a}");
        }
        for a in [
            "0.0.0.0:8081",
            "[::]:8081",
            "10.0.0.1:8081",
            "example.com:80",
        ] {
            assert!(!is_loopback(a), "{a}");
        }
    }

    #[test]
    fn a_public_bind_needs_auth_or_insecure() {
        let err = check_bind("--proxy_address", "0.0.0.0:8081", false, false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--wrappers auth"), "{text}");
        assert!(text.contains("--insecure"), "{text}");
        check_bind("--proxy_address", "0.0.0.0:8081", true, false).unwrap();
        check_bind("--proxy_address", "0.0.0.0:8081", false, true).unwrap();
        check_bind("--proxy_address", "127.0.0.1:8081", false, false).unwrap();
    }
}
