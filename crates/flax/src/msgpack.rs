//! A bounded msgpack decoder over bytes already in memory, borrowing strings and binaries.
//!
//! `rmp` classifies each marker; lengths are read here so each can be checked against the bytes
//! left before it is trusted: a 4-GB length in a 1-kB file is an error at its offset, not an
//! allocation, and containers reserve at most a few items ahead of the ones really decoded. The tree is also bounded in depth (a Flax state dict is a few levels deep)
//! and in values, so a file of nested empty arrays cannot build billions of nodes.

use rmp::Marker;

use crate::FlaxError;

/// Nesting deeper than this is refused (Flax trees are module paths: a dozen levels at most).
pub const MAX_DEPTH: usize = 64;
/// More values than this in one file are refused (a published L2 checkpoint has a few thousand).
pub const MAX_VALUES: usize = 1 << 24;
/// Items reserved ahead for an array or map; more grow the vector as they are decoded.
const PRESIZE: usize = 1024;

/// One decoded msgpack value; strings, binaries and extension payloads borrow the input.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// Any integer (msgpack integers fit in i128 either signed or not).
    Int(i128),
    /// `float 32` or `float 64`.
    Float(f64),
    /// A UTF-8 string.
    Str(&'a str),
    /// A binary.
    Bin(&'a [u8]),
    /// An array.
    Array(Vec<Value<'a>>),
    /// A map, in file order.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// An extension: type code and payload.
    Ext(i8, &'a [u8]),
}

impl Value<'_> {
    /// A word for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bin(_) => "a binary",
            Value::Array(_) => "an array",
            Value::Map(_) => "a map",
            Value::Ext(..) => "an extension",
        }
    }
}

/// Decodes one complete value spanning all of `bytes`; `base` is added to reported offsets (the
/// payload of an extension is decoded on its own, but errors name its place in the file).
pub fn decode(bytes: &[u8], base: usize) -> Result<Value<'_>, FlaxError> {
    let mut d = Decoder { bytes, pos: 0, base, values: 0 };
    let v = d.value(0)?;
    if d.pos != bytes.len() {
        return Err(d.err(format!("{} bytes follow the end of the top-level value", bytes.len() - d.pos)));
    }
    Ok(v)
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
    values: usize,
}

impl<'a> Decoder<'a> {
    fn err(&self, why: String) -> FlaxError {
        FlaxError::Decode { offset: self.base + self.pos, why }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FlaxError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(self.err(format!("{what} needs {n} bytes but the file has {left} left (truncated?)")));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, width: usize, what: &str) -> Result<u64, FlaxError> {
        Ok(self.take(width, what)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn int(&mut self, width: usize) -> Result<i128, FlaxError> {
        let u = self.uint(width, "an integer")?;
        let shift = 64 - 8 * width as u32;
        Ok(i128::from(((u << shift) as i64) >> shift))
    }

    /// A count of items that each take at least one byte: more than the bytes left is a lie.
    fn count(&mut self, width: usize, what: &str) -> Result<usize, FlaxError> {
        let n = self.uint(width, what)? as usize;
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(self.err(format!("{what} of {n} items, but only {left} bytes are left (truncated or corrupt)")));
        }
        Ok(n)
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, FlaxError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(self.err(format!("more than {MAX_VALUES} values")));
        }
        let byte = self.take(1, "a value")?[0];
        Ok(match Marker::from_u8(byte) {
            Marker::FixPos(v) => Value::Int(i128::from(v)),
            Marker::FixNeg(v) => Value::Int(i128::from(v)),
            Marker::Null => Value::Nil,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::U8 => Value::Int(i128::from(self.uint(1, "a u8")?)),
            Marker::U16 => Value::Int(i128::from(self.uint(2, "a u16")?)),
            Marker::U32 => Value::Int(i128::from(self.uint(4, "a u32")?)),
            Marker::U64 => Value::Int(i128::from(self.uint(8, "a u64")?)),
            Marker::I8 => Value::Int(self.int(1)?),
            Marker::I16 => Value::Int(self.int(2)?),
            Marker::I32 => Value::Int(self.int(4)?),
            Marker::I64 => Value::Int(self.int(8)?),
            Marker::F32 => Value::Float(f64::from(f32::from_bits(self.uint(4, "a float")? as u32))),
            Marker::F64 => Value::Float(f64::from_bits(self.uint(8, "a float")?)),
            Marker::FixStr(n) => self.str(n as usize)?,
            Marker::Str8 => self.sized(1, "a string", Self::str)?,
            Marker::Str16 => self.sized(2, "a string", Self::str)?,
            Marker::Str32 => self.sized(4, "a string", Self::str)?,
            Marker::Bin8 => self.sized(1, "a binary", Self::bin)?,
            Marker::Bin16 => self.sized(2, "a binary", Self::bin)?,
            Marker::Bin32 => self.sized(4, "a binary", Self::bin)?,
            Marker::FixArray(n) => self.array(n as usize, depth)?,
            Marker::Array16 => {
                let n = self.count(2, "an array")?;
                self.array(n, depth)?
            }
            Marker::Array32 => {
                let n = self.count(4, "an array")?;
                self.array(n, depth)?
            }
            Marker::FixMap(n) => self.map(n as usize, depth)?,
            Marker::Map16 => {
                let n = self.count(2, "a map")?;
                self.map(n, depth)?
            }
            Marker::Map32 => {
                let n = self.count(4, "a map")?;
                self.map(n, depth)?
            }
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => self.sized(1, "an extension", Self::ext)?,
            Marker::Ext16 => self.sized(2, "an extension", Self::ext)?,
            Marker::Ext32 => self.sized(4, "an extension", Self::ext)?,
            Marker::Reserved => {
                self.pos -= 1;
                return Err(self.err(format!("byte 0x{byte:02x} is not a msgpack marker")));
            }
        })
    }

