//! A batch as the engine wants it.

/// Normalised images in `(C, N, H, W)` order and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `c · n · h · w` values; channel-major (see `ringsam-tensor`'s layout notes).
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u32>,
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Index of this batch within its epoch.
    pub index: usize,
}
