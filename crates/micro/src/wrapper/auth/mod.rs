//! `auth`: who may call which endpoint.
//!
//! On the handler point it verifies the caller's credentials and applies the
//! rules:
//!
//! - **Credentials**: `Authorization: Bearer <token>` (the scheme in any case), or
//!   an API key in `Authorization: Bearer <key>` or the `x-api-key` header
//!   (setting `api_key_header`). A token is a JWT signed with a shared secret
//!   (HS256/384/512: `secret` / `secret_file`), with a key of a JWKS document
//!   chosen by `kid` (RS*, PS*, ES256/384, EdDSA: `jwks_file`), or with a PEM
//!   public key (`public_key_file`). `alg: none` is refused, and so is a token
//!   whose algorithm does not fit the key's kind (an HS256 token "signed" with a
//!   public key). `exp` is required (`require_exp`), `exp` and `nbf` are checked
//!   with a `leeway`, `iss` and `aud` when `issuer` / `audience` are set. API keys
//!   (`api_keys`, `api_keys_file`) are kept as SHA-256 digests.
//! - **Rules**: an ordered list, the first match wins (`rules` inline in the
//!   config file, or `rules_file`, YAML/JSON/TOML):
//!
//!   ```yaml
//!   micro:
//!     wrappers: auth
//!     wrapper:
//!       auth:
//!         secret_file: /run/secrets/jwt
//!         default: allow            # authenticated callers no rule names
//!         rules:
//!           - endpoint: Greeter.Hello
//!             public: true          # or subjects: public — no token needed
//!           - endpoint: Admin.*
//!             scopes: [admin]       # holding any of these scopes
//!           - endpoint: Admin.*
//!             subjects: ["ops-bot"] # or one of these subjects
//!           - endpoint: Admin.*     # no subjects/scopes (or "*"): anyone authenticated
//!             action: deny
//!   ```
//!
//!   Patterns are globs (`*`, `Greeter.*`, `Greeter.Hello`); a rule may also name
//!   `service` patterns. When no rule matches, authenticated callers are allowed
//!   (`default: deny` refuses them).
//! - **Answers**: no credentials, or invalid ones, where credentials are needed:
//!   401 (gRPC `UNAUTHENTICATED`) with a detail that says what was wrong (expired,
//!   invalid signature, unknown key id, …) and never the credential. Valid
//!   credentials that a rule denies: 403 (`PERMISSION_DENIED`). On a public
//!   endpoint invalid credentials are ignored and the caller is anonymous.
//! - **What the handler sees**: the caller's `micro-auth-subject`,
//!   `micro-auth-scopes` (space-separated) and `micro-auth-kind` (`jwt` or
//!   `api_key`) in the request metadata. Any `micro-auth-*` keys the caller sent
//!   are removed first, so they cannot be forged. The `authorization` header is
//!   kept, so a handler may pass the caller's token on.
//!
//! The internal `Debug.*` endpoints are never wrapped, so health checks stay open.
//!
//! On the call point, with `token` or `token_file` set, the client sends
//! `Authorization: Bearer <token>` on calls that carry no `authorization` of
//! their own, so a service can call other services that use `auth`.
//!
//! The pieces are public so that the proxy and the API gateway apply the same
//! checks: [`Auth`] (from the same settings), [`Authenticator`] and [`Rules`].

mod authenticator;
mod keys;
mod rules;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use serde::Deserialize;
use serde_json::Value;
use tower::Service;

pub use authenticator::{Account, AccountKind, Authenticator, AuthenticatorBuilder};
pub use rules::{Action, Decision, Rule, Rules, Who};

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{de, Key, Settings};
use super::{CallWrapper, HandlerWrapper, Wrappers};
use crate::client::Attempt;
use crate::server::{RawReply, RawRequest};
use crate::{Error, Metadata};

/// The error id of the `auth` wrapper's answers.
pub(crate) const ID: &str = "micro.auth";

/// The metadata key that carries the caller's subject to the handler.
pub const SUBJECT: &str = "micro-auth-subject";
/// The metadata key that carries the caller's scopes (space-separated).
pub const SCOPES: &str = "micro-auth-scopes";
/// The metadata key that says how the caller authenticated (`jwt`, `api_key`).
pub const KIND: &str = "micro-auth-kind";
/// The prefix of the metadata keys only `auth` may set.
pub const PREFIX: &str = "micro-auth-";

