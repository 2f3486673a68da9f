//! A channel plane being filled by the JPEG pipeline, in memory that may not be initialised yet.
//!
//! Why a type: the loader decodes each image straight into its slot of a batch, memory nobody
//! has initialised (`MaybeUninit<f32>`: no zero fill per image), while `JpegPipeline::process`
//! fills ordinary `&mut [f32]` planes. Viewing an `&mut [f32]` as `&mut [MaybeUninit<f32>]` and
//! handing that to code would let it store `MaybeUninit::uninit()` into memory the caller believes
//! initialised — undefined behaviour that only that code's good manners would prevent. A
//! [`PlaneOut`] can only *store* `f32` values, never read and never un-initialise, so it is sound
//! over either kind of memory whatever the code that fills it does.

use std::mem::MaybeUninit;

/// A `len`-value plane that values can be written to (see the module docs).
pub struct PlaneOut<'a> {
    values: &'a mut [MaybeUninit<f32>], // never exposed: only `f32`s are stored through it
}

impl<'a> PlaneOut<'a> {
    /// A plane over initialised memory.
    pub fn init(plane: &'a mut [f32]) -> Self {
        // SAFETY: `f32` and `MaybeUninit<f32>` have the same layout, and the view never leaves
        // this type, whose methods only store initialised `f32`s: `plane` stays initialised.
        let values = unsafe { &mut *(plane as *mut [f32] as *mut [MaybeUninit<f32>]) };
        PlaneOut { values }
    }

    /// A plane over memory that may not be initialised (a batch slot).
    pub fn uninit(values: &'a mut [MaybeUninit<f32>]) -> Self {
        PlaneOut { values }
    }

    /// Values in the plane.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the plane holds no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Writes row `y` of a plane `width` values wide from `values`, in order (at most `width`
    /// of them; an iterator over a slice keeps the loop free of bounds checks, so it vectorises).
    pub fn write_row(&mut self, y: usize, width: usize, values: impl IntoIterator<Item = f32>) {
        for (d, v) in self.values[y * width..][..width].iter_mut().zip(values) {
            d.write(v);
        }
    }
}
