//! Writes GGUF files for the tests, well-formed or with one thing broken on purpose.

use sha2::{Digest, Sha256};

pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One metadata pair, already encoded (so tests can write what no valid file has).
#[derive(Clone)]
pub(crate) struct Kv {
    pub key: String,
    pub bytes: Vec<u8>,
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s);
    b
}

impl Kv {
    pub(crate) fn raw(key: &str, ty: u32, payload: Vec<u8>) -> Kv {
        let mut bytes = string(key.as_bytes());
        bytes.extend(ty.to_le_bytes());
        bytes.extend(payload);
        Kv {
            key: key.into(),
            bytes,
        }
    }

    pub(crate) fn string(key: &str, s: &str) -> Kv {
        Kv::raw(key, 8, string(s.as_bytes()))
    }

    pub(crate) fn u32(key: &str, v: u32) -> Kv {
        Kv::raw(key, 4, v.to_le_bytes().to_vec())
    }

    pub(crate) fn i32(key: &str, v: i32) -> Kv {
        Kv::raw(key, 5, v.to_le_bytes().to_vec())
    }

    fn array(key: &str, elem: u32, items: &[Vec<u8>]) -> Kv {
        let mut payload = elem.to_le_bytes().to_vec();
        payload.extend((items.len() as u64).to_le_bytes());
        for i in items {
            payload.extend_from_slice(i);
        }
        Kv::raw(key, 9, payload)
    }

    pub(crate) fn f32_array(key: &str, v: &[f32]) -> Kv {
        let items: Vec<Vec<u8>> = v.iter().map(|x| x.to_le_bytes().to_vec()).collect();
        Kv::array(key, 6, &items)
    }

    pub(crate) fn i32_array(key: &str, v: &[i32]) -> Kv {
        let items: Vec<Vec<u8>> = v.iter().map(|x| x.to_le_bytes().to_vec()).collect();
        Kv::array(key, 5, &items)
    }

    pub(crate) fn string_array(key: &str, v: &[&str]) -> Kv {
        let items: Vec<Vec<u8>> = v.iter().map(|s| string(s.as_bytes())).collect();
        Kv::array(key, 8, &items)
    }

    /// A string value claiming `len` bytes, with none after it.
    pub(crate) fn raw_string_len(key: &str, len: u64) -> Kv {
        Kv::raw(key, 8, len.to_le_bytes().to_vec())
    }

    /// An array claiming `n` elements of type `elem`, with none after it.
    pub(crate) fn raw_array_len(key: &str, elem: u32, n: u64) -> Kv {
        let mut payload = elem.to_le_bytes().to_vec();
        payload.extend(n.to_le_bytes());
        Kv::raw(key, 9, payload)
    }

    /// A key claiming `len` bytes, with nothing after it.
    pub(crate) fn raw_key_len(len: u64) -> Kv {
        Kv {
            key: String::new(),
            bytes: len.to_le_bytes().to_vec(),
        }
    }

    /// A pair under exactly this key (empty included).
    pub(crate) fn raw_key(key: &str) -> Kv {
        Kv::u32(key, 0)
    }

    /// An array of arrays.
    pub(crate) fn raw_nested_array(key: &str) -> Kv {
        let mut inner = 4u32.to_le_bytes().to_vec();
        inner.extend(1u64.to_le_bytes());
        inner.extend(7u32.to_le_bytes());
        Kv::array(key, 9, &[inner])
    }
}

#[derive(Clone)]
pub(crate) struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

pub(crate) struct Gguf {
    pub magic: [u8; 4],
    pub version: u32,
    /// Written instead of the true counts.
    pub tensor_count: Option<u64>,
    pub kv_count: Option<u64>,
    pub kv: Vec<Kv>,
    pub tensors: Vec<Tensor>,
    pub data_len: u64,
}

impl Gguf {
    /// A tiny llama: 4 tokens, 2 layers, F32 tensors, everything consistent.
    pub(crate) fn clean() -> Gguf {
        let t = |name: &str, dims: Vec<u64>, offset| Tensor {
            name: name.into(),
            dims,
            ggml_type: 0,
            offset,
        };
        Gguf {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kv: vec![
                Kv::string("general.architecture", "llama"),
                Kv::u32("llama.block_count", 2),
                Kv::u32("llama.embedding_length", 8),
                Kv::string_array("tokenizer.ggml.tokens", &["a", "b", "c", "d"]),
                Kv::f32_array("tokenizer.ggml.scores", &[0.0; 4]),
                Kv::i32_array("tokenizer.ggml.token_type", &[1; 4]),
                Kv::u32("tokenizer.ggml.bos_token_id", 0),
                Kv::u32("tokenizer.ggml.eos_token_id", 1),
            ],
            tensors: vec![
                t("token_embd.weight", vec![8, 4], 0),
                t("blk.0.attn_q.weight", vec![8, 8], 128),
                t("blk.1.attn_q.weight", vec![8, 8], 384),
                t("output_norm.weight", vec![8], 640),
            ],
            data_len: 672,
        }
    }

    /// Replaces the pair with this key (or adds it).
    pub(crate) fn set(&mut self, kv: Kv) {
        match self.kv.iter_mut().find(|k| k.key == kv.key) {
            Some(k) => *k = kv,
            None => self.kv.push(kv),
        }
    }

    /// Grows the data section, moving every tensor after the first.
    pub(crate) fn data_pad(&mut self, extra: u64) {
        for t in self.tensors.iter_mut().skip(1) {
            t.offset += extra;
        }
        self.data_len += extra;
    }

    fn header(&self) -> Vec<u8> {
        let mut b = self.magic.to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(
            self.tensor_count
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend(self.kv_count.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for kv in &self.kv {
            b.extend_from_slice(&kv.bytes);
        }
        for t in &self.tensors {
            b.extend(string(t.name.as_bytes()));
            b.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.ggml_type.to_le_bytes());
            b.extend(t.offset.to_le_bytes());
        }
        b
    }

    /// Bytes before the data section's alignment padding.
    pub(crate) fn header_len(&self) -> usize {
        self.header().len()
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut b = self.header();
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend((0..self.data_len).map(|i| (i % 251) as u8));
        b
    }
}
