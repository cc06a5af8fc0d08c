//! Pickle streams walked, never loaded: every opcode of protocols 0 to 5 is decoded with its
//! argument, a small model of the stack and memo resolves what `STACK_GLOBAL` imports (also
//! through memo round trips), and every imported global is checked: one on the denylist is
//! critical, one on neither list is an error naming it (never clean), and only what
//! checkpoints and common ML objects need passes (`globals`). A stream that breaks off is read
//! up to where it breaks: `pickle.load` would have run everything before the error. Pickles
//! that follow one another (PyTorch's legacy format writes several) are all walked, whatever
//! opcode each starts with.

use std::collections::HashMap;

use crate::{Finding, Severity};

mod globals;

use globals::{ALLOW, DENY, denied_module, matches, py3_module};

/// Every name the import can resolve to: `module.name` (with Python 2 modules renamed), and,
/// since a dotted name resolves through attributes (`logging` + `os.system`), each tail of it
/// that starts at a dot.
fn resolutions(g: &Global) -> Vec<String> {
    let full = format!("{}.{}", py3_module(&g.module), g.name);
    let mut out = vec![full.clone()];
    for (i, _) in full.match_indices('.') {
        let tail = &full[i + 1..];
        if tail.contains('.') {
            out.push(tail.to_string());
        }
    }
    out
}

/// A global imported by the stream, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub module: String,
    pub name: String,
    pub offset: u64,
}

impl Global {
    /// Module and name are Python identifiers joined by dots (or could not be followed):
    /// what an import in a pickle looks like, unlike bytes of data read as one.
    fn reads_as_a_name(&self) -> bool {
        let ident = |s: &str| {
            s == UNRESOLVED
                || (!s.is_empty()
                    && s.split('.').all(|part| {
                        part.chars()
                            .next()
                            .is_some_and(|c| c.is_alphabetic() || c == '_')
                            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
                    }))
        };
        ident(&self.module) && ident(&self.name)
    }
}

/// What walking a stream found.
#[derive(Debug, Default)]
pub struct Walk {
    pub globals: Vec<Global>,
    pub findings: Vec<Finding>,
    /// Bytes the stream (or streams) took.
    pub consumed: usize,
    /// Ended with STOP, not broken off.
    pub complete: bool,
    /// It broke off because the data ended (a cut file, or a read limit), not on a bad opcode.
    pub ran_out: bool,
}

/// First bytes of a pickle: PROTO, or what protocol 0 and 1 pickles usually open with (GLOBAL,
/// MARK, empty containers).
pub const STARTS: [u8; 6] = [0x80, b'c', b'(', b']', b'}', b')'];

/// What an import whose module or name the walk could not follow is recorded as.
const UNRESOLVED: &str = "<unresolved>";

/// A stack entry, as much of it as the checks need.
#[derive(Debug, Clone)]
enum Item {
    Mark,
    Str(String),
    Other,
}

