//! `--dataset arrays`: a user's own images as arrays in one safetensors file, for datasets that
//! come as NumPy arrays (save them with `safetensors.numpy.save_file`).
//!
//! The file holds `train_images` and `test_images`, `(N, H, W, C)` with C = 1 or 3, either
//! `uint8` (0–255) or `float32` (0–1, or 0–255 when any value exceeds 1); and `train_labels`,
//! `test_labels`, `(N,)` integer class ids (any integer type or bool, or float32 holding integers). Classes
//! are `metadata["num_classes"]` when the file says, else one more than the largest label. Both
//! splits must share H, W and C, and float images are scaled alike (×255 unless some value in the
//! file exceeds 1). Pixels are kept as u8, as every in-memory dataset.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::{DataError, Dataset, Split};

/// The largest file read (the arrays are held in memory).
const MAX_FILE_BYTES: u64 = 64 << 30;

/// Loads `split` from the safetensors file at `path`.
pub fn load_arrays(path: &Path, split: Split) -> Result<Dataset, DataError> {
    let len = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?.len();
    if len > MAX_FILE_BYTES {
        return Err(DataError::format(path, 0, format!("{len} bytes is more than the {MAX_FILE_BYTES}-byte limit")));
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bad = |msg: String| DataError::format(path, 0, msg);
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a safetensors file ({e}); --dataset arrays reads one")))?;
    let prefix = if split == Split::Train { "train" } else { "test" };
    let images = tensor(&st, &format!("{prefix}_images"), path)?;
    let labels = tensor(&st, &format!("{prefix}_labels"), path)?;
    let [n, h, w, c] = match images.shape() {
        &[n, h, w, c] if (c == 1 || c == 3) && h > 0 && w > 0 => [n, h, w, c],
        s => return Err(bad(format!("{prefix}_images has shape {s:?}; expected (N, H, W, C) with C = 1 or 3"))),
    };
    if labels.shape() != [n] {
        return Err(bad(format!("{prefix}_labels has shape {:?}; expected ({n},), one per image", labels.shape())));
    }
    let other = tensor(&st, if split == Split::Train { "test_images" } else { "train_images" }, path)?;
    if other.shape().get(1..) != images.shape().get(1..) {
        return Err(bad(format!("train_images and test_images differ in (H, W, C): {:?} and {:?}", images.shape(), other.shape())));
    }
    // One scale for the whole file, so both splits of float images scale alike.
    let scale = if [&images, &other].iter().any(|t| t.dtype() == Dtype::F32 && floats(t).any(|x| x > 1.0)) { 1.0 } else { 255.0 };
    let pixels = pixels(&images, &format!("{prefix}_images"), scale).map_err(&bad)?;
    let labels = class_ids(&labels, &format!("{prefix}_labels")).map_err(&bad)?;
    let num_classes = match num_classes_of(&bytes) {
        Some(k) => k,
        None => {
            let mut all = class_ids(&tensor(&st, "train_labels", path)?, "train_labels").map_err(&bad)?;
            all.extend(class_ids(&tensor(&st, "test_labels", path)?, "test_labels").map_err(&bad)?);
            all.iter().max().map_or(0, |m| *m as usize + 1)
        }
    };
    if let Some(bad_label) = labels.iter().find(|&&l| l as usize >= num_classes) {
        return Err(bad(format!("{prefix}_labels holds {bad_label}, but the file has {num_classes} classes")));
    }
    Ok(Dataset { name: "arrays".into(), pixels, labels, height: h, width: w, channels: c, num_classes })
}

fn tensor<'a>(st: &SafeTensors<'a>, name: &str, path: &Path) -> Result<safetensors::tensor::TensorView<'a>, DataError> {
    st.tensor(name).map_err(|_| {
        DataError::format(path, 0, format!("no tensor {name} (expected train_images, train_labels, test_images, test_labels)"))
    })
}

/// `num_classes` from the file's metadata, when present and a number.
fn num_classes_of(bytes: &[u8]) -> Option<usize> {
    let (_, meta) = SafeTensors::read_metadata(bytes).ok()?;
    meta.metadata().as_ref()?.get("num_classes")?.parse().ok()
}

fn floats<'t>(t: &'t safetensors::tensor::TensorView) -> impl Iterator<Item = f32> + 't {
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// u8 pixels; float images are multiplied by `scale` (255 for [0, 1] files, 1 for [0, 255]).
fn pixels(t: &safetensors::tensor::TensorView, name: &str, scale: f32) -> Result<Vec<u8>, String> {
    match t.dtype() {
        Dtype::U8 => Ok(t.data().to_vec()),
        Dtype::F32 => {
            if let Some(x) = floats(t).find(|x| !(0.0..=255.0).contains(x)) {
                return Err(format!("{name} holds {x}: float images must lie in [0, 1] (or [0, 255])"));
            }
            Ok(floats(t).map(|x| (x * scale).round() as u8).collect())
        }
        d => Err(format!("{name} is {d:?}; expected uint8 or float32")),
    }
}

