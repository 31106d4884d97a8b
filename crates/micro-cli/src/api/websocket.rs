//! The `stream` handler over WebSocket: a `GET` with `Upgrade: websocket` on a
//! streaming endpoint. The request is the query string (and path params); each
//! message the service streams is one text frame of JSON; the end is a close
//! frame 1000, a failure a last `{"error": {...}}` frame and close 1011. The call
//! is cancelled when the browser closes the socket.

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use micro::codec::Format;
use micro::server::{MethodKind, RawBody, RawReply, RequestBody};
use micro::Error;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::call::Call;
use super::reply::{self, Body};
use super::resolve::ID;
use super::target::Target;

/// Accepts the upgrade (101) and streams the call's answers over the socket.
pub fn stream(
    mut req: Request<RequestBody>,
    target: &Target,
    endpoint: &str,
    call: Call<'_>,
) -> Result<Response<Body>, Error> {
    let headers = req.headers();
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| version_ok)
    else {
        return Err(Error::bad_request(
            ID,
            "a WebSocket upgrade needs Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let client = call.client.clone();
    let (service, endpoint) = (target.service.clone(), endpoint.to_string());
    let (request, options) = (call.request, call.options);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "a WebSocket upgrade did not complete");
                return;
            }
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let answers = client
            .call_raw_stream(
                &service,
                &endpoint,
                Format::Json,
                MethodKind::ServerStreaming,
                RawBody::One(request),
                &options,
            )
            .await;
        let mut frames = match answers {
            Ok(RawReply::Stream(s)) => s,
            Ok(RawReply::One(bytes)) => {
                futures_util::stream::once(async move { Ok(bytes) }).boxed()
            }
            Err(e) => {
                let _ = fail(&mut socket, &e).await;
                return;
            }
        };
        loop {
            tokio::select! {
                next = frames.next() => match next {
                    Some(Ok(json)) => {
                        let text = String::from_utf8_lossy(&json).into_owned();
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = fail(&mut socket, &e).await;
                        return;
                    }
                    None => {
                        let _ = socket.send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        }))).await;
                        return;
                    }
                },
                // The caller closed (or broke) the socket: dropping `frames`
                // cancels the call.
                incoming = socket.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    });
    let mut rsp = Response::new(reply::empty());
    *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = rsp.headers_mut();
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        out.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(rsp)
}

/// Sends the error as a last frame and closes with 1011.
async fn fail<S>(
    socket: &mut WebSocketStream<S>,
    e: &Error,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    socket
        .send(Message::Text(
            format!("{{\"error\":{}}}", e.to_json()).into(),
        ))
        .await?;
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Error,
            reason: "".into(),
        })))
        .await
}
