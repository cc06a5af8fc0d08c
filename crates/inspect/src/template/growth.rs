//! What a template's syntax tree says about the work it asks for: values that grow from
//! themselves, loops that multiply, macros that call themselves, and names a template builds
//! from pieces to reach Python's runtime. Read from minijinja's parse of the template, without
//! running it; the engine bounds what a render may build in any case, and these findings say
//! that a model file asks for it.

use std::collections::HashMap;

use minijinja::machinery::ast::{self, BinOpKind, CallArg, Expr, Stmt};
use minijinja::machinery::{WhitespaceConfig, parse};
use minijinja::syntax::SyntaxConfig;

use crate::Severity;

/// Nested loops over `range` that would run more passes than this are flagged.
const MAX_PASSES: u64 = 100_000;

/// One thing the tree shows.
pub(crate) struct Grown {
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
}

/// Where a statement sits.
#[derive(Clone, Default)]
struct Place<'a> {
    /// Passes of the enclosing loops over `range` with constant bounds, multiplied (`None`
    /// once one of them has a bound that is not constant).
    passes: Option<u64>,
    /// Inside a loop over `range` (not over the conversation's data).
    in_range_loop: bool,
    /// The macro being defined, if any.
    in_macro: Option<&'a str>,
}

/// What the tree of `source` shows; nothing when it does not parse (the syntax check says so).
pub(crate) fn check(source: &str) -> Vec<Grown> {
    let ws = WhitespaceConfig {
        keep_trailing_newline: false,
        lstrip_blocks: true,
        trim_blocks: true,
    };
    let Ok(tree) = parse(source, "chat", SyntaxConfig, ws) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    let mut push = |g: Grown| {
        // One finding per rule and severity is enough to judge a file by.
        let n = seen.entry(g.rule).or_default();
        *n += 1;
        if *n <= 3 {
            out.push(g);
        }
    };
    stmt(
        &tree,
        &Place {
            passes: Some(1),
            ..Place::default()
        },
        &mut push,
    );
    out
}

fn stmts<'a>(body: &'a [Stmt<'a>], at: &Place<'a>, push: &mut dyn FnMut(Grown)) {
    for s in body {
        stmt(s, at, push);
    }
}

fn stmt<'a>(s: &'a Stmt<'a>, at: &Place<'a>, push: &mut dyn FnMut(Grown)) {
    match s {
        Stmt::Template(t) => stmts(&t.children, at, push),
        Stmt::EmitExpr(e) => expr(&e.expr, at, push),
        Stmt::ForLoop(f) => {
            expr(&f.iter, at, push);
            let range = range_passes(&f.iter);
            let inner = Place {
                passes: match range {
                    Some(Some(n)) => at.passes.map(|p| p.saturating_mul(n)),
                    Some(None) => None,
                    None => at.passes,
                },
                in_range_loop: at.in_range_loop || range.is_some(),
                in_macro: at.in_macro,
            };
            if range.is_some() {
                match inner.passes {
                    Some(p) if p > MAX_PASSES => push(Grown {
                        rule: "template.loop",
                        severity: Severity::Error,
                        message: format!(
                            "loops over `range` nest to {p} passes, far more than any \
                             conversation needs"
                        ),
                    }),
                    None if at.in_range_loop => push(Grown {
                        rule: "template.loop",
                        severity: Severity::Error,
                        message: "loops over `range` nest with bounds that are not constant".into(),
                    }),
                    _ => {}
                }
            }
            if f.recursive {
                push(Grown {
                    rule: "template.recursion",
                    severity: Severity::Warning,
                    message: "a recursive loop: its depth is the data's".into(),
                });
            }
            stmts(&f.body, &inner, push);
            stmts(&f.else_body, at, push);
        }
        Stmt::IfCond(c) => {
            expr(&c.expr, at, push);
            stmts(&c.true_body, at, push);
            stmts(&c.false_body, at, push);
        }
        Stmt::WithBlock(w) => {
            for (_, e) in &w.assignments {
                expr(e, at, push);
            }
            stmts(&w.body, at, push);
        }
        Stmt::Set(set) => {
            expr(&set.expr, at, push);
            if let Some(target) = name_of(&set.target) {
                growth(&target, &set.expr, at, push);
            }
        }
        Stmt::SetBlock(b) => stmts(&b.body, at, push),
        Stmt::AutoEscape(a) => stmts(&a.body, at, push),
        Stmt::FilterBlock(f) => {
            expr(&f.filter, at, push);
            stmts(&f.body, at, push);
        }
        Stmt::Macro(m) => {
            let inner = Place {
                in_macro: Some(m.name),
                ..at.clone()
            };
            // The body's calls of the macro itself are counted here, the rest passed on.
            let mut calls = 0u32;
            stmts(&m.body, &inner, &mut |g: Grown| {
                if g.rule == SELF_CALL {
                    calls += 1;
                } else {
                    push(g);
                }
            });
            match calls {
                0 => {}
                1 => push(Grown {
                    rule: "template.recursion",
                    severity: Severity::Warning,
                    message: format!("the macro `{}` calls itself", m.name),
                }),
                _ => push(Grown {
                    rule: "template.recursion",
                    severity: Severity::Error,
                    message: format!(
                        "the macro `{}` calls itself more than once a level: its work doubles \
                         with each level",
                        m.name
                    ),
                }),
            }
        }
        Stmt::CallBlock(c) => {
            call(&c.call, at, push);
            stmts(&c.macro_decl.body, at, push);
        }
        Stmt::Do(d) => call(&d.call, at, push),
        _ => {}
    }
}

