//! What rendering a chat template may build: a bound on memory, beside minijinja's bound on
//! instructions (fuel).
//!
//! A template comes from the model file, so it is untrusted code. Fuel stops one that loops,
//! but a few instructions can still ask for gigabytes: a string doubled thirty times is thirty
//! concatenations. So every operation that can make a value larger than its inputs is checked
//! *before* it allocates, and what it makes is charged to a per-render budget:
//!
//! - the compiled template's `~`, `+` and `*` and its list literals are rewritten into calls
//!   of bounded functions ([`rewrite`]), and each literal piece of output charges its length
//!   on the way out (captured output, macro calls included, never reaches the writer);
//! - the filters and Python-style methods that can amplify (`join`, `replace`, `indent`,
//!   `format`, `tojson`, `split`, `batch`, …) are wrapped with a check on their arguments;
//! - every value written out is charged by the formatter.
//!
//! One string may be at most [`MAX_STRING`] bytes, one list [`MAX_ITEMS`] items, and one
//! render may build [`MAX_RENDER`] bytes in all; past a bound the render stops with an error
//! that says so. Rendering runs on a thread with a large stack (see `super`), so deep
//! recursion in templates' values cannot overflow it either.

use std::sync::atomic::{AtomicUsize, Ordering};

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::{Object, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

/// The longest string a render may build.
pub(super) const MAX_STRING: usize = 4 << 20;
/// The most items one list built while rendering may hold.
pub(super) const MAX_ITEMS: usize = 100_000;
/// Bytes a render may build in all: strings made by operators and filters, and output.
pub(super) const MAX_RENDER: usize = 64 << 20;
/// How deep a value is measured before it counts as too deep.
const MAX_DEPTH: usize = 160;

const CONCAT: &str = "__smallfirst_concat";
const ADD: &str = "__smallfirst_add";
const MUL: &str = "__smallfirst_mul";
const LIST: &str = "__smallfirst_list";
const SLICE: &str = "__smallfirst_slice";
const CHARGE: &str = "__smallfirst_charge";
const SPENT: &str = "__smallfirst_spent";

/// Marks an error as a bound being reached (rather than the template's own failure).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Exceeded(pub String);

fn exceeded(what: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, what.clone()).with_source(Exceeded(what))
}

/// What one render has built so far.
#[derive(Debug, Default)]
struct Spent(AtomicUsize);

impl Object for Spent {}

/// Charges `bytes` to the render's budget.
fn charge(state: &State, bytes: usize) -> Result<(), Error> {
    let spent = state.get_or_set_temp_object(SPENT, Spent::default);
    let total = spent
        .0
        .fetch_add(bytes, Ordering::Relaxed)
        .saturating_add(bytes);
    if total > MAX_RENDER {
        return Err(exceeded(format!(
            "the chat template built more than {} MiB while rendering",
            MAX_RENDER >> 20
        )));
    }
    Ok(())
}

/// Checks that a string of `len` bytes may be built, and charges it.
fn room_for(state: &State, len: usize) -> Result<(), Error> {
    if len > MAX_STRING {
        return Err(exceeded(format!(
            "the chat template built a string longer than {} MiB",
            MAX_STRING >> 20
        )));
    }
    charge(state, len)
}

fn room_for_items(state: &State, items: usize) -> Result<(), Error> {
    if items > MAX_ITEMS {
        return Err(exceeded(format!(
            "the chat template built a list of more than {MAX_ITEMS} items"
        )));
    }
    charge(state, items.saturating_mul(std::mem::size_of::<Value>()))
}

