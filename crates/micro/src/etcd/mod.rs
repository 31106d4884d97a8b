//! A small etcd client, shared by the etcd registry (`registry::EtcdRegistry`) and
//! the etcd config source (`config::EtcdSource`). Feature `etcd`.
//!
//! It speaks etcd's v3 JSON API: the gRPC gateway every etcd since 3.4 serves on its
//! client port (`POST /v3/kv/range`, `/v3/kv/put`, `/v3/lease/grant`, `/v3/watch`,
//! …, keys and values base64-encoded), so it needs no generated gRPC code and no
//! `protoc` to build. What it adds over plain HTTP:
//!
//! - **Failover**: the endpoints are tried in turn, starting with the last one that
//!   answered; a member that is down, times out or has lost its leader (for
//!   requests that need one) is skipped for the next.
//! - **Pooled connections**: HTTP/1.1 connections are kept alive and reused, with
//!   TCP keep-alive so a vanished member is noticed.
//! - **TLS**: `https://` endpoints, a CA file (else the system's roots), and a
//!   client certificate and key for mutual TLS (rustls on the `ring` provider).
//! - **Username and password**: a token from `/v3/auth/authenticate`, sent as the
//!   `Authorization` header and renewed when etcd says it is invalid or expired.
//! - **Watches that fail loudly**: a watch ends with an error when its member goes
//!   away, stops answering, or loses its leader — never a silent hang.
//!
//! ```no_run
//! # async fn demo() -> Result<(), micro::etcd::EtcdError> {
//! use micro::etcd::EtcdClient;
//!
//! let etcd = EtcdClient::builder(["https://10.0.0.1:2379", "https://10.0.0.2:2379"])
//!     .tls_ca("/etc/etcd/ca.pem")
//!     .tls_identity("/etc/etcd/client.pem", "/etc/etcd/client-key.pem")
//!     .user("micro", "secret")
//!     .build()?;
//! let status = etcd.post("/v3/maintenance/status", &serde_json::json!({})).await?;
//! println!("etcd {}", status["version"]);
//! # Ok(()) }
//! ```

#[doc(hidden)]
pub mod server;
mod transport;
mod watch;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

pub use watch::EtcdWatch;

use transport::Connector;

/// The address tried when none is given.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2379";
/// The port of an endpoint given without one.
const DEFAULT_PORT: u16 = 2379;
/// How long one request to one member may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The header that asks etcd to refuse a request (or end a watch) when the member
/// has no leader: gRPC metadata `hasleader: true` through the JSON gateway.
const REQUIRE_LEADER: (&str, &str) = ("grpc-metadata-hasleader", "true");

/// An etcd cluster reached through its v3 JSON API, with failover across the
/// endpoints, pooled connections, TLS and username/password auth. Cheap to clone;
/// clones share connections and the auth token.
///
/// ```no_run
/// # async fn demo() -> Result<(), micro::etcd::EtcdError> {
/// use micro::etcd::EtcdClient;
/// use serde_json::json;
///
/// // Three members; plain http (no TLS settings given).
/// let etcd = EtcdClient::new(["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"]);
/// let key = micro::etcd::b64("/app/greeting");
/// etcd.post("/v3/kv/put", &json!({"key": key, "value": micro::etcd::b64("Hi")})).await?;
/// let got = etcd.post("/v3/kv/range", &json!({"key": key})).await?;
/// assert_eq!(micro::etcd::unb64(got["kvs"][0]["value"].as_str().unwrap_or("")), "Hi");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<Result<Endpoint, String>>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    http: Client<Connector, Full<Bytes>>,
    credentials: Option<Credentials>,
    token: Mutex<Token>,
    timeout: Duration,
    tls: bool,
}

struct Credentials {
    user: String,
    password: String,
}

#[derive(Clone)]
enum Token {
    /// Not authenticated yet (or the token was found invalid).
    None,
    Some(String),
    /// etcd answered that authentication is not enabled: send no token.
    NotEnabled,
}

