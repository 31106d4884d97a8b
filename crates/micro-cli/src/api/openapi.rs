//! The gateway's OpenAPI 3.1 document (`GET /openapi.json`), built from the registry
//! records and the routes file.
//!
//! Every endpoint of every registered service gets an operation at its zero-config
//! path ([`resolve::path_for`](super::resolve::path_for)): `POST` with the request
//! message as a JSON body, and `GET` with the request fields as query parameters when
//! the request is a flat object of scalars. Every route of the routes file gets one
//! operation per method, its `{params}` as path parameters. The request and response
//! JSON Schemas are the ones each service registered (micro-build generates them from
//! the protos); they are moved into `components/schemas` and referenced, and the
//! `$ref`s inside them are rewritten so that the document stays self-contained.
//!
//! | document part | taken from |
//! |---|---|
//! | `paths./greeter/hello.post` | service `greeter`, endpoint `Greeter.Hello`, every version |
//! | `operationId` | `greeter.Greeter.Hello` (`.get` for the `GET` form, `.route_…` for routes) |
//! | `tags` | the service name |
//! | `components.schemas.greeter.HelloRequest` | the endpoint's `request.schema` |
//! | `components.schemas.Error` | the error every service and the gateway answer with |
//!
//! The document is a pure function of its inputs and comes out sorted, so the gateway
//! can cache it (and rebuild it when the registry changes) and two documents diff well.

use std::collections::{BTreeMap, BTreeSet};

use http::Method;
use micro::registry::{Endpoint, Service, Type};
use serde_json::{json, Map, Value};

use super::resolve::{parse_path, path_for};

/// The OpenAPI version of the document.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// The name of the shared error schema in `components/schemas`.
pub const ERROR_SCHEMA: &str = "Error";

/// The error responses every operation lists: status, component name, description.
const ERRORS: [(&str, &str, &str); 6] = [
    (
        "400",
        "BadRequest",
        "Bad input: malformed JSON, or a field the service rejects.",
    ),
    (
        "404",
        "NotFound",
        "No such service or endpoint (the detail says what was looked for and what exists), or the service's own not-found error.",
    ),
    (
        "408",
        "RequestTimeout",
        "The call did not finish within its timeout.",
    ),
    ("429", "TooManyRequests", "Too many requests: rate limited."),
    ("500", "InternalServerError", "The service failed."),
    (
        "503",
        "ServiceUnavailable",
        "No node of the service could be reached.",
    ),
];

/// A route of the routes file, as the OpenAPI document shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedEndpoint {
    /// The path in OpenAPI form: `/hello/{name}`; each `{param}` fills the request
    /// field of that name.
    pub path: String,
    /// The methods the route answers; empty means any, documented as `POST` (and
    /// `GET` when the request is a flat object of scalars).
    pub methods: Vec<Method>,
    /// The service the route calls (`greeter`).
    pub service: String,
    /// The endpoint the route calls (`Greeter.Hello`).
    pub endpoint: String,
}

/// The OpenAPI 3.1 document of the gateway for these registry records (every
/// version of every service; records outside `namespace` are left out) and the
/// routes of the routes file.
///
/// Endpoints whose metadata names a `topic` (subscribers) are not callable through
/// the gateway and are left out; server-streaming endpoints (`stream: server`) answer
/// `text/event-stream`.
///
/// ```
/// use micro::registry::{Endpoint, Service, Type};
/// use micro_cli::api::openapi::document;
/// use serde_json::json;
///
/// let greeter = Service {
///     name: "greeter".into(),
///     version: "latest".into(),
///     endpoints: vec![Endpoint {
///         name: "Greeter.Hello".into(),
///         request: Type {
///             name: "HelloRequest".into(),
///             schema: json!({"type": "object", "properties": {"name": {"type": "string"}}}),
///         },
///         response: Type {
///             name: "HelloResponse".into(),
///             schema: json!({"type": "object", "properties": {"message": {"type": "string"}}}),
///         },
///         ..Endpoint::default()
///     }],
///     ..Service::default()
/// };
/// let doc = document(&[greeter], None, &[]);
/// assert_eq!(doc["openapi"], "3.1.0");
/// let post = &doc["paths"]["/greeter/hello"]["post"];
/// assert_eq!(post["operationId"], "greeter.Greeter.Hello");
/// assert_eq!(
///     post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
///     "#/components/schemas/greeter.HelloRequest"
/// );
/// // A flat request can be sent as query parameters too.
/// assert_eq!(doc["paths"]["/greeter/hello"]["get"]["parameters"][0]["name"], "name");
/// ```
pub fn document(services: &[Service], namespace: Option<&str>, routes: &[RoutedEndpoint]) -> Value {
    let mut by_name: BTreeMap<&str, Vec<&Service>> = BTreeMap::new();
    for service in services {
        by_name.entry(&service.name).or_default().push(service);
    }
    for versions in by_name.values_mut() {
        versions.sort_by(|a, b| a.version.cmp(&b.version));
    }

    let mut doc = Doc::new();

    // Routes first: the routes file takes precedence over zero-config paths.
    let mut routes: Vec<&RoutedEndpoint> = routes.iter().collect();
    routes.sort_by_cached_key(|r| {
        let methods: Vec<&str> = r.methods.iter().map(Method::as_str).collect();
        (
            r.path.clone(),
            r.service.clone(),
            r.endpoint.clone(),
            methods.join(","),
        )
    });
    for route in routes {
        let versions = by_name.get(route.service.as_str());
        let merged = match versions {
            Some(versions) => {
                let found = endpoint_versions(versions, Some(&route.endpoint));
                match found.get(route.endpoint.as_str()) {
                    Some(found) => doc.merge(&route.service, &route.endpoint, found),
                    None => Merged::unknown(&route.service, &route.endpoint),
                }
            }
            None => Merged::unknown(&route.service, &route.endpoint),
        };
        doc.route(route, &merged);
    }

    for (name, versions) in &by_name {
        for (endpoint, found) in endpoint_versions(versions, None) {
            let Some(path) = path_for(name, endpoint, namespace) else {
                continue;
            };
            // Only where the gateway really resolves that path to this service.
            if parse_path(&path, namespace).map(|w| w.service).as_deref() != Some(*name) {
                continue;
            }
            let merged = doc.merge(name, endpoint, &found);
            doc.zero_config(&path, &merged);
        }
    }
    doc.finish(&by_name)
}

/// The versions of each endpoint of one service's records, by endpoint name;
/// subscribers (metadata `topic`) left out, and only `only` when given.
fn endpoint_versions<'a>(
    versions: &[&'a Service],
    only: Option<&str>,
) -> BTreeMap<&'a str, Vec<(&'a str, &'a Endpoint)>> {
    let mut out: BTreeMap<&str, Vec<(&str, &Endpoint)>> = BTreeMap::new();
    for service in versions {
        for endpoint in &service.endpoints {
            if endpoint.metadata.contains_key("topic") || only.is_some_and(|o| o != endpoint.name) {
                continue;
            }
            out.entry(&endpoint.name)
                .or_default()
                .push((&service.version, endpoint));
        }
    }
    out
}

