//! Export of finished spans by OTLP/HTTP with JSON bodies: a background task
//! batches them (bounded queue: spans that do not fit are dropped and counted),
//! and POSTs each batch to `<endpoint>/v1/traces`. Requests never wait on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::span::{AttributeValue, SpanData};
use crate::Error;

const ID: &str = "micro.wrapper.trace";
/// Longest one export request may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Export failures are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub(crate) struct ExportConfig {
    /// The full URL spans are POSTed to (`http://collector:4318/v1/traces`).
    pub(crate) url: Uri,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) interval: Duration,
    pub(crate) batch: usize,
    pub(crate) queue: usize,
    /// Resource attributes (`service.name`, …).
    pub(crate) resource: Vec<(&'static str, AttributeValue)>,
}

impl ExportConfig {
    /// A config for `url`, which must be `http://host[:port]/path`.
    pub(crate) fn new(url: &str, service: &str, version: &str) -> Result<Self, Error> {
        let uri: Uri = url.parse().map_err(|e| {
            Error::bad_request(ID, format!("OTLP endpoint {url:?} is not a URL: {e}"))
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(Error::bad_request(
                ID,
                format!(
                    "OTLP endpoint {url:?}: only plain http://host:port endpoints are supported \
                     (OTLP/HTTP with JSON; put a collector or sidecar in front for TLS)"
                ),
            ));
        }
        Ok(ExportConfig {
            url: uri,
            headers: Vec::new(),
            interval: Duration::from_secs(1),
            batch: 512,
            queue: 4096,
            resource: vec![
                ("service.name", service.into()),
                ("service.version", version.into()),
                ("telemetry.sdk.name", "micro".into()),
                ("telemetry.sdk.language", "rust".into()),
                ("telemetry.sdk.version", env!("CARGO_PKG_VERSION").into()),
            ],
        })
    }

    /// Adds the headers of `OTEL_EXPORTER_OTLP_HEADERS` form: `k=v,k2=v2`, values
    /// percent-encoded.
    pub(crate) fn parse_headers(&mut self, text: &str) -> Result<(), Error> {
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                Error::bad_request(
                    ID,
                    format!("OTLP header {pair:?}: expected key=value (OTEL_EXPORTER_OTLP_HEADERS is k=v,k2=v2)"),
                )
            };
            let (k, v) = pair.split_once('=').ok_or_else(bad)?;
            let name =
                HeaderName::from_bytes(percent_decode(k.trim()).as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_str(&percent_decode(v.trim())).map_err(|_| bad())?;
            self.headers.push((name, value));
        }
        Ok(())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The traces URL from the setting and the standard variables: the setting or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` are base URLs (`/v1/traces` is added);
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as it is.
pub(crate) fn traces_url(setting: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let base = |b: &str| format!("{}/v1/traces", b.trim_end_matches('/'));
    let setting = setting.trim();
    if !setting.is_empty() {
        return Some(base(setting));
    }
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|b| base(&b)))
}

enum Msg {
    Span(SpanData),
    Flush(oneshot::Sender<()>),
}

/// The sending side: hands spans to the background task, started on first use
/// (it needs a Tokio runtime, which building a service does not).
#[derive(Debug)]
pub(crate) struct Exporter {
    config: Arc<ExportConfig>,
    tx: OnceLock<Option<mpsc::Sender<Msg>>>,
    dropped: Arc<AtomicU64>,
    exported: Arc<AtomicU64>,
}

impl Exporter {
    pub(crate) fn new(config: ExportConfig) -> Self {
        Exporter {
            config: Arc::new(config),
            tx: OnceLock::new(),
            dropped: Arc::new(AtomicU64::new(0)),
            exported: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn url(&self) -> &Uri {
        &self.config.url
    }

    fn sender(&self) -> Option<&mpsc::Sender<Msg>> {
        self.tx
            .get_or_init(|| {
                let handle = tokio::runtime::Handle::try_current().ok()?;
                let (tx, rx) = mpsc::channel(self.config.queue.max(1));
                handle.spawn(run(
                    self.config.clone(),
                    rx,
                    self.dropped.clone(),
                    self.exported.clone(),
                ));
                Some(tx)
            })
            .as_ref()
    }

    /// Queues a span; drops (and counts) it when the queue is full.
    pub(crate) fn export(&self, span: SpanData) {
        let sent = self
            .sender()
            .is_some_and(|tx| tx.try_send(Msg::Span(span)).is_ok());
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends what is queued now and waits until it is sent (or failed).
    pub(crate) async fn flush(&self) {
        let Some(tx) = self.sender() else { return };
        let (done, sent) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = sent.await;
        }
    }

    /// Spans dropped: queue full, or their batch failed to send.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans the collector accepted.
    pub(crate) fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }
}

/// The background task: batch, send every `interval` or at `batch` spans, and
/// send the rest when every sender is gone (the service stopped).
async fn run(
    config: Arc<ExportConfig>,
    mut rx: mpsc::Receiver<Msg>,
    dropped: Arc<AtomicU64>,
    exported: Arc<AtomicU64>,
) {
    let mut client = Client {
        config: config.clone(),
        sender: None,
        last_warned: None,
        dropped,
        exported,
    };
    let mut batch: Vec<SpanData> = Vec::with_capacity(config.batch.min(1024));
    let mut tick = tokio::time::interval(config.interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Span(span)) => {
                    batch.push(span);
                    if batch.len() >= config.batch.max(1) {
                        client.send(&mut batch).await;
                    }
                }
                Some(Msg::Flush(done)) => {
                    client.send(&mut batch).await;
                    let _ = done.send(());
                }
                None => {
                    client.send(&mut batch).await;
                    return;
                }
            },
            _ = tick.tick() => client.send(&mut batch).await,
        }
    }
}

struct Client {
    config: Arc<ExportConfig>,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    last_warned: Option<tokio::time::Instant>,
    dropped: Arc<AtomicU64>,
    exported: Arc<AtomicU64>,
}

impl Client {
    async fn send(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let body = Bytes::from(encode(&self.config.resource, batch).to_string());
        let count = batch.len() as u64;
        batch.clear();
        match tokio::time::timeout(POST_TIMEOUT, self.post(body)).await {
            Ok(Ok(())) => {
                self.exported.fetch_add(count, Ordering::Relaxed);
            }
            Ok(Err(e)) => self.failed(count, &e),
            Err(_) => {
                self.sender = None;
                self.failed(count, &format!("no answer within {POST_TIMEOUT:?}"));
            }
        }
    }

    fn failed(&mut self, count: u64, why: &str) {
        let dropped = self.dropped.fetch_add(count, Ordering::Relaxed) + count;
        let now = tokio::time::Instant::now();
        if self.last_warned.is_none_or(|at| now >= at + WARN_EVERY) {
            self.last_warned = Some(now);
            tracing::warn!(
                endpoint = %self.config.url,
                dropped,
                "exporting spans by OTLP failed: {why} (logged at most once a minute)"
            );
        }
    }

    async fn post(&mut self, body: Bytes) -> Result<(), String> {
        // A kept connection may have been closed by the collector: dial once more.
        for _ in 0..2 {
            let mut sender = match self.sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.dial().await?,
            };
            if sender.ready().await.is_err() {
                continue;
            }
            let rsp = match sender.send_request(self.request(body.clone())?).await {
                Ok(rsp) => rsp,
                Err(e) if e.is_canceled() || e.is_closed() => continue,
                Err(e) => return Err(format!("sending: {e}")),
            };
            let status = rsp.status();
            let text = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            self.sender = Some(sender);
            if !status.is_success() {
                let text = String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned();
                return Err(format!("the collector answered {status}: {text}"));
            }
            return Ok(());
        }
        Err("the connection closed".into())
    }

    fn request(&self, body: Bytes) -> Result<http::Request<Full<Bytes>>, String> {
        let url = &self.config.url;
        // Origin form (`/v1/traces`) with a Host header: the absolute form is for
        // proxies, and collectors need not accept it.
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let mut req = http::Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let headers = req.headers_mut();
        if let Some(authority) = url.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, host);
            }
        }
        for (k, v) in &self.config.headers {
            headers.insert(k.clone(), v.clone());
        }
        Ok(req)
    }

    async fn dial(&self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let url = &self.config.url;
        let host = url.host().unwrap_or("localhost");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// A batch as an OTLP `ExportTraceServiceRequest` in its JSON encoding.
pub(crate) fn encode(resource: &[(&'static str, AttributeValue)], spans: &[SpanData]) -> Value {
    let attributes = |attrs: &[(&'static str, AttributeValue)]| -> Vec<Value> {
        attrs
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v.to_otlp() }))
            .collect()
    };
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": s.trace_id.to_string(),
                "spanId": s.span_id.to_string(),
                "name": s.name.as_ref(),
                "kind": s.kind.otlp(),
                "startTimeUnixNano": s.start_unix_nanos.to_string(),
                "endTimeUnixNano": s.end_unix_nanos.to_string(),
                "attributes": attributes(&s.attributes),
                "status": { "code": s.status.otlp() },
            });
            if let Some(parent) = s.parent_span_id {
                span["parentSpanId"] = Value::from(parent.to_string());
            }
            if let super::span::SpanStatus::Error(message) = &s.status {
                span["status"]["message"] = Value::from(message.as_str());
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": attributes(resource) },
            "scopeSpans": [{
                "scope": { "name": "micro", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_comes_from_the_setting_or_the_standard_variables() {
        let none = |_: &str| None;
        assert_eq!(traces_url("", &none), None);
        assert_eq!(
            traces_url("http://c:4318/", &none).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://base:4318".to_string()),
            _ => None,
        };
        assert_eq!(
            traces_url("", &env).as_deref(),
            Some("http://base:4318/v1/traces")
        );
        let env2 = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://base:4318".to_string()),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://t:9/custom".to_string()),
            _ => None,
        };
        assert_eq!(traces_url("", &env2).as_deref(), Some("http://t:9/custom"));
        assert_eq!(
            traces_url("http://s:1", &env2).as_deref(),
            Some("http://s:1/v1/traces")
        );
    }

    #[test]
    fn only_plain_http_endpoints_are_taken() {
        assert!(ExportConfig::new("http://127.0.0.1:4318/v1/traces", "s", "v").is_ok());
        for bad in [
            "https://c:4318/v1/traces",
            "c:4318",
            "not a url",
            "grpc://c:4317",
        ] {
            let e = ExportConfig::new(bad, "s", "v").unwrap_err();
            assert_eq!(e.code(), 400, "{bad}");
        }
    }

    #[test]
    fn headers_are_parsed_and_decoded() {
        let mut c = ExportConfig::new("http://c:1/v1/traces", "s", "v").unwrap();
        c.parse_headers("api-key=abc%20def, x-team = core ,")
            .unwrap();
        assert_eq!(c.headers.len(), 2);
        assert_eq!(c.headers[0].0, "api-key");
        assert_eq!(c.headers[0].1, "abc def");
        assert_eq!(c.headers[1].1, "core");
        assert!(c.parse_headers("novalue").is_err());
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%2Cb%zz"), "a,b%zz");
    }
}