const KEYS: &[Key] = &[
    Key {
        name: "secret",
        default: "",
        about: "shared secret of HS256/384/512 tokens (prefer secret_file; never logged)",
    },
    Key {
        name: "secret_file",
        default: "",
        about: "file holding the shared secret (its trailing newline dropped)",
    },
    Key {
        name: "jwks_file",
        default: "",
        about: "JWKS file ({\"keys\":[...]}) of the public keys of RS*/PS*/ES*/EdDSA tokens, chosen by kid",
    },
    Key {
        name: "public_key_file",
        default: "",
        about: "PEM public key (RSA, EC or Ed25519) of signed tokens",
    },
    Key {
        name: "issuer",
        default: "",
        about: "accepted token issuers (iss), comma-separated (default: any)",
    },
    Key {
        name: "audience",
        default: "",
        about: "accepted token audiences (aud), comma-separated (default: not checked)",
    },
    Key {
        name: "leeway",
        default: "60s",
        about: "clock skew allowed on exp and nbf",
    },
    Key {
        name: "require_exp",
        default: "true",
        about: "refuse tokens without an exp claim",
    },
    Key {
        name: "api_keys",
        default: "",
        about: "static API keys, each key:subject:scope1 scope2 (a list, or comma-separated)",
    },
    Key {
        name: "api_keys_file",
        default: "",
        about: "file of API keys: YAML/JSON/TOML table key -> {subject, scopes}, or lines key:subject:scopes",
    },
    Key {
        name: "api_key_header",
        default: "x-api-key",
        about: "header that carries an API key besides Authorization: Bearer (empty: none)",
    },
    Key {
        name: "rules",
        default: "",
        about: "access rules, first match wins: [{endpoint, service, subjects, scopes, public, action}] (config file or JSON)",
    },
    Key {
        name: "rules_file",
        default: "",
        about: "YAML/JSON/TOML file of access rules (a list, or {rules: [...], default})",
    },
    Key {
        name: "default",
        default: "allow",
        about: "what authenticated callers that no rule matches get: allow or deny",
    },
    Key {
        name: "token",
        default: "",
        about: "client: bearer token sent on outgoing calls that carry no Authorization",
    },
    Key {
        name: "token_file",
        default: "",
        about: "client: file holding the bearer token for outgoing calls",
    },
];

#[derive(Deserialize)]
struct AuthSettings {
    #[serde(default, deserialize_with = "opt_text")]
    secret: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    secret_file: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    jwks_file: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    public_key_file: Option<String>,
    #[serde(default, deserialize_with = "de::list")]
    issuer: Vec<String>,
    #[serde(default, deserialize_with = "de::list")]
    audience: Vec<String>,
    #[serde(deserialize_with = "de::duration")]
    leeway: Duration,
    #[serde(deserialize_with = "flag")]
    require_exp: bool,
    #[serde(default, deserialize_with = "de::list")]
    api_keys: Vec<String>,
    #[serde(default, deserialize_with = "opt_text")]
    api_keys_file: Option<String>,
    #[serde(default, deserialize_with = "text")]
    api_key_header: String,
    #[serde(default)]
    rules: Value,
    #[serde(default, deserialize_with = "opt_text")]
    rules_file: Option<String>,
    default: Value,
    #[serde(default, deserialize_with = "opt_text")]
    token: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    token_file: Option<String>,
}

/// Text that a flag may have turned into a number (`--wrapper auth.secret=1234`).
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        Value::Number(n) if n.is_f64() => Err(serde::de::Error::custom(
            "a value of digits too long for a number was read as one and lost digits: \
             quote it (--wrapper 'auth.secret=\"…\"') or put it in a file",
        )),
        v @ (Value::Number(_) | Value::Bool(_)) => Ok(v.to_string()),
        _ => Err(serde::de::Error::custom("expected text")),
    }
}

/// Text, where empty means unset.
fn opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = text(d)?;
    Ok((!s.trim().is_empty()).then_some(s))
}

