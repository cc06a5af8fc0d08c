//! Eval sets: JSONL a team writes by hand, one row per line. A row is a request (`messages`,
//! or an `input` / `prompt` text sent as the user's message) and what a right answer is.
//! The expectation is read from the row's shape, never from the set's name:
//!
//! - `functions` (offered as tools) with `expected` calls: BFCL's form
//!   `[{"fname": {"arg": [accepted, …]}}]` (`""` among the accepted values: may be left out),
//!   or `[{"name": "fname", "arguments": {…}}]` for exact values; `[]` expects no call.
//! - `schema` (the answer is JSON valid against it), with optional `expected` fields.
//! - `rubric` (free text graded by a judge), with `expected` reference answers if any.
//! - `labels` (or a classification row: `task` is `classification`) with one `expected` label.
//! - `expected` a string: the answer's text matches it, normalized.
//! - `expected` a list of strings: reference answers for free text, graded by a judge.
//! - `expected` any other JSON (an object, a list of objects): the answer, read as JSON,
//!   equals it, lists compared as multisets and strings normalized.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Rows over this many bytes are refused: a hand-written row is small, and a set read whole
/// should not take the machine's memory.
pub const MAX_ROW_BYTES: usize = 1 << 20;
/// Rows a set may hold.
pub const MAX_ROWS: usize = 200_000;

/// One row of an eval set.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    /// The row's `id`, else its line number.
    pub id: String,
    /// sha256 of the row's canonical JSON: what stored results are keyed by.
    pub key: String,
    /// The chat messages sent (OpenAI's shape).
    pub messages: Vec<Value>,
    /// Tools offered, as OpenAI `tools` (from the row's `functions`).
    pub tools: Option<Vec<Value>>,
    /// The row's `task` word, when it has one.
    pub kind: Option<String>,
    pub expect: Expectation,
}

/// What a right answer is.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// The answer's text, normalized, is this.
    Text(String),
    /// The answer is this label (of `labels`, when the row lists them).
    Label {
        expected: String,
        labels: Option<Vec<String>>,
    },
    /// The answer is JSON valid against `schema` (when given) and equal to `expected` (when
    /// given).
    Json {
        schema: Option<Value>,
        expected: Option<Value>,
    },
    /// The answer calls these functions (none: no call).
    Calls {
        schemas: BTreeMap<String, Value>,
        expected: Vec<ExpectedCall>,
    },
    /// Free text, graded only by a judge.
    FreeText {
        rubric: Option<String>,
        references: Vec<String>,
    },
}

impl Expectation {
    /// The word a report groups rows by.
    pub fn kind(&self) -> &'static str {
        match self {
            Expectation::Text(_) => "text",
            Expectation::Label { .. } => "label",
            Expectation::Json { .. } => "json",
            Expectation::Calls { .. } => "calls",
            Expectation::FreeText { .. } => "free_text",
        }
    }
}

/// One expected call: the function's name, and for each argument the values accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedCall {
    pub name: String,
    /// Each argument's accepted values; an argument whose list holds `""` may be left out.
    pub arguments: BTreeMap<String, Vec<Value>>,
}

/// A set that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` line {line}: {message}")]
    Row {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("`{path}` has no rows")]
    Empty { path: PathBuf },
    #[error("`{path}` has more than {MAX_ROWS} rows")]
    TooMany { path: PathBuf },
}

