//! The server trait, server adapter and typed client of each proto service.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use heck::{ToShoutySnakeCase, ToSnakeCase};
use prost_build::{Method, Service, ServiceGenerator};

use crate::schema::Schemas;

/// How a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    BidiStreaming,
}

impl Kind {
    fn of(method: &Method) -> Kind {
        match (method.client_streaming, method.server_streaming) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStreaming,
            (true, false) => Kind::ClientStreaming,
            (true, true) => Kind::BidiStreaming,
        }
    }

    /// The `MethodKind` variant.
    fn variant(self) -> &'static str {
        match self {
            Kind::Unary => "Unary",
            Kind::ServerStreaming => "ServerStreaming",
            Kind::ClientStreaming => "ClientStreaming",
            Kind::BidiStreaming => "BidiStreaming",
        }
    }

    /// The adapter in `micro::server::method`.
    fn adapter(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ServerStreaming => "server_streaming",
            Kind::ClientStreaming => "client_streaming",
            Kind::BidiStreaming => "bidi_streaming",
        }
    }

    /// The `micro::Client` method.
    fn client_fn(self) -> &'static str {
        match self {
            Kind::Unary => "call",
            Kind::ServerStreaming => "server_stream",
            Kind::ClientStreaming => "client_stream",
            Kind::BidiStreaming => "bidi_stream",
        }
    }

    fn client_streams(self) -> bool {
        matches!(self, Kind::ClientStreaming | Kind::BidiStreaming)
    }

    fn server_streams(self) -> bool {
        matches!(self, Kind::ServerStreaming | Kind::BidiStreaming)
    }
}

/// Generates micro servers and clients; given to prost-build.
#[derive(Debug)]
pub(crate) struct MicroServiceGenerator {
    /// The path of the micro crate (`::micro`, `crate`).
    pub(crate) micro: String,
    pub(crate) schemas: Arc<Schemas>,
    /// Full names (no leading dot) of services marked internal.
    pub(crate) internal: HashSet<String>,
    pub(crate) server: bool,
    pub(crate) client: bool,
    /// Problems found while generating; reported after prost-build returns.
    pub(crate) errors: Arc<Mutex<Vec<String>>>,
}

impl ServiceGenerator for MicroServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        if self.server {
            self.server(&service, buf);
        }
        // A client of a service with no methods could call nothing: leave it out.
        if self.client && !service.methods.is_empty() {
            self.client(&service, buf);
        }
    }
}

