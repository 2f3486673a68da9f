//! Checkpoints: written atomically, verified on load, newest valid one wins.
//!
//! Layout: `run_dir/checkpoints/checkpoint_{step}/` holding
//! - `model.safetensors`: parameters and batch-norm state, each under the reference's Flax path
//!   (`…/conv1/kernel`, `…/init_bn/mean`), plus `ema/<path>` when EMA is on;
//! - `optim.safetensors`: optimizer state, `momentum/<path>` (and `second_moment/<path>`, and
//!   LookSAM's `looksam_direction/<path>`);
//! - `state.json`: step, epoch, data cursor, config;
//! - `MANIFEST.json`: byte length and CRC-32C of each file above.
//!
//! Writing (the protocol, and why each step):
//! 1. everything goes to `checkpoint_{step}.tmp` — a crash leaves only a `.tmp` that loaders ignore;
//! 2. each file is fsynced, then the manifest is written and fsynced — the manifest exists only
//!    if the files it describes were complete;
//! 3. the directory is renamed to its final name and the parent fsynced — the rename is atomic,
//!    so a reader sees no checkpoint or a whole one;
//! 4. older checkpoints beyond `keep` are deleted, oldest first — only after the new one is safe;
//!    a checkpoint numbered *after* the new one is deleted only if it verifies and belongs to this
//!    run (a timeline the run abandoned); stale `.tmp`/`.old` directories of earlier steps go too.
//!
//! Resuming ([`resume_scan`]) walks checkpoints newest first. For each step it tries the
//! checkpoint itself, then `checkpoint_N.old` and `checkpoint_N.tmp` (a crash while rewriting a
//! step leaves those, both complete): the first that verifies is the one resumed, renamed into
//! place if it was a leftover. Before its tensors are checked, its `state.json` is compared with
//! this run's configuration, so a directory holding another run (another model, another batch) is
//! refused with what differs — never mistaken for damage. A checkpoint that fails verification is
//! moved aside to `checkpoint_N.corrupt`, never deleted: nothing a run cannot read is destroyed.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use ringsam_nn::ParamLayout;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::TrainConfig;

/// Version of the checkpoint format.
pub const FORMAT: u32 = 1;
/// The largest file a checkpoint may hold (bounded before reading; EfficientNet-L2 is ~2 GB).
const MAX_FILE_BYTES: u64 = 16 << 30;

/// Where training stands, saved in `state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Checkpoint format version.
    pub format: u32,
    /// Global steps completed.
    pub step: u64,
    /// Epoch in progress (0-based).
    pub epoch: u64,
    /// Next batch of that epoch (0 when the epoch is complete and the next begins).
    pub batch_in_epoch: usize,
    /// Model name.
    pub model_name: String,
    /// The full configuration of the run.
    pub config: TrainConfig,
    /// The membership generation that wrote it (0 outside elastic runs): a writer never prunes
    /// a checkpoint of a newer generation than its own.
    #[serde(default)]
    pub generation: u64,
}

/// Buffers a checkpoint holds.
pub struct CheckpointData<'a> {
    /// Parameter layout (names and shapes).
    pub layout: &'a ParamLayout,
    /// Parameters.
    pub params: &'a [f32],
    /// Batch-norm state layout.
    pub state_layout: &'a ParamLayout,
    /// Batch-norm state.
    pub state: &'a [f32],
    /// Named optimizer buffers in the parameter layout (`momentum`, `second_moment`).
    pub optim: Vec<(&'static str, &'a [f32])>,
    /// EMA parameters and state, when EMA is on.
    pub ema: Option<(&'a [f32], &'a [f32])>,
    /// Progress.
    pub training: &'a TrainingState,
}

/// A checkpoint read back and verified.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// Parameters.
    pub params: Vec<f32>,
    /// Batch-norm state.
    pub state: Vec<f32>,
    /// Optimizer buffers by name.
    pub optim: HashMap<String, Vec<f32>>,
    /// EMA parameters and state.
    pub ema: Option<(Vec<f32>, Vec<f32>)>,
    /// Progress.
    pub training: TrainingState,
}

