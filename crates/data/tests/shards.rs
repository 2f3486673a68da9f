//! TFRecord and WebDataset shards: what is written reads back, and crafted damage is skipped or
//! rejected as the formats' modules say, with the offset named.

use std::path::{Path, PathBuf};

use ringsam_data::DataError;
use ringsam_data::shards::tfrecord::{MAX_RECORD, encode_example, write_record};
use ringsam_data::shards::wds::WdsWriter;
use ringsam_data::shards::{Sample, ShardFormat, list_image_folder, pack_folder, read_shard};

fn samples(n: usize) -> Vec<Sample> {
    // Not real JPEGs: shards carry encoded bytes without looking inside (decoding comes later).
    (0..n)
        .map(|i| Sample { key: format!("class_{}/img_{i:03}", i % 3), image: vec![i as u8; 100 + 37 * i], label: (i % 3) as i64 })
        .collect()
}

fn write_tfrecord(path: &Path, s: &[Sample]) {
    let mut buf = Vec::new();
    for x in s {
        write_record(&mut buf, &encode_example(x)).unwrap();
    }
    std::fs::write(path, buf).unwrap();
}

fn write_wds(path: &Path, s: &[Sample]) {
    let mut w = WdsWriter::new(Vec::new());
    for x in s {
        w.write(x).unwrap();
    }
    std::fs::write(path, w.finish().unwrap()).unwrap();
}

/// The samples read, and the (offset, reason) of each record skipped.
type ReadBack = (Vec<Sample>, Vec<(u64, String)>);

fn read_all(path: &Path) -> Result<ReadBack, DataError> {
    let mut got = Vec::new();
    let report = read_shard(path, |_, s| {
        got.push(s);
        true
    })?;
    assert_eq!(report.samples, got.len());
    Ok((got, report.skipped))
}

#[test]
fn both_formats_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let want = samples(7);
    for name in ["a.tfrecord", "a.tar"] {
        let path = dir.path().join(name);
        if name.ends_with(".tar") {
            write_wds(&path, &want)
        } else {
            write_tfrecord(&path, &want)
        }
        let (got, skipped) = read_all(&path).unwrap();
        assert_eq!(got, want, "{name}");
        assert!(skipped.is_empty());
    }
}

#[test]
fn a_tfrecord_with_a_bad_data_checksum_skips_that_record_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.tfrecord");
    write_tfrecord(&path, &samples(3));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12 + 5] ^= 0xff; // inside the first record's data
    std::fs::write(&path, &bytes).unwrap();
    let (got, skipped) = read_all(&path).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, 0);
    assert!(skipped[0].1.contains("checksum"), "{skipped:?}");
}

#[test]
fn framing_damage_in_a_tfrecord_is_an_error_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.tfrecord");
    write_tfrecord(&path, &samples(3));
    let good = std::fs::read(&path).unwrap();
    // A damaged length of the second record.
    let second = 12 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize + 4;
    let mut bytes = good.clone();
    bytes[second] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = read_all(&path).unwrap_err().to_string();
    assert!(err.contains(&format!("offset {second}")) && err.contains("length checksum"), "{err}");
    // Truncated in the middle of the last record.
    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    let err = read_all(&path).unwrap_err().to_string();
    assert!(err.contains("ends inside a record"), "{err}");
    // A huge declared length (with a valid length checksum) is refused before allocating it.
    let len = (MAX_RECORD + 1).to_le_bytes();
    let mut huge = len.to_vec();
    huge.extend_from_slice(&crc32c::crc32c(&len).rotate_right(15).wrapping_add(0xa282_ead8).to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    let err = read_all(&path).unwrap_err().to_string();
    assert!(err.contains("at most"), "{err}");
    // Not a tf.Example: the record is skipped.
    let mut buf = Vec::new();
    write_record(&mut buf, b"\xff\xff\xff garbage").unwrap();
    std::fs::write(&path, &buf).unwrap();
    let (got, skipped) = read_all(&path).unwrap();
    assert!(got.is_empty() && skipped.len() == 1 && skipped[0].1.contains("tf.Example"), "{skipped:?}");
}

