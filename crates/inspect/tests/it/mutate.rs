//! Mutated files never panic the reader, whatever they hold: bytes flipped, runs of 0xFF and
//! 0x00 written over lengths and counts, cuts and splices, a deterministic stream of them.

use smallfirst_inspect::gguf;

use crate::writer::Gguf;

/// xorshift64*: deterministic, no dependency.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

pub(crate) fn mutate(rng: &mut Rng, base: &[u8], header: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..=rng.below(3) {
        // Mostly the header, where the parser lives.
        let span = if rng.below(8) == 0 { b.len() } else { header };
        let at = rng.below(span);
        match rng.below(6) {
            0 => {
                if let Some(x) = b.get_mut(at) {
                    *x ^= 1 << rng.below(8);
                }
            }
            1 => {
                let fill = if rng.below(2) == 0 { 0xFF } else { 0x00 };
                for x in b.iter_mut().skip(at).take(1 + rng.below(8)) {
                    *x = fill;
                }
            }
            2 => b.truncate(at),
            3 => {
                let v = rng.next().to_le_bytes();
                for (x, y) in b.iter_mut().skip(at).zip(v) {
                    *x = y;
                }
            }
            4 => {
                let n = rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                let at = at.min(b.len());
                b.splice(at..at, junk);
            }
            _ => {
                let end = (at + rng.below(16)).min(b.len());
                let at = at.min(end);
                b.drain(at..end);
            }
        }
    }
    b
}

#[test]
fn twenty_thousand_mutations_never_panic() {
    let clean = Gguf::clean();
    let base = clean.bytes();
    let header = clean.header_len();
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut flagged = 0;
    for _ in 0..20_000 {
        let b = mutate(&mut rng, &base, header);
        let report = gguf::read(&b[..], b.len() as u64).expect("reads from memory");
        if !report.findings.is_empty() || !report.complete {
            flagged += 1;
        }
        // A size the file does not have: the reader must not trust it either.
        let report = gguf::read(&b[..], u64::MAX).expect("reads from memory");
        let _ = report.complete;
    }
    assert!(
        flagged > 10_000,
        "most mutations break something: {flagged}"
    );
}
