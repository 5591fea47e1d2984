//! `vexilctl` against the real `vexil-control` (and a real sidecar for `wait`): every command a
//! script relies on, its output and its exit code.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use vexil_testkit::TempDir;
use vexil_testkit::control::{ControlCmd, ControlProcess};
use vexil_testkit::proxy::ProxyCmd;

const ADMIN: &str = "vxl_cli_test_admin_token_0123456789abcdef";

/// Runs `vexilctl ARGS` against `control` with `token`: (exit code, stdout, stderr).
fn ctl(control: &ControlProcess, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vexilctl"));
    cmd.env_clear().env("VEXIL_URL", &control.base).args(args);
    if let Some(token) = token {
        cmd.env("VEXIL_TOKEN", token);
    }
    let out = cmd.output().expect("vexilctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `vexilctl ARGS` as admin; panics unless it exits 0; its output.
fn ok(control: &ControlProcess, args: &[&str]) -> String {
    let (code, out, err) = ctl(control, Some(ADMIN), args);
    assert_eq!(code, 0, "vexilctl {args:?}: {out}{err}");
    out
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    path.display().to_string()
}

/// Environment `env`'s revision, as `env get` shows it.
fn exported_revision(control: &ControlProcess, env: &str) -> i64 {
    json_of(&ok(control, &["env", "get", env, "-o", "json"]))["revision"]
        .as_i64()
        .expect("a revision")
}

fn checkout(default: &str) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": default})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_manages_flags_and_reads_exit_codes() {
    let dir = TempDir::new("vexilctl");
    let control = ControlCmd::new(&format!("sqlite://{}", dir.path().join("v.db").display()))
        .dev_tls(&dir.path().join("tls"))
        .args(["--webhook-addr", "off"])
        .env("VEXIL_ADMIN_TOKEN", ADMIN)
        .start()
        .await;
    let c = &control;

    ok(c, &["env", "create", "shop", "--name", "Shop"]);
    let envs = json_of(&ok(c, &["env", "list", "-o", "json"]));
    assert_eq!(envs["items"][0]["key"], "shop", "{envs}");
    assert!(ok(c, &["env", "list"]).contains("shop"));

    let file = write(dir.path(), "checkout.json", &checkout("off"));
    assert!(ok(c, &["flag", "set", "shop", "checkout", &file]).contains("created"));
    let file = write(dir.path(), "checkout.json", &checkout("on"));
    assert!(ok(c, &["flag", "set", "shop", "checkout", &file]).contains("replaced"));
    let flag = json_of(&ok(c, &["flag", "get", "shop", "checkout", "-o", "json"]));
    assert_eq!(flag["definition"]["defaultVariant"], "on", "{flag}");

    // A stale ETag: a concurrent change is never overwritten (exit 4).
    let (code, _, err) = ctl(
        c,
        Some(ADMIN),
        &[
            "flag",
            "set",
            "shop",
            "checkout",
            &file,
            "--if-match",
            "\"1\"",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("412"), "{err}");

    // The kill switch.
    ok(c, &["flag", "kill", "shop", "checkout"]);
    let flag = json_of(&ok(c, &["flag", "get", "shop", "checkout", "-o", "json"]));
    assert_eq!(flag["state"], "DISABLED");
    ok(c, &["flag", "enable", "shop", "checkout"]);
    assert!(ok(c, &["flag", "list", "shop"]).contains("ENABLED"));

    // A flag set: the difference first, nothing written on a dry run.
    let set = json!({"flags": {"checkout": checkout("on"), "banner": checkout("off")}});
    let set_file = write(dir.path(), "set.json", &set);
    let shown = ok(c, &["flagset", "apply", "shop", &set_file, "--dry-run"]);
    assert_eq!(shown.trim(), "+ flag banner", "{shown}");
    let (code, _, _) = ctl(c, Some(ADMIN), &["flag", "get", "shop", "banner"]);
    assert_eq!(code, 3, "not found before the apply");
    ok(c, &["flagset", "apply", "shop", &set_file]);
    ok(c, &["flag", "get", "shop", "banner"]);
    let exported = json_of(&ok(c, &["flagset", "export", "shop"]));
    assert!(exported["flags"]["banner"].is_object(), "{exported}");
    assert_eq!(
        ok(c, &["flagset", "apply", "shop", &set_file]).trim(),
        "no changes"
    );

    // A whole-set write sends If-Match from the read it diffed against: a change made after that
    // read is refused (412, exit 4), nothing is overwritten.
    let stale_etag = format!("\"{}\"", exported_revision(c, "shop") - 1);
    let other = json!({"flags": {"checkout": checkout("off")}});
    let other_file = write(dir.path(), "other.json", &other);
    let (code, _, err) = ctl(
        c,
        Some(ADMIN),
        &[
            "flagset",
            "apply",
            "shop",
            &other_file,
            "--if-match",
            &stale_etag,
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("changed since the difference") && err.contains("412"),
        "{err}"
    );
    let exported = json_of(&ok(c, &["flagset", "export", "shop"]));
    assert!(
        exported["flags"]["banner"].is_object(),
        "not overwritten: {exported}"
    );
    ok(c, &["env", "create", "stage"]);
    ok(c, &["flagset", "apply", "stage", &other_file]);
    let (code, _, err) = ctl(
        c,
        Some(ADMIN),
        &["promote", "stage", "shop", "--if-match", &stale_etag],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("shop changed since the difference"), "{err}");
    let shown = ok(c, &["promote", "stage", "shop"]);
    assert!(shown.contains("- flag banner"), "{shown}");
    let exported = json_of(&ok(c, &["flagset", "export", "shop"]));
    assert_eq!(exported, other, "promoted");
    ok(c, &["flagset", "apply", "shop", &set_file]);

    // The sidecar bootstrap file (`vexil-proxy --bootstrap-file`).
    let boot = dir.path().join("boot.json");
    ok(c, &["bootstrap", "shop", "-f", &boot.display().to_string()]);
    let header = std::fs::read_to_string(&boot).unwrap();
    let first: Value = serde_json::from_str(header.lines().next().unwrap()).unwrap();
    assert_eq!(first["format"], "vexil-snapshot/1", "{header}");

    // Tokens: the secret once; a viewer may read, not write (exit 5).
    let created = json_of(&ok(
        c,
        &[
            "token", "create", "ci", "--role", "viewer", "--env", "shop", "-o", "json",
        ],
    ));
    let viewer = created["token"].as_str().unwrap().to_string();
    let (code, _, _) = ctl(c, Some(&viewer), &["flag", "get", "shop", "banner"]);
    assert_eq!(code, 0);
    let (code, _, err) = ctl(c, Some(&viewer), &["flag", "kill", "shop", "banner"]);
    assert_eq!(code, 5, "{err}");
    let (code, _, err) = ctl(c, None, &["env", "list"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("VEXIL_TOKEN"), "{err}");
    let id = created["id"].to_string();
    ok(c, &["token", "revoke", &id]);
    let (code, _, _) = ctl(c, Some(&viewer), &["flag", "get", "shop", "banner"]);
    assert_eq!(code, 5, "a revoked token");

    // Bad input: the server's reasons, exit 6; the audit log has the writes.
    let bad = write(dir.path(), "bad.json", &json!({"state": "ON"}));
    let (code, _, err) = ctl(c, Some(ADMIN), &["flag", "set", "shop", "broken", &bad]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("state"), "{err}");
    let audit = ok(c, &["audit", "--env", "shop"]);
    assert!(audit.contains("flag.state"), "{audit}");

    // Unreachable control: exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_vexilctl"))
        .env_clear()
        .args([
            "--url",
            "http://127.0.0.1:9",
            "--token",
            ADMIN,
            "env",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // Signing keys: listed without secrets, rotated by an admin.
    let keys = json_of(&ok(c, &["env", "signing-keys", "shop", "-o", "json"]));
    let first = keys["keys"][0]["id"].as_str().unwrap().to_string();
    assert!(ok(c, &["env", "signing-keys", "shop"]).contains(&first));
    let rotated = ok(c, &["env", "rotate-signing-key", "shop"]);
    assert!(rotated.contains("signs with key"), "{rotated}");
    let keys = json_of(&ok(c, &["env", "signing-keys", "shop", "-o", "json"]));
    assert_eq!(keys["keys"][1]["id"], first.as_str(), "{keys}");
    assert!(!keys.to_string().contains("secret"), "{keys}");

    // Guards: armed on a flag's variants, listed, shown, refused with the field, removed.
    let armed = ok(
        c,
        &[
            "guard",
            "set",
            "shop",
            "checkout",
            "--rollout",
            "on",
            "--baseline",
            "off",
            "--threshold",
            "0.02",
            "--min-sample",
            "500",
            "--safe-variant",
            "off",
        ],
    );
    assert!(armed.contains("armed"), "{armed}");
    let list = ok(c, &["guard", "list", "shop"]);
    assert!(
        list.contains("checkout") && list.contains("armed"),
        "{list}"
    );
    let shown = json_of(&ok(c, &["guard", "show", "shop", "checkout", "-o", "json"]));
    assert_eq!(shown["guard"]["min_sample"], 500, "{shown}");
    let (code, _, err) = ctl(
        c,
        Some(ADMIN),
        &[
            "guard",
            "set",
            "shop",
            "checkout",
            "--rollout",
            "maybe",
            "--baseline",
            "off",
            "--threshold",
            "0.02",
            "--disable",
        ],
    );
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("rollout"), "{err}");
    ok(c, &["guard", "delete", "shop", "checkout"]);
    let (code, _, _) = ctl(c, Some(ADMIN), &["guard", "show", "shop", "checkout"]);
    assert_eq!(code, 3);

    // Completions for the shells.
    let out = ok(c, &["completions", "bash"]);
    assert!(out.contains("vexilctl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_are_set_compared_published_and_dropped() {
    let dir = TempDir::new("vexilctl-proposal");
    let control = ControlCmd::new(&format!("sqlite://{}", dir.path().join("v.db").display()))
        .dev_tls(&dir.path().join("tls"))
        .args(["--webhook-addr", "off"])
        .env("VEXIL_ADMIN_TOKEN", ADMIN)
        .start()
        .await;
    let c = &control;
    ok(c, &["env", "create", "shop"]);
    let file = write(dir.path(), "checkout.json", &checkout("off"));
    ok(c, &["flag", "set", "shop", "checkout", &file]);
    let rule = json!({"fractional": [{"var": "targetingKey"}, ["on", 30], ["off", 70]]});
    let rule = write(dir.path(), "rule.json", &rule);
    let set = ok(
        c,
        &["proposal", "set", "shop", "checkout", "--targeting", &rule],
    );
    assert!(set.contains("evaluated on 1% of its decisions"), "{set}");
    // Again: replaces it (the ETag read first), at another ratio.
    let args = ["proposal", "set", "shop", "checkout", "--targeting", &rule];
    ok(c, &[&args[..], &["--sample-ratio", "0.5"]].concat());
    let shown = json_of(&ok(
        c,
        &["proposal", "show", "shop", "checkout", "-o", "json"],
    ));
    assert_eq!(shown["sample_ratio"], 0.5, "{shown}");
    let compared = ok(
        c,
        &["proposal", "compare", "shop", "checkout", "--minutes", "5"],
    );
    assert!(
        compared.starts_with("no decision sampled in the last 5 minutes"),
        "{compared}"
    );
    let json = json_of(&ok(
        c,
        &["proposal", "compare", "shop", "checkout", "-o", "json"],
    ));
    assert_eq!(json["samples"], 0, "{json}");
    // Refusals and their exit codes.
    let renamed =
        json!({"state": "ENABLED", "variants": {"yes": true, "no": false}, "defaultVariant": "no"});
    let renamed = write(dir.path(), "renamed.json", &renamed);
    let (code, _, err) = ctl(
        c,
        Some(ADMIN),
        &[
            "proposal",
            "set",
            "shop",
            "checkout",
            "--definition",
            &renamed,
        ],
    );
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("flags.checkout.variants"), "{err}");
    let (code, _, _) = ctl(c, Some(ADMIN), &["proposal", "show", "shop", "nope"]);
    assert_eq!(code, 3);
    let (code, _, err) = ctl(
        c,
        Some(ADMIN),
        &[
            "proposal",
            "publish",
            "shop",
            "checkout",
            "--if-match",
            "\"1\"",
        ],
    );
    assert_eq!(code, 4, "{err}");
    // Published: the flag has the rule, the proposal is gone.
    let published = ok(c, &["proposal", "publish", "shop", "checkout"]);
    assert!(published.contains("published the proposal"), "{published}");
    let flag = json_of(&ok(c, &["flag", "get", "shop", "checkout", "-o", "json"]));
    assert!(
        flag["definition"]["targeting"]["fractional"].is_array(),
        "{flag}"
    );
    let (code, _, _) = ctl(c, Some(ADMIN), &["proposal", "show", "shop", "checkout"]);
    assert_eq!(code, 3);
    ok(
        c,
        &["proposal", "set", "shop", "checkout", "--targeting", &rule],
    );
    assert!(ok(c, &["proposal", "drop", "shop", "checkout"]).contains("dropped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_once_every_sidecar_holds_the_revision() {
    let dir = TempDir::new("vexilctl-wait");
    let control = ControlCmd::new(&format!("sqlite://{}", dir.path().join("v.db").display()))
        .dev_tls(&dir.path().join("tls"))
        .args(["--webhook-addr", "off"])
        .env("VEXIL_ADMIN_TOKEN", ADMIN)
        .start()
        .await;
    let c = &control;
    ok(c, &["env", "create", "shop"]);
    let file = write(dir.path(), "checkout.json", &checkout("on"));
    ok(c, &["flag", "set", "shop", "checkout", &file]);
    // No sidecar yet: exit 7 when the time is up.
    let (code, _, err) = ctl(c, Some(ADMIN), &["wait", "shop", "--timeout-secs", "1"]);
    assert_eq!(code, 7, "{err}");

    let token = json_of(&ok(
        c,
        &[
            "token", "create", "sc", "--role", "sidecar", "--env", "shop", "-o", "json",
        ],
    ))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sidecar = ProxyCmd::new()
        .args([
            "--control",
            &control.sync_url,
            "--environment",
            "shop",
            "--token",
            &token,
            "--usage-interval-secs",
            "1",
        ])
        .arg("--ca-file")
        .arg(dir.path().join("tls/ca.pem"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .start();
    sidecar.wait_ready().await;
    let file = write(dir.path(), "checkout.json", &checkout("off"));
    ok(c, &["flag", "set", "shop", "checkout", &file]);
    let out = ok(c, &["wait", "shop", "--timeout-secs", "30"]);
    assert!(
        out.contains("1 sidecar(s) of shop hold revision 2"),
        "{out}"
    );
    let listed = ok(c, &["sidecars", "--env", "shop"]);
    assert!(listed.contains("shop"), "{listed}");

    // Usage: three OFREP lookups on the sidecar reach control within its report interval (1 s)
    // and control's write interval (5 s).
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..3 {
        let r = http
            .post(format!(
                "{}/ofrep/v1/evaluate/flags/checkout",
                sidecar.ofrep
            ))
            .json(&json!({"context": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let shown = loop {
        let report = json_of(&ok(
            c,
            &["usage", "show", "shop", "--days", "1", "-o", "json"],
        ));
        if report["flags"][0]["evaluations"] == 3 {
            break report;
        }
        assert!(std::time::Instant::now() < deadline, "no usage: {report}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        shown["flags"][0]["variants"][0]["variant"], "off",
        "{shown}"
    );
    let table = ok(c, &["usage", "show", "shop"]);
    let line = table.lines().find(|l| l.starts_with("checkout")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells[..5],
        ["checkout", "false", "off", "3", "100.0%"],
        "{table}"
    );
    // `checkout` has no rule, so it is not "constant"; nothing is unused.
    let stale = ok(c, &["usage", "stale", "shop"]);
    assert!(!stale.contains("checkout"), "{stale}");
    let (code, _, err) = ctl(c, Some(ADMIN), &["usage", "show", "nope"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = ctl(c, Some(ADMIN), &["usage", "show", "shop", "--days", "0"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("days"), "{err}");
}
