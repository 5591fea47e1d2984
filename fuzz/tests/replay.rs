//! Replays every committed fuzz input through its target on the stable toolchain: the minimised
//! corpora (`fuzz/corpus/<target>/`) and the inputs of every crash found and fixed
//! (`fuzz/regressions/<target>/`). A panic here is a regression of a fixed crash or a new bug on a
//! known input.

use std::path::{Path, PathBuf};

use vexil_fuzz::TARGETS;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut total = 0;
    for (target, run) in TARGETS {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).expect("a readable input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", file.display());
            total += 1;
        }
    }
    total
}

/// Every corpus input of every target runs through its target without a panic, and each target
/// has a seed corpus.
#[test]
fn corpora_replay_cleanly() {
    for (target, _) in TARGETS {
        assert!(
            !inputs("corpus", target).is_empty(),
            "fuzz/corpus/{target}/ is empty"
        );
    }
    let n = replay("corpus");
    eprintln!("replayed {n} corpus inputs");
}

/// Every crash input found by fuzzing (and fixed) runs through its target without a panic.
#[test]
fn regressions_stay_fixed() {
    let n = replay("regressions");
    eprintln!("replayed {n} regression inputs");
}