#[derive(Serialize, Deserialize)]
struct ManifestEntry {
    bytes: u64,
    crc32c: u32,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> TrainError {
    TrainError::Checkpoint(format!("{} {what}: {e}", path.display()))
}

/// The checkpoints directory of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes checkpoint `step` atomically and prunes to the newest `keep` (steps 4 of the module
/// docs; `same_run` says whether a checkpoint's state belongs to this run). Returns its directory.
pub fn write_atomic(
    run_dir: &Path,
    step: u64,
    data: &CheckpointData,
    keep: usize,
    same_run: &dyn Fn(&TrainingState) -> bool,
) -> Result<PathBuf, TrainError> {
    write_fenced(run_dir, step, data, keep, same_run, &|| Ok(()))
}

/// [`write_atomic`] for a writer that may have been replaced: `fence` runs just before the
/// rename and again before pruning, and its error (a newer generation leads the run) stops the
/// writer before it changes anything others rely on. Checkpoints of a newer generation than
/// `data.training.generation` are never pruned.
pub fn write_fenced(
    run_dir: &Path,
    step: u64,
    data: &CheckpointData,
    keep: usize,
    same_run: &dyn Fn(&TrainingState) -> bool,
    fence: &dyn Fn() -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    let root = checkpoints_dir(run_dir);
    fs::create_dir_all(&root).map_err(|e| io_err(&root, "creating", e))?;
    let final_dir = root.join(format!("checkpoint_{step}"));
    let tmp = root.join(format!("checkpoint_{step}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, "removing a stale temporary", e))?;
    }
    fs::create_dir(&tmp).map_err(|e| io_err(&tmp, "creating", e))?;

    let mut model = named(data.layout, data.params, "");
    model.extend(named(data.state_layout, data.state, ""));
    if let Some((p, s)) = data.ema {
        model.extend(named(data.layout, p, "ema/"));
        model.extend(named(data.state_layout, s, "ema/"));
    }
    let optim: Vec<_> = data.optim.iter().flat_map(|(name, buf)| named(data.layout, buf, &format!("{name}/"))).collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("model.safetensors", to_safetensors(&model)?),
        ("optim.safetensors", to_safetensors(&optim)?),
        ("state.json", serde_json::to_vec_pretty(data.training).map_err(|e| TrainError::Checkpoint(e.to_string()))?),
    ];
    let mut manifest = HashMap::new();
    for (name, bytes) in &files {
        write_synced(&tmp.join(name), bytes)?;
        manifest.insert(name.to_string(), ManifestEntry { bytes: bytes.len() as u64, crc32c: crc32c::crc32c(bytes) });
    }
    write_synced(&tmp.join("MANIFEST.json"), &serde_json::to_vec_pretty(&manifest).map_err(|e| TrainError::Checkpoint(e.to_string()))?)?;
    sync_dir(&tmp)?;
    fence()?;
    // Replacing a checkpoint of the same step: move the old one aside first, so at every moment a
    // complete checkpoint of this step exists under one of the two names.
    let aside = root.join(format!("checkpoint_{step}.old"));
    if final_dir.exists() {
        let _ = fs::remove_dir_all(&aside);
        fs::rename(&final_dir, &aside).map_err(|e| io_err(&final_dir, "moving the previous copy aside", e))?;
    }
    fs::rename(&tmp, &final_dir).map_err(|e| io_err(&final_dir, "renaming into place", e))?;
    sync_dir(&root)?;
    let _ = fs::remove_dir_all(&aside);
    fence()?;
    let mine = data.training.generation;
    prune(&root, step, keep, &|t: &TrainingState| same_run(t) && t.generation <= mine, mine);
    Ok(final_dir)
}

/// `(name, shape, values)` for every entry of `layout` over `buf`, names prefixed.
pub(crate) fn named<'a>(layout: &ParamLayout, buf: &'a [f32], prefix: &str) -> Vec<(String, Vec<usize>, &'a [f32])> {
    layout.entries().iter().map(|e| (format!("{prefix}{}", e.name), e.shape.clone(), &buf[e.id.range()])).collect()
}

