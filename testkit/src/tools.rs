//! The pinned test clients `scripts/ensure-deps.sh` installs under `~/.cache/vexil` (or
//! `$XDG_CACHE_HOME/vexil`): the Python virtualenv (`$VEXIL_PYTOOLS`) with the OpenFeature clients
//! and grpcio, and the JavaScript OpenFeature clients (`$VEXIL_JSTOOLS`).

use std::path::PathBuf;

/// `$var` if set, else `~/.cache/vexil/<name>`.
pub fn cache_dir(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache")
            })
            .join("vexil")
            .join(name)
    })
}

/// The virtualenv's python, or `None` after [`crate::skip`] (which fails under CI) when missing.
pub fn python() -> Option<PathBuf> {
    let python = cache_dir("VEXIL_PYTOOLS", "pytools").join("bin/python");
    if python.exists() {
        return Some(python);
    }
    crate::skip(format!(
        "{} is missing (run scripts/ensure-deps.sh)",
        python.display()
    ));
    None
}

/// The JavaScript clients' `node_modules` (it may not exist: see [`python`] for the rule).
pub fn js_modules() -> PathBuf {
    cache_dir("VEXIL_JSTOOLS", "jstools").join("node_modules")
}
