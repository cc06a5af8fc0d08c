//! Labeled rows: JSON lines with the input as `input` (or `text`) and its label as `expected`
//! (or `label`), as the eval sets write them; and the held-out split.

use std::io::BufRead;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::HeadError;

/// The longest row read (a classification input, not a document).
const MAX_LINE: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub text: String,
    pub label: String,
}

/// Reads the rows of a JSONL file; a line that is not a row is an error naming its number.
pub fn read_rows(path: &Path) -> Result<Vec<Row>, HeadError> {
    let file = std::fs::File::open(path)
        .map_err(|e| HeadError::Data(format!("cannot read {}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let at = |m: String| HeadError::Data(format!("{}:{n}: {m}", path.display()));
        let line = line.map_err(|e| at(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            return Err(at(format!(
                "a line of {} bytes (at most {MAX_LINE})",
                line.len()
            )));
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| at(format!("not JSON: {e}")))?;
        let field = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|k| v.get(*k).and_then(serde_json::Value::as_str))
                .map(str::to_string)
        };
        let text =
            field(["input", "text"]).ok_or_else(|| at("no string `input` (or `text`)".into()))?;
        let label = field(["expected", "label"])
            .ok_or_else(|| at("no string `expected` (or `label`)".into()))?;
        rows.push(Row { text, label });
    }
    Ok(rows)
}

/// Whether a row is held out: a fixed share of rows chosen by the hash of their text, so the
/// split does not depend on the rows' order and a row stays on its side across retrains.
pub fn split(rows: &[Row], holdout: f64) -> (Vec<usize>, Vec<usize>) {
    let cut = (holdout.clamp(0.0, 0.9) * u32::MAX as f64) as u32;
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        let h = Sha256::digest(r.text.as_bytes());
        let v = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        if v < cut { held.push(i) } else { train.push(i) }
    }
    // A label whose rows all fell on the held-out side gives one back to training.
    let mut seen = std::collections::HashSet::new();
    for &i in &train {
        seen.insert(rows[i].label.as_str());
    }
    let mut back = Vec::new();
    held.retain(|&i| {
        if seen.insert(rows[i].label.as_str()) {
            back.push(i);
            false
        } else {
            true
        }
    });
    train.extend(back);
    (train, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(text: &str, label: &str) -> Row {
        Row {
            text: text.into(),
            label: label.into(),
        }
    }

    #[test]
    fn the_split_is_by_text_and_every_label_keeps_a_training_row() {
        let rows: Vec<Row> = (0..1000).map(|i| row(&format!("row {i}"), "a")).collect();
        let (train, held) = split(&rows, 0.1);
        assert!((60..140).contains(&held.len()), "{}", held.len());
        let mut reversed = rows.clone();
        reversed.reverse();
        let (_, held_rev) = split(&reversed, 0.1);
        let texts = |rs: &[Row], ix: &[usize]| {
            let mut t: Vec<String> = ix.iter().map(|&i| rs[i].text.clone()).collect();
            t.sort();
            t
        };
        assert_eq!(texts(&rows, &held), texts(&reversed, &held_rev));
        assert_eq!(train.len() + held.len(), 1000);
        // A label whose only row is held out is given back to training.
        let lonely: Vec<Row> = (0..50)
            .map(|i| row(&format!("x{i}"), &format!("l{i}")))
            .collect();
        let (train, _) = split(&lonely, 0.5);
        assert_eq!(train.len(), 50);
    }

    #[test]
    fn rows_are_read_with_either_field_name_and_bad_lines_name_their_number() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("rows.jsonl");
        std::fs::write(
            &p,
            "{\"input\": \"a\", \"expected\": \"x\"}\n\n{\"text\": \"b\", \"label\": \"y\"}\n",
        )
        .expect("write");
        assert_eq!(read_rows(&p).expect("rows"), [row("a", "x"), row("b", "y")]);
        std::fs::write(
            &p,
            "{\"input\": \"a\", \"expected\": \"x\"}\n{\"input\": 3}\n",
        )
        .expect("write");
        let e = read_rows(&p).expect_err("bad").to_string();
        assert!(
            e.ends_with("rows.jsonl:2: no string `input` (or `text`)"),
            "{e}"
        );
    }
}
