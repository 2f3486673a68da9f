//! Sharded image datasets: TFDS TFRecord shards, WebDataset tar shards and image folders, read
//! record by record into [`Sample`]s of encoded image bytes and a label.
//!
//! Files: [`tfrecord`] (framing with masked CRC-32C, `tf.Example`), [`wds`] (ustar members grouped
//! by key), this module (formats, image folders, packing a folder into shards, summarising a
//! shard). Decoding and augmentation happen later, in the loader's decoder actors.
//!
//! Damage is handled at two levels: a single bad record inside a shard is skipped, counted and
//! reported with its shard and offset; damage that loses the shard's framing (a length checksum,
//! a tar header, a truncated file) ends that shard with an error naming the offset.

pub mod index;
pub mod layout;
pub mod tfrecord;
pub mod wds;

use std::path::{Path, PathBuf};

use crate::DataError;

/// One example as stored: encoded image bytes, label, and the key it was stored under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// File name or WebDataset key.
    pub key: String,
    /// Encoded image (JPEG).
    pub image: Vec<u8>,
    /// Class index.
    pub label: i64,
}

/// Shard formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardFormat {
    /// TFDS-style TFRecord of `tf.Example`s.
    TfRecord,
    /// WebDataset tar.
    Wds,
}

impl ShardFormat {
    /// From a flag value (`tfrecord`, `wds`).
    pub fn parse(s: &str) -> Result<Self, DataError> {
        match s {
            "tfrecord" => Ok(ShardFormat::TfRecord),
            "wds" | "webdataset" => Ok(ShardFormat::Wds),
            other => Err(DataError::Config(format!("shard format {other:?}: expected tfrecord or wds"))),
        }
    }

    /// By file name: `*.tar` is WebDataset; `*.tfrecord*` is TFRecord.
    pub fn of(path: &Path) -> Result<Self, DataError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".tar") {
            Ok(ShardFormat::Wds)
        } else if name.contains(".tfrecord") {
            Ok(ShardFormat::TfRecord)
        } else {
            Err(DataError::Config(format!("{}: not a shard name (expected *.tar or *.tfrecord*)", path.display())))
        }
    }
}

/// What reading one shard met besides samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardReport {
    /// Samples delivered.
    pub samples: usize,
    /// Records skipped, each with its offset and reason.
    pub skipped: Vec<(u64, String)>,
}

/// Reads every sample of `path`, calling `each(offset, sample)` until it returns false. Records
/// with bad contents are skipped and listed in the report; framing damage is an error (see the
/// module docs).
pub fn read_shard(path: &Path, mut each: impl FnMut(u64, Sample) -> bool) -> Result<ShardReport, DataError> {
    let mut report = ShardReport::default();
    match ShardFormat::of(path)? {
        ShardFormat::TfRecord => {
            let mut r = tfrecord::open(path)?;
            while let Some(next) = r.next_record()? {
                match next {
                    tfrecord::Next::Record(at, data) => match tfrecord::decode_example(&data) {
                        Ok(s) => {
                            report.samples += 1;
                            if !each(at, s) {
                                break;
                            }
                        }
                        Err(why) => report.skipped.push((at, why)),
                    },
                    tfrecord::Next::Corrupt(at, why) => report.skipped.push((at, why)),
                }
            }
        }
        ShardFormat::Wds => {
            let mut r = wds::open(path)?;
            while let Some(next) = r.next_sample()? {
                match next {
                    wds::Next::Sample(at, s) => {
                        report.samples += 1;
                        if !each(at, s) {
                            break;
                        }
                    }
                    wds::Next::Skipped(at, why) => report.skipped.push((at, why)),
                }
            }
        }
    }
    Ok(report)
}

/// An image folder's class names and its (path, label) list.
pub type ImageFolder = (Vec<String>, Vec<(PathBuf, i64)>);

/// An image folder: one sub-folder per class, classes numbered in sorted name order; files with
/// a `.jpg`/`.jpeg` extension, sorted. Returns (class names, (path, label) list).
pub fn list_image_folder(dir: &Path) -> Result<ImageFolder, DataError> {
    let read = |d: &Path| -> Result<Vec<PathBuf>, DataError> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d).map_err(|e| DataError::io(d, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        v.sort();
        Ok(v)
    };
    let classes: Vec<PathBuf> = read(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(DataError::Missing {
            dir: dir.into(),
            msg: "no class sub-folders (an image folder has one folder of JPEGs per class)".into(),
        });
    }
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        for f in read(class)? {
            let ext = f.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
            if ext == "jpg" || ext == "jpeg" {
                files.push((f, label as i64));
            }
        }
    }
    let names = classes.iter().map(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    Ok((names, files))
}

