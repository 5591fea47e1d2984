//! Every admin API endpoint, success and failure paths, on SQLite and PostgreSQL.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

// ------------------------------------------------------------ environments ----

both_backends!(environments_crud, |app: App| async move {
    let admin = app.admin.clone();
    let list = app.get("/api/v1/environments", &admin).await;
    assert_eq!(list.expect(200), &json!({"items": [], "next_cursor": null}));

    // Create.
    let r = app
        .post_json(
            "/api/v1/environments",
            &json!({"key": "prod", "name": "Production"}),
            &admin,
        )
        .await;
    let env = r.expect(201);
    assert_eq!(env["key"], "prod");
    assert_eq!(env["name"], "Production");
    assert_eq!(env["revision"], 0);
    assert_eq!(r.header("location"), Some("/api/v1/environments/prod"));
    app.create_env("dev").await;

    // Create: conflicts and bad input change nothing.
    let before = app.snapshot("prod").await;
    let r = app
        .post_json(
            "/api/v1/environments",
            &json!({"key": "prod", "name": "Again"}),
            &admin,
        )
        .await;
    assert!(
        assert_problem(&r, 409)["detail"]
            .as_str()
            .unwrap()
            .contains("prod")
    );
    for bad in [
        json!({"key": "Prod", "name": "x"}),
        json!({"key": "-prod", "name": "x"}),
        json!({"key": "a".repeat(64), "name": "x"}),
        json!({"key": "qa", "name": "   "}),
        json!({"key": "qa"}),
        json!({"key": "qa", "name": "QA", "extra": 1}),
    ] {
        let r = app.post_json("/api/v1/environments", &bad, &admin).await;
        assert_problem(&r, 400);
    }
    app.assert_unchanged(&before, &app.snapshot("prod").await, "refused creations");

    // Get and list (by key).
    let r = app.get("/api/v1/environments/prod", &admin).await;
    assert_eq!(r.expect(200)["name"], "Production");
    assert_problem(&app.get("/api/v1/environments/nope", &admin).await, 404);
    let list = app.get("/api/v1/environments", &admin).await;
    let keys: Vec<_> = list.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["dev", "prod"]);
    assert!(list.json["next_cursor"].is_null());

    // Rename.
    let r = app
        .patch_json(
            "/api/v1/environments/prod",
            &json!({"name": "Prod EU"}),
            &admin,
        )
        .await;
    assert_eq!(r.expect(200)["name"], "Prod EU");
    assert_eq!(
        app.get("/api/v1/environments/prod", &admin).await.json["name"],
        "Prod EU"
    );
    let before = app.snapshot("prod").await;
    for bad in [json!({"name": ""}), json!({"key": "x"}), json!({"name": 3})] {
        let r = app
            .patch_json("/api/v1/environments/prod", &bad, &admin)
            .await;
        assert_problem(&r, 400);
    }
    let r = app
        .patch_json("/api/v1/environments/nope", &json!({"name": "x"}), &admin)
        .await;
    assert_problem(&r, 404);
    app.assert_unchanged(&before, &app.snapshot("prod").await, "refused renames");

    // Delete: refused while it has flags, unless forced.
    app.create_flag("prod", "checkout", &bool_flag()).await;
    let before = app.snapshot("prod").await;
    let r = app.delete("/api/v1/environments/prod", &admin).await;
    let p = assert_problem(&r, 409);
    assert!(p["detail"].as_str().unwrap().contains("force=true"), "{p}");
    app.assert_unchanged(&before, &app.snapshot("prod").await, "refused delete");
    assert_eq!(
        app.delete("/api/v1/environments/prod?force=true", &admin)
            .await
            .status,
        204
    );
    assert_problem(&app.get("/api/v1/environments/prod", &admin).await, 404);
    assert_problem(&app.get(&flag_path("prod", "checkout"), &admin).await, 404);
    // An empty environment needs no force.
    assert_eq!(
        app.delete("/api/v1/environments/dev", &admin).await.status,
        204
    );
    assert_problem(&app.delete("/api/v1/environments/dev", &admin).await, 404);
    let list = app.get("/api/v1/environments", &admin).await;
    assert_eq!(list.expect(200)["items"], json!([]));

    // Every change is audited.
    let audit = app.get("/api/v1/audit?limit=1000", &admin).await;
    let actions: Vec<_> = audit.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "environment.create",
        "environment.update",
        "environment.delete",
        "flag.create",
    ] {
        assert!(
            actions.contains(&a.to_string()),
            "{a} missing from {actions:?}"
        );
    }
});

both_backends!(promote_copies_a_flag_set, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("stage").await;
    app.create_env("prod").await;
    app.create_flag("prod", "old", &bool_flag()).await;
    let doc = json!({
        "flags": {
            "checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"$ref": "beta"}, "on", "off"]}
            },
            "theme": string_flag("a", json!({"team": "web"}))
        },
        "$evaluators": {"beta": {"in": [{"var": "email"}, ["ada@example.com"]]}},
        "metadata": {"owner": "growth"}
    });
    app.put_json("/api/v1/environments/stage/flagset", &doc, &admin)
        .await
        .expect(200);
    let prod_rev = app.snapshot("prod").await.revision;

    let r = app
        .post_json(
            "/api/v1/environments/stage/promote",
            &json!({"to": "prod"}),
            &admin,
        )
        .await;
    let env = r.expect(200);
    assert_eq!(env["key"], "prod");
    assert_eq!(env["revision"], prod_rev + 1);
    let exported = app.get("/api/v1/environments/prod/flagset", &admin).await;
    assert_eq!(
        exported.expect(200),
        &doc,
        "prod now holds exactly stage's set"
    );
    let changes = app
        .store
        .changes_since("prod", prod_rev, 100)
        .await
        .unwrap();
    assert_eq!(changes.len(), 1, "one promotion is one revision");
    let audit = app
        .get("/api/v1/audit?environment=prod&limit=1", &admin)
        .await;
    let entry = &audit.expect(200)["items"][0];
    assert_eq!(entry["action"], "environment.promote");
    assert_eq!(entry["target"], "stage");

    // Failures change nothing.
    let before_prod = app.snapshot("prod").await;
    let before_stage = app.snapshot("stage").await;
    let r = app
        .post_json(
            "/api/v1/environments/stage/promote",
            &json!({"to": "nope"}),
            &admin,
        )
        .await;
    assert_problem(&r, 404);
    let r = app
        .post_json(
            "/api/v1/environments/nope/promote",
            &json!({"to": "prod"}),
            &admin,
        )
        .await;
    assert_problem(&r, 404);
    let r = app
        .post_json(
            "/api/v1/environments/prod/promote",
            &json!({"to": "prod"}),
            &admin,
        )
        .await;
    assert_problem(&r, 400);
    let r = app
        .post_json(
            "/api/v1/environments/stage/promote",
            &json!({"too": "prod"}),
            &admin,
        )
        .await;
    assert_problem(&r, 400);
    app.assert_unchanged(
        &before_prod,
        &app.snapshot("prod").await,
        "failed promotions (prod)",
    );
    app.assert_unchanged(
        &before_stage,
        &app.snapshot("stage").await,
        "failed promotions (stage)",
    );
});

// ------------------------------------------------------------------- flags ----

both_backends!(
    whole_set_writes_take_if_match_on_the_revision,
    |app: App| async move {
        let admin = app.admin.clone();
        app.create_env("stage").await;
        app.create_env("prod").await;
        let path = "/api/v1/environments/prod/flagset";
        let doc = json!({"flags": {"a": bool_flag()}});

        // The environment and its flag set name the revision as their ETag.
        let read = app.get(path, &admin).await;
        read.expect(200);
        assert_eq!(read.etag(), "\"0\"");
        assert_eq!(
            app.get("/api/v1/environments/prod", &admin).await.etag(),
            "\"0\""
        );

        // The ETag of the read: 200, and the answer names the new revision.
        let r = app.put_json_if(path, &doc, &admin, &read.etag()).await;
        assert_eq!(r.expect(200)["revision"], 1);
        assert_eq!(r.etag(), "\"1\"");

        // Stale: 412 with the current ETag, nothing written.
        let before = app.snapshot("prod").await;
        let other = json!({"flags": {"b": bool_flag()}});
        let r = app.put_json_if(path, &other, &admin, "\"0\"").await;
        let p = assert_problem(&r, 412);
        assert_eq!(p["current_etag"], "\"1\"", "{p}");
        // Not an ETag of ours: 412 as well.
        assert_problem(&app.put_json_if(path, &other, &admin, "\"x\"").await, 412);
        app.assert_unchanged(&before, &app.snapshot("prod").await, "stale If-Match");

        // `*` and no If-Match: as before, whatever the revision.
        app.put_json_if(path, &other, &admin, "*").await.expect(200);
        assert_eq!(
            app.put_json(path, &doc, &admin).await.expect(200)["revision"],
            3
        );

        // Promotion: If-Match names the target's revision.
        app.put_json("/api/v1/environments/stage/flagset", &other, &admin)
            .await
            .expect(200);
        let body = json!({"to": "prod"});
        let promote = |etag: Option<&'static str>| {
            let mut req = app
                .req("POST", "/api/v1/environments/stage/promote")
                .token(&admin)
                .json(&body);
            if let Some(etag) = etag {
                req = req.header("if-match", etag);
            }
            req.send()
        };
        let before = app.snapshot("prod").await;
        let r = promote(Some("\"2\"")).await;
        let p = assert_problem(&r, 412);
        assert_eq!(p["current_etag"], "\"3\"", "{p}");
        // The source's revision is not the target's.
        assert_problem(&promote(Some("\"1\"")).await, 412);
        app.assert_unchanged(&before, &app.snapshot("prod").await, "stale promotion");
        let r = promote(Some("\"3\"")).await;
        assert_eq!(r.expect(200)["revision"], 4);
        assert_eq!(r.etag(), "\"4\"");
        promote(Some("*")).await.expect(200);
        promote(None).await.expect(200);
        assert_eq!(app.snapshot("prod").await.revision, 6);
    }
);

