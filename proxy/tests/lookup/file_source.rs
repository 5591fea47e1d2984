//! The offline file source: loading, reloading on change, keeping the last good set, and what an
//! EventStream client sees.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use vexil_proto::flagd::evaluation::v2;
use vexil_proxy::file_source::{FileSource, FileSourceConfig, LoadError, Reload};
use vexil_proxy::metrics::Metrics;
use vexil_proxy::snapshot::{SnapshotCell, Source};
use vexil_testkit::TempDir;

use crate::common::*;

fn flags(checkout: &str) -> Value {
    json!({"flags": {
        "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": checkout},
        "theme": {"state": "ENABLED", "variants": {"dark": "dark", "light": "light"}, "defaultVariant": "dark"}
    }})
}

/// Writes `text` to `path` through a temp file and a rename, as editors and ConfigMaps do.
fn write(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn loads_publishes_and_keeps_the_last_good_set() {
    let dir = TempDir::new("vexil-file-source-load");
    let path = dir.join("flags.json");
    write(&path, &flags("on").to_string());
    let cell = Arc::new(SnapshotCell::new());
    let metrics = Metrics::new(cell.clone());
    let mut source =
        FileSource::new(FileSourceConfig::new(&path), cell.clone()).with_metrics(&metrics);

    let Reload::Published(first) = source.poll().unwrap() else {
        panic!("first load publishes");
    };
    assert_eq!(
        (first.revision, first.environment.as_str()),
        (1, "flags.json")
    );
    assert_eq!(first.source, Source::File(path.display().to_string()));
    assert_eq!(first.changed, ["checkout", "theme"]);
    assert!(matches!(source.poll().unwrap(), Reload::Unchanged));

    // Not JSON: an error with its position, the old set stays.
    write(&path, "{\"flags\": {\"checkout\": ");
    let err = source.poll().unwrap_err();
    assert!(matches!(err, LoadError::Invalid(..)));
    assert!(err.to_string().contains("line 1 column"), "{err}");
    assert_eq!(cell.load().unwrap().revision, 1);
    // The same broken content is not reported twice.
    assert!(matches!(source.load().unwrap(), Reload::Unchanged));

    // Not a flag set: an error with its JSON path.
    write(&path, r#"{"flags": []}"#);
    let err = source.poll().unwrap_err();
    assert!(err.to_string().contains("flags"), "{err}");
    assert_eq!(cell.load().unwrap().revision, 1);

    // Missing file: an I/O error, the old set stays.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(source.poll().unwrap_err(), LoadError::Io(..)));
    assert!(matches!(source.poll().unwrap_err(), LoadError::Io(..)));
    assert_eq!(cell.load().unwrap().revision, 1);

    // A flag with problems is kept (PARSE_ERROR) and reported; the others change.
    let mut doc = flags("off");
    doc["flags"]["theme"]["targeting"] = json!({"bogus-op": []});
    write(&path, &doc.to_string());
    let Reload::Published(second) = source.poll().unwrap() else {
        panic!("a lenient problem still publishes");
    };
    assert_eq!(second.revision, 2);
    assert_eq!(second.changed, ["checkout", "theme"]);
    assert_eq!(second.flags.problems().len(), 1);
    assert!(
        second
            .flags
            .problems()
            .iter()
            .next()
            .unwrap()
            .path
            .starts_with("flags.theme.targeting")
    );
    let r = second.flags.resolve_string("theme", &Default::default());
    assert_eq!(r.error_code(), Some(vexil_engine::ErrorCode::ParseError));

    // Reformatted but identical: nothing is published.
    write(&path, &serde_json::to_string_pretty(&doc).unwrap());
    assert!(matches!(source.poll().unwrap(), Reload::Unchanged));
    assert_eq!(cell.load().unwrap().revision, 2);

    let text = metrics.render();
    assert!(
        text.contains("vexil_proxy_file_reloads_total{result=\"ok\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("vexil_proxy_file_reloads_total{result=\"error\"} 3"),
        "{text}"
    );
    assert!(text.contains("vexil_proxy_file_problems 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_reaches_event_stream_clients() {
    let dir = TempDir::new("vexil-file-source-watch");
    let path = dir.join("flags.json");
    write(&path, &flags("on").to_string());
    let cell = Arc::new(SnapshotCell::new());
    let mut config = FileSourceConfig::new(&path);
    config.poll_interval = Duration::from_millis(50);
    config.environment = Some("offline".into());
    let mut source = FileSource::new(config, cell.clone());
    source.load().expect("initial load");
    let h = Harness::start_on(cell.clone(), Options::default()).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let watcher = tokio::spawn(source.run(async move {
        let _ = stopped.await;
    }));

    let mut c = h.v2().await;
    let mut events = c
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut events).await.unwrap().r#type, "provider_ready");

    // A broken edit changes nothing.
    write(&path, "{ not json");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cell.load().unwrap().revision, 1);

    write(&path, &flags("off").to_string());
    let change = loop {
        let e = next(&mut events).await.unwrap();
        if e.r#type == "configuration_change" {
            break e;
        }
    };
    assert_eq!(
        Value::Object(changed_flags(&change.data)),
        json!({"checkout": {"type": "update"}})
    );
    let snapshot = cell.load().unwrap();
    assert_eq!(
        (snapshot.revision, snapshot.environment.as_str()),
        (2, "offline")
    );
    let r = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "checkout".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, Some(false));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher stops")
        .unwrap();
    h.shutdown().await;
}