/// An upper bound on the bytes `v` takes written out, measured without writing it (stopping
/// once it passes `MAX_STRING`); `usize::MAX` for values too deep to measure.
pub(crate) fn written_len(v: &Value) -> usize {
    fn go(v: &Value, depth: usize, acc: &mut usize) {
        if depth > MAX_DEPTH {
            *acc = usize::MAX;
            return;
        }
        if *acc > MAX_STRING {
            return;
        }
        match v.kind() {
            ValueKind::String => *acc = acc.saturating_add(v.as_str().map_or(0, str::len)),
            ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
                let is_map = v.kind() == ValueKind::Map;
                let Ok(items) = v.try_iter() else {
                    *acc = acc.saturating_add(32);
                    return;
                };
                for item in items {
                    *acc = acc.saturating_add(4);
                    if is_map && let Ok(value) = v.get_item(&item) {
                        go(&value, depth + 1, acc);
                    }
                    go(&item, depth + 1, acc);
                    if *acc > MAX_STRING {
                        return;
                    }
                }
            }
            _ => *acc = acc.saturating_add(32),
        }
    }
    let mut acc = 2;
    go(v, 0, &mut acc);
    acc
}

/// The instructions with every operator that can grow a value made a call of a bounded
/// function, and every literal piece of output preceded by a charge of its length. Jump
/// targets and macro offsets are moved with the instructions they point at.
pub(crate) fn rewrite<'s>(old: &Instructions<'s>) -> Instructions<'s> {
    let n = old.len() as u32;
    let width = |i: &Instruction| {
        if matches!(i, Instruction::EmitRaw(_)) {
            4
        } else {
            1
        }
    };
    let mut moved = Vec::with_capacity(old.len() + 1);
    let mut at = 0u32;
    for idx in 0..n {
        moved.push(at);
        at += old.get(idx).map_or(1, width);
    }
    moved.push(at);
    let target = |t: u32| moved.get(t as usize).copied().unwrap_or(at);
    let mut new = Instructions::new(old.name(), old.source());
    for idx in 0..n {
        let Some(instr) = old.get(idx) else { continue };
        let span = old.get_span(idx);
        let line = old.get_line(idx);
        let mut add = |i: Instruction<'s>| {
            if let Some(span) = span {
                new.add_with_span(i, span);
            } else if let Some(line) = line {
                new.add_with_line(i, line.min(u16::MAX as usize) as u16);
            } else {
                new.add(i);
            }
        };
        match instr {
            Instruction::EmitRaw(text) => {
                add(Instruction::LoadConst(Value::from(text.len())));
                add(Instruction::CallFunction(CHARGE, Some(1)));
                add(Instruction::DiscardTop);
                add(Instruction::EmitRaw(text));
            }
            Instruction::StringConcat => add(Instruction::CallFunction(CONCAT, Some(2))),
            Instruction::Slice => add(Instruction::CallFunction(SLICE, Some(4))),
            Instruction::Add => add(Instruction::CallFunction(ADD, Some(2))),
            Instruction::Mul => add(Instruction::CallFunction(MUL, Some(2))),
            Instruction::BuildList(Some(items)) if *items <= usize::from(u16::MAX) => {
                add(Instruction::CallFunction(LIST, Some(*items as u16)));
            }
            Instruction::Jump(t) => add(Instruction::Jump(target(*t))),
            Instruction::JumpIfFalse(t) => add(Instruction::JumpIfFalse(target(*t))),
            Instruction::JumpIfFalseOrPop(t) => add(Instruction::JumpIfFalseOrPop(target(*t))),
            Instruction::JumpIfTrueOrPop(t) => add(Instruction::JumpIfTrueOrPop(target(*t))),
            Instruction::Iterate(t) => add(Instruction::Iterate(target(*t))),
            Instruction::BuildMacro(name, offset, flags) => {
                add(Instruction::BuildMacro(name, target(*offset), *flags));
            }
            other => add(other.clone()),
        }
    }
    new
}

/// The original operators, evaluated once a bound has been checked. They run in an
/// environment of their own, whose instructions are not rewritten.
struct Ops {
    add: minijinja::Expression<'static, 'static>,
    mul: minijinja::Expression<'static, 'static>,
    slice: minijinja::Expression<'static, 'static>,
}