both_backends!(flag_list_filters_and_pages, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let mut all = Vec::new();
    for i in 0..7 {
        let key = format!("checkout.step{i}");
        let team = if i % 2 == 0 { "growth" } else { "payments" };
        app.create_flag(
            "prod",
            &key,
            &string_flag("a", json!({"team": team, "tier": i})),
        )
        .await;
        all.push(key);
    }
    for key in ["search", "search-v2", "zeta"] {
        app.create_flag("prod", key, &bool_flag()).await;
        all.push(key.to_string());
    }
    for key in ["checkout.step3", "search"] {
        app.patch_json(
            &flag_path("prod", key),
            &json!({"state": "DISABLED"}),
            &admin,
        )
        .await
        .expect(200);
    }
    all.sort();

    // Walks every page of `query`, checking the page size; returns the keys in order.
    async fn walk(app: &App, query: &str, limit: usize) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut path = format!("/api/v1/environments/prod/flags?limit={limit}{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = app.get(&path, &app.admin).await;
            let page = r.expect(200);
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= limit, "page too long: {page}");
            keys.extend(items.iter().map(|f| f["key"].as_str().unwrap().to_string()));
            match page["next_cursor"].as_str() {
                Some(c) => {
                    assert_eq!(items.len(), limit, "only the last page may be short");
                    cursor = Some(c.to_string());
                }
                None => return keys,
            }
        }
        panic!("pagination does not end");
    }

    assert_eq!(walk(&app, "", 100).await, all);
    assert_eq!(
        walk(&app, "", 3).await,
        all,
        "pages of 3 cover everything once"
    );
    assert_eq!(walk(&app, "", 1).await, all);
    assert_eq!(
        walk(&app, "&state=DISABLED", 1).await,
        ["checkout.step3", "search"]
    );
    let enabled = walk(&app, "&state=ENABLED", 4).await;
    assert_eq!(enabled.len(), all.len() - 2);
    assert_eq!(
        walk(&app, "&metadata=team:growth", 2).await,
        [
            "checkout.step0",
            "checkout.step2",
            "checkout.step4",
            "checkout.step6"
        ]
    );
    assert_eq!(walk(&app, "&metadata=tier:3", 2).await, ["checkout.step3"]);
    assert_eq!(
        walk(&app, "&prefix=search", 1).await,
        ["search", "search-v2"]
    );
    assert_eq!(walk(&app, "&prefix=checkout.", 5).await.len(), 7);
    assert_eq!(
        walk(
            &app,
            "&prefix=checkout.&metadata=team:payments&state=ENABLED",
            1
        )
        .await,
        ["checkout.step1", "checkout.step5"]
    );
    assert!(walk(&app, "&prefix=nothing", 10).await.is_empty());

    // A flag record carries its definition and version.
    let r = app
        .get("/api/v1/environments/prod/flags?prefix=zeta", &admin)
        .await;
    let f = &r.expect(200)["items"][0];
    assert_eq!(f["definition"], bool_flag());
    assert_eq!(f["version"], 1);
    assert_eq!(f["state"], "ENABLED");

    for bad in [
        "?state=OFF",
        "?metadata=team",
        "?limit=ten",
        "?cursor=a&limit=-",
    ] {
        let r = app
            .get(&format!("/api/v1/environments/prod/flags{bad}"), &admin)
            .await;
        assert_problem(&r, 400);
    }
    assert_problem(
        &app.get("/api/v1/environments/nope/flags", &admin).await,
        404,
    );
});

both_backends!(flag_put_get_etags, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let path = flag_path("prod", "checkout");
    assert_problem(&app.get(&path, &admin).await, 404);

    // Create: 201 with an ETag.
    let r = app.put_json(&path, &bool_flag(), &admin).await;
    let rec = r.expect(201);
    assert_eq!(rec["key"], "checkout");
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["definition"], bool_flag());
    let etag1 = r.etag();
    let got = app.get(&path, &admin).await;
    assert_eq!(got.expect(200)["definition"], bool_flag());
    assert_eq!(got.etag(), etag1);

    let mut off = bool_flag();
    off["defaultVariant"] = json!("off");
    let before = app.snapshot("prod").await;
    // Replace without If-Match: 428.
    let r = app.put_json(&path, &off, &admin).await;
    assert!(
        assert_problem(&r, 428)["detail"]
            .as_str()
            .unwrap()
            .contains("If-Match")
    );
    // Stale or foreign If-Match: 412, naming the current ETag.
    let r = app.put_json_if(&path, &off, &admin, "\"7\"").await;
    assert_eq!(assert_problem(&r, 412)["current_etag"], json!(etag1));
    let r = app.put_json_if(&path, &off, &admin, "\"not-ours\"").await;
    assert_problem(&r, 412);
    // If-Match on a flag that does not exist: 412, nothing created.
    let r = app
        .put_json_if(&flag_path("prod", "ghost"), &off, &admin, &etag1)
        .await;
    assert_problem(&r, 412);
    // A flag in an unknown environment.
    let r = app
        .put_json(&flag_path("nope", "checkout"), &off, &admin)
        .await;
    assert_problem(&r, 404);
    app.assert_unchanged(&before, &app.snapshot("prod").await, "refused replacements");

    // With the current ETag: 200 and a new ETag.
    let r = app.put_json_if(&path, &off, &admin, &etag1).await;
    assert_eq!(r.expect(200)["version"], 2);
    let etag2 = r.etag();
    assert_ne!(etag1, etag2);
    let got = app.get(&path, &admin).await;
    assert_eq!(got.json["definition"]["defaultVariant"], "off");
    assert_eq!(got.etag(), etag2);
    // The old ETag is now stale; weak form and `*` are accepted.
    assert_problem(
        &app.put_json_if(&path, &bool_flag(), &admin, &etag1).await,
        412,
    );
    let r = app
        .put_json_if(&path, &bool_flag(), &admin, &format!("W/{etag2}"))
        .await;
    assert_eq!(r.expect(200)["version"], 3);
    let r = app.put_json_if(&path, &off, &admin, "*").await;
    assert_eq!(r.expect(200)["version"], 4);

    // Each write: one revision, one change, one audit entry.
    let changes = app.store.changes_since("prod", 0, 100).await.unwrap();
    let revisions: Vec<i64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, [1, 2, 3, 4]);
    let audit = app
        .get("/api/v1/audit?environment=prod&flag=checkout", &admin)
        .await;
    let actions: Vec<_> = audit.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["flag.update", "flag.update", "flag.update", "flag.create"]
    );
});

both_backends!(kill_switch_and_delete, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let path = flag_path("prod", "checkout");
    let etag = app
        .create_flag("prod", "checkout", &bool_flag())
        .await
        .etag();

    let r = app
        .patch_json(&path, &json!({"state": "DISABLED"}), &admin)
        .await;
    let rec = r.expect(200);
    assert_eq!(rec["state"], "DISABLED");
    assert_eq!(rec["definition"]["state"], "DISABLED");
    assert_eq!(rec["definition"]["variants"], bool_flag()["variants"]);
    assert_ne!(r.etag(), etag);
    let eval = app
        .post_json(
            "/api/v1/environments/prod/evaluate",
            &json!({"flag": "checkout", "context": {}}),
            &admin,
        )
        .await;
    assert_eq!(eval.expect(200)["results"][0]["reason"], "DISABLED");

    let before = app.snapshot("prod").await;
    for bad in [
        json!({"state": "OFF"}),
        json!({"state": "DISABLED", "x": 1}),
        json!({}),
    ] {
        assert_problem(&app.patch_json(&path, &bad, &admin).await, 400);
    }
    let r = app
        .patch_json(
            &flag_path("prod", "ghost"),
            &json!({"state": "DISABLED"}),
            &admin,
        )
        .await;
    assert_problem(&r, 404);
    let r = app
        .req("PATCH", &path)
        .token(&admin)
        .header("if-match", &etag)
        .json(&json!({"state": "ENABLED"}))
        .send()
        .await;
    assert_problem(&r, 412);
    // Delete: a stale If-Match and an unknown flag are refused.
    let r = app
        .req("DELETE", &path)
        .token(&admin)
        .header("if-match", &etag)
        .send()
        .await;
    assert_problem(&r, 412);
    assert_problem(&app.delete(&flag_path("prod", "ghost"), &admin).await, 404);
    app.assert_unchanged(
        &before,
        &app.snapshot("prod").await,
        "refused kill switches/deletes",
    );

    let r = app
        .patch_json(&path, &json!({"state": "ENABLED"}), &admin)
        .await;
    assert_eq!(r.expect(200)["state"], "ENABLED");
    let current = r.etag();
    let r = app
        .req("DELETE", &path)
        .token(&admin)
        .header("if-match", &current)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_problem(&app.get(&path, &admin).await, 404);
    assert_problem(&app.delete(&path, &admin).await, 404);
    let changes = app.store.changes_since("prod", 0, 100).await.unwrap();
    assert_eq!(changes.len(), 4);
    assert!(
        changes[3].definition.is_none(),
        "a deletion carries no definition"
    );
    // Re-creating a deleted flag is a creation again.
    assert_eq!(app.put_json(&path, &bool_flag(), &admin).await.status, 201);
});

