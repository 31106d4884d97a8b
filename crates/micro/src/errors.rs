//! The one error shape used everywhere: `{"id","code","detail","status"}`.
//!
//! `code` is an HTTP status code and `status` its reason phrase, exactly as in
//! go-micro, so errors read the same from Rust, the CLI, the gateway and every
//! client library. This module is also the single place where errors are mapped to
//! and from gRPC status codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A micro error: what every handler, client call and gateway returns on failure.
///
/// ```
/// use micro::Error;
///
/// let err = Error::bad_request("greeter", "name is required");
/// assert_eq!(err.code(), 400);
/// assert_eq!(
///     err.to_json(),
///     r#"{"id":"greeter","code":400,"detail":"name is required","status":"Bad Request"}"#
/// );
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    #[serde(default)]
    id: String,
    #[serde(default)]
    code: u16,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    status: String,
}

/// A result whose error is a micro [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with any HTTP status code; `status` is filled in from the code.
    ///
    /// Codes outside 400..=599 are not errors and become 500.
    pub fn new(id: impl Into<String>, detail: impl Into<String>, code: u16) -> Self {
        let code = if (400..=599).contains(&code) {
            code
        } else {
            500
        };
        Error {
            id: id.into(),
            code,
            detail: detail.into(),
            status: status_text(code).to_string(),
        }
    }

    /// 400: the request is malformed or fails validation.
    pub fn bad_request(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 400)
    }
    /// 401: the caller is not authenticated.
    pub fn unauthorized(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 401)
    }
    /// 403: the caller is authenticated but not allowed.
    pub fn forbidden(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 403)
    }
    /// 404: no such service, endpoint or resource.
    pub fn not_found(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 404)
    }
    /// 405: the HTTP method is not allowed.
    pub fn method_not_allowed(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 405)
    }
    /// 408: the deadline passed before an answer came.
    pub fn timeout(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 408)
    }
    /// 409: the resource already exists or changed under the caller.
    pub fn conflict(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 409)
    }
    /// 413: the request body is over the size limit.
    pub fn payload_too_large(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 413)
    }
    /// 415: the content type is not one micro speaks.
    pub fn unsupported_media_type(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 415)
    }
    /// 429: the caller is over a rate or resource limit.
    pub fn too_many_requests(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 429)
    }
    /// 500: something failed inside the service.
    pub fn internal_server_error(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 500)
    }
    /// 501: the endpoint exists in the contract but is not implemented.
    pub fn not_implemented(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 501)
    }
    /// 503: the service cannot take the request now; safe to retry elsewhere.
    pub fn service_unavailable(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, detail, 503)
    }

    /// Who raised the error: by convention the service name (`greeter`) or a
    /// micro component (`micro.client`, `micro.server`).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.code
    }
    /// The human-readable explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }
    /// The reason phrase of `code` (`"Bad Request"`).
    pub fn status(&self) -> &str {
        &self.status
    }

    /// The error as its JSON text.
    pub fn to_json(&self) -> String {
        // Serialising four plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses an error from anything a peer may have sent: the micro JSON shape, or
    /// any other text, which becomes the `detail` of a 500 (go-micro's `Parse`).
    ///
    /// ```
    /// let err = micro::Error::parse(r#"{"id":"x","code":404,"detail":"gone","status":"Not Found"}"#);
    /// assert_eq!(err.code(), 404);
    /// let err = micro::Error::parse("connection reset");
    /// assert_eq!((err.code(), err.detail()), (500, "connection reset"));
    /// ```
    pub fn parse(text: &str) -> Self {
        match serde_json::from_str::<Error>(text) {
            Ok(mut err) if err.code != 0 || !err.detail.is_empty() => {
                if !(400..=599).contains(&err.code) {
                    err.code = 500;
                }
                if err.status.is_empty() {
                    err.status = status_text(err.code).to_string();
                }
                err
            }
            _ => Error::internal_server_error("", text.trim()),
        }
    }

    /// Whether a client may safely send the same request again (to another node):
    /// the service was unavailable or timed out. 500 is retried only for calls the
    /// caller marked idempotent; see `CallOptions`.
    pub fn is_retryable(&self, idempotent: bool) -> bool {
        matches!(self.code, 408 | 503) || (idempotent && self.code == 500)
    }

    /// The gRPC status code this error travels as.
    pub fn grpc_code(&self) -> GrpcCode {
        GrpcCode::from_http(self.code)
    }

    /// An error for a gRPC status received without a `micro-error` trailer.
    pub fn from_grpc(id: impl Into<String>, code: GrpcCode, message: &str) -> Self {
        Self::new(id, message, code.to_http())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({})", self.to_json())
    }
}