fn ops() -> &'static Ops {
    static OPS: std::sync::OnceLock<Ops> = std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        // Kept for the process's life, as the expressions borrow it.
        let env: &'static Environment<'static> = Box::leak(Box::new(Environment::new()));
        // Both expressions are fixed and valid: compiling them cannot fail.
        #[expect(clippy::expect_used, reason = "a fixed, valid expression")]
        let compile = |e: &'static str| env.compile_expression(e).expect("a fixed expression");
        Ops {
            add: compile("a + b"),
            mul: compile("a * b"),
            slice: compile("a[b:c:d]"),
        }
    })
}

fn concat(state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    let len = written_len(a).saturating_add(written_len(b));
    room_for(state, len)?;
    Ok(Value::from(format!("{a}{b}")))
}

fn add(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        room_for(state, x.len().saturating_add(y.len()))?;
    } else if let (Some(x), Some(y)) = (seq_len(&a), seq_len(&b)) {
        room_for_items(state, x.saturating_add(y))?;
    }
    ops().add.eval(minijinja::context! { a, b })
}

fn mul(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let times = |v: &Value| v.as_usize();
    if let (Some(s), Some(n)) = (a.as_str().or(b.as_str()), times(&b).or(times(&a))) {
        room_for(state, s.len().saturating_mul(n))?;
    } else if let (Some(items), Some(n)) = (seq_len(&a).or(seq_len(&b)), times(&b).or(times(&a))) {
        room_for_items(state, items.saturating_mul(n))?;
    }
    ops().mul.eval(minijinja::context! { a, b })
}

fn seq_len(v: &Value) -> Option<usize> {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
        .then(|| v.len())
        .flatten()
}

/// `a[b:c:d]`: no larger than `a`, but a copy, so charged.
fn slice(state: &State, a: Value, b: Value, c: Value, d: Value) -> Result<Value, Error> {
    let out = ops().slice.eval(minijinja::context! { a, b, c, d })?;
    charge(state, written_len(&out))?;
    Ok(out)
}

fn list(state: &State, items: Rest<Value>) -> Result<Value, Error> {
    room_for_items(state, items.len())?;
    Ok(Value::from(items.0))
}

fn charge_fn(state: &State, bytes: usize) -> Result<Value, Error> {
    charge(state, bytes)?;
    Ok(Value::UNDEFINED)
}

/// Adds the bounded operators to `env`, wraps its amplifying filters, and charges what it
/// writes out.
pub(crate) fn install(env: &mut Environment<'static>) {
    env.add_function(CONCAT, |state: &State, a: Value, b: Value| {
        concat(state, &a, &b)
    });
    env.add_function(ADD, add);
    env.add_function(MUL, mul);
    env.add_function(LIST, list);
    env.add_function(SLICE, slice);
    env.add_function(CHARGE, charge_fn);
    env.set_formatter(|out, state, value| {
        let len = value.as_str().map_or_else(|| written_len(value), str::len);
        charge(state, len)?;
        minijinja::escape_formatter(out, state, value)
    });
    for (name, original, check) in FILTER_CHECKS {
        let original = original();
        env.add_filter(*name, move |state: &State, args: Rest<Value>| {
            check(state, &args)?;
            let out = original.call(state, &args)?;
            charge(state, written_len(&out))?;
            Ok::<_, Error>(out)
        });
    }
    env.set_unknown_method_callback(|state, value, method, args| {
        check_method(state, value, method, args)?;
        let out = minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)?;
        charge(state, written_len(&out))?;
        Ok(out)
    });
}

