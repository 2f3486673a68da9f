//! A small reader for MATLAB Level-5 MAT files (little-endian only), enough for SVHN format 2.
//!
//! Format (MathWorks, "MAT-File Format", Level 5):
//! 1. A 128-byte header: 116 bytes of text, 8 bytes of subsystem offset, a `u16` version
//!    (`0x0100`) and a 2-byte endian indicator, `"IM"` when the file was written little-endian
//!    (`"MI"` big-endian, rejected here). Version `0x0200` is v7.3, an HDF5 file, also rejected.
//! 2. Then data elements. A tag is 8 bytes, `u32` type then `u32` byte count, followed by the data
//!    and padding to a multiple of 8. The "small element" form packs a count of at most 4 into the
//!    upper 16 bits of the first `u32` (type in the lower 16) and the data into the next 4 bytes.
//! 3. A variable is a `miMATRIX` (14) element holding sub-elements: array flags (`miUINT32`, class
//!    in the low byte, complex bit `0x0800`), dimensions (`miINT32`), name (`miINT8`), real part
//!    (any numeric type, whatever the class: MATLAB stores an integer-valued double array as
//!    `miUINT8`). Or it is a `miCOMPRESSED` (15) element: a zlib stream holding one `miMATRIX`
//!    element. Compressed elements are not padded.
//!
//! Bounds: every byte count is checked against the bytes that remain (in the file, or in the
//! enclosing matrix) before anything is allocated from it. A compressed element's declared matrix
//! size can only be checked against what deflate can produce (at most about 1032 bytes per input
//! byte; we allow [`MAX_INFLATE_RATIO`]) and the `u32` count caps it below 4 GiB; the reserve
//! is fallible and the decompressed length must match the declared one.
//!
//! Memory: the file is streamed, one top-level element at a time, so peak memory is one
//! variable's decompressed element. Its real part is handed out in place (the element buffer,
//! with the prefix drained), not copied.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use flate2::read::ZlibDecoder;

use crate::error::DataError;

/// `miINT8`: also used for array names.
pub(crate) const MI_INT8: u32 = 1;
/// `miUINT8`.
pub(crate) const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
/// `miINT32`: dimensions.
pub(crate) const MI_INT32: u32 = 5;
/// `miUINT32`: array flags.
pub(crate) const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
/// `miDOUBLE`.
pub(crate) const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
/// `miMATRIX`: one variable.
pub(crate) const MI_MATRIX: u32 = 14;
/// `miCOMPRESSED`: a zlib stream holding one element.
pub(crate) const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;

/// Header length in bytes.
pub(crate) const HEADER_LEN: u64 = 128;
/// Largest decompressed/compressed ratio we believe (deflate's maximum is about 1032).
pub(crate) const MAX_INFLATE_RATIO: u64 = 1100;
/// Complex bit in the second byte of the array flags.
const FLAG_COMPLEX: u8 = 0x08;