both_backends!(
    invalid_definitions_list_every_error,
    |app: App| async move {
        let admin = app.admin.clone();
        app.create_env("prod").await;
        app.create_flag("prod", "good", &bool_flag()).await;
        let before = app.snapshot("prod").await;

        let bad = json!({
            "state": "ON",
            "variants": {"on": true, "off": "no"},
            "defaultVariant": "missing",
            "targeting": {"iff": [true, "on", "off"]}
        });
        let r = app
            .put_json(&flag_path("prod", "checkout"), &bad, &admin)
            .await;
        let p = assert_problem(&r, 400);
        let paths: Vec<&str> = p["errors"]
            .as_array()
            .expect("errors[]")
            .iter()
            .map(|e| {
                assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
                e["path"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            paths,
            [
                "flags.checkout.state",
                "flags.checkout.variants",
                "flags.checkout.defaultVariant",
                "flags.checkout.targeting",
            ],
            "{p}"
        );

        // A rule error deep inside targeting is located precisely.
        let mut deep = bool_flag();
        deep["targeting"] = json!({"if": [{"==": [{"var": "email"}, "x"]}, "on", {"bogus": []}]});
        let r = app
            .put_json(&flag_path("prod", "deep"), &deep, &admin)
            .await;
        let p = assert_problem(&r, 400);
        assert_eq!(p["errors"][0]["path"], "flags.deep.targeting.if[2]", "{p}");
        assert_eq!(p["errors"].as_array().unwrap().len(), 1);

        // A reference to an evaluator that does not exist.
        let mut dangling = bool_flag();
        dangling["targeting"] = json!({"if": [{"$ref": "nope"}, "on", "off"]});
        let r = app
            .put_json(&flag_path("prod", "dangling"), &dangling, &admin)
            .await;
        let p = assert_problem(&r, 400);
        assert!(
            p["errors"][0]["path"]
                .as_str()
                .unwrap()
                .starts_with("flags.dangling.targeting"),
            "{p}"
        );

        // Not JSON, not an object, the wrong shape: 400 too.
        let r = app
            .req("PUT", &flag_path("prod", "checkout"))
            .token(&admin)
            .raw(Some("application/json"), b"{\"state\": ".to_vec())
            .send()
            .await;
        assert_problem(&r, 400);
        let r = app
            .put_json(&flag_path("prod", "checkout"), &json!([1, 2]), &admin)
            .await;
        assert_problem(&r, 400);
        // Replacing an existing flag with a bad definition is refused the same way.
        let r = app
            .put_json_if(&flag_path("prod", "good"), &bad, &admin, "\"1\"")
            .await;
        assert_problem(&r, 400);
        app.assert_unchanged(&before, &app.snapshot("prod").await, "invalid definitions");
    }
);

both_backends!(
    flag_keys_must_be_header_dictionary_keys,
    |app: App| async move {
        let admin = app.admin.clone();
        app.create_env("prod").await;
        let before = app.snapshot("prod").await;
        for (key, reason) in [
            ("Bad_Key", "lowercase"),
            ("new%20checkout", "' '"),
            ("1flag", "start"),
            ("flag-A", "'A'"),
        ] {
            let r = app
                .put_json(&flag_path("prod", key), &bool_flag(), &admin)
                .await;
            let p = assert_problem(&r, 400);
            let detail = p["detail"].as_str().unwrap();
            assert!(detail.contains(reason), "{key}: {detail}");
            assert!(detail.contains("header dictionary key"), "{key}: {detail}");
        }
        // Same rule in a whole flag set, with the path of the key.
        let doc = json!({"flags": {"Bad_Key": bool_flag(), "ok": bool_flag()}});
        let r = app
            .put_json("/api/v1/environments/prod/flagset", &doc, &admin)
            .await;
        let p = assert_problem(&r, 400);
        assert_eq!(p["errors"][0]["path"], "flags[\"Bad_Key\"]", "{p}");
        assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");
        app.assert_unchanged(&before, &app.snapshot("prod").await, "bad keys");
        // Valid dictionary keys are accepted.
        for key in ["a.b_c-1", "*x", "theme2"] {
            app.create_flag("prod", key, &bool_flag()).await;
        }
    }
);

// -------------------------------------------------------------- evaluators ----

both_backends!(evaluators_crud_and_references, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let base = "/api/v1/environments/prod/evaluators";
    let list = app.get(base, &admin).await;
    assert_eq!(list.expect(200), &json!({"items": [], "next_cursor": null}));

    let rule = json!({"in": [{"var": "email"}, ["ada@example.com"]]});
    let r = app.put_json(&format!("{base}/beta"), &rule, &admin).await;
    assert_eq!(r.expect(201)["version"], 1);
    let etag = r.etag();
    let got = app.get(&format!("{base}/beta"), &admin).await;
    assert_eq!(got.expect(200)["definition"], rule);
    assert_eq!(got.etag(), etag);
    assert_problem(&app.get(&format!("{base}/nope"), &admin).await, 404);

    // Two flags use it.
    for key in ["checkout", "search"] {
        let mut f = bool_flag();
        f["targeting"] = json!({"if": [{"$ref": "beta"}, "on", "off"]});
        app.create_flag("prod", key, &f).await;
    }
    app.create_flag("prod", "plain", &bool_flag()).await;
    let eval = app
        .post_json(
            "/api/v1/environments/prod/evaluate",
            &json!({"flag": "checkout", "context": {"email": "ada@example.com"}}),
            &admin,
        )
        .await;
    assert_eq!(eval.expect(200)["results"][0]["reason"], "TARGETING_MATCH");

    let before = app.snapshot("prod").await;
    // Replace needs If-Match.
    let rule2 = json!({"in": [{"var": "email"}, ["ada@example.com", "bob@example.com"]]});
    assert_problem(
        &app.put_json(&format!("{base}/beta"), &rule2, &admin).await,
        428,
    );
    assert_problem(
        &app.put_json_if(&format!("{base}/beta"), &rule2, &admin, "\"9\"")
            .await,
        412,
    );
    // An invalid rule.
    let r = app
        .put_json(&format!("{base}/broken"), &json!({"iff": [1]}), &admin)
        .await;
    let p = assert_problem(&r, 400);
    assert!(
        p["errors"][0]["path"].as_str().unwrap().contains("broken"),
        "{p}"
    );
    // Deleting an evaluator in use: 409, naming every user.
    let r = app.delete(&format!("{base}/beta"), &admin).await;
    let detail = assert_problem(&r, 409)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("\"checkout\"") && detail.contains("\"search\""),
        "{detail}"
    );
    assert!(!detail.contains("plain"), "{detail}");
    assert_problem(&app.delete(&format!("{base}/nope"), &admin).await, 404);
    app.assert_unchanged(
        &before,
        &app.snapshot("prod").await,
        "refused evaluator writes",
    );

    let r = app
        .put_json_if(&format!("{base}/beta"), &rule2, &admin, &etag)
        .await;
    assert_eq!(r.expect(200)["version"], 2);
    let eval = app
        .post_json(
            "/api/v1/environments/prod/evaluate",
            &json!({"flag": "search", "context": {"email": "bob@example.com"}}),
            &admin,
        )
        .await;
    assert_eq!(
        eval.expect(200)["results"][0]["value"],
        true,
        "the new rule is used"
    );

    // An unused evaluator can go.
    app.put_json(&format!("{base}/unused"), &json!({"==": [1, 1]}), &admin)
        .await
        .expect(201);
    let list = app.get(base, &admin).await;
    let keys: Vec<_> = list.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["beta", "unused"]);
    assert_eq!(
        app.delete(&format!("{base}/unused"), &admin).await.status,
        204
    );
    assert_problem(&app.get(&format!("{base}/unused"), &admin).await, 404);
    assert_problem(
        &app.get("/api/v1/environments/nope/evaluators", &admin)
            .await,
        404,
    );
});

// ---------------------------------------------------------------- flagsets ----

both_backends!(flagset_export_and_atomic_replace, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let path = "/api/v1/environments/prod/flagset";
    let empty = app.get(path, &admin).await;
    assert_eq!(empty.expect(200), &json!({"flags": {}}));
    assert_eq!(empty.header("vexil-revision"), Some("0"));

    app.create_flag("prod", "old", &bool_flag()).await;
    let doc = json!({
        "flags": {
            "checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"$ref": "beta"}, "on", "off"]}
            },
            "theme": string_flag("b", json!({"team": "web"}))
        },
        "$evaluators": {"beta": {"in": [{"var": "email"}, ["ada@example.com"]]}},
        "metadata": {"owner": "growth"}
    });
    let r = app.put_json(path, &doc, &admin).await;
    let env = r.expect(200);
    assert_eq!(env["key"], "prod");
    assert_eq!(env["revision"], 2);
    let exported = app.get(path, &admin).await;
    assert_eq!(exported.expect(200), &doc);
    assert_eq!(exported.header("vexil-revision"), Some("2"));
    assert_eq!(exported.etag(), "\"2\"");
    assert_problem(&app.get(&flag_path("prod", "old"), &admin).await, 404);
    let theme = app.get(&flag_path("prod", "theme"), &admin).await;
    assert_eq!(theme.expect(200)["definition"], doc["flags"]["theme"]);
    // One revision, one change, one audit entry for the whole set.
    let changes = app.store.changes_since("prod", 1, 100).await.unwrap();
    assert_eq!(changes.len(), 1);
    let audit = app
        .get("/api/v1/audit?environment=prod&limit=1", &admin)
        .await;
    assert_eq!(audit.expect(200)["items"][0]["action"], "flagset.replace");

    // An invalid document changes nothing, and every problem is listed.
    let before = app.snapshot("prod").await;
    let bad = json!({
        "flags": {
            "checkout": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "off"},
            "theme": {"state": "MAYBE", "variants": {"a": "x"}, "defaultVariant": "a"},
            "valid": bool_flag()
        }
    });
    let r = app.put_json(path, &bad, &admin).await;
    let p = assert_problem(&r, 400);
    let paths: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["flags.checkout.defaultVariant", "flags.theme.state"],
        "{p}"
    );
    for bad in [json!({"flags": 3}), json!([]), json!({"nope": {}})] {
        assert_problem(&app.put_json(path, &bad, &admin).await, 400);
    }
    app.assert_unchanged(&before, &app.snapshot("prod").await, "invalid flag sets");
    assert_problem(
        &app.get("/api/v1/environments/nope/flagset", &admin).await,
        404,
    );
    assert_problem(
        &app.put_json("/api/v1/environments/nope/flagset", &doc, &admin)
            .await,
        404,
    );
});