/// One endpoint with every version of it merged: what its operations show.
#[derive(Debug)]
struct Merged {
    service: String,
    endpoint: String,
    /// The versions that serve it; empty when the service is not registered.
    versions: Vec<String>,
    /// The request and response schemas (`$ref`s, or `anyOf` when versions differ).
    request: Value,
    response: Value,
    request_name: String,
    response_name: String,
    /// The request fields when the request is a flat object of scalars:
    /// name, schema, required.
    fields: Option<Vec<(String, Value, bool)>>,
    /// `server`, `client`, `bidi`, or empty for unary.
    stream: String,
}

impl Merged {
    /// A routed endpoint the registry does not know (yet): any JSON object.
    fn unknown(service: &str, endpoint: &str) -> Self {
        Merged {
            service: service.to_string(),
            endpoint: endpoint.to_string(),
            versions: Vec::new(),
            request: json!({"type": "object"}),
            response: json!({}),
            request_name: "request".into(),
            response_name: "response".into(),
            fields: None,
            stream: String::new(),
        }
    }

    /// Whether the gateway answers with a stream (as `api::call::streams` decides).
    fn streams(&self) -> bool {
        matches!(self.stream.as_str(), "server" | "bidi" | "true")
    }

    /// The field schema of a path parameter: the request field's when it is a
    /// scalar, else a string.
    fn path_param(&self, name: &str) -> (Value, Option<Value>) {
        let field = self
            .fields
            .iter()
            .flatten()
            .find(|(n, s, _)| n == name && is_scalar(s))
            .map(|(_, s, _)| s.clone());
        match field {
            Some(schema) => split_description(schema),
            None => (json!({"type": "string"}), None),
        }
    }
}

/// The document being built.
#[derive(Debug)]
struct Doc {
    /// `components/schemas`.
    schemas: BTreeMap<String, Value>,
    /// path -> method -> operation.
    paths: BTreeMap<String, BTreeMap<String, Value>>,
    /// A path with its parameter names blanked (`/hello/{}`) -> the path as written:
    /// OpenAPI forbids two templates that differ only in parameter names.
    shapes: BTreeMap<String, String>,
    operation_ids: BTreeSet<String>,
    /// The services that have operations.
    tags: BTreeSet<String>,
}

impl Doc {
    fn new() -> Self {
        let mut schemas = BTreeMap::new();
        schemas.insert(ERROR_SCHEMA.to_string(), error_schema());
        Doc {
            schemas,
            paths: BTreeMap::new(),
            shapes: BTreeMap::new(),
            operation_ids: BTreeSet::new(),
            tags: BTreeSet::new(),
        }
    }

    /// Merges the versions of one endpoint, registering their schemas.
    fn merge(&mut self, service: &str, endpoint: &str, found: &[(&str, &Endpoint)]) -> Merged {
        let mut requests: Vec<(Value, &Type)> = Vec::new();
        let mut responses: Vec<(Value, &Type)> = Vec::new();
        for (_, e) in found {
            let request = self.schema(service, &e.request, &format!("{endpoint}.Request"));
            if !requests.iter().any(|(r, _)| *r == request) {
                requests.push((request, &e.request));
            }
            let response = self.schema(service, &e.response, &format!("{endpoint}.Response"));
            if !responses.iter().any(|(r, _)| *r == response) {
                responses.push((response, &e.response));
            }
        }
        let fields = match requests.as_slice() {
            [(_, ty)] => flat_fields(&ty.schema),
            _ => None,
        };
        let type_name = |types: &[(Value, &Type)], fallback: &str| {
            let mut names: Vec<&str> = types
                .iter()
                .map(|(_, t)| t.name.as_str())
                .filter(|n| !n.is_empty())
                .collect();
            names.dedup();
            match names.as_slice() {
                [] => fallback.to_string(),
                _ => names.join(" | "),
            }
        };
        let stream = found
            .iter()
            .filter_map(|(_, e)| e.metadata.get("stream"))
            .find(|s| !s.is_empty() && s.as_str() != "false")
            .cloned()
            .unwrap_or_default();
        let mut versions: Vec<String> = found.iter().map(|(v, _)| v.to_string()).collect();
        versions.dedup();
        Merged {
            service: service.to_string(),
            endpoint: endpoint.to_string(),
            versions,
            request_name: type_name(&requests, "request"),
            response_name: type_name(&responses, "response"),
            request: one_of(requests.into_iter().map(|(r, _)| r).collect()),
            response: one_of(responses.into_iter().map(|(r, _)| r).collect()),
            fields,
            stream,
        }
    }

    /// Registers the schema of a message type in `components/schemas` (its `$defs`
    /// too) and returns the schema that refers to it.
    fn schema(&mut self, service: &str, ty: &Type, fallback: &str) -> Value {
        let root = match &ty.schema {
            Value::Object(root) => root.clone(),
            Value::Bool(true) => return json!({}),
            Value::Bool(false) => return json!({"not": {}}),
            _ => return json!({"description": "No JSON Schema is registered for this message."}),
        };
        let local = if !ty.name.is_empty() {
            ty.name.clone()
        } else if let Some(title) = root.get("title").and_then(Value::as_str) {
            title.to_string()
        } else {
            fallback.to_string()
        };
        let bundle = Bundle::new(root, sanitize(&format!("{service}.{local}")));

        // Settle the names: a name already taken by a different schema gets a suffix;
        // renaming one part changes the parts that refer to it, so repeat until stable.
        let mut names = bundle.unique_names(&self.schemas);
        let parts = loop {
            let parts = bundle.rewritten(&names);
            let mut changed = false;
            for (i, part) in parts.iter().enumerate() {
                if self
                    .schemas
                    .get(&names[i])
                    .is_some_and(|taken| taken != part)
                {
                    names[i] = fresh(&bundle.wanted[i], &names, &self.schemas);
                    changed = true;
                }
            }
            if !changed {
                break parts;
            }
        };
        for (name, part) in names.iter().zip(parts) {
            self.schemas.entry(name.clone()).or_insert(part);
        }
        reference(&names[0])
    }

