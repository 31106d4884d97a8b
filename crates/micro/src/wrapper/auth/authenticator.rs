//! Who is calling: credentials from the metadata, verified into an [`Account`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::{self, ApiKeys, JwtKey, KeyOwner};
use super::ID;
use crate::{Error, Metadata};

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// A signed JWT.
    Jwt,
    /// A static API key.
    ApiKey,
}

impl AccountKind {
    /// `jwt` or `api_key`, as in `micro-auth-kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Jwt => "jwt",
            AccountKind::ApiKey => "api_key",
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// Who (`sub`).
    pub subject: String,
    /// What it may do: a token's `scope` (space-separated), `scp` or `scopes`; an
    /// API key's scopes.
    pub scopes: Vec<String>,
    /// How it proved it.
    pub kind: AccountKind,
    /// Every claim of the token (empty for an API key).
    pub claims: Map<String, Value>,
}

impl Account {
    /// An account with `subject`, no scopes and no claims (kind: API key).
    pub fn new(subject: impl Into<String>) -> Self {
        Account {
            subject: subject.into(),
            scopes: Vec::new(),
            kind: AccountKind::ApiKey,
            claims: Map::new(),
        }
    }
    /// Adds a scope.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }
    /// Whether the account holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
    /// A claim of the token.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

/// Verifies credentials — `Authorization: Bearer <jwt or API key>` or an API key
/// header — into an [`Account`], or a 401 that says what was wrong (never echoing
/// the credential).
///
/// A token is checked against the keys of its algorithm's family only: HMAC
/// tokens against shared secrets, RSA/EC/Ed tokens against public keys, so a
/// token "signed" with a public key as an HMAC secret is refused; `alg: none` is
/// refused. `exp` is required (unless switched off) and `exp`/`nbf` are checked
/// with a leeway.
///
/// ```
/// use micro::wrapper::auth::Authenticator;
/// use micro::Metadata;
///
/// let auth = Authenticator::builder()
///     .secret("a shared secret of at least 32 bytes!!")
///     .api_key("k-123", "ci", ["deploy"])
///     .build()?;
/// let mut md = Metadata::new();
/// md.insert("authorization", "Bearer k-123");
/// let account = auth.authenticate(&md)?.expect("credentials were sent");
/// assert_eq!(account.subject, "ci");
/// assert!(account.has_scope("deploy"));
///
/// md.insert("authorization", "Bearer not-a-key");
/// assert_eq!(auth.authenticate(&md).unwrap_err().code(), 401);
/// assert!(auth.authenticate(&Metadata::new())?.is_none());
/// # Ok::<(), micro::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Vec<JwtKey>,
    api_keys: ApiKeys,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    require_exp: bool,
    api_key_header: Option<String>,
}

/// Builds an [`Authenticator`]; see there for an example.
#[derive(Default)]
pub struct AuthenticatorBuilder {
    keys: Vec<JwtKey>,
    api_keys: ApiKeys,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Option<Duration>,
    require_exp: Option<bool>,
    api_key_header: Option<String>,
    errors: Vec<Error>,
}

impl std::fmt::Debug for AuthenticatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatorBuilder")
            .field("keys", &self.keys)
            .field("api_keys", &self.api_keys)
            .finish_non_exhaustive()
    }
}