/// Writes the images of folder `from` into shards of `per_shard` samples in `to`
/// (`{prefix}-{i:05}-of-{n:05}.tar` or `.tfrecord`), in an order shuffled by `seed` so each shard
/// mixes classes, and records the shard lengths and class names beside them ([`layout`]) with
/// the split's sample index ([`index`]).
/// Returns the shard paths. Each shard is written to a temporary name and renamed.
pub fn pack_folder(
    from: &Path,
    to: &Path,
    format: ShardFormat,
    per_shard: usize,
    prefix: &str,
    seed: u64,
) -> Result<Vec<PathBuf>, DataError> {
    if per_shard == 0 {
        return Err(DataError::Config("--shard-size must be at least 1".into()));
    }
    let (classes, files) = list_image_folder(from)?;
    pack_files(from, files, &classes, to, &PackOptions { format, per_shard, prefix, seed }, &mut |_| {})
}

/// How [`pack_files`] writes shards.
#[derive(Clone, Copy, Debug)]
pub struct PackOptions<'a> {
    /// WebDataset tar or TFRecord.
    pub format: ShardFormat,
    /// Samples per shard.
    pub per_shard: usize,
    /// Shard name prefix (`train`, `validation`: it names the split).
    pub prefix: &'a str,
    /// Seed of the order the samples are written in.
    pub seed: u64,
}

/// [`pack_folder`] for a list already made: `files` are `(path, label)` under `from` (keys are
/// their paths relative to it), labels index `classes`; `packed(n)` hears of each shard's `n`
/// samples as it is written.
pub fn pack_files(
    from: &Path,
    mut files: Vec<(PathBuf, i64)>,
    classes: &[String],
    to: &Path,
    opts: &PackOptions,
    packed: &mut dyn FnMut(usize),
) -> Result<Vec<PathBuf>, DataError> {
    let PackOptions { format, per_shard, prefix, seed } = *opts;
    if per_shard == 0 {
        return Err(DataError::Config("--shard-size must be at least 1".into()));
    }
    let mut rng = ringsam_rng::Rng::new(seed);
    for i in (1..files.len()).rev() {
        files.swap(i, rng.below(i as u64 + 1) as usize);
    }
    std::fs::create_dir_all(to).map_err(|e| DataError::io(to, e))?;
    layout::check_classes(to, classes)?; // before writing anything
    let n = files.len().div_ceil(per_shard);
    let ext = match format {
        ShardFormat::TfRecord => "tfrecord",
        ShardFormat::Wds => "tar",
    };
    let mut out = Vec::new();
    for (i, chunk) in files.chunks(per_shard).enumerate() {
        let path = to.join(format!("{prefix}-{i:05}-of-{n:05}.{ext}"));
        let tmp = path.with_extension(format!("{ext}.tmp"));
        let io = |e| DataError::io(&tmp, e);
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let samples = chunk.iter().map(|(p, label)| {
            let image = crate::error::read_file(p, crate::shards::tfrecord::MAX_RECORD)?;
            // WebDataset splits a member's name at its first dot: keys must not contain one.
            let key = p.strip_prefix(from).unwrap_or(p).with_extension("").to_string_lossy().replace('\\', "/").replace('.', "_");
            Ok(Sample { key, image, label: *label })
        });
        let file = match format {
            ShardFormat::TfRecord => {
                let mut w = file;
                for s in samples {
                    tfrecord::write_record(&mut w, &tfrecord::encode_example(&s?)).map_err(io)?;
                }
                w
            }
            ShardFormat::Wds => {
                let mut w = wds::WdsWriter::new(file);
                for s in samples {
                    w.write(&s?).map_err(io)?;
                }
                w.finish().map_err(io)?
            }
        };
        file.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|e| DataError::io(&path, e))?;
        out.push(path);
        packed(chunk.len());
    }
    // The split's shard lengths and the class names, as TFDS records them (see [`layout`]).
    let split = layout::split_of(prefix).unwrap_or(prefix);
    let lengths: Vec<u64> = files.chunks(per_shard).map(|c| c.len() as u64).collect();
    layout::write_split_info(to, split, &lengths, classes)?;
    // Where each sample starts, so the loader can read any replica's share by offset.
    let index = index::SplitIndex { offsets: out.iter().map(|s| index::index_shard(s).0).collect(), shards: out.clone() };
    index::write_index(&index::index_path(to, split), &index)?;
    Ok(out)
}
