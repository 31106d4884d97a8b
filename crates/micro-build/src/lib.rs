//! Code generation for [micro](https://example.invalid/micro), for use in `build.rs`.
//!
//! From `.proto` files, `micro-build` writes one Rust file per proto package,
//! `$OUT_DIR/<package>.rs` (`greeter.rs`, `micro.debug.v1.rs`), holding:
//!
//! - the messages and enums, as [prost] types;
//! - their proto3 JSON form, as `serde` `Serialize`/`Deserialize` impls (64-bit
//!   integers as strings, enums by name, `lowerCamelCase` field names);
//! - for each service `Greeter`: a module `greeter_server` with the trait `Greeter` to
//!   implement and the adapter `GreeterServer<T>` to serve it, and a module
//!   `greeter_client` with the typed `GreeterClient` and one `MethodRef` constant
//!   per method;
//! - the JSON Schema (draft 2020-12) of every request and response, which the server
//!   publishes in the registry record of each endpoint.
//!
//! The generated code refers to nothing but the `micro` crate, so a service depends
//! on `micro` (and `tokio` for its `main`) only.
//!
//! # Example
//!
//! `build.rs`:
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     micro_build::compile_protos(&["proto/greeter.proto"], &["proto"])
//! }
//! ```
//!
//! `src/main.rs`:
//!
//! ```ignore
//! pub mod greeter {
//!     micro::include_proto!("greeter");
//! }
//! use greeter::greeter_server::{Greeter, GreeterServer};
//! ```
//!
//! A proto package `a.b` refers to a package `a.c` as `super::c`, exactly as prost
//! lays them out: include each package in a module path that mirrors its name when
//! protos import each other across packages.
//!
//! # Finding `protoc`
//!
//! `$PROTOC` if set, else `protoc` on `PATH`, else the `protoc` binary shipped with
//! the `protoc-bin-vendored` crate. The well-known types (`google/protobuf/*.proto`)
//! can always be imported.

#![warn(missing_docs)]

mod json;
mod schema;
mod service;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message as _;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

use crate::schema::Schemas;
use crate::service::MicroServiceGenerator;

/// Compiles `.proto` files with the default settings: one `$OUT_DIR/<package>.rs` per
/// proto package, for a crate that depends on `micro`.
///
/// `protos` are the files to compile; `includes` the directories imports are looked
/// up in (each proto must be inside one of them). Imports are compiled too.
///
/// ```no_run
/// // build.rs
/// fn main() -> std::io::Result<()> {
///     micro_build::compile_protos(&["proto/greeter.proto"], &["proto"])
/// }
/// ```
///
/// # Errors
///
/// When `protoc` cannot be run or rejects the files, when a file has no `package`,
/// or when the output cannot be written.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> io::Result<()> {
    configure().compile(protos, includes)
}

/// Starts a [`Builder`] with the default settings.
///
/// ```no_run
/// // build.rs of the `micro` crate itself, whose generated code says `crate::`.
/// fn main() -> std::io::Result<()> {
///     micro_build::configure()
///         .micro_path("crate")
///         .internal_service("micro.debug.v1.Debug")
///         .compile(&["../../proto/micro/debug/v1/debug.proto"], &["../../proto"])
/// }
/// ```
pub fn configure() -> Builder {
    Builder::default()
}

/// Settings of the code generator; start with [`configure`], finish with
/// [`Builder::compile`].
///
/// ```no_run
/// fn main() -> std::io::Result<()> {
///     micro_build::configure()
///         .type_attribute("greeter.HelloRequest", "#[derive(Eq, Hash)]")
///         .build_client(false)
///         .compile(&["proto/greeter.proto"], &["proto"])
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    micro_path: String,
    out_dir: Option<PathBuf>,
    protoc: Option<PathBuf>,
    protoc_args: Vec<OsString>,
    extern_paths: Vec<(String, String)>,
    type_attributes: Vec<(String, String)>,
    message_attributes: Vec<(String, String)>,
    enum_attributes: Vec<(String, String)>,
    field_attributes: Vec<(String, String)>,
    btree_maps: Vec<String>,
    bytes: Vec<String>,
    boxed: Vec<String>,
    internal: Vec<String>,
    build_server: bool,
    build_client: bool,
    ignore_unknown_fields: bool,
    emit_default_fields: bool,
    emit_rerun_if_changed: bool,
    file_descriptor_set_path: Option<PathBuf>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            micro_path: "::micro".to_string(),
            out_dir: None,
            protoc: None,
            protoc_args: Vec::new(),
            extern_paths: Vec::new(),
            type_attributes: Vec::new(),
            message_attributes: Vec::new(),
            enum_attributes: Vec::new(),
            field_attributes: Vec::new(),
            btree_maps: Vec::new(),
            bytes: Vec::new(),
            boxed: Vec::new(),
            internal: Vec::new(),
            build_server: true,
            build_client: true,
            ignore_unknown_fields: false,
            emit_default_fields: false,
            emit_rerun_if_changed: true,
            file_descriptor_set_path: None,
        }
    }
}

