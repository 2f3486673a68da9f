//! The decoded state dict as flat names: parameters and batch-norm statistics.
//!
//! Three layouts are recognised at the top level:
//! - **`flax.nn` `(model, state)`** (the SAM reference's published EfficientNets): `"0"` is the
//!   `Model` struct, `{"params": {...}}` nested by module; `"1"` is the batch-norm `Collection`,
//!   a FLAT dict keyed by absolute module paths (`"/MBConvBlock_1/batch_normalization_0"`),
//!   each holding `{"mean", "var"}`.
//! - **the SAM reference's training checkpoints** (`flax_training.py`'s `save_checkpoint`):
//!   `{"optimizer": {"target": <Model>, "state": …}, "model_state": <Collection>, "epoch"}`,
//!   `model_state` being `{"0": <Collection>, "1": <EMA>}` when the run kept an EMA (the EMA
//!   and the optimizer's momentum are not read: initial weights are the weights trained);
//! - **linen variables**: `{"params": {...}, "batch_stats": {...}}`, both nested by module
//!   (other top-level entries, such as a `TrainState`'s `step` or `opt_state`, are listed as
//!   ignored).
//!
//! Names join module path and leaf with `/` (`Stem_0/conv2d/kernel`,
//! `Stem_0/batch_normalization/mean`) — the reference's parameter-tree paths, which ringsam's
//! models use as their tensor names. Arrays over 1 GiB, which Flax splits into a
//! `__msgpack_chunked_array__` dict, are joined back here.

use std::collections::BTreeMap;

use crate::FlaxError;
use crate::array::{ArrayRef, Dtype, EXT_NDARRAY, EXT_NPSCALAR};
use crate::msgpack::Value;

/// The most entries a chunked array's shape or chunk list may have (a 2-GB array is two chunks).
const MAX_TUPLE: usize = 1 << 16;

/// Which top-level layout a checkpoint had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `flax.nn`'s `(model, state)`.
    ModelState,
    /// linen's `{"params", "batch_stats"}`.
    Variables,
    /// The SAM reference's training checkpoints: `{"optimizer", "model_state", "epoch"}`.
    TrainState,
}

/// A tensor, possibly reassembled from chunks (then it owns its bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<'a> {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: Dtype,
    /// The chunks, in order (one for an ordinary array).
    pub chunks: Vec<ArrayRef<'a>>,
}

impl Tensor<'_> {
    /// Values as f32 (`None` for integer arrays).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let mut out = Vec::with_capacity(self.shape.iter().product());
        for c in &self.chunks {
            out.extend(c.to_f32()?);
        }
        Some(out)
    }
}

/// The checkpoint's tensors by name.
#[derive(Debug)]
pub struct FlaxTensors<'a> {
    /// The layout found.
    pub layout: Layout,
    /// Parameters (`…/kernel`, `…/scale`).
    pub params: BTreeMap<String, Tensor<'a>>,
    /// Batch-norm statistics (`…/mean`, `…/var`).
    pub state: BTreeMap<String, Tensor<'a>>,
    /// Paths of entries that are neither (step counters, optimizer state), for the report.
    pub ignored: Vec<String>,
}

/// Reads the tensors of a decoded checkpoint (see the module docs).
pub fn tensors<'a>(root: &Value<'a>) -> Result<FlaxTensors<'a>, FlaxError> {
    let top = as_map(root, "")?;
    let mut out = FlaxTensors { layout: Layout::ModelState, params: BTreeMap::new(), state: BTreeMap::new(), ignored: Vec::new() };
    let used: &[&str] = if let (Some(model), Some(state)) = (get(top, "0"), get(top, "1")) {
        model_params(model, "0", &mut out)?;
        collection(state, "1", &mut out)?;
        &["0", "1"]
    } else if let Some(optimizer) = get(top, "optimizer") {
        out.layout = Layout::TrainState;
        let target = get(as_map(optimizer, "optimizer")?, "target");
        model_params(
            target.ok_or_else(|| tree_err("optimizer", "a flax.optim Optimizer without \"target\"".into()))?,
            "optimizer/target",
            &mut out,
        )?;
        if let Some(state) = get(top, "model_state") {
            // With EMA the reference saves (state, moving averages): the state is "0".
            let ema = as_map(state, "model_state")?.iter().any(|(k, _)| *k == Value::Str("0"));
            match ema {
                true => collection(get(as_map(state, "model_state")?, "0").expect("checked"), "model_state/0", &mut out)?,
                false => collection(state, "model_state", &mut out)?,
            }
        }
        &["optimizer", "model_state"]
    } else if let Some(params) = get(top, "params") {
        out.layout = Layout::Variables;
        flatten(params, "params", "", &mut out.params, &mut out.ignored)?;
        if let Some(stats) = get(top, "batch_stats") {
            flatten(stats, "batch_stats", "", &mut out.state, &mut out.ignored)?;
        }
        &["params", "batch_stats"]
    } else {
        return Err(tree_err(
            "",
            format!(
                "not a Flax model checkpoint: the top-level keys are {}; expected \"0\" and \"1\" (flax.nn's (model, state), as the SAM reference publishes), \"optimizer\" (the reference's training checkpoints) or \"params\" (linen variables)",
                keys(top)
            ),
        ));
    };
    for (k, _) in top.iter().filter(|(k, _)| !used.iter().any(|u| *k == Value::Str(u))) {
        out.ignored.push(key_str(k, "")?.to_string());
    }
    Ok(out)
}

