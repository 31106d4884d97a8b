//! How the etcd client reaches a member: TCP (kept alive, probed by the kernel) and,
//! for `https://` endpoints, TLS with rustls on the `ring` provider.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use super::EtcdError;

/// The connector of the pooled HTTP/1.1 client: plain TCP for `http://`, TLS over
/// it for `https://`.
#[derive(Clone)]
pub(super) struct Connector {
    tcp: HttpConnector,
    tls: Option<TlsConnector>,
}

impl Connector {
    pub(super) fn new(connect_timeout: Duration, tls: Option<TlsConnector>) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        // A member that vanished without closing the connection (a cut network, a
        // frozen host) is noticed by the kernel within about 10 s.
        tcp.set_keepalive(Some(Duration::from_secs(5)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(2)));
        tcp.set_keepalive_retries(Some(3));
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(10)));
        Connector { tcp, tls }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<Uri>::poll_ready(&mut self.tcp, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let stream = tower::Service::call(&mut tcp, uri).await?.into_inner();
            if !https {
                return Ok(TokioIo::new(Stream::Plain(stream)));
            }
            let Some(tls) = tls else {
                return Err("an https:// endpoint, but TLS is not set up".into());
            };
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("{host:?} is not a name TLS can check: {e}"))?;
            let stream = tls.connect(name, stream).await.map_err(|e| {
                let hint = if e.kind() == io::ErrorKind::UnexpectedEof {
                    " (does this port serve TLS? an etcd without --cert-file answers http:// only)"
                } else {
                    ""
                };
                format!("TLS handshake failed: {e}{hint}")
            })?;
            Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
        })
    }
}

/// A connection to a member, plain or TLS.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The TLS client config: trust the CA in `ca` (else the system's roots) and, with
/// `identity`, present that certificate chain and key (mutual TLS). Errors name the
/// file and what is wrong with it.
pub(super) fn tls_connector(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<TlsConnector, EtcdError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(file) => {
            let certs = read_certs(file, "CA certificate")?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    EtcdError::invalid(format!(
                        "TLS: {}: not a usable CA certificate: {e}",
                        file.display()
                    ))
                })?;
            }
        }
        None => {
            // No CA given: the system's trust store, as a browser would.
            let certs = rustls_native_certs::load_native_certs().map_err(|e| {
                EtcdError::invalid(format!(
                    "TLS: no CA file given and the system's certificates cannot be read ({e}); \
                     give the CA that signed etcd's certificate"
                ))
            })?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(EtcdError::invalid(
                    "TLS: no CA file given and the system has no trusted certificates; give the \
                     CA that signed etcd's certificate",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EtcdError::invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert_file, key_file)) => {
            let chain = read_certs(cert_file, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                EtcdError::invalid(format!(
                    "TLS: {}: no PEM private key: {e}",
                    key_file.display()
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                EtcdError::invalid(format!(
                    "TLS: {}: the key does not fit the client certificate {}: {e}",
                    key_file.display(),
                    cert_file.display()
                ))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    // No ALPN: etcd speaks HTTP/1.1 (its JSON API) to a client that does not ask
    // for h2 (its gRPC API).
    Ok(TlsConnector::from(Arc::new(config)))
}

fn read_certs(file: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, EtcdError> {
    let bad = |message: String| EtcdError::invalid(format!("TLS: {}: {message}", file.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| bad(format!("cannot read the {what}: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not a PEM {what}: {e}")))?;
    if certs.is_empty() {
        return Err(bad(format!("no {what} in the file")));
    }
    Ok(certs)
}