impl Builder {
    /// The path of the `micro` crate in generated code: `::micro` by default; `crate`
    /// inside micro itself, or the path of a re-export.
    ///
    /// ```
    /// let builder = micro_build::configure().micro_path("crate");
    /// # let _ = builder;
    /// ```
    pub fn micro_path(mut self, path: impl Into<String>) -> Self {
        self.micro_path = path.into();
        self
    }

    /// Where the generated files go: `$OUT_DIR` by default.
    ///
    /// ```
    /// let builder = micro_build::configure().out_dir("target/generated");
    /// # let _ = builder;
    /// ```
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The `protoc` to run, instead of looking for one (`$PROTOC`, `PATH`, vendored).
    ///
    /// ```
    /// let builder = micro_build::configure().protoc_path("/usr/bin/protoc");
    /// # let _ = builder;
    /// ```
    pub fn protoc_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.protoc = Some(path.into());
        self
    }

    /// Passes an extra argument to `protoc`.
    ///
    /// ```
    /// let builder = micro_build::configure().protoc_arg("--experimental_allow_proto3_optional");
    /// # let _ = builder;
    /// ```
    pub fn protoc_arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.protoc_args.push(arg.as_ref().to_owned());
        self
    }

    /// Uses existing Rust types for a proto package or type instead of generating them
    /// (as prost-build's `extern_path`). The types must implement micro's `Message`
    /// (prost plus proto3 JSON serde). `google.protobuf` always maps to
    /// `pbjson-types` through micro.
    ///
    /// ```
    /// let builder = micro_build::configure().extern_path(".common", "::common_protos::common");
    /// # let _ = builder;
    /// ```
    pub fn extern_path(
        mut self,
        proto_path: impl Into<String>,
        rust_path: impl Into<String>,
    ) -> Self {
        self.extern_paths
            .push((dotted(proto_path.into()), rust_path.into()));
        self
    }

    /// Adds an attribute to the messages, enums and oneofs matching `path` (prost-build's
    /// path syntax: `.` for all, `greeter.HelloRequest`, `greeter`).
    ///
    /// ```
    /// let builder = micro_build::configure().type_attribute(".", "#[derive(Eq)]");
    /// # let _ = builder;
    /// ```
    pub fn type_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Self {
        self.type_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Adds an attribute to the messages matching `path`.
    ///
    /// ```
    /// let builder = micro_build::configure().message_attribute("greeter.HelloRequest", "#[derive(Eq)]");
    /// # let _ = builder;
    /// ```
    pub fn message_attribute(
        mut self,
        path: impl Into<String>,
        attribute: impl Into<String>,
    ) -> Self {
        self.message_attributes
            .push((path.into(), attribute.into()));
        self
    }

    /// Adds an attribute to the enums matching `path`.
    ///
    /// ```
    /// let builder = micro_build::configure().enum_attribute("greeter.Mood", "#[derive(PartialOrd)]");
    /// # let _ = builder;
    /// ```
    pub fn enum_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Self {
        self.enum_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Adds an attribute to the fields matching `path` (`greeter.HelloRequest.name`).
    ///
    /// ```
    /// let builder = micro_build::configure()
    ///     .field_attribute("greeter.HelloRequest.name", "#[doc(alias = \"who\")]");
    /// # let _ = builder;
    /// ```
    pub fn field_attribute(
        mut self,
        path: impl Into<String>,
        attribute: impl Into<String>,
    ) -> Self {
        self.field_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Generates `BTreeMap` instead of `HashMap` for the map fields of the messages
    /// matching `path`: `.` for all, a package (`.greeter`) or a message
    /// (`.greeter.HelloRequest`), not a single field.
    ///
    /// ```
    /// let builder = micro_build::configure().btree_map(".");
    /// # let _ = builder;
    /// ```
    pub fn btree_map(mut self, path: impl Into<String>) -> Self {
        self.btree_maps.push(path.into());
        self
    }

    /// Generates `Bytes` instead of `Vec<u8>` for the bytes fields matching `path`
    /// (the crate then needs a dependency on `bytes`).
    ///
    /// ```
    /// let builder = micro_build::configure().bytes(".greeter.Blob.data");
    /// # let _ = builder;
    /// ```
    pub fn bytes(mut self, path: impl Into<String>) -> Self {
        self.bytes.push(path.into());
        self
    }

    /// Boxes the message fields matching `path`.
    ///
    /// ```
    /// let builder = micro_build::configure().boxed(".greeter.Tree.left");
    /// # let _ = builder;
    /// ```
    pub fn boxed(mut self, path: impl Into<String>) -> Self {
        self.boxed.push(path.into());
        self
    }

    /// Marks a service (full proto name, `micro.debug.v1.Debug`) internal: served, but
    /// not listed in the registry record.
    ///
    /// ```
    /// let builder = micro_build::configure().internal_service("micro.debug.v1.Debug");
    /// # let _ = builder;
    /// ```
    pub fn internal_service(mut self, service: impl Into<String>) -> Self {
        self.internal
            .push(service.into().trim_start_matches('.').to_string());
        self
    }

    /// Whether to generate the `xxx_server` modules (default `true`).
    ///
    /// ```
    /// let builder = micro_build::configure().build_server(false);
    /// # let _ = builder;
    /// ```
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// Whether to generate the `xxx_client` modules (default `true`).
    ///
    /// ```
    /// let builder = micro_build::configure().build_client(false);
    /// # let _ = builder;
    /// ```
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Whether JSON input may hold fields the message does not have (default `false`:
    /// an unknown field is a 400 error that names it, as the JSON Schema says).
    ///
    /// ```
    /// let builder = micro_build::configure().ignore_unknown_fields(true);
    /// # let _ = builder;
    /// ```
    pub fn ignore_unknown_fields(mut self, enable: bool) -> Self {
        self.ignore_unknown_fields = enable;
        self
    }

    /// Whether JSON output includes fields holding their default value (default
    /// `false`, as the proto3 JSON mapping says).
    ///
    /// ```
    /// let builder = micro_build::configure().emit_default_fields(true);
    /// # let _ = builder;
    /// ```
    pub fn emit_default_fields(mut self, enable: bool) -> Self {
        self.emit_default_fields = enable;
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every proto compiled (default
    /// `true`; turn off outside build scripts).
    ///
    /// ```
    /// let builder = micro_build::configure().emit_rerun_if_changed(false);
    /// # let _ = builder;
    /// ```
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// Also writes the encoded `FileDescriptorSet` (with source info) to `path`, for
    /// reflection.
    ///
    /// ```
    /// let builder = micro_build::configure().file_descriptor_set_path("descriptors.bin");
    /// # let _ = builder;
    /// ```
    pub fn file_descriptor_set_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.file_descriptor_set_path = Some(path.into());
        self
    }

    /// Runs `protoc` on `protos` (looking imports up in `includes`) and writes one
    /// `<package>.rs` per proto package to the output directory.
    ///
    /// ```no_run
    /// fn main() -> std::io::Result<()> {
    ///     micro_build::configure().compile(&["proto/greeter.proto"], &["proto"])
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// When `protoc` cannot be run or rejects the files, when a file has no `package`,
    /// or when the output cannot be written.
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> io::Result<()> {
        let fds = self.load(protos, includes)?;
        if self.emit_rerun_if_changed {
            println!("cargo:rerun-if-env-changed=PROTOC");
            for path in rerun_paths(protos, includes, &fds) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        self.compile_fds(fds)
    }

    /// Generates code from an already parsed descriptor set (as `protoc
    /// --include_imports --include_source_info -o` writes it), without running
    /// `protoc`.
    ///
    /// ```no_run
    /// use prost::Message;
    ///
    /// let bytes = std::fs::read("descriptors.bin")?;
    /// let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())
    ///     .map_err(std::io::Error::other)?;
    /// micro_build::configure().compile_fds(fds)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// When a file has no `package`, or the output cannot be written.
    pub fn compile_fds(self, fds: FileDescriptorSet) -> io::Result<()> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    io::Error::other("OUT_DIR is not set: call out_dir() outside build scripts")
                })?,
        };
        if let Some(path) = &self.file_descriptor_set_path {
            std::fs::write(path, fds.encode_to_vec())?;
        }
        let files = self.generate(fds)?;
        std::fs::create_dir_all(&out_dir)?;
        for (name, content) in files {
            write_if_changed(&out_dir.join(name), content.as_bytes())?;
        }
        Ok(())
    }

    /// Runs protoc.
    fn load(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> io::Result<FileDescriptorSet> {
        let mut config = prost_build::Config::new();
        config.protoc_executable(match &self.protoc {
            Some(path) => path.clone(),
            None => find_protoc()?,
        });
        for arg in &self.protoc_args {
            config.protoc_arg(arg);
        }
        let mut dirs: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_path_buf()).collect();
        // The well-known types, for a protoc that has none of its own.
        if let Ok(wkt) = protoc_bin_vendored::include_path() {
            dirs.push(wkt);
        }
        config.load_fds(protos, &dirs)
    }

    /// The generated files by name.
    pub(crate) fn generate(&self, fds: FileDescriptorSet) -> io::Result<BTreeMap<String, String>> {
        let micro = &self.micro_path;
        let wkt_path = format!("{micro}::codegen::pbjson_types");
        let is_extern = |name: &str| {
            let dotted_name = format!(".{name}");
            dotted_name.starts_with(".google.protobuf")
                || self.extern_paths.iter().any(|(proto, _)| {
                    proto == "."
                        || dotted_name == *proto
                        || dotted_name.starts_with(&format!("{proto}."))
                })
        };

        let mut packages = BTreeSet::new();
        for file in &fds.file {
            if file.package().is_empty() {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{}: micro-build needs a `package` declaration in every proto file",
                        file.name()
                    ),
                ));
            }
            if !is_extern(file.package()) {
                packages.insert(file.package().to_string());
            }
        }

        // Messages, enums and services.
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut config = prost_build::Config::new();
        config
            .prost_path(format!("{micro}::codegen::prost"))
            .compile_well_known_types()
            .extern_path(".google.protobuf", &wkt_path)
            .service_generator(Box::new(MicroServiceGenerator {
                micro: micro.clone(),
                schemas: Arc::new(Schemas::new(&fds.file)),
                internal: self.internal.iter().cloned().collect::<HashSet<_>>(),
                server: self.build_server,
                client: self.build_client,
                errors: Arc::clone(&errors),
            }));
        for (proto, rust) in &self.extern_paths {
            config.extern_path(proto, rust);
        }
        for (path, attr) in &self.type_attributes {
            config.type_attribute(path, attr);
        }
        for (path, attr) in &self.message_attributes {
            config.message_attribute(path, attr);
        }
        for (path, attr) in &self.enum_attributes {
            config.enum_attribute(path, attr);
        }
        for (path, attr) in &self.field_attributes {
            config.field_attribute(path, attr);
        }
        config.btree_map(&self.btree_maps).bytes(&self.bytes);
        for path in &self.boxed {
            config.boxed(path);
        }
        // Every file goes to prost, extern ones included: it resolves field types
        // (a `google.protobuf.Value` field) through them. Their code is dropped below.
        let extern_modules: HashSet<prost_build::Module> = fds
            .file
            .iter()
            .filter(|f| is_extern(f.package()))
            .map(|f| prost_build::Module::from_protobuf_package_name(f.package()))
            .collect();
        let requests: Vec<(prost_build::Module, FileDescriptorProto)> = fds
            .file
            .iter()
            .map(|f| {
                (
                    prost_build::Module::from_protobuf_package_name(f.package()),
                    f.clone(),
                )
            })
            .collect();
        let modules = config.generate(requests)?;
        if let Ok(errors) = errors.lock() {
            if !errors.is_empty() {
                return Err(io::Error::other(errors.join("\n")));
            }
        }
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        for (module, code) in modules {
            if extern_modules.contains(&module) {
                continue;
            }
            let name = module.to_file_name_or("_");
            files.insert(
                name,
                format!("// @generated by micro-build: messages, services and clients.\n{code}"),
            );
        }

        // Proto3 JSON.
        if !packages.is_empty() {
            let mut json = pbjson_build::Builder::new();
            for file in &fds.file {
                json.register_file_descriptor(file.clone());
            }
            json.extern_path(".google.protobuf", &wkt_path);
            for (proto, rust) in &self.extern_paths {
                json.extern_path(proto, rust);
            }
            if !self.btree_maps.is_empty() {
                json.btree_map(self.btree_maps.iter().map(|p| dotted(p.clone())));
            }
            if self.ignore_unknown_fields {
                json.ignore_unknown_fields();
            }
            if self.emit_default_fields {
                json.emit_fields();
            }
            let prefixes: Vec<String> = packages.iter().map(|p| format!(".{p}")).collect();
            let exclude: Vec<String> = self.extern_paths.iter().map(|(p, _)| p.clone()).collect();
            json.exclude(exclude);
            let generated = json.generate(&prefixes, |_| Ok(Vec::<u8>::new()))?;
            for (package, code) in generated {
                let code = String::from_utf8(code).map_err(io::Error::other)?;
                let code = rewrite_paths(&code, micro);
                let name = format!("{package}.rs");
                let file = files.entry(name).or_default();
                file.push_str(
                    "// Proto3 JSON (serde), generated by micro-build with pbjson-build.\n",
                );
                file.push_str(&code);
            }
        }
        Ok(files)
    }
}

