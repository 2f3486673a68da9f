//! A TensorBoard event-file writer: `Event` protobufs in TFRecord framing.
//!
//! Why our own: the crates that exist pin old protobuf stacks or stub most methods.
//! The format is small: each record is
//! `u64 length (LE) · u32 masked-CRC32C(length bytes) · data · u32 masked-CRC32C(data)`, with
//! `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`. The first event carries
//! `file_version = "brain.Event:2"`; scalars are `Summary.Value.simple_value`. The messages are
//! declared with `prost` derives (field numbers from tensorflow/core/util/event.proto and
//! summary.proto), so no protoc is needed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

/// `tensorflow.Event` (only the fields we write).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// `brain.Event:2` in the first record (a member of the `what` oneof).
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    /// Scalars (a member of the `what` oneof).
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// Values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    /// Scalar name.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The value (`simple_value`, a member of the `value` oneof).
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// CRC-32C masked as TFRecord stores it.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord-framed record to `out`.
pub fn frame_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Writes scalars to one `events.out.tfevents.*` file, flushing after every call.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
    buf: Vec<u8>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.{secs}.{host}` and writes the version record.
    pub fn create(dir: &Path, wall_time: f64, host: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("events.out.tfevents.{}.{host}", wall_time as u64));
        let file = BufWriter::new(File::create(&path)?);
        let mut w = EventWriter { path, file, buf: Vec::new() };
        w.write_event(&Event { wall_time, step: 0, file_version: Some("brain.Event:2".into()), summary: None })?;
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes scalars `(tag, value)` at `step`.
    pub fn scalars(&mut self, step: u64, wall_time: f64, values: &[(&str, f64)]) -> std::io::Result<()> {
        let summary =
            Summary { value: values.iter().map(|&(tag, v)| SummaryValue { tag: tag.to_string(), simple_value: Some(v as f32) }).collect() };
        self.write_event(&Event { wall_time, step: step as i64, file_version: None, summary: Some(summary) })
    }

    fn write_event(&mut self, e: &Event) -> std::io::Result<()> {
        self.buf.clear();
        frame_record(&mut self.buf, &e.encode_to_vec());
        self.file.write_all(&self.buf)?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_of_known_input() {
        // crc32c("123456789") = 0xE3069283 (the standard check value)
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let c: u32 = 0xE306_9283;
        assert_eq!(masked_crc32c(b"123456789"), c.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn writes_version_then_scalars_in_valid_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path(), 1.0e9, "test").unwrap();
        w.scalars(7, 1.0e9 + 1.0, &[("train_loss", 0.5)]).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let mut events = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()), masked_crc32c(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            assert_eq!(u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap()), masked_crc32c(data));
            events.push(Event::decode(data).unwrap());
            at += 16 + len;
        }
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let s = events[1].summary.as_ref().unwrap();
        assert_eq!((events[1].step, s.value[0].tag.as_str(), s.value[0].simple_value), (7, "train_loss", Some(0.5)));
    }
}
