//! Tests of token and API key verification and of the handler middleware.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::codec::Format;
use crate::request::CallContext;
use crate::server::RawBody;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const RSA1: &str = include_str!("../../../tests/fixtures/auth/rsa1.pem");
const RSA1_PUB: &str = include_str!("../../../tests/fixtures/auth/rsa1.pub.pem");
const RSA2: &str = include_str!("../../../tests/fixtures/auth/rsa2.pem");
const EC1: &str = include_str!("../../../tests/fixtures/auth/ec1.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "scope": "read write"})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET),
    )
}

fn rsa(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWKS document of the test keys: rsa-1, rsa-2 (RS256) and ec-1 (ES256).
fn jwks() -> String {
    let mut keys = Vec::new();
    for (kid, key, alg) in [
        ("rsa-1", rsa(RSA1), Algorithm::RS256),
        ("rsa-2", rsa(RSA2), Algorithm::RS256),
        (
            "ec-1",
            EncodingKey::from_ec_pem(EC1.as_bytes()).unwrap(),
            Algorithm::ES256,
        ),
    ] {
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        keys.push(serde_json::to_value(jwk).unwrap());
    }
    json!({ "keys": keys }).to_string()
}

fn hs_auth() -> Authenticator {
    Authenticator::builder().secret(SECRET).build().unwrap()
}

fn md(authorization: &str) -> Metadata {
    let mut md = Metadata::new();
    md.insert("authorization", authorization);
    md
}

/// The 401 detail for `token`.
fn refused(auth: &Authenticator, token: &str) -> String {
    let e = auth.verify(token).unwrap_err();
    assert_eq!(e.code(), 401, "{e}");
    assert!(!e.detail().contains(token), "the token is echoed: {e}");
    e.detail().to_string()
}

#[test]
fn a_valid_hs256_token_gives_the_account() {
    let auth = hs_auth();
    let mut c = claims("alice");
    c["scp"] = json!(["admin", "read"]);
    c["tenant"] = json!("acme");
    let account = auth.verify(&hs(&c)).unwrap();
    assert_eq!(account.subject, "alice");
    assert_eq!(account.scopes, ["read", "write", "admin"]);
    assert_eq!(account.kind, AccountKind::Jwt);
    assert_eq!(account.claim("tenant"), Some(&json!("acme")));
    // HS384/HS512 with the same secret, and any case of "Bearer".
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let t = sign(alg, None, &claims("bob"), &EncodingKey::from_secret(SECRET));
        let a = auth
            .authenticate(&md(&format!("bEaReR  {t}")))
            .unwrap()
            .unwrap();
        assert_eq!(a.subject, "bob");
    }
}

#[test]
fn auth_rejects_a_forged_token() {
    let auth = hs_auth();
    let token = hs(&claims("alice"));
    // Same signature, payload changed to another subject.
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = b64(json!({"sub": "admin", "exp": now() + 600})
        .to_string()
        .as_bytes());
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_eq!(refused(&auth, &forged), "invalid token signature");
    // A signature that is not even base64.
    let garbled = format!("{}.{}.!!!", parts[0], parts[1]);
    assert!(refused(&auth, &garbled).contains("malformed"));
}

#[test]
fn a_token_signed_with_another_key_is_rejected() {
    let auth = hs_auth();
    let other = sign(
        Algorithm::HS256,
        None,
        &claims("alice"),
        &EncodingKey::from_secret(b"another secret, 32 bytes long!!!"),
    );
    assert_eq!(refused(&auth, &other), "invalid token signature");
}

