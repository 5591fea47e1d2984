//! Authorization: every route × every kind of caller, scoped tokens, and JWT bearer tokens.
//!
//! The policy under test:
//! - **admin**: everything.
//! - **editor**: every read (audit log and sidecars included), evaluation previews, and writes to
//!   flags, evaluators, whole flag sets and promotions onto an environment; not the environments'
//!   own lifecycle (create, rename, delete) and not tokens.
//! - **viewer**: reads only, evaluation previews and the audit log included.
//! - **sidecar**: nothing on the REST API (it only syncs).
//! - **a token limited to some environments** (`environments: [...]`): only those. Any route about
//!   another environment is 403; listings across environments are filtered; the audit log needs
//!   `?environment=` one of its own; and actions that concern every environment (creating
//!   environments, managing tokens) are 403 even for an admin, or it could mint itself an unlimited
//!   token.
//! - **no token, an unknown token, a revoked token**: 401 on every `/api` route.
//! - `/healthz`, `/readyz`, `/metrics`, `/openapi.json`: open to anyone.

mod common;

use common::*;
use serde_json::{Value, json};

/// What a cell needs before its request (created as admin, with a name unique to the cell).
#[derive(Clone, Copy, Debug)]
enum Setup {
    Nothing,
    /// Flag `old-{i}` in `prod`.
    Flag,
    /// Evaluator `old-{i}` in `prod`.
    Evaluator,
    /// Environment `gone-{i}`.
    Environment,
    /// A viewer token; its id replaces `{token}`.
    Token,
}

/// The callers, in the order of the expectation columns.
const CALLERS: [&str; 9] = [
    "admin",
    "editor",
    "viewer",
    "sidecar",
    "admin@other",
    "editor@other",
    "no token",
    "bad token",
    "revoked",
];

struct Row {
    method: &'static str,
    /// `{i}`: unique per cell; `{token}`: the id made by [`Setup::Token`].
    path: &'static str,
    body: Option<&'static str>,
    setup: Setup,
    /// Expected status for each of [`CALLERS`].
    expect: [u16; 9],
}

const FLAG: &str =
    r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
const SET: &str =
    r#"{"flags":{"x":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}"#;
