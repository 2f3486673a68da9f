//! An operation's values, shared with the reader tasks that receive into them.
//!
//! Why: a chunk's all-gather value only needs copying into the operation's buffer, and a
//! byte-stream reader can have the kernel put it there directly, saving a copy of half the
//! buffer per all-reduce. But the reader runs in its own task (it must keep draining the socket
//! while the driver waits to write), possibly on another thread, while the driver reads and
//! writes other ranges of the same buffer. So the ring lends out single chunk ranges as a
//! [`Loan`]: the allocation is reference-counted (it lives until the ring and every loan have let
//! go, so a failed operation cannot free memory a reader is still writing), and every access —
//! the ring's and a loan's — goes through a slice of exactly its own range, made from one raw
//! pointer, so accesses to disjoint ranges never overlap. Keeping lent ranges disjoint from
//! everything else is the ring's bookkeeping (`Ring::take_lendable`).

use std::mem::ManuallyDrop;
use std::ops::Range;
use std::sync::Arc;

/// The allocation of a `Vec<f32>`, taken apart.
struct Raw {
    ptr: *mut f32,
    len: usize,
    cap: usize,
}

// SAFETY: `Raw` owns its allocation like a `Vec<f32>` (which is Send and Sync); all access goes
// through `OpBuffer` and `Loan`, whose contracts keep concurrent accesses on disjoint ranges.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: the parts came from a Vec (`OpBuffer::new`) and are reassembled exactly once:
        // here, or in `OpBuffer::into_vec`, which forgets `self` after taking them.
        drop(unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) });
    }
}

/// An operation's buffer (see the module docs).
pub(crate) struct OpBuffer(Arc<Raw>);

impl OpBuffer {
    pub(crate) fn new(v: Vec<f32>) -> Self {
        let mut v = ManuallyDrop::new(v);
        OpBuffer(Arc::new(Raw { ptr: v.as_mut_ptr(), len: v.len(), cap: v.capacity() }))
    }

    /// The values in `r`.
    ///
    /// # Safety
    /// No [`Loan`] of a range overlapping `r` may be alive while the slice is.
    pub(crate) unsafe fn range(&self, r: Range<usize>) -> &[f32] {
        assert!(r.start <= r.end && r.end <= self.0.len, "range {r:?} of {} values", self.0.len);
        // SAFETY: in bounds (checked); no one writes the range meanwhile (the caller's promise,
        // and `range_mut` needs `&mut self`).
        unsafe { std::slice::from_raw_parts(self.0.ptr.add(r.start), r.len()) }
    }

    /// The values in `r`, to change.
    ///
    /// # Safety
    /// No [`Loan`] of a range overlapping `r` may be alive while the slice is.
    pub(crate) unsafe fn range_mut(&mut self, r: Range<usize>) -> &mut [f32] {
        assert!(r.start <= r.end && r.end <= self.0.len, "range {r:?} of {} values", self.0.len);
        // SAFETY: in bounds (checked); `&mut self` excludes the ring's other slices, the caller
        // excludes loans.
        unsafe { std::slice::from_raw_parts_mut(self.0.ptr.add(r.start), r.len()) }
    }

    /// Lends `r` out for writing.
    ///
    /// # Safety
    /// Until the loan is dropped, the caller must not call `range`/`range_mut` on a range
    /// overlapping `r`, nor lend an overlapping range again.
    pub(crate) unsafe fn lend(&self, r: Range<usize>) -> Loan {
        assert!(r.start <= r.end && r.end <= self.0.len, "range {r:?} of {} values", self.0.len);
        Loan { raw: self.0.clone(), start: r.start, len: r.len() }
    }

    /// Whether `loan` is of this buffer's range `r`.
    pub(crate) fn lent_as(&self, loan: &Loan, r: Range<usize>) -> bool {
        Arc::ptr_eq(&self.0, &loan.raw) && loan.start == r.start && loan.len == r.len()
    }

    /// The values as a `Vec` again; `Err(self)` while a loan is alive.
    pub(crate) fn into_vec(self) -> Result<Vec<f32>, Self> {
        let raw = Arc::try_unwrap(self.0).map_err(OpBuffer)?;
        let raw = ManuallyDrop::new(raw);
        // SAFETY: the parts came from a Vec and `raw` is forgotten, so they are reassembled once.
        Ok(unsafe { Vec::from_raw_parts(raw.ptr, raw.len, raw.cap) })
    }
}

/// One lent range of an operation's buffer, for a reader to write into.
pub struct Loan {
    raw: Arc<Raw>,
    start: usize,
    len: usize,
}

impl Loan {
    /// Bytes the range holds.
    pub fn byte_len(&self) -> usize {
        self.len * 4
    }

    /// The range as bytes, to receive little-endian f32 into (on a little-endian machine that
    /// is their memory; elsewhere the ring lends nothing).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: in bounds (checked in `lend`); the ring touches no overlapping range while the
        // loan lives (`lend`'s contract), and `&mut self` makes this the only slice from it. Any
        // byte pattern is a valid f32.
        unsafe { std::slice::from_raw_parts_mut(self.raw.ptr.add(self.start).cast::<u8>(), self.len * 4) }
    }
}

impl std::fmt::Debug for OpBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpBuffer({} values)", self.0.len)
    }
}

impl std::fmt::Debug for Loan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loan({}..{})", self.start, self.start + self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loan_writes_its_range_and_blocks_into_vec_until_dropped() {
        let mut b = OpBuffer::new((0..10).map(|i| i as f32).collect());
        // SAFETY: nothing else touches 4..6 while the loan lives.
        let mut loan = unsafe { b.lend(4..6) };
        loan.bytes_mut().copy_from_slice(&[&100f32.to_le_bytes()[..], &200f32.to_le_bytes()[..]].concat());
        // SAFETY: 0..4 does not overlap the loan.
        unsafe { b.range_mut(0..4) }.iter_mut().for_each(|v| *v = -*v);
        let b = b.into_vec().expect_err("a loan is alive");
        drop(loan);
        let v = b.into_vec().expect("no loans");
        assert_eq!(v, [-0.0, -1.0, -2.0, -3.0, 100.0, 200.0, 6.0, 7.0, 8.0, 9.0]);
    }

    #[test]
    fn a_loan_keeps_the_memory_after_the_buffer_is_gone() {
        let b = OpBuffer::new(vec![1.0; 1000]);
        // SAFETY: the buffer is dropped next; nothing else touches the range.
        let mut loan = unsafe { b.lend(990..1000) };
        drop(b);
        loan.bytes_mut().fill(0);
        assert_eq!(loan.byte_len(), 40);
    }
}