    fn sized(
        &mut self,
        width: usize,
        what: &str,
        then: fn(&mut Self, usize) -> Result<Value<'a>, FlaxError>,
    ) -> Result<Value<'a>, FlaxError> {
        let n = self.uint(width, what)? as usize;
        then(self, n)
    }

    fn str(&mut self, n: usize) -> Result<Value<'a>, FlaxError> {
        let at = self.pos;
        let s = self.take(n, "a string")?;
        std::str::from_utf8(s)
            .map(Value::Str)
            .map_err(|e| FlaxError::Decode { offset: self.base + at, why: format!("a string that is not UTF-8: {e}") })
    }

    fn bin(&mut self, n: usize) -> Result<Value<'a>, FlaxError> {
        Ok(Value::Bin(self.take(n, "a binary")?))
    }

    fn ext(&mut self, n: usize) -> Result<Value<'a>, FlaxError> {
        let code = self.take(1, "an extension type")?[0] as i8;
        Ok(Value::Ext(code, self.take(n, "an extension payload")?))
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value<'a>, FlaxError> {
        // n is at most the bytes left, but a value is ~32 bytes: reserve a little and let real
        // items grow the vector, so a lying count cannot reserve 32× the file.
        let mut items = Vec::with_capacity(n.min(PRESIZE));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value<'a>, FlaxError> {
        let mut entries = Vec::with_capacity(n.min(PRESIZE));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_strings_and_containers_decode() {
        // {"a": [1, -1, 300, "x"], "b": nil}
        let bytes = [0x82, 0xa1, b'a', 0x94, 0x01, 0xff, 0xcd, 0x01, 0x2c, 0xa1, b'x', 0xa1, b'b', 0xc0];
        let v = decode(&bytes, 0).unwrap();
        let Value::Map(m) = v else { panic!("{v:?}") };
        assert_eq!(m[0].0, Value::Str("a"));
        assert_eq!(m[0].1, Value::Array(vec![Value::Int(1), Value::Int(-1), Value::Int(300), Value::Str("x")]));
        assert_eq!(m[1], (Value::Str("b"), Value::Nil));
    }

    #[test]
    fn negative_and_wide_integers_keep_their_sign() {
        assert_eq!(decode(&[0xd0, 0x80], 0).unwrap(), Value::Int(-128));
        assert_eq!(decode(&[0xd1, 0xff, 0xfe], 0).unwrap(), Value::Int(-2));
        assert_eq!(decode(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0).unwrap(), Value::Int(u64::MAX as i128));
    }

    #[test]
    fn a_length_beyond_the_file_is_an_error_at_its_offset_not_an_allocation() {
        // array32 claiming 4 billion items, then nothing.
        let e = decode(&[0xdd, 0xff, 0xff, 0xff, 0xff], 10).unwrap_err().to_string();
        assert!(e.contains("byte 15") && e.contains("4294967295 items"), "{e}");
        // bin32 of 4 GB in a 6-byte file.
        let e = decode(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00], 0).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // ext32 with a 2-GB payload.
        let e = decode(&[0xc9, 0x7f, 0xff, 0xff, 0xff, 0x01], 0).unwrap_err().to_string();
        assert!(e.contains("extension payload"), "{e}");
    }

    #[test]
    fn a_truncated_stream_trailing_bytes_and_reserved_markers_are_refused() {
        assert!(decode(&[0x92, 0x01], 0).unwrap_err().to_string().contains("truncated"));
        assert!(decode(&[0x01, 0x02], 0).unwrap_err().to_string().contains("follow the end"));
        assert!(decode(&[0xc1], 0).unwrap_err().to_string().contains("0xc1"));
        assert!(decode(&[0xa2, 0xff, 0xfe], 0).unwrap_err().to_string().contains("UTF-8"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let bytes = vec![0x91; MAX_DEPTH + 5];
        assert!(decode(&bytes, 0).unwrap_err().to_string().contains("deeper"));
    }

    #[test]
    fn extensions_keep_type_and_payload() {
        assert_eq!(decode(&[0xd4, 0x03, 0x07], 0).unwrap(), Value::Ext(3, &[7]));
        assert_eq!(decode(&[0xc7, 0x02, 0x01, 0xaa, 0xbb], 0).unwrap(), Value::Ext(1, &[0xaa, 0xbb]));
    }
}