impl AuthenticatorBuilder {
    /// Accepts HS256/384/512 tokens signed with this shared secret.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        if secret.is_empty() {
            self.errors
                .push(Error::bad_request(ID, "auth.secret is empty"));
        } else {
            if secret.len() < 32 {
                tracing::warn!(
                    "auth.secret is shorter than 32 bytes: HS256 secrets should be at least 32 random bytes"
                );
            }
            self.keys.push(JwtKey {
                kid: None,
                alg: None,
                key: jsonwebtoken::DecodingKey::from_secret(secret),
            });
        }
        self
    }
    /// Accepts HS* tokens signed with the secret in this file (its trailing
    /// newline dropped).
    pub fn secret_file(self, path: impl Into<PathBuf>) -> Self {
        match keys::secret_from_file(&path.into()) {
            Ok(secret) => self.secret(secret),
            Err(e) => self.error(e),
        }
    }
    /// Accepts tokens signed with the keys of this JWKS document (`{"keys":[…]}`),
    /// chosen by the token's `kid`.
    pub fn jwks(mut self, json: &str) -> Self {
        match keys::jwks_keys(json, "document") {
            Ok(keys) => self.keys.extend(keys),
            Err(e) => self.errors.push(e),
        }
        self
    }
    /// Like [`jwks`](Self::jwks), from a file.
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let loaded = keys::read(&path, "jwks_file").and_then(|bytes| {
            let text = String::from_utf8_lossy(&bytes);
            keys::jwks_keys(&text, &path.display().to_string())
        });
        match loaded {
            Ok(keys) => self.keys.extend(keys),
            Err(e) => self.errors.push(e),
        }
        self
    }
    /// Accepts tokens signed with this PEM public key (RSA, EC or Ed25519).
    pub fn public_key_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        match keys::pem_key(pem.as_ref(), "public key") {
            Ok(key) => self.keys.push(key),
            Err(e) => self.errors.push(e),
        }
        self
    }
    /// Like [`public_key_pem`](Self::public_key_pem), from a file.
    pub fn public_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let loaded = keys::read(&path, "public_key_file")
            .and_then(|pem| keys::pem_key(&pem, &path.display().to_string()));
        match loaded {
            Ok(key) => self.keys.push(key),
            Err(e) => self.errors.push(e),
        }
        self
    }
    /// Accepts the static API key `key` as `subject` with `scopes`.
    pub fn api_key<I, S>(mut self, key: &str, subject: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let owner = KeyOwner {
            subject: subject.to_string(),
            scopes: scopes.into_iter().map(Into::into).collect(),
        };
        if let Err(e) = self.api_keys.insert(key, owner) {
            self.errors.push(e);
        }
        self
    }
    /// Accepts an API key written `key:subject:scope1 scope2`.
    pub fn api_key_line(mut self, line: &str) -> Self {
        if let Err(e) = self.api_keys.insert_line(line) {
            self.errors.push(e);
        }
        self
    }
    /// Accepts the API keys of a file: a YAML/JSON/TOML table
    /// `key -> {subject, scopes}`, or lines `key:subject:scope1 scope2`.
    pub fn api_keys_file(mut self, path: impl Into<PathBuf>) -> Self {
        if let Err(e) = self.api_keys.load_file(&path.into()) {
            self.errors.push(e);
        }
        self
    }
    /// Requires the token's `iss` to be this one (repeat to allow several).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }
    /// Requires the token's `aud` to name this audience (repeat to allow several).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }
    /// Clock skew allowed on `exp` and `nbf` (default 60s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = Some(leeway);
        self
    }
    /// Whether tokens must carry `exp` (default true).
    pub fn require_exp(mut self, require: bool) -> Self {
        self.require_exp = Some(require);
        self
    }
    /// A header that carries API keys besides `Authorization: Bearer`
    /// (default `x-api-key`; empty: none).
    pub fn api_key_header(mut self, header: impl Into<String>) -> Self {
        self.api_key_header = Some(header.into());
        self
    }

    fn error(mut self, e: Error) -> Self {
        self.errors.push(e);
        self
    }

    /// The authenticator, or the first problem with the keys given (a 400).
    pub fn build(mut self) -> Result<Authenticator, Error> {
        if !self.errors.is_empty() {
            return Err(self.errors.remove(0));
        }
        let header = self
            .api_key_header
            .unwrap_or_else(|| "x-api-key".into())
            .trim()
            .to_ascii_lowercase();
        Ok(Authenticator {
            keys: self.keys,
            api_keys: self.api_keys,
            issuers: self.issuers,
            audiences: self.audiences,
            leeway: self.leeway.unwrap_or(Duration::from_secs(60)),
            require_exp: self.require_exp.unwrap_or(true),
            api_key_header: (!header.is_empty()).then_some(header),
        })
    }
}

fn unauthorized(detail: impl Into<String>) -> Error {
    Error::unauthorized(ID, detail)
}

/// What a caller presented.
enum Presented<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

impl Authenticator {
    /// A builder with no keys.
    pub fn builder() -> AuthenticatorBuilder {
        AuthenticatorBuilder::default()
    }