/// Bytes per value of a numeric data type, or `None` for a type that is not numeric.
fn element_size(ty: u32) -> Option<usize> {
    match ty {
        MI_INT8 | MI_UINT8 => Some(1),
        MI_INT16 | MI_UINT16 => Some(2),
        MI_INT32 | MI_UINT32 | MI_SINGLE => Some(4),
        MI_DOUBLE | MI_INT64 | MI_UINT64 => Some(8),
        _ => None,
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// Where a matrix sits in the file, for error messages.
#[derive(Clone, Copy, Debug)]
struct Loc {
    /// File offset of the top-level element's tag.
    element: u64,
    /// Whether that element is `miCOMPRESSED`; then offsets inside the matrix exist only in the
    /// decompressed stream, and errors report the element's offset and the decompressed one.
    compressed: bool,
}

impl Loc {
    /// An error about byte `local` of the matrix body (the bytes after the `miMATRIX` tag).
    fn err(&self, path: &Path, local: usize, msg: impl std::fmt::Display) -> DataError {
        if self.compressed {
            DataError::format(path, self.element, format!("compressed element, decompressed byte {}: {msg}", local + 8))
        } else {
            DataError::format(path, self.element + 8 + local as u64, msg.to_string())
        }
    }
}

/// One numeric variable.
pub(crate) struct MatArray {
    /// Variable name.
    pub name: String,
    /// MATLAB class (`mxDOUBLE_CLASS` = 6, `mxUINT8_CLASS` = 9, ...).
    #[allow(dead_code)]
    pub class: u8,
    /// Dimensions, MATLAB order (column-major: the first varies fastest).
    pub dims: Vec<usize>,
    /// Storage type of [`MatArray::data`] (`MI_UINT8`, `MI_DOUBLE`, ...).
    pub data_type: u32,
    /// The real part: `numel · elsize` little-endian values of `data_type`.
    pub data: Vec<u8>,
    elsize: usize,
    loc: Loc,
    /// Offset of `data[0]` in the matrix body.
    data_local: usize,
}

impl MatArray {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.data.len() / self.elsize
    }

    /// Value `i` (column-major), converted to `f64`. `i < numel()`.
    pub fn value(&self, i: usize) -> f64 {
        let d = &self.data;
        let at = i * self.elsize;
        match self.data_type {
            MI_INT8 => f64::from(d[at] as i8),
            MI_UINT8 => f64::from(d[at]),
            MI_INT16 => f64::from(i16::from_le_bytes(le(d, at))),
            MI_UINT16 => f64::from(u16::from_le_bytes(le(d, at))),
            MI_INT32 => f64::from(i32::from_le_bytes(le(d, at))),
            MI_UINT32 => f64::from(u32::from_le_bytes(le(d, at))),
            MI_SINGLE => f64::from(f32::from_le_bytes(le(d, at))),
            MI_DOUBLE => f64::from_le_bytes(le(d, at)),
            MI_INT64 => i64::from_le_bytes(le(d, at)) as f64,
            MI_UINT64 => u64::from_le_bytes(le(d, at)) as f64,
            _ => unreachable!("parse_matrix accepts numeric data types only"),
        }
    }

    /// An error about the variable as a whole (reported at its matrix).
    pub fn err(&self, path: &Path, msg: impl std::fmt::Display) -> DataError {
        self.loc.err(path, 0, format!("variable `{}`: {msg}", self.name))
    }

    /// An error about value `i`.
    pub fn err_value(&self, path: &Path, i: usize, msg: impl std::fmt::Display) -> DataError {
        self.loc.err(path, self.data_local + i * self.elsize, format!("variable `{}`: {msg}", self.name))
    }
}

/// Reads the numeric variables named in `wanted` from the MAT file at `path`; other variables
/// are skipped without being checked beyond their framing. Also returns the file length.
pub(crate) fn read_arrays(path: &Path, wanted: &[&str]) -> Result<(Vec<MatArray>, u64), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    check_header(path, &mut r, len)?;
    let mut arrays = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < len {
        let left = len - pos;
        if left < 8 {
            let mut rest = [0u8; 8];
            let rest = &mut rest[..left as usize];
            read_exact(path, &mut r, rest, pos)?;
            if rest.iter().all(|&b| b == 0) {
                break; // trailing padding
            }
            return Err(DataError::format(
                path,
                pos,
                format!("truncated element tag: {left} bytes left, a tag needs 8; the file is truncated (re-download)"),
            ));
        }
        let mut tag = [0u8; 8];
        read_exact(path, &mut r, &mut tag, pos)?;
        let first = le_u32(&tag, 0);
        if first >> 16 != 0 {
            // A small element: its data sits in the tag. Not a variable; nothing to skip.
            pos += 8;
            continue;
        }
        let ty = first;
        let n = u64::from(le_u32(&tag, 4));
        if n > left - 8 {
            return Err(DataError::format(
                path,
                pos,
                format!(
                    "element of type {ty} declares {n} bytes but only {} remain in the file; the file is truncated or corrupt (re-download)",
                    left - 8
                ),
            ));
        }
        let body_at = pos + 8;
        match ty {
            MI_COMPRESSED => {
                if let Some(a) = read_compressed(path, &mut r, pos, n, wanted)? {
                    arrays.push(a);
                }
            }
            MI_MATRIX => {
                let body = read_body(path, &mut r, body_at, n)?;
                if let Some(a) = parse_matrix(path, Loc { element: pos, compressed: false }, body, wanted)? {
                    arrays.push(a);
                }
            }
            _ => skip(path, &mut r, body_at, n)?,
        }
        pos = body_at + n;
        if ty != MI_COMPRESSED {
            let pad = ((8 - n % 8) % 8).min(len - pos);
            skip(path, &mut r, pos, pad)?;
            pos += pad;
        }
    }
    Ok((arrays, len))
}

