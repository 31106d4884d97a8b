//! Routes files end to end: parsing both formats, matching, policy, every rule's
//! error with its line, and hot reload on real files.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::api::target::{AuthRequirement, Cors, RateLimit};

fn yaml(text: &str) -> Routes {
    Routes::parse(text, "routes.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn toml(text: &str) -> Routes {
    Routes::parse(text, "routes.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// A request for `find`.
struct Req {
    method: Method,
    host: Option<&'static str>,
    path: &'static str,
    headers: HeaderMap,
}

fn req(method: Method, path: &'static str) -> Req {
    Req {
        method,
        host: None,
        path,
        headers: HeaderMap::new(),
    }
}

impl Req {
    fn host(mut self, host: &'static str) -> Self {
        self.host = Some(host);
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }

    fn find(&self, routes: &Routes, pick: u32) -> RouteMatch {
        routes.find(
            &RouteRequest {
                method: &self.method,
                host: self.host,
                path: self.path,
                headers: &self.headers,
            },
            pick,
        )
    }

    fn found(&self, routes: &Routes) -> Matched {
        match self.find(routes, 0) {
            RouteMatch::Found(m) => m,
            other => panic!("{} {}: {other:?}", self.method, self.path),
        }
    }
}

const EXAMPLE_YAML: &str = r#"# Routes are tried in file order; the first that matches wins.
fallback: zero-config
cors:
  origins: ["https://app.example.com"]
auth: {required: false}
routes:
  - path: /hello/{name}
    method: [GET, POST]
    host: api.example.com
    headers: {x-canary: "1"}
    service: greeter
    endpoint: Greeter.Hello
    handler: rpc
    split:
      greeter@v2: 10%
      greeter@v1: 90%
    timeout: 2s
    retries: 2
    rate_limit: {rate: 100, burst: 20}
    body_limit: 1MiB
    cors: {origins: ["*"], methods: [GET], headers: [Content-Type], credentials: false, max_age: 10m}
    auth: {required: true, scopes: [greeter.read]}
  - path: /events/orders
    handler: event
    topic: orders
  - path: /legacy/{rest*}
    handler: http
    service: legacy
    rewrite: /{rest*}
"#;

const EXAMPLE_TOML: &str = r#"# Routes are tried in file order; the first that matches wins.
fallback = "zero-config"
auth = { required = false }

[cors]
origins = ["https://app.example.com"]

[[routes]]
path = "/hello/{name}"
method = ["GET", "POST"]
host = "api.example.com"
headers = { x-canary = "1" }
service = "greeter"
endpoint = "Greeter.Hello"
handler = "rpc"
split = { "greeter@v2" = "10%", "greeter@v1" = "90%" }
timeout = "2s"
retries = 2
rate_limit = { rate = 100, burst = 20 }
body_limit = "1MiB"
cors = { origins = ["*"], methods = ["GET"], headers = ["Content-Type"], credentials = false, max_age = "10m" }
auth = { required = true, scopes = ["greeter.read"] }

[[routes]]
path = "/events/orders"
handler = "event"
topic = "orders"

[[routes]]
path = "/legacy/{rest*}"
handler = "http"
service = "legacy"
rewrite = "/{rest*}"
"#;

fn check_example(routes: &Routes) {
    assert_eq!(routes.len(), 3);
    assert!(routes.fallback_zero_config());
    let default_cors = Cors {
        origins: vec!["https://app.example.com".into()],
        ..Cors::default()
    };
    assert_eq!(routes.defaults().cors.as_ref(), Some(&default_cors));

    let hello = req(Method::POST, "/hello/John")
        .host("api.example.com")
        .header("x-canary", "1");
    let m = hello.found(routes);
    assert_eq!(m.route.index(), 0);
    assert_eq!(m.route.pattern(), "/hello/{name}");
    assert_eq!(m.target.handler, HandlerKind::Rpc);
    assert_eq!(m.target.service, "greeter");
    assert_eq!(m.target.endpoint.as_deref(), Some("Greeter.Hello"));
    assert_eq!(m.target.version.as_deref(), Some("v2")); // pick 0
    assert_eq!(
        m.target.params.get("name").map(String::as_str),
        Some("John")
    );
    let p = &m.policy;
    assert_eq!(p.timeout, Some(Duration::from_secs(2)));
    assert_eq!(p.retries, Some(2));
    assert_eq!(
        p.rate_limit,
        Some(RateLimit {
            rate: 100.0,
            burst: 20
        })
    );
    assert_eq!(p.body_limit, Some(1024 * 1024));
    assert_eq!(
        p.cors,
        Some(Cors {
            origins: vec!["*".into()],
            methods: vec!["GET".into()],
            headers: vec!["content-type".into()],
            credentials: false,
            max_age: Some(Duration::from_secs(600)),
        })
    );
    assert_eq!(
        p.auth,
        Some(AuthRequirement {
            required: true,
            scopes: vec!["greeter.read".into()],
        })
    );

    let event = req(Method::POST, "/events/orders").found(routes);
    assert_eq!(event.target.handler, HandlerKind::Event);
    assert_eq!(event.target.topic.as_deref(), Some("orders"));
    assert_eq!(event.target.service, "");
    // The file's defaults apply to a route that sets nothing.
    assert_eq!(event.policy.cors.as_ref(), Some(&default_cors));
    assert_eq!(
        event.policy.auth,
        Some(AuthRequirement {
            required: false,
            scopes: vec![]
        })
    );

    let legacy = req(Method::GET, "/legacy/a/b%20c").found(routes);
    assert_eq!(legacy.target.handler, HandlerKind::Http);
    assert_eq!(legacy.target.service, "legacy");
    assert_eq!(legacy.target.upstream_path.as_deref(), Some("/a/b%20c"));
    assert_eq!(legacy.target.params["rest"], "a/b c");
    assert_eq!(legacy.route.index(), 2);
}

#[test]
fn the_documented_example_parses_in_both_formats() {
    check_example(&yaml(EXAMPLE_YAML));
    check_example(&toml(EXAMPLE_TOML));
}

#[test]
fn both_formats_give_the_same_routes() {
    let a = yaml(EXAMPLE_YAML);
    let b = toml(EXAMPLE_TOML);
    assert_eq!(a.defaults(), b.defaults());
    for (x, y) in a.routes.iter().zip(&b.routes) {
        assert_eq!(x.id, y.id);
        assert_eq!(x.policy, y.policy);
        assert_eq!(x.methods, y.methods);
        assert_eq!(x.split, y.split);
    }
}

#[test]
fn an_empty_file_routes_nothing_and_falls_back() {
    for routes in [
        yaml(""),
        yaml("# nothing\n"),
        toml(""),
        yaml("routes: []\n"),
    ] {
        assert!(routes.is_empty());
        assert!(routes.fallback_zero_config());
        assert_eq!(
            req(Method::GET, "/x").find(&routes, 0),
            RouteMatch::Unrouted
        );
    }
    let none = yaml("fallback: none\n");
    assert!(!none.fallback_zero_config());
    assert!(!toml("fallback = \"none\"\n").fallback_zero_config());
}

#[test]
fn routes_are_tried_in_file_order() {
    let routes = yaml(
        "routes:
  - {path: /users/me, service: users, endpoint: Users.Me}
  - {path: '/users/{id}', service: users, endpoint: Users.Get}
  - {path: '/{rest*}', handler: http, service: site}
",
    );
    let me = req(Method::GET, "/users/me").found(&routes);
    assert_eq!(me.target.endpoint.as_deref(), Some("Users.Me"));
    assert_eq!(me.route.index(), 0);
    let get = req(Method::GET, "/users/42").found(&routes);
    assert_eq!(get.target.endpoint.as_deref(), Some("Users.Get"));
    assert_eq!(get.target.params["id"], "42");
    let site = req(Method::GET, "/about/team").found(&routes);
    assert_eq!(site.target.service, "site");
    assert_eq!(site.target.upstream_path, None);
    assert_eq!(site.route.index(), 2);

    // The same routes the other way round: the catch-all wins everything.
    let reversed = yaml(
        "routes:
  - {path: '/{rest*}', handler: http, service: site}
  - {path: /users/me, service: users, endpoint: Users.Me}
",
    );
    assert_eq!(
        req(Method::GET, "/users/me")
            .found(&reversed)
            .target
            .service,
        "site"
    );
}

#[test]
fn path_params_fill_the_target() {
    let routes = yaml(
        "routes:
  - path: /api/{svc}/{method}
    service: '{svc}'
    endpoint: '{svc}.{method}'
  - path: /files/{id}.json
    service: files
    endpoint: Files.Get
  - path: /proxy/{host}/{rest*}
    handler: web
    service: gateway
    rewrite: /to/{host}/{rest*}
",
    );
    let m = req(Method::POST, "/api/greeter/Hello").found(&routes);
    assert_eq!(m.target.service, "greeter");
    assert_eq!(m.target.endpoint.as_deref(), Some("greeter.Hello"));
    assert_eq!(m.target.params.len(), 2);

    let m = req(Method::GET, "/files/John%20Smith.json").found(&routes);
    assert_eq!(m.target.params["id"], "John Smith");

    let m = req(Method::GET, "/proxy/a%2Fb/x/y/").found(&routes);
    assert_eq!(m.target.handler, HandlerKind::Web);
    assert_eq!(m.target.upstream_path.as_deref(), Some("/to/a%2Fb/x/y/"));
    assert_eq!(m.target.params["host"], "a/b");
    assert_eq!(m.target.params["rest"], "x/y/");

    let m = req(Method::GET, "/proxy/h").found(&routes);
    assert_eq!(m.target.upstream_path.as_deref(), Some("/to/h/"));
    assert_eq!(m.target.params["rest"], "");

    assert_eq!(
        req(Method::GET, "/api/greeter").find(&routes, 0),
        RouteMatch::Unrouted
    );
    assert_eq!(
        req(Method::GET, "/api/greeter/Hello/x").find(&routes, 0),
        RouteMatch::Unrouted
    );
}

#[test]
fn a_method_mismatch_is_told_apart_from_no_route() {
    let routes = yaml(
        "routes:
  - {path: '/items/{id}', method: GET, service: items, endpoint: Items.Get}
  - {path: '/items/{id}', method: [delete, put], service: items, endpoint: Items.Change}
  - {path: /any, service: any, endpoint: Any.Thing}
",
    );
    assert_eq!(
        req(Method::GET, "/items/1")
            .found(&routes)
            .target
            .endpoint
            .as_deref(),
        Some("Items.Get")
    );
    assert_eq!(
        req(Method::HEAD, "/items/1")
            .found(&routes)
            .target
            .endpoint
            .as_deref(),
        Some("Items.Get")
    );
    assert_eq!(
        req(Method::PUT, "/items/1")
            .found(&routes)
            .target
            .endpoint
            .as_deref(),
        Some("Items.Change")
    );
    match req(Method::POST, "/items/1").find(&routes, 0) {
        RouteMatch::MethodNotAllowed { allow, route, .. } => {
            assert_eq!(
                allow,
                [Method::GET, Method::DELETE, Method::PUT, Method::HEAD]
            );
            assert_eq!(route.index(), 0);
        }
        other => panic!("{other:?}"),
    }
    for method in [Method::GET, Method::POST, Method::PATCH, Method::OPTIONS] {
        assert!(matches!(
            req(method, "/any").find(&routes, 0),
            RouteMatch::Found(_)
        ));
    }
    assert_eq!(
        req(Method::POST, "/other").find(&routes, 0),
        RouteMatch::Unrouted
    );
    assert!(req(Method::POST, "/other")
        .find(&routes, 0)
        .found()
        .is_none());
}

#[test]
fn host_conditions() {
    let routes = yaml(
        "routes:
  - {path: /, host: api.example.com, service: api, endpoint: Api.Root}
  - {path: /, host: '*.example.com', service: tenant, endpoint: Tenant.Root}
  - {path: /, service: other, endpoint: Other.Root}
",
    );
    let service = |host: Option<&'static str>| {
        let mut r = req(Method::GET, "/");
        r.host = host;
        r.found(&routes).target.service
    };
    assert_eq!(service(Some("api.example.com")), "api");
    assert_eq!(service(Some("API.example.com:8080")), "api");
    assert_eq!(service(Some("acme.example.com")), "tenant");
    assert_eq!(service(Some("example.com")), "other");
    assert_eq!(service(Some("example.org")), "other");
    assert_eq!(service(None), "other");
}

#[test]
fn header_conditions_route_canaries() {
    let routes = yaml(
        "routes:
  - path: /hello
    headers: {x-canary: '1', x-team: core}
    service: greeter@v2
    endpoint: Greeter.Hello
  - path: /hello
    service: greeter@v1
    endpoint: Greeter.Hello
",
    );
    let version = |r: Req| r.found(&routes).target.version;
    assert_eq!(version(req(Method::POST, "/hello")).as_deref(), Some("v1"));
    assert_eq!(
        version(req(Method::POST, "/hello").header("x-canary", "1")).as_deref(),
        Some("v1"),
        "every header must match"
    );
    assert_eq!(
        version(
            req(Method::POST, "/hello")
                .header("X-Canary", "1")
                .header("x-team", "core")
        )
        .as_deref(),
        Some("v2")
    );
    assert_eq!(
        version(
            req(Method::POST, "/hello")
                .header("x-canary", "2")
                .header("x-team", "core")
        )
        .as_deref(),
        Some("v1")
    );
}

#[test]
fn a_header_mismatch_is_not_a_method_mismatch() {
    let routes = yaml(
        "routes:
  - {path: /a, method: GET, headers: {x-beta: 'on'}, service: s, endpoint: S.A}
",
    );
    assert_eq!(
        req(Method::POST, "/a").find(&routes, 0),
        RouteMatch::Unrouted
    );
    assert!(matches!(
        req(Method::POST, "/a")
            .header("x-beta", "on")
            .find(&routes, 0),
        RouteMatch::MethodNotAllowed { .. }
    ));
}

#[test]
fn splits_divide_picks_by_share() {
    let routes = yaml(
        "routes:
  - path: /hello
    service: greeter
    endpoint: Greeter.Hello
    split: {greeter@v3: 5%, greeter@v2: 25, greeter@v1: '70%'}
",
    );
    let r = req(Method::POST, "/hello");
    let mut counts = std::collections::BTreeMap::new();
    for pick in 0..10_000u32 {
        let version = r.found_with(&routes, pick).target.version.unwrap();
        *counts.entry(version).or_insert(0) += 1;
    }
    let counts: Vec<(String, u32)> = counts.into_iter().collect();
    assert_eq!(
        counts,
        [
            ("v1".to_string(), 7_000),
            ("v2".to_string(), 2_500),
            ("v3".to_string(), 500)
        ]
    );
    // The same pick always lands in the same share, in file order.
    assert_eq!(
        r.found_with(&routes, 4).target.version.as_deref(),
        Some("v3")
    );
    assert_eq!(
        r.found_with(&routes, 5).target.version.as_deref(),
        Some("v2")
    );
    assert_eq!(
        r.found_with(&routes, 29).target.version.as_deref(),
        Some("v2")
    );
    assert_eq!(
        r.found_with(&routes, 30).target.version.as_deref(),
        Some("v1")
    );
    assert_eq!(
        r.found_with(&routes, 105).target.version.as_deref(),
        Some("v2")
    );
    assert_eq!(r.found_with(&routes, u32::MAX).target.service, "greeter");

    // Without `service`, the split names it; a share may be any version.
    let routes = toml(
        "[[routes]]\npath = \"/h\"\nendpoint = \"G.H\"\nsplit = { \"greeter@canary\" = 50, greeter = 50 }\n",
    );
    let r = req(Method::POST, "/h");
    let m = r.found_with(&routes, 10);
    assert_eq!(
        (m.target.service.as_str(), m.target.version.as_deref()),
        ("greeter", Some("canary"))
    );
    let m = r.found_with(&routes, 60);
    assert_eq!(
        (m.target.service.as_str(), m.target.version.as_deref()),
        ("greeter", None)
    );
}

impl Req {
    fn found_with(&self, routes: &Routes, pick: u32) -> Matched {
        match self.find(routes, pick) {
            RouteMatch::Found(m) => m,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn versions_can_be_pinned() {
    let routes = yaml(
        "routes:
  - {path: /a, service: greeter@v2, endpoint: Greeter.Hello}
  - {path: /b, service: greeter, endpoint: Greeter.Hello}
  - {path: /c, handler: http, service: 'site@1.4.0'}
",
    );
    let a = req(Method::GET, "/a").found(&routes).target;
    assert_eq!(
        (a.service.as_str(), a.version.as_deref()),
        ("greeter", Some("v2"))
    );
    let b = req(Method::GET, "/b").found(&routes).target;
    assert_eq!((b.service.as_str(), b.version), ("greeter", None));
    let c = req(Method::GET, "/c").found(&routes).target;
    assert_eq!(
        (c.service.as_str(), c.version.as_deref()),
        ("site", Some("1.4.0"))
    );
}

#[test]
fn policy_is_the_route_over_the_file_defaults() {
    let routes = yaml(
        "timeout: 5s
retries: 1
body_limit: 64KiB
rate_limit: 50
cors: {origins: ['https://a.example.com'], credentials: true}
auth: {scopes: [basic]}
routes:
  - {path: /inherit, service: s, endpoint: S.A}
  - path: /override
    service: s
    endpoint: S.B
    timeout: 500ms
    retries: 0
    body_limit: 1024
    rate_limit: {rate: 2.5}
    cors: {origins: ['*']}
    auth: false
  - {path: /nocors, service: s, endpoint: S.C, cors: false, auth: {required: false}}
",
    );
    let defaults = Policy {
        timeout: Some(Duration::from_secs(5)),
        retries: Some(1),
        rate_limit: Some(RateLimit {
            rate: 50.0,
            burst: 50,
        }),
        body_limit: Some(64 * 1024),
        cors: Some(Cors {
            origins: vec!["https://a.example.com".into()],
            credentials: true,
            ..Cors::default()
        }),
        auth: Some(AuthRequirement {
            required: true,
            scopes: vec!["basic".into()],
        }),
    };
    assert_eq!(**routes.defaults(), defaults);
    let inherit = req(Method::GET, "/inherit").found(&routes);
    assert_eq!(*inherit.policy, defaults);
    let over = req(Method::GET, "/override").found(&routes);
    assert_eq!(
        *over.policy,
        Policy {
            timeout: Some(Duration::from_millis(500)),
            retries: Some(0),
            rate_limit: Some(RateLimit {
                rate: 2.5,
                burst: 3
            }),
            body_limit: Some(1024),
            cors: Some(Cors {
                origins: vec!["*".into()],
                ..Cors::default()
            }),
            auth: Some(AuthRequirement {
                required: false,
                scopes: vec![]
            }),
        }
    );
    let nocors = req(Method::GET, "/nocors").found(&routes);
    assert_eq!(nocors.policy.cors, None);
    assert_eq!(nocors.policy.timeout, defaults.timeout);
    assert_eq!(
        nocors.policy.auth,
        Some(AuthRequirement {
            required: false,
            scopes: vec![]
        })
    );

    // No defaults: nothing set.
    let bare = yaml("routes:\n  - {path: /a, service: s, endpoint: S.A}\n");
    assert_eq!(
        *req(Method::GET, "/a").found(&bare).policy,
        Policy::default()
    );
}

#[test]
fn the_policy_of_a_refused_method_is_the_routes() {
    let routes = yaml(
        "routes:\n  - {path: /a, method: POST, service: s, endpoint: S.A, cors: {origins: ['*']}}\n",
    );
    match req(Method::OPTIONS, "/a").find(&routes, 0) {
        RouteMatch::MethodNotAllowed { allow, policy, .. } => {
            assert_eq!(allow, [Method::POST]);
            assert_eq!(
                policy.cors.as_ref().map(|c| c.origins.clone()),
                Some(vec!["*".to_string()])
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rpc_routes_list_rpc_and_stream_routes() {
    let routes = yaml(
        "routes:
  - {path: /hello, method: POST, service: greeter, endpoint: Greeter.Hello}
  - {path: /events/x, handler: event, topic: x}
  - {path: /watch, handler: stream, service: greeter@v2, endpoint: Greeter.Stream}
  - {path: /site, handler: http, service: site}
  - {path: /canary, endpoint: Greeter.Hello, split: {greeter@v1: 50, greeter@v2: 50}}
",
    );
    let list: Vec<(String, Vec<Method>, String, String, HandlerKind)> = routes
        .rpc_routes()
        .map(|r| {
            (
                r.pattern.to_string(),
                r.methods.to_vec(),
                r.service,
                r.endpoint,
                r.handler,
            )
        })
        .collect();
    assert_eq!(
        list,
        [
            (
                "/hello".to_string(),
                vec![Method::POST],
                "greeter".to_string(),
                "Greeter.Hello".to_string(),
                HandlerKind::Rpc
            ),
            (
                "/watch".to_string(),
                vec![],
                "greeter".to_string(),
                "Greeter.Stream".to_string(),
                HandlerKind::Stream
            ),
            (
                "/canary".to_string(),
                vec![],
                "greeter".to_string(),
                "Greeter.Hello".to_string(),
                HandlerKind::Rpc
            ),
        ]
    );
}

#[test]
fn route_ids_are_stable_and_distinct() {
    let text = "routes:\n  - {path: /a, service: s, endpoint: S.A}\n  - {path: /a, method: GET, service: s, endpoint: S.B}\n";
    let one = yaml(text);
    let two = yaml(text);
    let ids: Vec<&RouteId> = one.ids().collect();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids, two.ids().collect::<Vec<_>>());
    assert_eq!(ids[1].to_string(), "#1 /a");
}

/// `(format, text, line, words the reason holds)`.
fn expect_error(file: &str, text: &str, line: usize, words: &str) {
    let err = match Routes::parse(text, file) {
        Ok(routes) => panic!(
            "{file} parsed ({} routes) but should fail with {words:?}:\n{text}",
            routes.len()
        ),
        Err(e) => e,
    };
    assert_eq!(
        err.line(),
        Some(line),
        "wrong line for {err} (wanted {line}); file:\n{text}"
    );
    assert!(
        err.reason().contains(words),
        "{err} does not say {words:?}; file:\n{text}"
    );
    assert_eq!(err.file(), file);
    assert_eq!(err.to_string(), format!("{file}:{line}: {}", err.reason()));
}

fn yaml_error(text: &str, line: usize, words: &str) {
    expect_error("routes.yaml", text, line, words);
}

fn toml_error(text: &str, line: usize, words: &str) {
    expect_error("routes.toml", text, line, words);
}

#[test]
fn unknown_keys_are_rejected_with_a_suggestion() {
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    metod: GET\n",
        5,
        "unknown key \"metod\" in a route; did you mean \"method\"?",
    );
    toml_error(
        "[[routes]]\npath = \"/a\"\nservice = \"s\"\nendpoint = \"S.A\"\nmetod = \"GET\"\n",
        5,
        "unknown key \"metod\" in a route; did you mean \"method\"?",
    );
    yaml_error(
        "fallbak: none\n",
        1,
        "unknown key \"fallbak\" in the file; did you mean \"fallback\"?",
    );
    toml_error("\nroute = []\n", 2, "did you mean \"routes\"?");
    yaml_error(
        "routes:\n  - path: /a\n    colour: blue\n",
        3,
        "unknown key \"colour\" in a route (known keys: path, method,",
    );
    yaml_error(
        "cors:\n  origins: ['*']\n  max-age: 10m\n",
        3,
        "did you mean \"max_age\"?",
    );
    toml_error(
        "[auth]\nrequired = true\nscope = [\"a\"]\n",
        3,
        "unknown key \"scope\" in auth; did you mean \"scopes\"?",
    );
    yaml_error(
        "routes:\n  - {path: /a, service: s, endpoint: S.A, rate_limit: {rate: 1, bursts: 2}}\n",
        2,
        "did you mean \"burst\"?",
    );
}

#[test]
fn unknown_handlers_list_the_valid_ones() {
    yaml_error(
        "routes:\n  - path: /a\n    handler: grpc\n",
        3,
        "unknown handler \"grpc\"",
    );
    yaml_error(
        "routes:\n  - path: /a\n    handler: grpc\n",
        3,
        "(handlers: rpc, http, web, event, stream)",
    );
    toml_error(
        "[[routes]]\npath = \"/a\"\nhandler = \"htp\"\n",
        3,
        "unknown handler \"htp\"; did you mean \"http\"?",
    );
}

#[test]
fn each_handler_needs_its_keys() {
    // rpc (the default) and stream need an endpoint: the route's line.
    yaml_error(
        "fallback: none\nroutes:\n  - path: /a\n    service: greeter\n",
        3,
        "a rpc route needs an endpoint (endpoint: Greeter.Hello, or one built from path params",
    );
    toml_error(
        "fallback = \"none\"\n\n[[routes]]\npath = \"/a\"\nservice = \"greeter\"\n",
        3,
        "needs an endpoint",
    );
    yaml_error(
        "routes:\n  - {path: /ok, service: s, endpoint: S.A}\n  - path: /a\n    handler: stream\n    service: greeter\n",
        3,
        "a stream route needs an endpoint",
    );
    yaml_error(
        "routes:\n  - path: /a\n    endpoint: Greeter.Hello\n",
        2,
        "a rpc route needs a service",
    );
    // event needs a topic.
    yaml_error(
        "routes:\n  - path: /events\n    handler: event\n",
        2,
        "an event route needs a topic",
    );
    toml_error(
        "[[routes]]\npath = \"/events\"\nhandler = \"event\"\n",
        1,
        "an event route needs a topic",
    );
    // http and web need a service.
    yaml_error(
        "routes:\n  - path: /site\n    handler: http\n",
        2,
        "a http route proxies to a service",
    );
    toml_error(
        "[[routes]]\npath = \"/ok\"\nhandler = \"http\"\nservice = \"x\"\n\n[[routes]]\npath = \"/ws\"\nhandler = \"web\"\n",
        6,
        "a web route proxies to a service",
    );
    // A route needs a path.
    yaml_error("routes:\n  - service: s\n", 2, "a route needs a path");
}

#[test]
fn keys_of_other_handlers_are_rejected() {
    yaml_error(
        "routes:\n  - path: /a\n    handler: http\n    service: s\n    endpoint: S.A\n",
        5,
        "endpoint is for rpc and stream routes",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    topic: t\n",
        5,
        "topic is for event routes",
    );
    yaml_error(
        "routes:\n  - path: /a\n    handler: event\n    topic: t\n    service: s\n",
        5,
        "an event route publishes to its topic; it takes no service",
    );
    toml_error(
        "[[routes]]\npath = \"/a\"\nservice = \"s\"\nendpoint = \"S.A\"\nrewrite = \"/b\"\n",
        5,
        "rewrite is for http and web routes",
    );
}

#[test]
fn bad_names_and_templates_are_rejected() {
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: Hello\n",
        4,
        "must be Service.Method",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: 'S.{method}'\n",
        4,
        "uses {method}, which path \"/a\" does not capture",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: 'my service'\n    endpoint: S.A\n",
        3,
        "names hold letters",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: greeter@\n    endpoint: S.A\n",
        3,
        "version after @",
    );
    yaml_error(
        "routes:\n  - path: /a\n    handler: http\n    service: s\n    rewrite: a/b\n",
        5,
        "must be a path starting with /",
    );
    yaml_error(
        "routes:\n  - path: /a/{x}\n    handler: event\n    topic: '{y}'\n",
        4,
        "does not capture (it captures {x})",
    );
}

#[test]
fn bad_patterns_are_rejected() {
    for (pattern, words) in [
        ("/hello/{name", "unbalanced braces"),
        ("/hello/name}", "unbalanced braces"),
        ("/a/{x}/b/{x}", "parameter {x} appears twice"),
        ("/a/{rest*}/b", "must be the last segment"),
        ("hello", "must start with /"),
        ("/a//b", "empty segment"),
        ("/a/{}", "empty {}"),
    ] {
        yaml_error(
            &format!("routes:\n  - service: s\n    endpoint: S.A\n    path: '{pattern}'\n"),
            4,
            words,
        );
        toml_error(
            &format!("[[routes]]\nservice = \"s\"\nendpoint = \"S.A\"\npath = \"{pattern}\"\n"),
            4,
            words,
        );
    }
}

#[test]
fn bad_splits_are_rejected() {
    yaml_error(
        "routes:\n  - path: /a\n    service: greeter\n    endpoint: G.H\n    split:\n      greeter@v2: 10%\n      greeter@v1: 80%\n",
        5,
        "split shares add up to 90%, not 100%",
    );
    toml_error(
        "[[routes]]\npath = \"/a\"\nservice = \"greeter\"\nendpoint = \"G.H\"\nsplit = { \"greeter@v2\" = \"60%\", \"greeter@v1\" = \"60%\" }\n",
        5,
        "add up to 120%",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: greeter\n    endpoint: G.H\n    split:\n      greeter@v2: 10%\n      other@v1: 90%\n",
        7,
        "split names service \"other\", but the route's service is \"greeter\"",
    );
    yaml_error(
        "routes:\n  - path: /a\n    endpoint: G.H\n    split:\n      greeter@v2: 10%\n      other@v1: 90%\n",
        6,
        "split names service \"other\"",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: greeter\n    endpoint: G.H\n    split:\n      greeter@v2: 0%\n      greeter@v1: 100%\n",
        6,
        "from 1% to 100%",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: greeter\n    endpoint: G.H\n    split:\n      greeter@v2: lots\n",
        6,
        "from 1% to 100%",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: greeter@v3\n    endpoint: G.H\n    split: {greeter@v2: 50, greeter@v1: 50}\n",
        5,
        "service pins version \"v3\" and split chooses versions",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: greeter\n    endpoint: G.H\n    split: {}\n",
        5,
        "split lists no versions",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: greeter\n    endpoint: G.H\n    split: {greeter@v1: 50, greeter@v1: 50}\n",
        5,
        "appears twice",
    );
    yaml_error(
        "routes:\n  - path: /a\n    handler: event\n    topic: t\n    split: {greeter@v1: 100}\n",
        5,
        "takes no split",
    );
}

#[test]
fn bad_durations_and_sizes_are_rejected() {
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    timeout: soon\n",
        5,
        "timeout \"soon\": expected a duration",
    );
    toml_error(
        "[[routes]]\npath = \"/a\"\nservice = \"s\"\nendpoint = \"S.A\"\ntimeout = \"2 parsecs\"\n",
        5,
        "expected a duration",
    );
    yaml_error("timeout: 0s\n", 1, "timeout must be more than 0");
    yaml_error(
        "cors:\n  origins: ['*']\n  max_age: -1s\n",
        3,
        "max_age \"-1s\"",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    body_limit: 1 Megabyte\n",
        5,
        "body_limit \"1 Megabyte\": expected a size",
    );
    toml_error("body_limit = \"lots\"\n", 1, "expected a size");
    yaml_error("retries: -1\n", 1, "retries must be a whole number");
    yaml_error(
        "retries: [1]\n",
        1,
        "retries must be a single value, not a list",
    );
    yaml_error(
        "rate_limit: {rate: 0}\n",
        1,
        "rate_limit rate must be more than 0",
    );
    yaml_error("rate_limit: {burst: 3}\n", 1, "rate_limit needs a rate");
    yaml_error(
        "rate_limit:\n  rate: 1\n  burst: 0\n",
        3,
        "burst must be at least 1",
    );
    toml_error(
        "[rate_limit]\nrate = \"fast\"\n",
        2,
        "rate_limit rate must be a number",
    );
}

#[test]
fn bad_cors_is_rejected() {
    yaml_error("cors:\n  origins: []\n", 2, "cors origins is empty");
    toml_error("[cors]\norigins = []\n", 2, "cors origins is empty");
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    cors: {origins: []}\n",
        5,
        "cors origins is empty",
    );
    yaml_error("cors: {credentials: true}\n", 1, "cors needs origins");
    yaml_error("cors: true\n", 1, "does not say which origins");
    yaml_error(
        "cors:\n  origins:\n    - https://ok.example.com\n    - app.example.com\n",
        4,
        "origin \"app.example.com\" must be",
    );
    yaml_error(
        "cors:\n  origins: ['*']\n  methods: [GET, FETCH]\n",
        3,
        "\"FETCH\" is not an HTTP method",
    );
    yaml_error(
        "cors:\n  origins: ['*']\n  headers: ['Bad Header']\n",
        3,
        "not a valid header name",
    );
    yaml_error(
        "cors:\n  origins: ['*']\n  credentials: maybe\n",
        3,
        "must be true or false",
    );
    yaml_error(
        "auth:\n  required: false\n  scopes: [a]\n",
        3,
        "auth scopes need credentials",
    );
}

#[test]
fn methods_must_be_http_methods() {
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    method: [GET, GRAB]\n",
        5,
        "\"GRAB\" is not an HTTP method (use GET, HEAD, POST",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    method:\n      - GET\n      - FETCH\n",
        7,
        "\"FETCH\" is not an HTTP method",
    );
    toml_error(
        "[[routes]]\npath = \"/a\"\nservice = \"s\"\nendpoint = \"S.A\"\nmethod = \"YANK\"\n",
        5,
        "\"YANK\" is not an HTTP method",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    method: []\n",
        5,
        "method lists no methods",
    );
    // Lower case and comma lists are fine.
    let routes = yaml("routes:\n  - {path: /a, service: s, endpoint: S.A, method: 'get, post'}\n");
    assert!(matches!(
        req(Method::POST, "/a").find(&routes, 0),
        RouteMatch::Found(_)
    ));
    assert!(matches!(
        req(Method::PUT, "/a").find(&routes, 0),
        RouteMatch::MethodNotAllowed { .. }
    ));
}

#[test]
fn bad_hosts_headers_and_fallbacks_are_rejected() {
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    host: 'api.example.com:8080'\n",
        5,
        "has a port",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    host: 'a.*.com'\n",
        5,
        "must be a host name",
    );
    yaml_error(
        "routes:\n  - path: /a\n    service: s\n    endpoint: S.A\n    headers:\n      'bad header': x\n",
        6,
        "not a valid header name",
    );
    yaml_error(
        "fallback: zero_config\n",
        1,
        "did you mean \"zero-config\"?",
    );
    toml_error(
        "fallback = \"never\"\n",
        1,
        "fallback must be \"zero-config\" or \"none\"",
    );
}

#[test]
fn shapes_are_checked() {
    yaml_error(
        "- path: /a\n",
        1,
        "the file must be a map of keys, not a list",
    );
    yaml_error("just text\n", 1, "the file must be a map of keys");
    yaml_error(
        "routes:\n  path: /a\n",
        1,
        "routes must be a list of routes",
    );
    toml_error(
        "[routes]\npath = \"/a\"\n",
        1,
        "routes must be a list of routes",
    );
    yaml_error("routes:\n  - /a\n", 2, "a route must be a map of keys");
    yaml_error(
        "routes:\n  - path: [/a]\n    service: s\n",
        2,
        "path must be a single value, not a list",
    );
    yaml_error("routes:\n  - path: /a\n    path: /b\n", 3, "appears twice");
    yaml_error("a: 1\n---\nb: 2\n", 2, "more than one YAML document");
}

#[test]
fn syntax_errors_carry_the_parser_line() {
    let err = Routes::parse("routes:\n  - path: /a\n    service: [s\n", "routes.yaml").unwrap_err();
    assert!(err.reason().starts_with("YAML syntax"), "{err}");
    assert!(matches!(err.line(), Some(3..=4)), "{err}");
    let err = Routes::parse("fallback: none\n  routes: []\n", "routes.yml").unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    assert!(
        err.to_string().starts_with("routes.yml:2: YAML syntax"),
        "{err}"
    );

    let err = Routes::parse(
        "fallback = \"none\"\n[[routes]]\npath = /a\n",
        "routes.toml",
    )
    .unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
    assert!(
        err.to_string().starts_with("routes.toml:3: TOML syntax"),
        "{err}"
    );
    let err = Routes::parse("a = 1\na = 2\n", "routes.toml").unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
}

#[test]
fn the_extension_picks_the_format() {
    let err = Routes::parse("routes: []\n", "routes.json").unwrap_err();
    assert_eq!(err.line(), None);
    assert!(err
        .to_string()
        .starts_with("routes.json: a routes file is YAML"));
    assert!(Routes::parse("routes: []\n", "ROUTES.YML").is_ok());
    // YAML text read as TOML is a TOML error, not a silent success.
    assert!(Routes::parse("routes: []\n", "routes.toml").is_err());
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        "routes:\n  - {path: /a, service: s, endpoint: S.A}\n",
    )
    .unwrap();
    assert_eq!(Routes::load(&path).unwrap().len(), 1);
    let err = Routes::load(dir.path().join("missing.yaml")).unwrap_err();
    assert_eq!(err.line(), None);
    assert!(err.reason().contains("cannot read the file"), "{err}");
    std::fs::write(&path, "routes:\n  - {path: /a}\n").unwrap();
    let err = Routes::load(&path).unwrap_err();
    assert_eq!(err.file(), path.display().to_string());
    assert_eq!(err.line(), Some(2));
}

mod reload {
    use super::*;

    const ONE: &str = "routes:\n  - {path: /one, service: s, endpoint: S.One}\n";
    const TWO: &str = "routes:\n  - {path: /one, service: s, endpoint: S.One}\n  - {path: /two, service: s, endpoint: S.Two}\n";
    const BAD: &str = "routes:\n  - {path: /one, service: s, endpoint: S.One}\n  - path: /two\n    handler: grpc\n";

    const TICK: Duration = Duration::from_millis(10);

    async fn wait<F: FnMut(&ReloadState) -> bool>(watcher: &RoutesWatcher, f: F) -> ReloadState {
        let mut rx = watcher.watch();
        let state = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(f))
            .await
            .expect("the watcher did not report in time")
            .expect("the watcher stopped")
            .clone();
        state
    }

    fn patterns(routes: &Routes) -> Vec<String> {
        routes.ids().map(|id| id.pattern().to_string()).collect()
    }

    #[tokio::test]
    async fn a_valid_change_swaps_the_routes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, ONE).unwrap();
        let watcher = RoutesWatcher::start_with_interval(&path, TICK).unwrap();
        assert_eq!(patterns(&watcher.current()), ["/one"]);
        let before = watcher.current();

        std::fs::write(&path, TWO).unwrap();
        let state = wait(&watcher, |s| s.reloads == 1).await;
        assert_eq!(state.error, None);
        assert_eq!(patterns(&state.routes), ["/one", "/two"]);
        assert_eq!(patterns(&watcher.current()), ["/one", "/two"]);
        // A request holding the old routes keeps them.
        assert_eq!(patterns(&before), ["/one"]);
    }

    #[tokio::test]
    async fn a_bad_change_keeps_the_last_good_routes_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, ONE).unwrap();
        let watcher = RoutesWatcher::start_with_interval(&path, TICK).unwrap();

        std::fs::write(&path, BAD).unwrap();
        let state = wait(&watcher, |s| s.error.is_some()).await;
        let err = state.error.unwrap();
        assert_eq!(err.line(), Some(4), "{err}");
        assert!(err.reason().contains("unknown handler"), "{err}");
        assert_eq!(state.reloads, 0);
        assert_eq!(patterns(&watcher.current()), ["/one"]);

        // A syntax error too.
        std::fs::write(&path, "routes: [\n").unwrap();
        let state = wait(&watcher, |s| {
            s.error
                .as_ref()
                .is_some_and(|e| e.reason().contains("YAML syntax"))
        })
        .await;
        assert_eq!(state.reloads, 0);
        assert_eq!(patterns(&watcher.current()), ["/one"]);

        // Fixed: swapped in, error cleared.
        std::fs::write(&path, TWO).unwrap();
        let state = wait(&watcher, |s| s.reloads == 1).await;
        assert_eq!(state.error, None);
        assert_eq!(patterns(&watcher.current()), ["/one", "/two"]);
    }

    #[tokio::test]
    async fn a_rename_over_edit_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(
            &path,
            "[[routes]]\npath = \"/one\"\nservice = \"s\"\nendpoint = \"S.One\"\n",
        )
        .unwrap();
        let watcher = RoutesWatcher::start_with_interval(&path, TICK).unwrap();
        assert_eq!(patterns(&watcher.current()), ["/one"]);

        // What editors do: write a new file, rename it over the old one.
        let tmp = dir.path().join(".routes.toml.swp");
        std::fs::write(
            &tmp,
            "[[routes]]\npath = \"/renamed\"\nservice = \"s\"\nendpoint = \"S.R\"\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        wait(&watcher, |s| s.reloads == 1).await;
        assert_eq!(patterns(&watcher.current()), ["/renamed"]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_configmap_symlink_swap_is_seen() {
        use std::os::unix::fs::symlink;
        // Kubernetes: routes.yaml -> ..data/routes.yaml, ..data -> ..v1; an update
        // makes ..v2 and renames a new ..data link over the old one.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/routes.yaml"), ONE).unwrap();
        symlink("..v1", d.join("..data")).unwrap();
        symlink("..data/routes.yaml", d.join("routes.yaml")).unwrap();
        let watcher = RoutesWatcher::start_with_interval(d.join("routes.yaml"), TICK).unwrap();
        assert_eq!(patterns(&watcher.current()), ["/one"]);

        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/routes.yaml"), TWO).unwrap();
        symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..v1")).unwrap();
        wait(&watcher, |s| s.reloads == 1).await;
        assert_eq!(patterns(&watcher.current()), ["/one", "/two"]);
    }

    #[tokio::test]
    async fn a_deleted_file_keeps_the_routes_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, ONE).unwrap();
        let watcher = RoutesWatcher::start_with_interval(&path, TICK).unwrap();

        std::fs::remove_file(&path).unwrap();
        let state = wait(&watcher, |s| s.error.is_some()).await;
        let err = state.error.unwrap();
        assert!(err.reason().contains("cannot read the file"), "{err}");
        assert_eq!(patterns(&watcher.current()), ["/one"]);

        std::fs::write(&path, TWO).unwrap();
        wait(&watcher, |s| s.reloads == 1).await;
        assert_eq!(patterns(&watcher.current()), ["/one", "/two"]);
    }

    #[tokio::test]
    async fn start_fails_on_a_bad_or_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        let err = RoutesWatcher::start(&path).unwrap_err();
        assert_eq!(err.line(), None);
        std::fs::write(&path, BAD).unwrap();
        let err = RoutesWatcher::start(&path).unwrap_err();
        assert_eq!(err.line(), Some(4));
        assert!(
            err.to_string().ends_with(
                "routes.yaml:4: unknown handler \"grpc\"; did you mean \"rpc\"? (handlers: rpc, http, web, event, stream)"
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, ONE).unwrap();
        let watcher = RoutesWatcher::start_with_interval(&path, TICK).unwrap();
        let first = watcher.current();
        std::fs::write(&path, ONE).unwrap(); // same bytes: same hash
        tokio::time::sleep(TICK * 10).await;
        assert_eq!(watcher.watch().borrow().reloads, 0);
        assert!(Arc::ptr_eq(&first, &watcher.current()));
        assert_eq!(watcher.path(), path);
    }
}

/// What the fuzz target checks, on a deterministic sample: truncations and byte
/// mutations of the example files never panic, and every error has a line inside
/// the input.
#[test]
fn the_parser_survives_truncations_and_mutations() {
    fn check(text: &str) {
        let lines = 1 + text
            .chars()
            .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
            .count();
        for name in ["f.yaml", "f.toml"] {
            if let Err(e) = Routes::parse(text, name) {
                let line = e.line().unwrap_or_else(|| panic!("no line: {e}"));
                assert!(
                    (1..=lines).contains(&line),
                    "{e} (input has {lines} lines):\n{text}"
                );
            }
        }
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"{}[]:,-'\"#*@%/ \n\r\tab1.=&!|>";
    for example in [EXAMPLE_YAML, EXAMPLE_TOML] {
        for end in (0..=example.len()).filter(|i| example.is_char_boundary(*i)) {
            check(&example[..end]);
        }
        for _ in 0..3_000 {
            let mut bytes = example.as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                let byte = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            check(&String::from_utf8_lossy(&bytes));
        }
    }
}