const OPEN: [u16; 9] = [200; 9];

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Setup::*;
    let row = |method, path, body, setup, expect| Row { method, path, body, setup, expect };
    vec![
        //                                                                                                      admin edit view side a@oth e@oth none  bad  revk
        row("GET",    "/api/v1/environments",                        None,                                   Nothing,     [200, 200, 200, 403, 200, 200, 401, 401, 401]),
        row("POST",   "/api/v1/environments",                        Some(r#"{"key":"new-{i}","name":"N"}"#), Nothing,     [201, 403, 403, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/environments/prod",                   None,                                   Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("PATCH",  "/api/v1/environments/prod",                   Some(r#"{"name":"Production"}"#),       Nothing,     [200, 403, 403, 403, 403, 403, 401, 401, 401]),
        row("DELETE", "/api/v1/environments/gone-{i}",               None,                                   Environment, [204, 403, 403, 403, 403, 403, 401, 401, 401]),
        row("POST",   "/api/v1/environments/prod/promote",           Some(r#"{"to":"stage"}"#),              Nothing,     [200, 200, 403, 403, 403, 403, 401, 401, 401]),
        row("POST",   "/api/v1/environments/prod/incarnation",       None,                                   Nothing,     [200, 403, 403, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/environments/prod/flags",             None,                                   Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/environments/prod/flags/shared",      None,                                   Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("PUT",    "/api/v1/environments/prod/flags/new-{i}",     Some(FLAG),                             Nothing,     [201, 201, 403, 403, 403, 403, 401, 401, 401]),
        row("PATCH",  "/api/v1/environments/prod/flags/shared",      Some(r#"{"state":"DISABLED"}"#),        Nothing,     [200, 200, 403, 403, 403, 403, 401, 401, 401]),
        row("DELETE", "/api/v1/environments/prod/flags/old-{i}",     None,                                   Flag,        [204, 204, 403, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/environments/prod/evaluators",        None,                                   Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/environments/prod/evaluators/seg",    None,                                   Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("PUT",    "/api/v1/environments/prod/evaluators/new-{i}", Some(r#"{"==":[1,1]}"#),               Nothing,     [201, 201, 403, 403, 403, 403, 401, 401, 401]),
        row("DELETE", "/api/v1/environments/prod/evaluators/old-{i}", None,                                  Evaluator,   [204, 204, 403, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/environments/prod/flagset",           None,                                   Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("PUT",    "/api/v1/environments/stage/flagset",          Some(SET),                              Nothing,     [200, 200, 403, 403, 403, 403, 401, 401, 401]),
        row("POST",   "/api/v1/environments/prod/evaluate",          Some(r#"{"context":{}}"#),              Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/audit?environment=prod",              None,                                   Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/audit",                               None,                                   Nothing,     [200, 200, 200, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/sidecars",                            None,                                   Nothing,     [200, 200, 200, 403, 200, 200, 401, 401, 401]),
        // The change stream: authorized before the upgrade is looked at (a plain GET is then 400).
        row("GET",    "/api/v1/environments/prod/events",            None,                                   Nothing,     [400, 400, 400, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/api/v1/tokens",                              None,                                   Nothing,     [200, 403, 403, 403, 403, 403, 401, 401, 401]),
        row("POST",   "/api/v1/tokens",                              Some(r#"{"name":"t-{i}","role":"viewer"}"#), Nothing, [201, 403, 403, 403, 403, 403, 401, 401, 401]),
        row("DELETE", "/api/v1/tokens/{token}",                      None,                                   Token,       [200, 403, 403, 403, 403, 403, 401, 401, 401]),
        row("GET",    "/healthz",                                    None,                                   Nothing,     OPEN),
        row("GET",    "/readyz",                                     None,                                   Nothing,     OPEN),
        row("GET",    "/metrics",                                    None,                                   Nothing,     OPEN),
        row("GET",    "/openapi.json",                               None,                                   Nothing,     OPEN),
    ]
}

both_backends!(authorization_matrix, |app: App| async move {
    let admin = app.admin.clone();
    for env in ["prod", "stage", "other"] {
        app.create_env(env).await;
    }
    app.create_flag("prod", "shared", &bool_flag()).await;
    app.put_json(
        "/api/v1/environments/prod/evaluators/seg",
        &json!({"==": [1, 1]}),
        &admin,
    )
    .await
    .expect(201);
    let (_, editor) = app.token("editor", "editor", &[]).await;
    let (_, viewer) = app.token("viewer", "viewer", &[]).await;
    let (_, sidecar) = app.token("sidecar", "sidecar", &["prod"]).await;
    let (_, admin_other) = app.token("admin-other", "admin", &["other"]).await;
    let (_, editor_other) = app.token("editor-other", "editor", &["other"]).await;
    let (revoked_id, revoked) = app.token("revoked", "editor", &[]).await;
    app.delete(&format!("/api/v1/tokens/{revoked_id}"), &admin)
        .await
        .expect(200);
    let tokens: [Option<String>; 9] = [
        Some(admin.clone()),
        Some(editor),
        Some(viewer),
        Some(sidecar),
        Some(admin_other),
        Some(editor_other),
        None,
        Some("vxl_not-a-token-we-issued".into()),
        Some(revoked),
    ];

    let mut failures = Vec::new();
    let mut i = 0;
    for row in rows() {
        for (col, token) in tokens.iter().enumerate() {
            i += 1;
            let mut path = row.path.replace("{i}", &i.to_string());
            match row.setup {
                Setup::Nothing => {}
                Setup::Flag => {
                    app.create_flag("prod", &format!("old-{i}"), &bool_flag())
                        .await;
                }
                Setup::Evaluator => {
                    app.put_json(
                        &format!("/api/v1/environments/prod/evaluators/old-{i}"),
                        &json!({"==": [1, 1]}),
                        &admin,
                    )
                    .await
                    .expect(201);
                }
                Setup::Environment => {
                    app.create_env(&format!("gone-{i}")).await;
                }
                Setup::Token => {
                    let (id, _) = app.token(&format!("victim-{i}"), "viewer", &[]).await;
                    path = path.replace("{token}", &id.to_string());
                }
            }
            let before = (app.snapshot("prod").await, app.snapshot("stage").await);
            let mut req = app.req(row.method, &path);
            if let Some(t) = token {
                req = req.token(t);
            }
            if let Some(body) = row.body {
                let body: Value =
                    serde_json::from_str(&body.replace("{i}", &i.to_string())).expect("table body");
                req = req.json(&body);
            }
            let r = req.send().await;
            let expected = row.expect[col];
            if r.status != expected {
                failures.push(format!(
                    "{} {} as {}: expected {expected}, got {} {}",
                    row.method, path, CALLERS[col], r.status, r.text
                ));
                continue;
            }
            if expected >= 400 {
                assert_problem(&r, expected);
                // A refused caller changed nothing.
                let after = (app.snapshot("prod").await, app.snapshot("stage").await);
                let what = format!("{} {} as {}", row.method, path, CALLERS[col]);
                app.assert_unchanged(&before.0, &after.0, &what);
                app.assert_unchanged(&before.1, &after.1, &what);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization mismatches:\n{}",
        failures.join("\n")
    );
});

both_backends!(
    scoped_tokens_only_reach_their_environments,
    |app: App| async move {
        for env in ["prod", "other", "third"] {
            app.create_env(env).await;
        }
        app.create_flag("prod", "p", &bool_flag()).await;
        let (_, editor) = app
            .token("scoped-editor", "editor", &["other", "third"])
            .await;
        let (_, viewer) = app.token("scoped-viewer", "viewer", &["other"]).await;

        // Listings are filtered to the token's environments.
        let keys = |r: &Resp| -> Vec<String> {
            r.json["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["key"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            keys(&app.get("/api/v1/environments", &editor).await),
            ["other", "third"]
        );
        assert_eq!(
            keys(&app.get("/api/v1/environments", &viewer).await),
            ["other"]
        );

        // Its own environments work as for an unscoped token of the same role.
        app.put_json(&flag_path("other", "o"), &bool_flag(), &editor)
            .await
            .expect(201);
        app.put_json(&flag_path("third", "t"), &bool_flag(), &editor)
            .await
            .expect(201);
        app.get(&flag_path("other", "o"), &viewer).await.expect(200);
        app.post_json("/api/v1/environments/other/evaluate", &json!({}), &viewer)
            .await
            .expect(200);
        assert_problem(
            &app.put_json(&flag_path("other", "v"), &bool_flag(), &viewer)
                .await,
            403,
        );
        // Promotion between two of its environments is fine; touching another one is not.
        app.post_json(
            "/api/v1/environments/other/promote",
            &json!({"to": "third"}),
            &editor,
        )
        .await
        .expect(200);
        for (from, to) in [("other", "prod"), ("prod", "other")] {
            let r = app
                .post_json(
                    &format!("/api/v1/environments/{from}/promote"),
                    &json!({"to": to}),
                    &editor,
                )
                .await;
            assert_problem(&r, 403);
        }
        // Nothing of prod is visible.
        assert_problem(&app.get(&flag_path("prod", "p"), &editor).await, 403);
        assert_problem(
            &app.get("/api/v1/environments/prod/flagset", &viewer).await,
            403,
        );
        // The audit log: only for its environments, named.
        let r = app.get("/api/v1/audit?environment=other", &viewer).await;
        let items = r.expect(200)["items"].as_array().unwrap().clone();
        assert!(!items.is_empty());
        assert!(items.iter().all(|e| e["environment"] == "other"));
        let r = app.get("/api/v1/audit", &viewer).await;
        assert!(
            assert_problem(&r, 403)["detail"]
                .as_str()
                .unwrap()
                .contains("environment=")
        );
        assert_problem(
            &app.get("/api/v1/audit?environment=prod", &viewer).await,
            403,
        );
        // A scoped admin cannot mint itself an unlimited token.
        let (_, scoped_admin) = app.token("scoped-admin", "admin", &["other"]).await;
        let r = app
            .post_json(
                "/api/v1/tokens",
                &json!({"name": "escape", "role": "admin"}),
                &scoped_admin,
            )
            .await;
        assert_problem(&r, 403);
        // ...but manages its own environment.
        app.patch_json(
            "/api/v1/environments/other",
            &json!({"name": "Other"}),
            &scoped_admin,
        )
        .await
        .expect(200);
    }
);

// ---------------------------------------------------------------------- JWT ----

const JWT_SECRET: &str = "jwt-test-shared-secret";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 JWT of `claims` signed with `secret`.
fn jwt(secret: &str, claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", b64(sig.as_ref()))
}

both_backends!(
    jwt_bearer_tokens,
    options = Options {
        jwt_secret: Some(JWT_SECRET.into()),
        ..Options::default()
    },
    |app: App| async move {
        app.create_env("prod").await;
        app.create_env("other").await;
        let claims = |role: &str| json!({"sub": "ada", "vexil_role": role, "exp": now() + 300});

        // Accepted, with the role of the claim.
        let editor = jwt(JWT_SECRET, &claims("editor"));
        let r = app
            .put_json(&flag_path("prod", "checkout"), &bool_flag(), &editor)
            .await;
        r.expect(201);
        let audit = app.get("/api/v1/audit?limit=1", &app.admin).await;
        assert_eq!(audit.json["items"][0]["actor"], "jwt:ada");
        assert_problem(&app.get("/api/v1/tokens", &editor).await, 403);
        let viewer = jwt(JWT_SECRET, &claims("viewer"));
        app.get(&flag_path("prod", "checkout"), &viewer)
            .await
            .expect(200);
        assert_problem(
            &app.delete(&flag_path("prod", "checkout"), &viewer).await,
            403,
        );
        let admin = jwt(JWT_SECRET, &claims("admin"));
        app.get("/api/v1/tokens", &admin).await.expect(200);
        let sidecar = jwt(JWT_SECRET, &claims("sidecar"));
        assert_problem(&app.get("/api/v1/environments/prod", &sidecar).await, 403);
        // The environments claim limits it.
        let scoped = jwt(
            JWT_SECRET,
            &json!({"sub": "bob", "vexil_role": "editor", "vexil_environments": ["other"],
                    "exp": now() + 300}),
        );
        app.put_json(&flag_path("other", "x"), &bool_flag(), &scoped)
            .await
            .expect(201);
        assert_problem(
            &app.put_json(&flag_path("prod", "x"), &bool_flag(), &scoped)
                .await,
            403,
        );
        // A string is a list of one environment; an empty list grants none.
        let one = jwt(
            JWT_SECRET,
            &json!({"sub": "bob", "vexil_role": "editor", "vexil_environments": "other",
                    "exp": now() + 300}),
        );
        app.put_json(&flag_path("other", "y"), &bool_flag(), &one)
            .await
            .expect(201);
        assert_problem(
            &app.put_json(&flag_path("prod", "y"), &bool_flag(), &one)
                .await,
            403,
        );
        let no_envs = jwt(
            JWT_SECRET,
            &json!({"sub": "bob", "vexil_role": "admin", "vexil_environments": [],
                    "exp": now() + 300}),
        );
        for env in ["prod", "other"] {
            assert_problem(&app.get(&flag_path(env, "x"), &no_envs).await, 403);
        }
        assert_problem(&app.get("/api/v1/tokens", &no_envs).await, 403);
        // Our own tokens keep working next to JWTs.
        app.get("/api/v1/tokens", &app.admin).await.expect(200);

        // Refused: expired, not yet valid, badly signed, tampered, `alg: none`, no or unknown role.
        let before = app.snapshot("prod").await;
        // Expired beyond the 30 s leeway on `exp` (`[jwt] leeway_secs`).
        let expired = jwt(
            JWT_SECRET,
            &json!({"sub": "ada", "vexil_role": "admin", "exp": now() - 300}),
        );
        // `exp` is required, and must be an integer.
        let no_exp = jwt(JWT_SECRET, &json!({"sub": "ada", "vexil_role": "admin"}));
        let string_exp = jwt(
            JWT_SECRET,
            &json!({"sub": "ada", "vexil_role": "admin", "exp": (now() + 300).to_string()}),
        );
        // An environments claim of the wrong type is never read as "every environment".
        let bad_envs = jwt(
            JWT_SECRET,
            &json!({"sub": "ada", "vexil_role": "admin", "vexil_environments": {"prod": true},
                    "exp": now() + 300}),
        );
        let early = jwt(
            JWT_SECRET,
            &json!({"sub": "ada", "vexil_role": "admin", "nbf": now() + 300, "exp": now() + 600}),
        );
        let wrong_key = jwt("another-secret", &claims("admin"));
        let tampered = {
            let parts: Vec<&str> = editor.split('.').collect();
            let payload = b64(claims("admin").to_string().as_bytes());
            format!("{}.{payload}.{}", parts[0], parts[2])
        };
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims("admin").to_string().as_bytes())
        );
        let no_role = jwt(JWT_SECRET, &json!({"sub": "ada", "exp": now() + 300}));
        let bad_role = jwt(JWT_SECRET, &claims("root"));
        for (what, token) in [
            ("expired", &expired),
            ("no exp", &no_exp),
            ("string exp", &string_exp),
            ("environments not a list", &bad_envs),
            ("not yet valid", &early),
            ("wrong key", &wrong_key),
            ("tampered", &tampered),
            ("alg none", &none),
            ("no role", &no_role),
            ("unknown role", &bad_role),
        ] {
            let r = app
                .put_json(&flag_path("prod", "evil"), &bool_flag(), token)
                .await;
            assert_eq!(r.status, 401, "{what}: {}", r.text);
            assert_problem(&r, 401);
        }
        app.assert_unchanged(&before, &app.snapshot("prod").await, "refused JWTs");

        // The QUIC sync authenticates Subscribe tokens with the same verifier and rules.
        use vexil_control::sync::Refusal;
        let hub = &app.control.hub;
        let sidecar_jwt = |envs: Value| {
            jwt(
                JWT_SECRET,
                &json!({"sub": "sc", "vexil_role": "sidecar", "vexil_environments": envs,
                        "exp": now() + 300}),
            )
        };
        let p = hub.authorize(&sidecar_jwt(json!(["prod"])), "prod").await;
        assert_eq!(p.unwrap().name, "jwt:sc");
        assert!(
            hub.authorize(&sidecar_jwt(json!("prod")), "prod")
                .await
                .is_ok()
        );
        assert_eq!(
            hub.authorize(&sidecar_jwt(json!(["prod"])), "other").await,
            Err(Refusal::PermissionDenied)
        );
        assert_eq!(
            hub.authorize(&sidecar_jwt(json!([])), "prod").await,
            Err(Refusal::PermissionDenied)
        );
        for (what, token) in [
            ("expired", &expired),
            ("no exp", &no_exp),
            ("wrong key", &wrong_key),
            ("alg none", &none),
            ("environments not a list", &sidecar_jwt(json!(7))),
        ] {
            assert_eq!(
                hub.authorize(token, "prod").await.map(|p| p.name),
                Err(Refusal::Unauthenticated),
                "{what}"
            );
        }
    }
);

// -------------------------------------------------------- failed authentications ----

// A peer that fails to authenticate `burst` times is refused (`429`, `Retry-After`, problem+json)
// until it regains an attempt, even with a good token (its guesses are not checked at all);
// successful requests cost nothing; another peer (127.0.0.2) is not affected; the refusals are
// counted in `vexil_control_auth_rate_limited_total{listener="api"}`.
both_backends!(
    failed_authentications_are_limited_per_peer,
    options = Options {
        auth_failures: Some((5, std::time::Duration::from_secs(3))),
        ..Options::default()
    },
    |app: App| async move {
        let (_, viewer) = app.token("v", "viewer", &[]).await;
        let path = "/api/v1/environments";
        for _ in 0..20 {
            app.get(path, &viewer).await.expect(200);
        }
        // Requests without any token are not guesses: they cost nothing either.
        for _ in 0..10 {
            assert_problem(&app.req("GET", path).send().await, 401);
        }
        for i in 0..5 {
            let r = app.get(path, &format!("vxl_guess{i}")).await;
            assert_eq!(
                assert_problem(&r, 401)["detail"],
                "invalid or revoked token"
            );
        }
        let r = app.get(path, &viewer).await;
        let p = assert_problem(&r, 429);
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .starts_with("too many failed authentications from this address; retry in "),
            "{p}"
        );
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=3).contains(&retry), "{retry}");
        assert!(r.header("www-authenticate").is_none());
        assert_problem(&app.get(path, "vxl_guess-again").await, 429);

        // Another peer: its good token works, its bad one is a plain 401.
        let other = reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()
            .unwrap();
        let from_other = |token: String| {
            let other = other.clone();
            let url = format!("{}{path}", app.base);
            async move {
                other
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(from_other(viewer.clone()).await, 200);
        assert_eq!(from_other("vxl_guess".into()).await, 401);

        let metrics = app.req("GET", "/metrics").send().await.text;
        assert!(
            metrics.contains("vexil_control_auth_rate_limited_total{listener=\"api\"} 2"),
            "{metrics}"
        );
        // Once the peer has regained an attempt, its good token works again.
        tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
        app.get(path, &viewer).await.expect(200);
    }
);

// ------------------------------------------------------------------ incarnations ----

// An environment created again under the key of a deleted one is another environment (a new
// incarnation): a token limited to the deleted one does not get access to it; the token keeps
// its other environments.
both_backends!(
    a_scoped_token_does_not_outlive_its_environment,
    |app: App| async move {
        app.create_env("prod").await;
        app.create_env("dev").await;
        let (_, viewer) = app.token("pv", "viewer", &["prod", "dev"]).await;
        let (_, only_prod) = app.token("p", "editor", &["prod"]).await;
        let first = app.get("/api/v1/environments/prod", &viewer).await;
        let first = first.expect(200)["incarnation"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            first.len() == 32 && first.bytes().all(|b| b.is_ascii_hexdigit()),
            "{first}"
        );
        app.get(&flag_path("prod", "nope"), &only_prod)
            .await
            .expect(404);

        app.delete("/api/v1/environments/prod", &app.admin)
            .await
            .expect(204);
        let again = app.create_env("prod").await;
        let second = again["incarnation"].as_str().unwrap();
        assert_ne!(second, first, "a new incarnation");

        for token in [&viewer, &only_prod] {
            let r = app.get("/api/v1/environments/prod", token).await;
            assert_eq!(
                assert_problem(&r, 403)["detail"],
                "this token is not valid for environment \"prod\""
            );
            assert_problem(
                &app.put_json(&flag_path("prod", "x"), &bool_flag(), token)
                    .await,
                403,
            );
        }
        // Its other environment still works; the listing no longer shows prod.
        app.get("/api/v1/environments/dev", &viewer)
            .await
            .expect(200);
        let list = app.get("/api/v1/environments", &viewer).await;
        let keys: Vec<&str> = list.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["dev"]);
        // A token created now is valid for the new one.
        let (_, fresh) = app.token("p2", "viewer", &["prod"]).await;
        app.get("/api/v1/environments/prod", &fresh)
            .await
            .expect(200);
    }
);
