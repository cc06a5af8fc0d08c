//! What one request's schemas may ask of the grammar compiler, checked before it runs.
//!
//! A grammar is compiled from the schemas with recursion and memory proportional to their
//! size, so an unbounded schema is a way to take the process down. The limits follow OpenAI's
//! published ones for structured outputs where it has one (5,000 properties, 1,000 enum values,
//! 120,000 characters of names and values), so a schema that works here works there; the
//! others (depth, subschemas, patterns, length and item bounds) are far above what real
//! schemas use and far below what breaks the compiler. They are counted over every schema of
//! a request together (`response_format` and each tool's `parameters`).

use std::collections::{HashMap, HashSet};

use regex_syntax::hir::{Hir, HirKind};
use serde_json::Value;

use super::SchemaError;

/// Nested subschemas, counted from each schema's root.
pub const MAX_DEPTH: usize = 32;
/// Subschemas in all.
pub const MAX_NODES: usize = 10_000;
/// Object properties in all (OpenAI: 5,000).
pub const MAX_PROPERTIES: usize = 5_000;
/// `enum` values in all (OpenAI: 1,000).
pub const MAX_ENUM_VALUES: usize = 1_000;
/// Characters of property names, definition names, `enum` and `const` values (OpenAI:
/// 120,000).
pub const MAX_CHARS: usize = 120_000;
/// Characters of one `pattern`.
pub const MAX_PATTERN_CHARS: usize = 1_000;
/// A pattern's size once its counted repetitions are spelled out (`a{3}` is 3, `(ab){2}{5}`
/// is 20): what the lexer has to build.
pub const MAX_PATTERN_SIZE: u64 = 10_000;
/// Properties of one object that are not `required`: the grammar keeps every one of them open
/// at each step of the object, and past a few hundred its parser refuses the row.
pub const MAX_OPTIONAL: usize = 256;
/// The largest `minLength` / `maxLength` / `minItems` / `maxItems` / `minProperties` /
/// `maxProperties` the grammar is asked to count to.
pub const MAX_COUNT: u64 = 10_000;

/// What the schemas of one request have used of the limits.
#[derive(Debug, Default, Clone)]
pub struct Budget {
    nodes: usize,
    properties: usize,
    enum_values: usize,
    chars: usize,
}

impl Budget {
    pub fn new() -> Self {
        Budget::default()
    }

    /// Counts one subschema at `path`, `depth` levels below its root.
    pub(crate) fn node(
        &mut self,
        map: &serde_json::Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), SchemaError> {
        if depth > MAX_DEPTH {
            return Err(limit(
                path,
                format!("the schema nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(limit(
                path,
                format!("the schemas hold more than {MAX_NODES} subschemas in all"),
            ));
        }
        for key in ["properties", "$defs", "definitions", "patternProperties"] {
            if let Some(Value::Object(children)) = map.get(key) {
                if key == "properties" {
                    self.properties += children.len();
                }
                self.chars += children.keys().map(|k| k.chars().count()).sum::<usize>();
            }
        }
        if let Some(Value::Object(props)) = map.get("properties") {
            // A set, not a scan per property: thousands of each would be quadratic.
            let required: HashSet<&str> = map
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let optional = props
                .keys()
                .filter(|k| !required.contains(k.as_str()))
                .count();
            if optional > MAX_OPTIONAL {
                return Err(limit(
                    &format!("{path}/properties"),
                    format!(
                        "the object has {optional} optional properties, more than \
                         {MAX_OPTIONAL}; list them in `required` or split the object"
                    ),
                ));
            }
        }
        if self.properties > MAX_PROPERTIES {
            return Err(limit(
                path,
                format!("the schemas define more than {MAX_PROPERTIES} properties in all"),
            ));
        }
        if let Some(Value::Array(values)) = map.get("enum") {
            self.enum_values += values.len();
            self.chars += values.iter().map(chars_of).sum::<usize>();
            if self.enum_values > MAX_ENUM_VALUES {
                return Err(limit(
                    &format!("{path}/enum"),
                    format!("the schemas have more than {MAX_ENUM_VALUES} `enum` values in all"),
                ));
            }
        }
        if let Some(c) = map.get("const") {
            self.chars += chars_of(c);
        }
        if self.chars > MAX_CHARS {
            return Err(limit(
                path,
                format!(
                    "property names, definition names, `enum` and `const` values come to more \
                     than {MAX_CHARS} characters"
                ),
            ));
        }
        for key in [
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "minProperties",
            "maxProperties",
        ] {
            if let Some(n) = map.get(key).and_then(Value::as_u64)
                && n > MAX_COUNT
            {
                return Err(limit(
                    &format!("{path}/{key}"),
                    format!("`{key}` is {n}; the grammar counts to at most {MAX_COUNT}"),
                ));
            }
        }
        if let Some(Value::String(p)) = map.get("pattern") {
            pattern(p, &format!("{path}/pattern"))?;
        }
        // The keys of `patternProperties` are patterns too.
        if let Some(Value::Object(patterns)) = map.get("patternProperties") {
            for key in patterns.keys() {
                pattern(key, &format!("{path}/patternProperties"))?;
            }
        }
        Ok(())
    }
}

fn chars_of(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        other => other.to_string().len(),
    }
}