both_backends!(
    the_bootstrap_export_is_a_persisted_snapshot_file,
    |app: App| async move {
        use vexil_proto::snapshot_file;
        let admin = app.admin.clone();
        app.create_env("prod").await;
        app.create_env("dev").await;
        let path = "/api/v1/environments/prod/bootstrap";
        // Never written: an empty set at revision 0.
        let empty = app.get(path, &admin).await;
        assert_eq!(empty.status, 200, "{}", empty.text);
        let file = snapshot_file::decode(empty.text.as_bytes()).unwrap();
        assert_eq!((file.environment.as_str(), file.revision), ("prod", 0));
        assert_eq!(file.document, json!({"flags": {}}));

        app.create_flag("prod", "checkout", &bool_flag()).await;
        let r = app.get(path, &admin).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.header("vexil-revision"), Some("1"));
        assert_eq!(r.etag(), "\"1\"");
        let file = snapshot_file::decode(r.text.as_bytes()).unwrap();
        assert_eq!(file.revision, 1);
        let exported = app.get("/api/v1/environments/prod/flagset", &admin).await;
        assert_eq!(&file.document, exported.expect(200));

        // Authenticated and authorized like the other reads.
        let (_, prod_viewer) = app.token("pv", "viewer", &["prod"]).await;
        let (_, dev_viewer) = app.token("dv", "viewer", &["dev"]).await;
        let (_, prod_sidecar) = app.token("ps", "sidecar", &["prod"]).await;
        assert_eq!(app.get(path, &prod_viewer).await.status, 200);
        assert_problem(&app.get(path, &dev_viewer).await, 403);
        assert_problem(&app.req("GET", path).send().await, 401);
        let sidecar = app.get(path, &prod_sidecar).await.status;
        let flagset = app
            .get("/api/v1/environments/prod/flagset", &prod_sidecar)
            .await
            .status;
        assert_eq!(
            sidecar, flagset,
            "a sidecar token reads it as it reads the flag set"
        );
        assert_problem(
            &app.get("/api/v1/environments/nope/bootstrap", &admin).await,
            404,
        );
    }
);

both_backends!(body_size_limits, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let before = app.snapshot("prod").await;
    // Just over 1 MiB on a normal route: 413.
    let mut big = bool_flag();
    big["metadata"] = json!({"blob": "x".repeat(1 << 20)});
    let r = app.put_json(&flag_path("prod", "big"), &big, &admin).await;
    assert_problem(&r, 413);
    // Well over it, again and again: the client reads every 413 (the server reads the rest of the
    // body instead of resetting the connection under the client's feet).
    for size in [2 << 20, 8 << 20, 3 << 20, 5 << 20] {
        let r = app
            .req("PUT", &flag_path("prod", "big"))
            .token(&admin)
            .raw(Some("application/json"), vec![b' '; size])
            .send()
            .await;
        assert_problem(&r, 413);
    }
    // A client that waits for `100 Continue` is refused before it sends the body.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base.trim_start_matches("http://").to_string();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT /api/v1/environments/prod/flags/big HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {admin}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            5 << 20
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
    app.assert_unchanged(&before, &app.snapshot("prod").await, "413");

    // The flag-set route takes a few MiB.
    let mut flags = serde_json::Map::new();
    for i in 0..3000 {
        let mut f = bool_flag();
        f["metadata"] = json!({"note": "y".repeat(1000)});
        flags.insert(format!("flag{i:04}"), f);
    }
    let doc = json!({"flags": flags});
    assert!(doc.to_string().len() > 3 << 20);
    let r = app
        .put_json("/api/v1/environments/prod/flagset", &doc, &admin)
        .await;
    assert_eq!(r.expect(200)["revision"], 1);
    let r = app
        .get("/api/v1/environments/prod/flags?limit=1000", &admin)
        .await;
    assert_eq!(r.expect(200)["items"].as_array().unwrap().len(), 1000);

    // ...up to 32 MiB.
    let before = app.snapshot("prod").await;
    let mut over = b"{\"flags\": {}, \"metadata\": {\"pad\": \"".to_vec();
    over.resize((32 << 20) + 16, b'p');
    over.extend_from_slice(b"\"}}");
    let r = app
        .req("PUT", "/api/v1/environments/prod/flagset")
        .token(&admin)
        .raw(Some("application/json"), over)
        .send()
        .await;
    assert_problem(&r, 413);
    app.assert_unchanged(
        &before,
        &app.snapshot("prod").await,
        "413 on the flag-set route",
    );
});

// ---------------------------------------------------------------- evaluate ----

both_backends!(evaluate_previews, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let doc = json!({
        "flags": {
            "checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", "off"]}
            },
            "theme": string_flag("b", json!({"team": "web"})),
            "killed": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"}
        }
    });
    app.put_json("/api/v1/environments/prod/flagset", &doc, &admin)
        .await
        .expect(200);
    let path = "/api/v1/environments/prod/evaluate";

    let r = app
        .post_json(
            path,
            &json!({"flag": "checkout", "context": {"email": "ada@example.com"}}),
            &admin,
        )
        .await;
    let body = r.expect(200);
    assert_eq!(body["environment"], "prod");
    assert_eq!(body["revision"], 1);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["key"], "checkout");
    assert_eq!(results[0]["value"], true);
    assert_eq!(results[0]["variant"], "on");
    assert_eq!(results[0]["reason"], "TARGETING_MATCH");

    let r = app
        .post_json(
            path,
            &json!({"flag": "checkout", "context": {"email": "x@other.org"}}),
            &admin,
        )
        .await;
    assert_eq!(r.expect(200)["results"][0]["value"], false);

    // All flags, in key order.
    let r = app.post_json(path, &json!({"context": {}}), &admin).await;
    let results = r.expect(200)["results"].as_array().unwrap().clone();
    let keys: Vec<_> = results.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["checkout", "killed", "theme"]);
    assert_eq!(results[1]["reason"], "DISABLED");
    assert_eq!(results[2]["value"], "beta");
    assert_eq!(results[2]["reason"], "STATIC");
    assert_eq!(results[2]["metadata"]["team"], "web");
    // An empty body evaluates everything with an empty context.
    let r = app.post_json(path, &json!({}), &admin).await;
    assert_eq!(r.expect(200)["results"].as_array().unwrap().len(), 3);

    // An unknown flag is an evaluation error, not a failed request.
    let r = app
        .post_json(path, &json!({"flag": "ghost", "context": {}}), &admin)
        .await;
    assert_eq!(r.expect(200)["results"][0]["errorCode"], "FLAG_NOT_FOUND");

    // A change is seen by the next preview (the compiled set follows the revision).
    app.patch_json(
        &flag_path("prod", "theme"),
        &json!({"state": "DISABLED"}),
        &admin,
    )
    .await
    .expect(200);
    let r = app.post_json(path, &json!({"flag": "theme"}), &admin).await;
    assert_eq!(r.expect(200)["results"][0]["reason"], "DISABLED");
    assert_eq!(r.json["revision"], 2);

    assert_problem(
        &app.post_json(path, &json!({"context": [1]}), &admin).await,
        400,
    );
    assert_problem(
        &app.post_json(path, &json!({"flags": "x"}), &admin).await,
        400,
    );
    assert_problem(
        &app.post_json("/api/v1/environments/nope/evaluate", &json!({}), &admin)
            .await,
        404,
    );
});

// The preview follows the environment, not just its revision number: an environment deleted and
// created again starts again at revision 0.
both_backends!(
    evaluate_after_an_environment_is_recreated,
    |app: App| async move {
        let admin = app.admin.clone();
        let path = "/api/v1/environments/prod/evaluate";
        app.create_env("prod").await;
        app.create_flag("prod", "old-flag", &bool_flag()).await;
        let r = app.post_json(path, &json!({}), &admin).await;
        assert_eq!(r.expect(200)["results"][0]["key"], "old-flag");
        assert_eq!(r.json["revision"], 1);

        assert_eq!(
            app.delete("/api/v1/environments/prod?force=true", &admin)
                .await
                .status,
            204
        );
        app.create_env("prod").await;
        app.create_flag("prod", "new-flag", &bool_flag()).await;
        let r = app.post_json(path, &json!({}), &admin).await;
        assert_eq!(r.expect(200)["revision"], 1);
        let keys: Vec<_> = r.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["new-flag"], "a stale compiled set was served");
    }
);

// ------------------------------------------------------------------- audit ----