fn check_header(path: &Path, r: &mut BufReader<File>, len: u64) -> Result<(), DataError> {
    if len < HEADER_LEN {
        return Err(DataError::format(
            path,
            len,
            format!("file is {len} bytes, shorter than the {HEADER_LEN}-byte MAT header; not a MAT file, or truncated (re-download)"),
        ));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    read_exact(path, r, &mut h, 0)?;
    match &h[126..128] {
        b"IM" => {}
        b"MI" => {
            return Err(DataError::format(
                path,
                126,
                "big-endian MAT file (endian indicator \"MI\"); only little-endian files are supported (re-save it little-endian, or re-download)",
            ));
        }
        other => {
            return Err(DataError::format(
                path,
                126,
                format!(
                    "endian indicator {:?} is neither \"IM\" nor \"MI\"; not a MATLAB Level-5 MAT file",
                    String::from_utf8_lossy(other)
                ),
            ));
        }
    }
    let version = u16::from_le_bytes([h[124], h[125]]);
    if version == 0x0200 {
        return Err(DataError::format(path, 124, "MAT v7.3 (HDF5) files are not supported; expected a Level-5 MAT file (version 0x0100)"));
    }
    if version != 0x0100 {
        return Err(DataError::format(path, 124, format!("MAT version 0x{version:04x}, expected 0x0100 (Level 5)")));
    }
    Ok(())
}

/// `read_exact` whose errors name the file; `pos` is the file offset of `buf[0]`.
fn read_exact(path: &Path, r: &mut BufReader<File>, buf: &mut [u8], pos: u64) -> Result<(), DataError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            DataError::format(path, pos, "file ends early (did it change while being read?)")
        } else {
            DataError::io(path, e)
        }
    })
}

/// Skips `n` bytes at file offset `pos`.
fn skip(path: &Path, r: &mut BufReader<File>, pos: u64, n: u64) -> Result<(), DataError> {
    let copied = io::copy(&mut (&mut *r).take(n), &mut io::sink()).map_err(|e| DataError::io(path, e))?;
    if copied != n {
        return Err(DataError::format(path, pos + copied, "file ends early (did it change while being read?)"));
    }
    Ok(())
}

/// Reads the `n` bytes at file offset `pos`; the caller has checked `n` against the file length.
fn read_body(path: &Path, r: &mut BufReader<File>, pos: u64, n: u64) -> Result<Vec<u8>, DataError> {
    let mut body = Vec::new();
    body.try_reserve_exact(n as usize).map_err(|_| DataError::format(path, pos, format!("cannot allocate {n} bytes for this element")))?;
    (&mut *r).take(n).read_to_end(&mut body).map_err(|e| DataError::io(path, e))?;
    if body.len() as u64 != n {
        return Err(DataError::format(path, pos + body.len() as u64, "file ends early (did it change while being read?)"));
    }
    Ok(body)
}

/// An error from the zlib stream of the compressed element at `pos`, `at` bytes into its output.
fn inflate_error(path: &Path, pos: u64, at: usize, e: io::Error) -> DataError {
    match e.kind() {
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => DataError::format(
            path,
            pos,
            format!("compressed element: bad zlib stream at decompressed byte {at}: {e}; the file is corrupt (re-download)"),
        ),
        _ => DataError::io(path, e),
    }
}

/// Reads the `miCOMPRESSED` element whose tag is at `pos` and whose `n` bytes follow it, and
/// leaves the reader just past them.
fn read_compressed(path: &Path, r: &mut BufReader<File>, pos: u64, n: u64, wanted: &[&str]) -> Result<Option<MatArray>, DataError> {
    let mut z = ZlibDecoder::new((&mut *r).take(n));
    let mut tag = [0u8; 8];
    if let Err(e) = z.read_exact(&mut tag) {
        return Err(inflate_error(path, pos, 0, e));
    }
    let first = le_u32(&tag, 0);
    let (ty, inner) = if first >> 16 != 0 { (first & 0xffff, 0) } else { (first, u64::from(le_u32(&tag, 4))) };
    let array = if ty != MI_MATRIX {
        None // not a variable: skipped below with the rest of the element
    } else {
        let limit = n.saturating_mul(MAX_INFLATE_RATIO).saturating_add(1024);
        if inner > limit {
            return Err(DataError::format(
                path,
                pos,
                format!(
                    "compressed element: its matrix declares {inner} bytes, more than {n} compressed bytes can hold; the file is corrupt (re-download)"
                ),
            ));
        }
        let mut body = Vec::new();
        body.try_reserve_exact(inner as usize)
            .map_err(|_| DataError::format(path, pos, format!("compressed element: cannot allocate {inner} bytes for its matrix")))?;
        let res = (&mut z).take(inner).read_to_end(&mut body);
        if let Err(e) = res {
            return Err(inflate_error(path, pos, 8 + body.len(), e));
        }
        if (body.len() as u64) < inner {
            return Err(DataError::format(
                path,
                pos,
                format!(
                    "compressed element: its matrix declares {inner} bytes but the stream holds only {}; the file is truncated or corrupt (re-download)",
                    body.len()
                ),
            ));
        }
        parse_matrix(path, Loc { element: pos, compressed: true }, body, wanted)?
    };
    // The decoder may stop before the end of the element (checksum, padding); drain the rest so
    // the reader sits at the next element.
    let mut rest = z.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| DataError::io(path, e))?;
    if rest.limit() != 0 {
        return Err(DataError::format(path, pos + 8 + n - rest.limit(), "file ends early (did it change while being read?)"));
    }
    Ok(array)
}

