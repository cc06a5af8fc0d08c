//! Turns generated token bytes into text that is safe to stream.
//!
//! Two things hold bytes back: a multi-byte UTF-8 character whose tail has not arrived yet (a
//! token may end mid-character), and a tail that could be the start of a stop string (a stop
//! string may span tokens). Everything else is released at once.

/// What one push released.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// Text to send; the stream goes on.
    Text(String),
    /// A stop string matched: the text before it, and the stream is over.
    Stopped(String),
}

pub struct TextStream {
    stops: Vec<Vec<u8>>,
    pending: Vec<u8>,
    /// Bytes handed out so far (or swallowed by a stop string), counted before lossy decoding.
    released: usize,
}

impl TextStream {
    pub fn new(stops: &[String]) -> Self {
        TextStream {
            stops: stops
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            pending: Vec::new(),
            released: 0,
        }
    }

    /// Bytes of raw output released so far.
    pub fn released_bytes(&self) -> usize {
        self.released
    }

    /// Bytes pushed so far.
    pub fn pushed_bytes(&self) -> usize {
        self.released + self.pending.len()
    }

    pub fn push(&mut self, bytes: &[u8]) -> Released {
        self.pending.extend_from_slice(bytes);
        if let Some(at) = self.first_stop() {
            let text = String::from_utf8_lossy(&self.pending[..at]).into_owned();
            self.released += at;
            self.pending.clear();
            return Released::Stopped(text);
        }
        let end = self.safe_end();
        let text = String::from_utf8_lossy(&self.pending[..end]).into_owned();
        self.pending.drain(..end);
        self.released += end;
        Released::Text(text)
    }

    /// Whatever is still held, at the end of generation. A character cut off by the end
    /// (its lead byte came, its tail never will) is dropped rather than sent as U+FFFD.
    pub fn finish(&mut self) -> String {
        let end = self.pending.len() - incomplete_utf8_tail(&self.pending);
        let text = String::from_utf8_lossy(&self.pending[..end]).into_owned();
        self.released += self.pending.len();
        self.pending.clear();
        text
    }

    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| find(&self.pending, s))
            .min()
    }

    /// How far `pending` can be released: not into a possible stop-string prefix, not into an
    /// unfinished UTF-8 character.
    fn safe_end(&self) -> usize {
        let p = &self.pending;
        let mut end = p.len();
        for stop in &self.stops {
            let longest = stop.len().saturating_sub(1).min(p.len());
            for k in (1..=longest).rev() {
                if p[p.len() - k..] == stop[..k] {
                    end = end.min(p.len() - k);
                    break;
                }
            }
        }
        end - incomplete_utf8_tail(&p[..end])
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Length of a trailing UTF-8 sequence that has started but not finished (0 if none).
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let byte = b[b.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead
        }
        let need = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(stops: &[&str], pieces: &[&[u8]]) -> (Vec<String>, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut t = TextStream::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            match t.push(p) {
                Released::Text(s) => out.push(s),
                Released::Stopped(s) => return (out, Some(s)),
            }
        }
        out.push(t.finish());
        (out, None)
    }

    #[test]
    fn never_splits_a_character() {
        let euro = "€".as_bytes(); // 3 bytes
        let (out, stop) = texts(&[], &[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!(stop, None);
        assert_eq!(out, vec!["a", "", "", "€", "b", ""]);
        for s in &out {
            assert!(!s.contains('\u{FFFD}'));
        }
    }

    #[test]
    fn a_character_cut_off_by_the_end_is_dropped() {
        let euro = "€".as_bytes();
        let (out, _) = texts(&[], &[b"a", &euro[..2]]);
        assert_eq!(out, vec!["a", "", ""]);
    }

    #[test]
    fn stop_string_spanning_tokens() {
        let (out, stop) = texts(&["END"], &[b"hello E", b"N", b"D more"]);
        assert_eq!(out, vec!["hello ", ""]);
        assert_eq!(stop.as_deref(), Some(""));
    }

    #[test]
    fn held_prefix_is_released_when_it_is_not_a_stop() {
        let (out, stop) = texts(&["END"], &[b"E", b"N", b"x"]);
        assert_eq!(stop, None);
        assert_eq!(out.concat(), "ENx");
        assert_eq!(out[0], "");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (_, stop) = texts(&["b", "zz"], &[b"a zz b"]);
        assert_eq!(stop.as_deref(), Some("a "));
    }

    #[test]
    fn invalid_bytes_become_replacement_not_a_hang() {
        let (out, _) = texts(&[], &[&[0xFF, b'a']]);
        assert_eq!(out.concat(), "\u{FFFD}a");
    }

    #[test]
    fn byte_counts_track_release() {
        let mut t = TextStream::new(&["xy".to_string()]);
        assert_eq!(t.push(b"abx"), Released::Text("ab".into()));
        assert_eq!(t.released_bytes(), 2);
        assert_eq!(t.pushed_bytes(), 3);
    }
}