/// Every row of the set at `path`, in order; blank lines are skipped.
pub fn read_set(path: &Path) -> Result<Vec<EvalRow>, SetError> {
    let read = |source| SetError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut reader = std::io::BufReader::new(file);
    let mut rows = Vec::new();
    let mut line = Vec::new();
    let mut n = 0;
    loop {
        line.clear();
        // Bounded: a line longer than the limit is refused without being read whole.
        let got = std::io::Read::take(&mut reader, MAX_ROW_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(read)?;
        if got == 0 {
            break;
        }
        n += 1;
        let bad = |message: String| SetError::Row {
            path: path.to_path_buf(),
            line: n,
            message,
        };
        if line.len() > MAX_ROW_BYTES {
            return Err(bad(format!("longer than {MAX_ROW_BYTES} bytes")));
        }
        let text = std::str::from_utf8(&line).map_err(|_| bad("not UTF-8".into()))?;
        if text.trim().is_empty() {
            continue;
        }
        if rows.len() == MAX_ROWS {
            return Err(SetError::TooMany {
                path: path.to_path_buf(),
            });
        }
        let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        rows.push(row(&value, n).map_err(bad)?);
    }
    if rows.is_empty() {
        return Err(SetError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(rows)
}

/// sha256 of a whole set's rows (their keys in order): what a calibration names.
pub fn set_sha256(rows: &[EvalRow]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update(r.key.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// One row from its JSON (`line` names it when it has no `id`).
pub fn row(value: &Value, line: usize) -> Result<EvalRow, String> {
    let Value::Object(o) = value else {
        return Err("a row must be a JSON object".into());
    };
    let id = match o.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        None => format!("line-{line}"),
        Some(_) => return Err("`id` must be a string or a number".into()),
    };
    let kind = match o.get("task") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err("`task` must be a string".into()),
    };
    let messages = messages(o)?;
    let (tools, schemas) = match o.get("functions") {
        Some(f) => {
            let (tools, schemas) = tools(f)?;
            (Some(tools), Some(schemas))
        }
        None => (None, None),
    };
    let expected = o.get("expected").filter(|v| !v.is_null());
    let expect = if let Some(schemas) = schemas {
        let Some(Value::Array(calls)) = expected else {
            return Err(
                "a row with `functions` needs `expected`: a list of calls ([] for none)".into(),
            );
        };
        let expected = calls.iter().map(expected_call).collect::<Result<_, _>>()?;
        Expectation::Calls { schemas, expected }
    } else if let Some(schema) = o.get("schema") {
        if !schema.is_object() && !schema.is_boolean() {
            return Err("`schema` must be a JSON Schema (an object)".into());
        }
        Expectation::Json {
            schema: Some(schema.clone()),
            expected: expected.cloned(),
        }
    } else if let Some(rubric) = o.get("rubric") {
        let Value::String(rubric) = rubric else {
            return Err("`rubric` must be a string".into());
        };
        Expectation::FreeText {
            rubric: Some(rubric.clone()),
            references: references(expected)?,
        }
    } else if o.contains_key("labels") || kind.as_deref() == Some("classification") {
        let labels = match o.get("labels") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|l| l.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("`labels` must be a list of strings")?,
            ),
            Some(_) => return Err("`labels` must be a list of strings".into()),
        };
        let Some(Value::String(e)) = expected else {
            return Err("a classification row needs `expected`: its label".into());
        };
        if labels.as_ref().is_some_and(|l| !l.contains(e)) {
            return Err(format!(
                "`expected` label `{e}` is not among the row's `labels`"
            ));
        }
        Expectation::Label {
            expected: e.clone(),
            labels,
        }
    } else {
        match expected {
            None => return Err("a row needs an expectation: `expected`, `schema`, `functions` with `expected`, or `rubric`".into()),
            Some(Value::String(s)) => Expectation::Text(s.clone()),
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
                Expectation::FreeText {
                    rubric: None,
                    references: references(expected)?,
                }
            }
            Some(v) => Expectation::Json {
                schema: None,
                expected: Some(v.clone()),
            },
        }
    };
    Ok(EvalRow {
        id,
        key: hex::encode(Sha256::digest(value.to_string().as_bytes())),
        messages,
        tools,
        kind,
        expect,
    })
}

fn messages(o: &serde_json::Map<String, Value>) -> Result<Vec<Value>, String> {
    if let Some(m) = o.get("messages") {
        let Value::Array(list) = m else {
            return Err("`messages` must be a list of chat messages".into());
        };
        if list.is_empty() {
            return Err("`messages` is empty".into());
        }
        if let Some(i) = list.iter().position(|m| {
            !m.get("role").is_some_and(Value::is_string) || m.get("content").is_none()
        }) {
            return Err(format!("`messages[{i}]` needs a `role` and a `content`"));
        }
        return Ok(list.clone());
    }
    let text = o.get("input").or_else(|| o.get("prompt"));
    match text {
        Some(Value::String(s)) => Ok(vec![serde_json::json!({"role": "user", "content": s})]),
        Some(_) => Err("`input` must be a string".into()),
        None => Err("a row needs `messages`, `input` or `prompt`".into()),
    }
}

fn references(expected: Option<&Value>) -> Result<Vec<String>, String> {
    match expected {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| "reference answers must be strings".to_string()),
        Some(_) => Err("reference answers must be a string or a list of strings".into()),
    }
}

/// BFCL's parameter types, as JSON Schema names them.
fn json_type(t: &str) -> &str {
    match t {
        "dict" => "object",
        "float" => "number",
        "tuple" => "array",
        other => other,
    }
}

