//! The SAM reference's published EfficientNet checkpoints, through the fixture built to their
//! layout by tests/fixtures/make_efficientnet_fixture.py (flax.nn's `(model, state)` tuple: nested
//! parameters under "0", a flat batch-norm collection keyed by module paths under "1"). One file
//! carries every dtype path: float32 spelled `'float32'` and `'<f4'`, a bfloat16 head kernel, a
//! float16 stem kernel — so the logits check covers each conversion.

use std::path::{Path, PathBuf};

use ringsam_flax::msgpack::Value;
use ringsam_models::{ModelConfig, build};
use ringsam_nn::Pass;
use ringsam_tensor::Tensor;
use ringsam_train::init_from::{SourceTensors, load_into, read_source};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/efficientnet_test")
}

fn archive() -> PathBuf {
    fixture_dir().join("checkpoint.tar.gz")
}

/// The msgpack file inside the archive, extracted with the tar and flate2 crates.
fn extracted_bytes() -> Vec<u8> {
    let file = std::fs::File::open(archive()).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("checkpoint_1000") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            return bytes;
        }
    }
    panic!("no checkpoint_1000 in the fixture archive");
}

fn f32s(st: &safetensors::SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap();
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Parameters and statistics of efficientnet-test with `classes`, initialised, then `src` loaded.
fn loaded(src: &SourceTensors, classes: usize) -> (Box<dyn ringsam_models::Model>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let model = build("efficientnet-test", &ModelConfig { num_classes: classes, in_channels: 3 }).unwrap();
    let mut params = vec![0.0; model.layout().total()];
    let mut state = vec![0.0; model.state_layout().total()];
    model.init(&mut params, &mut state, 0);
    let fresh = params.clone();
    load_into(src, model.layout(), model.state_layout(), &mut params, &mut state).unwrap();
    (model, fresh, params, state)
}

#[test]
fn the_published_layout_loads_and_its_logits_match_flax() {
    let src = read_source(&archive()).unwrap();
    assert_eq!(src.kind, "Flax checkpoint");
    let (mut model, _, params, state) = loaded(&src, 1000);
    let bytes = std::fs::read(fixture_dir().join("logits.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (shape, nhwc) = f32s(&st, "input");
    let (n, h, w, c) = (shape[0], shape[1], shape[2], shape[3]);
    // NHWC → the engine's CNHW.
    let mut cnhw = vec![0.0; nhwc.len()];
    for (i, v) in nhwc.iter().enumerate() {
        let (b, y, x, ch) = (i / (h * w * c), i / (w * c) % h, i / c % w, i % c);
        cnhw[((ch * n + b) * h + y) * w + x] = *v;
    }
    let x = Tensor::from_vec(&[c, n, h, w], cnhw).unwrap();
    let (params, mut state) = (Tensor::from(params), Tensor::from(state));
    let got = model.forward(&params, &mut state, &x, &Pass::eval()).unwrap().as_slice().to_vec();
    let (_, want) = f32s(&st, "logits");
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0f32, f32::max);
    eprintln!("worst relative logit difference: {worst:e}");
    assert!(worst < 1e-4, "logits differ from Flax's by up to {worst} (relative, floor 1)");
    // The output is not degenerate: the logits spread.
    let spread = want.iter().cloned().fold(f32::MIN, f32::max) - want.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.1, "fixture logits spread only {spread}");
}

#[test]
fn the_archive_the_extracted_file_and_its_directory_read_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("efficientnet-test");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("checkpoint_1000"), extracted_bytes()).unwrap();
    std::fs::write(dir.join("checkpoint_5"), b"an older step, never read").unwrap();
    let a = read_source(&archive()).unwrap().tensors;
    assert_eq!(a, read_source(&dir.join("checkpoint_1000")).unwrap().tensors);
    assert_eq!(a, read_source(&dir).unwrap().tensors);
    assert_eq!(a.len(), 197, "135 parameters and 62 statistics");
}

#[test]
fn a_new_head_for_ten_classes_keeps_every_other_tensor_bitwise() {
    let src = read_source(&archive()).unwrap();
    let (model, fresh, params, state) = loaded(&src, 10);
    let mut replaced = 0;
    for e in model.layout().entries() {
        let got = &params[e.id.range()];
        if e.name.starts_with("Head_11/dense/") {
            assert_eq!(got, &fresh[e.id.range()], "{} must keep its fresh initialisation", e.name);
            replaced += 1;
        } else {
            let want = &src.tensors[&e.name].values;
            assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "{} not copied bitwise", e.name);
        }
    }
    assert_eq!(replaced, 2, "the dense kernel and bias");
    for e in model.state_layout().entries() {
        assert_eq!(&state[e.id.range()], src.tensors[&e.name].values.as_slice(), "{}", e.name);
    }
    let mut params = fresh.clone();
    let mut st = state.clone();
    let report = load_into(&src, model.layout(), model.state_layout(), &mut params, &mut st).unwrap();
    assert_eq!(report.head_kept_fresh.len(), 2);
    assert_eq!(report.head_kept_fresh[0].1, vec![128, 1000]);
    assert!(report.statistics_loaded);
}