    /// The operations of a routes-file route.
    fn route(&mut self, route: &RoutedEndpoint, merged: &Merged) {
        // `{rest*}` (the rest of the path) is a plain parameter in OpenAPI.
        let rest: Vec<String> = path_params(&route.path)
            .into_iter()
            .filter_map(|p| p.strip_suffix('*').map(str::to_string))
            .collect();
        let path = route.path.replace("*}", "}");
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let shape = shape_of(&path);
        if self.shapes.get(&shape).is_some_and(|p| *p != path) {
            return;
        }
        let params = path_params(&path);
        let mut methods: Vec<String> = route
            .methods
            .iter()
            .map(|m| m.as_str().to_ascii_lowercase())
            .collect();
        if methods.is_empty() {
            methods.push("post".into());
            if merged.fields.is_some() {
                methods.push("get".into());
            }
        }
        methods.sort();
        methods.dedup();
        let slug = slug(&path);
        for method in methods {
            if !is_openapi_method(&method) {
                continue;
            }
            let with_body = !matches!(
                method.as_str(),
                "get" | "head" | "delete" | "options" | "trace"
            );
            let id = format!(
                "{}.{}.route_{method}{}{slug}",
                merged.service,
                merged.endpoint,
                if slug.is_empty() { "" } else { "_" }
            );
            let mut parameters: Vec<Value> = params
                .iter()
                .map(|name| {
                    let (schema, description) = merged.path_param(name);
                    let mut description = match description {
                        Some(Value::String(d)) => d,
                        _ => format!("Fills the request field `{name}`."),
                    };
                    if rest.contains(name) {
                        description.push_str(" The rest of the path: any number of segments.");
                    }
                    json!({
                        "name": name,
                        "in": "path",
                        "required": true,
                        "description": description,
                        "schema": schema,
                    })
                })
                .collect();
            if !with_body {
                parameters.extend(query_params(merged, &params));
            }
            let description = format!(
                "Routed by the routes file: calls `{}` of the service `{}`.",
                merged.endpoint, merged.service
            );
            let operation = self.operation(merged, id, description, parameters, with_body);
            self.add(&path, &shape, &method, operation);
        }
    }

    /// The operations of an endpoint at its zero-config path.
    fn zero_config(&mut self, path: &str, merged: &Merged) {
        let shape = shape_of(path);
        if self.shapes.get(&shape).is_some_and(|p| p != path) {
            return;
        }
        let base = format!("{}.{}", merged.service, merged.endpoint);
        let description = format!(
            "Calls `{}` of the service `{}` (versions: {}).",
            merged.endpoint,
            merged.service,
            merged.versions.join(", ")
        );
        let post = self.operation(merged, base.clone(), description.clone(), Vec::new(), true);
        self.add(path, &shape, "post", post);
        if merged.fields.is_some() {
            let description = format!("{description} The request fields are query parameters.");
            let get = self.operation(
                merged,
                format!("{base}.get"),
                description,
                query_params(merged, &[]),
                false,
            );
            self.add(path, &shape, "get", get);
        }
    }

    /// Adds an operation unless the method of that path is taken.
    fn add(&mut self, path: &str, shape: &str, method: &str, operation: Value) {
        let item = self.paths.entry(path.to_string()).or_default();
        if item.contains_key(method) {
            return;
        }
        if let Some(id) = operation["operationId"].as_str() {
            self.operation_ids.insert(id.to_string());
        }
        if let Some(tag) = operation["tags"][0].as_str() {
            self.tags.insert(tag.to_string());
        }
        item.insert(method.to_string(), operation);
        self.shapes.insert(shape.to_string(), path.to_string());
    }

    /// One operation; `body` is whether it takes a request body (never required:
    /// the gateway reads an empty body as the query, or `{}`).
    fn operation(
        &self,
        merged: &Merged,
        id: String,
        description: String,
        parameters: Vec<Value>,
        body: bool,
    ) -> Value {
        let mut id = id;
        if self.operation_ids.contains(&id) {
            let base = id.clone();
            let mut n = 2;
            while self.operation_ids.contains(&id) {
                id = format!("{base}_{n}");
                n += 1;
            }
        }
        let mut operation = Map::new();
        operation.insert("operationId".into(), Value::String(id));
        operation.insert("tags".into(), json!([merged.service]));
        operation.insert("summary".into(), Value::String(merged.endpoint.clone()));
        let mut description = description;
        match merged.stream.as_str() {
            "client" => description.push_str(
                " A client-streaming endpoint: an HTTP request carries one message of the stream.",
            ),
            "bidi" => description.push_str(
                " A bidirectional-streaming endpoint: an HTTP request carries one message, and the answers come as a stream.",
            ),
            _ => {}
        }
        operation.insert("description".into(), Value::String(description));
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if body {
            operation.insert(
                "requestBody".into(),
                json!({
                    "description": format!("The request message `{}` in JSON.", merged.request_name),
                    "required": false,
                    "content": {"application/json": {"schema": merged.request.clone()}},
                }),
            );
        }
        let ok = if merged.streams() {
            // OpenAPI 3.1 cannot give the schema of one event: the stream is a string,
            // and `x-micro-message` the schema of each message in it.
            let stream = json!({
                "schema": {"type": "string"},
                "x-micro-message": merged.response.clone(),
            });
            json!({
                "description": format!(
                    "A stream of `{}` messages in JSON: as server-sent events (the `data` of each \
                     event is one message; a failure is an `error` event with the error JSON), or \
                     one message per line when the request's `Accept` asks for \
                     `application/x-ndjson`.",
                    merged.response_name
                ),
                "content": {
                    "text/event-stream": stream.clone(),
                    "application/x-ndjson": stream,
                },
            })
        } else {
            json!({
                "description": format!("The response message `{}` in JSON.", merged.response_name),
                "content": {"application/json": {"schema": merged.response.clone()}},
            })
        };
        let mut responses = Map::new();
        responses.insert("200".into(), ok);
        for (code, name, _) in ERRORS {
            responses.insert(
                code.into(),
                json!({"$ref": format!("#/components/responses/{name}")}),
            );
        }
        operation.insert("responses".into(), Value::Object(responses));
        operation.insert(
            "x-micro-service".into(),
            Value::String(merged.service.clone()),
        );
        operation.insert(
            "x-micro-endpoint".into(),
            Value::String(merged.endpoint.clone()),
        );
        if !merged.stream.is_empty() {
            operation.insert(
                "x-micro-stream".into(),
                Value::String(merged.stream.clone()),
            );
        }
        Value::Object(operation)
    }

    fn finish(self, by_name: &BTreeMap<&str, Vec<&Service>>) -> Value {
        let tags: Vec<Value> = self
            .tags
            .iter()
            .map(|name| {
                let description = match by_name.get(name.as_str()) {
                    Some(versions) => {
                        let mut list: Vec<&str> =
                            versions.iter().map(|s| s.version.as_str()).collect();
                        list.dedup();
                        format!("The service `{name}` (versions: {}).", list.join(", "))
                    }
                    None => format!("The service `{name}` (not registered right now)."),
                };
                json!({"name": name, "description": description})
            })
            .collect();
        let paths: Map<String, Value> = self
            .paths
            .into_iter()
            .filter(|(_, item)| !item.is_empty())
            .map(|(path, item)| (path, Value::Object(item.into_iter().collect())))
            .collect();
        let responses: Map<String, Value> = ERRORS
            .iter()
            .map(|(_, name, description)| {
                (
                    name.to_string(),
                    json!({
                        "description": description,
                        "content": {"application/json": {"schema": reference(ERROR_SCHEMA)}},
                    }),
                )
            })
            .collect();
        json!({
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "micro api",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "The services behind this micro API gateway, from the registry \
                    (regenerated as services come and go) and the routes file. Requests and \
                    responses are the services' messages in proto3 JSON form; every error is \
                    `{id, code, detail, status}`.",
            },
            "tags": tags,
            "paths": paths,
            "components": {
                "schemas": self.schemas.into_iter().collect::<Map<String, Value>>(),
                "responses": responses,
            },
        })
    }
}

