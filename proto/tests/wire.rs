//! Wire compatibility of the generated code with flagd's interface (see
//! docs/adr/0016-own-flagd-proto-files-and-protox.md): exact bytes, descriptors, gRPC method
//! paths, and a loopback call through the generated server and client.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use prost::Message;
use prost_types::{
    DescriptorProto, FileDescriptorProto, FileDescriptorSet, field_descriptor_proto::Label,
    field_descriptor_proto::Type,
};
use vexil_proto::flagd::{evaluation, sync as flagd_sync};
use vexil_proto::sync::v1 as vexil_sync;
use vexil_proto::tonic::{self, codegen::http, server::NamedService};

// ---------------------------------------------------------------------------------------------
// Exact bytes
// ---------------------------------------------------------------------------------------------

#[test]
fn v2_boolean_response_bytes() {
    let msg = evaluation::v2::ResolveBooleanResponse {
        value: Some(true),
        reason: "STATIC".into(),
        variant: Some("on".into()),
        metadata: None,
    };
    let expected: &[u8] = &[
        0x08, 0x01, // field 1, varint: true
        0x12, 0x06, b'S', b'T', b'A', b'T', b'I', b'C', // field 2, len 6: "STATIC"
        0x1a, 0x02, b'o', b'n', // field 3, len 2: "on"
    ];
    assert_eq!(msg.encode_to_vec(), expected);
    assert_eq!(
        evaluation::v2::ResolveBooleanResponse::decode(expected).unwrap(),
        msg
    );
    // v1 has the same field numbers: the same bytes decode into v1.
    let v1 = evaluation::v1::ResolveBooleanResponse::decode(expected).unwrap();
    assert!(v1.value);
    assert_eq!((v1.reason.as_str(), v1.variant.as_str()), ("STATIC", "on"));
}

#[test]
fn v2_optional_fields_have_presence() {
    // Set to the zero value: still on the wire (v2 clients tell "false" from "unset").
    let zero = evaluation::v2::ResolveBooleanResponse {
        value: Some(false),
        reason: String::new(),
        variant: Some(String::new()),
        metadata: None,
    };
    assert_eq!(zero.encode_to_vec(), [0x08, 0x00, 0x1a, 0x00]);
    // Unset (DISABLED): nothing but the reason.
    let disabled = evaluation::v2::ResolveBooleanResponse {
        value: None,
        reason: "DISABLED".into(),
        variant: None,
        metadata: None,
    };
    assert_eq!(disabled.encode_to_vec(), b"\x12\x08DISABLED");
    let back = evaluation::v2::ResolveBooleanResponse::decode(&b"\x12\x08DISABLED"[..]).unwrap();
    assert_eq!((back.value, back.variant), (None, None));
    // v1 has no presence: false is not sent.
    let v1 = evaluation::v1::ResolveBooleanResponse {
        value: false,
        ..Default::default()
    };
    assert!(v1.encode_to_vec().is_empty());

    // Other typed values: double is fixed64 (wire type 1), int64 a varint.
    let f = evaluation::v2::ResolveFloatResponse {
        value: Some(0.5),
        ..Default::default()
    };
    assert_eq!(f.encode_to_vec(), [0x09, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f]);
    let i = evaluation::v2::ResolveIntResponse {
        value: Some(-1),
        ..Default::default()
    };
    assert_eq!(
        i.encode_to_vec(),
        [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ]
    );
    let o = evaluation::v2::ResolveObjectResponse {
        value: Some(prost_types::Struct::default()),
        ..Default::default()
    };
    assert_eq!(o.encode_to_vec(), [0x0a, 0x00]);
}

#[test]
fn request_and_struct_bytes() {
    // {flag_key: "f", context: {targetingKey: "u"}}: Struct.fields is map<string, Value> (field 1),
    // Value.string_value is field 3.
    let req = evaluation::v2::ResolveStringRequest {
        flag_key: "f".into(),
        context: Some(vexil_proto::convert::json_to_struct(
            serde_json::json!({"targetingKey": "u"})
                .as_object()
                .unwrap(),
        )),
    };
    let mut expected = vec![0x0a, 0x01, b'f', 0x12, 0x15, 0x0a, 0x13, 0x0a, 0x0c];
    expected.extend_from_slice(b"targetingKey");
    expected.extend_from_slice(&[0x12, 0x03, 0x1a, 0x01, b'u']);
    assert_eq!(req.encode_to_vec(), expected);
}