both_backends!(audit_query_filters_and_pages, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    app.create_env("dev").await;
    let (_, editor) = app.token("ci-bot", "editor", &[]).await;
    app.create_flag("prod", "checkout", &bool_flag()).await;
    app.put_json(&flag_path("prod", "search"), &bool_flag(), &editor)
        .await
        .expect(201);
    app.put_json(&flag_path("dev", "checkout"), &bool_flag(), &editor)
        .await
        .expect(201);
    app.patch_json(
        &flag_path("prod", "checkout"),
        &json!({"state": "DISABLED"}),
        &editor,
    )
    .await
    .expect(200);
    app.delete(&flag_path("prod", "search"), &admin).await;

    let all = app.get("/api/v1/audit?limit=1000", &admin).await;
    let all = all.expect(200)["items"].as_array().unwrap().clone();
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    // The harness's admin token (by "bootstrap"), 2 environments, 1 token, 5 flag writes.
    assert_eq!(all.len(), 9, "{all:#?}");
    assert_eq!(all[8]["actor"], "bootstrap");
    assert_eq!(all[8]["action"], "token.create");
    let newest = &all[0];
    assert_eq!(newest["action"], "flag.delete");
    assert_eq!(newest["actor"], "admin");
    assert_eq!(newest["environment"], "prod");
    assert_eq!(newest["target"], "search");
    assert!(newest["after"].is_null());
    assert_eq!(newest["before"], bool_flag());
    assert!(newest["request_id"].as_str().is_some_and(|s| !s.is_empty()));

    let query = |q: &'static str| {
        let app = app.clone();
        async move {
            let r = app
                .get(&format!("/api/v1/audit?limit=1000&{q}"), &app.admin)
                .await;
            r.expect(200)["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        query("environment=prod").await,
        [
            "flag.delete",
            "flag.state",
            "flag.create",
            "flag.create",
            "environment.create"
        ]
    );
    assert_eq!(
        query("environment=dev&flag=checkout").await,
        ["flag.create"]
    );
    assert_eq!(
        query("actor=ci-bot").await,
        ["flag.state", "flag.create", "flag.create"]
    );
    assert_eq!(
        query("actor=ci-bot&environment=prod&flag=checkout").await,
        ["flag.state"]
    );
    assert!(query("actor=nobody").await.is_empty());

    // since / until: inclusive bounds on the entry time.
    let times: Vec<String> = all
        .iter()
        .map(|e| e["at"].as_str().unwrap().to_string())
        .collect();
    let pivot = &times[3];
    let since = app
        .get(
            &format!("/api/v1/audit?limit=1000&since={}", enc(pivot)),
            &admin,
        )
        .await;
    let since: Vec<_> = since.expect(200)["items"].as_array().unwrap().clone();
    let expected = times.iter().filter(|t| parse(t) >= parse(pivot)).count();
    assert_eq!(since.len(), expected);
    assert!(
        since
            .iter()
            .all(|e| parse(e["at"].as_str().unwrap()) >= parse(pivot))
    );
    let until = app
        .get(
            &format!("/api/v1/audit?limit=1000&until={}", enc(pivot)),
            &admin,
        )
        .await;
    let until: Vec<_> = until.expect(200)["items"].as_array().unwrap().clone();
    let expected = times.iter().filter(|t| parse(t) <= parse(pivot)).count();
    assert_eq!(until.len(), expected);
    let window = app
        .get(
            &format!("/api/v1/audit?since={}&until={}", enc(pivot), enc(pivot)),
            &admin,
        )
        .await;
    assert!(
        window.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["at"] == *pivot)
    );
    let future = app
        .get("/api/v1/audit?since=2999-01-01T00:00:00Z", &admin)
        .await;
    assert_eq!(future.expect(200)["items"], json!([]));

    // Cursor pagination: pages of 3 cover the log once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/audit?limit=3".to_string(),
            Some(c) => format!("/api/v1/audit?limit=3&cursor={c}"),
        };
        let r = app.get(&path, &admin).await;
        let page = r.expect(200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // With a filter too.
    let r = app
        .get("/api/v1/audit?environment=prod&limit=2", &admin)
        .await;
    let page = r.expect(200);
    let c = page["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .get(
            &format!("/api/v1/audit?environment=prod&limit=2&cursor={c}"),
            &admin,
        )
        .await;
    assert_eq!(r.expect(200)["items"][0]["action"], "flag.create");

    for bad in [
        "since=yesterday",
        "until=2024-13-01",
        "cursor=abc",
        "limit=x",
    ] {
        assert_problem(&app.get(&format!("/api/v1/audit?{bad}"), &admin).await, 400);
    }

    fn parse(t: &str) -> time::OffsetDateTime {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
    }
    fn enc(t: &str) -> String {
        t.replace('+', "%2B").replace(':', "%3A")
    }
});

// ------------------------------------------------------------------ tokens ----

both_backends!(tokens_create_list_revoke, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let r = app
        .post_json(
            "/api/v1/tokens",
            &json!({"name": "deployer", "role": "editor", "environments": ["prod"]}),
            &admin,
        )
        .await;
    let created = r.expect(201).clone();
    let secret = created["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("vxl_"), "{secret}");
    assert_eq!(created["name"], "deployer");
    assert_eq!(created["role"], "editor");
    assert_eq!(created["environments"], json!(["prod"]));
    assert!(created["revoked_at"].is_null());
    assert!(created.get("hash").is_none());
    let id = created["id"].as_i64().unwrap();

    // The secret works, for its environment.
    app.put_json(&flag_path("prod", "checkout"), &bool_flag(), &secret)
        .await
        .expect(201);

    // Listed without secret or hash (uses are written by a background flush).
    app.state.auth.flush_uses().await;
    let list = app.get("/api/v1/tokens", &admin).await;
    let items = list.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "admin and deployer");
    assert_eq!(items[0]["name"], "deployer", "newest first");
    assert!(items[0]["last_used_at"].is_string(), "use is recorded");
    for t in &items {
        assert!(t.get("token").is_none() && t.get("hash").is_none(), "{t}");
    }
    let hash = vexil_control::auth::hash_secret(&secret);
    assert!(!list.text.contains(&secret) && !list.text.contains(&hash));

    // Revoke: 401 from the next request on.
    let r = app.delete(&format!("/api/v1/tokens/{id}"), &admin).await;
    assert!(r.expect(200)["revoked_at"].is_string());
    let r = app.get("/api/v1/environments", &secret).await;
    assert_eq!(
        assert_problem(&r, 401)["detail"],
        "invalid or revoked token"
    );
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let before = app.audit_ids().await;
    assert_problem(
        &app.delete(&format!("/api/v1/tokens/{id}"), &admin).await,
        409,
    );
    assert_problem(&app.delete("/api/v1/tokens/999999", &admin).await, 404);
    assert_problem(&app.delete("/api/v1/tokens/abc", &admin).await, 400);
    // Bad creations.
    for bad in [
        json!({"name": "x", "role": "root"}),
        json!({"name": " ", "role": "viewer"}),
        json!({"name": "s", "role": "sidecar"}),
        json!({"name": "s", "role": "viewer", "environments": ["nope"]}),
        json!({"role": "viewer"}),
    ] {
        assert_problem(&app.post_json("/api/v1/tokens", &bad, &admin).await, 400);
    }
    assert_eq!(
        before,
        app.audit_ids().await,
        "refused token writes are not audited"
    );
    let list = app.get("/api/v1/tokens", &admin).await;
    let items = list.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert!(
        items[0]["revoked_at"].is_string(),
        "revoked tokens stay listed"
    );

    // A sidecar token needs environments.
    let r = app
        .post_json(
            "/api/v1/tokens",
            &json!({"name": "sc", "role": "sidecar", "environments": ["prod"]}),
            &admin,
        )
        .await;
    assert_eq!(r.expect(201)["role"], "sidecar");
});