/// `true`/`false`, also as text.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) => s.trim().parse().map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "expected true or false, found {other}"
        ))),
    }
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "auth",
    about: "verify bearer tokens (JWT by shared secret, JWKS or PEM key) or API keys, and apply per-endpoint allow/deny rules: 401/403",
    keys: KEYS,
    always_on: false,
    build,
};

fn build(settings: &Settings, _ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: AuthSettings = settings_of(settings, "auth", KEYS)?;
    let auth = Arc::new(Auth::from_typed(&s)?);
    if !auth.authenticator.has_keys() {
        tracing::warn!(
            "the auth wrapper has no keys (set auth.secret_file, auth.jwks_file, auth.public_key_file or auth.api_keys): \
             every call to an endpoint that is not public is refused"
        );
    }
    let mut wrappers = Wrappers::new().handler(HandlerWrapper::new(
        "auth",
        tower::layer::layer_fn(move |inner| AuthService {
            inner,
            auth: auth.clone(),
        }),
    ));
    if let Some(token) = client_token(&s)? {
        let header: Arc<str> = format!("Bearer {token}").into();
        wrappers = wrappers.call(CallWrapper::new(
            "auth",
            tower::layer::layer_fn(move |inner| AttachToken {
                inner,
                header: header.clone(),
            }),
        ));
    }
    Ok(wrappers)
}

fn client_token(s: &AuthSettings) -> Result<Option<String>, Error> {
    let token = match (&s.token, &s.token_file) {
        (Some(_), Some(_)) => {
            return Err(Error::bad_request(
                ID,
                "set auth.token or auth.token_file, not both",
            ))
        }
        (Some(t), None) => t.trim().to_string(),
        (None, Some(path)) => {
            let bytes = keys::read(path.as_ref(), "token_file")?;
            String::from_utf8(bytes)
                .map_err(|_| {
                    Error::bad_request(ID, format!("auth.token_file {path} is not UTF-8"))
                })?
                .trim()
                .to_string()
        }
        (None, None) => return Ok(None),
    };
    if token.is_empty() || token.contains(['\r', '\n']) {
        return Err(Error::bad_request(
            ID,
            "auth.token must be one line of text",
        ));
    }
    Ok(Some(token))
}

/// The `auth` wrapper's decision, usable outside the wrapper (proxy, gateway):
/// verify the credentials in some metadata, then apply the rules.
///
/// ```
/// use micro::wrapper::auth::{Auth, Authenticator, Rule, Rules};
/// use micro::Metadata;
///
/// let auth = Auth::new(
///     Authenticator::builder().api_key("k1", "ci", ["deploy"]).build()?,
///     Rules::new()
///         .rule(Rule::endpoint("Greeter.Hello").public())
///         .rule(Rule::endpoint("Deploy.*").scopes(["deploy"]))
///         .rule(Rule::endpoint("Deploy.*").deny()),
/// );
/// let anonymous = Metadata::new();
/// assert!(auth.check("greeter", "Greeter.Hello", &anonymous)?.is_none());
/// assert_eq!(auth.check("deployer", "Deploy.Run", &anonymous).unwrap_err().code(), 401);
///
/// let mut md = Metadata::new();
/// md.insert("x-api-key", "k1");
/// let account = auth.check("deployer", "Deploy.Run", &md)?.expect("an account");
/// assert_eq!(account.subject, "ci");
/// # Ok::<(), micro::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Auth {
    authenticator: Authenticator,
    rules: Rules,
}

impl Auth {
    /// Checks with `authenticator` and `rules`.
    pub fn new(authenticator: Authenticator, rules: Rules) -> Self {
        Auth {
            authenticator,
            rules,
        }
    }

    /// The `auth` wrapper's settings (`micro.wrapper.auth.*`,
    /// `MICRO_WRAPPER_AUTH_*`, `--wrapper auth.KEY=VALUE`) as an `Auth`; a bad
    /// setting or an unreadable file is a 400.
    pub fn from_settings(settings: &Settings) -> Result<Auth, Error> {
        let s: AuthSettings = settings_of(settings, "auth", KEYS)?;
        Auth::from_typed(&s)
    }