/// What a call of the enclosing macro from its own body reports to that macro. Two calls a
/// level double the work with each level; one, even inside a loop over the data (a tree
/// walked, as templates render nested schemas), does not.
const SELF_CALL: &str = "template.self-call";

fn call<'a>(c: &'a ast::Call<'a>, at: &Place<'a>, push: &mut dyn FnMut(Grown)) {
    if let (Some(name), Expr::Var(v)) = (at.in_macro, &c.expr)
        && v.id == name
    {
        push(Grown {
            rule: SELF_CALL,
            severity: Severity::Info,
            message: String::new(),
        });
    }
    expr(&c.expr, at, push);
    for a in &c.args {
        expr(arg(a), at, push);
    }
}

fn arg<'a>(a: &'a CallArg<'a>) -> &'a Expr<'a> {
    match a {
        CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => e,
    }
}

fn expr<'a>(e: &'a Expr<'a>, at: &Place<'a>, push: &mut dyn FnMut(Grown)) {
    match e {
        Expr::BinOp(b) => {
            if matches!(b.op, BinOpKind::Concat | BinOpKind::Add)
                && let Some(folded) = folded(e)
                && folded.contains("__")
            {
                push(Grown {
                    rule: "template.code",
                    severity: Severity::Critical,
                    message: format!(
                        "builds the name `{}` from pieces, a way to reach the Python runtime \
                         past a check of its words",
                        folded.chars().take(40).collect::<String>()
                    ),
                });
            }
            expr(&b.left, at, push);
            expr(&b.right, at, push);
        }
        Expr::Call(c) => call(c, at, push),
        Expr::UnaryOp(u) => expr(&u.expr, at, push),
        Expr::Slice(s) => {
            expr(&s.expr, at, push);
            for x in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                expr(x, at, push);
            }
        }
        Expr::Compare(c) => {
            expr(&c.expr, at, push);
            for op in &c.ops {
                expr(&op.expr, at, push);
            }
        }
        Expr::IfExpr(i) => {
            expr(&i.test_expr, at, push);
            expr(&i.true_expr, at, push);
            if let Some(f) = &i.false_expr {
                expr(f, at, push);
            }
        }
        Expr::Filter(f) => {
            if let Some(x) = &f.expr {
                expr(x, at, push);
            }
            for a in &f.args {
                expr(arg(a), at, push);
            }
        }
        Expr::Test(t) => {
            expr(&t.expr, at, push);
            for a in &t.args {
                expr(arg(a), at, push);
            }
        }
        Expr::GetAttr(g) => expr(&g.expr, at, push),
        Expr::GetItem(g) => {
            expr(&g.expr, at, push);
            expr(&g.subscript_expr, at, push);
        }
        Expr::List(l) => {
            for x in &l.items {
                expr(x, at, push);
            }
        }
        Expr::Map(m) => {
            for x in m.keys.iter().chain(&m.values) {
                expr(x, at, push);
            }
        }
        Expr::Var(_) | Expr::Const(_) => {}
    }
}