fn to_safetensors(tensors: &[(String, Vec<usize>, &[f32])]) -> Result<Vec<u8>, TrainError> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (name.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrainError::Checkpoint(format!("building safetensors: {e}")))?;
    let meta = HashMap::from([("format".to_string(), "ringsam".to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| TrainError::Checkpoint(format!("serializing safetensors: {e}")))
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut f = File::create(path).map_err(|e| io_err(path, "creating", e))?;
    f.write_all(bytes).map_err(|e| io_err(path, "writing", e))?;
    f.sync_all().map_err(|e| io_err(path, "syncing", e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), TrainError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, "syncing directory", e))
}

/// Step 4 of the module docs, after checkpoint `step` was written.
fn prune(root: &Path, step: u64, keep: usize, same_run: &dyn Fn(&TrainingState) -> bool, generation: u64) {
    for (s, kind, dir) in list_all(root) {
        let remove = match kind {
            Kind::Final if s > step => verify_files(&dir).is_ok_and(|t| same_run(&t)),
            Kind::Old | Kind::Tmp => s < step,
            _ => false,
        };
        if remove {
            let _ = fs::remove_dir_all(&dir);
        }
    }
    let mut kept = list(root);
    kept.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
    for (_, old) in kept.into_iter().filter(|(s, _)| *s <= step).skip(keep.max(1)) {
        // Older steps, but perhaps a newer generation's (a replaced writer woken late): kept.
        let newer = generation > 0 && verify_files(&old).is_ok_and(|t| t.generation > generation);
        if !newer {
            let _ = fs::remove_dir_all(old);
        }
    }
}

/// What a directory under `checkpoints/` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `checkpoint_N`.
    Final,
    /// `checkpoint_N.old`: the previous copy of a step being rewritten.
    Old,
    /// `checkpoint_N.tmp`: a checkpoint being written.
    Tmp,
    /// `checkpoint_N.corrupt…`: moved aside by a resume; never read again, never deleted.
    Corrupt,
}

/// `(step, kind, dir)` of everything under `root` named like a checkpoint.
fn list_all(root: &Path) -> Vec<(u64, Kind, PathBuf)> {
    let Ok(rd) = fs::read_dir(root) else { return Vec::new() };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix("checkpoint_")?;
            let (num, suffix) = rest.split_once('.').unwrap_or((rest, ""));
            let kind = match suffix {
                "" => Kind::Final,
                "old" => Kind::Old,
                "tmp" => Kind::Tmp,
                s if s.starts_with("corrupt") => Kind::Corrupt,
                _ => return None,
            };
            Some((num.parse::<u64>().ok()?, kind, e.path()))
        })
        .collect()
}

/// `(step, dir)` of every finished checkpoint.
fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    list_all(root).into_iter().filter(|(_, k, _)| *k == Kind::Final).map(|(s, _, d)| (s, d)).collect()
}

/// What [`resume_scan`] found, and what it did on the way (one line each, for the log).
#[derive(Debug, Default)]
pub struct Scan {
    /// The checkpoint to resume.
    pub found: Option<LoadedCheckpoint>,
    /// Skipped, moved aside or recovered checkpoints, with the reason.
    pub notes: Vec<String>,
}