/// The parts of one registered schema: the root and its `$defs` / `definitions`.
#[derive(Debug)]
struct Bundle {
    /// Root first, then each definition, with their own `$defs` removed.
    parts: Vec<Map<String, Value>>,
    /// The component name each part asks for (sanitized).
    wanted: Vec<String>,
    /// (`$defs` or `definitions`, key) of each definition, by part index - 1.
    keys: Vec<(String, String)>,
}

impl Bundle {
    fn new(mut root: Map<String, Value>, root_name: String) -> Self {
        let mut parts = Vec::new();
        let mut wanted = vec![root_name];
        let mut keys = Vec::new();
        for container in ["$defs", "definitions"] {
            // A container that is not an object holds nothing: it goes.
            if let Some(Value::Object(defs)) = root.remove(container) {
                for (key, def) in defs {
                    let def = match def {
                        Value::Object(def) => def,
                        Value::Bool(false) => json_map(json!({"not": {}})),
                        _ => Map::new(),
                    };
                    wanted.push(sanitize(&key));
                    keys.push((container.to_string(), key));
                    parts.push(def);
                }
            }
        }
        parts.insert(0, root);
        for part in &mut parts {
            // The components live in the OpenAPI document: no base URI or dialect of
            // their own, or the rewritten references would resolve elsewhere.
            part.remove("$schema");
            part.remove("$id");
        }
        Bundle {
            parts,
            wanted,
            keys,
        }
    }

    /// The wanted names, made unique within the bundle.
    fn unique_names(&self, taken: &BTreeMap<String, Value>) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for wanted in &self.wanted {
            let name = if names.contains(wanted) {
                fresh(wanted, &names, taken)
            } else {
                wanted.clone()
            };
            names.push(name);
        }
        names
    }

    /// The parts with every `$ref` pointing at its component.
    fn rewritten(&self, names: &[String]) -> Vec<Value> {
        self.parts
            .iter()
            .map(|part| {
                let mut part = Value::Object(part.clone());
                rewrite_refs(&mut part, &|r| self.target(r, names));
                part
            })
            .collect()
    }

    /// Where a `$ref` of the original schema points now; `None` when it cannot be
    /// resolved inside the document (external, anchors, dangling).
    fn target(&self, r: &str, names: &[String]) -> Option<String> {
        let pointer = r.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(ref_path(&names[0]));
        }
        let rest = pointer.strip_prefix('/')?;
        let mut tokens = rest.splitn(3, '/');
        let first = unescape(tokens.next().unwrap_or_default());
        if first == "$defs" || first == "definitions" {
            let key = unescape(tokens.next()?);
            let tail = tokens.next();
            let i = self
                .keys
                .iter()
                .position(|(c, k)| *c == first && *k == key)?;
            let mut target = ref_path(&names[i + 1]);
            if let Some(tail) = tail {
                target.push('/');
                target.push_str(tail);
            }
            return Some(target);
        }
        Some(format!("{}{pointer}", ref_path(&names[0])))
    }
}

/// Rewrites every `$ref` in a schema (not inside literal values); drops those `map`
/// cannot place.
fn rewrite_refs(schema: &mut Value, map: &dyn Fn(&str) -> Option<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::String(r)) = object.get("$ref") {
                match map(r) {
                    Some(target) => {
                        object.insert("$ref".into(), Value::String(target));
                    }
                    None => {
                        object.remove("$ref");
                    }
                }
            }
            for (key, value) in object.iter_mut() {
                if !matches!(
                    key.as_str(),
                    "enum" | "const" | "default" | "examples" | "example"
                ) {
                    rewrite_refs(value, map);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite_refs(item, map);
            }
        }
        _ => {}
    }
}

/// A JSON pointer token, percent- and `~`-decoded.
fn unescape(token: &str) -> String {
    let bytes = token.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                decoded.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&decoded)
        .replace("~1", "/")
        .replace("~0", "~")
}

/// `#/components/schemas/<name>` (names hold no characters to escape).
fn ref_path(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

fn reference(name: &str) -> Value {
    json!({"$ref": ref_path(name)})
}

/// A component name OpenAPI accepts (`^[a-zA-Z0-9\.\-_]+$`).
fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "Schema".into()
    } else {
        clean
    }
}

/// `base_2`, `base_3`, …: the first taken neither in the document nor in `names`.
fn fresh(base: &str, names: &[String], taken: &BTreeMap<String, Value>) -> String {
    (2..)
        .map(|n| format!("{base}_{n}"))
        .find(|name| !taken.contains_key(name) && !names.contains(name))
        .unwrap_or_else(|| base.to_string())
}

/// One schema, or `anyOf` several (versions that differ).
fn one_of(mut schemas: Vec<Value>) -> Value {
    match schemas.len() {
        0 => json!({}),
        1 => schemas.remove(0),
        _ => json!({"anyOf": schemas}),
    }
}

/// The fields of a request that is an object of scalars (what query parameters can
/// carry): name, schema, required. `None` otherwise.
fn flat_fields(schema: &Value) -> Option<Vec<(String, Value, bool)>> {
    let object = schema.as_object()?;
    if object.get("type").and_then(Value::as_str) != Some("object")
        || [
            "$ref",
            "allOf",
            "anyOf",
            "oneOf",
            "not",
            "if",
            "patternProperties",
        ]
        .iter()
        .any(|k| object.contains_key(*k))
    {
        return None;
    }
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    if let Some(properties) = object.get("properties") {
        for (name, field) in properties.as_object()? {
            if !is_scalar(field) && !is_scalar_list(field) {
                return None;
            }
            fields.push((
                name.clone(),
                field.clone(),
                required.contains(&name.as_str()),
            ));
        }
    }
    Some(fields)
}

/// A schema of strings, numbers, booleans or null (enums included).
fn is_scalar(schema: &Value) -> bool {
    const SCALARS: [&str; 5] = ["string", "integer", "number", "boolean", "null"];
    let Some(object) = schema.as_object() else {
        return false;
    };
    if ["$ref", "properties", "items", "prefixItems", "allOf", "not"]
        .iter()
        .any(|k| object.contains_key(*k))
    {
        return false;
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(options) = object.get(combinator) {
            return options
                .as_array()
                .is_some_and(|o| !o.is_empty() && o.iter().all(is_scalar));
        }
    }
    match object.get("type") {
        Some(Value::String(t)) => SCALARS.contains(&t.as_str()),
        Some(Value::Array(types)) => {
            !types.is_empty()
                && types
                    .iter()
                    .all(|t| t.as_str().is_some_and(|t| SCALARS.contains(&t)))
        }
        _ => false,
    }
}

