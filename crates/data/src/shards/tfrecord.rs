//! TFRecord files holding `tf.Example`s, as TFDS writes `imagenet2012` (features `image`: JPEG
//! bytes, `label`: int64, `file_name`: bytes).
//!
//! Framing, per record: `u64` LE length, `u32` masked CRC-32C of those 8 bytes, the data, `u32`
//! masked CRC-32C of the data; `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`.
//!
//! What a damaged file does: a record whose *data* checksum fails is skipped (its length was
//! verified, so the next record is found) and reported; a length whose checksum fails, a length
//! above [`MAX_RECORD`], or a file that ends inside a record ends the shard with an error — the
//! framing can no longer be trusted, and guessing would read garbage as records.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::Sample;
use crate::DataError;

/// Largest record accepted, bounded before anything is allocated (ImageNet's largest JPEG is
/// ~15 MB).
pub const MAX_RECORD: u64 = 64 << 20;

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One framed record, or why the next one could not be read.
pub enum Next {
    /// A record's data, at its offset.
    Record(u64, Vec<u8>),
    /// A record whose data checksum failed, skipped: offset and message.
    Corrupt(u64, String),
}

/// Reads the records of one TFRecord stream.
pub struct TfRecordReader<R> {
    inner: R,
    path: PathBuf,
    offset: u64,
}

impl<R: Read> TfRecordReader<R> {
    /// Reads `inner`, naming `path` in errors.
    pub fn new(inner: R, path: impl Into<PathBuf>) -> Self {
        Self::starting_at(inner, path, 0)
    }

    /// Reads `inner`, which starts at byte `offset` of `path` (offsets in errors count from there).
    pub fn starting_at(inner: R, path: impl Into<PathBuf>, offset: u64) -> Self {
        TfRecordReader { inner, path: path.into(), offset }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end of file before the first byte.
    fn fill(&mut self, buf: &mut [u8], at_record_start: bool) -> Result<bool, DataError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 && at_record_start => return Ok(false),
                Ok(0) => {
                    return Err(DataError::format(
                        &self.path,
                        self.offset + got as u64,
                        format!("file ends inside a record ({got} of {} bytes)", buf.len()),
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DataError::io(&self.path, e)),
            }
        }
        Ok(true)
    }

    /// The next record; `Ok(None)` at the end of the stream.
    pub fn next_record(&mut self) -> Result<Option<Next>, DataError> {
        let start = self.offset;
        let mut head = [0u8; 12];
        if !self.fill(&mut head, true)? {
            return Ok(None);
        }
        let len_bytes: [u8; 8] = head[..8].try_into().expect("8 bytes");
        let len = u64::from_le_bytes(len_bytes);
        let crc = u32::from_le_bytes(head[8..].try_into().expect("4 bytes"));
        if masked_crc(&len_bytes) != crc {
            return Err(DataError::format(&self.path, start, "record length checksum mismatch: not a TFRecord file, or damaged here"));
        }
        if len > MAX_RECORD {
            return Err(DataError::format(&self.path, start, format!("record of {len} bytes; at most {MAX_RECORD} accepted")));
        }
        self.offset += 12;
        let mut data = vec![0u8; len as usize];
        self.fill(&mut data, false)?;
        self.offset += len;
        let mut tail = [0u8; 4];
        self.fill(&mut tail, false)?;
        self.offset += 4;
        if masked_crc(&data) != u32::from_le_bytes(tail) {
            return Ok(Some(Next::Corrupt(start, format!("record data checksum mismatch ({len} bytes skipped)"))));
        }
        Ok(Some(Next::Record(start, data)))
    }
}

/// Appends one framed record.
pub fn write_record(w: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    if data.len() as u64 > MAX_RECORD {
        return Err(std::io::Error::other(format!("record of {} bytes; readers accept at most {MAX_RECORD}", data.len())));
    }
    let len = (data.len() as u64).to_le_bytes();
    w.write_all(&len)?;
    w.write_all(&masked_crc(&len).to_le_bytes())?;
    w.write_all(data)?;
    w.write_all(&masked_crc(data).to_le_bytes())
}

/// `tf.Example` (tensorflow/core/example/example.proto, feature.proto): only what TFDS writes.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Example {
        #[prost(message, optional, tag = "1")]
        pub features: Option<Features>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Features {
        #[prost(map = "string, message", tag = "1")]
        pub feature: std::collections::HashMap<String, Feature>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Feature {
        #[prost(oneof = "Kind", tags = "1, 2, 3")]
        pub kind: Option<Kind>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    #[allow(clippy::enum_variant_names)] // the names of tf.Example's Feature oneof
    pub enum Kind {
        #[prost(message, tag = "1")]
        BytesList(BytesList),
        #[prost(message, tag = "2")]
        FloatList(FloatList),
        #[prost(message, tag = "3")]
        Int64List(Int64List),
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BytesList {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub value: Vec<Vec<u8>>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FloatList {
        #[prost(float, repeated, tag = "1")]
        pub value: Vec<f32>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Int64List {
        #[prost(int64, repeated, tag = "1")]
        pub value: Vec<i64>,
    }
}

/// Decodes a TFDS image example: `image` (bytes), `label` (int64), `file_name` (bytes, optional).
pub fn decode_example(data: &[u8]) -> Result<Sample, String> {
    use prost::Message;
    let ex = proto::Example::decode(data).map_err(|e| format!("not a tf.Example: {e}"))?;
    let mut f = ex.features.map(|f| f.feature).unwrap_or_default();
    let bytes = |k: Option<proto::Feature>| match k.and_then(|f| f.kind) {
        Some(proto::Kind::BytesList(mut b)) if b.value.len() == 1 => b.value.pop(),
        _ => None,
    };
    let image = bytes(f.remove("image")).ok_or("no `image` bytes feature")?;
    let label = match f.remove("label").and_then(|f| f.kind) {
        Some(proto::Kind::Int64List(l)) if l.value.len() == 1 => l.value[0],
        _ => return Err("no single int64 `label` feature".into()),
    };
    let key = bytes(f.remove("file_name")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    Ok(Sample { key, image, label })
}

/// Encodes a sample as TFDS does.
pub fn encode_example(s: &Sample) -> Vec<u8> {
    use prost::Message;
    let bytes = |v: Vec<u8>| proto::Feature { kind: Some(proto::Kind::BytesList(proto::BytesList { value: vec![v] })) };
    let mut feature = std::collections::HashMap::new();
    feature.insert("image".to_string(), bytes(s.image.clone()));
    feature.insert("label".to_string(), proto::Feature { kind: Some(proto::Kind::Int64List(proto::Int64List { value: vec![s.label] })) });
    feature.insert("file_name".to_string(), bytes(s.key.as_bytes().to_vec()));
    proto::Example { features: Some(proto::Features { feature }) }.encode_to_vec()
}

/// Opens a TFRecord shard.
pub fn open(path: &Path) -> Result<TfRecordReader<std::io::BufReader<std::fs::File>>, DataError> {
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    Ok(TfRecordReader::new(std::io::BufReader::with_capacity(1 << 20, f), path))
}