#[test]
fn any_flag_and_sync_bytes() {
    let flag = evaluation::v1::AnyFlag {
        reason: "TARGETING_MATCH".into(),
        variant: "on".into(),
        value: Some(evaluation::v1::any_flag::Value::BoolValue(true)),
        metadata: None,
    };
    let mut expected = vec![0x0a, 15];
    expected.extend_from_slice(b"TARGETING_MATCH");
    expected.extend_from_slice(&[0x12, 0x02, b'o', b'n', 0x18, 0x01]);
    assert_eq!(flag.encode_to_vec(), expected);
    let double = evaluation::v2::AnyFlag {
        value: Some(evaluation::v2::any_flag::Value::DoubleValue(1.0)),
        ..Default::default()
    };
    assert_eq!(double.encode_to_vec(), [0x29, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);

    let resp = flagd_sync::v1::SyncFlagsResponse {
        flag_configuration: "{}".into(),
        sync_context: Some(prost_types::Struct::default()),
    };
    assert_eq!(resp.encode_to_vec(), [0x0a, 0x02, b'{', b'}', 0x12, 0x00]);
    let meta = flagd_sync::v1::GetMetadataResponse {
        metadata: Some(prost_types::Struct::default()),
    };
    assert_eq!(
        meta.encode_to_vec(),
        [0x12, 0x00],
        "field 1 is reserved, metadata is 2"
    );
    let req = flagd_sync::v1::SyncFlagsRequest {
        provider_id: "p".into(),
        selector: "s".into(),
    };
    assert_eq!(req.encode_to_vec(), [0x0a, 0x01, b'p', 0x12, 0x01, b's']);
}

#[test]
fn vexil_sync_bytes() {
    let sub = vexil_sync::ClientFrame {
        kind: Some(vexil_sync::client_frame::Kind::Subscribe(
            vexil_sync::Subscribe {
                token: "t".into(),
                environment: "e".into(),
                last_revision: 5,
                client_id: "c".into(),
                version: "v".into(),
                ..Default::default()
            },
        )),
    };
    assert_eq!(
        sub.encode_to_vec(),
        [
            0x0a, 14, 0x0a, 1, b't', 0x12, 1, b'e', 0x18, 5, 0x22, 1, b'c', 0x2a, 1, b'v'
        ]
    );
    let delta = vexil_sync::ServerFrame {
        kind: Some(vexil_sync::server_frame::Kind::Delta(vexil_sync::Delta {
            from: 1,
            to: 2,
            flag_upserts: vec![vexil_sync::Entry {
                key: "k".into(),
                definition: "{}".into(),
            }],
            flag_removals: vec!["r".into()],
            evaluator_upserts: vec![],
            evaluator_removals: vec!["x".into()],
            metadata: Some(String::new()),
        })),
    };
    assert_eq!(
        delta.encode_to_vec(),
        [
            0x22, 21, // ServerFrame.delta = 4
            0x08, 1, 0x10, 2, // from, to
            0x1a, 7, 0x0a, 1, b'k', 0x12, 2, b'{', b'}', // flag_upserts
            0x22, 1, b'r', // flag_removals
            0x32, 1, b'x', // evaluator_removals
            0x3a, 0, // metadata present, empty
        ]
    );
    let err = vexil_sync::ServerFrame {
        kind: Some(vexil_sync::server_frame::Kind::Error(vexil_sync::Error {
            code: vexil_sync::ErrorCode::FrameTooLarge.into(),
            message: String::new(),
        })),
    };
    assert_eq!(err.encode_to_vec(), [0x12, 2, 0x08, 5]);
    assert_eq!(
        vexil_sync::ErrorCode::Unauthenticated.as_str_name(),
        "UNAUTHENTICATED"
    );
}

// ---------------------------------------------------------------------------------------------
// Descriptors: every message, field number, type and label against the specification
// ---------------------------------------------------------------------------------------------

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(vexil_proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn file<'a>(set: &'a FileDescriptorSet, package: &str) -> &'a FileDescriptorProto {
    set.file
        .iter()
        .find(|f| f.package() == package)
        .unwrap_or_else(|| panic!("no file for package {package}"))
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Bool => "bool",
        Type::String => "string",
        Type::Double => "double",
        Type::Int64 => "int64",
        Type::Uint32 => "uint32",
        Type::Uint64 => "uint64",
        Type::Bytes => "bytes",
        other => panic!("unexpected type {other:?}"),
    }
}

