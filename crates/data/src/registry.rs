//! Datasets by the reference's names, with its train/validation rules.
//!
//! With `use_test_set` (the reference's default) training uses the whole training split and
//! evaluation the test split. Without it, a slice of the training split is held out, as the
//! reference does: CIFAR `train[:45000]` / `train[45000:]`, Fashion-MNIST `[:54000]` /
//! `[54000:]`, SVHN `train[:65931] + extra` / `train[65931:]`; digits, synthetic and arrays hold
//! out the last 10 % of their training split.

use std::path::Path;

use crate::arrays::load_arrays;
use crate::cifar::{load_cifar10, load_cifar100};
use crate::digits::load_digits;
use crate::fashion_mnist::load_fashion_mnist;
use crate::svhn::load_svhn;
use crate::synthetic::synthetic;
use crate::{DataError, Dataset, Split};

/// Dataset names this registry loads into memory (ImageNet is read from shards instead).
pub const NAMES: &[&str] = &["digits", "cifar10", "cifar100", "fashion_mnist", "svhn", "synthetic", "arrays"];

/// Shape of the `synthetic` dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Square image side.
    pub size: usize,
    /// Channels.
    pub channels: usize,
    /// Classes.
    pub classes: usize,
    /// Training images.
    pub train_len: usize,
    /// Test images.
    pub test_len: usize,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec { size: 32, channels: 3, classes: 10, train_len: 2048, test_len: 512 }
    }
}

/// Loads `split` of dataset `name` from `dir` (ignored by `digits` and `synthetic`; for `arrays`
/// the safetensors file itself).
pub fn load(name: &str, split: Split, dir: Option<&Path>, use_test_set: bool, synth: &SyntheticSpec) -> Result<Dataset, DataError> {
    let need_dir = || {
        dir.ok_or_else(|| {
            DataError::Config(format!("dataset {name} needs --data_dir (the directory holding its files; see the README's dataset table)"))
        })
    };
    let holdout = |train: Dataset, at: usize| -> Result<Dataset, DataError> {
        if at > train.len() {
            return Err(DataError::Config(format!("{name}: cannot hold out from {} training images at {at}", train.len())));
        }
        Ok(match split {
            Split::Train => train.slice(0..at),
            Split::Test => train.slice(at..train.len()),
        })
    };
    let tenth = |d: Dataset| -> Result<Dataset, DataError> {
        let at = d.len() - d.len() / 10;
        holdout(d, at)
    };
    match (name, use_test_set) {
        ("digits", true) => load_digits(split),
        ("digits", false) => tenth(load_digits(Split::Train)?),
        ("synthetic", true) => Ok(synthetic(
            split,
            if split == Split::Train { synth.train_len } else { synth.test_len },
            synth.size,
            synth.channels,
            synth.classes,
            0,
        )),
        ("synthetic", false) => tenth(synthetic(Split::Train, synth.train_len, synth.size, synth.channels, synth.classes, 0)),
        ("arrays", true) => load_arrays(need_dir()?, split),
        ("arrays", false) => tenth(load_arrays(need_dir()?, Split::Train)?),
        ("cifar10", true) => load_cifar10(need_dir()?, split),
        ("cifar10", false) => holdout(load_cifar10(need_dir()?, Split::Train)?, 45_000),
        ("cifar100", true) => load_cifar100(need_dir()?, split),
        ("cifar100", false) => holdout(load_cifar100(need_dir()?, Split::Train)?, 45_000),
        ("fashion_mnist", true) => load_fashion_mnist(need_dir()?, split),
        ("fashion_mnist", false) => holdout(load_fashion_mnist(need_dir()?, Split::Train)?, 54_000),
        ("svhn", true) => load_svhn(need_dir()?, split, split == Split::Train),
        ("svhn", false) => {
            let train = load_svhn(need_dir()?, Split::Train, false)?;
            match split {
                Split::Train => {
                    let mut d = train.slice(0..65_931.min(train.len()));
                    let with_extra = load_svhn(need_dir()?, Split::Train, true)?;
                    d.extend(&with_extra.slice(train.len()..with_extra.len()));
                    Ok(d)
                }
                Split::Test => Ok(train.slice(65_931.min(train.len())..train.len())),
            }
        }
        _ => Err(DataError::Config(format!("unknown dataset {name:?} (known: {})", NAMES.join(", ")))),
    }
}
