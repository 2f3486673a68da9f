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
    /// Which stored examples the images are, one id per image: the index in the dataset (in
    /// memory), or the sample's place in its split's index (shards, in shard order) — what
    /// `--log_sample_ids` records.
    pub ids: Vec<u64>,
    /// Mixup, when the images were mixed: with `λ` and groups of `g` images, image `i` is
    /// `λ·x_i + (1 − λ)·x_j` and its target `λ·y_i + (1 − λ)·y_j`, where `j` is `i` reversed
    /// within its group (the reference's `images[::-1]` on each device's batch; here the group is
    /// the micro-batch, so the pairs do not depend on how many replicas share the batch).
    pub mix: Option<Mix>,
}

/// How a batch was mixed ([`Batch::mix`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    /// The weight of each image's own target, λ ≥ ½.
    pub lambda: f32,
    /// Images per group; partners are reversed within a group.
    pub group: usize,
}

impl Batch {
    /// The partner of image `i` in groups of `group` (the last group may be shorter).
    fn partner(&self, i: usize, group: usize) -> usize {
        let start = i / group * group;
        let len = group.min(self.n - start);
        start + len - 1 - (i - start)
    }

    /// Mixes each group of `group` images with its reversal at weight `lambda` (the reference's
    /// `mixup`, per micro-batch).
    pub fn mixup(&mut self, lambda: f32, group: usize) {
        let group = group.clamp(1, self.n.max(1));
        let plane = self.h * self.w;
        let n = self.n;
        let orig = self.images.clone();
        for ch in 0..self.c {
            for i in 0..n {
                let (dst, other) = ((ch * n + i) * plane, (ch * n + self.partner(i, group)) * plane);
                for p in 0..plane {
                    self.images[dst + p] = lambda * orig[dst + p] + (1.0 - lambda) * orig[other + p];
                }
            }
        }
        self.mix = Some(Mix { lambda, group });
    }

    /// The partner labels of a mixed batch (each group's labels reversed); empty when unmixed.
    pub fn partner_labels(&self) -> Vec<u32> {
        let Some(m) = self.mix else { return Vec::new() };
        (0..self.n).map(|i| self.labels[self.partner(i, m.group)]).collect()
    }
}
