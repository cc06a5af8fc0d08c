//! Wrappers a pickle can hide in: NumPy's `.npy` (an object array's data is a pickle),
//! gzip, bzip2, xz and 7z. Each is opened with a bound on what it may expand to, never
//! written to disk, and what it holds is scanned like a file of its own.

use std::io::{self, Read};

/// The most bytes a compressed stream or one archive entry is expanded to for scanning.
pub const EXPANDED_READ: u64 = 256 << 20;
/// The most memory the LZMA decoder of a 7z or xz stream may use, in KiB.
const LZMA_MEMORY_KB: u32 = 512 << 10;

/// What a compressed wrapper held, read up to [`EXPANDED_READ`].
pub struct Expanded {
    pub bytes: Vec<u8>,
    /// The whole stream was read (not cut at the limit).
    pub whole: bool,
}

/// The compressions a wrapper can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Bzip2,
    Xz,
}

impl Compression {
    /// From a stream's first bytes.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            Some(Compression::Bzip2)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }

    /// Expands `input`, at most [`EXPANDED_READ`] bytes of it.
    pub fn expand(self, input: impl Read) -> io::Result<Expanded> {
        let reader: Box<dyn Read> = match self {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
            Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(
                input,
                true,
                LZMA_MEMORY_KB,
            )),
        };
        let mut bytes = Vec::new();
        reader.take(EXPANDED_READ + 1).read_to_end(&mut bytes)?;
        let whole = bytes.len() as u64 <= EXPANDED_READ;
        bytes.truncate(EXPANDED_READ as usize);
        Ok(Expanded { bytes, whole })
    }
}

pub const SEVEN_ZIP: &[u8] = &[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c];

/// Most entries of one 7z archive opened, and bytes expanded from it in all.
pub const SEVEN_ZIP_ENTRIES: usize = 10_000;
pub const SEVEN_ZIP_TOTAL: u64 = 1 << 30;

/// Every entry of a 7z archive, expanded (each up to [`EXPANDED_READ`]) and handed to `each`
/// as it comes, with its name; stops early (returning `Ok(false)`) at an entry cut by the
/// limit, or past [`SEVEN_ZIP_ENTRIES`] entries or [`SEVEN_ZIP_TOTAL`] bytes; `Err` with why
/// the archive cannot be read.
pub fn seven_zip_entries<R: Read + io::Seek>(
    source: R,
    mut each: impl FnMut(&str, Expanded),
) -> Result<bool, String> {
    let mut whole = true;
    let mut entries = 0usize;
    let mut total = 0u64;
    let mut reader = sevenz_rust2::ArchiveReader::new_with_memory_limit(
        source,
        sevenz_rust2::Password::empty(),
        LZMA_MEMORY_KB as usize * 1024,
    )
    .map_err(|e| e.to_string())?;
    reader
        .for_each_entries(|entry, data| {
            if entry.is_directory() {
                return Ok(true);
            }
            entries += 1;
            let room = EXPANDED_READ.min(SEVEN_ZIP_TOTAL.saturating_sub(total));
            let mut bytes = Vec::new();
            data.take(room + 1).read_to_end(&mut bytes)?;
            total += bytes.len() as u64;
            let entry_whole = bytes.len() as u64 <= room;
            bytes.truncate(room as usize);
            each(
                entry.name(),
                Expanded {
                    bytes,
                    whole: entry_whole,
                },
            );
            // A cut entry is not drained (that would expand it whole): the walk stops there.
            whole &= entry_whole && entries < SEVEN_ZIP_ENTRIES;
            Ok(whole)
        })
        .map_err(|e| e.to_string())?;
    Ok(whole)
}

/// The NPY magic.
pub const NPY: &[u8] = b"\x93NUMPY";

/// A `.npy` header: where the data starts, and whether its dtype holds Python objects (then
/// the data is a pickle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub data_start: usize,
    pub objects: bool,
}

/// Reads the header of a `.npy` file (format versions 1 to 3).
pub fn npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if !bytes.starts_with(NPY) || bytes.len() < 10 {
        return Err("not an .npy file".into());
    }
    let major = bytes[6];
    let (len, start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!("unknown .npy format version {major}")),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or("the header runs past the end of the file")?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| "the header is not text".to_string())?;
    let descr = header
        .split("'descr':")
        .nth(1)
        .or_else(|| header.split("\"descr\":").nth(1))
        .ok_or("the header has no `descr`")?
        .trim_start();
    // numpy reads the header as a Python literal, so anything but a plain dtype string
    // (`'<f4'`, `'|u1'`, `'<M8[ns]'`) may spell an object dtype (`'object'`, `'|\x4f'`, a
    // structured list): only a plain one is taken as holding no Python objects.
    let objects = !plain_dtype(descr);
    Ok(NpyHeader {
        data_start: end,
        objects,
    })
}

/// Whether `descr` (the text after `'descr':`) starts with a quoted plain dtype: an optional
/// byte order, a non-object kind, a size, an optional `[unit]`, and the closing quote.
fn plain_dtype(descr: &str) -> bool {
    let mut chars = descr.chars();
    let Some(quote) = chars.next().filter(|c| matches!(c, '\'' | '"')) else {
        return false;
    };
    let body: String = chars.take_while(|&c| c != quote).collect();
    if !descr[1 + body.len()..].starts_with(quote) {
        return false;
    }
    let body = body.strip_prefix(['<', '>', '|', '=']).unwrap_or(&body);
    let mut rest = body.chars();
    if !rest.next().is_some_and(|k| "?bBiufcSUVmM".contains(k)) {
        return false;
    }
    let rest = rest.as_str();
    let (size, unit) = rest.split_once('[').unwrap_or((rest, ""));
    size.chars().all(|c| c.is_ascii_digit())
        && (unit.is_empty()
            || unit
                .strip_suffix(']')
                .is_some_and(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric())))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn npy(descr: &str, data: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}\n");
        let mut out = NPY.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_headers_say_where_data_starts_and_whether_it_is_objects() {
        let f = npy("<f4", &[0; 4]);
        let h = npy_header(&f).expect("reads");
        assert!(!h.objects);
        assert_eq!(h.data_start, f.len() - 4);
        assert!(
            npy_header(&npy("|O", b"\x80\x03N."))
                .expect("reads")
                .objects
        );
        assert!(
            npy_header(b"\x93NUMPY\x01\x00\xff\xff{").is_err(),
            "header past the end"
        );
        assert!(
            npy_header(b"\x93NUMPY\x09\x00\x01\x00x").is_err(),
            "unknown version"
        );
    }

    #[test]
    fn compressed_streams_expand_within_the_bound() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").expect("write");
        let gz = gz.finish().expect("gzip");
        assert_eq!(Compression::sniff(&gz), Some(Compression::Gzip));
        let e = Compression::Gzip.expand(&gz[..]).expect("expands");
        assert_eq!(e.bytes, b"hello");
        assert!(e.whole);
        assert_eq!(Compression::sniff(b"BZh9"), Some(Compression::Bzip2));
        assert_eq!(Compression::sniff(b"BZhx"), None);
    }
}