/// Finds the checkpoint to resume (see the module docs). `accept` says why a checkpoint's state
/// belongs to another run (`Err`), which refuses the whole directory. With `repair` (one replica
/// of a job: the one that writes), damaged checkpoints are moved aside and a verified leftover is
/// renamed into place; without it the scan only reads.
pub fn resume_scan(
    run_dir: &Path,
    layout: &ParamLayout,
    state_layout: &ParamLayout,
    accept: &dyn Fn(&TrainingState) -> Result<(), String>,
    repair: bool,
) -> Result<Scan, TrainError> {
    let root = checkpoints_dir(run_dir);
    let mut all: Vec<_> = list_all(&root).into_iter().filter(|(_, k, _)| *k != Kind::Corrupt).collect();
    all.sort_by_key(|&(s, k, _)| (std::cmp::Reverse(s), k));
    let mut scan = Scan::default();
    for (step, kind, dir) in all {
        if let Ok(state) = read_training_state(&dir) {
            accept(&state).map_err(|why| TrainError::Config(format!("{}: {why}", dir.display())))?;
        }
        match load(&dir, layout, state_layout) {
            Ok(mut c) => {
                if kind != Kind::Final && repair {
                    let home = root.join(format!("checkpoint_{step}"));
                    fs::rename(&dir, &home).map_err(|e| io_err(&dir, "recovering into place", e))?;
                    sync_dir(&root)?;
                    scan.notes.push(format!(
                        "recovered {} as {} (it verifies; a rewrite of this step was interrupted)",
                        dir.display(),
                        home.display()
                    ));
                    c.dir = home;
                }
                scan.found = Some(c);
                return Ok(scan);
            }
            Err(e) => {
                scan.notes.push(format!("skipping checkpoint {}: {e}", dir.display()));
                if kind == Kind::Final && repair {
                    let aside = corrupt_name(&root, step);
                    fs::rename(&dir, &aside).map_err(|e| io_err(&dir, "moving a damaged checkpoint aside", e))?;
                    scan.notes.push(format!("moved {} aside to {} (kept, never deleted)", dir.display(), aside.display()));
                }
            }
        }
    }
    Ok(scan)
}

/// A free `checkpoint_N.corrupt[.K]` name.
fn corrupt_name(root: &Path, step: u64) -> PathBuf {
    let base = root.join(format!("checkpoint_{step}.corrupt"));
    (1..)
        .map(|k| if k == 1 { base.clone() } else { root.join(format!("checkpoint_{step}.corrupt.{k}")) })
        .find(|p| !p.exists())
        .unwrap_or(base)
}

/// A checkpoint's files against its manifest, and its state; no model needed.
fn verify_files(dir: &Path) -> Result<TrainingState, TrainError> {
    let files = read_verified(dir)?;
    serde_json::from_slice(&files["state.json"]).map_err(|e| TrainError::Checkpoint(format!("{}: state.json: {e}", dir.display())))
}

/// Reads and verifies one checkpoint directory against the model's layouts.
pub fn load(dir: &Path, layout: &ParamLayout, state_layout: &ParamLayout) -> Result<LoadedCheckpoint, TrainError> {
    let bad = |m: String| TrainError::Checkpoint(format!("{}: {m}", dir.display()));
    let files = read_verified(dir)?;
    let training: TrainingState = serde_json::from_slice(&files["state.json"]).map_err(|e| bad(format!("state.json: {e}")))?;
    if training.format != FORMAT {
        return Err(bad(format!("format {} (this ringsam reads format {FORMAT})", training.format)));
    }
    let model = SafeTensors::deserialize(&files["model.safetensors"]).map_err(|e| bad(format!("model.safetensors: {e}")))?;
    let params = read_layout(&model, layout, "").map_err(|m| bad(format!("model.safetensors: {m}")))?;
    let state = read_layout(&model, state_layout, "").map_err(|m| bad(format!("model.safetensors: {m}")))?;
    let ema = if model.names().iter().any(|n| n.starts_with("ema/")) {
        Some((read_layout(&model, layout, "ema/").map_err(&bad)?, read_layout(&model, state_layout, "ema/").map_err(&bad)?))
    } else {
        None
    };
    let optim_st = SafeTensors::deserialize(&files["optim.safetensors"]).map_err(|e| bad(format!("optim.safetensors: {e}")))?;
    let mut optim = HashMap::new();
    for buf in ["momentum", "second_moment", crate::cheap_sam::DIRECTION_BUFFER] {
        if optim_st.names().iter().any(|n| n.starts_with(&format!("{buf}/"))) {
            optim.insert(
                buf.to_string(),
                read_layout(&optim_st, layout, &format!("{buf}/")).map_err(|m| bad(format!("optim.safetensors: {m}")))?,
            );
        }
    }
    Ok(LoadedCheckpoint { dir: dir.to_path_buf(), params, state, optim, ema, training })
}