/// A sub-element of a matrix body: its type, where its data is, where the next one starts.
struct Sub {
    ty: u32,
    start: usize,
    len: usize,
    next: usize,
}

/// Reads the sub-element tag at `at` (`<= body.len()`) and bounds its count by what remains.
fn sub(path: &Path, loc: Loc, body: &[u8], at: usize, what: &str) -> Result<Sub, DataError> {
    let left = body.len() - at;
    if left < 8 {
        return Err(loc.err(path, at, format!("{what}: truncated tag, {left} bytes left in the matrix; corrupt file (re-download)")));
    }
    let first = le_u32(body, at);
    if first >> 16 != 0 {
        let n = (first >> 16) as usize;
        if n > 4 {
            return Err(loc.err(path, at, format!("{what}: small element declares {n} bytes, at most 4 fit; corrupt file (re-download)")));
        }
        return Ok(Sub { ty: first & 0xffff, start: at + 4, len: n, next: at + 8 });
    }
    let n = le_u32(body, at + 4) as usize;
    if n > left - 8 {
        return Err(loc.err(
            path,
            at,
            format!("{what}: declares {n} bytes but only {} remain in the matrix; corrupt file (re-download)", left - 8),
        ));
    }
    let end = at + 8 + n;
    Ok(Sub { ty: first, start: at + 8, len: n, next: (end + (8 - n % 8) % 8).min(body.len()) })
}

/// Parses a `miMATRIX` body; `None` when the variable is not in `wanted`.
fn parse_matrix(path: &Path, loc: Loc, body: Vec<u8>, wanted: &[&str]) -> Result<Option<MatArray>, DataError> {
    let flags = sub(path, loc, &body, 0, "array flags")?;
    if flags.ty != MI_UINT32 || flags.len < 4 {
        return Err(loc.err(
            path,
            0,
            format!("array flags: expected a miUINT32 element of 8 bytes, found type {} of {} bytes", flags.ty, flags.len),
        ));
    }
    let class = body[flags.start];
    let flag_bits = body[flags.start + 1];

    let dims_el = sub(path, loc, &body, flags.next, "dimensions")?;
    if dims_el.ty != MI_INT32 || dims_el.len < 8 || dims_el.len % 4 != 0 {
        return Err(loc.err(
            path,
            flags.next,
            format!("dimensions: expected a miINT32 element of at least 2 values, found type {} of {} bytes", dims_el.ty, dims_el.len),
        ));
    }
    // Bounded: dims_el.len was checked against the body length.
    let mut dims = Vec::with_capacity(dims_el.len / 4);
    for i in 0..dims_el.len / 4 {
        let d = i32::from_le_bytes(le(&body, dims_el.start + 4 * i));
        if d < 0 {
            return Err(loc.err(path, dims_el.start + 4 * i, format!("dimensions: negative dimension {d}")));
        }
        dims.push(d as usize);
    }

    let name_el = sub(path, loc, &body, dims_el.next, "array name")?;
    if name_el.ty != MI_INT8 && name_el.ty != MI_UTF8 {
        return Err(loc.err(path, dims_el.next, format!("array name: expected a miINT8 element, found type {}", name_el.ty)));
    }
    let name = String::from_utf8_lossy(&body[name_el.start..name_el.start + name_el.len]).into_owned();
    if !wanted.contains(&name.as_str()) {
        return Ok(None);
    }
    if flag_bits & FLAG_COMPLEX != 0 {
        return Err(loc.err(path, 0, format!("variable `{name}` is complex; expected a real array")));
    }
    if !(6..=15).contains(&class) {
        return Err(loc.err(path, 0, format!("variable `{name}` has class {class}; expected a numeric array (classes 6..=15)")));
    }

    let data_el = sub(path, loc, &body, name_el.next, "real part")?;
    let Some(elsize) = element_size(data_el.ty) else {
        return Err(loc.err(path, name_el.next, format!("variable `{name}`: real part has type {}, not a numeric type", data_el.ty)));
    };
    let numel = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if numel.and_then(|n| n.checked_mul(elsize)) != Some(data_el.len) {
        return Err(loc.err(
            path,
            name_el.next,
            format!(
                "variable `{name}`: dimensions {dims:?} need {} values of {elsize} bytes, the real part holds {} bytes; corrupt file (re-download)",
                numel.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                data_el.len
            ),
        ));
    }
    let (start, len) = (data_el.start, data_el.len);
    let mut data = body;
    data.truncate(start + len);
    data.drain(..start);
    Ok(Some(MatArray { name, class, dims, data_type: data_el.ty, data, elsize, loc, data_local: start }))
}
