//! WebDataset shards: POSIX (ustar) tar files whose consecutive members sharing a key form one
//! sample — the key is the member's path up to the first `.` of its file name, the extension what
//! follows (`n03991062_24866.jpg` + `n03991062_24866.cls`, the label as ASCII decimal). ringsam reads `.jpg`/`.jpeg` and `.cls`; other members are ignored.
//!
//! Every member size is bounded ([`super::tfrecord::MAX_RECORD`]) before it is read. A header
//! whose checksum fails, a file that ends inside a member, or a first block that is not a tar
//! header end the shard with an error naming the offset; a sample missing its image or label, or
//! with a label that is not a number, is skipped and reported.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::Sample;
use super::tfrecord::MAX_RECORD;
use crate::DataError;

/// A tar member: (offset, key, extension, bytes).
type Member = (u64, String, String, Vec<u8>);

const BLOCK: usize = 512;

/// What the reader found next.
pub enum Next {
    /// A complete sample, at the offset of its first member.
    Sample(u64, Sample),
    /// A sample skipped: offset and why.
    Skipped(u64, String),
}

/// Reads samples from one tar stream.
pub struct WdsReader<R> {
    inner: R,
    path: PathBuf,
    offset: u64,
    pending: Option<(u64, String, String, Vec<u8>)>, // a member read ahead: offset, key, extension, bytes
    done: bool,
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Splits a member path into (key, extension) at the first `.` of its file name.
fn split_key(path: &str) -> (String, String) {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    match path[name_start..].find('.') {
        Some(dot) => (path[..name_start + dot].to_string(), path[name_start + dot + 1..].to_string()),
        None => (path.to_string(), String::new()),
    }
}

impl<R: Read> WdsReader<R> {
    /// Reads `inner`, naming `path` in errors.
    pub fn new(inner: R, path: impl Into<PathBuf>) -> Self {
        Self::starting_at(inner, path, 0)
    }

