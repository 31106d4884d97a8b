//! The code micro-build generates for `fixtures/echo/proto`, compiled against the real
//! micro crate (the fixture crate's build.rs runs the generator): proto3 JSON round
//! trips, the server adapter driven end to end, the client's shape and the schemas.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use micro::codec::Format;
use micro::server::{Handler, HandlerDesc, MethodKind, RawBody, RawReply, RawRequest};
use micro::{CallContext, Error, Request, ResponseStream, Streaming};
use micro_build_fixture::fixture::common::v1::{Ref, Status};
use micro_build_fixture::fixture::v1::echo_client::{self, EchoClient};
use micro_build_fixture::fixture::v1::echo_request::inner::Level;
use micro_build_fixture::fixture::v1::echo_request::{Choice, Inner};
use micro_build_fixture::fixture::v1::echo_server::{Echo, EchoServer};
use micro_build_fixture::fixture::v1::internal_server::{Internal, InternalServer};
use micro_build_fixture::fixture::v1::{Color, EchoRequest, EchoResponse, Node};
use serde_json::{json, Value};

fn sample() -> EchoRequest {
    EchoRequest {
        user_name: "ann".into(),
        big_number: -9_007_199_254_740_993,
        count: u64::MAX,
        payload: b"hi".to_vec(),
        color: Color::Red as i32,
        tags: vec!["a".into(), "b".into()],
        scores: HashMap::from([("x".to_string(), 3)]),
        by_id: HashMap::from([(
            7,
            Inner {
                value: "seven".into(),
                children: vec![Inner::default()],
            },
        )]),
        choice: Some(Choice::Text("hello".into())),
        at: Some(micro::codegen::pbjson_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        tree: Some(Node {
            name: "root".into(),
            children: vec![Node {
                name: "leaf".into(),
                ..Default::default()
            }],
            parent: None,
        }),
        r#ref: Some(Ref {
            id: "r1".into(),
            status: Status::Active as i32,
        }),
        nickname: Some("nick".into()),
        ratio: 0.5,
        maybe: Some(String::from("m").into()),
        wait: Some(micro::codegen::pbjson_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        ..Default::default()
    }
}

#[test]
fn proto3_json_round_trip() {
    let msg = sample();
    let value: Value = serde_json::to_value(&msg).expect("serializes");
    // lowerCamelCase names, 64-bit integers as strings, enums by name, bytes as base64.
    assert_eq!(value["userName"], "ann");
    assert_eq!(value["bigNumber"], "-9007199254740993");
    assert_eq!(value["count"], "18446744073709551615");
    assert_eq!(value["payload"], "aGk=");
    assert_eq!(value["color"], "COLOR_RED");
    assert_eq!(value["tags"], json!(["a", "b"]));
    assert_eq!(value["scores"], json!({"x": 3}));
    assert_eq!(value["byId"]["7"]["value"], "seven");
    assert_eq!(value["text"], "hello");
    assert_eq!(value["at"], "2023-11-14T22:13:20+00:00");
    assert_eq!(value["tree"]["children"][0]["name"], "leaf");
    assert_eq!(value["ref"], json!({"id": "r1", "status": "STATUS_ACTIVE"}));
    assert_eq!(value["nickname"], "nick");
    assert_eq!(value["ratio"], 0.5);
    assert_eq!(value["maybe"], "m");
    assert!(value["wait"].as_str().expect("duration").starts_with("1.5"));
    // Default values are left out.
    assert!(value.get("level").is_none());
    assert!(value.get("small").is_none());

    let text = serde_json::to_string(&msg).expect("serializes");
    let back: EchoRequest = serde_json::from_str(&text).expect("deserializes");
    assert_eq!(back, msg);

    // The protobuf encoding agrees.
    let bytes = Format::Proto.encode(&msg).expect("encodes");
    assert_eq!(
        Format::Proto
            .decode::<EchoRequest>(&bytes)
            .expect("decodes"),
        msg
    );
}

#[test]
fn proto3_json_accepts_the_other_spellings() {
    let msg: EchoRequest = serde_json::from_value(json!({
        "user_name": "bob",
        "bigNumber": 12,
        "count": "5",
        "color": 2,
        "level": "LEVEL_DEEP",
        "number": 4,
        "maybe": null,
    }))
    .expect("deserializes");
    assert_eq!(msg.user_name, "bob");
    assert_eq!(msg.big_number, 12);
    assert_eq!(msg.count, 5);
    assert_eq!(msg.color(), Color::Green);
    assert_eq!(msg.level, Level::Deep as i32);
    assert_eq!(msg.choice, Some(Choice::Number(4)));
    assert_eq!(msg.maybe, None);
}

