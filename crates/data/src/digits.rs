//! `digits`: the bundled default dataset, so the quickstart needs no download.
//!
//! 1797 handwritten digits, 8×8 pixels with counts 0–16 (UCI "Optical Recognition of Handwritten
//! Digits", scikit-learn's copy; licence in `assets/DIGITS-LICENSE.md`), embedded in the binary
//! (57 KB gzipped). Pixels are stored as `round(v·255/16)` so every dataset shares the u8 range.
//!
//! The split is fixed and stratified: per class, the examples are shuffled with [`SPLIT_SEED`]
//! and 360 of the 1797 go to the test set, apportioned to classes by largest remainder
//! (20.03 % of each class, rounded so the total is exactly 360). Train is the other 1437.
//! Models see the native 8×8 resolution: a WideResNet's three groups run at 8×8, 4×4 and 2×2.

use std::io::Read;

use ringsam_rng::Rng;

use crate::{DataError, Dataset, Split};

const CSV_GZ: &[u8] = include_bytes!("../assets/digits.csv.gz");
/// Seed of the fixed train/test split.
pub const SPLIT_SEED: u64 = 1797;
/// Images in the test split.
pub const TEST_SIZE: usize = 360;

/// Loads the train or test split of the bundled digits.
pub fn load_digits(split: Split) -> Result<Dataset, DataError> {
    let (images, labels) = parse(CSV_GZ)?;
    let test = test_indices(&labels);
    let mut is_test = vec![false; labels.len()];
    test.iter().for_each(|&i| is_test[i] = true);
    let keep: Vec<usize> = (0..labels.len()).filter(|&i| is_test[i] == (split == Split::Test)).collect();
    Ok(Dataset {
        name: "digits".into(),
        pixels: keep.iter().flat_map(|&i| images[i * 64..(i + 1) * 64].iter().copied()).collect(),
        labels: keep.iter().map(|&i| labels[i]).collect(),
        height: 8,
        width: 8,
        channels: 1,
        num_classes: 10,
    })
}

fn parse(gz: &[u8]) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let path = "<embedded digits.csv.gz>";
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| DataError::format(path, 0, format!("cannot decompress: {e}")))?;
    let (mut images, mut labels) = (Vec::with_capacity(1797 * 64), Vec::with_capacity(1797));
    let mut offset = 0u64;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(DataError::format(path, offset, format!("expected 65 comma-separated values, found {}", fields.len())));
        }
        for f in &fields[..64] {
            let v: u32 = f.trim().parse().map_err(|_| DataError::format(path, offset, format!("pixel {f:?} is not an integer")))?;
            if v > 16 {
                return Err(DataError::format(path, offset, format!("pixel {v} outside 0..=16")));
            }
            images.push(((v * 255 + 8) / 16) as u8);
        }
        let l: u32 = fields[64].trim().parse().map_err(|_| DataError::format(path, offset, "label is not an integer"))?;
        if l > 9 {
            return Err(DataError::format(path, offset, format!("label {l} outside 0..=9")));
        }
        labels.push(l);
        offset += line.len() as u64 + 1;
    }
    Ok((images, labels))
}

/// The fixed stratified test indices.
fn test_indices(labels: &[u32]) -> Vec<usize> {
    let n = labels.len();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); 10];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    // Largest-remainder apportionment of TEST_SIZE over classes.
    let quota: Vec<f64> = by_class.iter().map(|c| c.len() as f64 * TEST_SIZE as f64 / n as f64).collect();
    let mut take: Vec<usize> = quota.iter().map(|q| q.floor() as usize).collect();
    let mut order: Vec<usize> = (0..10).collect();
    order.sort_by(|&a, &b| (quota[b] - quota[b].floor()).total_cmp(&(quota[a] - quota[a].floor())).then(a.cmp(&b)));
    for &c in order.iter().take(TEST_SIZE - take.iter().sum::<usize>()) {
        take[c] += 1;
    }
    let mut test = Vec::with_capacity(TEST_SIZE);
    for (c, idx) in by_class.iter_mut().enumerate() {
        let mut rng = Rng::stream(SPLIT_SEED, 0, c as u64);
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i as u64 + 1) as usize);
        }
        test.extend_from_slice(&idx[..take[c]]);
    }
    test.sort_unstable();
    test
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_1437_360_stratified_and_disjoint() {
        let (train, test) = (load_digits(Split::Train).unwrap(), load_digits(Split::Test).unwrap());
        assert_eq!((train.len(), test.len()), (1437, 360));
        assert_eq!(train.pixels.len(), 1437 * 64);
        for c in 0..10 {
            let (a, b) = (train.labels.iter().filter(|&&l| l == c).count(), test.labels.iter().filter(|&&l| l == c).count());
            let frac = b as f64 / (a + b) as f64;
            assert!((frac - 0.2).abs() < 0.01, "class {c}: {b} of {} in test", a + b);
        }
        // Deterministic: a second load gives the same split.
        assert_eq!(load_digits(Split::Test).unwrap(), test);
        // Disjoint: no index is drawn twice, and train and test together are the whole set,
        // every (image, label) row exactly as often as the file holds it.
        let (images, labels) = parse(CSV_GZ).unwrap();
        let drawn = test_indices(&labels);
        assert!(drawn.windows(2).all(|w| w[0] < w[1]), "a test index drawn twice");
        let mut left: std::collections::HashMap<(&[u8], u32), i32> = std::collections::HashMap::new();
        for (row, &l) in images.chunks(64).zip(&labels) {
            *left.entry((row, l)).or_default() += 1;
        }
        for split in [&train, &test] {
            for (row, &l) in split.pixels.chunks(64).zip(&split.labels) {
                *left.get_mut(&(row, l)).expect("a row that is not in the file") -= 1;
            }
        }
        assert!(left.values().all(|&n| n == 0), "train and test overlap or miss rows");
    }

    #[test]
    fn bad_rows_are_rejected_with_offset() {
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(b"0,1\n").unwrap();
        }
        let err = parse(&gz).unwrap_err().to_string();
        assert!(err.contains("offset 0") && err.contains("expected 65"), "{err}");
    }
}
