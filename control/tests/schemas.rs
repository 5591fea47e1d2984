//! JSON Schemas of flags used as configuration (docs/adr/0036-json-schemas-beside-flags.md), through
//! the real API on SQLite and PostgreSQL: the schema itself is checked, and every write path (flag
//! put, kill switch, whole flag set, promotion; an evaluator write is not concerned) refuses variants
//! that do not match it with a `422` naming the flag, the variant and the JSON path.

mod common;

use common::*;
use serde_json::{Value, json};

fn schema_path(env: &str, key: &str) -> String {
    format!("{}/schema", flag_path(env, key))
}

/// A configuration flag: two object variants.
fn config(small: Value, large: Value) -> Value {
    json!({"state": "ENABLED", "variants": {"small": small, "large": large},
           "defaultVariant": "small"})
}

/// Sizes up to 100, with an optional list of color names.
fn size_schema() -> Value {
    json!({
        "type": "object",
        "required": ["size"],
        "additionalProperties": false,
        "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 100},
            "colors": {"type": "array", "items": {"type": "string"}, "maxItems": 8}
        }
    })
}

/// The paths of a problem's `errors`.
fn paths(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect()
}

both_backends!(
    a_schema_is_checked_then_guards_every_write,
    |app: App| async move {
        let admin = app.admin.clone();
        app.create_env("shop").await;
        app.create_flag(
            "shop",
            "layout",
            &config(json!({"size": 10}), json!({"size": 50})),
        )
        .await;

        // A schema that is not one: refused with its path; nothing written, nothing audited.
        let before = app.snapshot("shop").await;
        let bad = json!({"type": "object", "properties": {"size": {"type": "integr"}}});
        let r = app
            .put_json(&schema_path("shop", "layout"), &bad, &admin)
            .await;
        let p = assert_problem(&r, 422);
        assert_eq!(paths(p), ["schema.properties.size.type"], "{p}");
        assert!(p["detail"].as_str().unwrap().contains("\"layout\""), "{p}");
        // A schema the flag's variants do not match: refused, naming the variant.
        let strict = json!({"type": "object", "properties": {"size": {"maximum": 20}}});
        let r = app
            .put_json(&schema_path("shop", "layout"), &strict, &admin)
            .await;
        let p = assert_problem(&r, 422);
        assert_eq!(paths(p), ["flags.layout.variants.large.size"], "{p}");
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains("flags.layout.variants.large"),
            "{p}"
        );
        assert!(
            p["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("schema.properties.size.maximum"),
            "{p}"
        );
        // Remote references, and schemas too large or too deep.
        let remote = json!({"$ref": "https://schemas.example.com/layout.json"});
        let r = app
            .put_json(&schema_path("shop", "layout"), &remote, &admin)
            .await;
        assert_problem(&r, 422);
        let mut deep = json!({"type": "integer"});
        for _ in 0..40 {
            deep = json!({"type": "array", "items": deep});
        }
        let r = app
            .put_json(&schema_path("shop", "layout"), &deep, &admin)
            .await;
        let p = assert_problem(&r, 422);
        assert!(
            p["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("levels deep"),
            "{p}"
        );
        let big = json!({"enum": (0..20_000).collect::<Vec<_>>()});
        let r = app
            .put_json(&schema_path("shop", "layout"), &big, &admin)
            .await;
        let p = assert_problem(&r, 422);
        assert!(
            p["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("bytes of JSON"),
            "{p}"
        );
        app.assert_unchanged(&before, &app.snapshot("shop").await, "refused schemas");
        let r = app.get(&schema_path("shop", "layout"), &admin).await;
        assert_problem(&r, 404);

        // A good schema: stored beside the flag, audited, no revision (sidecars hold nothing of it).
        let r = app
            .put_json(&schema_path("shop", "layout"), &size_schema(), &admin)
            .await;
        assert_eq!(r.expect(200), &size_schema());
        let after = app.snapshot("shop").await;
        assert_eq!(after.revision, before.revision, "a schema is no revision");
        assert_eq!(
            after.flagset, before.flagset,
            "the flag set does not carry it"
        );
        let audit = app
            .get("/api/v1/audit?environment=shop&limit=1", &admin)
            .await;
        let entry = &audit.expect(200)["items"][0];
        assert_eq!(entry["action"], "flag.schema.put");
        assert_eq!(entry["target"], "layout");
        assert_eq!(entry["after"], size_schema());
        let r = app.get(&flag_path("shop", "layout"), &admin).await;
        assert_eq!(
            r.expect(200)["schema"],
            size_schema(),
            "the flag shows its schema"
        );
        let r = app.get("/api/v1/environments/shop/flags", &admin).await;
        assert_eq!(r.expect(200)["items"][0]["schema"], size_schema());
        let r = app.get(&schema_path("shop", "layout"), &admin).await;
        assert_eq!(r.expect(200), &size_schema());

        // A flag put with a variant off the schema: 422 with the flag, the variant and the path.
        let off = config(
            json!({"size": 10}),
            json!({"size": "big", "colors": ["red", 7]}),
        );
        app.create_env("stage").await;
        app.create_flag("stage", "layout", &off).await;
        let before = app.snapshot("shop").await;
        let r = app
            .put_json_if(&flag_path("shop", "layout"), &off, &admin, "*")
            .await;
        let p = assert_problem(&r, 422);
        assert_eq!(
            paths(p),
            [
                "flags.layout.variants.large.colors[1]",
                "flags.layout.variants.large.size"
            ],
            "{p}"
        );
        assert!(
            p["errors"][1]["message"]
                .as_str()
                .unwrap()
                .contains("schema.properties.size.type"),
            "{p}"
        );
        // A whole flag set with it.
        let doc = json!({"flags": {"layout": off}});
        let r = app
            .put_json("/api/v1/environments/shop/flagset", &doc, &admin)
            .await;
        let p = assert_problem(&r, 422);
        assert_eq!(paths(p).len(), 2, "{p}");
        // A promotion bringing it: the target's schemas guard the target.
        let r = app
            .post_json(
                "/api/v1/environments/stage/promote",
                &json!({"to": "shop"}),
                &admin,
            )
            .await;
        let p = assert_problem(&r, 422);
        assert_eq!(paths(p).len(), 2, "{p}");
        app.assert_unchanged(&before, &app.snapshot("shop").await, "refused writes");

        // Writes that keep the variants right go through: a new variant set, the kill switch, an
        // evaluator (evaluators change no variant).
        let good = config(json!({"size": 10}), json!({"size": 90, "colors": ["red"]}));
        let r = app
            .put_json_if(&flag_path("shop", "layout"), &good, &admin, "*")
            .await;
        assert_eq!(
            r.expect(200)["schema"],
            size_schema(),
            "the answer shows the schema"
        );
        let r = app
            .patch_json(
                &flag_path("shop", "layout"),
                &json!({"state": "DISABLED"}),
                &admin,
            )
            .await;
        r.expect(200);
        let r = app
            .put_json(
                "/api/v1/environments/shop/evaluators/beta",
                &json!({"in": [{"var": "email"}, ["ada@example.com"]]}),
                &admin,
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.text);

        // The schema outlives the flag's delete and guards its re-creation.
        app.delete(&flag_path("shop", "layout"), &admin).await;
        let r = app
            .put_json(&flag_path("shop", "layout"), &off, &admin)
            .await;
        assert_problem(&r, 422);
        // A schema for a flag to come.
        let strings = json!({"type": "string", "enum": ["alpha", "beta"]});
        let r = app
            .put_json(&schema_path("shop", "theme"), &strings, &admin)
            .await;
        r.expect(200);
        let r = app
            .put_json(
                &flag_path("shop", "theme"),
                &string_flag("a", json!({})),
                &admin,
            )
            .await;
        r.expect(201);
        let r = app
            .put_json_if(
                &flag_path("shop", "theme"),
                &json!({"state": "ENABLED", "variants": {"a": "alpha", "c": "gamma"},
                    "defaultVariant": "a"}),
                &admin,
                "*",
            )
            .await;
        let p = assert_problem(&r, 422);
        assert_eq!(paths(p), ["flags.theme.variants.c"], "{p}");

        // Removed: the write goes through; removing it again is 404.
        let r = app.delete(&schema_path("shop", "layout"), &admin).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = app
            .put_json(&flag_path("shop", "layout"), &off, &admin)
            .await;
        r.expect(201);
        let r = app.delete(&schema_path("shop", "layout"), &admin).await;
        assert_problem(&r, 404);
        let audit = app
            .get("/api/v1/audit?environment=shop&target=layout", &admin)
            .await;
        let actions: Vec<&str> = audit.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert!(actions.contains(&"flag.schema.delete"), "{actions:?}");
    }
);

both_backends!(only_writers_set_schemas, |app: App| async move {
    app.create_env("shop").await;
    let (_, viewer) = app.token("v", "viewer", &["shop"]).await;
    let (_, editor) = app.token("e", "editor", &["shop"]).await;
    let r = app
        .put_json(&schema_path("shop", "layout"), &size_schema(), &viewer)
        .await;
    assert_problem(&r, 403);
    let r = app
        .put_json(&schema_path("shop", "layout"), &size_schema(), &editor)
        .await;
    r.expect(200);
    let r = app.get(&schema_path("shop", "layout"), &viewer).await;
    r.expect(200);
    let r = app.delete(&schema_path("shop", "layout"), &viewer).await;
    assert_problem(&r, 403);
    let r = app
        .put_json(&schema_path("nowhere", "layout"), &size_schema(), &editor)
        .await;
    assert!(r.status == 403 || r.status == 404, "{}", r.text);
    let r = app
        .put_json(&schema_path("shop", "Bad Key"), &size_schema(), &editor)
        .await;
    assert_problem(&r, 400);
});
