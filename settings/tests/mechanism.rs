//! The mechanism on a small declaration: precedence, every problem at once with its origin,
//! records in lists, unknown keys, redaction, `--print-config` and the documentation tables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vexil_settings::{
    File, Layers, Millis, Resolver, Secret, SecretUrl, Settings, between, doc_table, ms, nonzero,
    print_config, resolve, update_docs,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

vexil_settings::settings! {
    /// A route.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Route {
        group "route" {
            /// Host to match.
            host: Option<String>, key "host";
            /// Flag keys.
            flags: Vec<String>, key "flags";
            /// Replace what is there.
            replace: bool, key "override";
        }
    }
    validate check_route;
}

fn check_route(route: &Route, r: &mut Resolver<'_>, prefix: &str) {
    if route.replace && route.flags.is_empty() {
        r.problem(prefix, "replace", "", "needs flags");
    }
}

vexil_settings::settings! {
    /// Limits.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Limits {
        group "limits" {
            /// Largest header.
            max_bytes: usize = 8192, key "max_bytes", check between(64, 65_536);
            /// Upstream timeout.
            timeout: Duration as Millis = ms(2000), key "timeout_ms", check nonzero;
        }
    }
}

vexil_settings::settings! {
    /// A test binary's settings.
    #[derive(Clone, Debug)]
    pub struct Demo {
        group "main" {
            /// The file.
            config: Option<PathBuf>, flag "config", env "DEMO_CONFIG";
            /// Where to listen. More words.
            listen: SocketAddr = addr("127.0.0.1:15001"),
                flag "listen", env "DEMO_LISTEN", key "listen";
            /// Workers.
            threads: usize = 4, flag "threads", env "DEMO_THREADS", key "threads",
                default_doc "the cores", check nonzero;
            /// Token.
            token: Option<Secret>, flag "token", env "DEMO_TOKEN";
            /// Database.
            database_url: SecretUrl = SecretUrl::from("sqlite://demo.db"),
                flag "database-url", env "DEMO_DATABASE_URL", key "database_url";
            /// Verbose.
            verbose: bool, flag "verbose", env "DEMO_VERBOSE", key "verbose";
            /// Names.
            names: Vec<String>, flag "name", env "DEMO_NAMES", key "names";
            /// Attributes and their sources.
            attributes: BTreeMap<String, Vec<u16>>, key "attributes";
            /// Routes.
            routes: Vec<Route>, flag "routes", env "DEMO_ROUTES", key "routes";
        }
        /// Limits.
        section limits in "limits": Limits;
    }
    validate check_demo;
}

fn check_demo(demo: &Demo, r: &mut Resolver<'_>, prefix: &str) {
    if demo.verbose && demo.threads > 8 {
        let threads = r.location(prefix, "threads");
        r.problem(
            prefix,
            "verbose",
            "",
            format!("not with more than 8 threads ({threads})"),
        );
    }
}

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn file(text: &str) -> File {
    File::parse("demo.toml", text).unwrap()
}

#[test]
fn defaults() {
    let d = resolve::<Demo>(Layers::new()).unwrap().settings;
    assert_eq!(d.listen, addr("127.0.0.1:15001"));
    assert_eq!(d.threads, 4);
    assert_eq!(d.limits.timeout, Duration::from_secs(2));
    assert_eq!(d.database_url.expose(), "sqlite://demo.db");
    let default = Demo::default();
    assert_eq!(default.limits, d.limits);
    assert!(default.routes.is_empty());
}