#[test]
fn alg_none_is_rejected() {
    let auth = hs_auth();
    for alg in ["none", "None", "NONE"] {
        let head = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        let body = b64(claims("alice").to_string().as_bytes());
        for token in [format!("{head}.{body}."), format!("{head}.{body}.e30")] {
            assert!(refused(&auth, &token).contains("alg none"));
        }
    }
    let head = b64(br#"{"alg":"XS999"}"#);
    let body = b64(claims("a").to_string().as_bytes());
    assert!(refused(&auth, &format!("{head}.{body}.x")).contains("unsupported token algorithm"));
    let head = b64(br#"{"typ":"JWT"}"#);
    assert!(refused(&auth, &format!("{head}.{body}.x")).contains("no alg"));
}

#[test]
fn expired_and_not_yet_valid_tokens_are_rejected() {
    let auth = Authenticator::builder()
        .secret(SECRET)
        .leeway(Duration::from_secs(5))
        .build()
        .unwrap();
    let expired = hs(&json!({"sub": "a", "exp": now() - 60}));
    assert_eq!(refused(&auth, &expired), "token expired");
    let early = hs(&json!({"sub": "a", "exp": now() + 600, "nbf": now() + 60}));
    assert!(refused(&auth, &early).contains("not valid yet"));
    // Within the leeway both pass.
    assert!(auth
        .verify(&hs(&json!({"sub": "a", "exp": now() - 2})))
        .is_ok());
    assert!(auth
        .verify(&hs(
            &json!({"sub": "a", "exp": now() + 600, "nbf": now() + 2})
        ))
        .is_ok());
    // exp is required unless switched off; sub is always required.
    let no_exp = hs(&json!({"sub": "a"}));
    assert_eq!(refused(&auth, &no_exp), "token has no exp claim");
    let lax = Authenticator::builder()
        .secret(SECRET)
        .require_exp(false)
        .build()
        .unwrap();
    assert!(lax.verify(&no_exp).is_ok());
    assert!(refused(&lax, &hs(&json!({"exp": now() + 60}))).contains("no sub"));
}

#[test]
fn issuer_and_audience_are_checked() {
    let auth = Authenticator::builder()
        .secret(SECRET)
        .issuer("https://id.example")
        .audience("greeter")
        .audience("shop")
        .build()
        .unwrap();
    let mut c = claims("a");
    c["iss"] = json!("https://id.example");
    c["aud"] = json!("shop");
    assert!(auth.verify(&hs(&c)).is_ok());
    c["iss"] = json!("https://evil.example");
    assert!(refused(&auth, &hs(&c)).contains("issuer"));
    c["iss"] = json!("https://id.example");
    c["aud"] = json!("billing");
    assert!(refused(&auth, &hs(&c)).contains("audience"));
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(refused(&auth, &hs(&c)), "token has no aud claim");
    c["aud"] = json!("shop");
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(refused(&auth, &hs(&c)), "token has no iss claim");
    // Without an audience setting, a token's aud is not checked.
    let mut c = claims("a");
    c["aud"] = json!(["x", "y"]);
    assert!(hs_auth().verify(&hs(&c)).is_ok());
}

#[test]
fn jwks_keys_are_chosen_by_kid() {
    let auth = Authenticator::builder().jwks(&jwks()).build().unwrap();
    let t1 = sign(Algorithm::RS256, Some("rsa-1"), &claims("one"), &rsa(RSA1));
    let t2 = sign(Algorithm::RS256, Some("rsa-2"), &claims("two"), &rsa(RSA2));
    assert_eq!(auth.verify(&t1).unwrap().subject, "one");
    assert_eq!(auth.verify(&t2).unwrap().subject, "two");
    // Signed by rsa-2 but claiming to be rsa-1.
    let liar = sign(Algorithm::RS256, Some("rsa-1"), &claims("x"), &rsa(RSA2));
    assert_eq!(refused(&auth, &liar), "invalid token signature");
    let unknown = sign(Algorithm::RS256, Some("rsa-9"), &claims("x"), &rsa(RSA1));
    assert_eq!(refused(&auth, &unknown), "unknown key id \"rsa-9\"");
    // No kid: every RSA key is tried.
    let bare = sign(Algorithm::RS256, None, &claims("bare"), &rsa(RSA2));
    assert_eq!(auth.verify(&bare).unwrap().subject, "bare");
    // ES256 with the EC key.
    let ec = EncodingKey::from_ec_pem(EC1.as_bytes()).unwrap();
    let t3 = sign(Algorithm::ES256, Some("ec-1"), &claims("ec"), &ec);
    assert_eq!(auth.verify(&t3).unwrap().subject, "ec");
    // The key's alg binds: rsa-1 is for RS256, not RS512.
    let rs512 = sign(Algorithm::RS512, Some("rsa-1"), &claims("x"), &rsa(RSA1));
    assert!(refused(&auth, &rs512).contains("no key accepts RS512"));
}

#[test]
fn a_good_rs256_token_from_a_pem_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pub.pem");
    std::fs::write(&path, RSA1_PUB).unwrap();
    let auth = Authenticator::builder()
        .public_key_file(&path)
        .build()
        .unwrap();
    let t = sign(Algorithm::RS256, None, &claims("rs"), &rsa(RSA1));
    assert_eq!(auth.verify(&t).unwrap().subject, "rs");
    let other = sign(Algorithm::RS256, None, &claims("rs"), &rsa(RSA2));
    assert_eq!(refused(&auth, &other), "invalid token signature");
    let e = Authenticator::builder()
        .public_key_pem("not a key")
        .build()
        .unwrap_err();
    assert!(e.detail().contains("not a PEM public key"), "{e}");
}

#[test]
fn hs_rs_confusion_is_rejected() {
    // The classic attack: an HS256 token whose "secret" is the public key.
    let pem_auth = Authenticator::builder()
        .public_key_pem(RSA1_PUB)
        .build()
        .unwrap();
    let jwks_auth = Authenticator::builder().jwks(&jwks()).build().unwrap();
    let public = EncodingKey::from_secret(RSA1_PUB.as_bytes());
    let confused = sign(Algorithm::HS256, None, &claims("mallory"), &public);
    assert!(refused(&pem_auth, &confused).contains("no key accepts HS256"));
    let with_kid = sign(Algorithm::HS256, Some("rsa-1"), &claims("mallory"), &public);
    assert!(refused(&jwks_auth, &with_kid).contains("no key accepts HS256"));
    // And the other way round: an RS256 token against a shared secret.
    let rs = sign(Algorithm::RS256, None, &claims("x"), &rsa(RSA1));
    assert!(refused(&hs_auth(), &rs).contains("no key accepts RS256"));
    // With both kinds of keys configured, each token only meets its own kind.
    let both = Authenticator::builder()
        .secret(SECRET)
        .public_key_pem(RSA1_PUB)
        .build()
        .unwrap();
    assert_eq!(refused(&both, &confused), "invalid token signature");
    assert!(both.verify(&rs).is_ok());
    assert!(both.verify(&hs(&claims("h"))).is_ok());
}

#[test]
fn api_keys_good_and_bad() {
    let auth = Authenticator::builder()
        .api_key("sk-live-1", "ci", ["deploy", "read"])
        .api_key_line("sk-2:bot:")
        .build()
        .unwrap();
    let a = auth.authenticate(&md("Bearer sk-live-1")).unwrap().unwrap();
    assert_eq!((a.subject.as_str(), a.kind), ("ci", AccountKind::ApiKey));
    assert_eq!(a.scopes, ["deploy", "read"]);
    let mut header = Metadata::new();
    header.insert("X-Api-Key", "sk-2");
    assert_eq!(auth.authenticate(&header).unwrap().unwrap().subject, "bot");
    for bad in ["Bearer sk-live-2", "Bearer sk-live-1x", "Bearer a.b.c"] {
        let e = auth.authenticate(&md(bad)).unwrap_err();
        assert_eq!(e.code(), 401);
        assert!(!e.detail().contains("sk-live"), "{e}");
    }
    header.insert("x-api-key", "nope");
    assert_eq!(
        auth.authenticate(&header).unwrap_err().detail(),
        "unknown API key"
    );
    // Only the configured header carries keys.
    let custom = Authenticator::builder()
        .api_key("k", "s", Vec::<String>::new())
        .api_key_header("X-Key")
        .build()
        .unwrap();
    let mut h = Metadata::new();
    h.insert("x-api-key", "k");
    assert!(custom.authenticate(&h).unwrap().is_none());
    h.insert("x-key", "k");
    assert!(custom.authenticate(&h).unwrap().is_some());
}

#[test]
fn other_schemes_and_missing_keys_are_401s() {
    let auth = hs_auth();
    let e = auth.authenticate(&md("Basic YWxpY2U6cHc=")).unwrap_err();
    assert!(
        e.detail()
            .contains("unsupported authorization scheme \"Basic\""),
        "{e}"
    );
    assert!(!e.detail().contains("YWxp"));
    assert!(auth
        .authenticate(&md("Bearer  "))
        .unwrap_err()
        .detail()
        .contains("empty"));
    assert!(refused(&auth, "opaque-token").contains("not a JWT"));
    let none = Authenticator::builder().build().unwrap();
    assert!(!none.has_keys());
    assert!(refused(&none, &hs(&claims("a"))).contains("no keys"));
}

fn settings(flags: &[&str]) -> Settings {
    Settings::from_flags(flags).unwrap()
}

#[test]
fn settings_build_the_same_checks() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "- endpoint: Greeter.Hello\n  public: true\n- endpoint: Admin.*\n  scopes: admin\n- endpoint: Admin.*\n  action: deny\n",
    )
    .unwrap();
    let s = settings(&[
        &format!("auth.secret_file={}", secret.display()),
        &format!("auth.rules_file={}", rules.display()),
        "auth.api_keys=[\"k1:ci:admin\",\"k2:bob\"]",
    ]);
    let auth = Auth::from_settings(&s).unwrap();
    let anon = Metadata::new();
    assert!(auth.check("s", "Greeter.Hello", &anon).unwrap().is_none());
    assert_eq!(
        auth.check("s", "Greeter.Bye", &anon).unwrap_err().code(),
        401
    );
    let token = md(&format!("Bearer {}", hs(&claims("alice"))));
    assert_eq!(
        auth.check("s", "Greeter.Bye", &token)
            .unwrap()
            .unwrap()
            .subject,
        "alice"
    );
    assert_eq!(
        auth.check("s", "Admin.Drop", &token).unwrap_err().code(),
        403
    );
    assert!(auth.check("s", "Admin.Drop", &md("Bearer k1")).is_ok());
    assert_eq!(
        auth.check("s", "Admin.Drop", &md("Bearer k2"))
            .unwrap_err()
            .code(),
        403
    );
    // A bad token: 401 saying why where credentials are needed, anonymous on a
    // public endpoint.
    let expired = md(&format!(
        "Bearer {}",
        hs(&json!({"sub": "a", "exp": now() - 3600}))
    ));
    let e = auth.check("s", "Admin.Drop", &expired).unwrap_err();
    assert_eq!((e.code(), e.detail()), (401, "token expired"));
    assert!(auth
        .check("s", "Greeter.Hello", &expired)
        .unwrap()
        .is_none());

    // default=deny, inline rules, a numeric secret from a flag.
    let s = settings(&[
        "auth.secret=\"12345678901234567890123456789012\"",
        "auth.default=deny",
        "auth.rules=[{\"endpoint\":\"Greeter.*\",\"subjects\":[\"alice\"]}]",
    ]);
    let auth = Auth::from_settings(&s).unwrap();
    let key = EncodingKey::from_secret(b"12345678901234567890123456789012");
    let alice = md(&format!(
        "Bearer {}",
        sign(Algorithm::HS256, None, &claims("alice"), &key)
    ));
    let bob = md(&format!(
        "Bearer {}",
        sign(Algorithm::HS256, None, &claims("bob"), &key)
    ));
    assert!(auth.check("s", "Greeter.Hello", &alice).is_ok());
    assert_eq!(
        auth.check("s", "Greeter.Hello", &bob).unwrap_err().code(),
        403
    );
    assert_eq!(auth.check("s", "Other.X", &alice).unwrap_err().code(), 403);

    for (flags, want) in [
        (vec!["auth.secret_file=/nonexistent/secret"], "cannot read"),
        (vec!["auth.default=maybe"], "allow or deny"),
        (vec!["auth.token=a", "auth.token_file=/x"], "not both"),
        (vec!["auth.api_keys=nokey"], "key:subject"),
        (vec!["auth.leeway=soon"], "wrapper auth"),
        (vec!["auth.secrets=x"], "no setting"),
    ] {
        let e = build(&settings(&flags), &WrapperContext::new("s")).unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.detail().contains(want), "{flags:?}: {e}");
    }
    // A long all-digit secret given as text stays text, every digit kept.
    build(
        &settings(&["auth.secret=12345678901234567890123456789012"]),
        &WrapperContext::new("s"),
    )
    .unwrap();
}

