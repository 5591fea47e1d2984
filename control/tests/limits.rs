//! Bounded growth: the limits hold for the whole environment after every write, so what an
//! environment holds always fits in one sync frame and every new sidecar can load it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use vexil_proxy::snapshot::SnapshotCell;
use vexil_proxy::sync::{SyncClient, SyncConfig};

/// A flag of about `bytes` bytes of JSON (a long `metadata` note).
fn big_flag(bytes: usize) -> serde_json::Value {
    let mut flag = bool_flag();
    flag["metadata"] = json!({"note": "n".repeat(bytes)});
    flag
}

// Single-flag PUTs of about 1 MiB each, as many as a client likes: with the default limits they
// end in a `422` naming `[limits] max_environment_bytes` and the figures (well before the 64 MiB
// frame limit), nothing of the refused write is stored, and a new sidecar still gets the whole
// environment in one `Full` (before, ~70 such PUTs took the environment past the frame limit and
// every new sidecar got `INTERNAL`).
both_backends!(
    one_mib_puts_end_in_a_clear_refusal_and_new_sidecars_still_load,
    |app: App| async move {
        app.create_env("prod").await;
        let flag = big_flag(1_000_000);
        let limit = vexil_control::api::ApiConfig::default().max_environment_bytes;
        let mut accepted = 0;
        let refusal = loop {
            assert!(
                accepted < 70,
                "{accepted} PUTs of ~1 MiB accepted: no limit holds"
            );
            let key = format!("f{accepted}");
            // The whole store is compared only where a refusal may come (it is slow to read).
            let near = (accepted + 2) * 1_000_000 > limit;
            let before = if near {
                Some(app.snapshot("prod").await)
            } else {
                None
            };
            let r = app
                .put_json(&flag_path("prod", &key), &flag, &app.admin)
                .await;
            if r.status == 201 {
                accepted += 1;
                continue;
            }
            let before = before.expect("refused only near the limit");
            app.assert_unchanged(&before, &app.snapshot("prod").await, "the refused PUT");
            break r;
        };
        let p = assert_problem(&refusal, 422);
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("max_environment_bytes")
                && detail.contains(&format!("more than the limit of {limit}")),
            "{p}"
        );
        assert_eq!(p["errors"][0]["path"], "", "the whole document: {p}");
        // As many as fit, no fewer: the limit is about the whole environment.
        let (_, held) = app.store.export("prod").await.unwrap();
        let held = held.to_string().len();
        assert!(
            held <= limit && held + 1_000_000 > limit,
            "{accepted} flags, {held} bytes held, limit {limit}"
        );
        assert!(
            detail.contains(&format!("it is {held} bytes now")),
            "the current figure: {p}"
        );

        // A new sidecar loads the whole environment.
        let (_, token) = app.token("sidecar", "sidecar", &["prod"]).await;
        let revision = app.store.get_environment("prod").await.unwrap().revision;
        let cell = Arc::new(SnapshotCell::new());
        let handle = SyncClient::new(SyncConfig::new(
            &app.sync_url(),
            "prod",
            &token,
            app.ca_file(),
        ))
        .expect("client")
        .spawn(cell.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        while cell.load().is_none_or(|s| s.revision != revision) {
            assert!(
                Instant::now() < deadline,
                "the new sidecar never loaded revision {revision}: {:?}",
                handle.status().borrow()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cell.load().unwrap().flags.len(), accepted);
        handle.shutdown().await;

        // Removing a flag makes room again.
        app.delete(&flag_path("prod", "f0"), &app.admin)
            .await
            .expect(204);
        app.create_flag("prod", "again", &flag).await;
    }
);

// A flag-set import under the import body limit (32 MiB) but over the environment limit is refused
// the same way: the limit is the environment's, whatever the write.
both_backends!(
    an_import_over_the_environment_limit_is_refused,
    |app: App| async move {
        app.create_env("prod").await;
        let limit = vexil_control::api::ApiConfig::default().max_environment_bytes;
        let flags: serde_json::Map<String, serde_json::Value> = (0..20)
            .map(|i| (format!("f{i}"), big_flag(1_000_000)))
            .collect();
        let before = app.snapshot("prod").await;
        let r = app
            .put_json(
                "/api/v1/environments/prod/flagset",
                &json!({ "flags": flags }),
                &app.admin,
            )
            .await;
        let p = assert_problem(&r, 422);
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("more than the limit of {limit}")),
            "{p}"
        );
        app.assert_unchanged(&before, &app.snapshot("prod").await, "the refused import");
    }
);