/// Walks the pickle stream (and any pickles right after it, as PyTorch's legacy format writes)
/// at the start of `data`. `base` is added to offsets in findings (for members of a container).
pub fn walk(data: &[u8], base: u64, strict: bool) -> Walk {
    let mut out = Walk::default();
    let mut at = 0;
    match one(data, at, &mut out.globals) {
        Ok(end) => {
            out.complete = true;
            at = end;
            // More pickles may follow, or data (PyTorch's legacy format puts raw tensor bytes
            // after its pickles). What follows is walked; a walk that breaks off having
            // imported nothing that reads as a name was data.
            while at < data.len() {
                let mut more = Vec::new();
                match one(data, at, &mut more) {
                    Ok(end) => {
                        out.globals.extend(more);
                        at = end;
                    }
                    Err((end, why)) if more.iter().any(Global::reads_as_a_name) => {
                        out.globals.extend(more);
                        out.complete = false;
                        out.findings.push(broken(base, end, &why));
                        at = end;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        Err((end, why)) => {
            out.ran_out = end >= data.len() || why.contains("past the end") || why.contains("no ");
            out.findings.push(broken(base, end, &why));
            at = end;
        }
    }
    out.consumed = at;
    for g in &out.globals {
        let full = format!("{}.{}", g.module, g.name);
        let names = resolutions(g);
        let denied = names
            .iter()
            .find(|n| DENY.iter().any(|p| matches(p, n)))
            .cloned()
            .or_else(|| {
                // A module reached as another's attribute (`posixpath.os`).
                full.split('.')
                    .skip(1)
                    .find_map(denied_module)
                    .map(|p| p.trim_end_matches(".*").to_string())
            });
        if g.module == UNRESOLVED || g.name == UNRESOLVED {
            out.findings.push(
                Finding::new(
                    "pickle.global-unresolved",
                    Severity::Critical,
                    format!("imports `{full}`: a name built at load time, which cannot be checked"),
                )
                .at(base + g.offset),
            );
        } else if let Some(n) = denied {
            out.findings.push(
                Finding::new(
                    "pickle.global-denied",
                    Severity::Critical,
                    format!(
                        "imports `{full}` (`{n}`), which can run code or reach the system on load"
                    ),
                )
                .at(base + g.offset),
            );
        } else if !ALLOW.iter().any(|p| matches(p, &names[0])) {
            out.findings.push(
                Finding::new(
                    "pickle.global-unknown",
                    if strict {
                        Severity::Critical
                    } else {
                        Severity::Error
                    },
                    format!(
                        "imports `{full}`, which is not on the list of globals known to be safe: \
                         loading the file calls it with arguments the file chooses"
                    ),
                )
                .at(base + g.offset),
            );
        }
    }
    out
}

fn broken(base: u64, end: usize, why: &str) -> Finding {
    Finding::new(
        "pickle.broken",
        Severity::Warning,
        format!("the stream breaks off ({why}); what came before would already have run"),
    )
    .at(base + end as u64)
}

/// One pickle from `start`; `Ok(end)` after its STOP, `Err((where, why))` when it breaks.
fn one(data: &[u8], start: usize, globals: &mut Vec<Global>) -> Result<usize, (usize, String)> {
    let mut at = start;
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u64, Item> = HashMap::new();
    let err = |at: usize, why: &str| Err((at, why.to_string()));
    // Stack helpers: the model never fails on underflow, it only loses precision.
    fn pop(stack: &mut Vec<Item>) -> Item {
        stack.pop().unwrap_or(Item::Other)
    }
    fn pop_mark(stack: &mut Vec<Item>) {
        while let Some(i) = stack.pop() {
            if matches!(i, Item::Mark) {
                break;
            }
        }
    }
    loop {
        let Some(&op) = data.get(at) else {
            return err(at, "no STOP");
        };
        let op_at = at;
        at += 1;
        // Fixed-size and length-prefixed arguments.
        let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
            let s = data.get(*at..at.checked_add(n)?)?;
            *at += n;
            Some(s)
        };
        let le = |b: &[u8]| b.iter().rev().fold(0u64, |n, &x| (n << 8) | u64::from(x));
        let line = |at: &mut usize| -> Option<&[u8]> {
            let rest = data.get(*at..)?;
            let end = rest.iter().position(|&b| b == b'\n')?;
            *at += end + 1;
            Some(&rest[..end])
        };
        macro_rules! arg {
            ($n:expr) => {
                match take(&mut at, $n) {
                    Some(b) => b,
                    None => return err(op_at, "an argument runs past the end"),
                }
            };
        }
        macro_rules! sized {
            ($n:expr) => {{
                let n = le(arg!($n));
                match usize::try_from(n).ok().and_then(|n| take(&mut at, n)) {
                    Some(b) => b,
                    None => return err(op_at, "a length runs past the end"),
                }
            }};
        }
        macro_rules! text_line {
            () => {
                match line(&mut at) {
                    Some(b) => b,
                    None => return err(op_at, "a text argument has no newline"),
                }
            };
        }
        match op {
            b'.' => return Ok(at),
            b'(' => stack.push(Item::Mark),
            b'0' => {
                pop(&mut stack);
            }
            b'1' => pop_mark(&mut stack),
            b'2' => {
                let top = stack.last().cloned().unwrap_or(Item::Other);
                stack.push(top);
            }
            // Numbers and constants.
            b'F' | b'I' | b'L' => {
                text_line!();
                stack.push(Item::Other);
            }
            b'J' => {
                arg!(4);
                stack.push(Item::Other);
            }
            b'K' => {
                arg!(1);
                stack.push(Item::Other);
            }
            b'M' => {
                arg!(2);
                stack.push(Item::Other);
            }
            b'G' => {
                arg!(8);
                stack.push(Item::Other);
            }
            0x8a => {
                sized!(1);
                stack.push(Item::Other);
            }
            0x8b => {
                sized!(4);
                stack.push(Item::Other);
            }
            b'N' | 0x88 | 0x89 | b'}' | b']' | b')' | 0x8f => stack.push(Item::Other),
            // Strings: kept, since STACK_GLOBAL takes its module and name from them.
            b'S' | b'V' => {
                let s = text_line!();
                // Python decodes escapes here; a string with one is not followed.
                if s.contains(&b'\\') {
                    stack.push(Item::Other);
                } else {
                    let s = String::from_utf8_lossy(s);
                    stack.push(Item::Str(s.trim_matches(['\'', '"']).to_string()));
                }
            }
            b'T' | b'X' => {
                let s = sized!(4);
                stack.push(Item::Str(String::from_utf8_lossy(s).into_owned()));
            }
            b'U' | 0x8c => {
                let s = sized!(1);
                stack.push(Item::Str(String::from_utf8_lossy(s).into_owned()));
            }
            0x8d => {
                let s = sized!(8);
                stack.push(Item::Str(String::from_utf8_lossy(s).into_owned()));
            }
            // Bytes.
            b'B' => {
                sized!(4);
                stack.push(Item::Other);
            }
            b'C' => {
                sized!(1);
                stack.push(Item::Other);
            }
            0x8e | 0x96 => {
                sized!(8);
                stack.push(Item::Other);
            }
            0x97 => stack.push(Item::Other),
            0x98 => {}
            // Containers.
            b'a' => {
                pop(&mut stack);
            }
            b'e' | b'u' | 0x90 => pop_mark(&mut stack),
            b's' => {
                pop(&mut stack);
                pop(&mut stack);
            }
            b'b' => {
                pop(&mut stack);
            }
            b'd' | b'l' | b't' | 0x91 | b'o' => {
                pop_mark(&mut stack);
                stack.push(Item::Other);
            }
            0x85 => {
                pop(&mut stack);
                stack.push(Item::Other);
            }
            0x86 => {
                pop(&mut stack);
                pop(&mut stack);
                stack.push(Item::Other);
            }
            0x87 => {
                for _ in 0..3 {
                    pop(&mut stack);
                }
                stack.push(Item::Other);
            }
            // Imports and calls.
            b'c' | b'i' => {
                let module = String::from_utf8_lossy(text_line!()).into_owned();
                let name = String::from_utf8_lossy(text_line!()).into_owned();
                globals.push(Global {
                    module,
                    name,
                    offset: op_at as u64,
                });
                if op == b'i' {
                    pop_mark(&mut stack);
                }
                stack.push(Item::Other);
            }
            0x93 => {
                let name = pop(&mut stack);
                let module = pop(&mut stack);
                let text = |i: Item| match i {
                    Item::Str(s) => s,
                    _ => UNRESOLVED.to_string(),
                };
                globals.push(Global {
                    module: text(module),
                    name: text(name),
                    offset: op_at as u64,
                });
                stack.push(Item::Other);
            }
            b'R' | 0x81 => {
                pop(&mut stack);
                pop(&mut stack);
                stack.push(Item::Other);
            }
            0x92 => {
                for _ in 0..3 {
                    pop(&mut stack);
                }
                stack.push(Item::Other);
            }
            b'P' => {
                text_line!();
                stack.push(Item::Other);
            }
            b'Q' => {
                pop(&mut stack);
                stack.push(Item::Other);
            }
            // Imports through the copyreg extension registry: nothing to check them against.
            0x82..=0x84 => {
                arg!(match op {
                    0x82 => 1,
                    0x83 => 2,
                    _ => 4,
                });
                globals.push(Global {
                    module: "copyreg".into(),
                    name: UNRESOLVED.into(),
                    offset: op_at as u64,
                });
                stack.push(Item::Other);
            }
            // Memo.
            b'p' => {
                let key = text_line!();
                let key = String::from_utf8_lossy(key)
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(u64::MAX);
                memo.insert(key, stack.last().cloned().unwrap_or(Item::Other));
            }
            b'q' => {
                let key = le(arg!(1));
                memo.insert(key, stack.last().cloned().unwrap_or(Item::Other));
            }
            b'r' => {
                let key = le(arg!(4));
                memo.insert(key, stack.last().cloned().unwrap_or(Item::Other));
            }
            0x94 => {
                let key = memo.len() as u64;
                memo.insert(key, stack.last().cloned().unwrap_or(Item::Other));
            }
            b'g' => {
                let key = text_line!();
                let key = String::from_utf8_lossy(key)
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(u64::MAX);
                stack.push(memo.get(&key).cloned().unwrap_or(Item::Other));
            }
            b'h' => {
                let key = le(arg!(1));
                stack.push(memo.get(&key).cloned().unwrap_or(Item::Other));
            }
            b'j' => {
                let key = le(arg!(4));
                stack.push(memo.get(&key).cloned().unwrap_or(Item::Other));
            }
            // Framing.
            0x80 => {
                arg!(1);
            }
            0x95 => {
                arg!(8);
            }
            _ => return err(op_at, &format!("unknown opcode 0x{op:02x}")),
        }
    }
}

/// Whether `head` looks like the start of a pickle (protocol 2 or later announce themselves).
pub fn sniff(head: &[u8]) -> bool {
    head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1])
}
