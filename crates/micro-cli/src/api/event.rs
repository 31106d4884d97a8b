//! The `event` handler: the request body is published to the route's topic; the
//! answer is `202 {"id": "<message id>"}`.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use micro::broker::{validate_topic, Broker};
use micro::Error;

use super::reply::{self, Body};
use super::resolve::ID;

/// Request headers carried onto the message (besides `x-request-id` and the
/// trace context, which are kept too).
const CARRIED: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// Publishes `body` (JSON, or the request's content type) on `topic`.
pub async fn publish(
    broker: &dyn Broker,
    topic: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, Error> {
    if topic.is_empty() {
        return Err(Error::internal_server_error(
            ID,
            "the event route names no topic",
        ));
    }
    validate_topic(topic)?;
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| !ct.starts_with("application/x-www-form-urlencoded"))
        .unwrap_or("application/json")
        .to_string();
    if content_type.starts_with("application/json") {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
            Error::bad_request(
                ID,
                format!("malformed JSON body: {e}; the event is not published"),
            )
        })?;
    }
    let carried = CARRIED.iter().filter_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?;
        Some((name.to_string(), value.to_string()))
    });
    let id = crate::proxy::client::publish_message(
        broker,
        topic,
        content_type,
        body,
        carried,
        Some("micro.api"),
    )
    .await?;
    Ok(reply::json(
        StatusCode::ACCEPTED,
        serde_json::json!({ "id": id }).to_string(),
    ))
}