fn get<'v, 'a>(map: &'v [(Value<'a>, Value<'a>)], key: &str) -> Option<&'v Value<'a>> {
    map.iter().find(|(k, _)| *k == Value::Str(key)).map(|(_, v)| v)
}

/// A model's parameters at `path`: a `flax.nn` `Model` (`{"params": …}`) or a parameter tree.
fn model_params<'a>(v: &Value<'a>, path: &str, out: &mut FlaxTensors<'a>) -> Result<(), FlaxError> {
    match get(as_map(v, path)?, "params") {
        Some(params) => flatten(params, &join(path, "params"), "", &mut out.params, &mut out.ignored),
        None => flatten(v, path, "", &mut out.params, &mut out.ignored),
    }
}

/// A `flax.nn` `Collection` at `path`: a flat dict keyed by absolute module paths.
fn collection<'a>(v: &Value<'a>, path: &str, out: &mut FlaxTensors<'a>) -> Result<(), FlaxError> {
    for (key, stats) in as_map(v, path)? {
        let module = key_str(key, path)?;
        flatten(stats, &format!("{path}/{module}"), module.trim_start_matches('/'), &mut out.state, &mut out.ignored)?;
    }
    Ok(())
}

fn tree_err(path: &str, why: String) -> FlaxError {
    FlaxError::Tree { path: if path.is_empty() { "the top level".into() } else { path.into() }, why }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() { b.to_string() } else { format!("{a}/{b}") }
}

fn keys(map: &[(Value, Value)]) -> String {
    let names: Vec<String> = map.iter().take(8).map(|(k, _)| format!("{k:?}")).collect();
    let more = if map.len() > 8 { format!(" and {} more", map.len() - 8) } else { String::new() };
    format!("[{}]{more}", names.join(", "))
}

fn as_map<'v, 'a>(v: &'v Value<'a>, path: &str) -> Result<&'v [(Value<'a>, Value<'a>)], FlaxError> {
    match v {
        Value::Map(m) => Ok(m),
        v => Err(tree_err(path, format!("expected a dict, found {}", v.kind()))),
    }
}

fn key_str<'a>(k: &Value<'a>, path: &str) -> Result<&'a str, FlaxError> {
    match k {
        Value::Str(s) => Ok(s),
        k => Err(tree_err(path, format!("a key must be a string (Flax state dicts have string keys), found {}", k.kind()))),
    }
}

/// Adds every array under `v` (at file path `path`) to `out` under `name/…`.
fn flatten<'a>(
    v: &Value<'a>,
    path: &str,
    name: &str,
    out: &mut BTreeMap<String, Tensor<'a>>,
    ignored: &mut Vec<String>,
) -> Result<(), FlaxError> {
    match v {
        Value::Ext(code, payload) if *code == EXT_NDARRAY || *code == EXT_NPSCALAR => {
            let a = ArrayRef::from_ext(*code, payload).map_err(|why| tree_err(path, why))?;
            insert(out, path, name, Tensor { shape: a.shape.clone(), dtype: a.dtype, chunks: vec![a] })
        }
        Value::Map(m) if m.iter().any(|(k, _)| *k == Value::Str("__msgpack_chunked_array__")) => insert(out, path, name, unchunk(m, path)?),
        Value::Map(m) => {
            for (k, child) in m {
                let key = key_str(k, path)?;
                flatten(child, &join(path, key), &join(name, key), out, ignored)?;
            }
            Ok(())
        }
        _ => {
            ignored.push(path.to_string());
            Ok(())
        }
    }
}

