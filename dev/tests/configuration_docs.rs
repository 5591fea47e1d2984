//! The option tables of `docs/configuration.md` are rendered from the declarations of both
//! binaries' settings: this test fails when the committed document differs, and rewrites it with
//! `VEXIL_BLESS=1`.

use std::path::Path;

use vexil_control::config::ControlConfig;
use vexil_proxy::config::ProxyConfig;
use vexil_proxy::dataplane::config::RouteConfig;
use vexil_settings::{Settings, doc_table, update_docs};

#[test]
fn the_option_tables_come_from_the_declarations() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let text = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let control = ControlConfig::declared();
    // Each `[[routes]]` entry is a record of its own keys.
    let mut proxy = ProxyConfig::declared();
    proxy.extend(RouteConfig::declared());
    let rendered = update_docs(&text, |id| {
        let (binary, group) = id.split_once(' ')?;
        let (declared, file) = match binary {
            "vexil-control" => (&control, "control.toml"),
            "vexil-proxy" => (&proxy, "proxy.toml"),
            _ => return None,
        };
        declared
            .iter()
            .any(|d| d.group == group)
            .then(|| doc_table(declared, group, file))
    })
    .unwrap_or_else(|e| panic!("docs/configuration.md: {e}"));
    // Every group of settings has its table.
    for (binary, declared) in [("vexil-control", &control), ("vexil-proxy", &proxy)] {
        for d in declared.iter() {
            let marker = format!("<!-- settings: {binary} {} -->", d.group);
            assert!(
                text.contains(&marker),
                "docs/configuration.md has no {marker} (for {})",
                d.setting.name
            );
        }
    }
    if rendered == text {
        return;
    }
    if std::env::var_os("VEXIL_BLESS").is_some() {
        std::fs::write(&path, &rendered).expect("writing docs/configuration.md");
        return;
    }
    let first = text
        .lines()
        .zip(rendered.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    panic!(
        "docs/configuration.md differs from the declarations from line {}:\n  committed: {:?}\n  \
         generated: {:?}\nregenerate it with: VEXIL_BLESS=1 cargo test -p vexil-dev --test \
         configuration_docs",
        first + 1,
        text.lines().nth(first).unwrap_or(""),
        rendered.lines().nth(first).unwrap_or(""),
    );
}