fn class_ids(t: &safetensors::tensor::TensorView, name: &str) -> Result<Vec<u32>, String> {
    let d = t.data();
    let wide: Vec<i64> = match t.dtype() {
        Dtype::U8 | Dtype::BOOL => d.iter().map(|&b| i64::from(b)).collect(),
        Dtype::I8 => d.iter().map(|&b| i64::from(b as i8)).collect(),
        Dtype::I16 => d.chunks_exact(2).map(|b| i64::from(i16::from_le_bytes([b[0], b[1]]))).collect(),
        Dtype::U64 => d.chunks_exact(8).map(|b| i64::try_from(u64::from_le_bytes(b.try_into().expect("8 bytes"))).unwrap_or(-1)).collect(),
        Dtype::I32 => d.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect(),
        Dtype::U32 => d.chunks_exact(4).map(|b| i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect(),
        Dtype::I64 => d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
        Dtype::U16 => d.chunks_exact(2).map(|b| i64::from(u16::from_le_bytes([b[0], b[1]]))).collect(),
        Dtype::F32 => {
            let f: Vec<f32> = d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            if let Some(x) = f.iter().find(|x| x.fract() != 0.0 || !x.is_finite()) {
                return Err(format!("{name} holds {x}: labels must be whole class ids"));
            }
            f.iter().map(|&x| x as i64).collect()
        }
        dt => return Err(format!("{name} is {dt:?}; expected an integer type")),
    };
    wide.iter()
        .map(|&l| u32::try_from(l).ok().filter(|&l| l < 1 << 24).ok_or_else(|| format!("{name} holds {l}: class ids are 0 to 2^24")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;
    use std::collections::HashMap;

    fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: Option<HashMap<String, String>>) {
        let views: Vec<(String, TensorView)> =
            tensors.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
    }

    #[test]
    fn uint8_and_float_images_with_any_integer_labels_load() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.safetensors");
        let float: Vec<u8> = [0.0f32, 0.5, 1.0, 0.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        let labels64: Vec<u8> = [2i64, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        write(
            &path,
            &[
                ("train_images", Dtype::U8, vec![2, 2, 2, 1], vec![7, 9, 0, 0, 1, 2, 3, 4]),
                ("train_labels", Dtype::I64, vec![2], labels64),
                ("test_images", Dtype::F32, vec![1, 2, 2, 1], float),
                ("test_labels", Dtype::U8, vec![1], vec![1]),
            ],
            None,
        );
        let train = load_arrays(&path, Split::Train).unwrap();
        assert_eq!((train.pixels.clone(), train.labels.clone(), train.num_classes), (vec![7, 9, 0, 0, 1, 2, 3, 4], vec![2, 0], 3));
        let test = load_arrays(&path, Split::Test).unwrap();
        assert_eq!((test.pixels, test.height, test.width), (vec![0, 128, 255, 64], 2, 2));
    }

    #[test]
    fn wrong_shapes_labels_and_names_are_errors_that_say_which() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.safetensors");
        let base = |labels: Vec<u8>| {
            vec![
                ("train_images", Dtype::U8, vec![2, 1, 1, 3], vec![0; 6]),
                ("train_labels", Dtype::U8, vec![labels.len()], labels),
                ("test_images", Dtype::U8, vec![1, 1, 1, 3], vec![0; 3]),
                ("test_labels", Dtype::U8, vec![1], vec![0]),
            ]
        };
        write(&path, &base(vec![0]), None);
        assert!(load_arrays(&path, Split::Train).unwrap_err().to_string().contains("expected (2,), one per image"));
        write(&path, &base(vec![0, 5]), Some(HashMap::from([("num_classes".into(), "3".into())])));
        assert!(load_arrays(&path, Split::Train).unwrap_err().to_string().contains("holds 5, but the file has 3 classes"));
        write(&path, &base(vec![0, 1])[1..], None);
        assert!(load_arrays(&path, Split::Train).unwrap_err().to_string().contains("no tensor train_images"));
        let mut odd = base(vec![0, 1]);
        odd[2].2 = vec![3, 1, 1, 1];
        write(&path, &odd, None);
        assert!(load_arrays(&path, Split::Train).unwrap_err().to_string().contains("differ in (H, W, C)"));
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(load_arrays(&path, Split::Test).unwrap_err().to_string().contains("not a safetensors file"));
    }
}