type Check = fn(&State, &[Value]) -> Result<(), Error>;
/// A filter's name, the built-in it stands for, and the check that runs before it.
type Bounded = (&'static str, fn() -> Value, Check);

use minijinja::filters as f;

/// The filters whose output can be much larger than their input: each name, the built-in it
/// stands for, and the check that runs before it.
const FILTER_CHECKS: &[Bounded] = &[
    (
        "join",
        || Value::from_function(f::join),
        |s, a| join_check(s, a.first(), a.get(1)),
    ),
    (
        "replace",
        || Value::from_function(f::replace),
        |s, a| replace_check(s, a.first(), a.get(1), a.get(2)),
    ),
    ("indent", || Value::from_function(f::indent), indent_check),
    ("format", || Value::from_function(f::format), format_check),
    (
        "tojson",
        || Value::from_function(f::tojson),
        |s, a| scaled(s, a.first(), 2 + indent_of(a)),
    ),
    (
        "pprint",
        || Value::from_function(f::pprint),
        |s, a| scaled(s, a.first(), 4),
    ),
    (
        "string",
        || Value::from_function(f::string),
        |s, a| scaled(s, a.first(), 1),
    ),
    (
        "escape",
        || Value::from_function(f::escape),
        |s, a| scaled(s, a.first(), 6),
    ),
    (
        "e",
        || Value::from_function(f::escape),
        |s, a| scaled(s, a.first(), 6),
    ),
    (
        "list",
        || Value::from_function(f::list),
        |s, a| items_check(s, a.first().and_then(Value::len)),
    ),
    ("batch", || Value::from_function(f::batch), count_check),
    ("slice", || Value::from_function(f::slice), count_check),
    (
        "split",
        || Value::from_function(f::split),
        |s, a| pieces_check(s, a.first(), a.get(1)),
    ),
    (
        "lines",
        || Value::from_function(f::lines),
        |s, a| pieces_check(s, a.first(), Some(&Value::from("\n"))),
    ),
    // Filters whose output is about the size of their input, which copy it: the input written
    // out may be at most one string's bound (a lazily repeated list is not), and the output is
    // charged.
    ("lower", || Value::from_function(f::lower), inputs_check),
    ("upper", || Value::from_function(f::upper), inputs_check),
    ("title", || Value::from_function(f::title), inputs_check),
    (
        "capitalize",
        || Value::from_function(f::capitalize),
        inputs_check,
    ),
    ("trim", || Value::from_function(f::trim), inputs_check),
    ("reverse", || Value::from_function(f::reverse), inputs_check),
    ("map", || Value::from_function(f::map), inputs_check),
    ("select", || Value::from_function(f::select), inputs_check),
    ("reject", || Value::from_function(f::reject), inputs_check),
    (
        "selectattr",
        || Value::from_function(f::selectattr),
        inputs_check,
    ),
    (
        "rejectattr",
        || Value::from_function(f::rejectattr),
        inputs_check,
    ),
    ("sort", || Value::from_function(f::sort), inputs_check),
    ("unique", || Value::from_function(f::unique), inputs_check),
    ("groupby", || Value::from_function(f::groupby), inputs_check),
    ("chain", || Value::from_function(f::chain), inputs_check),
    ("zip", || Value::from_function(f::zip), inputs_check),
    ("items", || Value::from_function(f::items), inputs_check),
    (
        "dictsort",
        || Value::from_function(f::dictsort),
        inputs_check,
    ),
];

/// The inputs of a filter that copies them, written out, within one string's bound.
fn inputs_check(_: &State, args: &[Value]) -> Result<(), Error> {
    let len = args
        .iter()
        .map(written_len)
        .fold(0usize, usize::saturating_add);
    if len > MAX_STRING {
        return Err(exceeded(format!(
            "the chat template passed more than {} MiB to a filter",
            MAX_STRING >> 20
        )));
    }
    Ok(())
}

fn join_check(state: &State, items: Option<&Value>, sep: Option<&Value>) -> Result<(), Error> {
    let Some(items) = items else { return Ok(()) };
    let sep = sep.and_then(Value::as_str).map_or(0, str::len);
    let n = items.len().unwrap_or(0);
    room_for(
        state,
        written_len(items).saturating_add(n.saturating_mul(sep)),
    )
}

fn replace_check(
    state: &State,
    s: Option<&Value>,
    from: Option<&Value>,
    to: Option<&Value>,
) -> Result<(), Error> {
    let len = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, str::len);
    let (s_len, from_len, to_len) = (len(s), len(from), len(to));
    // Every occurrence (or, for an empty pattern, every gap) may become `to`.
    let places = s_len / from_len.max(1) + 1;
    let grown = s_len.saturating_add(places.saturating_mul(to_len.saturating_sub(from_len)));
    room_for(state, grown)
}

