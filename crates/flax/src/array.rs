//! Arrays as `flax.serialization` writes them: msgpack extension 1 (an ndarray) or 3 (a numpy
//! scalar), whose payload is the msgpack array `[shape, dtype name, C-order bytes]`.
//!
//! The dtype is numpy's `dtype.name` in current Flax (`"float32"`, `"bfloat16"`) and was
//! `dtype.str` in older releases (`"<f4"`); both are read. Values stay as bytes until
//! [`ArrayRef::to_f32`], so a 2-GB checkpoint is not held twice while it is matched.

use crate::msgpack::{Value, decode};

/// Extension type of an ndarray.
pub const EXT_NDARRAY: i8 = 1;
/// Extension type of a numpy scalar (same payload, shape `[]`).
pub const EXT_NPSCALAR: i8 = 3;

/// An element type a Flax array can have here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE half.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
    /// f32.
    F32,
    /// f64.
    F64,
    /// A signed integer of this many bytes.
    Int(u8),
    /// An unsigned integer (or bool) of this many bytes.
    UInt(u8),
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Int(n) | Dtype::UInt(n) => n as usize,
        }
    }

    /// Whether values convert to f32 as parameters (floating point).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
    }

    /// numpy's name for it.
    pub fn name(self) -> String {
        match self {
            Dtype::F16 => "float16".into(),
            Dtype::BF16 => "bfloat16".into(),
            Dtype::F32 => "float32".into(),
            Dtype::F64 => "float64".into(),
            Dtype::Int(n) => format!("int{}", 8 * n),
            Dtype::UInt(n) => format!("uint{}", 8 * n),
        }
    }

    /// Parses `dtype.name` (`float32`) or `dtype.str` (`<f4`); returns the type and whether its
    /// bytes are big-endian.
    pub fn parse(spelling: &str) -> Option<(Dtype, bool)> {
        let by_name = match spelling {
            "float16" => Some(Dtype::F16),
            "bfloat16" => Some(Dtype::BF16),
            "float32" => Some(Dtype::F32),
            "float64" => Some(Dtype::F64),
            "bool" | "uint8" => Some(Dtype::UInt(1)),
            "int8" => Some(Dtype::Int(1)),
            "int16" => Some(Dtype::Int(2)),
            "int32" => Some(Dtype::Int(4)),
            "int64" => Some(Dtype::Int(8)),
            "uint16" => Some(Dtype::UInt(2)),
            "uint32" => Some(Dtype::UInt(4)),
            "uint64" => Some(Dtype::UInt(8)),
            _ => None,
        };
        if let Some(d) = by_name {
            return Some((d, false));
        }
        let mut chars = spelling.chars();
        let big = match chars.next()? {
            '<' | '=' | '|' => false,
            '>' => true,
            _ => return None,
        };
        let dtype = match chars.as_str() {
            "f2" => Dtype::F16,
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            "b1" | "u1" => Dtype::UInt(1),
            "i1" => Dtype::Int(1),
            "i2" => Dtype::Int(2),
            "i4" => Dtype::Int(4),
            "i8" => Dtype::Int(8),
            "u2" => Dtype::UInt(2),
            "u4" => Dtype::UInt(4),
            "u8" => Dtype::UInt(8),
            _ => return None,
        };
        Some((dtype, big && dtype.size() > 1))
    }
}

/// An array in the checkpoint: shape, type, and its bytes (borrowed from the file).
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayRef<'a> {
    /// Dimensions, C order.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: Dtype,
    /// Whether the bytes are big-endian.
    pub big_endian: bool,
    /// `product(shape) · dtype.size()` bytes.
    pub bytes: &'a [u8],
}