/// `"<number> <name> <type>[ optional][ oneof=<name>]"` per field, in number order.
fn describe(msg: &DescriptorProto) -> Vec<String> {
    let mut fields: Vec<_> = msg.field.iter().collect();
    fields.sort_by_key(|f| f.number());
    fields
        .into_iter()
        .map(|f| {
            let ty = match f.r#type() {
                Type::Message | Type::Enum => {
                    let name = f.type_name();
                    let entry = msg.nested_type.iter().find(|n| {
                        n.options.as_ref().is_some_and(|o| o.map_entry())
                            && name.ends_with(&format!(".{}", n.name()))
                    });
                    match entry {
                        Some(e) => format!("map<{}>", describe(e).join(", ")),
                        None => name.rsplit('.').next().unwrap().to_string(),
                    }
                }
                t => type_name(t).to_string(),
            };
            let repeated = f.label() == Label::Repeated && !ty.starts_with("map<");
            let mut s = format!(
                "{} {} {}{}",
                f.number(),
                f.name(),
                if repeated { "repeated " } else { "" },
                ty
            );
            if f.proto3_optional() {
                s.push_str(" optional");
            } else if let Some(i) = f.oneof_index {
                s.push_str(&format!(" oneof={}", msg.oneof_decl[i as usize].name()));
            }
            s
        })
        .collect()
}

fn messages(file: &FileDescriptorProto) -> BTreeMap<String, Vec<String>> {
    file.message_type
        .iter()
        .map(|m| (m.name().to_string(), describe(m)))
        .collect()
}

fn expect(spec: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    spec.iter()
        .map(|(name, fields)| {
            (
                (*name).to_string(),
                fields.iter().map(|f| (*f).to_string()).collect(),
            )
        })
        .collect()
}

const REQUEST: &[&str] = &["1 flag_key string", "2 context Struct"];
const EVENT_RESPONSE: &[&str] = &["1 type string", "2 data Struct"];

#[test]
fn evaluation_v1_descriptor_matches_spec() {
    let set = descriptor_set();
    let v1 = file(&set, "flagd.evaluation.v1");
    assert_eq!(v1.syntax(), "proto3");
    assert_eq!(v1.dependency, ["google/protobuf/struct.proto"]);
    let typed = |t: &'static str| -> Vec<String> {
        vec![
            format!("1 value {t}"),
            "2 reason string".into(),
            "3 variant string".into(),
            "4 metadata Struct".into(),
        ]
    };
    let mut want = expect(&[
        ("ResolveAllRequest", &["1 context Struct"]),
        (
            "ResolveAllResponse",
            &[
                "1 flags map<1 key string, 2 value AnyFlag>",
                "2 metadata Struct",
            ],
        ),
        (
            "AnyFlag",
            &[
                "1 reason string",
                "2 variant string",
                "3 bool_value bool oneof=value",
                "4 string_value string oneof=value",
                "5 double_value double oneof=value",
                "6 object_value Struct oneof=value",
                "7 metadata Struct",
            ],
        ),
        ("ResolveBooleanRequest", REQUEST),
        ("ResolveStringRequest", REQUEST),
        ("ResolveFloatRequest", REQUEST),
        ("ResolveIntRequest", REQUEST),
        ("ResolveObjectRequest", REQUEST),
        ("EventStreamRequest", &[]),
        ("EventStreamResponse", EVENT_RESPONSE),
    ]);
    for (name, t) in [
        ("Boolean", "bool"),
        ("String", "string"),
        ("Float", "double"),
        ("Int", "int64"),
        ("Object", "Struct"),
    ] {
        want.insert(format!("Resolve{name}Response"), typed(t));
    }
    assert_eq!(messages(v1), want);
}