    /// Whether any key or API key is configured (with none, every credential is
    /// refused).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty() || !self.api_keys.is_empty()
    }

    /// The header API keys may come in (lower case), if any.
    pub fn api_key_header(&self) -> Option<&str> {
        self.api_key_header.as_deref()
    }

    fn presented<'a>(&self, md: &'a Metadata) -> Result<Option<Presented<'a>>, Error> {
        if let Some(value) = md.get("authorization") {
            let value = value.trim();
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                let scheme: String = scheme.chars().take(16).collect();
                return Err(unauthorized(format!(
                    "unsupported authorization scheme {scheme:?}: send Authorization: Bearer <token>"
                )));
            }
            let token = rest.trim();
            if token.is_empty() {
                return Err(unauthorized("empty bearer token"));
            }
            return Ok(Some(Presented::Bearer(token)));
        }
        if let Some(header) = &self.api_key_header {
            if let Some(key) = md.get(header).map(str::trim) {
                if key.is_empty() {
                    return Err(unauthorized(format!("empty {header} header")));
                }
                return Ok(Some(Presented::ApiKey(key)));
            }
        }
        Ok(None)
    }

    /// The caller's account: `Ok(None)` when it sent no credentials, a 401 when
    /// they are not valid.
    pub fn authenticate(&self, md: &Metadata) -> Result<Option<Account>, Error> {
        match self.presented(md)? {
            None => Ok(None),
            Some(Presented::Bearer(token)) => self.verify(token).map(Some),
            Some(Presented::ApiKey(key)) => match self.api_keys.get(key) {
                Some(owner) => Ok(Some(api_account(owner))),
                None => Err(unauthorized("unknown API key")),
            },
        }
    }

    /// Verifies a bearer credential: a known API key, else a JWT.
    pub fn verify(&self, token: &str) -> Result<Account, Error> {
        if let Some(owner) = self.api_keys.get(token) {
            return Ok(api_account(owner));
        }
        let jwt_shaped = token.split('.').count() == 3;
        if !self.has_keys() {
            return Err(unauthorized(
                "this service has no keys to verify credentials with (set auth.secret, auth.jwks_file, auth.public_key_file or auth.api_keys)",
            ));
        }
        if !jwt_shaped || self.keys.is_empty() {
            return Err(unauthorized(if self.api_keys.is_empty() {
                "malformed token: not a JWT"
            } else {
                "unknown API key"
            }));
        }
        self.verify_jwt(token)
    }

    /// Verifies a JWT.
    pub fn verify_jwt(&self, token: &str) -> Result<Account, Error> {
        let (alg, kid) = header_of(token)?;
        let fits = |k: &&JwtKey| k.key.family() == alg.family() && k.alg.is_none_or(|a| a == alg);
        let candidates: Vec<&JwtKey> = match &kid {
            None => self.keys.iter().filter(fits).collect(),
            Some(kid) => {
                let named: Vec<&JwtKey> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    // A token with a kid may still be meant for a key that has
                    // none (a shared secret, a PEM key).
                    let unnamed: Vec<&JwtKey> = self
                        .keys
                        .iter()
                        .filter(|k| k.kid.is_none())
                        .filter(fits)
                        .collect();
                    if unnamed.is_empty() {
                        let kid: String = kid.chars().take(64).collect();
                        return Err(unauthorized(format!("unknown key id {kid:?}")));
                    }
                    unnamed
                } else {
                    named.into_iter().filter(fits).collect()
                }
            }
        };
        if candidates.is_empty() {
            return Err(unauthorized(format!(
                "no key accepts {alg:?} tokens{}",
                if kid.is_some() {
                    " with this key id"
                } else {
                    ""
                }
            )));
        }
        let validation = self.validation(alg);
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return account_of(data.claims),
                // Another key may have signed it.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => last = Some(e),
                Err(e) => return Err(unauthorized(describe(e.kind()))),
            }
        }
        Err(unauthorized(describe(
            last.as_ref()
                .map_or(&ErrorKind::InvalidSignature, |e| e.kind()),
        )))
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.required_spec_claims.clear();
        if self.require_exp {
            v.required_spec_claims.insert("exp".into());
        }
        if self.issuers.is_empty() {
            v.iss = None;
        } else {
            v.set_issuer(&self.issuers);
            v.required_spec_claims.insert("iss".into());
        }
        if self.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audiences);
            v.required_spec_claims.insert("aud".into());
        }
        v
    }
}

fn api_account(owner: &KeyOwner) -> Account {
    Account {
        subject: owner.subject.clone(),
        scopes: owner.scopes.clone(),
        kind: AccountKind::ApiKey,
        claims: Map::new(),
    }
}

/// The algorithm and key id of a token, read before any key is chosen.
fn header_of(token: &str) -> Result<(Algorithm, Option<String>), Error> {
    let malformed = || unauthorized("malformed token: its header is not base64url JSON");
    let head = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| malformed())?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let Some(alg) = header.get("alg").and_then(Value::as_str) else {
        return Err(unauthorized("malformed token: its header has no alg"));
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(unauthorized("unsigned tokens (alg none) are not accepted"));
    }
    let alg = Algorithm::from_str(alg).map_err(|_| {
        let alg: String = alg.chars().take(16).collect();
        unauthorized(format!("unsupported token algorithm {alg:?}"))
    })?;
    let kid = header.get("kid").and_then(Value::as_str).map(String::from);
    Ok((alg, kid))
}

/// The verified claims as an account.
fn account_of(claims: Map<String, Value>) -> Result<Account, Error> {
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(unauthorized("token has no sub (subject) claim")),
    };
    let mut scopes: Vec<String> = Vec::new();
    for name in ["scope", "scp", "scopes"] {
        if let Some(v) = claims.get(name) {
            for s in keys::scopes_of(v) {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
        }
    }
    Ok(Account {
        subject,
        scopes,
        kind: AccountKind::Jwt,
        claims,
    })
}

/// What was wrong with a token, in words (never the token).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "invalid token signature".into(),
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidIssuer => "token issuer (iss) is not accepted".into(),
        ErrorKind::InvalidAudience => "token audience (aud) is not accepted".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("token has no {c} claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("token claim {c} is malformed"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "token algorithm does not match the key".into()
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "malformed token".into(),
        _ => "token rejected".into(),
    }
}
