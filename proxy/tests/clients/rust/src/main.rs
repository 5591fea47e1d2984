//! The Rust OpenFeature flagd provider (`open-feature-flagd`) against the sidecar, in its three
//! modes: RPC (flagd.evaluation.v1), in-process (flagd.sync.v1) and REST (OFREP). Usage:
//! `vexil-rust-client-check FLAGS_FILE` with VEXIL_GRPC_PORT, VEXIL_FLAGD_SYNC_PORT and
//! VEXIL_OFREP_PORT set. Prints one line per check; exits 1 on the first failure.

use std::time::{Duration, Instant};

use open_feature::provider::FeatureProvider;
use open_feature::{EvaluationContext, EvaluationErrorCode};
use open_feature_flagd::{FlagdOptions, FlagdProvider, ResolverType};

fn port(var: &str) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{var} is not set"))
}

fn check(mode: &str, name: &str, ok: bool, seen: String) {
    println!("{} {mode:10} {name:10} {seen}", if ok { "ok  " } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
}

fn set_default(flags: &str, variant: &str) {
    let text = std::fs::read_to_string(flags).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["flags"]["bool-static"]["defaultVariant"] = variant.into();
    let tmp = format!("{flags}.tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(tmp, flags).unwrap();
}

async fn run(mode: &str, resolver: ResolverType, port: u16, flags: &str) {
    let provider = FlagdProvider::new(FlagdOptions {
        host: "127.0.0.1".into(),
        port,
        resolver_type: resolver,
        cache_settings: None,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{mode}: provider: {e:?}"));
    let empty = EvaluationContext::default();
    let eu = EvaluationContext::default()
        .with_targeting_key("user-1")
        .with_custom_field("country", "de")
        .with_custom_field("tier", "gold");

    let r = provider.resolve_bool_value("bool-static", &empty).await;
    check(mode, "boolean", matches!(&r, Ok(d) if d.value), format!("{r:?}"));
    let r = provider.resolve_string_value("string-targeted", &eu).await;
    check(mode, "string", matches!(&r, Ok(d) if d.value == "#00f"), format!("{r:?}"));
    let r = provider.resolve_int_value("int-flag", &eu).await;
    check(mode, "integer", matches!(&r, Ok(d) if d.value == 1000), format!("{r:?}"));
    let r = provider.resolve_float_value("float-flag", &empty).await;
    check(mode, "float", matches!(&r, Ok(d) if d.value == 1.0), format!("{r:?}"));
    let r = provider.resolve_struct_value("object-flag", &empty).await;
    let ok = matches!(&r, Ok(d) if format!("{:?}", d.value).contains("size"));
    check(mode, "object", ok, format!("{r:?}"));
    // A disabled flag is not a missing flag: no FLAG_NOT_FOUND. Except in-process, where this
    // provider's own engine (not the sidecar) evaluates the synced document and follows the older
    // flagd rule "disabled = not found".
    let r = provider.resolve_bool_value("disabled-flag", &empty).await;
    let ok = match &r {
        Err(e) if mode == "in-process" => e.code == EvaluationErrorCode::FlagNotFound,
        Ok(d) => format!("{:?}", d.reason).to_uppercase().contains("DISABLED"),
        Err(e) => e.code != EvaluationErrorCode::FlagNotFound,
    };
    check(mode, "disabled", ok, format!("{r:?}"));
    let r = provider.resolve_bool_value("no-such-flag", &empty).await;
    let ok = matches!(&r, Err(e) if e.code == EvaluationErrorCode::FlagNotFound);
    check(mode, "missing", ok, format!("{r:?}"));
    if mode != "rest" {
        let r = provider.resolve_int_value("string-targeted", &eu).await;
        // flagd answers a type mismatch with gRPC INVALID_ARGUMENT; this provider turns every
        // INVALID_ARGUMENT into INVALID_CONTEXT, keeping the message.
        let ok = matches!(&r, Err(e) if e.code == EvaluationErrorCode::TypeMismatch
            || (mode == "rpc" && e.code == EvaluationErrorCode::InvalidContext
                && e.message.as_deref().is_some_and(|m| m.contains("not of type"))));
        check(mode, "mismatch", ok, format!("{r:?}"));
    }
    // A change of the flags file reaches the client.
    set_default(flags, "off");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = provider.resolve_bool_value("bool-static", &empty).await;
        if matches!(&r, Ok(d) if !d.value) {
            check(mode, "changed", true, format!("{r:?}"));
            break;
        }
        if Instant::now() > deadline {
            check(mode, "changed", false, format!("{r:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set_default(flags, "on");
    tokio::time::sleep(Duration::from_millis(600)).await;
}

#[tokio::main]
async fn main() {
    let flags = std::env::args().nth(1).expect("usage: FLAGS_FILE");
    run("rpc", ResolverType::Rpc, port("VEXIL_GRPC_PORT"), &flags).await;
    run("in-process", ResolverType::InProcess, port("VEXIL_FLAGD_SYNC_PORT"), &flags).await;
    run("rest", ResolverType::Rest, port("VEXIL_OFREP_PORT"), &flags).await;
    println!("3 passed, 0 failed");
    std::process::exit(0);
}