#[derive(Debug, Clone)]
struct Endpoint {
    /// `http://host:port` or `https://host:port`.
    base: String,
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<String> = self
            .inner
            .endpoints
            .iter()
            .map(|e| match e {
                Ok(e) => e.base.clone(),
                Err(e) => format!("<invalid: {e}>"),
            })
            .collect();
        f.debug_struct("EtcdClient")
            .field("endpoints", &endpoints)
            .field("tls", &self.inner.tls)
            .field(
                "user",
                &self.inner.credentials.as_ref().map(|c| c.user.as_str()),
            )
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Settings of an [`EtcdClient`]: endpoints, TLS, credentials, timeout.
///
/// ```no_run
/// use std::time::Duration;
/// use micro::etcd::EtcdClient;
///
/// let etcd = EtcdClient::builder(["10.0.0.1:2379"])
///     .tls_ca("ca.pem") // bare host:port endpoints become https://
///     .user("root", std::env::var("ETCD_PASSWORD").unwrap_or_default())
///     .timeout(Duration::from_secs(3))
///     .build()?;
/// # Ok::<(), micro::etcd::EtcdError>(())
/// ```
#[derive(Clone)]
pub struct EtcdClientBuilder {
    endpoints: Vec<String>,
    tls: bool,
    ca: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    credentials: Option<(String, String)>,
    timeout: Duration,
}

impl fmt::Debug for EtcdClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls)
            .field("ca", &self.ca)
            .field("identity", &self.identity)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EtcdClientBuilder {
    /// Uses TLS: endpoints given as bare `host:port` are reached as
    /// `https://host:port` (an explicit `http://` stays plain). Implied by
    /// [`tls_ca`](Self::tls_ca) and [`tls_identity`](Self::tls_identity); without a
    /// CA file, the system's trusted roots check etcd's certificate.
    ///
    /// ```no_run
    /// let etcd = micro::etcd::EtcdClient::builder(["etcd.example.com:2379"]).tls().build()?;
    /// assert_eq!(etcd.endpoints(), ["https://etcd.example.com:2379"]);
    /// # Ok::<(), micro::etcd::EtcdError>(())
    /// ```
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// The PEM file of the CA that signed etcd's certificate (etcd's
    /// `--trusted-ca-file` side of things); turns TLS on.
    ///
    /// ```no_run
    /// let etcd = micro::etcd::EtcdClient::builder(["10.0.0.1:2379"]).tls_ca("ca.pem").build()?;
    /// # Ok::<(), micro::etcd::EtcdError>(())
    /// ```
    pub fn tls_ca(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca_file.into());
        self.tls = true;
        self
    }

    /// A client certificate (chain) and its private key, PEM files, for etcd's
    /// `--client-cert-auth` (mutual TLS); turns TLS on.
    ///
    /// ```no_run
    /// let etcd = micro::etcd::EtcdClient::builder(["10.0.0.1:2379"])
    ///     .tls_ca("ca.pem")
    ///     .tls_identity("client.pem", "client-key.pem")
    ///     .build()?;
    /// # Ok::<(), micro::etcd::EtcdError>(())
    /// ```
    pub fn tls_identity(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.identity = Some((cert_file.into(), key_file.into()));
        self.tls = true;
        self
    }

    /// Authenticates as `user` with `password` (etcd's `auth enable`). The password
    /// is kept only to renew the token, never shown by `Debug` or in errors.
    ///
    /// ```
    /// let etcd = micro::etcd::EtcdClient::builder(["127.0.0.1:2379"]).user("root", "pw").build()?;
    /// assert!(!format!("{etcd:?}").contains("pw"));
    /// # Ok::<(), micro::etcd::EtcdError>(())
    /// ```
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// How long one request to one member may take (default 5 s) before the next
    /// member is tried; connecting may take up to 3 s of it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let etcd = micro::etcd::EtcdClient::builder(["127.0.0.1:2379"])
    ///     .timeout(Duration::from_secs(2))
    ///     .build()?;
    /// # Ok::<(), micro::etcd::EtcdError>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client; an error if an endpoint is not an address or a TLS file cannot
    /// be used (the error names it).
    ///
    /// ```
    /// use micro::etcd::EtcdClient;
    ///
    /// let err = EtcdClient::builder(["ftp://x:1"]).build().unwrap_err();
    /// assert!(err.to_string().contains("ftp://x:1"), "{err}");
    /// ```
    pub fn build(self) -> Result<EtcdClient, EtcdError> {
        let endpoints: Vec<Result<Endpoint, String>> = endpoint_list(&self.endpoints)
            .iter()
            .map(|e| parse_endpoint(e, self.tls))
            .collect();
        if let Some(Err(e)) = endpoints.iter().find(|e| e.is_err()) {
            return Err(EtcdError::invalid(e.clone()));
        }
        self.finish(endpoints)
    }

    fn finish(self, endpoints: Vec<Result<Endpoint, String>>) -> Result<EtcdClient, EtcdError> {
        let https = endpoints
            .iter()
            .any(|e| matches!(e, Ok(e) if e.base.starts_with("https://")));
        let tls = if https {
            let identity = self
                .identity
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path()));
            Some(transport::tls_connector(self.ca.as_deref(), identity)?)
        } else {
            None
        };
        let connector = Connector::new(self.timeout.min(Duration::from_secs(3)), tls);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(0),
                http,
                credentials: self
                    .credentials
                    .map(|(user, password)| Credentials { user, password }),
                token: Mutex::new(Token::None),
                timeout: self.timeout,
                tls: https,
            }),
        })
    }
}