#[test]
fn flag_over_variable_over_file_over_default() {
    let f = "listen = \"127.0.0.1:1\"\nthreads = 2\nnames = [\"a\"]\n[limits]\nmax_bytes = 100\n";
    let layers = || Layers::new().file(file(f));
    let d = resolve::<Demo>(layers()).unwrap().settings;
    assert_eq!(
        (d.listen.port(), d.threads, d.limits.max_bytes),
        (1, 2, 100)
    );
    assert_eq!(d.names, vec!["a"]);

    let d = resolve::<Demo>(layers().env(env(&[
        ("DEMO_LISTEN", "127.0.0.1:2"),
        ("DEMO_THREADS", " "),
        ("DEMO_NAMES", "b, c"),
    ])))
    .unwrap();
    assert_eq!(
        d.settings.listen.port(),
        2,
        "the variable wins over the file"
    );
    assert_eq!(d.settings.threads, 2, "an empty variable counts as not set");
    assert_eq!(d.settings.names, vec!["b", "c"]);

    let d = resolve::<Demo>(
        layers()
            .env(env(&[("DEMO_LISTEN", "127.0.0.1:2")]))
            .flag("listen", "127.0.0.1:3")
            .flag("name", "x")
            .flag("name", "y")
            .flag("verbose", "true"),
    )
    .unwrap();
    assert_eq!(
        d.settings.listen.port(),
        3,
        "the flag wins over the variable"
    );
    assert_eq!(d.settings.names, vec!["x", "y"], "a repeated list flag");
    assert!(d.settings.verbose);
    let origin = |name: &str| {
        d.effective
            .iter()
            .find(|e| e.setting.name == name)
            .unwrap()
            .origin
            .to_string()
    };
    assert_eq!(origin("listen"), "--listen");
    assert_eq!(origin("threads"), "demo.toml:2");
    assert_eq!(origin("max_bytes"), "demo.toml:5");
    assert_eq!(origin("token"), "default");
}

#[test]
fn every_problem_at_once_each_with_its_origin() {
    let f = "listen = 5\nthreads = 0\nnmes = [\"a\"]\nattributes = { a = [1, \"x\"] }\n\
             [limits]\nmax_bytes = 10\ntimeout_ms = -1\nextra = 1\n\
             [[routes]]\nflags = [\"a\"]\nhots = \"h\"\n[[routes]]\noverride = true\n";
    let e = resolve::<Demo>(
        Layers::new()
            .file(file(f))
            .env(env(&[("DEMO_THREADS", "many"), ("DEMO_VERBOSE", "yes")]))
            .flag("listen", "x")
            .flag("threads", "1")
            .flag("threads", "2")
            .flag("nope", "1"),
    )
    .unwrap_err();
    let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "demo.toml:1 listen: expected a string, found the integer 5",
            "--listen: invalid socket address \"x\" (expected IP:PORT, like 127.0.0.1:8080)",
            "demo.toml:2 threads: must be at least 1",
            "DEMO_THREADS: expected a whole number, found \"many\"",
            "--threads: given 2 times; give it once",
            "DEMO_VERBOSE: expected true or false, found \"yes\"",
            "demo.toml:4 [attributes] a[1]: expected a whole number, found the string \"x\"",
            "demo.toml:11 routes[0].hots: unknown key (did you mean \"host\"?)",
            "demo.toml:13 routes[1].override: needs flags",
            "demo.toml:6 [limits] max_bytes: 10 is not between 64 and 65536",
            "demo.toml:7 [limits] timeout_ms: -1 is out of range (0 to 18446744073709551615)",
            "demo.toml:8 [limits] extra: unknown key",
            "demo.toml:3 nmes: unknown key (did you mean \"names\"?)",
            "--nope: no such flag",
        ]
    );
    assert_eq!(e.to_string(), lines.join("\n"), "one per line");
}

#[test]
fn combinations_name_where_each_value_came_from() {
    let e = resolve::<Demo>(
        Layers::new()
            .file(file("verbose = true\n"))
            .env(env(&[("DEMO_THREADS", "9")])),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "demo.toml:1 verbose: not with more than 8 threads (DEMO_THREADS)"
    );
    let d = Demo {
        verbose: true,
        threads: 9,
        ..Demo::default()
    };
    assert_eq!(
        d.validate().unwrap_err().to_string(),
        "verbose: not with more than 8 threads (threads)"
    );
}

