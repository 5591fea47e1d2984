//! The web console (`/ui/`): its files served with a strict policy, the two API calls it adds
//! (`GET /whoami`, `POST .../flags/{key}/validate`), and the console itself in a real browser
//! (Debian's Chromium driven by playwright-core, `console/console.mjs`) against a real control with
//! a real sidecar following the environment.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::{Value, json};
use vexil_testkit::proxy::ProxyCmd;

fn flag() -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}})
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_files_are_served_with_a_strict_policy_and_etags() {
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let base = server.app.base.clone();
    let http = no_redirects();

    for path in ["/", "/ui"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert!(r.status().is_redirection(), "{path}: {}", r.status());
        assert_eq!(r.headers()["location"], "/ui/", "{path}");
    }

    let r = http.get(format!("{base}/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    assert!(
        html.contains(r#"<script type="module" src="app.js">"#),
        "{html}"
    );
    assert!(
        !html.contains("<script>") && !html.contains("onclick="),
        "no inline script"
    );

    // Every module the pages import is served, as JavaScript.
    for file in [
        "app.js",
        "api.js",
        "dom.js",
        "views.js",
        "apiref.js",
        "jsonpos.js",
        "schemaform.js",
    ] {
        let r = http.get(format!("{base}/ui/{file}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(
            r.headers()["content-type"],
            "text/javascript; charset=utf-8",
            "{file}"
        );
        let etag = r.headers()["etag"].clone();
        let again = http
            .get(format!("{base}/ui/{file}"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{file}");
    }
    let css = http
        .get(format!("{base}/ui/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    // Nothing else: no directory listing, no way out of the embedded set.
    for path in [
        "/ui/nope.js",
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/ui.rs",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    server.stop().await;
}

both_backends!(
    whoami_tells_the_console_what_a_token_may_do,
    |app: App| async move {
        app.create_env("prod").await;
        app.create_env("dev").await;
        let r = app.get("/api/v1/whoami", &app.admin).await;
        assert_eq!(
            r.expect(200),
            &json!({"name": "admin", "role": "admin", "environments": null,
                "permissions": ["read", "write_flags", "admin"]})
        );
        let (_, editor) = app.token("ed", "editor", &["prod"]).await;
        assert_eq!(
            app.get("/api/v1/whoami", &editor).await.expect(200),
            &json!({"name": "ed", "role": "editor", "environments": ["prod"],
                "permissions": ["read", "write_flags"]})
        );
        let (_, viewer) = app.token("v", "viewer", &[]).await;
        assert_eq!(
            app.get("/api/v1/whoami", &viewer).await.expect(200)["permissions"],
            json!(["read"])
        );
        // A sidecar's token is for the sync protocol only.
        let (_, sidecar) = app.token("s", "sidecar", &["prod"]).await;
        app.get("/api/v1/whoami", &sidecar).await.expect(403);
        app.get("/api/v1/whoami", "vxl_wrong").await.expect(401);
    }
);

both_backends!(
    a_flag_is_validated_without_being_written,
    |app: App| async move {
        app.create_env("prod").await;
        let (_, viewer) = app.token("v", "viewer", &["prod"]).await;
        let revision = || async {
            app.get("/api/v1/environments/prod", &app.admin)
                .await
                .expect(200)["revision"]
                .clone()
        };
        let before = revision().await;
        let path = "/api/v1/environments/prod/flags/checkout/validate";

        // Valid: 200, and nothing written (no revision, no audit entry, no flag).
        let r = app.post_json(path, &flag(), &viewer).await;
        assert_eq!(r.expect(200), &json!({"valid": true}));
        assert_eq!(revision().await, before);
        app.get("/api/v1/environments/prod/flags/checkout", &app.admin)
            .await
            .expect(404);
        let audit = app.get("/api/v1/audit?flag=checkout", &app.admin).await;
        assert_eq!(audit.expect(200)["items"], json!([]));

        // Invalid: the problem the write would get, every error with its JSON path.
        let mut bad = flag();
        bad["targeting"]["if"][0] = json!({"frobnicate": [{"var": "plan"}]});
        bad["defaultVariant"] = json!("nope");
        let r = app.post_json(path, &bad, &viewer).await;
        let problem = r.expect(400);
        let paths: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert!(
            paths.contains(&"flags.checkout.defaultVariant"),
            "{problem}"
        );
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with("flags.checkout.targeting")),
            "{problem}"
        );
        let written = app
            .put_json("/api/v1/environments/prod/flags/checkout", &bad, &app.admin)
            .await;
        assert_eq!(written.expect(400)["errors"], problem["errors"]);

        // A reference to an evaluator the environment does not have.
        let mut dangling = flag();
        dangling["targeting"] = json!({"if": [{"$ref": "beta-users"}, "on", "off"]});
        app.post_json(path, &dangling, &viewer).await.expect(400);

        // A key that cannot be a header dictionary key, an environment that does not exist, a token
        // for another environment.
        app.post_json(
            "/api/v1/environments/prod/flags/Checkout/validate",
            &flag(),
            &viewer,
        )
        .await
        .expect(400);
        app.post_json(
            "/api/v1/environments/nope/flags/checkout/validate",
            &flag(),
            &app.admin,
        )
        .await
        .expect(404);
        // A flag with a JSON Schema: its variants are checked against it too, as a write would be.
        let schema = json!({"type": "object", "properties": {"page_size": {"type": "integer", "maximum": 100}}});
        app.put_json(
            "/api/v1/environments/prod/flags/page/schema",
            &schema,
            &app.admin,
        )
        .await
        .expect(200);
        let config = |size: i64| json!({"state": "ENABLED", "variants": {"small": {"page_size": size}}, "defaultVariant": "small"});
        let page = "/api/v1/environments/prod/flags/page/validate";
        app.post_json(page, &config(50), &viewer).await.expect(200);
        let r = app.post_json(page, &config(500), &viewer).await;
        let problem = r.expect(422);
        assert!(
            problem["errors"][0]["path"]
                .as_str()
                .unwrap()
                .starts_with("flags.page.variants.small.page_size"),
            "{problem}"
        );
        let written = app
            .put_json(
                "/api/v1/environments/prod/flags/page",
                &config(500),
                &app.admin,
            )
            .await;
        assert_eq!(written.expect(422)["errors"], problem["errors"]);

        app.create_env("dev").await;
        app.post_json(
            "/api/v1/environments/dev/flags/checkout/validate",
            &flag(),
            &viewer,
        )
        .await
        .expect(403);
        assert_eq!(revision().await, before);
    }
);

/// Sign in, a bad rule's error at its line, create a flag, flip it and watch the sidecar follow on
/// the fleet page, the audit entry, "try it", a viewer offered no write, a narrow screen and the
/// keyboard: `console/console.mjs` in headless Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let modules = vexil_testkit::tools::js_modules();
    if !modules.join("playwright-core").exists() {
        vexil_testkit::skip(format!(
            "{} has no playwright-core (run scripts/ensure-deps.sh)",
            modules.display()
        ));
        return;
    }
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        vexil_testkit::skip("chromium is not installed (run scripts/ensure-deps.sh)");
        return;
    };
    let Some(server) = start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    app.create_env("staging").await;
    let (_, viewer) = app.token("viewer", "viewer", &["prod"]).await;
    let (_, sidecar_token) = app.token("sidecars", "sidecar", &["prod"]).await;
    // A flag used as configuration, with a JSON Schema: the console edits it in a form.
    let schema = json!({"type": "object", "required": ["page_size", "theme", "beta"],
        "properties": {"page_size": {"type": "integer", "minimum": 1, "maximum": 100,
                                     "description": "Items per page"},
                       "theme": {"enum": ["light", "dark"]},
                       "beta": {"type": "boolean"}}});
    app.put_json(
        "/api/v1/environments/prod/flags/page-config/schema",
        &schema,
        &app.admin,
    )
    .await
    .expect(200);
    let config = json!({"state": "ENABLED", "defaultVariant": "small", "variants": {
        "small": {"page_size": 10, "theme": "light", "beta": false},
        "large": {"page_size": 50, "theme": "dark", "beta": true}}});
    app.put_json(
        "/api/v1/environments/prod/flags/page-config",
        &config,
        &app.admin,
    )
    .await
    .expect(201);
    let dir = TempDir::new("vexil-console");
    let mut sidecar = ProxyCmd::new()
        .args(["--control", &app.sync_url(), "--environment", "prod"])
        .args([
            "--client-id",
            "console-sidecar",
            "--usage-interval-secs",
            "1",
        ])
        .arg("--ca-file")
        .arg(app.ca_file())
        .arg("--state-dir")
        .arg(dir.sub("state"))
        .env("VEXIL_TOKEN", &sidecar_token)
        .grace_secs(1)
        .start();
    sidecar.wait_ready().await;

    let shots = dir.sub("screenshots");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/console.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .env("BASE", &app.base)
        .env("ADMIN_TOKEN", &app.admin)
        .env("VIEWER_TOKEN", &viewer)
        .env("JS_MODULES", &modules)
        .env("CHROMIUM", chromium)
        .env("SHOTS", &shots)
        .env("SIDECAR_ID", "console-sidecar")
        .env("OFREP", &sidecar.ofrep)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), out)
        .await
        .expect("the browser test finished within 3 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if !out.status.success() {
        // Keep the screenshots for whoever reads the failure.
        let kept = std::env::temp_dir().join(format!("vexil-console-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&kept);
        if let Ok(entries) = std::fs::read_dir(&shots) {
            for e in entries.flatten() {
                let _ = std::fs::copy(e.path(), kept.join(e.file_name()));
            }
        }
        panic!(
            "the browser test failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status,
            kept.display()
        );
    }
    assert!(stdout.contains("step: done"), "{stdout}");
    server.stop().await;
}