fn insert<'a>(out: &mut BTreeMap<String, Tensor<'a>>, path: &str, name: &str, t: Tensor<'a>) -> Result<(), FlaxError> {
    if out.insert(name.to_string(), t).is_some() {
        return Err(tree_err(path, format!("a second tensor named {name}")));
    }
    Ok(())
}

/// `{"__msgpack_chunked_array__": true, "shape": {"0": d0, …}, "chunks": {"0": arr, …}}`.
fn unchunk<'a>(m: &[(Value<'a>, Value<'a>)], path: &str) -> Result<Tensor<'a>, FlaxError> {
    let field = |key: &str| {
        m.iter()
            .find(|(k, _)| *k == Value::Str(key))
            .map(|(_, v)| v)
            .ok_or_else(|| tree_err(path, format!("a chunked array without {key:?}")))
    };
    let numbered = |v: &'_ Value<'a>, what: &str| -> Result<Vec<Value<'a>>, FlaxError> {
        // A tuple saved as {"0": …, "1": …}: each key parsed once into its slot.
        let at = join(path, what);
        let entries = as_map(v, &at)?;
        if entries.len() > MAX_TUPLE {
            return Err(tree_err(&at, format!("a tuple of {} entries (at most {MAX_TUPLE})", entries.len())));
        }
        let mut slots: Vec<Option<Value<'a>>> = vec![None; entries.len()];
        for (k, item) in entries {
            let key = key_str(k, &at)?;
            let slot = key.parse::<usize>().ok().and_then(|i| slots.get_mut(i));
            match slot {
                Some(s @ None) => *s = Some(item.clone()),
                _ => return Err(tree_err(&at, format!("key {key:?} is not a free index of a tuple of {}", entries.len()))),
            }
        }
        Ok(slots.into_iter().map(|s| s.expect("n distinct indices below n fill n slots")).collect())
    };
    let shape = numbered(field("shape")?, "shape")?
        .into_iter()
        .map(|d| match d {
            Value::Int(n) if (0..=i128::from(u32::MAX)).contains(&n) => Ok(n as usize),
            v => Err(tree_err(&join(path, "shape"), format!("a dimension must be a non-negative integer, found {v:?}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut chunks = Vec::new();
    for (i, c) in numbered(field("chunks")?, "chunks")?.into_iter().enumerate() {
        let at = join(path, &format!("chunks/{i}"));
        let Value::Ext(code, payload) = c else { return Err(tree_err(&at, format!("expected an array, found {}", c.kind()))) };
        chunks.push(ArrayRef::from_ext(code, payload).map_err(|why| tree_err(&at, why))?);
    }
    let dtype = chunks.first().map_or(Dtype::F32, |c| c.dtype);
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let want = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if chunks.iter().any(|c| c.dtype != dtype) || want != Some(total) {
        return Err(tree_err(path, format!("chunks of {total} values do not make shape {shape:?} of one dtype")));
    }
    Ok(Tensor { shape, dtype, chunks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::decode;
    use rmp::encode::{write_bool, write_ext_meta, write_map_len, write_str, write_uint};

    /// An ndarray extension of f32 values (what `flax.serialization` writes).
    fn f32_array(out: &mut Vec<u8>, shape: &[u64], values: &[f32]) {
        let mut p = Vec::new();
        rmp::encode::write_array_len(&mut p, 3).unwrap();
        rmp::encode::write_array_len(&mut p, shape.len() as u32).unwrap();
        shape.iter().for_each(|d| drop(write_uint(&mut p, *d)));
        write_str(&mut p, "float32").unwrap();
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        rmp::encode::write_bin(&mut p, &data).unwrap();
        write_ext_meta(out, p.len() as u32, 1).unwrap();
        out.extend(p);
    }

    /// `"w": {"__msgpack_chunked_array__": true, "shape": {"0": len}, "chunks": {key: [values]…}}`.
    fn chunked_w(b: &mut Vec<u8>, len: u64, chunks: &[(&str, &[f32])]) {
        write_str(b, "w").unwrap();
        write_map_len(b, 3).unwrap();
        write_str(b, "__msgpack_chunked_array__").unwrap();
        write_bool(b, true).unwrap();
        write_str(b, "shape").unwrap();
        write_map_len(b, 1).unwrap();
        write_str(b, "0").unwrap();
        write_uint(b, len).unwrap();
        write_str(b, "chunks").unwrap();
        write_map_len(b, chunks.len() as u32).unwrap();
        for (key, values) in chunks {
            write_str(b, key).unwrap();
            f32_array(b, &[values.len() as u64], values);
        }
    }

    #[test]
    fn chunked_arrays_are_joined_and_linen_variables_are_read() {
        // {"params": {"w": <chunked (3,)>}, "batch_stats": {"bn": {"mean": [..]}}, "step": 5}
        let mut b = Vec::new();
        write_map_len(&mut b, 3).unwrap();
        write_str(&mut b, "params").unwrap();
        write_map_len(&mut b, 1).unwrap();
        // Out of order on purpose: "0", "1" are tuple indices, not positions.
        chunked_w(&mut b, 3, &[("1", &[3.0]), ("0", &[1.0, 2.0])]);
        write_str(&mut b, "batch_stats").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "bn").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "mean").unwrap();
        f32_array(&mut b, &[1], &[0.5]);
        write_str(&mut b, "step").unwrap();
        write_uint(&mut b, 5).unwrap();
        let root = decode(&b, 0).unwrap();
        let t = tensors(&root).unwrap();
        assert_eq!(t.layout, Layout::Variables);
        assert_eq!(t.params["w"].shape, vec![3]);
        assert_eq!(t.params["w"].to_f32().unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(t.state["bn/mean"].to_f32().unwrap(), vec![0.5]);
        assert_eq!(t.ignored, vec!["step".to_string()]);
    }

    #[test]
    fn a_chunk_list_with_a_key_out_of_range_is_refused() {
        let mut b = Vec::new();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "params").unwrap();
        write_map_len(&mut b, 1).unwrap();
        chunked_w(&mut b, 1, &[("7", &[3.0])]);
        let e = tensors(&decode(&b, 0).unwrap()).unwrap_err().to_string();
        assert!(e.contains("params/w/chunks") && e.contains("\"7\" is not a free index of a tuple of 1"), "{e}");
    }

    #[test]
    fn the_reference_training_checkpoint_reads_its_trained_weights_and_statistics() {
        // {"optimizer": {"target": {"params": {"w": [..]}}, "state": {"step": 3}},
        //  "model_state": {"0": {"/bn": {"mean": [..]}}, "1": {}}, "epoch": 9}
        let mut b = Vec::new();
        write_map_len(&mut b, 3).unwrap();
        write_str(&mut b, "optimizer").unwrap();
        write_map_len(&mut b, 2).unwrap();
        write_str(&mut b, "target").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "params").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "w").unwrap();
        f32_array(&mut b, &[2], &[1.0, 2.0]);
        write_str(&mut b, "state").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "step").unwrap();
        write_uint(&mut b, 3).unwrap();
        write_str(&mut b, "model_state").unwrap();
        write_map_len(&mut b, 2).unwrap();
        write_str(&mut b, "0").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "/bn").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "mean").unwrap();
        f32_array(&mut b, &[1], &[0.5]);
        write_str(&mut b, "1").unwrap();
        write_map_len(&mut b, 0).unwrap();
        write_str(&mut b, "epoch").unwrap();
        write_uint(&mut b, 9).unwrap();
        let t = tensors(&decode(&b, 0).unwrap()).unwrap();
        assert_eq!(t.layout, Layout::TrainState);
        assert_eq!(t.params.keys().collect::<Vec<_>>(), vec!["w"]);
        assert_eq!(t.state["bn/mean"].to_f32().unwrap(), vec![0.5]);
        assert_eq!(t.ignored, vec!["epoch".to_string()]);
    }

    #[test]
    fn an_unknown_top_level_says_what_it_found() {
        let mut b = Vec::new();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "model").unwrap();
        write_uint(&mut b, 1).unwrap();
        let e = tensors(&decode(&b, 0).unwrap()).unwrap_err().to_string();
        assert!(e.contains("the top level") && e.contains("Str(\"model\")") && e.contains("\"0\" and \"1\""), "{e}");
    }
}