fn limit(path: &str, reason: String) -> SchemaError {
    SchemaError::TooComplex {
        path: path.to_string(),
        reason,
    }
}

/// Checks a `pattern`: it must parse, and spelled out it must stay under
/// [`MAX_PATTERN_SIZE`].
pub(crate) fn pattern(p: &str, path: &str) -> Result<(), SchemaError> {
    if p.chars().count() > MAX_PATTERN_CHARS {
        return Err(limit(
            path,
            format!("the pattern is longer than {MAX_PATTERN_CHARS} characters"),
        ));
    }
    let hir = regex_syntax::ParserBuilder::new()
        .nest_limit(MAX_DEPTH as u32)
        .build()
        .parse(p)
        .map_err(|e| SchemaError::Invalid {
            path: path.to_string(),
            reason: format!(
                "the pattern is not a regular expression this server reads: {}",
                // The parser's message spans lines (the pattern, a caret, the error).
                e.to_string()
                    .lines()
                    .last()
                    .unwrap_or("syntax error")
                    .trim()
            ),
        })?;
    let size = spelled_out(&hir);
    if size > MAX_PATTERN_SIZE {
        return Err(limit(
            path,
            format!(
                "the pattern's counted repetitions spell out to {size} items, more than \
                 {MAX_PATTERN_SIZE}; use `*` / `+` or smaller counts"
            ),
        ));
    }
    Ok(())
}

/// The size of a pattern with every counted repetition written out, saturating. An unbounded
/// repetition counts its minimum once more (`a{3,}` is 4).
fn spelled_out(hir: &Hir) -> u64 {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 0,
        HirKind::Literal(l) => l.0.len() as u64,
        HirKind::Class(_) => 1,
        HirKind::Repetition(r) => {
            let times = u64::from(r.max.unwrap_or(r.min.saturating_add(1)).max(1));
            spelled_out(&r.sub).max(1).saturating_mul(times)
        }
        HirKind::Capture(c) => spelled_out(&c.sub),
        HirKind::Concat(items) | HirKind::Alternation(items) => items
            .iter()
            .map(spelled_out)
            .fold(0u64, u64::saturating_add),
    }
}