/// Whether a request needs the member to have a leader. Writes and lease renewals
/// do (a member without one cannot commit: better to fail over at once); reads
/// that may be served from the member's own data do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leader {
    Required,
    Any,
}

impl EtcdClient {
    /// A plain-`http` client of the endpoints (`host:port` or `http://host:port`,
    /// comma-separated lists allowed; none means `127.0.0.1:2379`). An endpoint
    /// that is not an address is reported when it is tried.
    ///
    /// ```
    /// use micro::etcd::EtcdClient;
    ///
    /// let etcd = EtcdClient::new(["10.0.0.1:2379,10.0.0.2", "http://10.0.0.3:2379/"]);
    /// assert_eq!(
    ///     etcd.endpoints(),
    ///     ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
    /// );
    /// assert_eq!(EtcdClient::new(Vec::<String>::new()).endpoints(), ["http://127.0.0.1:2379"]);
    /// ```
    pub fn new<I, S>(endpoints: I) -> EtcdClient
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let builder = Self::builder(endpoints);
        let parsed = endpoint_list(&builder.endpoints)
            .iter()
            .map(|e| parse_endpoint(e, false))
            .collect();
        match builder.clone().finish(parsed) {
            Ok(client) => client,
            // Only TLS setup can fail, for an https:// endpoint without usable
            // system roots: that endpoint reports the error when tried.
            Err(e) => {
                let parsed = endpoint_list(&builder.endpoints)
                    .iter()
                    .map(|endpoint| match parse_endpoint(endpoint, false) {
                        Ok(ep) if ep.base.starts_with("https://") => {
                            Err(format!("{endpoint}: {e}"))
                        }
                        other => other,
                    })
                    .collect();
                #[allow(clippy::expect_used)] // no https endpoint is left to set up
                builder
                    .finish(parsed)
                    .expect("a client without TLS endpoints")
            }
        }
    }

    /// Settings beyond the endpoints: TLS, credentials, timeout.
    ///
    /// ```
    /// let etcd = micro::etcd::EtcdClient::builder(["127.0.0.1:2379"]).build()?;
    /// # Ok::<(), micro::etcd::EtcdError>(())
    /// ```
    pub fn builder<I, S>(endpoints: I) -> EtcdClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: false,
            ca: None,
            identity: None,
            credentials: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The endpoints as URLs, in the order they are tried from.
    ///
    /// ```
    /// let etcd = micro::etcd::EtcdClient::new(["localhost"]);
    /// assert_eq!(etcd.endpoints(), ["http://localhost:2379"]);
    /// ```
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .filter_map(|e| e.as_ref().ok().map(|e| e.base.clone()))
            .collect()
    }

    /// POSTs `body` to `path` of etcd's JSON API (`/v3/kv/range`, …) on the first
    /// member that answers, authenticating first if credentials were given; the
    /// answer's JSON. A member that is down, slow or failing is skipped for the
    /// next; an error etcd gives on purpose (a bad request, a missing permission)
    /// is returned at once.
    ///
    /// ```no_run
    /// # async fn demo(etcd: micro::etcd::EtcdClient) -> Result<(), micro::etcd::EtcdError> {
    /// let status = etcd.post("/v3/maintenance/status", &serde_json::json!({})).await?;
    /// println!("leader {}", status["leader"]);
    /// # Ok(()) }
    /// ```
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        self.call(path, body, Leader::Any).await
    }

    /// [`post`](Self::post), choosing whether the member must have a leader.
    pub(crate) async fn call(
        &self,
        path: &str,
        body: &Value,
        leader: Leader,
    ) -> Result<Value, EtcdError> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..n {
            let index = (start + i) % n;
            match self.call_on(index, path, body, leader).await {
                Ok(answer) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) if e.try_next() => failures.push(e),
                Err(e) => return Err(e),
            }
        }
        Err(EtcdError::all_failed(failures))
    }

    /// One request to endpoint `index`, with the token (renewed once if etcd says
    /// it is invalid).
    pub(crate) async fn call_on(
        &self,
        index: usize,
        path: &str,
        body: &Value,
        leader: Leader,
    ) -> Result<Value, EtcdError> {
        let endpoint = self.endpoint(index)?;
        let body = Bytes::from(body.to_string());
        let token = self.token(endpoint).await?;
        match self
            .unary(endpoint, path, body.clone(), leader, token.as_deref())
            .await
        {
            Err(e) if e.kind == Kind::Unauthenticated && self.inner.credentials.is_some() => {
                self.forget_token(token.as_deref());
                let token = self.token(endpoint).await?;
                self.unary(endpoint, path, body, leader, token.as_deref())
                    .await
            }
            other => other,
        }
    }

    fn endpoint(&self, index: usize) -> Result<&Endpoint, EtcdError> {
        match &self.inner.endpoints[index] {
            Ok(endpoint) => Ok(endpoint),
            Err(e) => Err(EtcdError::invalid(e.clone())),
        }
    }

    fn request(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: Bytes,
        leader: Leader,
        token: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, EtcdError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", endpoint.base))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, token);
        }
        if leader == Leader::Required {
            request = request.header(REQUIRE_LEADER.0, REQUIRE_LEADER.1);
        }
        request
            .body(Full::new(body))
            .map_err(|e| EtcdError::invalid(format!("{}{path}: {e}", endpoint.base)))
    }

    /// Sends a request and waits for the response head, within the timeout.
    async fn send(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: Bytes,
        leader: Leader,
        token: Option<&str>,
    ) -> Result<http::Response<Incoming>, EtcdError> {
        let request = self.request(endpoint, path, body, leader, token)?;
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, self.inner.http.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(EtcdError::transport(&endpoint.base, &e)),
            Err(_) => Err(EtcdError::unavailable(format!(
                "{} did not answer within {timeout:?}",
                endpoint.base
            ))),
        }
    }

    /// One unary request: its JSON answer, or the error etcd gave.
    async fn unary(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: Bytes,
        leader: Leader,
        token: Option<&str>,
    ) -> Result<Value, EtcdError> {
        let timeout = self.inner.timeout;
        let exchange = async {
            let response = self.send(endpoint, path, body, leader, token).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| EtcdError::transport(&endpoint.base, &e))?
                .to_bytes();
            answer(&endpoint.base, status, &bytes)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(EtcdError::unavailable(format!(
                "{} did not answer within {timeout:?}",
                endpoint.base
            ))),
        }
    }

    /// The token to send, authenticating on `endpoint` if there is none yet.
    async fn token(&self, endpoint: &Endpoint) -> Result<Option<String>, EtcdError> {
        let Some(credentials) = &self.inner.credentials else {
            return Ok(None);
        };
        match self.lock_token().clone() {
            Token::Some(token) => return Ok(Some(token)),
            Token::NotEnabled => return Ok(None),
            Token::None => {}
        }
        let body = json!({"name": credentials.user, "password": credentials.password});
        let answer = self
            .unary(
                endpoint,
                "/v3/auth/authenticate",
                Bytes::from(body.to_string()),
                Leader::Any,
                None,
            )
            .await;
        let token = match answer {
            Ok(answer) => match answer["token"].as_str() {
                Some(token) if !token.is_empty() => Token::Some(token.to_string()),
                _ => {
                    return Err(EtcdError::protocol(format!(
                        "{}: authenticating as {:?} gave no token",
                        endpoint.base, credentials.user
                    )))
                }
            },
            Err(e) if e.message.contains("authentication is not enabled") => {
                tracing::debug!(endpoint = %endpoint.base, "etcd has no authentication enabled; sending no token");
                Token::NotEnabled
            }
            Err(e) if e.kind == Kind::Rejected || e.kind == Kind::Unauthenticated => {
                return Err(EtcdError {
                    kind: Kind::Auth,
                    message: format!(
                        "{}: etcd refused the user {:?}: {}; check the username and password",
                        endpoint.base, credentials.user, e.message
                    ),
                })
            }
            Err(e) => return Err(e),
        };
        *self.lock_token() = token.clone();
        Ok(match token {
            Token::Some(token) => Some(token),
            _ => None,
        })
    }

    /// Drops `used` as the token (unless another task already renewed it), so the
    /// next request authenticates again.
    fn forget_token(&self, used: Option<&str>) {
        let mut token = self.lock_token();
        let current = match &*token {
            Token::Some(t) => Some(t.as_str()),
            _ => None,
        };
        if current == used {
            *token = Token::None;
        }
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, Token> {
        // The token is replaced whole, so a poisoned lock still holds a valid one.
        self.inner
            .token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a watch (`/v3/watch` with this `create_request`) on the first member
    /// that accepts it and returns once etcd confirmed it: every change after that
    /// is in the stream. The watch requires the member to have a leader; it ends
    /// with an error when the member goes away, stops answering (checked every few
    /// seconds), loses its leader, or cancels the watch.
    ///
    /// ```no_run
    /// # async fn demo(etcd: micro::etcd::EtcdClient) -> Result<(), micro::etcd::EtcdError> {
    /// use futures_util::StreamExt;
    /// use micro::etcd::{b64, range_end};
    ///
    /// let prefix = "/app/";
    /// let mut watch = etcd
    ///     .watch(serde_json::json!({"key": b64(prefix), "range_end": b64(range_end(prefix))}))
    ///     .await?;
    /// while let Some(message) = watch.next().await {
    ///     for event in message?["events"].as_array().into_iter().flatten() {
    ///         println!("{event}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch(&self, create_request: Value) -> Result<EtcdWatch, EtcdError> {
        watch::open(self.clone(), create_request).await
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.inner.endpoints.len()
    }

    pub(crate) fn preferred(&self) -> usize {
        self.inner.preferred.load(Ordering::Relaxed)
    }

    pub(crate) fn set_preferred(&self, index: usize) {
        self.inner.preferred.store(index, Ordering::Relaxed);
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The URL of endpoint `index` (or its error text).
    pub(crate) fn endpoint_name(&self, index: usize) -> String {
        match &self.inner.endpoints[index] {
            Ok(e) => e.base.clone(),
            Err(e) => e.clone(),
        }
    }
}

/// The JSON answer of a unary request, or the error in it.
fn answer(base: &str, status: StatusCode, bytes: &[u8]) -> Result<Value, EtcdError> {
    if status != StatusCode::OK {
        return Err(error_answer(base, status, bytes));
    }
    // A streamed answer (a lease keep-alive) is one or more JSON objects: the first.
    let first = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .next()
        .unwrap_or(Ok(Value::Null))
        .map_err(|e| EtcdError::protocol(format!("{base} gave an answer that is not JSON: {e}")))?;
    if let Some(error) = first.get("error").filter(|e| e.is_object()) {
        return Err(stream_error(base, error));
    }
    Ok(first)
}

/// The error an etcd member answered with: `{"error","message","code"}` (a gRPC
/// status through the gateway), or an HTTP error from whatever stands at the address.
fn error_answer(base: &str, status: StatusCode, bytes: &[u8]) -> EtcdError {
    // The gateway may append a trailer block after the JSON.
    let parsed = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok);
    let Some(error) = parsed.filter(|v| v.get("code").is_some() || v.get("error").is_some()) else {
        let text = String::from_utf8_lossy(bytes);
        let kind = if status.is_server_error() {
            Kind::Unavailable
        } else {
            Kind::Protocol
        };
        return EtcdError {
            kind,
            message: format!(
                "{base} answered {status}: {}; is this an etcd client port (2379)?",
                text.trim().chars().take(200).collect::<String>()
            ),
        };
    };
    // A streaming call's error: `{"error":{"grpc_code","message",…}}`.
    if let Some(inner) = error.get("error").filter(|e| e.is_object()) {
        return stream_error(base, inner);
    }
    grpc_error(
        base,
        error["code"].as_i64().unwrap_or(2),
        &message_of(&error),
    )
}