/// A checkpoint's `state.json` alone (its step, position and configuration), before the model it
/// describes is built; [`load`] verifies it against the manifest with the rest.
pub fn read_training_state(dir: &Path) -> Result<TrainingState, TrainError> {
    let path = dir.join("state.json");
    let bytes = read_bounded(&path, 1 << 20)?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint(format!("{}: {e}", path.display())))
}

/// A checkpoint's `model.safetensors`, verified with the rest of its files (what `--init_from`
/// reads from a ringsam checkpoint, by name, into a model that may differ).
pub fn read_model_file(dir: &Path) -> Result<Vec<u8>, TrainError> {
    let mut files = read_verified(dir)?;
    Ok(files.remove("model.safetensors").expect("read_verified reads model.safetensors"))
}

/// The newest finished checkpoint of a run directory, if any.
pub fn newest_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    list(&checkpoints_dir(run_dir)).into_iter().max_by_key(|(s, _)| *s).map(|(_, d)| d)
}

/// `tensors` (name, shape, values) as a safetensors file's bytes, as checkpoints write them.
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, &[f32])]) -> Result<Vec<u8>, TrainError> {
    to_safetensors(tensors)
}

/// A checkpoint's files, each checked against the manifest (length and CRC-32C).
fn read_verified(dir: &Path) -> Result<HashMap<&'static str, Vec<u8>>, TrainError> {
    let bad = |m: String| TrainError::Checkpoint(format!("{}: {m}", dir.display()));
    let manifest: HashMap<String, ManifestEntry> =
        serde_json::from_slice(&read_bounded(&dir.join("MANIFEST.json"), 1 << 20)?).map_err(|e| bad(format!("MANIFEST.json: {e}")))?;
    let mut files = HashMap::new();
    for name in ["model.safetensors", "optim.safetensors", "state.json"] {
        let entry = manifest.get(name).ok_or_else(|| bad(format!("manifest does not list {name}")))?;
        let bytes = read_bounded(&dir.join(name), MAX_FILE_BYTES)?;
        if bytes.len() as u64 != entry.bytes {
            return Err(bad(format!("{name} has {} bytes, the manifest says {} (truncated?)", bytes.len(), entry.bytes)));
        }
        if crc32c::crc32c(&bytes) != entry.crc32c {
            return Err(bad(format!("{name} fails its CRC-32C check (corrupted)")));
        }
        files.insert(name, bytes);
    }
    Ok(files)
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, TrainError> {
    let len = fs::metadata(path).map_err(|e| io_err(path, "reading", e))?.len();
    if len > max {
        return Err(TrainError::Checkpoint(format!("{}: {len} bytes is more than the {max} a checkpoint file may have", path.display())));
    }
    fs::read(path).map_err(|e| io_err(path, "reading", e))
}

