//! flagd.sync.v1 through a real tonic client.

use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;
use vexil_proto::convert::struct_to_json;
use vexil_proto::flagd::sync::v1;

use crate::common::*;

fn document(text: &str) -> Value {
    serde_json::from_str(text).expect("flag_configuration is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_flags_streams_the_whole_set_with_a_sync_context() {
    let h = Harness::start().await;
    let first = publish(&h.cell, 1, &fixture());
    let mut c = h.sync_client().await;
    let mut stream = c
        .sync_flags(v1::SyncFlagsRequest {
            provider_id: "test".into(),
            selector: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let m = next(&mut stream).await.unwrap();
    assert_eq!(document(&m.flag_configuration), first.document());
    assert_eq!(
        document(&m.flag_configuration)["flags"]
            .as_object()
            .unwrap()
            .len(),
        10
    );
    let context = struct_to_json(
        m.sync_context
            .as_ref()
            .expect("sync_context is always sent"),
    );
    assert_eq!(
        Value::Object(context),
        json!({"vexil.environment": "test-env", "vexil.revision": 1.0, "vexil.source": "file"})
    );

    let mut doc = fixture();
    doc["flags"]["bool-static"]["defaultVariant"] = json!("off");
    let second = publish(&h.cell, 2, &doc);
    let m = next(&mut stream).await.unwrap();
    assert_eq!(document(&m.flag_configuration), second.document());
    assert_eq!(
        document(&m.flag_configuration)["flags"]["bool-static"]["defaultVariant"],
        "off"
    );
    let context = struct_to_json(m.sync_context.as_ref().unwrap());
    assert_eq!(context["vexil.revision"], 2.0);

    // Several quick publications: the stream catches up to the latest document.
    for rev in 3..=6 {
        let mut d = doc.clone();
        d["flags"]["int-flag"]["defaultVariant"] =
            json!(if rev % 2 == 0 { "big" } else { "small" });
        publish(&h.cell, rev, &d);
    }
    let mut last = next(&mut stream).await.unwrap();
    while struct_to_json(last.sync_context.as_ref().unwrap())["vexil.revision"] != 6.0 {
        last = next(&mut stream).await.unwrap();
    }
    assert_eq!(
        document(&last.flag_configuration)["flags"]["int-flag"]["defaultVariant"],
        "big"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_all_flags_and_get_metadata() {
    let h = Harness::start().await;
    let mut c = h.sync_client().await;
    let e = c
        .fetch_all_flags(v1::FetchAllFlagsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let meta = c
        .get_metadata(v1::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        Value::Object(struct_to_json(meta.metadata.as_ref().unwrap())),
        json!({"vexil.source": "unloaded"})
    );

    // A stream opened before the first snapshot gets it when it arrives.
    let mut stream = c
        .sync_flags(v1::SyncFlagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let early = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
    assert!(early.is_err(), "nothing before a snapshot");
    let snapshot = publish(&h.cell, 7, &fixture());
    let m = next(&mut stream).await.unwrap();
    assert_eq!(document(&m.flag_configuration), snapshot.document());

    let all = c
        .fetch_all_flags(v1::FetchAllFlagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(document(&all.flag_configuration), snapshot.document());
    let meta = c
        .get_metadata(v1::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    let meta = struct_to_json(meta.metadata.as_ref().unwrap());
    assert_eq!(meta["vexil.environment"], "test-env");
    assert_eq!(meta["vexil.revision"], 7.0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_sync_streams() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let mut stream = h
        .sync_client()
        .await
        .sync_flags(v1::SyncFlagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    next(&mut stream).await.unwrap();
    h.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("stream ended");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}
