//! Spare host storage: what layers give up between steps, kept for the next step's requests.
//!
//! Why: backward frees each block's input gradients as soon as the block below has consumed
//! them (`Layer::release_dinput` in ringsam-nn: a deep network then holds one block's gradients
//! at a time) and allocates them again the next step. malloc maps a buffer of tens of megabytes
//! fresh from the kernel each time, and the kernel zeroes every page on first touch: a fifth of an
//! EfficientNet-B0 step went to that (perf, 2-core VM, 2026-12-05). Released storage comes here
//! instead, and [`crate::Tensor::resize`] takes the spare buffer with the least room that is enough,
//! already mapped, as a GPU's caching allocator does. The list is
//! process-wide, bounded in count, and the oldest spare goes first when it is full; buffers too
//! small for malloc to map on its own are not kept.

use std::sync::{Mutex, MutexGuard};

/// Buffers kept at most (an EfficientNet block releases about ten per backward).
const MAX_SPARE: usize = 64;
/// Shorter buffers are left to malloc, which serves them from its own free lists.
const MIN_LEN: usize = 16 * 1024;

static SPARE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

fn spare() -> MutexGuard<'static, Vec<Vec<f32>>> {
    // A panic while holding the lock leaves the list valid (a push or a remove either happened
    // or did not), so a poisoned lock is still usable.
    SPARE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps `v` (its length and contents as they are) for a later [`take`].
pub(crate) fn give(v: Vec<f32>) {
    if v.len() < MIN_LEN {
        return;
    }
    let mut s = spare();
    if s.len() == MAX_SPARE {
        s.remove(0);
    }
    s.push(v);
}

/// The kept buffer with the least capacity for `n` values, if one has room for `n` without
/// wasting more than as much again (a far larger buffer stays for a request its size).
pub(crate) fn take(n: usize) -> Option<Vec<f32>> {
    if n < MIN_LEN {
        return None;
    }
    let mut s = spare();
    let fits = |v: &Vec<f32>| v.capacity() >= n && v.capacity() <= 2 * n;
    let best = s.iter().enumerate().filter(|(_, v)| fits(v)).min_by_key(|(_, v)| v.capacity()).map(|(i, _)| i)?;
    Some(s.remove(best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_shortest_long_enough_buffer() {
        // Lengths no other test gives up, so tests running beside this one do not interfere.
        let marked = |len: usize, mark: f32| vec![mark; len];
        give(marked(MIN_LEN * 7 + 3, 1.0));
        give(marked(MIN_LEN * 5 + 3, 2.0));
        give(marked(MIN_LEN - 1, 3.0)); // too small to keep
        let got = take(MIN_LEN * 5 + 1).expect("a spare buffer");
        assert_eq!((got.len(), got[0]), (MIN_LEN * 5 + 3, 2.0));
        assert!(take(MIN_LEN * 3).is_none(), "more than twice the request is not handed out");
        let got = take(MIN_LEN * 5 + 1).expect("the longer one");
        assert_eq!((got.len(), got[0]), (MIN_LEN * 7 + 3, 1.0));
        assert!(take(MIN_LEN - 1).is_none());
    }
}