/// Every local `$ref` must point at a subschema of the same document, and no chain of
/// references and `anyOf` / `oneOf` / `allOf` may come back to where it started without
/// passing through a property or an item: such a schema describes no finite value, and the
/// compiler would recurse on it forever.
pub(crate) fn refs(root: &Value) -> Result<(), SchemaError> {
    // Every subschema by its JSON Pointer, and the pointers it leads to without consuming
    // any text.
    let mut nodes: HashMap<String, Vec<String>> = HashMap::new();
    let mut stack: Vec<(String, &Value)> = vec![("#".into(), root)];
    let mut targets: Vec<(String, String)> = Vec::new();
    while let Some((path, v)) = stack.pop() {
        let Value::Object(map) = v else { continue };
        let mut through = Vec::new();
        if let Some(Value::String(r)) = map.get("$ref") {
            targets.push((path.clone(), r.clone()));
            through.push(r.clone());
        }
        for (key, child) in map {
            let here = format!("{path}/{}", super::escape(key));
            match key.as_str() {
                "anyOf" | "oneOf" | "allOf" => {
                    if let Value::Array(items) = child {
                        for (i, item) in items.iter().enumerate() {
                            through.push(format!("{here}/{i}"));
                            stack.push((format!("{here}/{i}"), item));
                        }
                    }
                }
                "properties" | "patternProperties" | "$defs" | "definitions" => {
                    if let Value::Object(children) = child {
                        for (name, c) in children {
                            stack.push((format!("{here}/{}", super::escape(name)), c));
                        }
                    }
                }
                "prefixItems" | "items" if child.is_array() => {
                    if let Value::Array(items) = child {
                        for (i, item) in items.iter().enumerate() {
                            stack.push((format!("{here}/{i}"), item));
                        }
                    }
                }
                "items" | "additionalProperties" | "additionalItems" => {
                    stack.push((here, child));
                }
                _ => {}
            }
        }
        nodes.insert(path, through);
    }
    for (at, target) in &targets {
        if !nodes.contains_key(target.as_str()) {
            return Err(SchemaError::Invalid {
                path: at.clone(),
                reason: format!("`$ref` points at `{target}`, which is not in the schema"),
            });
        }
    }
    // Depth-first over the edges that consume nothing, with colours, on an explicit stack.
    let mut done: HashSet<&str> = HashSet::new();
    for (start, _) in &targets {
        if done.contains(start.as_str()) {
            continue;
        }
        let mut on_path: HashSet<&str> = HashSet::new();
        let mut work: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        on_path.insert(start.as_str());
        while let Some((node, next)) = work.pop() {
            let edges = nodes.get(node).map_or(&[][..], Vec::as_slice);
            if let Some(to) = edges.get(next) {
                work.push((node, next + 1));
                let to = to.as_str();
                if on_path.contains(to) {
                    return Err(SchemaError::Invalid {
                        path: node.to_string(),
                        reason: format!(
                            "`$ref` cycle: `{to}` leads back to itself without a property or an \
                             item in between, so no value could match"
                        ),
                    });
                }
                if !done.contains(to) {
                    on_path.insert(to);
                    work.push((to, 0));
                }
            } else {
                on_path.remove(node);
                done.insert(node);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::{prepare, prepare_in};

    #[test]
    fn patterns_are_sized_as_spelled_out() {
        assert!(pattern("^[A-Z]{2}[0-9]{3}$", "#").is_ok());
        assert!(pattern("[a-z]{1,64}", "#").is_ok());
        for p in ["c{1000}{1000}", "(a|b){200}{200}", "x{100000}"] {
            let e = pattern(p, "#/pattern").expect_err(p);
            assert!(matches!(e, SchemaError::TooComplex { .. }), "{p}: {e}");
            assert!(e.to_string().contains("spell out"), "{e}");
        }
        let keyed = json!({"type": "object", "patternProperties": {"a{1000}{1000}": {}}});
        assert!(
            prepare(&keyed, false).is_err(),
            "a patternProperties key is a pattern"
        );
        let e = pattern("(ab", "#/pattern").expect_err("unclosed");
        assert!(matches!(e, SchemaError::Invalid { .. }), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(pattern(&deep, "#").is_err(), "nesting is bounded");
        assert!(pattern(&"a".repeat(MAX_PATTERN_CHARS + 1), "#").is_err());
    }

    #[test]
    fn counts_are_over_the_whole_request() {
        let props: serde_json::Map<String, Value> = (0..3_000)
            .map(|i| (format!("p{i}"), json!({"type": "integer"})))
            .collect();
        let required: Vec<&String> = props.keys().collect();
        let s = json!({"type": "object", "properties": props, "required": required});
        let mut budget = Budget::new();
        assert!(prepare_in(&s, false, &mut budget).is_ok());
        let e = prepare_in(&s, false, &mut budget).expect_err("6,000 in all");
        assert!(e.to_string().contains("5000 properties"), "{e}");
        assert!(prepare(&s, false).is_ok(), "a fresh budget for one schema");
    }

    #[test]
    fn size_depth_enums_and_counts_are_bounded() {
        let mut deep = json!({"type": "string"});
        for _ in 0..40 {
            deep = json!({"type": "array", "items": deep});
        }
        let e = prepare(&deep, false).expect_err("too deep");
        assert!(e.to_string().contains("32 levels"), "{e}");
        let e = prepare(&json!({"enum": (0..1_001).collect::<Vec<_>>()}), false)
            .expect_err("too many values");
        assert_eq!(e.path(), "#/enum");
        let e = prepare(
            &json!({"type": "string", "maxLength": 1_000_000_000u64}),
            false,
        )
        .expect_err("too long");
        assert_eq!(e.path(), "#/maxLength");
        let big = "x".repeat(MAX_CHARS + 1);
        assert!(prepare(&json!({"const": big}), false).is_err());
        let many: Vec<Value> = (0..MAX_NODES + 1)
            .map(|_| json!({"type": "null"}))
            .collect();
        assert!(prepare(&json!({"anyOf": many}), false).is_err());
    }

    #[test]
    fn ref_cycles_and_dangling_refs_are_refused() {
        for s in [
            json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
            json!({"$ref": "#"}),
        ] {
            let e = prepare(&s, false).expect_err("cycle");
            assert!(e.to_string().contains("cycle"), "{s}: {e}");
        }
        let e = prepare(&json!({"$ref": "#/$defs/nope"}), false).expect_err("dangling");
        assert!(e.to_string().contains("not in the schema"), "{e}");
        // Recursion through a property is a tree, which is fine.
        let tree = json!({"$defs": {"node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"});
        assert!(prepare(&tree, true).is_ok());
        let root = json!({"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}});
        assert!(prepare(&root, false).is_ok());
    }
}
