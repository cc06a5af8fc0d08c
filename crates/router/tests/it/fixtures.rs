//! Provider examples kept under `tests/fixtures/<backend>/`: JSON bodies and SSE streams.

use std::path::PathBuf;

use serde_json::Value;

fn path(backend: &str, name: &str) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        backend,
        name,
    ]
    .iter()
    .collect()
}

pub(crate) fn text(backend: &str, name: &str) -> String {
    let path = path(backend, name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn json(backend: &str, name: &str) -> Value {
    serde_json::from_str(&text(backend, name)).unwrap_or_else(|e| panic!("{backend}/{name}: {e}"))
}

/// An SSE body's events, each its `event:` name (if any) and its `data:` parsed as JSON.
/// Events end at a blank line; several `data:` lines join with newlines; `:` lines are comments.
pub(crate) fn sse(backend: &str, name: &str) -> Vec<(Option<String>, Value)> {
    let body = text(backend, name).replace("\r\n", "\n");
    let mut events = Vec::new();
    for block in body.split("\n\n") {
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(name) = line.strip_prefix("event:") {
                event = Some(name.trim().to_string());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if data.is_empty() {
            continue;
        }
        let data = serde_json::from_str(&data.join("\n"))
            .unwrap_or_else(|e| panic!("{backend}/{name}: an event's data: {e}"));
        events.push((event, data));
    }
    events
}

/// Shows both sides in full when they differ: a JSON diff is easier to read pretty.
#[track_caller]
pub(crate) fn assert_same(got: &Value, want: &Value, case: &str) {
    if got != want {
        let show = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
        panic!("{case}: got\n{}\nwant\n{}", show(got), show(want));
    }
}