    fn from_typed(s: &AuthSettings) -> Result<Auth, Error> {
        let mut b = Authenticator::builder()
            .leeway(s.leeway)
            .require_exp(s.require_exp)
            .api_key_header(s.api_key_header.clone());
        if let Some(secret) = &s.secret {
            b = b.secret(secret.as_bytes());
        }
        if let Some(path) = &s.secret_file {
            b = b.secret_file(path);
        }
        if let Some(path) = &s.jwks_file {
            b = b.jwks_file(path);
        }
        if let Some(path) = &s.public_key_file {
            b = b.public_key_file(path);
        }
        for line in &s.api_keys {
            b = b.api_key_line(line);
        }
        if let Some(path) = &s.api_keys_file {
            b = b.api_keys_file(path);
        }
        for issuer in &s.issuer {
            b = b.issuer(issuer.clone());
        }
        for audience in &s.audience {
            b = b.audience(audience.clone());
        }
        let authenticator = b.build()?;
        let mut rules = Rules::from_value(&s.rules)?;
        if let Some(path) = &s.rules_file {
            let from_file = Rules::from_file(&PathBuf::from(path))?;
            if !rules.rules().is_empty() {
                return Err(Error::bad_request(
                    ID,
                    "set auth.rules or auth.rules_file, not both",
                ));
            }
            rules = from_file;
        }
        // The `default` setting wins over a rules file's own `default`
        // only when it says deny: allow is the setting's default.
        if rules::parse_default(&s.default)? {
            rules = rules.default_deny(true);
        }
        Ok(Auth::new(authenticator, rules))
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }
    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Whether a call to `endpoint` of `service` with `metadata` may go on: the
    /// caller's account (`None`: anonymous, on a public endpoint), a 401 (no or
    /// invalid credentials where they are needed) or a 403 (denied).
    pub fn check(
        &self,
        service: &str,
        endpoint: &str,
        metadata: &Metadata,
    ) -> Result<Option<Account>, Error> {
        let verified = self.authenticator.authenticate(metadata);
        let account = verified.as_ref().ok().and_then(Option::as_ref);
        match self.rules.decide(service, endpoint, account) {
            Decision::Public | Decision::Allow => Ok(account.cloned()),
            Decision::Deny => match verified {
                // Bad credentials: say what was wrong with them.
                Err(e) => Err(e),
                Ok(account) => self
                    .rules
                    .check(service, endpoint, account.as_ref())
                    .map(|()| account),
            },
        }
    }
}

/// Removes every `micro-auth-*` key (set by the caller: not to be trusted).
pub fn strip_metadata(md: &mut Metadata) {
    let forged: Vec<String> = md
        .iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .map(|(k, _)| k.to_string())
        .collect();
    for key in forged {
        md.remove(&key);
    }
}

/// Writes the account's subject, scopes and kind into the metadata.
pub fn write_metadata(account: &Account, md: &mut Metadata) {
    md.insert(SUBJECT, account.subject.clone());
    md.insert(SCOPES, account.scopes.join(" "));
    md.insert(KIND, account.kind.as_str());
}

/// The handler middleware.
#[derive(Clone)]
struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S> Service<RawRequest> for AuthService<S>
where
    S: Service<RawRequest, Response = RawReply, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = RawReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<RawReply, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RawRequest) -> Self::Future {
        strip_metadata(req.ctx.metadata_mut());
        match self
            .auth
            .check(req.ctx.service(), req.ctx.endpoint(), req.ctx.metadata())
        {
            Ok(account) => {
                if let Some(account) = account {
                    write_metadata(&account, req.ctx.metadata_mut());
                }
                self.inner.call(req).boxed()
            }
            Err(e) => {
                tracing::debug!(
                    endpoint = req.ctx.endpoint(),
                    code = e.code(),
                    "auth refused a call: {}",
                    e.detail()
                );
                futures_util::future::ready(Err(e)).boxed()
            }
        }
    }
}

/// The call middleware: sends the configured token when the call has none.
#[derive(Clone)]
struct AttachToken<S> {
    inner: S,
    header: Arc<str>,
}

impl<S> Service<Attempt> for AttachToken<S>
where
    S: Service<Attempt, Response = RawReply, Error = Error>,
{
    type Response = RawReply;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut attempt: Attempt) -> Self::Future {
        attempt
            .metadata_mut()
            .insert_if_absent("authorization", self.header.to_string());
        self.inner.call(attempt)
    }
}
