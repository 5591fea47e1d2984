//! A boolean evaluation performs no heap allocation: proved with a counting global allocator.
//!
//! The counter is per thread, so the test harness's other threads cannot disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use serde_json::json;
use vexil_engine::{EvaluationContext, FlagSet, Reason};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// A global allocator is unsafe to implement; this one counts allocations to prove evaluation makes
// none.
// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn boolean_evaluations_do_not_allocate() {
    let set = FlagSet::from_json(&json!({
        "$evaluators": {"adult": {">=": [{"var": "user.age"}, 18]}},
        "flags": {
            "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "targeted": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"if": [{"and": [
                    {"==": [{"var": "country"}, "NL"]},
                    {"in": [{"var": "plan"}, ["pro", "enterprise"]]},
                    {"$ref": "adult"}
                ]}, "on", "off"]}},
            "strings": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"if": [{"or": [
                    {"starts_with": [{"var": "email"}, "admin@"]},
                    {"ends_with": [{"var": "email"}, "@vexil.dev"]},
                    {"in": ["beta", {"var": "groups"}]}
                ]}, "on"]}},
            "semver": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"if": [{"sem_ver": [{"var": "app.version"}, ">=", "2.1.0"]}, "on", "off"]}},
            "rollout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"fractional": [["on", 25], ["off", 75]]}},
            "rollout-by": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"fractional": [{"var": "user.id"}, ["on", 50], ["off", 50]]}},
            "disabled": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}
        }
    }))
    .unwrap();
    let ctx = EvaluationContext::from_value(json!({
        "targetingKey": "user-123",
        "country": "NL",
        "plan": "pro",
        "email": "ada@vexil.dev",
        "groups": ["alpha", "beta"],
        "user": {"age": 36, "id": 42},
        "app": {"version": "2.3.1"}
    }))
    .unwrap();

    for key in [
        "static",
        "targeted",
        "strings",
        "semver",
        "rollout",
        "rollout-by",
        "disabled",
    ] {
        // Warm up once (lazy statics in std, if any, are not the engine's).
        let _ = set.resolve_bool(key, &ctx);
        let mut reason = Reason::Error;
        let n = allocations_during(|| {
            let r = set.resolve_bool(key, &ctx);
            reason = r.reason;
        });
        assert_ne!(reason, Reason::Error, "{key} must resolve");
        assert_eq!(n, 0, "resolving {key} allocated {n} times");
    }
}

#[test]
fn the_counter_counts() {
    let n = allocations_during(|| {
        let v: Vec<u8> = Vec::with_capacity(10);
        std::hint::black_box(v);
    });
    assert_eq!(n, 1);
}