/// A `set` whose value is built from the target itself.
fn growth(target: &str, value: &Expr<'_>, at: &Place<'_>, push: &mut dyn FnMut(Grown)) {
    let mut refs = 0;
    let mut grows = false;
    let mut text = false;
    let mut repeats = false;
    scan_value(
        target,
        value,
        &mut refs,
        &mut grows,
        &mut text,
        &mut repeats,
    );
    if !grows || refs == 0 {
        return;
    }
    if refs >= 2 || repeats {
        push(Grown {
            rule: "template.growth",
            severity: Severity::Critical,
            message: format!(
                "`{target}` is made from {} of itself: it grows exponentially with each pass",
                if repeats {
                    "a repetition"
                } else {
                    "two or more copies"
                }
            ),
        });
    } else if at.in_range_loop && text {
        push(Grown {
            rule: "template.growth",
            severity: Severity::Error,
            message: format!(
                "`{target}` grows by text on every pass of a loop over `range`, not over the \
                 conversation"
            ),
        });
    }
}

fn scan_value(
    target: &str,
    e: &Expr<'_>,
    refs: &mut usize,
    grows: &mut bool,
    text: &mut bool,
    repeats: &mut bool,
) {
    if name_of(e).as_deref() == Some(target) {
        *refs += 1;
        return;
    }
    match e {
        Expr::BinOp(b) => {
            match b.op {
                BinOpKind::Concat => {
                    *grows = true;
                    *text = true;
                }
                BinOpKind::Add => {
                    *grows = true;
                    *text |= is_text(&b.left) || is_text(&b.right);
                }
                BinOpKind::Mul => {
                    *grows = true;
                    let side_is_self = |x: &Expr<'_>| name_of(x).as_deref() == Some(target);
                    let constant = |x: &Expr<'_>| matches!(x, Expr::Const(_));
                    if (side_is_self(&b.left) && !constant(&b.right))
                        || (side_is_self(&b.right) && !constant(&b.left))
                    {
                        *repeats = true;
                    }
                }
                _ => {}
            }
            scan_value(target, &b.left, refs, grows, text, repeats);
            scan_value(target, &b.right, refs, grows, text, repeats);
        }
        Expr::Filter(f) => {
            if let Some(x) = &f.expr {
                scan_value(target, x, refs, grows, text, repeats);
            }
            for a in &f.args {
                scan_value(target, arg(a), refs, grows, text, repeats);
            }
        }
        Expr::Call(c) => {
            for a in &c.args {
                scan_value(target, arg(a), refs, grows, text, repeats);
            }
        }
        Expr::List(l) => {
            for x in &l.items {
                scan_value(target, x, refs, grows, text, repeats);
            }
        }
        Expr::IfExpr(i) => {
            scan_value(target, &i.true_expr, refs, grows, text, repeats);
            if let Some(f) = &i.false_expr {
                scan_value(target, f, refs, grows, text, repeats);
            }
        }
        _ => {}
    }
}

fn is_text(e: &Expr<'_>) -> bool {
    matches!(e, Expr::Const(c) if c.value.as_str().is_some())
}

/// `x` or `ns.x`: the name a `set` assigns to or an expression reads.
fn name_of(e: &Expr<'_>) -> Option<String> {
    match e {
        Expr::Var(v) => Some(v.id.to_string()),
        Expr::GetAttr(g) => match &g.expr {
            Expr::Var(v) => Some(format!("{}.{}", v.id, g.name)),
            _ => None,
        },
        _ => None,
    }
}

