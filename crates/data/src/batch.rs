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
    /// Mixup's weight λ when the images were mixed: image `i` is `λ·x_i + (1 − λ)·x_{n−1−i}`,
    /// and its target `λ·y_i + (1 − λ)·y_{n−1−i}` (the partner is the reversed batch, as the
    /// reference's `images[::-1]`).
    pub mix: Option<f32>,
}

impl Batch {
    /// Mixes the batch with its reversal at weight `lambda` (the reference's `mixup`).
    pub fn mixup(&mut self, lambda: f32) {
        let plane = self.h * self.w;
        let n = self.n;
        let orig = self.images.clone();
        for ch in 0..self.c {
            for i in 0..n {
                let (dst, other) = ((ch * n + i) * plane, (ch * n + n - 1 - i) * plane);
                for p in 0..plane {
                    self.images[dst + p] = lambda * orig[dst + p] + (1.0 - lambda) * orig[other + p];
                }
            }
        }
        self.mix = Some(lambda);
    }

    /// The partner labels of a mixed batch (the labels reversed).
    pub fn partner_labels(&self) -> Vec<u32> {
        self.labels.iter().rev().copied().collect()
    }
}