#[test]
fn proto3_json_rejects_bad_input() {
    let unknown = serde_json::from_value::<EchoRequest>(json!({"nope": 1}));
    assert!(unknown
        .expect_err("unknown field")
        .to_string()
        .contains("nope"));
    let wrong = serde_json::from_value::<EchoRequest>(json!({"count": "x"}));
    assert!(wrong.is_err());
    // Through micro's codec, bad input is a 400.
    let err = Format::Json
        .decode::<EchoRequest>(br#"{"userName": 5}"#)
        .expect_err("wrong type");
    assert_eq!(err.code(), 400);
}

/// Echoes requests back.
struct MyEcho;

impl Echo for MyEcho {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<EchoResponse, Error> {
        if request.get_ref().user_name.is_empty() {
            return Err(Error::bad_request("fixture", "user_name is empty"));
        }
        Ok(EchoResponse {
            echo: Some(request.into_inner()),
            index: 0,
        })
    }

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<ResponseStream<EchoResponse>, Error> {
        let req = request.into_inner();
        let n = u32::try_from(req.count).unwrap_or(u32::MAX);
        Ok(stream::iter((0..n).map(move |index| {
            Ok(EchoResponse {
                echo: Some(req.clone()),
                index,
            })
        }))
        .boxed())
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<EchoResponse, Error> {
        let mut requests = request.into_inner();
        let mut last = None;
        let mut index = 0;
        while let Some(req) = requests.message().await? {
            last = Some(req);
            index += 1;
        }
        Ok(EchoResponse { echo: last, index })
    }

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<ResponseStream<EchoResponse>, Error> {
        let responses = request.into_inner().enumerate().map(|(i, req)| {
            Ok(EchoResponse {
                echo: Some(req?),
                index: u32::try_from(i).unwrap_or(u32::MAX),
            })
        });
        Ok(responses.boxed())
    }

    async fn ping(
        &self,
        _request: Request<micro::codegen::pbjson_types::Empty>,
    ) -> Result<Ref, Error> {
        Ok(Ref {
            id: "pong".into(),
            status: Status::Active as i32,
        })
    }
}

fn desc() -> HandlerDesc {
    EchoServer::new(MyEcho).into_desc()
}

async fn call(
    desc: &HandlerDesc,
    method: &str,
    format: Format,
    body: RawBody,
) -> Result<RawReply, Error> {
    let m = desc
        .methods
        .iter()
        .find(|m| m.name == method)
        .expect("method exists");
    let req = RawRequest {
        ctx: CallContext::new(&desc.endpoint_name(m)),
        format,
        body,
    };
    m.handler.call(req).await
}

fn one(reply: RawReply) -> Bytes {
    match reply {
        RawReply::One(b) => b,
        RawReply::Stream(_) => panic!("expected one message"),
    }
}

async fn many(reply: RawReply) -> Vec<Bytes> {
    match reply {
        RawReply::Stream(s) => s.map(|b| b.expect("stream item")).collect().await,
        RawReply::One(_) => panic!("expected a stream"),
    }
}

fn json_stream(items: Vec<Value>) -> RawBody {
    RawBody::Stream(stream::iter(items.into_iter().map(|v| Ok(Bytes::from(v.to_string())))).boxed())
}

#[test]
fn handler_describes_the_service() {
    let desc = desc();
    assert_eq!(desc.package, "fixture.v1");
    assert_eq!(desc.service, "Echo");
    assert!(!desc.internal);
    let shape: Vec<(&str, MethodKind, &str, &str)> = desc
        .methods
        .iter()
        .map(|m| (m.name, m.kind, m.request.name, m.response.name))
        .collect();
    assert_eq!(
        shape,
        [
            ("Unary", MethodKind::Unary, "EchoRequest", "EchoResponse"),
            (
                "ServerStream",
                MethodKind::ServerStreaming,
                "EchoRequest",
                "EchoResponse"
            ),
            (
                "ClientStream",
                MethodKind::ClientStreaming,
                "EchoRequest",
                "EchoResponse"
            ),
            (
                "Bidi",
                MethodKind::BidiStreaming,
                "EchoRequest",
                "EchoResponse"
            ),
            ("Ping", MethodKind::Unary, "Empty", "Ref"),
        ]
    );
    assert_eq!(
        desc.grpc_path(&desc.methods[1]),
        "/fixture.v1.Echo/ServerStream"
    );
    let endpoints = desc.endpoints();
    assert_eq!(endpoints[3].name, "Echo.Bidi");
    assert_eq!(endpoints[3].metadata["stream"], "bidi");

    // The schemas are valid JSON and describe the JSON form.
    let request: Value = serde_json::from_str(desc.methods[0].request.schema).expect("JSON");
    assert_eq!(
        request["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(request["title"], "EchoRequest");
    assert_eq!(
        request["properties"]["bigNumber"]["type"],
        json!(["integer", "string"])
    );
    assert_eq!(
        request["properties"]["ref"]["$ref"],
        "#/$defs/fixture.common.v1.Ref"
    );
    assert_eq!(endpoints[0].request.schema, request);
    let empty: Value = serde_json::from_str(desc.methods[4].request.schema).expect("JSON");
    assert_eq!(empty["type"], "object");

    struct Nothing;
    impl Internal for Nothing {}
    let internal = InternalServer::new(Nothing).into_desc();
    assert!(internal.internal);
    assert!(internal.methods.is_empty());
}

#[tokio::test]
async fn unary_over_json_and_proto() {
    let desc = desc();
    let body = RawBody::One(Bytes::from_static(br#"{"userName":"ann","bigNumber":"7"}"#));
    let out = one(call(&desc, "Unary", Format::Json, body).await.expect("ok"));
    let value: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(
        value,
        json!({"echo": {"userName": "ann", "bigNumber": "7"}})
    );

    let proto = Format::Proto.encode(&sample()).expect("encodes");
    let out = one(call(&desc, "Unary", Format::Proto, RawBody::One(proto))
        .await
        .expect("ok"));
    let rsp: EchoResponse = Format::Proto.decode(&out).expect("decodes");
    assert_eq!(rsp.echo, Some(sample()));

    let err = call(
        &desc,
        "Unary",
        Format::Json,
        RawBody::One(Bytes::from_static(b"{}")),
    )
    .await
    .expect_err("empty name");
    assert_eq!(err.code(), 400);
    let err = call(
        &desc,
        "Unary",
        Format::Json,
        RawBody::One(Bytes::from_static(b"{")),
    )
    .await
    .expect_err("malformed");
    assert_eq!(err.code(), 400);

    let out = one(call(
        &desc,
        "Ping",
        Format::Json,
        RawBody::One(Bytes::from_static(b"{}")),
    )
    .await
    .expect("ok"));
    assert_eq!(
        serde_json::from_slice::<Value>(&out).expect("JSON"),
        json!({"id": "pong", "status": "STATUS_ACTIVE"})
    );
}

#[tokio::test]
async fn streams_every_way() {
    let desc = desc();
    let body = RawBody::One(Bytes::from_static(br#"{"userName":"ann","count":"3"}"#));
    let out = many(
        call(&desc, "ServerStream", Format::Json, body)
            .await
            .expect("ok"),
    )
    .await;
    let indexes: Vec<Value> = out
        .iter()
        .map(|b| serde_json::from_slice::<Value>(b).expect("JSON")["index"].clone())
        .collect();
    assert_eq!(indexes, [Value::Null, json!(1), json!(2)]);

    let body = json_stream(vec![json!({"userName": "a"}), json!({"userName": "b"})]);
    let out = one(call(&desc, "ClientStream", Format::Json, body)
        .await
        .expect("ok"));
    assert_eq!(
        serde_json::from_slice::<Value>(&out).expect("JSON"),
        json!({"echo": {"userName": "b"}, "index": 2})
    );

    let body = json_stream(vec![json!({"text": "x"}), json!({"number": 5})]);
    let out = many(call(&desc, "Bidi", Format::Json, body).await.expect("ok")).await;
    let values: Vec<Value> = out
        .iter()
        .map(|b| serde_json::from_slice(b).expect("JSON"))
        .collect();
    assert_eq!(
        values,
        [
            json!({"echo": {"text": "x"}}),
            json!({"echo": {"number": 5}, "index": 1})
        ]
    );
}

#[test]
fn client_constants_name_the_methods() {
    assert_eq!(echo_client::UNARY.endpoint, "Echo.Unary");
    assert_eq!(echo_client::UNARY.path, "/fixture.v1.Echo/Unary");
    assert_eq!(echo_client::SERVER_STREAM.kind, MethodKind::ServerStreaming);
    assert_eq!(echo_client::CLIENT_STREAM.kind, MethodKind::ClientStreaming);
    assert_eq!(echo_client::BIDI.path, "/fixture.v1.Echo/Bidi");
    assert_eq!(echo_client::PING.kind, MethodKind::Unary);
}

/// Not run (the transport is elsewhere): proves the client's signatures compile.
#[allow(dead_code)]
async fn client_signatures(client: EchoClient) -> Result<(), Error> {
    let client = client.with_options(micro::client::CallOptions::default());
    let _: EchoResponse = client.unary(EchoRequest::default()).await?;
    let opts = micro::client::CallOptions::default();
    let _: EchoResponse = client.unary_with(EchoRequest::default(), &opts).await?;
    let mut responses: Streaming<EchoResponse> =
        client.server_stream(EchoRequest::default()).await?;
    while let Some(_rsp) = responses.message().await? {}
    let _: EchoResponse = client
        .client_stream(stream::iter(vec![EchoRequest::default()]))
        .await?;
    let _: Streaming<EchoResponse> = client
        .bidi_with(stream::iter(vec![EchoRequest::default()]), &opts)
        .await?;
    let _: Ref = client.ping(micro::codegen::pbjson_types::Empty {}).await?;
    Ok(())
}