// Revocations of one token racing each other: exactly one wins (200), every other one answers
// `409` as problem+json, and the audit log has exactly one `token.revoke` for the token. Several
// rounds, so the race really happens on PostgreSQL (where both could read "not revoked" before
// either commits) and not only by luck.
both_backends!(concurrent_revocations_of_one_token, |app: App| async move {
    const ROUNDS: usize = 8;
    const RACERS: usize = 4;
    for round in 0..ROUNDS {
        let (id, secret) = app.token(&format!("raced-{round}"), "viewer", &[]).await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
        let mut racers = Vec::new();
        for _ in 0..RACERS {
            let (app, barrier) = (app.clone(), barrier.clone());
            racers.push(tokio::spawn(async move {
                barrier.wait().await;
                app.delete(&format!("/api/v1/tokens/{id}"), &app.admin)
                    .await
            }));
        }
        let mut statuses = Vec::new();
        for racer in racers {
            let r = racer.await.expect("racer");
            if r.status == 409 {
                let p = assert_problem(&r, 409);
                assert!(
                    p["detail"].as_str().unwrap().contains("already revoked"),
                    "{p}"
                );
            } else {
                assert!(r.expect(200)["revoked_at"].is_string());
            }
            statuses.push(r.status);
        }
        statuses.sort();
        let mut expected = vec![409; RACERS - 1];
        expected.insert(0, 200);
        assert_eq!(statuses, expected, "round {round}: one revocation wins");
        let audit = app
            .store
            .audit(&vexil_control::store::AuditQuery {
                target: Some(format!("raced-{round}")),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("audit");
        let revokes = audit
            .items
            .iter()
            .filter(|e| e.action == "token.revoke")
            .count();
        assert_eq!(revokes, 1, "round {round}: one audit row");
        assert_problem(&app.get("/api/v1/environments", &secret).await, 401);
    }
});

// ----------------------------------------------------------------- operations ----

both_backends!(health_ready_metrics, |app: App| async move {
    let admin = app.admin.clone();
    let r = app.req("GET", "/healthz").send().await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));
    let r = app.req("GET", "/readyz").send().await;
    assert_eq!((r.status, r.text.as_str()), (200, "ready"));
    app.create_env("prod").await;
    for _ in 0..3 {
        app.get("/api/v1/environments", &admin).await.expect(200);
    }
    app.get("/api/v1/environments/nope", &admin).await;
    app.req("GET", "/api/v1/environments").send().await;
    app.get("/no/such/route", &admin).await;

    let r = app.req("GET", "/metrics").send().await;
    assert_eq!(r.status, 200);
    let text = &r.text;
    let count = |route: &str, method: &str, status: u16| -> Option<u64> {
        let needle = format!(
            "vexil_control_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} "
        );
        let line = text.lines().find(|l| l.starts_with(&needle))?;
        line[needle.len()..].trim().parse().ok()
    };
    assert_eq!(count("/api/v1/environments", "GET", 200), Some(3), "{text}");
    assert_eq!(count("/api/v1/environments", "GET", 401), Some(1), "{text}");
    assert_eq!(
        count("/api/v1/environments", "POST", 201),
        Some(1),
        "{text}"
    );
    assert_eq!(
        count("/api/v1/environments/{env}", "GET", 404),
        Some(1),
        "{text}"
    );
    assert_eq!(count("unmatched", "GET", 404), Some(1), "{text}");
    assert!(
        text.contains("vexil_control_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("vexil_control_store_errors_total"), "{text}");
});

// With the store gone: readiness fails, liveness does not, API calls are 503 problem+json.
both_backends!(store_outage_is_503, |app: App| async move {
    app.create_env("prod").await;
    app.state.store.close().await;
    let r = app.req("GET", "/readyz").send().await;
    assert_problem(&r, 503);
    assert_eq!(app.req("GET", "/healthz").send().await.status, 200);
    assert_problem(&app.get("/api/v1/environments", &app.admin).await, 503);
    assert_problem(
        &app.put_json(&flag_path("prod", "x"), &bool_flag(), &app.admin)
            .await,
        503,
    );
    let metrics = app.req("GET", "/metrics").send().await.text;
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("vexil_control_store_errors_total "))
        .expect("store_errors_total");
    assert_ne!(errors, "vexil_control_store_errors_total 0", "{metrics}");
});

/// Every (method, path) the router serves, as the OpenAPI document must list them.
const SERVED: &[(&str, &str)] = &[
    ("get", "/api/v1/environments"),
    ("post", "/api/v1/environments"),
    ("get", "/api/v1/environments/{env}"),
    ("patch", "/api/v1/environments/{env}"),
    ("delete", "/api/v1/environments/{env}"),
    ("post", "/api/v1/environments/{env}/promote"),
    ("post", "/api/v1/environments/{env}/incarnation"),
    ("get", "/api/v1/environments/{env}/signing-keys"),
    ("post", "/api/v1/environments/{env}/signing-keys/rotate"),
    ("get", "/api/v1/environments/{env}/flags"),
    ("get", "/api/v1/environments/{env}/flags/{key}"),
    ("put", "/api/v1/environments/{env}/flags/{key}"),
    ("patch", "/api/v1/environments/{env}/flags/{key}"),
    ("delete", "/api/v1/environments/{env}/flags/{key}"),
    ("get", "/api/v1/environments/{env}/flags/{key}/schema"),
    ("put", "/api/v1/environments/{env}/flags/{key}/schema"),
    ("delete", "/api/v1/environments/{env}/flags/{key}/schema"),
    ("post", "/api/v1/environments/{env}/flags/{key}/validate"),
    ("get", "/api/v1/environments/{env}/flags/{key}/proposal"),
    ("put", "/api/v1/environments/{env}/flags/{key}/proposal"),
    ("delete", "/api/v1/environments/{env}/flags/{key}/proposal"),
    (
        "get",
        "/api/v1/environments/{env}/flags/{key}/proposal/comparison",
    ),
    (
        "post",
        "/api/v1/environments/{env}/flags/{key}/proposal/publish",
    ),
    ("get", "/api/v1/environments/{env}/flags/{key}/guard"),
    ("put", "/api/v1/environments/{env}/flags/{key}/guard"),
    ("delete", "/api/v1/environments/{env}/flags/{key}/guard"),
    ("post", "/api/v1/environments/{env}/flags/{key}/guard/reset"),
    ("get", "/api/v1/environments/{env}/guards"),
    ("get", "/api/v1/environments/{env}/usage"),
    ("get", "/api/v1/environments/{env}/usage/stale"),
    ("get", "/api/v1/environments/{env}/evaluators"),
    ("get", "/api/v1/environments/{env}/evaluators/{key}"),
    ("put", "/api/v1/environments/{env}/evaluators/{key}"),
    ("delete", "/api/v1/environments/{env}/evaluators/{key}"),
    ("get", "/api/v1/environments/{env}/flagset"),
    ("put", "/api/v1/environments/{env}/flagset"),
    ("get", "/api/v1/environments/{env}/bootstrap"),
    ("post", "/api/v1/environments/{env}/evaluate"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{id}"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/sidecars"),
    ("get", "/api/v1/whoami"),
    ("get", "/api/v1/environments/{env}/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

both_backends!(
    openapi_documents_exactly_the_served_routes,
    |app: App| async move {
        let r = app.req("GET", "/openapi.json").send().await;
        let doc = r.expect(200).clone();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let methods = [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ];
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in methods {
                if let Some(op) = item.get(m) {
                    documented.insert((m.to_string(), path.clone()));
                    assert!(
                        op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                        "{m} {path}"
                    );
                }
            }
        }
        let served: BTreeSet<(String, String)> = SERVED
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served but not documented: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "documented but not served: {unserved:?}"
        );
        // The document is the one the library exports.
        assert_eq!(
            doc,
            serde_json::to_value(vexil_control::api::openapi()).unwrap()
        );

        // And the list above really is what is served: each answers something other than "no such
        // route" / 405 (parameters filled with values that need not exist).
        for (m, p) in SERVED {
            let path = p
                .replace("{env}", "e")
                .replace("{key}", "k")
                .replace("{id}", "1");
            let mut req = app.req(&m.to_uppercase(), &path).token(&app.admin);
            if matches!(*m, "put" | "post" | "patch") {
                req = req.json(&json!({}));
            }
            let r = req.send().await;
            assert_ne!(r.status, 405, "{m} {p}: {}", r.text);
            assert!(
                !(r.status == 404 && r.text.contains("no such route")),
                "{m} {p} is not served"
            );
        }
    }
);

// ------------------------------------------------------------------ errors ----

both_backends!(errors_are_problem_json_everywhere, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let (_, viewer) = app.token("v", "viewer", &[]).await;
    let etag = app
        .create_flag("prod", "checkout", &bool_flag())
        .await
        .etag();
    let path = flag_path("prod", "checkout");

    // 401: none, malformed, unknown.
    let r = app.req("GET", "/api/v1/environments").send().await;
    assert!(
        assert_problem(&r, 401)["detail"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = app
        .req("GET", "/api/v1/environments")
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await;
    assert_problem(&r, 401);
    assert_problem(&app.get("/api/v1/environments", "vxl_nope").await, 401);
    assert_problem(
        &app.get("/api/v1/environments", "not-even-a-token").await,
        401,
    );
    // 403.
    assert_problem(&app.put_json(&path, &bool_flag(), &viewer).await, 403);
    // 404: route, environment, flag.
    assert_problem(&app.get("/api/v2/anything", &admin).await, 404);
    assert_problem(&app.get("/api/v1/environments/nope", &admin).await, 404);
    assert_problem(&app.get(&flag_path("prod", "nope"), &admin).await, 404);
    // 405: a served path with a method it does not have.
    let r = app
        .req("POST", "/api/v1/environments/prod/flags")
        .token(&admin)
        .send()
        .await;
    assert_problem(&r, 405);
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        r.headers
    );
    assert_problem(&app.req("PUT", "/healthz").send().await, 405);
    // 409.
    assert_problem(&app.delete("/api/v1/environments/prod", &admin).await, 409);
    // 412 and 428.
    assert_problem(
        &app.put_json_if(&path, &bool_flag(), &admin, "\"99\"").await,
        412,
    );
    assert_problem(&app.put_json(&path, &bool_flag(), &admin).await, 428);
    // 413.
    let huge = format!("{{\"x\": \"{}\"}}", "z".repeat(2 << 20));
    let r = app
        .req("PUT", &path)
        .token(&admin)
        .header("if-match", &etag)
        .raw(Some("application/json"), huge.into_bytes())
        .send()
        .await;
    assert_problem(&r, 413);
    // 415: wrong or missing content type.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = app
            .req("PUT", &path)
            .token(&admin)
            .header("if-match", &etag)
            .raw(ct, bool_flag().to_string().into_bytes())
            .send()
            .await;
        assert_problem(&r, 415);
    }
    // ...while `application/json; charset=utf-8` and `+json` types are JSON.
    let r = app
        .req("PUT", &flag_path("prod", "charset"))
        .token(&admin)
        .raw(
            Some("application/json; charset=utf-8"),
            bool_flag().to_string().into_bytes(),
        )
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // 400: body syntax, path and query parameters.
    let r = app
        .req("POST", "/api/v1/environments")
        .token(&admin)
        .raw(Some("application/json"), b"{not json".to_vec())
        .send()
        .await;
    assert_problem(&r, 400);
    assert_problem(
        &app.delete("/api/v1/tokens/not-a-number", &admin).await,
        400,
    );
    assert_problem(
        &app.get("/api/v1/environments/prod/flags?limit=many", &admin)
            .await,
        400,
    );
    assert_problem(
        &app.delete("/api/v1/environments/prod?force=perhaps", &admin)
            .await,
        400,
    );
    // The request id comes back, and is the one recorded.
    let r = app
        .req("PATCH", &path)
        .token(&admin)
        .header("x-request-id", "req-12345")
        .json(&json!({"state": "DISABLED"}))
        .send()
        .await;
    assert_eq!(r.header("x-request-id"), Some("req-12345"));
    let audit = app.get("/api/v1/audit?limit=1", &admin).await;
    assert_eq!(audit.json["items"][0]["request_id"], "req-12345");
    let r = app.req("GET", "/healthz").send().await;
    assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()));
});

/// Who sends a request of [`failing_writes`].
#[derive(Clone, Copy)]
enum Who {
    Admin,
    Viewer,
}

/// A write that must fail with `status`.
struct Failing {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    if_match: Option<&'static str>,
    who: Who,
    status: u16,
}

const BAD_FLAG: &str = r#"{"state":"ENABLED","variants":{},"defaultVariant":"x"}"#;
const GOOD_FLAG: &str = r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}"#;

