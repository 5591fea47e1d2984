//! The real `vexil-control serve` and its configuration: every problem listed with its origin,
//! `--print-config` with the secrets redacted.

use std::process::{Command, Output};

fn control(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vexil-control"));
    cmd.arg("serve").args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("VEXIL_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("vexil-control runs")
}

#[test]
fn print_config_redacts_secrets_and_problems_are_listed_with_their_origin() {
    let out = control(
        &[
            "--database-url",
            "postgres://vexil:db-password@db:5432/vexil",
            "--print-config",
        ],
        &[
            ("VEXIL_JWT_HS256_SECRET", "jwt-secret"),
            ("VEXIL_ADMIN_TOKEN", "vxl_admin"),
            ("VEXIL_REDIS_URL", "redis://:redis-password@redis:6379"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in ["db-password", "jwt-secret", "vxl_admin", "redis-password"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    for expected in [
        "database_url = \"postgres://vexil:<redacted>@db:5432/vexil\"  # --database-url",
        "redis_url = \"redis://:<redacted>@redis:6379\"  # VEXIL_REDIS_URL",
        "hs256_secret = \"<redacted>\"  # VEXIL_JWT_HS256_SECRET",
        "admin_addr = \"127.0.0.1:8080\"  # default",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing in:\n{stdout}"
        );
    }

    let out = control(
        &["--admin-addr", "x", "--sync-poll-ms", "0"],
        &[("VEXIL_SIDECAR_CONTROL_URL", "http://control")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "--admin-addr: invalid socket address \"x\"",
        "--sync-poll-ms: must be at least 1",
        "VEXIL_SIDECAR_CONTROL_URL: \"http://control\" must be quic://HOST:PORT",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing in:\n{stderr}"
        );
    }
}

/// A `VEXIL_ADMIN_TOKEN` that could never authenticate stops the start, naming the variable and
/// why: shadowed by the JWT settings (no `vxl_` prefix, so it would be verified as a JWT), not our
/// tokens' form, or holding a space (a client cannot send it intact in an `Authorization` header).
/// The secret itself is never echoed.
#[test]
fn an_admin_token_that_could_never_authenticate_stops_the_start() {
    // The variable's value, other variables, the message expected.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (
            "admin-secret-from-a-vault",
            &[("VEXIL_JWT_HS256_SECRET", "jwt-secret")],
            "VEXIL_ADMIN_TOKEN: does not start with vxl_: with JWT keys configured ([jwt]), a \
             bearer token without that prefix is verified as a JWT",
        ),
        (
            "admin-secret-from-a-vault",
            &[],
            "VEXIL_ADMIN_TOKEN: does not start with vxl_: Vexil tokens are vxl_ followed by \
             base64url characters",
        ),
        (
            "vxl_admin secret",
            &[],
            "VEXIL_ADMIN_TOKEN: has a space at position 9: it would not survive an Authorization \
             header",
        ),
        (
            "vxl_admin+secret",
            &[],
            "VEXIL_ADMIN_TOKEN: has '+' at position 9",
        ),
    ];
    for (token, extra, expected) in cases {
        let mut env = vec![
            ("VEXIL_ADMIN_TOKEN", token),
            ("VEXIL_DATABASE_URL", "sqlite://never-opened.db"),
        ];
        env.extend_from_slice(extra);
        let out = control(&[], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{token:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{expected:?} missing in:\n{stderr}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let body = token.trim().trim_start_matches("vxl_");
        assert!(
            !stderr.contains(body) && !stdout.contains(body),
            "the secret is echoed: {stderr}{stdout}"
        );
    }
    // Our form passes the check (and --print-config shows it redacted).
    let out = control(
        &["--print-config"],
        &[
            ("VEXIL_ADMIN_TOKEN", "vxl_admin-secret_0123"),
            ("VEXIL_JWT_HS256_SECRET", "jwt-secret"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