/// A prost-build style path with its leading dot.
fn dotted(path: String) -> String {
    if path.starts_with('.') {
        path
    } else {
        format!(".{path}")
    }
}

/// `$PROTOC`, else `protoc` on `PATH`, else the vendored binary.
fn find_protoc() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PROTOC") {
        return Ok(PathBuf::from(path));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(format!("protoc{}", std::env::consts::EXE_SUFFIX));
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    protoc_bin_vendored::protoc_bin_path().map_err(|e| {
        io::Error::new(
            ErrorKind::NotFound,
            format!("no protoc: $PROTOC is unset, none on PATH, and no vendored binary for this platform ({e})"),
        )
    })
}

/// The protos given plus every file of the set found in the include directories.
fn rerun_paths(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
    fds: &FileDescriptorSet,
) -> BTreeSet<PathBuf> {
    let mut paths: BTreeSet<PathBuf> = protos.iter().map(|p| p.as_ref().to_path_buf()).collect();
    for file in &fds.file {
        if let Some(path) = includes
            .iter()
            .map(|dir| dir.as_ref().join(file.name()))
            .find(|p| p.is_file())
        {
            paths.insert(path);
        }
    }
    paths
}

fn write_if_changed(path: &Path, content: &[u8]) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    std::fs::write(path, content)
}

/// Points pbjson-build's `serde::…` and `pbjson::…` paths at micro's re-exports.
///
/// A path is rewritten where it starts: `serde::x` or `::serde::x`, but not
/// `super::serde::x` or `my_serde::x`.
pub(crate) fn rewrite_paths(code: &str, micro: &str) -> String {
    const CRATES: [&str; 2] = ["serde::", "pbjson::"];
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(code.len() + code.len() / 8);
    let mut rest = code;
    while let Some(c) = rest.chars().next() {
        let found = CRATES.iter().find(|k| rest.starts_with(*k));
        if let Some(krate) = found {
            let before = out.chars().next_back();
            let absolute = out.ends_with("::") && !out[..out.len() - 2].ends_with(is_ident);
            let starts_path = match before {
                None => true,
                Some(':') => absolute,
                Some(b) => !is_ident(b),
            };
            if starts_path {
                if absolute {
                    out.truncate(out.len() - 2);
                }
                out.push_str(micro);
                out.push_str("::codegen::");
                out.push_str(krate);
                rest = &rest[krate.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests;
