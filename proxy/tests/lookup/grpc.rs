//! flagd.evaluation v1 and v2 through real tonic clients.

use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;
use vexil_proto::convert::struct_to_json;
use vexil_proto::flagd::evaluation::{v1, v2};

use crate::common::*;

fn meta(s: &Option<vexil_proto::prost_types::Struct>) -> Value {
    Value::Object(struct_to_json(s.as_ref().expect("metadata")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_typed_values_reasons_variants_metadata() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let mut c = h.v2().await;

    let r = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "bool-static".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, Some(true));
    assert_eq!(r.reason, "STATIC");
    assert_eq!(r.variant.as_deref(), Some("on"));
    // The flag's metadata overlaid on the set's (numbers are doubles in a Struct).
    assert_eq!(
        meta(&r.metadata),
        json!({"owner": "alice", "team": "core", "version": 3.0})
    );

    let eu = ctx(json!({"targetingKey": "u1", "country": "de"}));
    let r = c
        .resolve_string(v2::ResolveStringRequest {
            flag_key: "string-targeted".into(),
            context: eu,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value.as_deref(), r.reason.as_str(), r.variant.as_deref()),
        (Some("#00f"), "TARGETING_MATCH", Some("blue"))
    );
    // A null targetingKey (what the Python client sends without one) is just absent.
    let us = ctx(json!({"targetingKey": null, "country": "us"}));
    let r = c
        .resolve_string(v2::ResolveStringRequest {
            flag_key: "string-targeted".into(),
            context: us,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value.as_deref(), r.reason.as_str(), r.variant.as_deref()),
        (Some("#f00"), "DEFAULT", Some("red"))
    );

    let r = c
        .resolve_int(v2::ResolveIntRequest {
            flag_key: "int-flag".into(),
            context: ctx(json!({"tier": "gold"})),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.reason.as_str()),
        (Some(1000), "TARGETING_MATCH")
    );

    let r = c
        .resolve_float(v2::ResolveFloatRequest {
            flag_key: "float-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.value, r.variant.as_deref()), (Some(1.0), Some("one")));
    // An integer flag resolves as a float too.
    let r = c
        .resolve_float(v2::ResolveFloatRequest {
            flag_key: "int-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.value, r.reason.as_str()), (Some(10.0), "DEFAULT"));

    let r = c
        .resolve_object(v2::ResolveObjectRequest {
            flag_key: "object-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        Value::Object(struct_to_json(r.value.as_ref().unwrap())),
        json!({"size": 1.0, "tags": ["x", "y"]})
    );
    assert_eq!(
        (r.reason.as_str(), r.variant.as_deref()),
        ("STATIC", Some("a"))
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_disabled_and_no_default_variant_leave_value_unset() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let mut c = h.v2().await;
    let r = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "disabled-flag".into(),
            context: None,
        })
        .await
        .expect("a disabled flag is not an error")
        .into_inner();
    assert_eq!(
        (r.value, r.variant, r.reason.as_str()),
        (None, None, "DISABLED")
    );
    assert_eq!(meta(&r.metadata)["owner"], "bob");

    let r = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "no-default".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.variant, r.reason.as_str()),
        (None, None, "DEFAULT")
    );
    let r = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "no-default".into(),
            context: ctx(json!({"x": 1})),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.variant.as_deref(), r.reason.as_str()),
        (Some(true), Some("on"), "TARGETING_MATCH")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_the_statuses_clients_expect() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let mut c = h.v2().await;
    let bool_of = |key: &str, context| v2::ResolveBooleanRequest {
        flag_key: key.into(),
        context,
    };

    let e = c.resolve_boolean(bool_of("nope", None)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("nope"), "{e:?}");

    let e = c
        .resolve_int(v2::ResolveIntRequest {
            flag_key: "bool-static".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A float flag is not an integer flag.
    let e = c
        .resolve_int(v2::ResolveIntRequest {
            flag_key: "float-flag".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .resolve_string(v2::ResolveStringRequest {
            flag_key: "object-flag".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .resolve_object(v2::ResolveObjectRequest {
            flag_key: "array-flag".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("array"), "{e:?}");

    let e = c
        .resolve_boolean(bool_of("broken", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");

    let pick = ctx(json!({"pick": "missing"}));
    let e = c
        .resolve_boolean(bool_of("bad-variant", pick))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(e.message().contains("not a variant"), "{e:?}");
    // The same flag resolves when the rule names a real variant.
    let pick = ctx(json!({"pick": "on"}));
    let r = c
        .resolve_boolean(bool_of("bad-variant", pick))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.reason.as_str()),
        (Some(true), "TARGETING_MATCH")
    );

    let e = c
        .resolve_boolean(bool_of("bool-static", ctx(wide_context(65))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("65 attributes"), "{e:?}");
    c.resolve_boolean(bool_of("bool-static", ctx(wide_context(64))))
        .await
        .expect("64 attributes are accepted");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let mut c = h.v2().await;
    let big = "x".repeat(1024 * 1024 + 1);
    let e = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: big,
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_typed_and_resolve_all() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let mut c = h.v1().await;

    let r = c
        .resolve_boolean(v1::ResolveBooleanRequest {
            flag_key: "bool-static".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.reason.as_str(), r.variant.as_str()),
        (true, "STATIC", "on")
    );
    assert_eq!(meta(&r.metadata)["owner"], "alice");
    // v1 cannot leave the value unset: zero value, empty variant, reason DISABLED.
    let r = c
        .resolve_boolean(v1::ResolveBooleanRequest {
            flag_key: "disabled-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.reason.as_str(), r.variant.as_str()),
        (false, "DISABLED", "")
    );
    let e = c
        .resolve_string(v1::ResolveStringRequest {
            flag_key: "missing".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let r = c
        .resolve_object(v1::ResolveObjectRequest {
            flag_key: "object-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        Value::Object(struct_to_json(&r.value.unwrap()))["size"],
        1.0
    );

    let all = c
        .resolve_all(v1::ResolveAllRequest {
            context: ctx(json!({"country": "fr", "tier": "gold", "pick": "missing"})),
        })
        .await
        .unwrap()
        .into_inner();
    let mut keys: Vec<&str> = all.flags.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // Disabled, failing (broken, bad-variant), value-less (no-default) and array flags are left out.
    assert_eq!(
        keys,
        [
            "bool-static",
            "float-flag",
            "int-flag",
            "object-flag",
            "string-targeted"
        ]
    );
    use v1::any_flag::Value as Any;
    let s = &all.flags["string-targeted"];
    assert_eq!(s.value, Some(Any::StringValue("#00f".into())));
    assert_eq!(
        (s.reason.as_str(), s.variant.as_str()),
        ("TARGETING_MATCH", "blue")
    );
    assert_eq!(all.flags["int-flag"].value, Some(Any::DoubleValue(1000.0)));
    assert_eq!(all.flags["bool-static"].value, Some(Any::BoolValue(true)));
    assert_eq!(meta(&all.flags["bool-static"].metadata)["owner"], "alice");
    assert_eq!(meta(&all.metadata), json!({"team": "core", "version": 3.0}));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_answers_unavailable_and_ready_arrives_with_the_first_snapshot() {
    let h = Harness::start().await;
    let mut c = h.v2().await;
    let e = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "bool-static".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = h
        .v1()
        .await
        .resolve_all(v1::ResolveAllRequest { context: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);

    let mut events = c
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    // Nothing is sent before a flag set is loaded.
    let early = tokio::time::timeout(Duration::from_millis(200), events.message()).await;
    assert!(early.is_err(), "no event before a snapshot: {early:?}");
    publish(&h.cell, 1, &fixture());
    let ready = next(&mut events).await.unwrap();
    assert_eq!(ready.r#type, "provider_ready");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_sends_ready_changes_and_keep_alives() {
    let h = Harness::start_with(Options {
        keep_alive: Duration::from_millis(150),
        ..Options::default()
    })
    .await;
    publish(&h.cell, 1, &fixture());
    let mut v2_events = h
        .v2()
        .await
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut v1_events = h
        .v1()
        .await
        .event_stream(v1::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut v2_events).await.unwrap().r#type, "provider_ready");
    assert_eq!(next(&mut v1_events).await.unwrap().r#type, "provider_ready");

    // Change one flag, remove one, add one.
    let mut doc = fixture();
    doc["flags"]["bool-static"]["defaultVariant"] = json!("off");
    doc["flags"].as_object_mut().unwrap().remove("array-flag");
    doc["flags"]["brand-new"] =
        json!({"state": "ENABLED", "variants": {"a": "A"}, "defaultVariant": "a"});
    publish(&h.cell, 2, &doc);

    let change = loop {
        let e = next(&mut v2_events).await.unwrap();
        if e.r#type != "keep_alive" {
            break e;
        }
    };
    assert_eq!(change.r#type, "configuration_change");
    assert_eq!(
        Value::Object(changed_flags(&change.data)),
        json!({
            "array-flag": {"type": "delete"},
            "bool-static": {"type": "update"},
            "brand-new": {"type": "write"}
        })
    );
    let change = loop {
        let e = next(&mut v1_events).await.unwrap();
        if e.r#type != "keep_alive" {
            break e;
        }
    };
    assert_eq!(change.r#type, "configuration_change");
    assert_eq!(changed_flags(&change.data).len(), 3);

    // Keep-alives keep coming on an idle stream.
    let mut keep_alives = 0;
    while keep_alives < 2 {
        let e = next(&mut v2_events).await.unwrap();
        assert_eq!(e.r#type, "keep_alive");
        keep_alives += 1;
    }

    // A publication that changes nothing is not announced.
    publish(&h.cell, 3, &doc);
    let mut doc4 = doc.clone();
    doc4["flags"]["int-flag"]["defaultVariant"] = json!("big");
    publish(&h.cell, 4, &doc4);
    let change = loop {
        let e = next(&mut v2_events).await.unwrap();
        if e.r#type != "keep_alive" {
            break e;
        }
    };
    assert_eq!(
        Value::Object(changed_flags(&change.data)),
        json!({"int-flag": {"type": "update"}})
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_event_streams() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let mut events = h
        .v2()
        .await
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut events).await.unwrap().r#type, "provider_ready");
    // Returns only if the stream lets the server finish.
    h.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("stream ended");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluations_are_counted_by_flag_and_variant() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let mut c = h.v2().await;
    for _ in 0..3 {
        c.resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "bool-static".into(),
            context: None,
        })
        .await
        .unwrap();
    }
    let _ = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "unknown-key".into(),
            context: None,
        })
        .await;
    let text = h.metrics.render();
    assert!(
        text.contains(
            r#"vexil_proxy_evaluations_total{api="grpc_v2",flag="bool-static",variant="on",reason="STATIC"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"vexil_proxy_evaluations_flag_not_found_total{api="grpc_v2"} 1"#));
    assert!(!text.contains("unknown-key"));
    h.shutdown().await;
}