#[test]
fn damaged_tars_are_rejected_and_bad_samples_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.tar");
    // Not a tar at all; all zeros; a pax long-name record.
    std::fs::write(&path, vec![b'x'; 2048]).unwrap();
    let err = read_all(&path).unwrap_err().to_string();
    assert!(err.contains("not a tar file") && err.contains("offset 0"), "{err}");
    std::fs::write(&path, vec![0u8; 2048]).unwrap();
    let err = read_all(&path).unwrap_err().to_string();
    assert!(err.contains("no members"), "{err}");
    write_wds(&path, &samples(1));
    let mut pax = std::fs::read(&path).unwrap();
    pax[156] = b'x';
    let sum: u64 = pax[..512].iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { b' ' as u64 } else { b as u64 }).sum();
    pax[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    std::fs::write(&path, &pax).unwrap();
    let err = read_all(&path).unwrap_err().to_string();
    assert!(err.contains("long-name"), "{err}");
    // Keys with a dot in the file name cannot be written (a reader would split them there).
    assert!(WdsWriter::new(Vec::new()).write(&Sample { key: "a/img.001".into(), image: vec![1], label: 0 }).is_err());
    // Truncated inside a member.
    write_wds(&path, &samples(2));
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..512 + 50]).unwrap();
    let err = read_all(&path).unwrap_err().to_string();
    assert!(err.contains("ends inside a tar member"), "{err}");
    // A good sample, then one whose .cls is not a number: the second is skipped.
    let mut w = WdsWriter::new(Vec::new());
    w.write(&Sample { key: "ok".into(), image: vec![1, 2, 3], label: 4 }).unwrap();
    w.write(&Sample { key: "bad_label".into(), image: vec![9], label: 1 }).unwrap();
    let mut bytes = w.finish().unwrap();
    // Members: ok.jpg (header, data), ok.cls (header, data), bad_label.jpg, bad_label.cls: the
    // last member's data block starts at 7 · 512. Header checksums do not cover data.
    bytes[7 * 512] = b'x';
    std::fs::write(&path, &bytes).unwrap();
    let (got, skipped) = read_all(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert!(skipped.len() == 1 && skipped[0].1.contains("not a decimal label") && skipped[0].0 == 4 * 512, "{skipped:?}");
}

#[test]
fn packing_an_image_folder_gives_readable_shards_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("folder");
    for (c, n) in [("cat", 4), ("dog", 3)] {
        std::fs::create_dir_all(src.join(c)).unwrap();
        for i in 0..n {
            std::fs::write(src.join(c).join(format!("{i}.jpg")), vec![i as u8 + 1; 10 + i]).unwrap();
        }
        std::fs::write(src.join(c).join("notes.txt"), b"not an image").unwrap();
    }
    let (classes, files) = list_image_folder(&src).unwrap();
    assert_eq!(classes, vec!["cat", "dog"]);
    assert_eq!(files.len(), 7);
    for format in ["tfrecord", "wds"] {
        let out = dir.path().join(format);
        let shards: Vec<PathBuf> = pack_folder(&src, &out, ShardFormat::parse(format).unwrap(), 3, "train", 1).unwrap();
        assert_eq!(shards.len(), 3, "{format}");
        let mut all = Vec::new();
        for s in &shards {
            all.extend(read_all(s).unwrap().0);
        }
        all.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: Vec<_> = all.iter().map(|s| (s.key.as_str(), s.label)).collect();
        assert_eq!(
            keys,
            vec![("cat/0", 0), ("cat/1", 0), ("cat/2", 0), ("cat/3", 0), ("dog/0", 1), ("dog/1", 1), ("dog/2", 1)],
            "{format}"
        );
        assert_eq!(all[4].image, vec![1u8; 10]);
        assert!(std::fs::read_dir(&out).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    }
}
