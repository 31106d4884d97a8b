//! Unit tests of the generator on the fixture protos (no compilation: the fixture
//! crate and `tests/` compile and run the output).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::*;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/echo/proto")
}

fn fixture_fds() -> FileDescriptorSet {
    let dir = fixture_dir();
    configure()
        .load(&[dir.join("fixture/v1/echo.proto")], &[dir])
        .expect("protoc runs on the fixture")
}

fn schema(type_name: &str) -> Value {
    let fds = fixture_fds();
    let text = Schemas::new(&fds.file).schema_text(type_name);
    serde_json::from_str(&text).expect("schemas are JSON")
}

#[test]
fn one_file_per_package_and_none_for_well_known_types() {
    let files = configure().generate(fixture_fds()).expect("generates");
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["fixture.common.v1.rs", "fixture.v1.rs"]);
}

#[test]
fn generated_code_refers_only_to_micro() {
    let files = configure().generate(fixture_fds()).expect("generates");
    let code = &files["fixture.v1.rs"];
    for needle in [
        "::micro::codegen::prost::Message",
        "impl ::micro::codegen::serde::Serialize for EchoRequest",
        "::micro::codegen::pbjson::private::NumberDeserialize",
        "::micro::codegen::pbjson_types::Timestamp",
        "pub mod echo_server",
        "pub trait Echo:",
        "pub struct EchoServer<T>",
        "pub mod echo_client",
        "pub const SERVER_STREAM: ::micro::client::MethodRef",
        "\"/fixture.v1.Echo/ServerStream\"",
        "\"Echo.ClientStream\"",
        "::micro::server::method::bidi_streaming(",
        "super::super::common::v1::Ref",
        "package: \"fixture.v1\"",
        "internal: false",
    ] {
        assert!(code.contains(needle), "missing {needle:?}");
    }
    for line in code.lines() {
        let trimmed = line.trim_start();
        assert!(!trimmed.starts_with("serde::"), "bare serde path: {line}");
        assert!(
            !line.contains(" serde::") && !line.contains("(serde::"),
            "bare serde path: {line}"
        );
        assert!(
            !line.contains(" pbjson::") && !line.contains("<pbjson::"),
            "bare pbjson path: {line}"
        );
        assert!(
            !line.replace("codegen::prost::", "").contains("prost::"),
            "bare prost path: {line}"
        );
    }
}

#[test]
fn micro_path_and_internal_services_are_configurable() {
    let files = configure()
        .micro_path("crate")
        .internal_service(".fixture.v1.Echo")
        .generate(fixture_fds())
        .expect("generates");
    let code = &files["fixture.v1.rs"];
    assert!(code.contains("impl crate::codegen::serde::Serialize for EchoRequest"));
    assert!(code.contains("crate::server::Handler for EchoServer<T>"));
    assert!(code.contains("internal: true"));
    assert!(!code.contains("::micro"));
}

#[test]
fn server_or_client_can_be_left_out() {
    let files = configure()
        .build_client(false)
        .generate(fixture_fds())
        .expect("generates");
    assert!(files["fixture.v1.rs"].contains("echo_server"));
    assert!(!files["fixture.v1.rs"].contains("echo_client"));
}