/// A function's parameters in JSON Schema: BFCL's dialect mapped (`dict`, `float`, `tuple`,
/// `any`), `optional` dropped.
pub fn to_schema(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(to_schema).collect()),
        Value::Object(o) => {
            let mut out = serde_json::Map::new();
            for (k, x) in o {
                match k.as_str() {
                    "optional" => {}
                    "type" => match x {
                        Value::String(t) if t == "any" => {}
                        Value::String(t) => {
                            out.insert(k.clone(), Value::String(json_type(t).to_string()));
                        }
                        Value::Array(ts) => {
                            let ts = ts
                                .iter()
                                .map(|t| match t {
                                    Value::String(t) => Value::String(json_type(t).to_string()),
                                    t => t.clone(),
                                })
                                .collect();
                            out.insert(k.clone(), Value::Array(ts));
                        }
                        x => {
                            out.insert(k.clone(), x.clone());
                        }
                    },
                    "properties" => {
                        let props = x.as_object().map_or_else(
                            || x.clone(),
                            |p| {
                                Value::Object(
                                    p.iter().map(|(n, s)| (n.clone(), to_schema(s))).collect(),
                                )
                            },
                        );
                        out.insert(k.clone(), props);
                    }
                    "items" | "additionalProperties" | "anyOf" | "oneOf" | "allOf" => {
                        out.insert(k.clone(), to_schema(x));
                    }
                    _ => {
                        out.insert(k.clone(), x.clone());
                    }
                }
            }
            Value::Object(out)
        }
        v => v.clone(),
    }
}

/// A tool's name as offered: OpenAI's names allow no dots, so `math.sum` is `math_sum`.
pub fn tool_name(name: &str) -> String {
    name.replace('.', "_")
}

/// The row's functions as OpenAI tools, and each offered name's parameter schema.
fn tools(functions: &Value) -> Result<(Vec<Value>, BTreeMap<String, Value>), String> {
    let Value::Array(list) = functions else {
        return Err("`functions` must be a list of function definitions".into());
    };
    let mut tools = Vec::new();
    let mut schemas = BTreeMap::new();
    for (i, f) in list.iter().enumerate() {
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            return Err(format!("`functions[{i}]` needs a `name`"));
        };
        let params = f.get("parameters").map_or_else(
            || serde_json::json!({"type": "object", "properties": {}}),
            to_schema,
        );
        let offered = tool_name(name);
        tools.push(serde_json::json!({
            "type": "function",
            "function": {
                "name": offered,
                "description": f.get("description").and_then(Value::as_str).unwrap_or(""),
                "parameters": params,
            }
        }));
        schemas.insert(offered, params);
    }
    Ok((tools, schemas))
}