fn raw(endpoint: &str, md: Metadata) -> RawRequest {
    let mut ctx = CallContext::new(endpoint).with_metadata(md);
    ctx.service = "svc".into();
    RawRequest {
        ctx,
        format: Format::Json,
        body: RawBody::One(Bytes::new()),
    }
}

/// Calls the `auth` handler wrapper of `flags`; the inner handler answers the
/// metadata it saw, as JSON.
async fn through(flags: &[&str], endpoint: &str, md: Metadata) -> Result<Value, Error> {
    let wrappers = build(&settings(flags), &WrapperContext::new("svc")).unwrap();
    assert_eq!(wrappers.handler_names(), ["auth"]);
    let inner = tower::service_fn(|req: RawRequest| async move {
        let seen: serde_json::Map<String, Value> = req
            .ctx
            .metadata()
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect();
        Ok::<_, Error>(RawReply::One(Bytes::from(Value::Object(seen).to_string())))
    });
    let service = wrappers.handler[0].wrap(tower::util::BoxCloneSyncService::new(inner));
    match service.oneshot(raw(endpoint, md)).await? {
        RawReply::One(b) => Ok(serde_json::from_slice(&b).unwrap()),
        RawReply::Stream(_) => panic!("a stream"),
    }
}

#[tokio::test]
async fn the_handler_sees_the_subject_and_forged_headers_are_stripped() {
    let secret = format!("auth.secret={}", std::str::from_utf8(SECRET).unwrap());
    let flags = [
        secret.as_str(),
        "auth.rules=[{\"endpoint\":\"Open.*\",\"public\":true}]",
    ];
    let mut m = md(&format!("Bearer {}", hs(&claims("alice"))));
    m.insert("Micro-Auth-Subject", "root");
    m.insert("micro-auth-scopes", "admin");
    m.insert("micro-auth-extra", "x");
    let seen = through(&flags, "Greeter.Hello", m.clone()).await.unwrap();
    assert_eq!(seen[SUBJECT], "alice");
    assert_eq!(seen[SCOPES], "read write");
    assert_eq!(seen[KIND], "jwt");
    assert!(seen.get("micro-auth-extra").is_none());
    assert!(seen["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));

    // An anonymous caller on a public endpoint cannot claim to be anyone either.
    let mut anon = Metadata::new();
    anon.insert("micro-auth-subject", "root");
    let seen = through(&flags, "Open.Door", anon.clone()).await.unwrap();
    assert!(seen.get(SUBJECT).is_none(), "{seen}");
    // … and elsewhere gets a 401.
    let e = through(&flags, "Greeter.Hello", anon).await.unwrap_err();
    assert_eq!(e.code(), 401);
    assert_eq!(e.id(), ID);
}

#[test]
fn the_client_token_is_sent_when_the_call_has_none() {
    let w = build(
        &settings(&["auth.token=abc.def.ghi"]),
        &WrapperContext::new("s"),
    )
    .unwrap();
    assert_eq!(w.call_names(), ["auth"]);
    let w = build(&Settings::default(), &WrapperContext::new("s")).unwrap();
    assert!(w.call_names().is_empty());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "two\nlines\n").unwrap();
    let e = build(
        &settings(&[&format!("auth.token_file={}", path.display())]),
        &WrapperContext::new("s"),
    )
    .unwrap_err();
    assert!(e.detail().contains("one line"), "{e}");
}