impl<'a> ArrayRef<'a> {
    /// Reads an extension payload (errors say where inside it; the caller names the key path).
    pub fn from_ext(code: i8, payload: &'a [u8]) -> Result<ArrayRef<'a>, String> {
        if code != EXT_NDARRAY && code != EXT_NPSCALAR {
            return Err(format!("msgpack extension type {code} is not a Flax array (1) or numpy scalar (3)"));
        }
        let bad = |why: String| format!("array payload: {why}");
        let items = match decode(payload, 0).map_err(|e| format!("array payload: {e}"))? {
            Value::Array(items) if items.len() == 3 => items,
            v => return Err(bad(format!("expected [shape, dtype, bytes], found {}", v.kind()))),
        };
        let shape = match &items[0] {
            Value::Array(dims) => dims
                .iter()
                .map(|d| match d {
                    Value::Int(n) if *n >= 0 && *n <= i128::from(u32::MAX) => Ok(*n as usize),
                    v => Err(bad(format!("a dimension must be a non-negative integer, found {v:?}"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            v => return Err(bad(format!("the shape must be an array, found {}", v.kind()))),
        };
        let (dtype, big_endian) = match &items[1] {
            Value::Str(s) => Dtype::parse(s).ok_or_else(|| bad(format!("unsupported dtype {s:?}")))?,
            v => return Err(bad(format!("the dtype must be a string, found {}", v.kind()))),
        };
        let bytes = match items[2] {
            Value::Bin(b) => b,
            ref v => return Err(bad(format!("the data must be a binary, found {}", v.kind()))),
        };
        let want = shape.iter().try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
        if want != Some(bytes.len()) {
            return Err(bad(format!("shape {shape:?} of {} needs {want:?} bytes, the payload has {}", dtype.name(), bytes.len())));
        }
        Ok(ArrayRef { shape, dtype, big_endian, bytes })
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (half types widen exactly; f64 rounds). Integer arrays are not
    /// parameters: `None`.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let n = self.dtype.size();
        let word = |c: &[u8]| -> u64 {
            let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
            if self.big_endian { c.iter().fold(0, fold) } else { c.iter().rev().fold(0, fold) }
        };
        let chunks = self.bytes.chunks_exact(n);
        Some(match self.dtype {
            Dtype::F32 => chunks.map(|c| f32::from_bits(word(c) as u32)).collect(),
            Dtype::F16 => chunks.map(|c| half::f16::from_bits(word(c) as u16).to_f32()).collect(),
            Dtype::BF16 => chunks.map(|c| half::bf16::from_bits(word(c) as u16).to_f32()).collect(),
            Dtype::F64 => chunks.map(|c| f64::from_bits(word(c)) as f32).collect(),
            Dtype::Int(_) | Dtype::UInt(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[shape, dtype, bin]` as msgpack, by hand.
    fn payload(shape: &[u8], dtype: &str, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0x93, 0x90 | shape.len() as u8];
        p.extend(shape);
        p.push(0xa0 | dtype.len() as u8);
        p.extend(dtype.as_bytes());
        p.extend([0xc4, data.len() as u8]);
        p.extend(data);
        p
    }

    #[test]
    fn both_spellings_of_float32_read_the_same_values() {
        let data: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for spelling in ["float32", "<f4", "=f4"] {
            let p = payload(&[2], spelling, &data);
            let a = ArrayRef::from_ext(1, &p).unwrap();
            assert_eq!((a.shape.clone(), a.dtype), (vec![2], Dtype::F32));
            assert_eq!(a.to_f32().unwrap(), vec![1.5, -2.0], "{spelling}");
        }
        let big: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(ArrayRef::from_ext(1, &payload(&[2], ">f4", &big)).unwrap().to_f32().unwrap(), vec![1.5, -2.0]);
    }

    #[test]
    fn half_types_widen_exactly() {
        let bf: Vec<u8> = [half::bf16::from_f32(3.0), half::bf16::from_f32(-0.15625)].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(ArrayRef::from_ext(1, &payload(&[2], "bfloat16", &bf)).unwrap().to_f32().unwrap(), vec![3.0, -0.15625]);
        let h: Vec<u8> = [half::f16::from_f32(0.5), half::f16::from_f32(1024.0)].iter().flat_map(|v| v.to_le_bytes()).collect();
        for spelling in ["float16", "<f2"] {
            assert_eq!(ArrayRef::from_ext(1, &payload(&[2], spelling, &h)).unwrap().to_f32().unwrap(), vec![0.5, 1024.0]);
        }
    }

    #[test]
    fn a_shape_that_disagrees_with_the_bytes_or_an_unknown_dtype_is_refused() {
        let e = ArrayRef::from_ext(1, &payload(&[3], "float32", &[0; 8])).unwrap_err();
        assert!(e.contains("array payload") && e.contains("needs Some(12) bytes") && e.contains("has 8"), "{e}");
        let e = ArrayRef::from_ext(1, &payload(&[2], "<V2", &[0; 4])).unwrap_err();
        assert!(e.contains("unsupported dtype \"<V2\""), "{e}");
        assert!(ArrayRef::from_ext(2, &[]).unwrap_err().contains("extension type 2"));
        // A shape whose product overflows is refused, not wrapped.
        let mut huge = vec![0x93, 0x92, 0xce, 0xff, 0xff, 0xff, 0xff, 0xce, 0xff, 0xff, 0xff, 0xff, 0xa7];
        huge.extend(b"float32");
        huge.extend([0xc4, 0x00]);
        assert!(ArrayRef::from_ext(1, &huge).unwrap_err().contains("needs None bytes"));
    }

    #[test]
    fn a_numpy_scalar_is_a_zero_dimensional_array() {
        let p = payload(&[], "int32", &7i32.to_le_bytes());
        let a = ArrayRef::from_ext(3, &p).unwrap();
        assert_eq!((a.shape.len(), a.len(), a.dtype), (0, 1, Dtype::Int(4)));
        assert_eq!(a.to_f32(), None);
    }
}
