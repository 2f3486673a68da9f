//! Recovery from memory: a replica's whole training state as one flat buffer, streamed to the
//! others over the new generation's ring (docs/ARCHITECTURE.md, "Elastic training").

use super::Trainer;
use crate::TrainError;
use crate::replica::check_same_start;
use crate::step::Restore;

impl Trainer<'_> {
    /// Every replica takes replica `from`'s training state, streamed over the new rings
    /// ([`crate::cluster::Cluster::broadcast`]: bit-exact): parameters, statistics, optimizer buffers, the EMA
    /// and the position in the data. Then they prove they hold the same.
    pub(crate) fn take_state_from(&mut self, from: usize) -> Result<(), TrainError> {
        let packed = pack_state(self)?;
        let len = packed.len();
        let Some(c) = self.st.cluster() else { return Ok(()) };
        let got = c.broadcast(from, packed)?;
        if got.len() != len {
            return Err(TrainError::Runtime(format!("the streamed state has {} values, this replica expects {len}", got.len())));
        }
        unpack_state(self, &got)?;
        let position = [self.st.steps(), self.epoch, self.batch];
        let (params, cluster) = self.st.params_and_cluster()?;
        if let Some(c) = cluster {
            check_same_start(c, params, position)?;
        }
        Ok(())
    }
}

/// A u64 as four exact 16-bit f32s (f32 holds integers exactly only up to 2^24).
fn u64_to_f32s(v: u64) -> [f32; 4] {
    std::array::from_fn(|i| ((v >> (16 * i)) & 0xffff) as f32)
}

fn f32s_to_u64(v: &[f32]) -> u64 {
    v.iter().take(4).enumerate().fold(0, |acc, (i, &x)| acc | ((x as u64 & 0xffff) << (16 * i)))
}

/// The training state as one flat buffer, in an order every replica of a run shares: parameters,
/// statistics, optimizer buffers by name, the EMA's, and (step, epoch, batch). On a GPU, the
/// device's state, copied back first.
fn pack_state(t: &mut Trainer<'_>) -> Result<Vec<f32>, TrainError> {
    t.st.sync_host()?;
    let mut out = Vec::new();
    out.extend_from_slice(t.st.params());
    out.extend_from_slice(t.st.state());
    for (_, buf) in t.st.optim_state() {
        out.extend_from_slice(buf);
    }
    if let Some(e) = &t.ema {
        out.extend_from_slice(&e.params);
        out.extend_from_slice(&e.state);
    }
    for v in [t.st.steps(), t.epoch, t.batch] {
        out.extend(u64_to_f32s(v));
    }
    Ok(out)
}

/// Takes back what [`pack_state`] made (lengths checked by the caller).
fn unpack_state(t: &mut Trainer<'_>, got: &[f32]) -> Result<(), TrainError> {
    let (np, ns) = (t.st.params().len(), t.st.state().len());
    let (params, rest) = got.split_at(np);
    let (state, mut rest) = rest.split_at(ns);
    let mut optim = std::collections::HashMap::new();
    for (name, buf) in t.st.optim_state() {
        let (mine, tail) = rest.split_at(buf.len());
        optim.insert(name.to_string(), mine.to_vec());
        rest = tail;
    }
    if let Some(e) = t.ema.as_mut() {
        let (p, tail) = rest.split_at(e.params.len());
        let (s, tail) = tail.split_at(e.state.len());
        e.params.copy_from_slice(p);
        e.state.copy_from_slice(s);
        rest = tail;
    }
    let (step, epoch, batch) = (f32s_to_u64(&rest[0..4]), f32s_to_u64(&rest[4..8]), f32s_to_u64(&rest[8..12]));
    t.st.restore(Restore { params, state, optim: &optim, step })?;
    (t.epoch, t.batch) = (epoch, batch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_the_trip_through_f32() {
        for v in [0, 1, 65535, 65536, 1 << 40, u64::MAX] {
            assert_eq!(f32s_to_u64(&u64_to_f32s(v)), v);
        }
    }
}