fn indent_check(state: &State, args: &[Value]) -> Result<(), Error> {
    let Some(s) = args.first().and_then(Value::as_str) else {
        return Ok(());
    };
    // The width may be a number or a string, positional or named: the largest of them.
    let width = args[1..]
        .iter()
        .flat_map(|v| {
            if v.kind() == ValueKind::Map {
                v.try_iter()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| v.get_item(&k).ok())
                    .collect::<Vec<_>>()
            } else {
                vec![v.clone()]
            }
        })
        .map(|v| {
            v.as_usize()
                .or_else(|| v.as_str().map(str::len))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(4);
    let lines = s.bytes().filter(|&b| b == b'\n').count() + 1;
    room_for(state, s.len().saturating_add(lines.saturating_mul(width)))
}

fn format_check(state: &State, args: &[Value]) -> Result<(), Error> {
    let Some(f) = args.first().and_then(Value::as_str) else {
        return Ok(());
    };
    check_widths(f)?;
    let args_len = args[1..]
        .iter()
        .map(written_len)
        .fold(0usize, usize::saturating_add);
    room_for(state, f.len().saturating_add(args_len))
}

/// A format string may not ask for a field wider than a few thousand characters.
fn check_widths(f: &str) -> Result<(), Error> {
    let longest_number = f
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_number > 4 {
        return Err(exceeded(
            "the chat template asked for a formatted field wider than 9999 characters".into(),
        ));
    }
    Ok(())
}

fn indent_of(args: &[Value]) -> usize {
    args.get(1).and_then(Value::as_usize).unwrap_or(0)
}

fn scaled(state: &State, v: Option<&Value>, factor: usize) -> Result<(), Error> {
    let Some(v) = v else { return Ok(()) };
    room_for(state, written_len(v).saturating_mul(factor))
}

fn items_check(state: &State, items: Option<usize>) -> Result<(), Error> {
    room_for_items(state, items.unwrap_or(0))
}

fn count_check(state: &State, args: &[Value]) -> Result<(), Error> {
    let count = args.get(1).and_then(Value::as_usize).unwrap_or(0);
    let items = args.first().and_then(Value::len).unwrap_or(0);
    room_for_items(state, count.max(items))
}

fn pieces_check(state: &State, s: Option<&Value>, sep: Option<&Value>) -> Result<(), Error> {
    let Some(s) = s.and_then(Value::as_str) else {
        return Ok(());
    };
    let pieces = match sep.and_then(Value::as_str) {
        Some(sep) if !sep.is_empty() => s.matches(sep).count() + 1,
        _ => s.split_whitespace().count(),
    };
    room_for_items(state, pieces)
}

/// The same checks for the Python string methods templates call (`"sep".join(items)`,
/// `s.replace(a, b)`, `"{}".format(x)`, `s.split()`).
fn check_method(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<(), Error> {
    match method {
        "join" => join_check(state, args.first(), Some(value)),
        "replace" => replace_check(state, Some(value), args.first(), args.get(1)),
        "format" => {
            let mut all = vec![value.clone()];
            all.extend_from_slice(args);
            format_check(state, &all)
        }
        "split" | "rsplit" => pieces_check(state, Some(value), args.first()),
        "splitlines" => pieces_check(state, Some(value), Some(&Value::from("\n"))),
        _ => Ok(()),
    }
}
