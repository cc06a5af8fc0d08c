//! API keys: who may call the API, each under a name that traffic is attributed to.
//!
//! Keys come from an environment variable (`[server] api_keys_env`: entries separated by
//! commas or whitespace, each `name:key` or a bare key, named `key-1`, `key-2`, … in order) or
//! from a file of hashed keys (`[server] api_keys_file`: a line per key, `name sha256-hex`,
//! `#` comments), or both. Only SHA-256 digests are kept; a presented key is hashed and compared
//! with every digest in constant time, so neither the keys nor which one matched leak through
//! timing. Clients send `Authorization: Bearer KEY` (what OpenAI's SDKs send) or
//! `x-api-key: KEY` (Anthropic's).

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why the keys could not be read; every message names the variable, file or line.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`{var}` (`server.api_keys_env`) is not set or empty")]
    Unset { var: String },
    #[error("cannot read the key file `{path}`: {reason}")]
    File { path: String, reason: String },
    #[error("{source_}: line {line}: {reason}")]
    Line {
        source_: String,
        line: usize,
        reason: String,
    },
}

/// The keys a server accepts. Empty: the API is open.
#[derive(Clone, Default)]
pub struct Keys {
    entries: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Keys").field("names", &names).finish()
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Keys {
    /// No keys: every request is let in.
    pub fn none() -> Self {
        Keys::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names of the keys, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Keys given as text, as `api_keys_env` holds them.
    pub fn parse(source: &str, text: &str) -> Result<Keys, KeyError> {
        let mut keys = Keys::default();
        for (i, entry) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (name, key) = match entry.split_once(':') {
                Some((name, key)) if valid_name(name) => (name.to_string(), key),
                _ => (format!("key-{}", i + 1), entry),
            };
            if key.len() < 8 {
                return Err(KeyError::Line {
                    source_: source.into(),
                    line: i + 1,
                    reason: format!("the key named `{name}` is shorter than 8 characters"),
                });
            }
            keys.add(source, i + 1, name, digest(key))?;
        }
        Ok(keys)
    }

    /// Keys from the variable `var`.
    pub fn from_env(var: &str) -> Result<Keys, KeyError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Keys::parse(&format!("`{var}`"), &v),
            _ => Err(KeyError::Unset { var: var.into() }),
        }
    }

    /// Keys from a file of `name sha256-hex` lines.
    pub fn from_file(path: &Path) -> Result<Keys, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let source = path.display().to_string();
        let mut keys = Keys::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| KeyError::Line {
                source_: source.clone(),
                line: i + 1,
                reason: reason.into(),
            };
            let mut fields = line.split_whitespace();
            let (Some(name), Some(hash), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("expected `name sha256-hex`"));
            };
            if !valid_name(name) {
                return Err(bad("names are 1 to 64 letters, digits, `_`, `-` or `.`"));
            }
            let hex_part = hash.strip_prefix("sha256:").unwrap_or(hash);
            let mut d = [0u8; 32];
            if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut d).is_err() {
                return Err(bad(
                    "the hash must be 64 hex digits (hint: printf %s \"$KEY\" | sha256sum)",
                ));
            }
            keys.add(&source, i + 1, name.to_string(), d)?;
        }
        Ok(keys)
    }

    /// Both sources together.
    pub fn merge(mut self, other: Keys) -> Result<Keys, KeyError> {
        for (name, d) in other.entries {
            self.add("the key file", 0, name, d)?;
        }
        Ok(self)
    }

    fn add(
        &mut self,
        source: &str,
        line: usize,
        name: String,
        d: [u8; 32],
    ) -> Result<(), KeyError> {
        if self.entries.iter().any(|(n, _)| *n == name) {
            return Err(KeyError::Line {
                source_: source.into(),
                line,
                reason: format!("the name `{name}` is given twice"),
            });
        }
        self.entries.push((name, d));
        Ok(())
    }

    /// The name of the key `presented` is, if it is one. Every digest is compared, in
    /// constant time.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let d = digest(presented);
        let mut found = None;
        for (name, known) in &self.entries {
            if bool::from(known.ct_eq(&d)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_text_are_named_and_verified() {
        let k =
            Keys::parse("env", "ci:sk-aaaaaaaa, sk-bbbbbbbb\nteam.a:sk-cccccccc").expect("parses");
        assert_eq!(k.names().collect::<Vec<_>>(), ["ci", "key-2", "team.a"]);
        assert_eq!(k.verify("sk-aaaaaaaa"), Some("ci"));
        assert_eq!(k.verify("sk-bbbbbbbb"), Some("key-2"));
        assert_eq!(k.verify("sk-aaaaaaab"), None);
        assert_eq!(k.verify(""), None);
        assert!(Keys::parse("env", "short").is_err());
        assert!(
            Keys::parse("env", "a:sk-aaaaaaaa a:sk-bbbbbbbb").is_err(),
            "names are unique"
        );
        assert!(!format!("{k:?}").contains("sk-"), "{k:?}");
    }

    #[test]
    fn the_key_file_holds_hashes() {
        let dir = std::env::temp_dir().join(format!("smallfirst-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("keys");
        let hash = hex::encode(digest("sk-secret-1"));
        std::fs::write(
            &path,
            format!("# team keys\nalice sha256:{hash}\n\nbob {hash}x\n"),
        )
        .expect("write");
        let e = Keys::from_file(&path).expect_err("bad hash on line 4");
        assert!(e.to_string().contains("line 4"), "{e}");
        std::fs::write(&path, format!("alice {hash}  # comment\n")).expect("write");
        let k = Keys::from_file(&path).expect("reads");
        assert_eq!(k.verify("sk-secret-1"), Some("alice"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