/// The message of an error object (`message`, else `error`).
fn message_of(error: &Value) -> String {
    error["message"]
        .as_str()
        .or_else(|| error["error"].as_str())
        .unwrap_or("unknown error")
        .to_string()
}

/// An error from a gRPC status code and message, classified for failover.
pub(crate) fn grpc_error(base: &str, code: i64, message: &str) -> EtcdError {
    let kind = match code {
        // CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE:
        // the member cannot serve now (no leader, timed out, stopping): next one.
        1 | 4 | 8 | 10 | 14 => Kind::Unavailable,
        5 => Kind::NotFound,
        7 => Kind::Auth,
        16 => Kind::Unauthenticated,
        _ if message.contains("no leader") || message.contains("leader changed") => {
            Kind::Unavailable
        }
        // "user name is empty": a token is needed now (auth was enabled since).
        _ if message.contains("user name is empty") => Kind::Unauthenticated,
        _ => Kind::Rejected,
    };
    let hint = match kind {
        Kind::Auth => "; give the user the permission (etcdctl role grant-permission)",
        Kind::Unauthenticated => "; give a username and password",
        // etcd's JSON gateway reaches etcd's gRPC side with etcd's own certificate;
        // with --client-cert-auth that certificate must allow client auth too.
        _ if message == "connection closed" && base.starts_with("https://") => {
            " (inside etcd: with --client-cert-auth, etcd's own certificate must allow \
             client authentication too, as its JSON gateway connects to etcd with it)"
        }
        _ => "",
    };
    EtcdError {
        kind,
        message: format!("{base}: {message}{hint}"),
    }
}

