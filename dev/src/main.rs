//! `vexil-dev`: a complete local Vexil in one process, for trying it out.
//!
//! - control on an embedded SQLite file, with development TLS generated (`.vexil-dev/`),
//! - the demo flags of `config/flags/demo.json` loaded into the environment `demo` (first run),
//! - one sidecar following `demo` over QUIC, on the default ports (15101, 8013–8016),
//! - a demo upstream on 127.0.0.1:9000 that echoes the headers it receives,
//!
//! then it prints the admin token and the lines to try. Ctrl-C stops everything.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::sync::watch;
use vexil_control::auth::{generate_secret, hash_secret};
use vexil_control::config::ControlConfig;
use vexil_control::model::Role;
use vexil_control::server::Control;
use vexil_control::store::{Actor, Store};

const ENVIRONMENT: &str = "demo";
const UPSTREAM: &str = "127.0.0.1:9000";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VEXIL_LOG")
                .unwrap_or_else(|_| "warn,vexil_dev=info".into()),
        )
        .init();
    let dir = PathBuf::from(std::env::var("VEXIL_DEV_DIR").unwrap_or_else(|_| ".vexil-dev".into()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(&dir))
}

async fn run(dir: &Path) -> anyhow::Result<()> {
    let database_url = format!("sqlite://{}", dir.join("vexil.db").display());
    let admin = admin_token(dir, &database_url).await?;
    let config = ControlConfig::resolve(
        vexil_settings::Layers::new()
            .flag("database-url", database_url)
            .flag("dev-tls", "true")
            .flag("tls-dir", dir.join("tls").display().to_string()),
    )?;
    let control = Control::open(&config).await?;
    let sidecar_token = prepare(&control.state.store).await?;
    let api = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding control's API to {}", config.admin_addr))?;
    let sync = control.bind_sync(&config)?;
    let (stop_tx, stop) = watch::channel(false);
    let stopped = move || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };

    let serving = control.clone();
    let api_stopped = stopped();
    let api_task = tokio::spawn(async move { serving.serve_api(api, api_stopped).await });
    let sync_task = tokio::spawn(sync.serve(std::time::Duration::from_secs(1)));
    let upstream = tokio::spawn(demo_upstream(stopped()));

    let mut sidecar_layers = vexil_settings::Layers::new()
        .flag("control", format!("quic://{}", config.sync_addr))
        .flag("environment", ENVIRONMENT)
        .flag("token", sidecar_token)
        .flag("ca-file", dir.join("tls/ca.pem").display().to_string())
        .flag("state-dir", dir.join("sidecar").display().to_string())
        .flag("client-id", "vexil-dev-sidecar")
        .flag("threads", "1");
    if Path::new("config/proxy.toml").exists() {
        sidecar_layers = sidecar_layers.flag("config", "config/proxy.toml");
    }
    let proxy_config = vexil_proxy::config::ProxyConfig::resolve(sidecar_layers)?;
    let bound = vexil_proxy::server::Bound::bind(&proxy_config).await?;
    let sidecar = tokio::spawn(vexil_proxy::server::run(proxy_config, bound, stopped()));

    print_tour(&admin, &config, dir);
    let _ = tokio::signal::ctrl_c().await;
    println!("\nstopping...");
    stop_tx.send_replace(true);
    control.shutdown();
    let _ = sidecar.await;
    let _ = api_task.await;
    let _ = sync_task.await;
    let _ = upstream.await;
    control.finish().await;
    control.state.store.close().await;
    Ok(())
}