/// A list of scalars: a repeated query parameter (`?tag=a&tag=b`).
fn is_scalar_list(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("array")
        && schema.get("items").is_some_and(is_scalar)
        && schema.get("prefixItems").is_none()
}

/// A field schema without its description, and the description.
fn split_description(schema: Value) -> (Value, Option<Value>) {
    match schema {
        Value::Object(mut object) => {
            let description = object.remove("description");
            (Value::Object(object), description)
        }
        other => (other, None),
    }
}

/// The request fields as query parameters, except those the path fills.
fn query_params(merged: &Merged, skip: &[String]) -> Vec<Value> {
    merged
        .fields
        .iter()
        .flatten()
        .filter(|(name, _, _)| !skip.contains(name))
        .map(|(name, schema, required)| {
            let (schema, description) = split_description(schema.clone());
            let mut param = json_map(json!({
                "name": name,
                "in": "query",
                "required": required,
                "schema": schema,
            }));
            if let Some(description) = description {
                param.insert("description".into(), description);
            }
            Value::Object(param)
        })
        .collect()
}

/// The `{param}` names of a path template, in order, once each.
fn path_params(path: &str) -> Vec<String> {
    let mut params: Vec<String> = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if !name.is_empty() && !params.iter().any(|p| p == name) {
            params.push(name.to_string());
        }
        rest = &rest[open + close + 1..];
    }
    params
}

/// A path with its parameter names blanked: `/hello/{name}` → `/hello/{}`.
fn shape_of(path: &str) -> String {
    let mut shape = String::with_capacity(path.len());
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                shape.push('{');
            }
            '}' if inside => {
                inside = false;
                shape.push('}');
            }
            _ if inside => {}
            _ => shape.push(c),
        }
    }
    shape
}