/// `a,b` and `c` -> `[a, b, c]`; none means the default address.
fn endpoint_list(given: &[String]) -> Vec<String> {
    let mut list: Vec<String> = given
        .iter()
        .flat_map(|e| e.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        list.push(DEFAULT_ADDRESS.to_string());
    }
    list
}

/// `host:port`, `host`, `http://host:port[/]`, `https://host:port` -> the base URL.
fn parse_endpoint(text: &str, tls: bool) -> Result<Endpoint, String> {
    let trimmed = text.trim().trim_end_matches('/');
    let (scheme, rest) = match trimmed.split_once("://") {
        Some(("http", rest)) => ("http", rest),
        Some(("https", rest)) => ("https", rest),
        Some((other, _)) => {
            return Err(format!(
                "{text:?}: etcd is reached over http:// or https://, not {other}://"
            ))
        }
        None if tls => ("https", trimmed),
        None => ("http", trimmed),
    };
    if rest.contains('/') {
        return Err(format!(
            "{text:?} is not an address: expected host:port, http://host:port or \
             https://host:port, without a path"
        ));
    }
    let has_port = match rest.rfind(']') {
        Some(close) => rest[close..].contains(':'),
        None => rest.contains(':'),
    };
    let authority = if has_port {
        rest.to_string()
    } else {
        format!("{rest}:{DEFAULT_PORT}")
    };
    let bad = || {
        format!(
            "{text:?} is not an address: expected host:port, http://host:port or \
             https://host:port"
        )
    };
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let base = format!("{scheme}://{authority}");
    base.parse::<http::Uri>().map_err(|_| bad())?;
    Ok(Endpoint { base })
}