/// The admin token of this dev directory: created on the first run, kept in `admin-token` (mode
/// 0600; a development convenience — production prints it once and keeps only its hash).
async fn admin_token(dir: &Path, database_url: &str) -> anyhow::Result<String> {
    let path = dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_string());
    }
    let token = generate_secret();
    let store = Store::connect(database_url).await?;
    store
        .create_token(None, "admin", Role::Admin, &[], &hash_secret(&token))
        .await?;
    store.close().await;
    write_private(&path, &token)?;
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The demo environment with the demo flags (first run), and a fresh sidecar token (older dev
/// sidecar tokens are revoked).
async fn prepare(store: &Store) -> anyhow::Result<String> {
    let actor = Actor {
        name: "vexil-dev".into(),
        request_id: None,
    };
    if store.get_environment(ENVIRONMENT).await.is_err() {
        store
            .create_environment(&actor, ENVIRONMENT, "Demo")
            .await?;
        let text = std::fs::read_to_string("config/flags/demo.json")
            .context("reading config/flags/demo.json (run vexil-dev from the repository root)")?;
        let doc = serde_json::from_str(&text)?;
        store
            .replace_flagset(
                &actor,
                ENVIRONMENT,
                doc,
                vexil_control::store::Precondition::None,
                Default::default(),
            )
            .await?;
    }
    for t in store.list_tokens().await? {
        if t.name == "vexil-dev-sidecar" && t.revoked_at.is_none() {
            store.revoke_token(&actor, t.id).await?;
        }
    }
    let secret = generate_secret();
    store
        .create_token(
            Some(&actor),
            "vexil-dev-sidecar",
            Role::Sidecar,
            &[ENVIRONMENT.to_string()],
            &hash_secret(&secret),
        )
        .await?;
    Ok(secret)
}

/// Echoes the request line and headers as JSON, so the injected flags show.
async fn demo_upstream(
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::http::{HeaderMap, Method, Uri};
    let app =
        axum::Router::new().fallback(|method: Method, uri: Uri, headers: HeaderMap| async move {
            let headers: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<binary>").into()))
                .collect();
            axum::Json(serde_json::json!({
                "method": method.as_str(), "uri": uri.to_string(), "headers": headers
            }))
        });
    let listener = tokio::net::TcpListener::bind(UPSTREAM)
        .await
        .with_context(|| format!("binding the demo upstream to {UPSTREAM}"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}

fn print_tour(admin: &str, config: &ControlConfig, dir: &Path) {
    let api = format!("http://{}", config.admin_addr);
    // Keep these lines in step with the README's tour: dev/tests/quickstart.rs checks that every
    // command of the README's quickstart section is printed here.
    println!(
        r#"
Vexil is running: control {api} (QUIC sync udp://{sync}), a sidecar on 127.0.0.1:15101 (proxy),
:8013 (gRPC), :8014 (admin), :8015 (flagd sync), :8016 (OFREP), and a demo upstream on {UPSTREAM}.

Admin token:  {admin}
  export ADMIN_TOKEN={admin}

1. A request through the sidecar: the upstream echoes the vexil-flags header it received
  curl -s -x http://127.0.0.1:15101 http://{UPSTREAM}/hello -H 'x-user-id: alice' | python3 -m json.tool

2. An OFREP lookup, and a gRPC one (flagd.evaluation.v2; needs grpcurl, run from the repository root)
  curl -s -w '\n' -X POST http://127.0.0.1:8016/ofrep/v1/evaluate/flags/new-checkout -d '{{"context":{{"targetingKey":"alice"}}}}'
  grpcurl -plaintext -import-path proto/proto -proto flagd/evaluation/v2/evaluation.proto \
       -d '{{"flagKey":"new-checkout","context":{{"targetingKey":"alice"}}}}' 127.0.0.1:8013 flagd.evaluation.v2.Service/ResolveBoolean

3. Change a flag through the API; the header changes right after
  curl -s -w '\n' -X PUT {api}/api/v1/environments/{ENVIRONMENT}/flags/new-checkout -H "authorization: Bearer $ADMIN_TOKEN" \
       -H 'if-match: *' -H 'content-type: application/json' \
       -d '{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"on"}}'
  curl -s -x http://127.0.0.1:15101 http://{UPSTREAM}/hello -H 'x-user-id: alice' | python3 -m json.tool | grep vexil-

4. Who is connected
  curl -s -w '\n' {api}/api/v1/sidecars -H "authorization: Bearer $ADMIN_TOKEN"

5. The kill switch with vexilctl (cargo build -p vexil-cli: target/debug/vexilctl), then a wait for every sidecar
  export VEXIL_URL={api} VEXIL_TOKEN=$ADMIN_TOKEN
  vexilctl flag disable {ENVIRONMENT} new-checkout
  vexilctl wait {ENVIRONMENT} --min-sidecars 1 --timeout-secs 10

6. The web console: open {api}/ui/ and sign in with the admin token
  curl -s -o /dev/null -w '%{{http_code}} %{{content_type}}\n' {api}/ui/

Ctrl-C stops everything (state stays in {dir}/; delete it to start over).
"#,
        sync = config.sync_addr,
        dir = dir.display(),
    );
}
