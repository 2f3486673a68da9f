//! A batch that the loader's decoder threads fill in place: each sample's three channel planes
//! are written straight into the (C, N, H, W) batch buffer by the thread that decoded it.
//!
//! Why: assembling batches from per-sample buffers cost one 600 KiB copy per 224-px image on the
//! single collator thread — 5–7 % of the loader's time on two workers, and a ceiling at many
//! (2.2 GB/s of copying at 8 workers). Here the copy does not exist, and the only work left to the
//! collator is the rare repair of a failed sample.
//!
//! Safety rests on three rules:
//! - a slot is handed out at most once ([`BatchSlots::claim`] flips its flag atomically), so the
//!   `&mut` planes of different slots never alias (enforced here);
//! - nothing reads the buffer until [`BatchSlots::finish`], which takes the batch by value, so
//!   every claim's borrow has ended by then (enforced here);
//! - the planes are handed out uninitialised (zeroing 600 KiB per image cost 4 % of the loader),
//!   so `finish` may read only slots their writer filled completely: it reads the slots the
//!   caller marks good, and is `unsafe` for that promise. Bad slots are never read (they are
//!   overwritten or dropped).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

/// Channels of every image the loader makes (RGB).
pub const CHANNELS: usize = 3;

/// A `CHANNELS × capacity × plane` float buffer filled slot by slot from several threads.
pub struct BatchSlots {
    buf: *mut f32,
    cap: usize,
    slots: usize,
    plane: usize,
    claimed: Box<[AtomicBool]>,
}

// SAFETY: the buffer is owned (freed in Drop or handed over in `finish`); concurrent access goes
// only through `claim`, whose atomic flag gives each slot's planes to one caller.
unsafe impl Send for BatchSlots {}
// SAFETY: as above.
unsafe impl Sync for BatchSlots {}

impl BatchSlots {
    /// Room for `slots` images of `plane` floats per channel; the memory is not touched yet.
    pub fn new(slots: usize, plane: usize) -> BatchSlots {
        let mut v = Vec::<f32>::with_capacity(CHANNELS * slots * plane);
        let (buf, cap) = (v.as_mut_ptr(), v.capacity());
        std::mem::forget(v);
        BatchSlots { buf, cap, slots, plane, claimed: (0..slots).map(|_| AtomicBool::new(false)).collect() }
    }

    /// Slot `j`'s channel planes, uninitialised, for its one writer; `None` when `j` is out of
    /// range or was claimed before.
    // `&mut` from `&self` is the point: the atomic flag, not a borrow, makes the planes unique.
    #[allow(clippy::mut_from_ref)]
    pub fn claim(&self, j: usize) -> Option<[&mut [MaybeUninit<f32>]; CHANNELS]> {
        if j >= self.slots || self.claimed[j].swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(std::array::from_fn(|c| {
            // SAFETY: plane (c, j) lies inside the allocation (c < CHANNELS, j < slots), and this
            // caller is its only holder (the flag above); `MaybeUninit` makes no claim about
            // its contents.
            unsafe { std::slice::from_raw_parts_mut(self.buf.add((c * self.slots + j) * self.plane).cast(), self.plane) }
        }))
    }