/// Why an etcd request failed. The message names the endpoint(s) and what failed.
///
/// ```
/// let etcd = micro::etcd::EtcdClient::new(["ftp://x:1"]);
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let err = etcd.post("/v3/kv/range", &serde_json::json!({})).await.unwrap_err();
/// assert!(err.is_invalid(), "{err}");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct EtcdError {
    kind: Kind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No member could be reached or could serve (down, timed out, no leader).
    Unavailable,
    /// The token is missing or no longer valid (renewed and retried once).
    Unauthenticated,
    /// Bad credentials, or no permission.
    Auth,
    /// What was asked for does not exist (a lease).
    NotFound,
    /// Bad settings: an endpoint that is not an address, a TLS file.
    Invalid,
    /// etcd refused the request for another reason.
    Rejected,
    /// An answer that is not etcd's.
    Protocol,
}

impl EtcdError {
    fn invalid(message: impl Into<String>) -> Self {
        EtcdError {
            kind: Kind::Invalid,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        EtcdError {
            kind: Kind::Unavailable,
            message: message.into(),
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        EtcdError {
            kind: Kind::Protocol,
            message: message.into(),
        }
    }

    /// A failure to reach `base`: what the connection said, down to its cause.
    fn transport(base: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut causes = Vec::new();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = cause {
            let text = e.to_string();
            if !causes.iter().any(|c: &String| c.contains(&text)) {
                causes.push(text);
            }
            cause = e.source();
        }
        let detail = causes.join(": ");
        let address = base.split_once("://").map_or(base, |(_, a)| a);
        let message = if detail.contains("client error (Connect)") {
            let reason = causes.last().cloned().unwrap_or_default();
            format!("cannot connect to {address}: {reason}")
        } else {
            format!("{base}: {detail}")
        };
        EtcdError::unavailable(message)
    }

    /// The errors of every endpoint tried, in one.
    fn all_failed(failures: Vec<EtcdError>) -> Self {
        EtcdError {
            kind: failures.last().map_or(Kind::Unavailable, |e| e.kind),
            message: failures
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// Whether the next endpoint may do better.
    fn try_next(&self) -> bool {
        matches!(
            self.kind,
            Kind::Unavailable | Kind::Protocol | Kind::Invalid
        )
    }

    /// No member could be reached or serve the request (down, timed out, no
    /// leader): worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        self.kind == Kind::Unavailable
    }

    /// Bad or missing credentials, or a missing permission.
    pub fn is_auth(&self) -> bool {
        matches!(self.kind, Kind::Auth | Kind::Unauthenticated)
    }

    /// What was asked for does not exist (e.g. a lease that expired).
    pub fn is_not_found(&self) -> bool {
        self.kind == Kind::NotFound
    }

    /// The client's settings are wrong: an endpoint or a TLS file.
    pub fn is_invalid(&self) -> bool {
        self.kind == Kind::Invalid
    }

    /// The message, naming the endpoint(s) and what failed.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    pub(crate) fn unauthenticated(&self) -> bool {
        self.kind == Kind::Unauthenticated
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EtcdError {}

/// Base64, as the JSON API wants keys and values.
///
/// ```
/// assert_eq!(micro::etcd::b64("/a"), "L2E=");
/// ```
pub fn b64(data: impl AsRef<[u8]>) -> String {
    BASE64.encode(data)
}

/// Text back from base64 (lossy: invalid UTF-8 becomes `U+FFFD`, invalid base64
/// empty).
///
/// ```
/// assert_eq!(micro::etcd::unb64("L2E="), "/a");
/// ```
pub fn unb64(text: &str) -> String {
    String::from_utf8_lossy(&BASE64.decode(text).unwrap_or_default()).into_owned()
}

/// A key prefix as the registry and the config source keep it: ending with `/`,
/// so that `/micro/registry` never matches `/micro/registry-old/...` keys.
pub(crate) fn key_prefix(mut prefix: String) -> String {
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

/// The end of the key range of every key starting with `prefix` (etcd's
/// `range_end`).
///
/// ```
/// assert_eq!(micro::etcd::range_end("/micro/"), b"/micro0");
/// ```
pub fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The message of an error object in a stream, and its classification.
pub(crate) fn stream_error(base: &str, error: &Value) -> EtcdError {
    grpc_error(
        base,
        error["grpc_code"]
            .as_i64()
            .or(error["code"].as_i64())
            .unwrap_or(2),
        &message_of(error),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_endpoints_parse() {
        let ok = |text: &str, tls: bool| parse_endpoint(text, tls).map(|e| e.base);
        assert_eq!(
            ok("10.0.0.1:2379", false).as_deref(),
            Ok("http://10.0.0.1:2379")
        );
        assert_eq!(
            ok("10.0.0.1:2379", true).as_deref(),
            Ok("https://10.0.0.1:2379")
        );
        assert_eq!(ok("http://h:1/", true).as_deref(), Ok("http://h:1"));
        assert_eq!(ok("https://h", false).as_deref(), Ok("https://h:2379"));
        assert_eq!(ok("[::1]", false).as_deref(), Ok("http://[::1]:2379"));
        assert_eq!(ok("[::1]:7", false).as_deref(), Ok("http://[::1]:7"));
        for bad in ["ftp://h:1", "h:port", "http://h:1/v3", ":1", "a b:1"] {
            assert!(parse_endpoint(bad, false).is_err(), "{bad}");
        }
        assert_eq!(
            endpoint_list(&["a:1, b:2".into(), " ".into(), "c".into()]),
            ["a:1", "b:2", "c"]
        );
        assert_eq!(endpoint_list(&[]), [DEFAULT_ADDRESS]);
    }

    #[test]
    fn etcd_errors_are_classified() {
        let e = error_answer(
            "http://h:1",
            StatusCode::UNAUTHORIZED,
            br#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}Grpc-Trailer-Content-Type: application/grpc"#,
        );
        assert_eq!(e.kind, Kind::Unauthenticated);
        assert!(
            e.message
                .starts_with("http://h:1: etcdserver: invalid auth token"),
            "{e}"
        );
        let e = error_answer(
            "http://h:1",
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":"etcdserver: no leader","code":14}"#,
        );
        assert!(e.is_unavailable() && e.try_next());
        let e = error_answer(
            "http://h:1",
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
        );
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(e.message, "http://h:1: etcdserver: no leader");
        let e = error_answer("http://h:1", StatusCode::NOT_FOUND, b"404 page not found");
        assert_eq!(e.kind, Kind::Protocol);
        assert!(e.message.contains("2379"), "{e}");
        let e = grpc_error("b", 5, "etcdserver: requested lease not found");
        assert!(e.is_not_found() && !e.try_next());
        assert_eq!(range_end("/a/"), b"/a0".to_vec());
        assert_eq!(range_end(""), vec![0]);
    }
}