impl MicroServiceGenerator {
    fn full_name(service: &Service) -> String {
        if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        }
    }

    /// A schema as a Rust string literal, checked to be valid JSON.
    fn schema_literal(&self, type_name: &str) -> String {
        let text = self.schemas.schema_text(type_name);
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Ok(mut errors) = self.errors.lock() {
                errors.push(format!("invalid JSON Schema for {type_name}: {e}: {text}"));
            }
        }
        raw_string(&text)
    }

    /// One private constant per message type the service uses, holding its JSON
    /// Schema; returns the constant names by proto type.
    fn schema_consts(&self, service: &Service, buf: &mut String) -> HashMap<String, String> {
        let mut consts: HashMap<String, String> = HashMap::new();
        let mut used = HashSet::new();
        for method in &service.methods {
            for ty in [&method.input_proto_type, &method.output_proto_type] {
                if consts.contains_key(ty) {
                    continue;
                }
                let base = format!(
                    "{}_SCHEMA",
                    self.schemas
                        .type_name(ty)
                        .replace('.', "_")
                        .to_shouty_snake_case()
                );
                let mut name = base.clone();
                let mut n = 2;
                while !used.insert(name.clone()) {
                    name = format!("{base}_{n}");
                    n += 1;
                }
                let _ = writeln!(
                    buf,
                    "/// The JSON Schema of `{}`.\nconst {name}: &str = {};",
                    ty.trim_start_matches('.'),
                    self.schema_literal(ty)
                );
                consts.insert(ty.clone(), name);
            }
        }
        consts
    }

    fn server(&self, service: &Service, buf: &mut String) {
        let micro = &self.micro;
        let full_name = Self::full_name(service);
        let trait_name = &service.name;
        let server_name = format!("{}Server", service.name);
        let module = format!("{}_server", service.name.to_snake_case());
        let internal = self.internal.contains(&full_name);

        let _ = writeln!(
            buf,
            "/// The server side of `{full_name}`: implement [`{module}::{trait_name}`] and serve it with \
             [`{module}::{server_name}`]."
        );
        let _ = writeln!(buf, "#[allow(dead_code)]");
        let _ = writeln!(buf, "pub mod {module} {{");

        // The trait.
        if service.comments.leading.is_empty() && service.comments.trailing.is_empty() {
            let _ = writeln!(buf, "/// The methods of the `{full_name}` service.");
        } else {
            service.comments.append_with_indent(0, buf);
            buf.push_str("///\n");
        }
        let _ = writeln!(
            buf,
            "/// Each method may be written as an `async fn`; serve an implementation with \
             [`{server_name}`]."
        );
        let _ = writeln!(
            buf,
            "pub trait {trait_name}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
        );
        for method in &service.methods {
            let kind = Kind::of(method);
            method_docs(
                method,
                &format!("`{}.{}`", service.proto_name, method.proto_name),
                buf,
            );
            let input = rust_type(&method.input_type);
            let output = rust_type(&method.output_type);
            let request = if kind.client_streams() {
                format!("{micro}::Request<{micro}::Streaming<{input}>>")
            } else {
                format!("{micro}::Request<{input}>")
            };
            let response = if kind.server_streams() {
                format!("{micro}::ResponseStream<{output}>")
            } else {
                output
            };
            let _ = writeln!(
                buf,
                "fn {name}(&self, request: {request}) -> impl ::core::future::Future<Output = \
                 ::core::result::Result<{response}, {micro}::Error>> + ::core::marker::Send;",
                name = method.name,
            );
        }
        buf.push_str("}\n");

        // The schemas, once per type.
        let schemas = self.schema_consts(service, buf);

        // The adapter.
        let _ = writeln!(
            buf,
            "/// Serves an implementation of [`{trait_name}`]: hand it to the service \
             builder's `handler`.\n\
             pub struct {server_name}<T> {{ inner: ::std::sync::Arc<T> }}\n\
             impl<T> ::core::fmt::Debug for {server_name}<T> {{\n\
             fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{\n\
             f.debug_struct(\"{server_name}\").finish_non_exhaustive()\n\
             }}\n\
             }}\n\
             impl<T> ::core::clone::Clone for {server_name}<T> {{\n\
             fn clone(&self) -> Self {{ Self {{ inner: ::std::sync::Arc::clone(&self.inner) }} }}\n\
             }}\n\
             impl<T: {trait_name}> {server_name}<T> {{\n\
             /// Serves `inner`.\n\
             pub fn new(inner: T) -> Self {{ Self::from_arc(::std::sync::Arc::new(inner)) }}\n\
             /// Serves a shared `inner`.\n\
             pub fn from_arc(inner: ::std::sync::Arc<T>) -> Self {{ Self {{ inner }} }}\n\
             }}"
        );
        let _ = writeln!(
            buf,
            "impl<T: {trait_name}> {micro}::server::Handler for {server_name}<T> {{\n\
             fn into_desc(self) -> {micro}::server::HandlerDesc {{\n\
             {micro}::server::HandlerDesc {{\n\
             package: {package:?},\n\
             service: {service:?},\n\
             internal: {internal},\n\
             methods: ::std::vec::Vec::from([",
            package = service.package,
            service = service.proto_name,
        );
        for method in &service.methods {
            let kind = Kind::of(method);
            let input = rust_type(&method.input_type);
            let request = if kind.client_streams() {
                format!("{micro}::Request<{micro}::Streaming<{input}>>")
            } else {
                format!("{micro}::Request<{input}>")
            };
            let _ = writeln!(
                buf,
                "{micro}::server::MethodDesc {{\n\
                 name: {proto_name:?},\n\
                 kind: {micro}::server::MethodKind::{variant},\n\
                 request: {micro}::server::TypeDesc {{ name: {req_name:?}, schema: {req_schema} }},\n\
                 response: {micro}::server::TypeDesc {{ name: {rsp_name:?}, schema: {rsp_schema} }},\n\
                 handler: {{\n\
                 let inner = ::std::sync::Arc::clone(&self.inner);\n\
                 {micro}::server::method::{adapter}(move |request: {request}| {{\n\
                 let inner = ::std::sync::Arc::clone(&inner);\n\
                 async move {{ inner.{name}(request).await }}\n\
                 }})\n\
                 }},\n\
                 }},",
                proto_name = method.proto_name,
                variant = kind.variant(),
                req_name = self.schemas.type_name(&method.input_proto_type),
                req_schema = schemas[&method.input_proto_type],
                rsp_name = self.schemas.type_name(&method.output_proto_type),
                rsp_schema = schemas[&method.output_proto_type],
                adapter = kind.adapter(),
                name = method.name,
            );
        }
        buf.push_str("]),\n}\n}\n}\n}\n");
    }

    fn client(&self, service: &Service, buf: &mut String) {
        let micro = &self.micro;
        let full_name = Self::full_name(service);
        let client_name = format!("{}Client", service.name);
        let module = format!("{}_client", service.name.to_snake_case());

        let _ = writeln!(
            buf,
            "/// A typed client of `{full_name}`: [`{module}::{client_name}`]."
        );
        // A program that only serves (or only calls) uses half of what is generated.
        let _ = writeln!(buf, "#[allow(dead_code)]");
        let _ = writeln!(buf, "pub mod {module} {{");
        for method in &service.methods {
            let kind = Kind::of(method);
            let endpoint = format!("{}.{}", service.proto_name, method.proto_name);
            let path = format!("/{full_name}/{}", method.proto_name);
            let _ = writeln!(
                buf,
                "/// The method `{endpoint}` (`{path}`).\n\
                 pub const {konst}: {micro}::client::MethodRef = {micro}::client::MethodRef {{\n\
                 endpoint: {endpoint:?},\n\
                 path: {path:?},\n\
                 kind: {micro}::server::MethodKind::{variant},\n\
                 }};",
                konst = method.proto_name.to_shouty_snake_case(),
                variant = kind.variant(),
            );
        }
        if service.comments.leading.is_empty() && service.comments.trailing.is_empty() {
            let _ = writeln!(buf, "/// A typed client of the `{full_name}` service.");
        } else {
            service.comments.append_with_indent(0, buf);
        }
        let _ = writeln!(
            buf,
            "///\n\
             /// Cheap to clone. Every call uses the options given to [`{client_name}::with_options`]; \
             the `_with` variant of each method takes its own.\n\
             #[derive(::core::fmt::Debug, ::core::clone::Clone)]\n\
             pub struct {client_name} {{\n\
             client: {micro}::Client,\n\
             service: ::std::string::String,\n\
             options: {micro}::client::CallOptions,\n\
             }}\n\
             impl {client_name} {{\n\
             /// A client of the service registered as `service` (such as `\"greeter\"`), which \
             may differ from the proto service name.\n\
             pub fn new(service: impl ::core::convert::Into<::std::string::String>, client: {micro}::Client) -> Self {{\n\
             Self {{ client, service: service.into(), options: {micro}::client::CallOptions::default() }}\n\
             }}\n\
             /// Uses `options` for every call made without explicit options.\n\
             pub fn with_options(mut self, options: {micro}::client::CallOptions) -> Self {{\n\
             self.options = options;\n\
             self\n\
             }}"
        );
        for method in &service.methods {
            let kind = Kind::of(method);
            let konst = method.proto_name.to_shouty_snake_case();
            let name = &method.name;
            let name_with = format!("{}_with", name.trim_start_matches("r#"));
            let input = rust_type(&method.input_type);
            let output = rust_type(&method.output_type);
            let response = if kind.server_streams() {
                format!("{micro}::Streaming<{output}>")
            } else {
                output
            };
            let (generics, param, bound, arg) = if kind.client_streams() {
                (
                    "<S>",
                    "requests: S".to_string(),
                    format!(
                        " where S: {micro}::codegen::futures_util::Stream<Item = {input}> + \
                         ::core::marker::Send + 'static"
                    ),
                    "requests",
                )
            } else {
                ("", format!("request: {input}"), String::new(), "&request")
            };
            let argname = if kind.client_streams() {
                "requests"
            } else {
                "request"
            };
            let result = format!("::core::result::Result<{response}, {micro}::Error>");
            method_docs(
                method,
                &format!("`{}.{}`", service.proto_name, method.proto_name),
                buf,
            );
            let _ = writeln!(
                buf,
                "pub async fn {name}{generics}(&self, {param}) -> {result}{bound} {{\n\
                 self.{name_with}({argname}, &self.options).await\n\
                 }}\n\
                 /// Calls `{endpoint}` with `options` instead of the client's.\n\
                 pub async fn {name_with}{generics}(&self, {param}, options: &{micro}::client::CallOptions) -> {result}{bound} {{\n\
                 self.client.{client_fn}(&self.service, &{konst}, {arg}, options).await\n\
                 }}",
                endpoint = format_args!("{}.{}", service.proto_name, method.proto_name),
                client_fn = kind.client_fn(),
            );
        }
        buf.push_str("}\n}\n");
    }
}