/// `/hello/{name}` → `hello_name`, for operation ids.
fn slug(path: &str) -> String {
    path.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// The methods a Path Item Object can hold.
fn is_openapi_method(method: &str) -> bool {
    matches!(
        method,
        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
    )
}

fn json_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `{id, code, detail, status}`: micro's one error shape.
fn error_schema() -> Value {
    json!({
        "title": "Error",
        "description": "The error every micro service and the gateway answer with; the HTTP status is `code`.",
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Who answered: the service name, or `micro.api` for the gateway."},
            "code": {"type": "integer", "description": "The HTTP status code."},
            "detail": {"type": "string", "description": "What went wrong."},
            "status": {"type": "string", "description": "The status text of `code` (`Not Found`)."},
        },
        "required": ["id", "code", "detail", "status"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The greeter's record exactly as `micro get service greeter -o json` prints it.
    const GREETER: &str = r#"{"name":"greeter","version":"latest","metadata":{},"endpoints":[{"name":"Greeter.Hello","request":{"name":"HelloRequest","schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","additionalProperties":false,"properties":{"name":{"description":"Who to greet.","type":"string"}},"title":"HelloRequest","type":"object"}},"response":{"name":"HelloResponse","schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","additionalProperties":false,"properties":{"message":{"description":"The greeting.","type":"string"}},"title":"HelloResponse","type":"object"}},"metadata":{"stream":"false"}},{"name":"Greeter.Stream","request":{"name":"StreamRequest","schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","additionalProperties":false,"properties":{"count":{"description":"How many greetings to send (default 3, at most 1000).","maximum":2147483647,"minimum":-2147483648,"type":"integer"},"name":{"description":"Who to greet.","type":"string"}},"title":"StreamRequest","type":"object"}},"response":{"name":"StreamResponse","schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","additionalProperties":false,"properties":{"message":{"description":"The greeting.","type":"string"},"sequence":{"description":"Position in the stream, from 1.","maximum":2147483647,"minimum":-2147483648,"type":"integer"}},"title":"StreamResponse","type":"object"}},"metadata":{"stream":"server"}}],"nodes":[{"id":"greeter-f92b2322-6e07-4a24-924e-b7bf435e8982","address":"127.0.0.1:34849","metadata":{"protocol":"grpc+json","registry":"mdns","server":"micro"}}]}"#;

    fn greeter() -> Service {
        serde_json::from_str(GREETER).expect("the greeter's record")
    }

    fn service(name: &str, version: &str, endpoints: Vec<Endpoint>) -> Service {
        Service {
            name: name.into(),
            version: version.into(),
            endpoints,
            ..Service::default()
        }
    }

    fn endpoint(name: &str, request: Value, response: Value, stream: &str) -> Endpoint {
        let ty = |schema: Value| Type {
            name: schema["title"].as_str().unwrap_or_default().to_string(),
            schema,
        };
        Endpoint {
            name: name.into(),
            request: ty(request),
            response: ty(response),
            metadata: [("stream".to_string(), stream.to_string())].into(),
        }
    }

    fn route(path: &str, methods: &[Method], service: &str, endpoint: &str) -> RoutedEndpoint {
        RoutedEndpoint {
            path: path.into(),
            methods: methods.to_vec(),
            service: service.into(),
            endpoint: endpoint.into(),
        }
    }

    /// Resolves a local `$ref` in the document.
    fn resolve<'a>(doc: &'a Value, r: &str) -> Option<&'a Value> {
        doc.pointer(r.strip_prefix('#')?)
    }

    /// Every `$ref` string anywhere in the document.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        ("enum" | "const" | "default" | "examples" | "example", _) => {}
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// What any valid document of ours holds: resolvable refs, component names
    /// OpenAPI accepts, unique operation ids, declared path parameters.
    fn assert_well_formed(doc: &Value) {
        let mut all = Vec::new();
        refs(doc, &mut all);
        for r in &all {
            assert!(resolve(doc, r).is_some(), "dangling $ref {r}");
        }
        for name in doc["components"]["schemas"]
            .as_object()
            .expect("schemas")
            .keys()
        {
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
                "component name {name:?}"
            );
        }
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            assert!(path.starts_with('/'), "{path}");
            for (method, op) in item.as_object().expect("path item") {
                assert!(is_openapi_method(method), "{method}");
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert_eq!(declared, path_params(path), "{method} {path}");
                assert_eq!(
                    op["responses"]["404"]["$ref"],
                    "#/components/responses/NotFound"
                );
            }
        }
    }

    #[test]
    fn the_greeter_is_described() {
        let doc = document(&[greeter()], None, &[]);
        assert_well_formed(&doc);
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "micro api");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["tags"][0]["name"], "greeter");

        let hello = &doc["paths"]["/greeter/hello"];
        let post = &hello["post"];
        assert_eq!(post["operationId"], "greeter.Greeter.Hello");
        assert_eq!(post["tags"], json!(["greeter"]));
        assert_eq!(post["summary"], "Greeter.Hello");
        assert_eq!(post["x-micro-service"], "greeter");
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/greeter.HelloRequest"})
        );
        assert_eq!(post["requestBody"]["required"], false);
        assert_eq!(
            post["responses"]["200"]["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/greeter.HelloResponse"})
        );
        for (code, name, _) in ERRORS {
            assert_eq!(
                post["responses"][code]["$ref"],
                format!("#/components/responses/{name}")
            );
            assert_eq!(
                doc["components"]["responses"][name]["content"]["application/json"]["schema"]
                    ["$ref"],
                "#/components/schemas/Error"
            );
        }
        let error = &doc["components"]["schemas"]["Error"];
        assert_eq!(error["required"], json!(["id", "code", "detail", "status"]));
        assert_eq!(error["properties"]["code"]["type"], "integer");

        let get = &hello["get"];
        assert_eq!(get["operationId"], "greeter.Greeter.Hello.get");
        assert!(get.get("requestBody").is_none());
        assert_eq!(
            get["parameters"],
            json!([{
                "name": "name", "in": "query", "required": false,
                "schema": {"type": "string"}, "description": "Who to greet."
            }])
        );

        let request = &doc["components"]["schemas"]["greeter.HelloRequest"];
        assert_eq!(request["properties"]["name"]["type"], "string");
        assert_eq!(request["title"], "HelloRequest");
        assert!(request.get("$schema").is_none());

        // The server-streaming endpoint answers server-sent events.
        let stream = &doc["paths"]["/greeter/stream"]["post"];
        assert_eq!(stream["operationId"], "greeter.Greeter.Stream");
        assert_eq!(stream["x-micro-stream"], "server");
        let ok = &stream["responses"]["200"]["content"];
        assert!(ok.get("application/json").is_none());
        assert_eq!(ok["text/event-stream"]["schema"]["type"], "string");
        assert_eq!(
            ok["text/event-stream"]["x-micro-message"]["$ref"],
            "#/components/schemas/greeter.StreamResponse"
        );
        let params: Vec<&str> = doc["paths"]["/greeter/stream"]["get"]["parameters"]
            .as_array()
            .expect("query parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(params, ["count", "name"]);

        let names: Vec<&String> = doc["components"]["schemas"]
            .as_object()
            .expect("schemas")
            .keys()
            .collect();
        assert_eq!(
            names,
            [
                "Error",
                "greeter.HelloRequest",
                "greeter.HelloResponse",
                "greeter.StreamRequest",
                "greeter.StreamResponse"
            ]
        );
    }

    #[test]
    fn services_outside_the_namespace_are_left_out() {
        let hello = greeter().endpoints[0].clone();
        let services = [
            service("acme.greeter", "latest", vec![hello.clone()]),
            service("other.greeter", "latest", vec![hello.clone()]),
            service("greeter", "latest", vec![hello.clone()]),
            service("acme.v1.greeter", "latest", vec![hello.clone()]),
        ];
        let doc = document(&services, Some("acme"), &[]);
        assert_well_formed(&doc);
        let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
        assert_eq!(paths, ["/greeter/hello", "/v1/greeter/hello"]);
        assert_eq!(
            doc["paths"]["/greeter/hello"]["post"]["operationId"],
            "acme.greeter.Greeter.Hello"
        );
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(tags, ["acme.greeter", "acme.v1.greeter"]);

        // Without a namespace every service is in, dotted names as one segment.
        let doc = document(&services, None, &[]);
        assert_well_formed(&doc);
        let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
        assert_eq!(
            paths,
            [
                "/acme.greeter/hello",
                "/acme.v1.greeter/hello",
                "/greeter/hello",
                "/other.greeter/hello"
            ]
        );
        assert_eq!(
            doc["paths"]["/greeter/hello"]["post"]["x-micro-service"],
            "greeter"
        );
        assert_eq!(
            doc["paths"]["/other.greeter/hello"]["post"]["operationId"],
            "other.greeter.Greeter.Hello"
        );
    }

    #[test]
    fn versions_merge_into_one_operation() {
        let mut v2 = greeter();
        v2.version = "v2".into();
        // v2 has a new request field and a new endpoint.
        v2.endpoints[0].request.schema["properties"]["lang"] = json!({"type": "string"});
        v2.endpoints.push(endpoint(
            "Greeter.SayHello",
            json!({"title": "SayHelloRequest", "type": "object"}),
            json!({"title": "SayHelloResponse", "type": "object"}),
            "false",
        ));
        let doc = document(&[v2, greeter()], None, &[]);
        assert_well_formed(&doc);
        let post = &doc["paths"]["/greeter/hello"]["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"],
            json!({"anyOf": [
                {"$ref": "#/components/schemas/greeter.HelloRequest"},
                {"$ref": "#/components/schemas/greeter.HelloRequest_2"},
            ]})
        );
        // The same response in both versions is one component.
        assert_eq!(
            post["responses"]["200"]["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/greeter.HelloResponse"})
        );
        assert!(doc["components"]["schemas"]
            .get("greeter.HelloResponse_2")
            .is_none());
        // Two different requests cannot be one set of query parameters.
        assert!(doc["paths"]["/greeter/hello"].get("get").is_none());
        assert!(post["description"]
            .as_str()
            .expect("description")
            .contains("latest, v2"));
        assert!(doc["paths"]["/greeter/say-hello"]["post"].is_object());
    }

    #[test]
    fn routes_have_path_parameters() {
        let routes = [
            route(
                "/hello/{name}",
                &[Method::GET, Method::POST],
                "greeter",
                "Greeter.Hello",
            ),
            // Same template with another parameter name: not representable, left out.
            route("/hello/{who}", &[Method::PUT], "greeter", "Greeter.Hello"),
            route("/count/{count}", &[], "greeter", "Greeter.Stream"),
            route("/users/{id}", &[Method::DELETE], "users", "Users.Delete"),
            // The routes file wins over the zero-config path.
            route(
                "/greeter/hello",
                &[Method::POST],
                "greeter",
                "Greeter.Stream",
            ),
            route("/odd", &[Method::CONNECT], "greeter", "Greeter.Hello"),
            route("/legacy/{rest*}", &[Method::GET], "legacy", "Legacy.Get"),
        ];
        let doc = document(&[greeter()], None, &routes);
        assert_well_formed(&doc);

        let item = &doc["paths"]["/hello/{name}"];
        let get = &item["get"];
        assert_eq!(
            get["operationId"],
            "greeter.Greeter.Hello.route_get_hello_name"
        );
        assert_eq!(
            get["parameters"],
            json!([{
                "name": "name", "in": "path", "required": true,
                "description": "Who to greet.", "schema": {"type": "string"}
            }])
        );
        assert!(get.get("requestBody").is_none());
        let post = &item["post"];
        assert_eq!(
            post["operationId"],
            "greeter.Greeter.Hello.route_post_hello_name"
        );
        assert_eq!(post["parameters"][0]["in"], "path");
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/greeter.HelloRequest"
        );
        assert!(item.get("put").is_none());
        assert!(doc["paths"].get("/hello/{who}").is_none());
        assert!(doc["paths"].get("/odd").is_none());

        // No methods: POST, and GET since the request is flat; the integer field
        // keeps its schema as a path parameter and is not a query parameter too.
        let count = &doc["paths"]["/count/{count}"];
        assert_eq!(count["get"]["parameters"][0]["schema"]["type"], "integer");
        assert_eq!(count["get"]["parameters"][1]["name"], "name");
        assert_eq!(count["get"]["parameters"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            count["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]["type"],
            "string"
        );

        // A route to a service that is not registered (yet) takes any object.
        let delete = &doc["paths"]["/users/{id}"]["delete"];
        assert_eq!(delete["tags"], json!(["users"]));
        assert_eq!(delete["parameters"][0]["schema"]["type"], "string");
        assert!(doc["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .any(|t| t["name"] == "users"));

        let rest = &doc["paths"]["/legacy/{rest}"]["get"]["parameters"][0];
        assert_eq!(rest["name"], "rest");
        assert!(rest["description"]
            .as_str()
            .expect("description")
            .contains("rest of the path"));

        let hello = &doc["paths"]["/greeter/hello"];
        assert_eq!(hello["post"]["x-micro-endpoint"], "Greeter.Stream");
        assert_eq!(hello["get"]["x-micro-endpoint"], "Greeter.Hello");
    }

    #[test]
    fn other_streams_and_subscribers() {
        let mut chat = endpoint(
            "Chat.Talk",
            json!({"title": "Line", "type": "object"}),
            json!({"title": "Line", "type": "object"}),
            "bidi",
        );
        chat.metadata.insert("extra".into(), "x".into());
        let mut subscriber = endpoint("Chat.OnLine", json!({}), json!({}), "false");
        subscriber.metadata.insert("topic".into(), "lines".into());
        let doc = document(&[service("chat", "1", vec![chat, subscriber])], None, &[]);
        assert_well_formed(&doc);
        let talk = &doc["paths"]["/chat/talk"]["post"];
        assert_eq!(talk["x-micro-stream"], "bidi");
        assert!(talk["description"]
            .as_str()
            .expect("description")
            .contains("bidirectional"));
        let ok = &talk["responses"]["200"]["content"];
        assert_eq!(ok["application/x-ndjson"]["schema"]["type"], "string");
        assert_eq!(
            ok["text/event-stream"]["x-micro-message"]["$ref"],
            "#/components/schemas/chat.Line"
        );
        assert!(doc["paths"].get("/chat/on-line").is_none());
        // One message type for request and response: one component.
        assert_eq!(
            talk["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/chat.Line"
        );
        assert!(doc["components"]["schemas"].get("chat.Line_2").is_none());
    }

    /// A schema with nested definitions, in both `$defs` and `definitions`, with
    /// names OpenAPI does not accept as component names and every kind of `$ref`.
    fn nested_schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://example.com/tree.json",
            "title": "Tree",
            "type": "object",
            "properties": {
                "root": {"$ref": "#/$defs/pkg.Node"},
                "odd": {"$ref": "#/$defs/odd~1name%20here"},
                "old": {"$ref": "#/definitions/Old"},
                "self": {"$ref": "#"},
                "again": {"$ref": "#/properties/root"},
                "label": {"$ref": "#/$defs/pkg.Node/properties/label"},
                "far": {"$ref": "https://example.com/elsewhere.json", "description": "kept"},
                "gone": {"$ref": "#/$defs/missing"},
                "literal": {"const": {"$ref": "#/$defs/not-a-ref"}},
            },
            "$defs": {
                "pkg.Node": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/pkg.Node"}},
                    },
                },
                "odd/name here": {"type": "integer"},
            },
            "definitions": {"Old": {"type": "boolean"}},
        })
    }

    #[test]
    fn nested_schemas_become_components() {
        let tree = endpoint(
            "Trees.Get",
            nested_schema(),
            json!({"title": "Tree", "type": "object"}),
            "false",
        );
        let doc = document(&[service("trees", "latest", vec![tree])], None, &[]);
        assert_well_formed(&doc);
        let schemas = &doc["components"]["schemas"];
        let root = &schemas["trees.Tree"];
        assert!(root.get("$defs").is_none() && root.get("definitions").is_none());
        assert!(root.get("$id").is_none() && root.get("$schema").is_none());
        let p = &root["properties"];
        assert_eq!(p["root"]["$ref"], "#/components/schemas/pkg.Node");
        assert_eq!(p["odd"]["$ref"], "#/components/schemas/odd_name_here");
        assert_eq!(p["old"]["$ref"], "#/components/schemas/Old");
        assert_eq!(p["self"]["$ref"], "#/components/schemas/trees.Tree");
        assert_eq!(
            p["again"]["$ref"],
            "#/components/schemas/trees.Tree/properties/root"
        );
        assert_eq!(
            p["label"]["$ref"],
            "#/components/schemas/pkg.Node/properties/label"
        );
        assert_eq!(p["far"], json!({"description": "kept"}));
        assert_eq!(p["gone"], json!({}));
        assert_eq!(p["literal"]["const"]["$ref"], "#/$defs/not-a-ref");
        assert_eq!(
            schemas["pkg.Node"]["properties"]["children"]["items"]["$ref"],
            "#/components/schemas/pkg.Node"
        );
        assert_eq!(schemas["odd_name_here"]["type"], "integer");
        // The response has the same name but another schema.
        assert_eq!(
            schemas["trees.Tree_2"],
            json!({"title": "Tree", "type": "object"})
        );
        assert_eq!(
            doc["paths"]["/trees/get"]["post"]["responses"]["200"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/trees.Tree_2"
        );
        // Not a flat request: no GET.
        assert!(doc["paths"]["/trees/get"].get("get").is_none());
    }

    #[test]
    fn shared_definitions_are_shared_and_clashes_renamed() {
        let with_node = |label: &str| {
            json!({
                "title": "Holder",
                "type": "object",
                "properties": {"node": {"$ref": "#/$defs/pkg.Node"}},
                "$defs": {"pkg.Node": {"type": "object", "properties": {label: {"type": "string"}}}},
            })
        };
        let services = [
            service(
                "a",
                "1",
                vec![endpoint("A.Get", with_node("x"), json!({}), "false")],
            ),
            service(
                "b",
                "1",
                vec![endpoint("B.Get", with_node("x"), json!({}), "false")],
            ),
            service(
                "c",
                "1",
                vec![endpoint("C.Get", with_node("y"), json!({}), "false")],
            ),
        ];
        let doc = document(&services, None, &[]);
        assert_well_formed(&doc);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["a.Holder"]["properties"]["node"]["$ref"],
            "#/components/schemas/pkg.Node"
        );
        assert_eq!(
            schemas["b.Holder"]["properties"]["node"]["$ref"],
            "#/components/schemas/pkg.Node"
        );
        assert_eq!(
            schemas["c.Holder"]["properties"]["node"]["$ref"],
            "#/components/schemas/pkg.Node_2"
        );
        assert!(schemas["pkg.Node_2"]["properties"].get("y").is_some());
        assert!(schemas.get("pkg.Node_3").is_none());
    }

    #[test]
    fn component_names_are_sanitized() {
        assert_eq!(sanitize("greeter.HelloRequest"), "greeter.HelloRequest");
        assert_eq!(sanitize("my svc/Thing<T>"), "my_svc_Thing_T_");
        assert_eq!(sanitize("v1-x_y.Z"), "v1-x_y.Z");
        assert_eq!(sanitize("é"), "_");
        assert_eq!(sanitize(""), "Schema");
        // A registry type named like the shared error does not replace it.
        let error = endpoint(
            "Errs.Get",
            json!({"title": "R", "type": "object", "properties": {"e": {"$ref": "#/$defs/Error"}}, "$defs": {"Error": {"type": "string"}}}),
            json!({}),
            "false",
        );
        let doc = document(&[service("errs", "1", vec![error])], None, &[]);
        assert_well_formed(&doc);
        assert_eq!(doc["components"]["schemas"]["Error"], error_schema());
        assert_eq!(doc["components"]["schemas"]["Error_2"]["type"], "string");
    }

    #[test]
    fn unusual_schemas_still_make_a_document() {
        let mut odd = endpoint("Odd.Any", json!(true), json!(null), "false");
        odd.request.name = String::new();
        let mut no_name = endpoint("Odd.Nameless", json!({"type": "object"}), json!(false), "");
        no_name.request.name = String::new();
        let doc = document(&[service("odd", "", vec![odd, no_name])], None, &[]);
        assert_well_formed(&doc);
        let any = &doc["paths"]["/odd/any"]["post"];
        assert_eq!(
            any["requestBody"]["content"]["application/json"]["schema"],
            json!({})
        );
        assert!(doc["components"]["schemas"]
            .get("odd.Odd.Nameless.Request")
            .is_some());
        // An empty object is flat: GET with no parameters.
        assert!(doc["paths"]["/odd/nameless"]["get"]
            .get("parameters")
            .is_none());

        // Lists of scalars are repeated query parameters; a nested object is no query.
        let list = endpoint(
            "Lists.Find",
            json!({"title": "Find", "type": "object", "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "limit": {"type": ["integer", "string"]},
                "color": {"anyOf": [{"type": "string", "enum": ["RED"]}, {"type": "integer"}]},
            }, "required": ["limit"]}),
            json!({}),
            "false",
        );
        let nested = endpoint(
            "Lists.Nested",
            json!({"type": "object", "properties": {"inner": {"type": "object"}}}),
            json!({}),
            "false",
        );
        let doc = document(&[service("lists", "1", vec![list, nested])], None, &[]);
        assert_well_formed(&doc);
        let params = &doc["paths"]["/lists/find"]["get"]["parameters"];
        assert_eq!(params[0]["name"], "color");
        assert_eq!(params[1]["name"], "limit");
        assert_eq!(params[1]["required"], true);
        assert_eq!(params[2]["schema"]["items"]["type"], "string");
        assert!(doc["paths"]["/lists/nested"].get("get").is_none());
    }

    fn rich() -> (Vec<Service>, Vec<RoutedEndpoint>) {
        let mut v2 = greeter();
        v2.version = "v2".into();
        v2.endpoints[0].request.schema["properties"]["lang"] = json!({"type": "string"});
        let services = vec![
            greeter(),
            v2,
            service(
                "lists",
                "1",
                vec![endpoint(
                    "Lists.Find",
                    json!({"title": "Find", "type": "object", "properties": {
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "limit": {"type": ["integer", "string"]},
                    }}),
                    json!({"title": "Found", "type": "object"}),
                    "false",
                )],
            ),
            service(
                "trees",
                "latest",
                vec![endpoint(
                    "Trees.Get",
                    nested_schema(),
                    json!({"title": "Tree", "type": "object"}),
                    "false",
                )],
            ),
            service(
                "v1.chat",
                "1.0",
                vec![endpoint(
                    "Chat.Talk",
                    json!({"title": "Line", "type": "object"}),
                    json!({"title": "Line", "type": "object"}),
                    "bidi",
                )],
            ),
        ];
        let routes = vec![
            route(
                "/files/{id}.json",
                &[Method::GET],
                "greeter",
                "Greeter.Stream",
            ),
            route("/legacy/{rest*}", &[Method::GET], "legacy", "Legacy.Get"),
            route(
                "/hello/{name}",
                &[Method::GET, Method::POST],
                "greeter",
                "Greeter.Hello",
            ),
            route(
                "/users/{id}",
                &[Method::DELETE, Method::PATCH],
                "users",
                "Users.Delete",
            ),
            route("/", &[], "greeter", "Greeter.Hello"),
        ];
        (services, routes)
    }

    #[test]
    fn the_document_is_deterministic() {
        let (mut services, mut routes) = rich();
        let first = document(&services, None, &routes).to_string();
        assert_eq!(first, document(&services, None, &routes).to_string());
        services.reverse();
        for s in &mut services {
            s.endpoints.reverse();
        }
        routes.reverse();
        assert_eq!(first, document(&services, None, &routes).to_string());
    }

    /// Validates a rich document with the standard validator (openapi-spec-validator,
    /// from tests/requirements.txt in the repository's .venv). Without it the test
    /// says so and passes, except in CI where it must be installed.
    #[test]
    fn a_standard_validator_accepts_the_document() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join(".venv/bin/python");
        let available = std::process::Command::new(&python)
            .args(["-c", "import openapi_spec_validator"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !available {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} cannot import openapi_spec_validator (CI is set): \
                 pip install -r tests/requirements.txt",
                python.display()
            );
            eprintln!("skipped: no openapi_spec_validator in {}", python.display());
            return;
        }
        let (services, routes) = rich();
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, doc) in [
            ("rich.json", document(&services, None, &routes)),
            ("empty.json", document(&[], None, &[])),
            ("greeter.json", document(&[greeter()], Some("acme"), &[])),
        ] {
            assert_well_formed(&doc);
            let file = dir.path().join(name);
            std::fs::write(&file, doc.to_string()).expect("write the document");
            let out = std::process::Command::new(&python)
                .args([
                    "-c",
                    "import json, sys\n\
                     from openapi_spec_validator import validate\n\
                     from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
                     validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)",
                ])
                .arg(&file)
                .output()
                .expect("run python");
            assert!(
                out.status.success(),
                "{name} is not valid OpenAPI 3.1:\n{}\n{doc:#}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