    /// Reads `inner`, which starts at byte `offset` of `path` (a sample's first member).
    pub fn starting_at(inner: R, path: impl Into<PathBuf>, offset: u64) -> Self {
        WdsReader { inner, path: path.into(), offset, pending: None, done: false }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DataError::io(&self.path, e)),
            }
        }
        Ok(got)
    }

    /// The next regular member; `None` at the end of the archive.
    fn member(&mut self) -> Result<Option<Member>, DataError> {
        loop {
            let at = self.offset;
            let mut h = [0u8; BLOCK];
            let got = self.fill(&mut h)?;
            if got == 0 {
                return Ok(None); // no end-of-archive blocks: tolerated, as tar does
            }
            if got < BLOCK {
                return Err(DataError::format(&self.path, at, "file ends inside a tar header"));
            }
            self.offset += BLOCK as u64;
            if h.iter().all(|&b| b == 0) {
                if at == 0 {
                    return Err(DataError::format(&self.path, at, "tar archive with no members (its first block is the end marker)"));
                }
                return Ok(None); // end-of-archive marker
            }
            let stored = octal(&h[148..156]);
            let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { b' ' as u64 } else { b as u64 }).sum();
            if stored != Some(sum) {
                let what = if at == 0 { "not a tar file (header checksum mismatch)" } else { "tar header checksum mismatch" };
                return Err(DataError::format(&self.path, at, what));
            }
            let size = octal(&h[124..136]).ok_or_else(|| DataError::format(&self.path, at, "tar member size is not an octal number"))?;
            if size > MAX_RECORD {
                return Err(DataError::format(&self.path, at, format!("tar member of {size} bytes; at most {MAX_RECORD} accepted")));
            }
            let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
            let mut data = vec![0u8; padded as usize];
            if (self.fill(&mut data)? as u64) < padded {
                return Err(DataError::format(&self.path, at, format!("file ends inside a tar member of {size} bytes")));
            }
            self.offset += padded;
            data.truncate(size as usize);
            let kind = h[156];
            if matches!(kind, b'x' | b'g' | b'L' | b'K') {
                // Long or non-ASCII names live in these extension records; without them the next
                // member's key would be wrong.
                return Err(DataError::format(
                    &self.path,
                    at,
                    "pax / GNU long-name tar records are not supported (`ringsam data pack` writes plain ustar)",
                ));
            }
            if kind != b'0' && kind != 0 {
                continue; // directories, links: not samples
            }
            let (name, prefix) = (cstr(&h[0..100]), if &h[257..262] == b"ustar" { cstr(&h[345..500]) } else { String::new() });
            let full = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let (key, ext) = split_key(&full);
            return Ok(Some((at, key, ext, data)));
        }
    }

    /// The next sample; `Ok(None)` at the end of the archive.
    pub fn next_sample(&mut self) -> Result<Option<Next>, DataError> {
        if self.done {
            return Ok(None);
        }
        let Some((at, key, ext, data)) = (match self.pending.take() {
            Some(m) => Some(m),
            None => self.member()?,
        }) else {
            self.done = true;
            return Ok(None);
        };
        let (mut image, mut label) = (None, None);
        let mut take = |ext: &str, data: Vec<u8>| match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => image = Some(data),
            "cls" => label = Some(data),
            _ => {}
        };
        take(&ext, data);
        // Members with the same key that follow belong to this sample.
        loop {
            match self.member()? {
                Some(m) if m.1 == key => take(&m.2, m.3),
                other => {
                    self.pending = other;
                    break;
                }
            }
        }
        let sample = match (image, label) {
            (Some(image), Some(cls)) => match std::str::from_utf8(&cls).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
                Some(label) => Next::Sample(at, Sample { key, image, label }),
                None => Next::Skipped(at, format!("sample {key}: .cls is not a decimal label")),
            },
            (None, _) => Next::Skipped(at, format!("sample {key}: no .jpg member")),
            (_, None) => Next::Skipped(at, format!("sample {key}: no .cls member")),
        };
        Ok(Some(sample))
    }
}

fn header(name: &str, size: u64) -> Result<[u8; BLOCK], String> {
    let mut h = [0u8; BLOCK];
    if name.len() > 100 {
        return Err(format!("member name {name:?} is longer than 100 bytes"));
    }
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// Writes WebDataset tars: `{key}.jpg` and `{key}.cls` per sample.
pub struct WdsWriter<W: Write> {
    inner: W,
}

impl<W: Write> WdsWriter<W> {
    /// A writer on `inner`.
    pub fn new(inner: W) -> Self {
        WdsWriter { inner }
    }

    fn member(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        if data.len() as u64 > MAX_RECORD {
            return Err(std::io::Error::other(format!("member {name} of {} bytes; readers accept at most {MAX_RECORD}", data.len())));
        }
        let h = header(name, data.len() as u64).map_err(std::io::Error::other)?;
        self.inner.write_all(&h)?;
        self.inner.write_all(data)?;
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.inner.write_all(&vec![0u8; pad])
    }

    /// Appends one sample; its key must not contain a `.` in its file name (readers split there).
    pub fn write(&mut self, s: &Sample) -> std::io::Result<()> {
        if s.key.rsplit('/').next().is_some_and(|name| name.contains('.')) {
            return Err(std::io::Error::other(format!("WebDataset key {:?} has a '.' in its file name", s.key)));
        }
        self.member(&format!("{}.jpg", s.key), &s.image)?;
        self.member(&format!("{}.cls", s.key), s.label.to_string().as_bytes())
    }

    /// Writes the end-of-archive blocks and returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.inner.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.inner)
    }
}

/// Opens a WebDataset shard.
pub fn open(path: &Path) -> Result<WdsReader<std::io::BufReader<std::fs::File>>, DataError> {
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    Ok(WdsReader::new(std::io::BufReader::with_capacity(1 << 20, f), path))
}