#[test]
fn lists_of_records_from_the_file_or_json() {
    let d = resolve::<Demo>(Layers::new().file(file("[[routes]]\nhost = \"a\"\n")).flag(
        "routes",
        r#"[{"host": "b", "flags": ["x"], "override": true}]"#,
    ))
    .unwrap()
    .settings;
    assert_eq!(
        d.routes,
        vec![Route {
            host: Some("b".into()),
            flags: vec!["x".into()],
            replace: true
        }]
    );
    let e = resolve::<Demo>(Layers::new().env(env(&[("DEMO_ROUTES", r#"[{"host": 1}]"#)])))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "DEMO_ROUTES [0].host: expected a string, found the integer 1"
    );
}

#[test]
fn the_config_setting_names_the_file() {
    let dir = std::env::temp_dir().join(format!("vexil-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("demo.toml");
    std::fs::write(&path, "threads = 3\n").unwrap();
    let p = path.display().to_string();
    let d = resolve::<Demo>(Layers::new().env(move |n| (n == "DEMO_CONFIG").then(|| p.clone())))
        .unwrap();
    assert_eq!(d.settings.threads, 3);
    assert_eq!(d.settings.config.as_deref(), Some(path.as_path()));
    let e = resolve::<Demo>(Layers::new().flag("config", "/nonexistent/demo.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--config: cannot read /nonexistent/demo.toml: "),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn print_config_shows_origins_and_redacts_secrets() {
    let d = resolve::<Demo>(
        Layers::new()
            .file(file(
                "database_url = \"postgres://vexil:hunter2@db/vexil\"\n[[routes]]\nhost = \"a\"\n\
                 [attributes]\nx = [1]\n",
            ))
            .env(env(&[("DEMO_TOKEN", "vxl_secret")]))
            .flag("threads", "2"),
    )
    .unwrap();
    let text = print_config(&d.effective, "demo");
    assert!(
        !text.contains("hunter2") && !text.contains("vxl_secret"),
        "{text}"
    );
    assert!(
        text.contains("# --token / DEMO_TOKEN = \"<redacted>\"  # DEMO_TOKEN (no file key)"),
        "{text}"
    );
    assert!(
        text.contains("database_url = \"postgres://vexil:<redacted>@db/vexil\"  # demo.toml:1"),
        "{text}"
    );
    assert!(text.contains("threads = 2  # --threads\n"), "{text}");
    assert!(
        text.contains("# --config / DEMO_CONFIG: not set (no file key)\n"),
        "{text}"
    );
    assert!(
        text.contains("listen = \"127.0.0.1:15001\"  # default\n"),
        "{text}"
    );
    assert!(
        text.contains("\n[limits]\nmax_bytes = 8192  # default\ntimeout_ms = 2000  # default\n"),
        "{text}"
    );
    assert!(
        text.contains("\n[[routes]]  # demo.toml:2\nflags = []\nhost = \"a\"\noverride = false\n"),
        "{text}"
    );
    assert!(
        text.contains("\n[attributes]  # demo.toml:4\nx = [1]\n"),
        "{text}"
    );
    // Printed without secrets, it reads back as the same configuration.
    let back: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(back["threads"].as_integer(), Some(2));
    assert!(matches!(
        resolve::<Demo>(Layers::new().file(File::parse("back.toml", &text).unwrap())),
        Ok(r) if r.settings.threads == 2 && r.settings.routes.len() == 1
    ));
}

#[test]
fn documentation_tables_come_from_the_declarations() {
    let declared = Demo::declared();
    let main = doc_table(&declared, "main", "demo.toml");
    assert!(main.starts_with("| flag | variable | `demo.toml` | default | meaning |\n"));
    assert!(main.contains(
        "| `--listen` | `DEMO_LISTEN` | `listen` | `127.0.0.1:15001` | Where to listen. More words. |\n"
    ), "{main}");
    assert!(main.contains("| `--threads` | `DEMO_THREADS` | `threads` | the cores | Workers. |"));
    assert!(main.contains("| `--token` | `DEMO_TOKEN` |  | none | Token. |"));
    let limits = doc_table(&declared, "limits", "demo.toml");
    assert_eq!(
        limits,
        "| key | default | meaning |\n|---|---|---|\n\
         | `[limits] max_bytes` | `8192` | Largest header. |\n\
         | `[limits] timeout_ms` | `2000` | Upstream timeout. |\n"
    );
    let doc = "# Demo\n\n<!-- settings: limits -->\nold\n<!-- /settings -->\n\nprose\n";
    let updated = update_docs(doc, |id| (id == "limits").then(|| limits.clone())).unwrap();
    assert_eq!(
        updated,
        format!("# Demo\n\n<!-- settings: limits -->\n{limits}<!-- /settings -->\n\nprose\n")
    );
    assert_eq!(
        update_docs(&updated, |_| Some(limits.clone())).unwrap(),
        updated
    );
    assert!(update_docs(doc, |_| None).unwrap_err().contains("limits"));
}