#[test]
fn evaluation_v2_descriptor_matches_spec() {
    let set = descriptor_set();
    let v2 = file(&set, "flagd.evaluation.v2");
    let typed = |t: &'static str| -> Vec<String> {
        vec![
            format!("1 value {t} optional"),
            "2 reason string".into(),
            "3 variant string optional".into(),
            "4 metadata Struct".into(),
        ]
    };
    let mut want = expect(&[
        (
            "AnyFlag",
            &[
                "1 reason string",
                "2 variant string optional",
                "3 bool_value bool oneof=value",
                "4 string_value string oneof=value",
                "5 double_value double oneof=value",
                "6 object_value Struct oneof=value",
                "7 metadata Struct",
            ],
        ),
        ("ResolveBooleanRequest", REQUEST),
        ("ResolveStringRequest", REQUEST),
        ("ResolveFloatRequest", REQUEST),
        ("ResolveIntRequest", REQUEST),
        ("ResolveObjectRequest", REQUEST),
        ("EventStreamRequest", &[]),
        ("EventStreamResponse", EVENT_RESPONSE),
    ]);
    for (name, t) in [
        ("Boolean", "bool"),
        ("String", "string"),
        ("Float", "double"),
        ("Int", "int64"),
        ("Object", "Struct"),
    ] {
        want.insert(format!("Resolve{name}Response"), typed(t));
    }
    assert_eq!(messages(v2), want);
}

#[test]
fn sync_v1_descriptor_matches_spec() {
    let set = descriptor_set();
    let sync = file(&set, "flagd.sync.v1");
    let want = expect(&[
        (
            "SyncFlagsRequest",
            &["1 provider_id string", "2 selector string"],
        ),
        (
            "SyncFlagsResponse",
            &[
                "1 flag_configuration string",
                "2 sync_context Struct optional",
            ],
        ),
        (
            "FetchAllFlagsRequest",
            &["1 provider_id string", "2 selector string"],
        ),
        ("FetchAllFlagsResponse", &["1 flag_configuration string"]),
        ("GetMetadataRequest", &[]),
        ("GetMetadataResponse", &["2 metadata Struct"]),
    ]);
    assert_eq!(messages(sync), want);
    let meta = sync
        .message_type
        .iter()
        .find(|m| m.name() == "GetMetadataResponse")
        .unwrap();
    assert_eq!(meta.reserved_range.len(), 1);
    assert_eq!(
        (meta.reserved_range[0].start(), meta.reserved_range[0].end()),
        (1, 2)
    );
}

#[test]
fn vexil_sync_descriptor_matches_contract() {
    let set = descriptor_set();
    let ours = file(&set, "vexil.sync.v1");
    assert!(ours.service.is_empty(), "vexil.sync.v1 has no gRPC service");
    let want = expect(&[
        (
            "ClientFrame",
            &[
                "1 subscribe Subscribe oneof=kind",
                "2 ack Ack oneof=kind",
                "3 resync Resync oneof=kind",
                "4 usage UsageReport oneof=kind",
            ],
        ),
        (
            "UsageReport",
            &[
                "1 flags repeated FlagUsage",
                "2 shadow repeated ShadowUsage",
            ],
        ),
        (
            "FlagUsage",
            &["1 flag string", "2 variants repeated VariantUsage"],
        ),
        (
            "VariantUsage",
            &["1 variant string optional", "2 evaluations uint64"],
        ),
        (
            "ShadowUsage",
            &[
                "1 flag string",
                "2 proposal string",
                "3 from string optional",
                "4 to string optional",
                "5 evaluations uint64",
            ],
        ),
        (
            "Subscribe",
            &[
                "1 token string",
                "2 environment string",
                "3 last_revision int64",
                "4 client_id string",
                "5 version string",
                "6 incarnation string",
            ],
        ),
        ("Ack", &["1 revision int64", "2 digest string"]),
        ("Resync", &["1 reason string"]),
        (
            "ServerFrame",
            &[
                "1 welcome Welcome oneof=kind",
                "2 error Error oneof=kind",
                "3 full Full oneof=kind",
                "4 delta Delta oneof=kind",
                "5 ping Ping oneof=kind",
            ],
        ),
        (
            "Welcome",
            &[
                "1 server_id string",
                "2 revision int64",
                "3 heartbeat_ms uint32",
                "4 incarnation string",
                "5 usage_max_entries uint32",
            ],
        ),
        ("Error", &["1 code ErrorCode", "2 message string"]),
        (
            "Full",
            &[
                "1 revision int64",
                "2 flag_set string",
                "3 incarnation string",
                "4 signing_keys SigningKeys optional",
                "6 shadows Shadows optional",
            ],
        ),
        ("SigningKeys", &["1 keys repeated SigningKey"]),
        ("Shadows", &["1 proposals repeated ShadowProposal"]),
        (
            "ShadowProposal",
            &[
                "1 flag string",
                "2 id string",
                "3 definition string",
                "4 sample_ratio double",
            ],
        ),
        (
            "SigningKey",
            &["1 id string", "2 secret bytes", "3 created_at_ms int64"],
        ),
        (
            "Delta",
            &[
                "1 from int64",
                "2 to int64",
                "3 flag_upserts repeated Entry",
                "4 flag_removals repeated string",
                "5 evaluator_upserts repeated Entry",
                "6 evaluator_removals repeated string",
                "7 metadata string optional",
            ],
        ),
        ("Entry", &["1 key string", "2 definition string"]),
        ("Ping", &["1 revision int64"]),
    ]);
    assert_eq!(messages(ours), want);
    let codes: Vec<(String, i32)> = ours.enum_type[0]
        .value
        .iter()
        .map(|v| (v.name().to_string(), v.number()))
        .collect();
    let want_codes = [
        "ERROR_CODE_UNSPECIFIED",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "UNKNOWN_ENVIRONMENT",
        "MALFORMED_FRAME",
        "FRAME_TOO_LARGE",
        "UNSUPPORTED_VERSION",
        "INTERNAL",
    ];
    assert_eq!(
        codes,
        want_codes
            .iter()
            .zip(0..)
            .map(|(n, i)| (n.to_string(), i))
            .collect::<Vec<_>>()
    );
}