/// For a loop over `range(...)`: `Some(Some(passes))` with constant bounds, `Some(None)`
/// without; `None` for a loop over anything else.
fn range_passes(iter: &Expr<'_>) -> Option<Option<u64>> {
    let Expr::Call(c) = iter else { return None };
    let Expr::Var(v) = &c.expr else { return None };
    if v.id != "range" {
        return None;
    }
    let consts: Option<Vec<i64>> = c
        .args
        .iter()
        .map(|a| match a {
            CallArg::Pos(Expr::Const(k)) => k.value.as_i64(),
            _ => None,
        })
        .collect();
    Some(consts.map(|n| {
        let (lo, hi, step) = match n.as_slice() {
            [hi] => (0, *hi, 1),
            [lo, hi] => (*lo, *hi, 1),
            [lo, hi, step, ..] => (*lo, *hi, *step),
            [] => (0, 0, 1),
        };
        if step == 0 {
            return 0;
        }
        (hi.saturating_sub(lo) / step).max(0) as u64
    }))
}

/// The string an expression made only of string constants joined by `~` or `+` comes to.
fn folded(e: &Expr<'_>) -> Option<String> {
    match e {
        Expr::Const(c) => c.value.as_str().map(str::to_string),
        Expr::BinOp(b) if matches!(b.op, BinOpKind::Concat | BinOpKind::Add) => {
            Some(folded(&b.left)? + &folded(&b.right)?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(source: &str) -> Vec<(&'static str, Severity)> {
        check(source)
            .into_iter()
            .map(|g| (g.rule, g.severity))
            .collect()
    }

    #[test]
    fn exponential_growth_is_critical() {
        for t in [
            "{% set ns = namespace(s='a') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "{% set s = 'a' %}{% set s = s + s %}{% set s = s + s %}",
            "{% set ns = namespace(s='a') %}{% for m in messages %}{% set ns.s = ns.s * messages|length %}{% endfor %}",
        ] {
            assert!(
                rules(t).contains(&("template.growth", Severity::Critical)),
                "{t}: {:?}",
                rules(t)
            );
        }
    }

    #[test]
    fn growth_over_the_conversation_is_normal_and_over_range_is_not() {
        let normal = "{% set ns = namespace(system='', n=0) %}{% for m in messages %}{% set ns.system = ns.system + m['content'] %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.system }}";
        assert!(rules(normal).is_empty(), "{:?}", rules(normal));
        let padded = "{% set ns = namespace(s='') %}{% for i in range(100000) %}{% set ns.s = ns.s ~ 'xxxxxxxx' %}{% endfor %}";
        assert!(
            rules(padded).contains(&("template.growth", Severity::Error)),
            "{:?}",
            rules(padded)
        );
        let counter = "{% set ns = namespace(n=0) %}{% for i in range(10) %}{% set ns.n = ns.n + 1 %}{% endfor %}";
        assert!(rules(counter).is_empty(), "{:?}", rules(counter));
    }

    #[test]
    fn loops_that_multiply_are_flagged() {
        let nested = "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}";
        assert!(rules(nested).contains(&("template.loop", Severity::Error)));
        let small =
            "{% for i in range(10) %}{% for j in range(10) %}{{ i }}{% endfor %}{% endfor %}";
        assert!(rules(small).is_empty());
        let data = "{% for m in messages %}{% for t in tools %}{{ t }}{% endfor %}{% endfor %}";
        assert!(rules(data).is_empty());
    }

    #[test]
    fn self_calling_macros_and_pieced_dunders() {
        let r = "{% macro m(x) %}{{ m(x) }}{% endmacro %}{{ m(1) }}";
        assert_eq!(rules(r), [("template.recursion", Severity::Warning)]);
        let twice = "{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(64) }}";
        assert_eq!(rules(twice), [("template.recursion", Severity::Error)]);
        let looped = "{% macro m(xs) %}{% for x in xs %}{{ m(x) }}{% endfor %}{% endmacro %}";
        assert_eq!(rules(looped), [("template.recursion", Severity::Warning)]);
        let d = "{{ ''[('_' ~ '_' ~ 'class' ~ '_' ~ '_')] }}";
        assert!(
            rules(d).contains(&("template.code", Severity::Critical)),
            "{:?}",
            rules(d)
        );
        assert!(
            check("{% for %}").is_empty(),
            "does not parse: nothing here"
        );
    }
}
