//! SVHN, format 2 (cropped 32×32 digits), from <http://ufldl.stanford.edu/housenumbers/>.
//!
//! Format: `train_32x32.mat` (73,257 images), `test_32x32.mat` (26,032) and `extra_32x32.mat`
//! (531,131) are MATLAB Level-5 MAT files (read by the `mat5` submodule, our own small reader). Each holds
//! `X`, uint8 with MATLAB dims `32×32×3×N` in column-major order (row `r`, column `c`, channel `k`
//! of image `n` at `r + 32·c + 1024·k + 3072·n`), and `y`, `N×1` labels `1..=10` where 10 means
//! the digit 0. We convert `X` to HWC and map label 10 to 0.
//!
//! What is checked: the MAT header (little-endian Level 5 only), every element's framing and
//! size against the bytes that remain, `X`'s dims are `32×32×3×N`, `y` has `N` values, every
//! pixel fits a byte and every label is an integer in `1..=10`. Errors name the file and the
//! offset (for compressed variables, the compressed element's offset plus the decompressed one).
//!
//! The reference trains on train + extra (604,388 images): pass `include_extra`.
//!
//! Memory: the extra file decompresses to about 1.6 GB for `X`; it is converted to HWC in place,
//! one image at a time through a 3 KB scratch buffer, so a file costs about one copy of its
//! pixels (plus the copy that appends extra to train).

mod mat5;

use std::path::Path;

use crate::dataset::{Dataset, Split};
use crate::error::DataError;

/// Where to download the dataset.
pub const SVHN_URL: &str = "http://ufldl.stanford.edu/housenumbers/";
/// Training file.
pub const TRAIN_FILE: &str = "train_32x32.mat";
/// Test file.
pub const TEST_FILE: &str = "test_32x32.mat";
/// The extra training file (the reference trains on train + extra).
pub const EXTRA_FILE: &str = "extra_32x32.mat";
/// Image side in pixels.
pub const SIDE: usize = 32;
/// Bytes per image.
pub const PIXELS: usize = SIDE * SIDE * 3;

/// Loads an SVHN split. With `include_extra`, the train split is train followed by extra; the
/// flag is ignored for the test split.
pub fn load_svhn(dir: &Path, split: Split, include_extra: bool) -> Result<Dataset, DataError> {
    let names: Vec<&str> = match (split, include_extra) {
        (Split::Train, false) => vec![TRAIN_FILE],
        (Split::Train, true) => vec![TRAIN_FILE, EXTRA_FILE],
        (Split::Test, _) => vec![TEST_FILE],
    };
    let missing: Vec<&str> = names.iter().copied().filter(|n| !dir.join(n).is_file()).collect();
    if !missing.is_empty() {
        return Err(DataError::Missing {
            dir: dir.to_path_buf(),
            msg: format!(
                "missing {}; download format 2 (cropped digits: train_32x32.mat, test_32x32.mat, extra_32x32.mat) from {SVHN_URL} into this directory",
                missing.join(", ")
            ),
        });
    }
    let mut ds = read_svhn_mat(&dir.join(names[0]))?;
    for name in &names[1..] {
        let more = read_svhn_mat(&dir.join(name))?;
        ds.pixels.reserve_exact(more.pixels.len());
        ds.extend(&more);
    }
    Ok(ds)
}

/// Reads one SVHN format-2 `.mat` file.
pub fn read_svhn_mat(path: &Path) -> Result<Dataset, DataError> {
    let (arrays, file_len) = mat5::read_arrays(path, &["X", "y"])?;
    let mut x = None;
    let mut y = None;
    for a in arrays {
        if a.name == "X" {
            x = Some(a);
        } else if a.name == "y" {
            y = Some(a);
        }
    }
    let no_var = |v: &str| {
        DataError::format(
            path,
            file_len,
            format!("no variable `{v}` in the file; expected SVHN format 2 (train_32x32.mat etc. from {SVHN_URL})"),
        )
    };
    let x = x.ok_or_else(|| no_var("X"))?;
    let y = y.ok_or_else(|| no_var("y"))?;
    let n = match x.dims.as_slice() {
        [32, 32, 3, n] => *n,
        [32, 32, 3] => 1,
        dims => return Err(x.err(path, format!("dimensions {dims:?}, expected [32, 32, 3, N]"))),
    };
    let labels = labels_from(path, &y, n)?;
    let pixels = pixels_to_hwc(path, x)?;
    Ok(Dataset { name: "svhn".into(), pixels, labels, height: SIDE, width: SIDE, channels: 3, num_classes: 10 })
}