/// Every entry of `layout` from `st` under `prefix`, checked for dtype and shape.
fn read_layout(st: &SafeTensors, layout: &ParamLayout, prefix: &str) -> Result<Vec<f32>, String> {
    let mut out = vec![0.0; layout.total()];
    for e in layout.entries() {
        let name = format!("{prefix}{}", e.name);
        let t = st.tensor(&name).map_err(|_| format!("missing tensor {name}"))?;
        if t.dtype() != Dtype::F32 || t.shape() != e.shape.as_slice() {
            return Err(format!("tensor {name} is {:?} {:?}, expected F32 {:?}", t.dtype(), t.shape(), e.shape));
        }
        for (o, b) in out[e.id.range()].iter_mut().zip(t.data().chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layouts() -> (ParamLayout, ParamLayout) {
        let mut layout = ParamLayout::new();
        layout.push("w", &[2]);
        (layout, ParamLayout::new())
    }

    fn write(dir: &Path, step: u64, keep: usize) {
        write_as(dir, step, keep, "m", &|_| true);
    }

    fn write_as(dir: &Path, step: u64, keep: usize, model: &str, same_run: &dyn Fn(&TrainingState) -> bool) {
        write_in(dir, step, keep, model, same_run, 0, &|| Ok(())).unwrap();
    }

    fn write_in(
        dir: &Path,
        step: u64,
        keep: usize,
        model: &str,
        same_run: &dyn Fn(&TrainingState) -> bool,
        generation: u64,
        fence: &dyn Fn() -> Result<(), TrainError>,
    ) -> Result<PathBuf, TrainError> {
        let (layout, state_layout) = layouts();
        let training = TrainingState {
            format: FORMAT,
            step,
            epoch: 0,
            batch_in_epoch: 0,
            model_name: model.into(),
            config: TrainConfig::default(),
            generation,
        };
        let data = CheckpointData {
            layout: &layout,
            params: &[1.0, 2.0],
            state_layout: &state_layout,
            state: &[],
            optim: vec![("momentum", &[0.0, 0.0])],
            ema: None,
            training: &training,
        };
        write_fenced(dir, step, &data, keep, same_run, fence)
    }

    /// Issue 19: a replaced writer (stopped, then woken after a newer generation took over)
    /// neither renames nor prunes, and no writer prunes a newer generation's checkpoints.
    #[test]
    fn a_replaced_writer_is_fenced_and_newer_generations_are_never_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let fence_as = |g: u64| move || crate::generation_record::fence(run, g);
        crate::generation_record::raise(run, 2).unwrap();
        write_in(run, 10, 1, "m", &|_| true, 2, &fence_as(2)).unwrap();
        crate::generation_record::raise(run, 3).unwrap(); // generation 3 takes over ...
        write_in(run, 12, 1, "m", &|_| true, 3, &fence_as(3)).unwrap();
        // ... and the old writer wakes with step 11: fenced before the rename, nothing changed.
        let err = write_in(run, 11, 1, "m", &|_| true, 2, &fence_as(2)).unwrap_err();
        assert!(matches!(err, TrainError::Fenced(_)), "{err}");
        assert_eq!(steps(run), vec![12]);
        assert!(names(run).iter().all(|n| !n.ends_with("_11")), "{:?}", names(run));
        // Without the fence (a writer woken between check and prune), pruning still spares the
        // newer generation's checkpoint 12, though it is newer than step 11 and over `keep`.
        write_in(run, 11, 1, "m", &|_| true, 2, &|| Ok(())).unwrap();
        assert_eq!(steps(run), vec![11, 12]);
    }

    fn steps(dir: &Path) -> Vec<u64> {
        let mut v: Vec<u64> = list(&checkpoints_dir(dir)).into_iter().map(|(s, _)| s).collect();
        v.sort();
        v
    }

    /// Found in review: after resuming from an older checkpoint (the newer one failed
    /// verification), the next write must not be pruned in favour of the abandoned newer one.
    #[test]
    fn writing_after_a_fallback_drops_the_abandoned_newer_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), 10, 2);
        write(tmp.path(), 20, 2);
        write(tmp.path(), 15, 2);
        assert_eq!(steps(tmp.path()), vec![10, 15]);
        write(tmp.path(), 15, 2); // rewriting the same step replaces it
        assert_eq!(steps(tmp.path()), vec![10, 15]);
        write(tmp.path(), 30, 1);
        assert_eq!(steps(tmp.path()), vec![30]);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(checkpoints_dir(dir)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    fn scan(dir: &Path, repair: bool) -> Result<Scan, TrainError> {
        let (layout, state_layout) = layouts();
        resume_scan(dir, &layout, &state_layout, &|t| if t.model_name == "m" { Ok(()) } else { Err("another run".into()) }, repair)
    }

    /// Issue 18: a restart with another model deleted the previous run's checkpoints as an
    /// "abandoned timeline". A newer checkpoint is removed only when it verifies and is this run's.
    #[test]
    fn a_newer_checkpoint_of_another_run_is_never_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        write_as(tmp.path(), 20, 2, "other", &|_| true);
        write_as(tmp.path(), 15, 2, "m", &|t| t.model_name == "m");
        assert_eq!(steps(tmp.path()), vec![15, 20]);
        // A damaged newer one of this run is not removed either: it cannot be verified.
        fs::write(checkpoints_dir(tmp.path()).join("checkpoint_20/state.json"), b"{").unwrap();
        write_as(tmp.path(), 16, 2, "m", &|t| t.model_name == "m");
        assert!(names(tmp.path()).contains(&"checkpoint_20".to_string()));
    }

    /// Issue 18: a directory holding another run is refused before its tensors are read, and
    /// nothing in it is moved or deleted.
    #[test]
    fn another_runs_directory_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        write_as(tmp.path(), 44, 2, "other", &|_| true);
        let before = names(tmp.path());
        let err = scan(tmp.path(), true).unwrap_err();
        assert!(matches!(err, TrainError::Config(ref m) if m.contains("another run") && m.contains("checkpoint_44")), "{err}");
        assert_eq!(names(tmp.path()), before);
    }

    /// Issue 18: a damaged checkpoint is moved aside (`.corrupt`), never removed, and the one
    /// before it is resumed.
    #[test]
    fn a_damaged_checkpoint_is_moved_aside_and_the_previous_one_resumed() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), 10, 3);
        write(tmp.path(), 20, 3);
        let model = checkpoints_dir(tmp.path()).join("checkpoint_20/model.safetensors");
        let len = fs::metadata(&model).unwrap().len();
        fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(len / 2).unwrap();
        let read_only = scan(tmp.path(), false).unwrap();
        assert_eq!(read_only.found.unwrap().training.step, 10);
        assert_eq!(names(tmp.path()), ["checkpoint_10", "checkpoint_20"], "a read-only scan renames nothing");
        let s = scan(tmp.path(), true).unwrap();
        assert_eq!(s.found.unwrap().training.step, 10);
        assert!(s.notes.iter().any(|n| n.contains("moved") && n.contains("checkpoint_20.corrupt")), "{:?}", s.notes);
        assert_eq!(names(tmp.path()), ["checkpoint_10", "checkpoint_20.corrupt"]);
        // The next checkpoint neither resumes nor deletes what was moved aside.
        write(tmp.path(), 30, 1);
        assert_eq!(names(tmp.path()), ["checkpoint_20.corrupt", "checkpoint_30"]);
    }

    /// Issue 18: a kill between the two renames of a same-step rewrite left `.old` and `.tmp`,
    /// both complete, which resuming ignored. Now the step is recovered from them.
    #[test]
    fn an_interrupted_rewrite_is_recovered_from_its_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), 10, 1);
        let root = checkpoints_dir(tmp.path());
        let copy = |to: &str| {
            fs::create_dir(root.join(to)).unwrap();
            for f in fs::read_dir(root.join("checkpoint_10")).unwrap() {
                let f = f.unwrap();
                fs::copy(f.path(), root.join(to).join(f.file_name())).unwrap();
            }
        };
        copy("checkpoint_10.old");
        copy("checkpoint_10.tmp");
        fs::remove_dir_all(root.join("checkpoint_10")).unwrap();
        let s = scan(tmp.path(), true).unwrap();
        assert_eq!(s.found.unwrap().dir, root.join("checkpoint_10"));
        assert!(s.notes.iter().any(|n| n.contains("recovered") && n.contains("checkpoint_10.old")), "{:?}", s.notes);
        // The leftover .tmp goes once a newer checkpoint is written.
        write(tmp.path(), 11, 2);
        assert_eq!(names(tmp.path()), ["checkpoint_10", "checkpoint_11"]);
    }
}