impl std::error::Error for Error {}

/// The reason phrase of an HTTP status code.
pub fn status_text(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// gRPC status codes (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The code for a numeric `grpc-status`; unknown numbers become `Unknown`.
    pub fn from_i32(n: i32) -> Self {
        use GrpcCode::*;
        match n {
            0 => Ok,
            1 => Cancelled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }

    /// The numeric value sent as `grpc-status`.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The gRPC code an HTTP status travels as (DESIGN.md's table).
    pub fn from_http(code: u16) -> Self {
        use GrpcCode::*;
        match code {
            400 => InvalidArgument,
            401 => Unauthenticated,
            403 => PermissionDenied,
            404 => NotFound,
            408 => DeadlineExceeded,
            409 => AlreadyExists,
            412 => FailedPrecondition,
            413 | 429 => ResourceExhausted,
            499 => Cancelled,
            501 => Unimplemented,
            503 => Unavailable,
            504 => DeadlineExceeded,
            405 | 415 | 422 => InvalidArgument,
            _ if (400..500).contains(&code) => FailedPrecondition,
            _ => Internal,
        }
    }

    /// The HTTP status a gRPC code maps back to.
    pub fn to_http(self) -> u16 {
        use GrpcCode::*;
        match self {
            Ok => 200,
            Cancelled => 499,
            InvalidArgument | OutOfRange => 400,
            Unauthenticated => 401,
            PermissionDenied => 403,
            NotFound => 404,
            DeadlineExceeded => 408,
            AlreadyExists | Aborted => 409,
            FailedPrecondition => 412,
            ResourceExhausted => 429,
            Unimplemented => 501,
            Unavailable => 503,
            Unknown | Internal | DataLoss => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_exact() {
        let e = Error::not_found("greeter", "no such endpoint");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"greeter","code":404,"detail":"no such endpoint","status":"Not Found"})
        );
    }

    #[test]
    fn non_error_codes_become_500() {
        assert_eq!(Error::new("x", "y", 200).code(), 500);
        assert_eq!(Error::new("x", "y", 0).code(), 500);
        assert_eq!(Error::parse(r#"{"code":200,"detail":"odd"}"#).code(), 500);
    }

    #[test]
    fn parse_foreign_text() {
        let e = Error::parse("upstream connect error");
        assert_eq!(e.code(), 500);
        assert_eq!(e.detail(), "upstream connect error");
        assert_eq!(e.status(), "Internal Server Error");
        // JSON that is not an error object is foreign text too.
        assert_eq!(Error::parse("{\"a\":1}").detail(), "{\"a\":1}");
        // Missing status is filled in.
        assert_eq!(
            Error::parse(r#"{"code":409,"detail":"x"}"#).status(),
            "Conflict"
        );
    }

    #[test]
    fn grpc_mapping_round_trips_the_design_table() {
        for (http, grpc) in [
            (400, GrpcCode::InvalidArgument),
            (401, GrpcCode::Unauthenticated),
            (403, GrpcCode::PermissionDenied),
            (404, GrpcCode::NotFound),
            (408, GrpcCode::DeadlineExceeded),
            (409, GrpcCode::AlreadyExists),
            (429, GrpcCode::ResourceExhausted),
            (500, GrpcCode::Internal),
            (501, GrpcCode::Unimplemented),
            (503, GrpcCode::Unavailable),
        ] {
            assert_eq!(GrpcCode::from_http(http), grpc, "{http}");
            assert_eq!(grpc.to_http(), http, "{grpc:?}");
        }
        for n in 0..=20 {
            let c = GrpcCode::from_i32(n);
            if n <= 16 {
                assert_eq!(c.as_i32(), n);
            } else {
                assert_eq!(c, GrpcCode::Unknown);
            }
        }
    }

    #[test]
    fn retryable_codes() {
        assert!(Error::timeout("", "").is_retryable(false));
        assert!(Error::service_unavailable("", "").is_retryable(false));
        assert!(!Error::internal_server_error("", "").is_retryable(false));
        assert!(Error::internal_server_error("", "").is_retryable(true));
        assert!(!Error::bad_request("", "").is_retryable(true));
    }
}
