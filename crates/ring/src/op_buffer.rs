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
//!
//! Whose memory: the ring reduces in place, in storage the caller hands it and gets back — a
//! `Vec<f32>`, or anything else that implements [`Values`] (pinned host memory that a GPU
//! allocator owns, so a gradient bucket goes from its device copy to the wire with no host copy
//! in between). The ring never allocates or frees an operation's values itself.

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

/// Storage for an operation's `f32` values, owned by whoever allocated it (see the module docs).
///
/// # Safety
/// `values_ptr` must return the same pointer on every call, valid for reads and writes of
/// `values_len()` `f32`s for as long as the storage lives, and nothing else may access that
/// memory while the ring holds the storage (from `Ring::start` until its result is taken).
pub unsafe trait Values: Send + 'static {
    /// Where the values are.
    fn values_ptr(&mut self) -> *mut f32;
    /// How many there are.
    fn values_len(&self) -> usize;
    /// The storage as its own type again (see `Ring::take_result`).
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

// SAFETY: a Vec's buffer does not move while the Vec is not resized, and the ring never resizes
// it (it only holds the Vec); the pointer is valid for `len` values.
unsafe impl Values for Vec<f32> {
    fn values_ptr(&mut self) -> *mut f32 {
        self.as_mut_ptr()
    }

    fn values_len(&self) -> usize {
        self.len()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// An operation's storage, with its pointer and length taken once.
struct Raw {
    ptr: *mut f32,
    len: usize,
    owner: Option<Box<dyn Values>>, // None only after `into_values` took it
}

// SAFETY: the storage is Send; the values are reached only through `OpBuffer` and `Loan`, whose
// contracts keep concurrent accesses on disjoint ranges, and `owner` itself is touched only by
// whoever holds the last reference (dropping it, or `into_values`).
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

/// An operation's buffer (see the module docs).
pub(crate) struct OpBuffer(Arc<Raw>);

impl OpBuffer {
    pub(crate) fn new(mut values: Box<dyn Values>) -> Self {
        let (ptr, len) = (values.values_ptr(), values.values_len());
        OpBuffer(Arc::new(Raw { ptr, len, owner: Some(values) }))
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

    /// The storage, given back; `Err(self)` while a loan is alive.
    pub(crate) fn into_values(self) -> Result<Box<dyn Values>, Self> {
        let mut raw = Arc::try_unwrap(self.0).map_err(OpBuffer)?;
        Ok(raw.owner.take().expect("the storage is taken once, by the last holder"))
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
        let mut b = OpBuffer::new(Box::new((0..10).map(|i| i as f32).collect::<Vec<f32>>()));
        // SAFETY: nothing else touches 4..6 while the loan lives.
        let mut loan = unsafe { b.lend(4..6) };
        loan.bytes_mut().copy_from_slice(&[&100f32.to_le_bytes()[..], &200f32.to_le_bytes()[..]].concat());
        // SAFETY: 0..4 does not overlap the loan.
        unsafe { b.range_mut(0..4) }.iter_mut().for_each(|v| *v = -*v);
        let Err(b) = b.into_values() else { panic!("a loan is alive, yet the storage came back") };
        drop(loan);
        let Ok(v) = b.into_values() else { panic!("no loans, yet the storage did not come back") };
        let v = v.into_any().downcast::<Vec<f32>>().unwrap();
        assert_eq!(*v, [-0.0, -1.0, -2.0, -3.0, 100.0, 200.0, 6.0, 7.0, 8.0, 9.0]);
    }

    #[test]
    fn a_loan_keeps_the_memory_after_the_buffer_is_gone() {
        let b = OpBuffer::new(Box::new(vec![1.0f32; 1000]));
        // SAFETY: the buffer is dropped next; nothing else touches the range.
        let mut loan = unsafe { b.lend(990..1000) };
        drop(b);
        loan.bytes_mut().fill(0);
        assert_eq!(loan.byte_len(), 40);
    }

    /// Storage the ring does not allocate: the buffer writes into it and gives it back whole.
    #[test]
    fn foreign_storage_is_used_in_place_and_given_back() {
        struct Pinned {
            values: Box<[f32]>,
            id: u32,
        }
        // SAFETY: a boxed slice does not move; the pointer is valid for its length.
        unsafe impl Values for Pinned {
            fn values_ptr(&mut self) -> *mut f32 {
                self.values.as_mut_ptr()
            }
            fn values_len(&self) -> usize {
                self.values.len()
            }
            fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
                self
            }
        }
        let storage = Pinned { values: vec![1.0; 8].into_boxed_slice(), id: 7 };
        let at = storage.values.as_ptr();
        let mut b = OpBuffer::new(Box::new(storage));
        // SAFETY: no loans.
        unsafe { b.range_mut(2..4) }.fill(5.0);
        let Ok(back) = b.into_values() else { panic!("no loans, yet the storage did not come back") };
        let back = back.into_any().downcast::<Pinned>().unwrap();
        assert_eq!((back.id, back.values.as_ptr()), (7, at), "the same storage, not a copy");
        assert_eq!(&back.values[..], [1.0, 1.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0]);
    }
}