fn expected_call(v: &Value) -> Result<ExpectedCall, String> {
    let Value::Object(o) = v else {
        return Err("an expected call must be an object".into());
    };
    // `{"name": …, "arguments": {…}}`: exact values.
    if let (Some(Value::String(name)), Some(args)) = (o.get("name"), o.get("arguments")) {
        let Value::Object(args) = args else {
            return Err("an expected call's `arguments` must be an object".into());
        };
        return Ok(ExpectedCall {
            name: tool_name(name),
            arguments: args
                .iter()
                .map(|(k, v)| (k.clone(), vec![v.clone()]))
                .collect(),
        });
    }
    // BFCL: `{"fname": {"arg": [accepted, …]}}`.
    let mut it = o.iter();
    let (Some((name, args)), None) = (it.next(), it.next()) else {
        return Err("an expected call is `{\"name\": …, \"arguments\": {…}}` or BFCL's `{\"fname\": {\"arg\": [values]}}`".into());
    };
    let Value::Object(args) = args else {
        return Err(format!(
            "expected call `{name}`: its arguments must be an object"
        ));
    };
    let mut arguments = BTreeMap::new();
    for (k, accepted) in args {
        let Value::Array(values) = accepted else {
            return Err(format!(
                "expected call `{name}`: argument `{k}` must list its accepted values"
            ));
        };
        arguments.insert(k.clone(), values.clone());
    }
    Ok(ExpectedCall {
        name: tool_name(name),
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every shared eval set loads as it is, each row with the expectation its shape says.
    #[test]
    fn the_shared_sets_load_as_they_are() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/evals");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("skipped: {} is not here", dir.display());
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for f in files {
            let rows = read_set(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(!rows.is_empty(), "{}", f.display());
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let kind = rows[0].expect.kind();
            let want = match name {
                n if n.starts_with("banking77") || n.starts_with("clinc150") => "label",
                n if n.starts_with("bfcl") => "calls",
                _ => kind,
            };
            assert_eq!(kind, want, "{name}");
            assert!(
                rows.iter().all(|r| r.expect.kind() == kind),
                "{name}: rows of more than one shape"
            );
        }
    }

    #[test]
    fn shapes_are_read_from_the_row() {
        let r = row(
            &json!({"id": "b", "task": "classification", "input": "hi", "expected": "greet"}),
            1,
        )
        .expect("ok");
        assert_eq!(r.messages, vec![json!({"role": "user", "content": "hi"})]);
        assert_eq!(
            r.expect,
            Expectation::Label {
                expected: "greet".into(),
                labels: None
            }
        );
        let r = row(&json!({"prompt": "2+2?", "expected": "4"}), 7).expect("ok");
        assert_eq!(r.id, "line-7");
        assert_eq!(r.expect, Expectation::Text("4".into()));
        let r = row(
            &json!({"input": "a", "expected": ["one summary", "another"]}),
            1,
        )
        .expect("ok");
        assert_eq!(r.expect.kind(), "free_text");
        let r = row(
            &json!({"input": "a", "expected": [{"type": "x", "text": "y"}]}),
            1,
        )
        .expect("ok");
        assert_eq!(r.expect.kind(), "json");
        let r = row(
            &json!({"input": "a", "schema": {"type": "object"}, "expected": {"k": 1}}),
            1,
        )
        .expect("ok");
        assert!(matches!(
            r.expect,
            Expectation::Json {
                schema: Some(_),
                expected: Some(_)
            }
        ));
    }

    #[test]
    fn functions_become_tools_and_calls_in_either_form() {
        let r = row(
            &json!({"messages": [{"role": "user", "content": "x"}],
                    "functions": [{"name": "m.area", "parameters": {"type": "dict", "properties": {"b": {"type": "float"}}}}],
                    "expected": [{"m.area": {"b": [10, ""]}}, {"name": "m.area", "arguments": {"b": 2}}]}),
            1,
        )
        .expect("ok");
        let tools = r.tools.expect("ok");
        assert_eq!(tools[0]["function"]["name"], "m_area");
        assert_eq!(tools[0]["function"]["parameters"]["type"], "object");
        assert_eq!(
            tools[0]["function"]["parameters"]["properties"]["b"]["type"],
            "number"
        );
        let Expectation::Calls { expected, .. } = r.expect else {
            panic!()
        };
        assert_eq!(expected[0].name, "m_area");
        assert_eq!(expected[0].arguments["b"], vec![json!(10), json!("")]);
        assert_eq!(expected[1].arguments["b"], vec![json!(2)]);
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        for (v, needle) in [
            (json!([1]), "JSON object"),
            (json!({"expected": "x"}), "`messages`, `input` or `prompt`"),
            (json!({"input": "x"}), "needs an expectation"),
            (
                json!({"input": "x", "labels": ["a"], "expected": "b"}),
                "not among",
            ),
            (json!({"input": "x", "functions": []}), "needs `expected`"),
            (
                json!({"messages": [{"content": "x"}], "expected": "x"}),
                "`role`",
            ),
        ] {
            let e = row(&v, 3).expect_err("refused");
            assert!(e.contains(needle), "{v}: {e}");
        }
    }

    #[test]
    fn a_set_is_read_bounded_and_names_its_bad_line() {
        let dir = tempfile::tempdir().expect("ok");
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, "{\"input\": \"a\", \"expected\": \"b\"}\n\n{oops}\n").expect("ok");
        let e = read_set(&p).expect_err("refused").to_string();
        assert!(e.contains("line 3"), "{e}");
        std::fs::write(&p, "\n").expect("ok");
        assert!(matches!(read_set(&p), Err(SetError::Empty { .. })));
        std::fs::write(
            &p,
            format!(
                "{{\"input\": \"{}\", \"expected\": \"b\"}}\n",
                "a".repeat(MAX_ROW_BYTES)
            ),
        )
        .expect("ok");
        assert!(
            read_set(&p)
                .expect_err("refused")
                .to_string()
                .contains("longer than")
        );
        std::fs::write(
            &p,
            "{\"input\": \"a\", \"expected\": \"b\"}\n{\"input\": \"a\", \"expected\": \"c\"}",
        )
        .expect("ok");
        let rows = read_set(&p).expect("ok");
        assert_eq!(rows.len(), 2);
        assert_ne!(rows[0].key, rows[1].key);
        assert_eq!(set_sha256(&rows), set_sha256(&read_set(&p).expect("ok")));
    }
}
