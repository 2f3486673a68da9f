//! The arithmetic of a ring all-reduce, with no state and no I/O.
//!
//! A buffer of `len` values is cut into `world` contiguous segments (the first `len % world` one
//! value longer). With `r` this rank's position in the ring:
//!
//! ```text
//! reduce-scatter, step s = 0 … world−2:  send segment (r − s) mod n to next,
//!                                         receive segment (r − s − 1) mod n from prev and add it in
//! all-gather,     step t = 0 … world−2:  send segment (r + 1 − t) mod n,
//!                                         receive segment (r − t) mod n and copy it
//! ```
//!
//! After the reduce-scatter, rank `r` holds the complete sum of segment `(r + 1) mod n`; the
//! all-gather passes each completed segment around the ring unchanged, so every rank ends with
//! bitwise identical values. Each segment travels in chunks of at most `chunk` values, and chunk
//! `k` of a segment moves on as soon as it arrives, so the steps of a large buffer overlap
//! (pipelining) instead of waiting for whole segments.

use std::ops::Range;

/// How a buffer is cut into segments and chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    /// Values in the buffer.
    pub len: usize,
    /// Ranks in the ring.
    pub world: usize,
    /// Largest chunk in values (≥ 1).
    pub chunk: usize,
}

impl Segments {
    /// The value range of segment `i`.
    pub fn segment(&self, i: usize) -> Range<usize> {
        let (base, extra) = (self.len / self.world, self.len % self.world);
        let start = i * base + i.min(extra);
        start..start + base + usize::from(i < extra)
    }

    /// Number of chunks of segment `i` (0 for an empty segment).
    pub fn chunks(&self, i: usize) -> usize {
        self.segment(i).len().div_ceil(self.chunk)
    }

    /// The value range of chunk `k` of segment `i`.
    pub fn chunk_range(&self, i: usize, k: usize) -> Range<usize> {
        let s = self.segment(i);
        let start = s.start + k * self.chunk;
        start..(start + self.chunk).min(s.end)
    }

    /// Segment sent at `step` (0 … 2n−3) by position `r`.
    pub fn send_segment(&self, r: usize, step: usize) -> usize {
        let n = self.world;
        if step < n - 1 { (r + n - step % n) % n } else { (r + 1 + n - (step - (n - 1)) % n) % n }
    }

    /// Segment received at `step` by position `r`.
    pub fn recv_segment(&self, r: usize, step: usize) -> usize {
        let n = self.world;
        if step < n - 1 { (r + 2 * n - step - 1) % n } else { (r + n - (step - (n - 1)) % n) % n }
    }

    /// Steps in a whole all-reduce: `2(n − 1)`.
    pub fn steps(&self) -> usize {
        2 * (self.world - 1)
    }

    /// Chunks position `r` receives over the whole all-reduce.
    pub fn expected_receives(&self, r: usize) -> usize {
        (0..self.steps()).map(|s| self.chunks(self.recv_segment(r, s))).sum()
    }
}

/// A sub-ring over consecutive ranks, for averaging within groups (the reference's
/// `inner_group_size`): ranks `members` form ring `id`, and `position` is this rank's place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Ring id carried in frames (0 is the whole world; groups are 1, 2, …).
    pub id: u16,
    /// Global ranks of the group.
    pub members: std::ops::Range<usize>,
    /// This rank's position within the group.
    pub position: usize,
}

/// The group of consecutive ranks of size `group_size` that `rank` belongs to. The world must be a
/// multiple of the group size (as the reference requires of its replica groups).
pub fn group_of(rank: usize, world: usize, group_size: usize) -> Result<Group, String> {
    if group_size == 0 || !world.is_multiple_of(group_size) || rank >= world {
        return Err(format!("inner_group_size {group_size} must divide the {world} replicas"));
    }
    let g = rank / group_size;
    let id = u16::try_from(g + 1).map_err(|_| format!("too many groups ({})", world / group_size))?;
    Ok(Group { id, members: g * group_size..(g + 1) * group_size, position: rank % group_size })
}

/// `(prev, next)` positions of `r` in a ring of `n`.
pub fn ring_neighbors(r: usize, n: usize) -> (usize, usize) {
    ((r + n - 1) % n, (r + 1) % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_tile_the_buffer() {
        for world in 1..=9 {
            for len in [0, 1, 5, 8, 9, 100, 101] {
                let s = Segments { len, world, chunk: 3 };
                let mut next = 0;
                for i in 0..world {
                    let r = s.segment(i);
                    assert_eq!(r.start, next);
                    next = r.end;
                    let covered: usize = (0..s.chunks(i)).map(|k| s.chunk_range(i, k).len()).sum();
                    assert_eq!(covered, r.len());
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn groups_are_consecutive_and_cover_the_world() {
        let g = group_of(4, 6, 3).unwrap();
        assert_eq!((g.id, g.members, g.position), (2, 3..6, 1));
        assert!(group_of(0, 6, 4).is_err());
    }

    #[test]
    fn what_one_rank_sends_its_next_receives() {
        for n in 2..=9 {
            let s = Segments { len: 10, world: n, chunk: 1 };
            for r in 0..n {
                let (_, next) = ring_neighbors(r, n);
                for step in 0..s.steps() {
                    assert_eq!(s.send_segment(r, step), s.recv_segment(next, step), "n {n} r {r} step {step}");
                }
            }
        }
    }
}
