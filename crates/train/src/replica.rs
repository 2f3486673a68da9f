//! What data-parallel replicas agree on besides gradients.
//!
//! Every function here is a collective: all replicas call it at the same point of the run, in
//! the same order, or the ring pairs the wrong operations (and the run fails with a ring error).
//! The training loop calls them at points every replica reaches deterministically — after each
//! step, at the end of each epoch — never on a condition only one replica sees (a wall-clock
//! timer, a signal): those are first turned into a vote ([`vote_and_metrics`]).
//!
//! 1. After every step, [`vote_and_metrics`]: one small all-reduce carrying each replica's stop
//!    request, checkpoint request, loss and error rate. Any replica asking to stop (SIGTERM on
//!    one pod) stops them all at the same step; metrics become the means over the global batch
//!    (each replica weighed by its examples: shares differ when the world does not divide the
//!    micro-batches), as the reference's `pmean` reports them.
//! 2. Batch-norm running statistics need no agreement here: every step already averages them
//!    over the world (`crate::step`), so every replica holds the same ones.
//! 0. At the start, [`check_same_start`]: every replica resumed the same checkpoint at the same
//!    position.
//! 3. Every `check_replicas_every` steps and before each checkpoint, [`check_identical`]: a
//!    CRC-32C of each replica's parameters, gathered; different fingerprints fail loudly (a
//!    replica that diverged would otherwise train on silently and poison the checkpoint).

use crate::TrainError;
use crate::cluster::Cluster;

/// The step's agreed outcome.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreed {
    /// Some replica asked to stop.
    pub stop: bool,
    /// Some replica asked for a checkpoint.
    pub save: bool,
    /// Mean loss over replicas.
    pub loss: f32,
    /// Mean error rate over replicas.
    pub error_rate: f32,
}

/// Step 1 of the module docs; `examples` is this replica's share of the batch the metrics are of.
pub fn vote_and_metrics(
    cluster: &mut Cluster,
    stop: bool,
    save: bool,
    [loss, error_rate]: [f32; 2],
    examples: usize,
) -> Result<Agreed, TrainError> {
    let n = examples as f32;
    let v = cluster.sum(vec![stop as u8 as f32, save as u8 as f32, loss * n, error_rate * n, n])?;
    let total = v[4].max(1.0);
    Ok(Agreed { stop: v[0] > 0.0, save: v[1] > 0.0, loss: v[2] / total, error_rate: v[3] / total })
}

/// CRC-32C of the parameters' bytes.
pub fn fingerprint(params: &[f32]) -> u32 {
    let mut bytes = Vec::with_capacity(4 * 4096);
    params.chunks(4096).fold(0u32, |crc, part| {
        bytes.clear();
        bytes.extend(part.iter().flat_map(|v| v.to_le_bytes()));
        crc32c::crc32c_append(crc, &bytes)
    })
}

/// Step 3 of the module docs.
pub fn check_identical(cluster: &mut Cluster, params: &[f32], step: u64) -> Result<(), TrainError> {
    compare_everywhere(cluster, fingerprint(params), &format!("parameter fingerprints differ at step {step}"))
}

/// At the start of a run: every replica resumed from the same parameters at the same (step,
/// epoch, batch). Fails (on every replica) if not, before any training collective can pair wrongly.
pub fn check_same_start(cluster: &mut Cluster, params: &[f32], position: [u64; 3]) -> Result<(), TrainError> {
    let mut crc = fingerprint(params);
    for v in position {
        crc = crc32c::crc32c_append(crc, &v.to_le_bytes());
    }
    let what = format!(
        "replicas start from different checkpoints or positions (this one: step {}, epoch {}, batch {}); is --output_dir shared by every worker?",
        position[0], position[1], position[2]
    );
    compare_everywhere(cluster, crc, &what)
}

/// Gathers every replica's `value` and fails on every replica if they differ.
fn compare_everywhere(cluster: &mut Cluster, value: u32, what: &str) -> Result<(), TrainError> {
    let (rank, world) = (cluster.rank(), cluster.world());
    // Each replica writes its value, as two 16-bit halves (exact in f32), into its own slots; the
    // sum gathers them all.
    let mut v = vec![0.0f32; 2 * world];
    v[2 * rank] = (value >> 16) as f32;
    v[2 * rank + 1] = (value & 0xffff) as f32;
    let all = cluster.sum(v)?;
    let values: Vec<u32> = all.chunks(2).map(|p| ((p[0] as u32) << 16) | p[1] as u32).collect();
    if values.iter().any(|&p| p != values[0]) {
        let list = values.iter().enumerate().map(|(r, p)| format!("rank {r}: {p:08x}")).collect::<Vec<_>>().join(", ");
        return Err(TrainError::Diverged(format!("{what} ({list})")));
    }
    Ok(())
}