    /// The finished batch of the first `n` slots (`n ≤` capacity), where `good[j]` says slot `j`
    /// holds a whole image. With `repair` (training), a bad slot takes a copy of the next good
    /// one, cyclically, and all `n` images stay; without (evaluation), bad slots are dropped and
    /// the good ones close ranks. Returns the (C, N′, H, W) floats and the slots kept, in order;
    /// `None` when no slot is good.
    ///
    /// # Safety
    /// Every slot `j` with `good[j]` must have had all its values written by its claimer.
    pub unsafe fn finish(self, n: usize, good: &[bool], repair: bool) -> Option<(Vec<f32>, Vec<usize>)> {
        assert!(n <= self.slots && good.len() == n, "finish: {n} slots of {}, {} flags", self.slots, good.len());
        // A slot counts as good only if it was claimed (and so, by the caller's promise, written).
        let good: Vec<bool> = good.iter().enumerate().map(|(j, &g)| g && self.claimed[j].load(Ordering::Acquire)).collect();
        let first = good.iter().position(|&g| g)?;
        // Source slot of each output slot.
        let from: Vec<usize> = if repair {
            (0..n).map(|j| if good[j] { j } else { (j + 1..n).find(|&k| good[k]).unwrap_or(first) }).collect()
        } else {
            (0..n).filter(|&j| good[j]).collect()
        };
        let kept = from.len();
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `self` is consumed, so no claimed plane is borrowed any more. Each step copies
        // an initialised plane (a good slot's: the caller's promise) to its output place: in
        // place, or to a lower index when closing ranks (output slot i ≤ source slot, and
        // source slots rise with i, so a source is read before anything overwrites it), or into
        // a bad slot's place (repair: every output place is written before `set_len` makes it
        // readable). `copy` allows overlap; the planes of one channel are contiguous in the
        // (C, N, H, W) layout.
        unsafe {
            let plane = this.plane;
            let at = |c: usize, j: usize| this.buf.add((c * this.slots + j) * plane);
            if repair {
                for (i, &j) in from.iter().enumerate() {
                    if i != j {
                        for c in 0..CHANNELS {
                            std::ptr::copy_nonoverlapping(at(c, j), at(c, i), plane);
                        }
                    }
                }
            }
            // Channel c's block moves from c·slots·plane to c·kept·plane (never up), and within
            // it slot `from[i]` goes to place i (never up, in rising order).
            for c in 0..CHANNELS {
                for (i, &j) in from.iter().enumerate() {
                    let (src, dst) = (if repair { at(c, i) } else { at(c, j) }, this.buf.add((c * kept + i) * plane));
                    if src != dst {
                        std::ptr::copy(src, dst, plane);
                    }
                }
            }
            let mut out = Vec::from_raw_parts(this.buf, 0, this.cap);
            out.set_len(CHANNELS * kept * plane);
            let _ = std::ptr::read(&this.claimed); // free the flags
            Some((out, from))
        }
    }
}

impl Drop for BatchSlots {
    fn drop(&mut self) {
        // SAFETY: the allocation came from a Vec<f32> of this capacity; length 0 drops nothing.
        unsafe { drop(Vec::from_raw_parts(self.buf, 0, self.cap)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(b: &BatchSlots, j: usize) {
        let planes = b.claim(j).unwrap();
        for (c, p) in planes.into_iter().enumerate() {
            p.iter_mut().enumerate().for_each(|(q, v)| {
                v.write((100 * j + 10 * c + q) as f32);
            });
        }
    }

    // SAFETY (every call below): the slots marked good were filled by `fill`.

    fn expect(out: &[f32], kept: &[usize], plane: usize) {
        let n = kept.len();
        assert_eq!(out.len(), CHANNELS * n * plane);
        for c in 0..CHANNELS {
            for (i, &j) in kept.iter().enumerate() {
                for q in 0..plane {
                    assert_eq!(out[(c * n + i) * plane + q], (100 * j + 10 * c + q) as f32, "c{c} slot {i} from {j}");
                }
            }
        }
    }

    #[test]
    fn a_slot_is_handed_out_once() {
        let b = BatchSlots::new(3, 4);
        assert!(b.claim(1).is_some());
        assert!(b.claim(1).is_none(), "second claim of slot 1");
        assert!(b.claim(3).is_none(), "out of range");
    }

    #[test]
    fn full_batches_come_out_in_c_n_h_w_order() {
        let b = BatchSlots::new(4, 5);
        for j in [2, 0, 3, 1] {
            fill(&b, j);
        }
        let (out, kept) = unsafe { b.finish(4, &[true; 4], true) }.unwrap();
        assert_eq!(kept, [0, 1, 2, 3]);
        expect(&out, &kept, 5);
    }

    #[test]
    fn training_repairs_bad_slots_and_evaluation_drops_them() {
        for repair in [true, false] {
            let b = BatchSlots::new(6, 3);
            // Slot 1 failed after its claim, slot 4 was never claimed, slot 5 is past n.
            for j in [0, 2, 3] {
                fill(&b, j);
            }
            let _ = b.claim(1);
            let (out, kept) = unsafe { b.finish(5, &[true, false, true, true, false], repair) }.unwrap();
            if repair {
                assert_eq!(kept, [0, 2, 2, 3, 0], "the next good one, cyclically");
            } else {
                assert_eq!(kept, [0, 2, 3]);
            }
            expect(&out, &kept, 3);
        }
    }

    #[test]
    fn a_batch_with_nothing_good_is_none_and_a_dropped_batch_frees_quietly() {
        let b = BatchSlots::new(2, 8);
        let _ = b.claim(0);
        assert!(unsafe { b.finish(2, &[false, false], true) }.is_none());
        let b = BatchSlots::new(2, 8);
        fill(&b, 1);
        drop(b);
        // An unclaimed slot marked good is not trusted.
        let b = BatchSlots::new(2, 8);
        fill(&b, 0);
        let (_, kept) = unsafe { b.finish(2, &[true, true], false) }.unwrap();
        assert_eq!(kept, [0]);
    }
}
