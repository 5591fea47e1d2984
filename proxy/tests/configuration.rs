//! The real `vexil-proxy` binary and its configuration: a bad file is refused with every problem,
//! each naming the setting, the file and line or the variable or flag; `--print-config` shows the
//! effective configuration with the token redacted.

use std::process::{Command, Output};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vexil-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn proxy(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vexil-proxy"));
    cmd.args(args);
    // Only what the test sets: no VEXIL_* variable of the environment running the tests.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("VEXIL_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("vexil-proxy runs")
}

#[test]
fn a_bad_configuration_is_refused_with_every_problem_and_its_origin() {
    let dir = temp_dir("bad-config");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "flags_file = \"flags.json\"\nthreads = 0\n\n[context]\n\
         targetingKey = [\"header:x-user\", \"hedaer:x-user\"]\n[headers]\nmax_byte = 1\n",
    )
    .unwrap();
    let out = proxy(
        &["--config", bad.to_str().unwrap(), "--outbound-addr", "x"],
        &[("VEXIL_GRPC_ADDR", "nowhere")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let b = bad.display();
    for expected in [
        "error: invalid configuration:".to_string(),
        format!("{b}:2 threads: must be at least 1"),
        format!("{b}:5 [context] targetingKey[1]: unknown source \"hedaer:x-user\""),
        format!("{b}:7 [headers] max_byte: unknown key (did you mean \"max_bytes\"?)"),
        "--outbound-addr: invalid socket address \"x\"".to_string(),
        "VEXIL_GRPC_ADDR: invalid socket address \"nowhere\"".to_string(),
    ] {
        assert!(
            stderr.contains(&expected),
            "{expected:?} missing in:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 6, "one line per problem:\n{stderr}");

    // A file that is not TOML: the line of the syntax error.
    std::fs::write(&bad, "threads = 1\ncontext = [\n").unwrap();
    let out = proxy(&["--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{b}:")), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn print_config_shows_origins_and_redacts_the_token() {
    let dir = temp_dir("print-config");
    let file = dir.join("proxy.toml");
    std::fs::write(
        &file,
        "control = \"quic://control:7443\"\nenvironment = \"prod\"\n[context]\n\
         targetingKey = [\"header:x-user-id\"]\n[context_options]\njwt_hs256_secret = \"jwt-shared\"\n",
    )
    .unwrap();
    let out = proxy(
        &[
            "--config",
            file.to_str().unwrap(),
            "--ca-file",
            "ca.pem",
            "--print-config",
        ],
        &[("VEXIL_TOKEN", "vxl_secret_token"), ("VEXIL_THREADS", "3")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("vxl_secret_token"), "{stdout}");
    assert!(!stdout.contains("jwt-shared"), "{stdout}");
    let f = file.display();
    for expected in [
        "# --token / VEXIL_TOKEN = \"<redacted>\"  # VEXIL_TOKEN (no file key)".to_string(),
        format!("control = \"quic://control:7443\"  # {f}:1"),
        "ca_file = \"ca.pem\"  # --ca-file".into(),
        "threads = 3  # VEXIL_THREADS".into(),
        "outbound_addr = \"127.0.0.1:15101\"  # default".into(),
        format!("jwt_hs256_secret = \"<redacted>\"  # {f}:6"),
    ] {
        assert!(
            stdout.contains(&expected),
            "{expected:?} missing in:\n{stdout}"
        );
    }
    // What it prints is a configuration file (without the secrets).
    let printed: toml::Table = toml::from_str(&stdout).expect("TOML");
    assert_eq!(printed["environment"].as_str(), Some("prod"));

    // With problems: listed, exit 1, nothing printed.
    let out = proxy(&["--print-config", "--threads", "0"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--threads: must be at least 1"), "{stderr}");
    assert!(stderr.contains("--control: no flag source"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