/// `(method, input, output, server_streaming)` of a service.
fn methods(file: &FileDescriptorProto, service: &str) -> Vec<(String, String, String, bool)> {
    let svc = file
        .service
        .iter()
        .find(|s| s.name() == service)
        .unwrap_or_else(|| panic!("no service {service}"));
    assert_eq!(file.service.len(), 1);
    svc.method
        .iter()
        .map(|m| {
            assert!(!m.client_streaming());
            let short = |t: &str| t.rsplit('.').next().unwrap().to_string();
            (
                m.name().to_string(),
                short(m.input_type()),
                short(m.output_type()),
                m.server_streaming(),
            )
        })
        .collect()
}

fn rpc(name: &str, streaming: bool) -> (String, String, String, bool) {
    (
        name.to_string(),
        format!("{name}Request"),
        format!("{name}Response"),
        streaming,
    )
}

#[test]
fn service_descriptors_match_spec() {
    let set = descriptor_set();
    let typed = [
        "ResolveBoolean",
        "ResolveString",
        "ResolveFloat",
        "ResolveInt",
        "ResolveObject",
    ];
    let mut v1 = vec![rpc("ResolveAll", false)];
    v1.extend(typed.iter().map(|n| rpc(n, false)));
    v1.push(rpc("EventStream", true));
    assert_eq!(methods(file(&set, "flagd.evaluation.v1"), "Service"), v1);
    let mut v2: Vec<_> = typed.iter().map(|n| rpc(n, false)).collect();
    v2.push(rpc("EventStream", true));
    assert_eq!(methods(file(&set, "flagd.evaluation.v2"), "Service"), v2);
    assert_eq!(
        methods(file(&set, "flagd.sync.v1"), "FlagSyncService"),
        [
            rpc("SyncFlags", true),
            rpc("FetchAllFlags", false),
            rpc("GetMetadata", false)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// gRPC method paths, through the generated clients
// ---------------------------------------------------------------------------------------------

#[test]
fn service_names() {
    type V1 = evaluation::v1::service_server::ServiceServer<()>;
    type V2 = evaluation::v2::service_server::ServiceServer<()>;
    type Sync = flagd_sync::v1::flag_sync_service_server::FlagSyncServiceServer<()>;
    assert_eq!(<V1 as NamedService>::NAME, "flagd.evaluation.v1.Service");
    assert_eq!(<V2 as NamedService>::NAME, "flagd.evaluation.v2.Service");
    assert_eq!(
        <Sync as NamedService>::NAME,
        "flagd.sync.v1.FlagSyncService"
    );
    assert_eq!(
        evaluation::v1::service_server::SERVICE_NAME,
        "flagd.evaluation.v1.Service"
    );
    assert_eq!(
        evaluation::v2::service_server::SERVICE_NAME,
        "flagd.evaluation.v2.Service"
    );
    assert_eq!(
        flagd_sync::v1::flag_sync_service_server::SERVICE_NAME,
        "flagd.sync.v1.FlagSyncService"
    );
}

/// A transport that records each request's `:path` and answers UNIMPLEMENTED.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Recorder {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.0.lock().unwrap().push(req.uri().path().to_string());
        let resp = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "12")
            .body(tonic::body::Body::empty())
            .unwrap();
        std::future::ready(Ok(resp))
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn generated_clients_use_flagd_method_paths() {
    let rec = Recorder::default();

    let mut v1 = evaluation::v1::service_client::ServiceClient::new(rec.clone());
    assert!(
        v1.resolve_all(evaluation::v1::ResolveAllRequest::default())
            .await
            .is_err()
    );
    assert!(
        v1.resolve_boolean(evaluation::v1::ResolveBooleanRequest::default())
            .await
            .is_err()
    );
    assert!(
        v1.resolve_string(evaluation::v1::ResolveStringRequest::default())
            .await
            .is_err()
    );
    assert!(
        v1.resolve_float(evaluation::v1::ResolveFloatRequest::default())
            .await
            .is_err()
    );
    assert!(
        v1.resolve_int(evaluation::v1::ResolveIntRequest::default())
            .await
            .is_err()
    );
    assert!(
        v1.resolve_object(evaluation::v1::ResolveObjectRequest::default())
            .await
            .is_err()
    );
    assert!(
        v1.event_stream(evaluation::v1::EventStreamRequest::default())
            .await
            .is_err()
    );
    let p = "/flagd.evaluation.v1.Service/";
    assert_eq!(
        rec.take(),
        [
            "ResolveAll",
            "ResolveBoolean",
            "ResolveString",
            "ResolveFloat",
            "ResolveInt",
            "ResolveObject",
            "EventStream"
        ]
        .map(|m| format!("{p}{m}"))
    );

    let mut v2 = evaluation::v2::service_client::ServiceClient::new(rec.clone());
    assert!(
        v2.resolve_boolean(evaluation::v2::ResolveBooleanRequest::default())
            .await
            .is_err()
    );
    assert!(
        v2.resolve_string(evaluation::v2::ResolveStringRequest::default())
            .await
            .is_err()
    );
    assert!(
        v2.resolve_float(evaluation::v2::ResolveFloatRequest::default())
            .await
            .is_err()
    );
    assert!(
        v2.resolve_int(evaluation::v2::ResolveIntRequest::default())
            .await
            .is_err()
    );
    assert!(
        v2.resolve_object(evaluation::v2::ResolveObjectRequest::default())
            .await
            .is_err()
    );
    assert!(
        v2.event_stream(evaluation::v2::EventStreamRequest::default())
            .await
            .is_err()
    );
    let p = "/flagd.evaluation.v2.Service/";
    assert_eq!(
        rec.take(),
        [
            "ResolveBoolean",
            "ResolveString",
            "ResolveFloat",
            "ResolveInt",
            "ResolveObject",
            "EventStream"
        ]
        .map(|m| format!("{p}{m}"))
    );

    let mut sync =
        flagd_sync::v1::flag_sync_service_client::FlagSyncServiceClient::new(rec.clone());
    assert!(
        sync.sync_flags(flagd_sync::v1::SyncFlagsRequest::default())
            .await
            .is_err()
    );
    assert!(
        sync.fetch_all_flags(flagd_sync::v1::FetchAllFlagsRequest::default())
            .await
            .is_err()
    );
    assert!(
        sync.get_metadata(flagd_sync::v1::GetMetadataRequest::default())
            .await
            .is_err()
    );
    let p = "/flagd.sync.v1.FlagSyncService/";
    assert_eq!(
        rec.take(),
        ["SyncFlags", "FetchAllFlags", "GetMetadata"].map(|m| format!("{p}{m}"))
    );
}

// ---------------------------------------------------------------------------------------------
// Loopback: generated v2 server and client over HTTP/2 on 127.0.0.1
// ---------------------------------------------------------------------------------------------

mod loopback {
    use super::*;
    use evaluation::v2::{self as v2, service_server::Service};
    use tonic::{Request, Response, Status, codegen::tokio_stream};

    struct Fixed;

    #[tonic::async_trait]
    impl Service for Fixed {
        async fn resolve_boolean(
            &self,
            req: Request<v2::ResolveBooleanRequest>,
        ) -> Result<Response<v2::ResolveBooleanResponse>, Status> {
            let req = req.into_inner();
            match req.flag_key.as_str() {
                "on" => Ok(Response::new(v2::ResolveBooleanResponse {
                    value: Some(true),
                    reason: "STATIC".into(),
                    variant: Some("on".into()),
                    metadata: None,
                })),
                "disabled" => Ok(Response::new(v2::ResolveBooleanResponse {
                    reason: "DISABLED".into(),
                    ..Default::default()
                })),
                _ => Err(Status::not_found(format!(
                    "flag {} not found",
                    req.flag_key
                ))),
            }
        }
        async fn resolve_string(
            &self,
            req: Request<v2::ResolveStringRequest>,
        ) -> Result<Response<v2::ResolveStringResponse>, Status> {
            // Echo the targeting key from the context.
            let ctx = vexil_proto::convert::struct_into_json(
                req.into_inner().context.unwrap_or_default(),
            );
            Ok(Response::new(v2::ResolveStringResponse {
                value: ctx
                    .get("targetingKey")
                    .and_then(|v| v.as_str())
                    .map(String::from),
                reason: "TARGETING_MATCH".into(),
                variant: Some("echo".into()),
                metadata: None,
            }))
        }
        async fn resolve_float(
            &self,
            _: Request<v2::ResolveFloatRequest>,
        ) -> Result<Response<v2::ResolveFloatResponse>, Status> {
            Err(Status::invalid_argument("type mismatch"))
        }
        async fn resolve_int(
            &self,
            _: Request<v2::ResolveIntRequest>,
        ) -> Result<Response<v2::ResolveIntResponse>, Status> {
            Err(Status::invalid_argument("type mismatch"))
        }
        async fn resolve_object(
            &self,
            _: Request<v2::ResolveObjectRequest>,
        ) -> Result<Response<v2::ResolveObjectResponse>, Status> {
            Err(Status::invalid_argument("type mismatch"))
        }

        type EventStreamStream =
            tokio_stream::Iter<std::vec::IntoIter<Result<v2::EventStreamResponse, Status>>>;

        async fn event_stream(
            &self,
            _: Request<v2::EventStreamRequest>,
        ) -> Result<Response<Self::EventStreamStream>, Status> {
            Ok(Response::new(tokio_stream::iter(vec![Ok(
                v2::EventStreamResponse {
                    r#type: "provider_ready".into(),
                    data: None,
                },
            )])))
        }
    }

    #[tokio::test]
    async fn v2_server_and_client_interoperate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(v2::service_server::ServiceServer::new(Fixed))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                }),
        );

        let mut client = v2::service_client::ServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let on = client
            .resolve_boolean(v2::ResolveBooleanRequest {
                flag_key: "on".into(),
                context: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((on.value, on.variant.as_deref()), (Some(true), Some("on")));
        let disabled = client
            .resolve_boolean(v2::ResolveBooleanRequest {
                flag_key: "disabled".into(),
                context: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((disabled.value, disabled.variant), (None, None));
        assert_eq!(disabled.reason, "DISABLED");
        let missing = client
            .resolve_boolean(v2::ResolveBooleanRequest {
                flag_key: "nope".into(),
                context: None,
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);

        let echo = client
            .resolve_string(v2::ResolveStringRequest {
                flag_key: "x".into(),
                context: Some(vexil_proto::convert::json_to_struct(
                    serde_json::json!({"targetingKey": "user-1", "age": 29})
                        .as_object()
                        .unwrap(),
                )),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(echo.value.as_deref(), Some("user-1"));

        let mut events = client
            .event_stream(v2::EventStreamRequest {})
            .await
            .unwrap()
            .into_inner();
        let first = events.message().await.unwrap().unwrap();
        assert_eq!(first.r#type, "provider_ready");
        assert!(events.message().await.unwrap().is_none());

        // v1 is not registered on this server: UNIMPLEMENTED, as a v2-only flagd would answer.
        let mut v1 =
            evaluation::v1::service_client::ServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
        let err = v1
            .resolve_boolean(evaluation::v1::ResolveBooleanRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);

        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