/// Doc comments of a method: the proto comments, or a line naming the endpoint.
fn method_docs(method: &Method, endpoint: &str, buf: &mut String) {
    if method.comments.leading.is_empty() && method.comments.trailing.is_empty() {
        let _ = writeln!(buf, "/// {endpoint}.");
    } else {
        method.comments.append_with_indent(0, buf);
    }
}

/// A type path as seen from a module nested in the package's module.
fn rust_type(path: &str) -> String {
    if path.starts_with("::") || path.starts_with("crate::") || path.starts_with("$crate::") {
        path.to_string()
    } else {
        format!("super::{path}")
    }
}

/// `text` as a raw string literal with enough `#`s.
pub(crate) fn raw_string(text: &str) -> String {
    let mut hashes = 1;
    while text.contains(&format!("\"{}", "#".repeat(hashes))) {
        hashes += 1;
    }
    let h = "#".repeat(hashes);
    format!("r{h}\"{text}\"{h}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_strings_outlast_their_content() {
        assert_eq!(raw_string("{}"), "r#\"{}\"#");
        assert_eq!(
            raw_string(r##"{"$ref":"#/$defs/a"}"##),
            "r##\"{\"$ref\":\"#/$defs/a\"}\"##"
        );
        assert_eq!(raw_string(r###"a"##b"###), "r###\"a\"##b\"###");
    }

    #[test]
    fn type_paths_are_resolved_from_the_nested_module() {
        assert_eq!(rust_type("HelloRequest"), "super::HelloRequest");
        assert_eq!(rust_type("super::common::Ref"), "super::super::common::Ref");
        assert_eq!(rust_type("outer::Inner"), "super::outer::Inner");
        assert_eq!(
            rust_type("::micro::codegen::pbjson_types::Empty"),
            "::micro::codegen::pbjson_types::Empty"
        );
        assert_eq!(
            rust_type("crate::codegen::pbjson_types::Empty"),
            "crate::codegen::pbjson_types::Empty"
        );
    }
}