/// msgpack encoding of a decoded tree (with rmp): to write altered copies of the fixture.
fn encode(v: &Value, out: &mut Vec<u8>) {
    use rmp::encode::*;
    match v {
        Value::Nil => write_nil(out).unwrap(),
        Value::Bool(b) => write_bool(out, *b).unwrap(),
        Value::Int(i) => {
            write_sint(out, *i as i64).unwrap();
        }
        Value::Float(f) => write_f64(out, *f).unwrap(),
        Value::Str(s) => write_str(out, s).unwrap(),
        Value::Bin(b) => write_bin(out, b).unwrap(),
        Value::Array(items) => {
            write_array_len(out, items.len() as u32).unwrap();
            items.iter().for_each(|i| encode(i, out));
        }
        Value::Map(entries) => {
            write_map_len(out, entries.len() as u32).unwrap();
            for (k, v) in entries {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Ext(code, payload) => {
            write_ext_meta(out, payload.len() as u32, *code).unwrap();
            out.extend_from_slice(payload);
        }
    }
}

/// The map entry at `path` (string keys) of a decoded tree.
fn entry<'v, 'a>(root: &'v mut Value<'a>, path: &[&str]) -> &'v mut Vec<(Value<'a>, Value<'a>)> {
    let Value::Map(m) = root else { panic!("not a map") };
    match path {
        [] => m,
        [first, rest @ ..] => entry(&mut m.iter_mut().find(|(k, _)| *k == Value::Str(first)).unwrap().1, rest),
    }
}

fn read_altered(alter: impl FnOnce(&mut Value)) -> String {
    let bytes = extracted_bytes();
    let mut root = ringsam_flax::msgpack::decode(&bytes, 0).unwrap();
    alter(&mut root);
    let mut out = Vec::new();
    encode(&root, &mut out);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("checkpoint_7");
    std::fs::write(&path, out).unwrap();
    let src = read_source(&path).unwrap();
    let model = build("efficientnet-test", &ModelConfig { num_classes: 1000, in_channels: 3 }).unwrap();
    let (mut p, mut s) = (vec![0.0; model.layout().total()], vec![0.0; model.state_layout().total()]);
    load_into(&src, model.layout(), model.state_layout(), &mut p, &mut s).unwrap_err().to_string()
}

#[test]
fn a_missing_tensor_is_named() {
    let e = read_altered(|root| entry(root, &["0", "params", "Stem_0", "conv2d"]).clear());
    assert!(e.contains("1 missing: Stem_0/conv2d/kernel"), "{e}");
    let e = read_altered(|root| entry(root, &["1"]).retain(|(k, _)| *k != Value::Str("/MBConvBlock_4/batch_normalization_1")));
    assert!(e.contains("2 missing: MBConvBlock_4/batch_normalization_1/mean, MBConvBlock_4/batch_normalization_1/var"), "{e}");
}

#[test]
fn a_tensor_of_another_shape_and_an_unexpected_one_are_named() {
    let e = read_altered(|root| {
        let se = entry(root, &["0", "params", "MBConvBlock_1", "SqueezeExcite_0"]);
        let (a, b) = (se[0].1.clone(), se[1].1.clone());
        fn kernel<'a>(v: &Value<'a>) -> Value<'a> {
            match v {
                Value::Map(m) => m.iter().find(|(k, _)| *k == Value::Str("kernel")).unwrap().1.clone(),
                _ => panic!(),
            }
        }
        let (ka, kb) = (kernel(&a), kernel(&b));
        for (i, k) in [(0, kb), (1, ka)] {
            let Value::Map(m) = &mut se[i].1 else { panic!() };
            m.iter_mut().find(|(key, _)| *key == Value::Str("kernel")).unwrap().1 = k;
        }
        entry(root, &["0", "params", "Stem_0"]).push((Value::Str("extra"), Value::Map(vec![])));
        let stem = entry(root, &["0", "params", "Stem_0", "conv2d"]);
        let kernel = stem[0].1.clone();
        stem.push((Value::Str("bias"), kernel));
    });
    assert!(e.contains("of another shape") && e.contains("MBConvBlock_1/SqueezeExcite_0/expand_conv2d_1/kernel is [1, 1, 8, 2]"), "{e}");
    assert!(e.contains("1 unexpected: Stem_0/conv2d/bias"), "{e}");
}

#[test]
fn a_truncated_file_is_an_error_with_its_offset() {
    let bytes = extracted_bytes();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("checkpoint_1");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = read_source(&path).unwrap_err().to_string();
    assert!(e.contains("checkpoint_1") && e.contains("msgpack byte") && e.contains("truncated"), "{e}");
    std::fs::write(&path, b"").unwrap();
    assert!(read_source(&path).unwrap_err().to_string().contains("truncated"));
}

/// Every published checkpoint's tree (B0–B8, L2), from `jax.eval_shape` of the Flax port at the
/// reference's widths and depths: ringsam's models have exactly its names and shapes.
#[test]
fn every_published_tree_is_ringsams_name_for_name_and_shape_for_shape() {
    use md5::{Digest, Md5};
    let text = std::fs::read_to_string(fixture_dir().join("published_trees.json")).unwrap();
    let trees: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(trees.len(), 11);
    for (name, want) in &trees {
        let model = build(name, &ModelConfig { num_classes: 1000, in_channels: 3 }).unwrap();
        let line = |kind: &str, e: &ringsam_nn::arena::ParamEntry| {
            format!("{kind} {} {}", e.name, e.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
        };
        let mut lines: Vec<String> = model.layout().entries().iter().map(|e| line("param", e)).collect();
        lines.extend(model.state_layout().entries().iter().map(|e| line("state", e)));
        lines.sort();
        let digest: String =
            Md5::digest(lines.iter().map(|l| format!("{l}\n")).collect::<String>()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(lines.len() as u64, want["tensors"].as_u64().unwrap(), "{name}: tensors");
        assert_eq!(model.layout().total() as u64, want["parameters"].as_u64().unwrap(), "{name}: parameters");
        assert_eq!(digest, want["md5"].as_str().unwrap(), "{name}: names and shapes");
    }
}