#[test]
fn writes_files_to_out_dir() {
    let dir = std::env::temp_dir().join(format!("micro-build-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let protos = fixture_dir();
    configure()
        .out_dir(&dir)
        .emit_rerun_if_changed(false)
        .file_descriptor_set_path(dir.join("fds.bin"))
        .compile(&[protos.join("fixture/v1/echo.proto")], &[protos])
        .expect("compiles");
    assert!(dir.join("fixture.v1.rs").is_file());
    assert!(dir.join("fixture.common.v1.rs").is_file());
    let fds = std::fs::read(dir.join("fds.bin")).expect("descriptor set written");
    assert!(FileDescriptorSet::decode(fds.as_slice()).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_without_a_package_are_refused() {
    let fds = FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("nopkg.proto".into()),
            ..Default::default()
        }],
    };
    let err = configure().generate(fds).expect_err("needs a package");
    assert!(err.to_string().contains("nopkg.proto"), "{err}");
}

#[test]
fn protoc_errors_are_reported() {
    let dir = fixture_dir();
    let err = configure()
        .load(&[dir.join("fixture/v1/missing.proto")], &[dir])
        .expect_err("no such file");
    assert!(err.to_string().contains("missing.proto"), "{err}");
}

#[test]
fn rewrites_only_paths_that_start_with_serde_or_pbjson() {
    let code = "impl serde::Serialize for X {} ::pbjson::private::Base64(x) \
                <pbjson::private::NumberDeserialize<_>> super::serde::Thing my_serde::x \
                pbjson_types::Timestamp a::pbjson::b";
    assert_eq!(
        rewrite_paths(code, "::micro"),
        "impl ::micro::codegen::serde::Serialize for X {} ::micro::codegen::pbjson::private::Base64(x) \
         <::micro::codegen::pbjson::private::NumberDeserialize<_>> super::serde::Thing my_serde::x \
         pbjson_types::Timestamp a::pbjson::b"
    );
    assert_eq!(
        rewrite_paths("serde::de", "crate"),
        "crate::codegen::serde::de"
    );
}

#[test]
fn schema_of_a_message() {
    let s = schema(".fixture.v1.EchoRequest");
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["title"], "EchoRequest");
    assert_eq!(s["type"], "object");
    assert_eq!(s["description"], "What a caller sends.");
    assert_eq!(s["additionalProperties"], false);
    let p = &s["properties"];
    // Keys are JSON names, in field order.
    let text = Schemas::new(&fixture_fds().file).schema_text("fixture.v1.EchoRequest");
    assert!(text.contains(
        r#""properties":{"userName":{"type":"string","description":"Who is asking."},"bigNumber":"#
    ));
    assert_eq!(
        p["userName"],
        json!({"type": "string", "description": "Who is asking."})
    );
    assert_eq!(p["bigNumber"]["type"], json!(["integer", "string"]));
    assert_eq!(p["count"]["minimum"], 0);
    assert_eq!(
        p["payload"],
        json!({"type": "string", "contentEncoding": "base64", "description": "Bytes: base64 in JSON."})
    );
    assert_eq!(
        p["color"]["anyOf"][0],
        json!({"type": "string", "enum": ["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_GREEN"]})
    );
    assert_eq!(p["color"]["anyOf"][1]["type"], "integer");
    assert_eq!(p["tags"]["type"], "array");
    assert_eq!(p["tags"]["items"], json!({"type": "string"}));
    assert_eq!(p["scores"]["type"], "object");
    assert_eq!(p["scores"]["additionalProperties"]["type"], "integer");
    assert_eq!(p["byId"]["propertyNames"], json!({"pattern": "^-?[0-9]+$"}));
    assert_eq!(
        p["byId"]["additionalProperties"],
        json!({"$ref": "#/$defs/fixture.v1.EchoRequest.Inner"})
    );
    assert!(p["text"]["description"]
        .as_str()
        .expect("note")
        .contains("Part of oneof `choice`: set at most one of `text`, `number`, `inner`."));
    assert_eq!(p["nickname"]["description"], "A proto3 optional field.");
    assert_eq!(p["at"]["type"], "string");
    assert_eq!(p["at"]["format"], "date-time");
    assert_eq!(p["wait"]["pattern"], r"^-?[0-9]+(\.[0-9]+)?s$");
    assert_eq!(p["extra"]["type"], "object");
    assert_eq!(p["maybe"]["type"], json!(["string", "null"]));
    assert_eq!(p["ratio"]["type"], json!(["number", "string"]));
    assert_eq!(p["small"]["deprecated"], true);
    assert_eq!(p["small"]["maximum"], u32::MAX);
    assert_eq!(
        p["level"]["anyOf"][0]["enum"],
        json!(["LEVEL_UNSPECIFIED", "LEVEL_DEEP"])
    );
    assert_eq!(p["ref"]["$ref"], "#/$defs/fixture.common.v1.Ref");

    let defs = &s["$defs"];
    assert_eq!(
        defs["fixture.v1.EchoRequest.Inner"]["properties"]["children"]["items"],
        json!({"$ref": "#/$defs/fixture.v1.EchoRequest.Inner"})
    );
    assert_eq!(
        defs["fixture.v1.EchoRequest.Inner"]["description"],
        "A nested message."
    );
    assert_eq!(
        defs["fixture.v1.EchoRequest.Inner"]["title"],
        "EchoRequest.Inner"
    );
    assert_eq!(
        defs["fixture.v1.Node"]["properties"]["parent"]["$ref"],
        "#/$defs/fixture.v1.Node"
    );
    assert_eq!(
        defs["fixture.common.v1.Ref"]["properties"]["status"]["anyOf"][0]["enum"],
        json!(["STATUS_UNSPECIFIED", "STATUS_ACTIVE", "STATUS_GONE"])
    );
    // Every reference resolves.
    let text = s.to_string();
    for part in text.split("\"#/$defs/").skip(1) {
        let name = &part[..part.find('"').expect("closing quote")];
        assert!(defs.get(name).is_some(), "dangling $ref {name}");
    }
    // Map entries and well-known types are inlined, not defined.
    assert!(defs
        .as_object()
        .expect("defs")
        .keys()
        .all(|k| !k.ends_with("Entry")));
    assert!(defs.get("google.protobuf.Timestamp").is_none());
}

#[test]
fn schema_of_recursive_and_well_known_roots() {
    let node = schema("fixture.v1.Node");
    assert_eq!(
        node["properties"]["parent"],
        json!({"$ref": "#/$defs/fixture.v1.Node", "description": "Its parent."})
    );
    assert_eq!(node["$defs"]["fixture.v1.Node"]["title"], "Node");

    let empty = schema(".google.protobuf.Empty");
    assert_eq!(
        empty,
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Empty",
            "type": "object",
            "additionalProperties": false
        })
    );
    let rsp = schema(".fixture.v1.EchoResponse");
    assert_eq!(rsp["properties"]["index"]["minimum"], 0);
    assert!(rsp["$defs"].get("fixture.v1.EchoRequest").is_some());
}

#[test]
fn json_names_follow_protoc() {
    let field = prost_types::FieldDescriptorProto {
        name: Some("user_name_2x".into()),
        ..Default::default()
    };
    assert_eq!(schema::json_name(&field), "userName2x");
}

#[test]
fn btree_maps_and_unknown_fields_reach_both_generators() {
    let files = configure()
        .btree_map(".fixture.v1.EchoRequest")
        .ignore_unknown_fields(true)
        .generate(fixture_fds())
        .expect("generates");
    let code = &files["fixture.v1.rs"];
    assert!(code.contains("pub scores: ::micro::codegen::prost::alloc::collections::BTreeMap<"));
    assert!(code.contains("map_.next_value::<std::collections::BTreeMap<"));
    assert!(code.contains("IgnoredAny"));
}