#[rustfmt::skip]
fn failing_writes() -> Vec<Failing> {
    use Who::*;
    let w = |method, path, body, if_match, who, status| Failing { method, path, body, if_match, who, status };
    vec![
        w("PUT",    "/api/v1/environments/prod/flags/new",      Some(BAD_FLAG),                     None,          Admin,  400),
        w("PUT",    "/api/v1/environments/prod/flags/Bad",      Some(GOOD_FLAG),                    None,          Admin,  400),
        w("PUT",    "/api/v1/environments/prod/flags/checkout", Some(GOOD_FLAG),                    None,          Admin,  428),
        w("PUT",    "/api/v1/environments/prod/flags/checkout", Some(GOOD_FLAG),                    Some("\"5\""), Admin,  412),
        w("PUT",    "/api/v1/environments/prod/flags/new",      Some(GOOD_FLAG),                    None,          Viewer, 403),
        w("PUT",    "/api/v1/environments/prod/flags/new",      Some("{\"state\":"),                None,          Admin,  400),
        w("PATCH",  "/api/v1/environments/prod/flags/checkout", Some(r#"{"state":"x"}"#),           None,          Admin,  400),
        w("PATCH",  "/api/v1/environments/prod/flags/ghost",    Some(r#"{"state":"DISABLED"}"#),    None,          Admin,  404),
        w("DELETE", "/api/v1/environments/prod/flags/ghost",    None,                               None,          Admin,  404),
        w("DELETE", "/api/v1/environments/prod/flags/checkout", None,                               Some("\"5\""), Admin,  412),
        w("DELETE", "/api/v1/environments/prod/flags/checkout", None,                               None,          Viewer, 403),
        w("PUT",    "/api/v1/environments/prod/evaluators/beta", Some(r#"{"==":[2,2]}"#),           None,          Admin,  428),
        w("PUT",    "/api/v1/environments/prod/evaluators/beta", Some(r#"{"nope":[2]}"#),           Some("\"1\""), Admin,  400),
        w("DELETE", "/api/v1/environments/prod/evaluators/beta", None,                              None,          Admin,  409),
        w("DELETE", "/api/v1/environments/prod/evaluators/ghost", None,                             None,          Admin,  404),
        w("PUT",    "/api/v1/environments/prod/flagset",        Some(r#"{"flags":{"a":{"state":"ENABLED","variants":{},"defaultVariant":"x"}}}"#), None, Admin, 400),
        w("PUT",    "/api/v1/environments/prod/flagset",        Some(r#"{"flags":{}}"#),            None,          Viewer, 403),
        w("POST",   "/api/v1/environments/prod/promote",        Some(r#"{"to":"ghost"}"#),          None,          Admin,  404),
        w("POST",   "/api/v1/environments/stage/promote",       Some(r#"{"to":"prod"}"#),           None,          Viewer, 403),
        w("DELETE", "/api/v1/environments/prod",                None,                               None,          Admin,  409),
        w("PATCH",  "/api/v1/environments/prod",                Some(r#"{"name":""}"#),             None,          Admin,  400),
        w("POST",   "/api/v1/environments",                     Some(r#"{"key":"prod","name":"x"}"#), None,        Admin,  409),
        w("POST",   "/api/v1/tokens",                           Some(r#"{"name":"x","role":"viewer"}"#), None,     Viewer, 403),
    ]
}

// A table of failing writes, each followed by the check that nothing moved.
both_backends!(failed_writes_leave_no_trace, |app: App| async move {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    app.create_env("stage").await;
    app.create_flag("prod", "checkout", &bool_flag()).await;
    let mut f = bool_flag();
    f["targeting"] = json!({"if": [{"$ref": "beta"}, "on", "off"]});
    app.put_json(
        "/api/v1/environments/prod/evaluators/beta",
        &json!({"==": [1, 1]}),
        &admin,
    )
    .await
    .expect(201);
    app.create_flag("prod", "uses-beta", &f).await;
    let (_, viewer) = app.token("viewer", "viewer", &[]).await;

    for case in failing_writes() {
        let before = app.snapshot("prod").await;
        let token = match case.who {
            Who::Admin => &admin,
            Who::Viewer => &viewer,
        };
        let mut req = app.req(case.method, case.path).token(token);
        if let Some(b) = case.body {
            req = req.raw(Some("application/json"), b.as_bytes().to_vec());
        }
        if let Some(m) = case.if_match {
            req = req.header("if-match", m);
        }
        let r = req.send().await;
        assert_problem(&r, case.status);
        let what = format!("{} {}", case.method, case.path);
        app.assert_unchanged(&before, &app.snapshot("prod").await, &what);
    }
});

// A JWT is not accepted unless a key is configured.
both_backends!(jwts_are_refused_without_a_key, |app: App| async move {
    let jwt = common_jwt("anything", json!({"sub": "x", "vexil_role": "admin"}));
    assert_problem(&app.get("/api/v1/environments", &jwt).await, 401);
});

fn common_jwt(secret: &str, claims: Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = b64.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let c = b64.encode(claims.to_string());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = ring::hmac::sign(&key, format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", b64.encode(sig.as_ref()))
}

both_backends!(
    stalled_clients_are_cut_off,
    options = Options {
        read_timeout_ms: Some(500),
        ..Options::default()
    },
    |app: App| async move {
        use std::time::{Duration, Instant};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base.trim_start_matches("http://").to_string();
        // Reads until the server closes the connection; returns what it sent.
        async fn until_closed(s: &mut tokio::net::TcpStream) -> String {
            let mut answer = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer));
            let _ = read.await.expect("the server closes a stalled connection");
            String::from_utf8_lossy(&answer).into_owned()
        }
        let connected = Instant::now();
        // Connects and says nothing.
        let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // Half a request line, then a stall.
        let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
        half.write_all(b"GET /api/v1/envir").await.unwrap();
        // A whole head, then 10 of the 100 body bytes it announced.
        let mut body = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/v1/environments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"key\": \"a",
            app.admin
        );
        body.write_all(head.as_bytes()).await.unwrap();

        for s in [&mut silent, &mut half] {
            let answer = until_closed(s).await;
            assert!(!answer.contains("200 OK"), "{answer}");
        }
        let took = connected.elapsed();
        assert!(took >= Duration::from_millis(450), "closed after {took:?}");
        let answer = until_closed(&mut body).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        // The server still serves everyone else.
        app.get("/api/v1/environments", &app.admin.clone())
            .await
            .expect(200);
    }
);

// ------------------------------------------------------ limits on every write ----

/// `app`'s database behind a second API server that enforces `config`'s limits (the first one keeps
/// the defaults). It serves until the test's runtime ends.
async fn with_config(app: &App, config: vexil_control::api::ApiConfig) -> App {
    use std::sync::Arc;
    use vexil_control::api::{AppState, router};
    let state = Arc::new(AppState::new(
        app.store.clone(),
        vexil_control::auth::Authenticator::new(app.store.clone(), None)
            .expect("no JWT keys to load"),
        config,
        vexil_control::metrics::Metrics::new(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(vexil_http::serve_http1(
        listener,
        router(state.clone()),
        std::time::Duration::from_secs(30),
        std::future::pending(),
    ));
    App {
        base,
        state,
        ..app.clone()
    }
}

// `[limits] max_flags` holds for a single-flag PUT as it does for an import: the environment that
// would result is checked, not the one flag.
both_backends!(
    single_flag_put_past_max_flags_is_refused,
    |app: App| async move {
        let small = with_config(&app, config(|c| c.limits.max_flags = 2)).await;
        let admin = app.admin.clone();
        app.create_env("prod").await;
        small.create_flag("prod", "a", &bool_flag()).await;
        small.create_flag("prod", "b", &bool_flag()).await;
        let before = app.snapshot("prod").await;
        let r = small
            .put_json(&flag_path("prod", "c"), &bool_flag(), &admin)
            .await;
        let p = assert_problem(&r, 422);
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains("3 flags, more than the limit of 2"),
            "{p}"
        );
        assert_eq!(p["errors"][0]["path"], "flags", "{p}");
        let message = p["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("limit of 2"), "{p}");
        assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");
        small.assert_unchanged(&before, &small.snapshot("prod").await, "past max_flags");
        // At the limit, replacing and deleting still work; after a delete there is room again.
        small
            .put_json_if(&flag_path("prod", "a"), &bool_flag(), &admin, "\"1\"")
            .await
            .expect(200);
        assert_eq!(
            small.delete(&flag_path("prod", "b"), &admin).await.status,
            204
        );
        small.create_flag("prod", "c", &bool_flag()).await;
    }
);

fn config(edit: impl FnOnce(&mut vexil_control::api::ApiConfig)) -> vexil_control::api::ApiConfig {
    let mut config = vexil_control::api::ApiConfig::default();
    edit(&mut config);
    config
}

/// The problem's single error, with its path; asserts there is exactly one.
#[track_caller]
fn single_error(p: &Value) -> (&str, &str) {
    let errors = p["errors"].as_array().expect("errors[]");
    assert_eq!(errors.len(), 1, "{p}");
    (
        errors[0]["path"].as_str().unwrap(),
        errors[0]["message"].as_str().unwrap(),
    )
}

// The whole environment's JSON is limited to `[limits] max_environment_bytes` after every write, not
// only an import's body: what an environment holds always reaches a sidecar in one frame.
both_backends!(
    writes_past_the_document_size_limit_are_refused,
    |app: App| async move {
        let small = with_config(&app, config(|c| c.max_environment_bytes = 4096)).await;
        let admin = app.admin.clone();
        app.create_env("prod").await;
        let mut note = bool_flag();
        note["metadata"] = json!({"note": "n".repeat(1500)});
        small.create_flag("prod", "a", &note).await;
        small.create_flag("prod", "b", &note).await;
        let before = app.snapshot("prod").await;

        // A third flag would take the document past 4096 bytes.
        let r = small.put_json(&flag_path("prod", "c"), &note, &admin).await;
        let (path, message) = single_error(assert_problem(&r, 422));
        assert_eq!(path, "", "the whole document");
        assert!(
            message.contains("limit of 4096") && message.contains("max_environment_bytes"),
            "{message}"
        );
        // So would growing a flag, or an evaluator.
        let mut longer = note.clone();
        longer["metadata"]["note"] = json!("n".repeat(3000));
        let r = small
            .put_json_if(&flag_path("prod", "a"), &longer, &admin, "\"1\"")
            .await;
        assert!(
            single_error(assert_problem(&r, 422))
                .1
                .contains("limit of 4096")
        );
        let emails: Vec<String> = (0..200).map(|i| format!("user{i}@example.com")).collect();
        let r = small
            .put_json(
                "/api/v1/environments/prod/evaluators/staff",
                &json!({"in": [{"var": "email"}, emails]}),
                &admin,
            )
            .await;
        assert!(
            single_error(assert_problem(&r, 422))
                .1
                .contains("limit of 4096")
        );
        small.assert_unchanged(
            &before,
            &small.snapshot("prod").await,
            "past the size limit",
        );

        // A promotion (POST) that would bring a larger set: refused the same way.
        app.create_env("stage").await;
        for key in ["a", "b", "c", "d"] {
            app.create_flag("stage", key, &note).await;
        }
        let before = app.snapshot("prod").await;
        let r = small
            .post_json(
                "/api/v1/environments/stage/promote",
                &json!({"to": "prod"}),
                &admin,
            )
            .await;
        assert!(
            single_error(assert_problem(&r, 422))
                .1
                .contains("limit of 4096")
        );
        small.assert_unchanged(
            &before,
            &small.snapshot("prod").await,
            "promotion past the size limit",
        );

        // Within the limit, writes go on.
        let mut shorter = note.clone();
        shorter["metadata"]["note"] = json!("short");
        small
            .put_json_if(&flag_path("prod", "a"), &shorter, &admin, "\"1\"")
            .await
            .expect(200);
        small.create_flag("prod", "c", &note).await;
    }
);

// An environment already past a limit (written before the limit was lowered) still takes the writes
// that do not add to the problem: the kill switch, replacing, deleting. Only what would make it
// worse is refused, with the limit named.
both_backends!(
    lowered_limits_refuse_only_what_makes_it_worse,
    |app: App| async move {
        let admin = app.admin.clone();
        app.create_env("prod").await;
        let mut deep = bool_flag();
        deep["targeting"] =
            json!({"if": [{"and": [{"or": [{"==": [{"var": "a"}, 1]}]}]}, "on", "off"]});
        for key in ["a", "b", "c"] {
            app.create_flag("prod", key, &deep).await;
        }
        let strict = with_config(
            &app,
            config(|c| {
                c.limits.max_flags = 2;
                c.limits.max_depth = 3;
            }),
        )
        .await;

        let r = strict
            .patch_json(
                &flag_path("prod", "a"),
                &json!({"state": "DISABLED"}),
                &admin,
            )
            .await;
        assert_eq!(r.expect(200)["state"], "DISABLED");
        strict
            .put_json_if(&flag_path("prod", "b"), &bool_flag(), &admin, "\"1\"")
            .await
            .expect(200);
        let before = app.snapshot("prod").await;
        // A fourth flag: over max_flags and more than before.
        let r = strict
            .put_json(&flag_path("prod", "d"), &bool_flag(), &admin)
            .await;
        let (path, message) = single_error(assert_problem(&r, 422));
        assert_eq!(
            (path, message),
            (
                "flags",
                "4 flags, more than the limit of 2 ([limits] max_flags; it has 3 now)"
            )
        );
        // A new rule deeper than max_rule_depth.
        let r = strict
            .put_json_if(&flag_path("prod", "b"), &deep, &admin, "\"2\"")
            .await;
        let p = assert_problem(&r, 400);
        for e in p["errors"].as_array().expect("errors[]") {
            assert!(
                e["path"].as_str().unwrap().starts_with("flags.b.targeting"),
                "{p}"
            );
            assert_eq!(e["message"], "rule nested deeper than 3 levels", "{p}");
        }
        strict.assert_unchanged(&before, &strict.snapshot("prod").await, "worse");

        assert_eq!(
            strict.delete(&flag_path("prod", "c"), &admin).await.status,
            204
        );
        let r = strict
            .put_json(&flag_path("prod", "d"), &bool_flag(), &admin)
            .await;
        assert_eq!(
            single_error(assert_problem(&r, 422)).1,
            "3 flags, more than the limit of 2 ([limits] max_flags; it has 2 now)"
        );
        assert_eq!(
            strict.delete(&flag_path("prod", "a"), &admin).await.status,
            204
        );
        strict.create_flag("prod", "d", &bool_flag()).await;
    }
);

// Deleting an evaluator is checked on the environment it would leave: every flag and evaluator that
// would lose its rule is named, with the engine's errors at their paths; nothing is written.
both_backends!(
    evaluator_delete_that_breaks_a_flag_is_refused,
    |app: App| async move {
        let admin = app.admin.clone();
        app.create_env("prod").await;
        let base = "/api/v1/environments/prod/evaluators";
        app.put_json(
            &format!("{base}/beta"),
            &json!({"==": [{"var": "tier"}, "beta"]}),
            &admin,
        )
        .await
        .expect(201);
        app.put_json(
            &format!("{base}/beta-eu"),
            &json!({"and": [{"$ref": "beta"}, {"==": [{"var": "region"}, "eu"]}]}),
            &admin,
        )
        .await
        .expect(201);
        let mut uses = bool_flag();
        uses["targeting"] = json!({"if": [{"$ref": "beta"}, "on", "off"]});
        app.create_flag("prod", "checkout", &uses).await;
        let before = app.snapshot("prod").await;

        let r = app.delete(&format!("{base}/beta"), &admin).await;
        let p = assert_problem(&r, 409);
        assert_eq!(
            p["detail"],
            "evaluator \"beta\" is still referenced by: flag \"checkout\", evaluator \"beta-eu\"",
            "{p}"
        );
        let errors = p["errors"].as_array().expect("errors[]");
        let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert!(
            paths.iter().any(|p| p.starts_with("$evaluators.beta-eu")),
            "{paths:?}"
        );
        let at_flag = errors
            .iter()
            .find(|e| {
                e["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("flags.checkout.targeting.if[0]")
            })
            .unwrap_or_else(|| panic!("{p}"));
        assert!(
            at_flag["message"]
                .as_str()
                .unwrap()
                .contains("unknown evaluator \"beta\""),
            "{at_flag}"
        );
        app.assert_unchanged(
            &before,
            &app.snapshot("prod").await,
            "evaluator delete refused",
        );

        // A replacement that would make a $ref cycle is refused at its path too.
        let r = app
            .put_json_if(
                &format!("{base}/beta"),
                &json!({"$ref": "beta-eu"}),
                &admin,
                "\"1\"",
            )
            .await;
        let p = assert_problem(&r, 400);
        assert!(p["errors"].to_string().contains("$ref cycle"), "{p}");
        app.assert_unchanged(
            &before,
            &app.snapshot("prod").await,
            "evaluator cycle refused",
        );

        // Once nothing uses it, it goes.
        assert_eq!(
            app.delete(&flag_path("prod", "checkout"), &admin)
                .await
                .status,
            204
        );
        assert_eq!(
            app.delete(&format!("{base}/beta-eu"), &admin).await.status,
            204
        );
        assert_eq!(
            app.delete(&format!("{base}/beta"), &admin).await.status,
            204
        );
    }
);

both_backends!(
    an_import_never_reuses_an_evaluator_version,
    |app: App| async move {
        // An evaluator's ETag is its version: an import that restarted versions at 1 let a client
        // holding the first version's ETag overwrite content it had never seen (a lost update).
        let admin = app.admin.clone();
        app.create_env("prod").await;
        let path = "/api/v1/environments/prod/evaluators/beta";
        let first = json!({"in": [{"var": "email"}, ["ada@example.com"]]});
        let r = app.put_json(path, &first, &admin).await;
        assert_eq!(r.expect(201)["version"], 1);
        let stale = r.etag();

        let doc = json!({
            "flags": {},
            "$evaluators": {"beta": {"in": [{"var": "email"}, ["bob@example.com"]]}}
        });
        app.put_json("/api/v1/environments/prod/flagset", &doc, &admin)
            .await
            .expect(200);
        let got = app.get(path, &admin).await;
        assert_eq!(got.expect(200)["version"], 2, "the import is a new version");
        assert_ne!(got.etag(), stale);

        let r = app
            .req("PUT", path)
            .token(&admin)
            .header("if-match", &stale)
            .json(&json!({"in": [{"var": "email"}, ["eve@example.com"]]}))
            .send()
            .await;
        assert_problem(&r, 412);
    }
);

both_backends!(the_fleet_is_listed_in_pages, |app: App| async move {
    app.create_env("prod").await;
    app.create_env("dev").await;
    let now = vexil_control::model::now_millis();
    let row = |id: &str, env: &str, client: &str, since: i64| vexil_control::store::SessionRow {
        id: id.into(),
        replica: "r1".into(),
        session: 1,
        environment: env.into(),
        client_id: client.into(),
        version: "0.1.0".into(),
        address: "127.0.0.1:1".into(),
        sent_revision: 0,
        acked_revision: 0,
        digest: None,
        digest_revision: None,
        digest_matches: None,
        connected_since: since,
        last_seen: now,
        disconnected_at: Some(now),
    };
    // Two sessions of one client (it reconnected) and others around it, in every environment.
    app.store
        .record_sessions(&[
            row("s5", "prod", "pod-b", now - 10),
            row("s1", "prod", "pod-a", now - 30),
            row("s9", "prod", "pod-b", now - 20),
            row("s2", "dev", "pod-z", now - 5),
            row("s3", "prod", "pod-c", now - 1),
        ])
        .await
        .unwrap();
    let walk = |query: &'static str, token: String| {
        let app = app.clone();
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/api/v1/sidecars?limit=2{query}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page = app.get(&path, &token).await.expect(200).clone();
                let items = page["items"].as_array().unwrap();
                assert!(items.len() <= 2, "{page}");
                seen.extend(
                    items
                        .iter()
                        .map(|i| i["session_id"].as_str().unwrap().to_string()),
                );
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            seen
        }
    };
    // By environment, client, then connection time: every session once.
    assert_eq!(
        walk("", app.admin.clone()).await,
        ["s2", "s1", "s9", "s5", "s3"]
    );
    assert_eq!(
        walk("&environment=prod", app.admin.clone()).await,
        ["s1", "s9", "s5", "s3"]
    );
    // A token limited to prod never sees dev's, whatever the pages.
    let (_, prod_only) = app.token("p", "viewer", &["prod"]).await;
    assert_eq!(walk("", prod_only).await, ["s1", "s9", "s5", "s3"]);
    // A cursor the API did not give is refused; limits are clamped.
    app.get("/api/v1/sidecars?cursor=bm9wZQ", &app.admin)
        .await
        .expect(400);
    app.get("/api/v1/sidecars?cursor=%00", &app.admin)
        .await
        .expect(400);
    let all = app.get("/api/v1/sidecars?limit=100000", &app.admin).await;
    assert_eq!(all.expect(200)["items"].as_array().unwrap().len(), 5);
});