/// `y` (`N×1`, `1..=10`) to labels `0..=9`, 10 becoming 0.
fn labels_from(path: &Path, y: &mat5::MatArray, n: usize) -> Result<Vec<u32>, DataError> {
    let column = y.dims.len() == 2 && (y.dims[0] == 1 || y.dims[1] == 1);
    if y.numel() != n || !column {
        return Err(y.err(path, format!("dimensions {:?}, expected [{n}, 1] to match X's {n} images", y.dims)));
    }
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let v = y.value(i);
        if v.fract() != 0.0 || !(1.0..=10.0).contains(&v) {
            return Err(y.err_value(path, i, format!("label {v} of image {i} is not an integer in 1..=10")));
        }
        labels.push(if v == 10.0 { 0 } else { v as u32 });
    }
    Ok(labels)
}

/// `X` (column-major `32×32×3×N`) to HWC bytes, in place when it is stored as bytes.
fn pixels_to_hwc(path: &Path, x: mat5::MatArray) -> Result<Vec<u8>, DataError> {
    let mut v = if x.data_type == mat5::MI_UINT8 {
        x.data
    } else {
        let mut out = Vec::with_capacity(x.numel());
        for i in 0..x.numel() {
            let f = x.value(i);
            if f.fract() != 0.0 || !(0.0..=255.0).contains(&f) {
                return Err(x.err_value(path, i, format!("pixel value {f} does not fit a byte")));
            }
            out.push(f as u8);
        }
        out
    };
    // v: (N, 3, 32, 32) in memory order, i.e. MATLAB's (32 rows, 32 cols, 3, N) column-major,
    // with rows varying fastest; rewritten per image to (N, 32, 32, 3).
    let mut scratch = [0u8; PIXELS];
    for img in v.chunks_exact_mut(PIXELS) {
        scratch.copy_from_slice(img);
        for r in 0..SIDE {
            for c in 0..SIDE {
                for k in 0..3 {
                    img[(r * SIDE + c) * 3 + k] = scratch[r + SIDE * c + SIDE * SIDE * k];
                }
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::mat5::{MI_COMPRESSED, MI_DOUBLE, MI_INT8, MI_INT32, MI_MATRIX, MI_UINT8, MI_UINT32};
    use super::*;

    /// A sub-element: small form when the data fits 4 bytes, padded to 8.
    fn sub(ty: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        if data.len() <= 4 {
            v.extend_from_slice(&(((data.len() as u32) << 16) | ty).to_le_bytes());
        } else {
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
        v.extend_from_slice(data);
        while v.len() % 8 != 0 {
            v.push(0);
        }
        v
    }

    /// A whole `miMATRIX` element (tag included).
    fn matrix(name: &str, class: u8, dims: &[i32], data_ty: u32, data: &[u8]) -> Vec<u8> {
        let mut body = sub(MI_UINT32, &[class, 0, 0, 0, 0, 0, 0, 0]);
        let dim_bytes: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        body.extend(sub(MI_INT32, &dim_bytes));
        body.extend(sub(MI_INT8, name.as_bytes()));
        body.extend(sub(data_ty, data));
        let mut el = MI_MATRIX.to_le_bytes().to_vec();
        el.extend_from_slice(&(body.len() as u32).to_le_bytes());
        el.extend(body);
        el
    }

    /// `element` zlib-compressed into a `miCOMPRESSED` element (no padding, as MATLAB writes).
    fn compressed(element: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(element).unwrap();
        let c = z.finish().unwrap();
        let mut el = MI_COMPRESSED.to_le_bytes().to_vec();
        el.extend_from_slice(&(c.len() as u32).to_le_bytes());
        el.extend(c);
        el
    }

    fn header(endian: &[u8; 2], version: u16) -> Vec<u8> {
        let mut h = b"MATLAB 5.0 MAT-file, Platform: ringsam test".to_vec();
        h.resize(116, b' ');
        h.extend_from_slice(&[0u8; 8]);
        h.extend_from_slice(&version.to_le_bytes());
        h.extend_from_slice(endian);
        h
    }

    fn pixel(r: usize, c: usize, k: usize, n: usize) -> u8 {
        ((r + 3 * c + 7 * k + 11 * n) % 256) as u8
    }

    /// `X` for `n` images, column-major.
    fn x_matrix(n: usize) -> Vec<u8> {
        let mut data = vec![0u8; PIXELS * n];
        for i in 0..n {
            for k in 0..3 {
                for c in 0..SIDE {
                    for r in 0..SIDE {
                        data[r + 32 * c + 1024 * k + 3072 * i] = pixel(r, c, k, i);
                    }
                }
            }
        }
        matrix("X", 9, &[32, 32, 3, n as i32], MI_UINT8, &data)
    }

    fn y_double(labels: &[f64]) -> Vec<u8> {
        let data: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        matrix("y", 6, &[labels.len() as i32, 1], MI_DOUBLE, &data)
    }

    fn mat(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut f = header(b"IM", 0x0100);
        for e in elements {
            f.extend_from_slice(e);
        }
        f
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn read_err(bytes: &[u8]) -> String {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "bad_32x32.mat", bytes);
        let msg = read_svhn_mat(&p).unwrap_err().to_string();
        assert!(msg.contains("bad_32x32.mat"), "{msg}");
        msg
    }

    fn check_pixels(ds: &Dataset, n: usize) {
        assert_eq!((ds.name.as_str(), ds.len(), ds.height, ds.width, ds.channels, ds.num_classes), ("svhn", n, 32, 32, 3, 10));
        for i in 0..n {
            for (r, c, k) in [(0, 0, 0), (5, 7, 2), (31, 30, 1), (17, 0, 2)] {
                assert_eq!(ds.image(i)[(r * 32 + c) * 3 + k], pixel(r, c, k, i), "image {i} ({r}, {c}, {k})");
            }
        }
    }

    #[test]
    fn uncompressed_file_reads_x_as_hwc_and_maps_label_10_to_0() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "t.mat", &mat(&[x_matrix(2), y_double(&[10.0, 3.0])]));
        let ds = read_svhn_mat(&p).unwrap();
        check_pixels(&ds, 2);
        assert_eq!(ds.labels, vec![0, 3]);
    }

    #[test]
    fn compressed_file_with_y_stored_as_uint8() {
        // MATLAB stores an integer-valued double array as miUINT8 (here a small element).
        let y = matrix("y", 6, &[2, 1], MI_UINT8, &[1, 10]);
        let other = matrix("note", 6, &[1, 1], MI_DOUBLE, &1.5f64.to_le_bytes());
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "t.mat", &mat(&[compressed(&other), compressed(&x_matrix(2)), compressed(&y)]));
        let ds = read_svhn_mat(&p).unwrap();
        check_pixels(&ds, 2);
        assert_eq!(ds.labels, vec![1, 0]);
    }

    #[test]
    fn train_plus_extra_concatenates_in_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), TRAIN_FILE, &mat(&[x_matrix(2), y_double(&[1.0, 2.0])]));
        write(d.path(), EXTRA_FILE, &mat(&[compressed(&x_matrix(1)), compressed(&y_double(&[9.0]))]));
        write(d.path(), TEST_FILE, &mat(&[y_double(&[5.0]), x_matrix(1)]));
        let train = load_svhn(d.path(), Split::Train, false).unwrap();
        assert_eq!(train.labels, vec![1, 2]);
        let both = load_svhn(d.path(), Split::Train, true).unwrap();
        assert_eq!(both.labels, vec![1, 2, 9]);
        assert_eq!(both.image(2), train.image(0)); // extra's image 0 has train image 0's pattern
        let test = load_svhn(d.path(), Split::Test, true).unwrap();
        assert_eq!(test.labels, vec![5]);
    }

    #[test]
    fn missing_files_are_listed_with_the_url() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), TRAIN_FILE, b"whatever");
        match load_svhn(d.path(), Split::Train, true) {
            Err(DataError::Missing { msg, .. }) => {
                assert!(msg.contains(EXTRA_FILE) && !msg.starts_with("missing train"), "{msg}");
                assert!(msg.contains(SVHN_URL), "{msg}");
            }
            other => panic!("expected Missing, got {other:?}"),
        }
    }

    #[test]
    fn big_endian_and_v73_headers_are_rejected() {
        let msg = read_err(&[header(b"MI", 0x0001), x_matrix(1)].concat());
        assert!(msg.contains("offset 126") && msg.contains("big-endian"), "{msg}");
        let msg = read_err(&[header(b"IM", 0x0200), x_matrix(1)].concat());
        assert!(msg.contains("offset 124") && msg.contains("v7.3"), "{msg}");
        let msg = read_err(&header(b"IM", 0x0100)[..100]);
        assert!(msg.contains("offset 100") && msg.contains("128-byte MAT header"), "{msg}");
    }

    #[test]
    fn truncated_mid_element_is_an_error_at_the_element() {
        let full = mat(&[x_matrix(1), y_double(&[1.0])]);
        let msg = read_err(&full[..128 + 8 + 100]);
        assert!(msg.contains("offset 128") && msg.contains("only 100 remain"), "{msg}");
        let msg = read_err(&full[..128 + 4]);
        assert!(msg.contains("offset 128") && msg.contains("truncated element tag"), "{msg}");
        // cut inside a compressed element
        let full = mat(&[compressed(&x_matrix(1)), compressed(&y_double(&[1.0]))]);
        let msg = read_err(&full[..full.len() - 10]);
        assert!(msg.contains("remain in the file"), "{msg}");
    }

    #[test]
    fn declared_sizes_beyond_the_data_are_errors_not_allocations() {
        // top-level miMATRIX claiming ~2 GiB in a 3 KB file
        let mut f = mat(&[x_matrix(1), y_double(&[1.0])]);
        f[132..136].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        let msg = read_err(&f);
        assert!(msg.contains("offset 128") && msg.contains("declares 2147483632 bytes"), "{msg}");
        // the dimensions sub-element (matrix body byte 16, file offset 128 + 8 + 16) overruns the matrix
        let mut f = mat(&[x_matrix(1), y_double(&[1.0])]);
        f[156..160].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        let msg = read_err(&f);
        assert!(msg.contains("offset 152") && msg.contains("dimensions: declares"), "{msg}");
        // a compressed matrix declaring ~4 GiB from a few hundred bytes of zlib
        let mut inner = x_matrix(1);
        inner[4..8].copy_from_slice(&0xffff_ff00u32.to_le_bytes());
        let msg = read_err(&mat(&[compressed(&inner)]));
        assert!(msg.contains("offset 128") && msg.contains("more than"), "{msg}");
        // a compressed matrix declaring more than its stream holds
        let mut inner = y_double(&[1.0]);
        let declared = (inner.len() - 8 + 64) as u32;
        inner[4..8].copy_from_slice(&declared.to_le_bytes());
        let msg = read_err(&mat(&[compressed(&inner)]));
        assert!(msg.contains("offset 128") && msg.contains("holds only"), "{msg}");
    }

    #[test]
    fn corrupt_zlib_stream_is_a_format_error() {
        let mut el = MI_COMPRESSED.to_le_bytes().to_vec();
        el.extend_from_slice(&20u32.to_le_bytes());
        el.extend_from_slice(&[0xff; 20]);
        let msg = read_err(&mat(&[el]));
        assert!(msg.contains("offset 128") && msg.contains("zlib"), "{msg}");
    }

    #[test]
    fn bad_labels_dims_and_missing_variables() {
        // label 11: value 1 of y, whose element starts after X's 6208 bytes; y's real part
        // starts at body byte 48, so value 1 is at 128 + 6208 + 8 + 48 + 8
        let x = x_matrix(2);
        assert_eq!(x.len(), 6208);
        let msg = read_err(&mat(&[x.clone(), y_double(&[1.0, 11.0])]));
        assert!(msg.contains("offset 6400") && msg.contains("label 11"), "{msg}");
        let msg = read_err(&mat(&[x.clone(), y_double(&[1.0, 2.5])]));
        assert!(msg.contains("label 2.5"), "{msg}");
        // label count does not match X (reported at y's matrix body, 6336 + 8)
        let msg = read_err(&mat(&[x.clone(), y_double(&[1.0])]));
        assert!(msg.contains("offset 6344") && msg.contains("expected [2, 1]"), "{msg}");
        // no y
        let msg = read_err(&mat(std::slice::from_ref(&x)));
        assert!(msg.contains("offset 6336") && msg.contains("no variable `y`"), "{msg}");
        // X of the wrong shape
        let x28 = matrix("X", 9, &[28, 28, 1, 1], MI_UINT8, &[0u8; 784]);
        let msg = read_err(&mat(&[x28, y_double(&[1.0])]));
        assert!(msg.contains("offset 136") && msg.contains("[28, 28, 1, 1]"), "{msg}");
        // X whose data is shorter than its dims say (reported at the real part's tag, body byte 48)
        let short = matrix("X", 9, &[32, 32, 3, 2], MI_UINT8, &[0u8; 3072]);
        let msg = read_err(&mat(&[short, y_double(&[1.0, 2.0])]));
        assert!(msg.contains("offset 184") && msg.contains("real part holds 3072 bytes"), "{msg}");
    }
}
