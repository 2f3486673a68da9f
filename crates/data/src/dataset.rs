//! The in-memory form every dataset is parsed into.

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training examples.
    Train,
    /// Held-out examples (the test set, or the validation slice when `use_test_set` is false).
    Test,
}

/// Images as u8 pixels in HWC order, one label per image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Registry name (`cifar10`, `digits`, ...).
    pub name: String,
    /// `len · height · width · channels` bytes; image `i` starts at `i · height · width · channels`,
    /// pixel `(y, x)` channel `c` of it at `(y · width + x) · channels + c`.
    pub pixels: Vec<u8>,
    /// Class of each image, `< num_classes`.
    pub labels: Vec<u32>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Channels (1 or 3).
    pub channels: usize,
    /// Number of classes.
    pub num_classes: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Image `i`'s pixels (HWC).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Keeps images `range` only (the reference's `train[:45000]` style slices).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        let n = self.image_len();
        Dataset {
            name: self.name.clone(),
            pixels: self.pixels[range.start * n..range.end * n].to_vec(),
            labels: self.labels[range].to_vec(),
            height: self.height,
            width: self.width,
            channels: self.channels,
            num_classes: self.num_classes,
        }
    }

    /// Appends another dataset of the same shape (SVHN's train + extra).
    pub fn extend(&mut self, other: &Dataset) {
        assert_eq!(
            (self.height, self.width, self.channels),
            (other.height, other.width, other.channels),
            "datasets of different image shapes"
        );
        self.pixels.extend_from_slice(&other.pixels);
        self.labels.extend_from_slice(&other.labels);
    }
}
