//! Where every sample of a split starts in its shard: the per-shard record index that lets a
//! replica read just its own samples of a global batch by offset.
//!
//! Why: the epoch order is a function of (seed, epoch, global sample index) only, so that any
//! world size reads the same micro-batches ([`crate::epoch_order`]). A replica then needs random
//! access to samples, which TFRecord and tar files cannot give without knowing where records
//! start. The index is made by reading each shard once (what counting the samples already cost)
//! and lists only samples that read whole, so the epoch's length is exact even for a damaged
//! shard.
//!
//! File: `ringsam-index-{split}.bin` beside the shards (`ringsam data pack` writes it; a TFDS
//! directory gets it on first open, or keeps it in memory when the directory is read-only).
//! Layout, little-endian: magic `RSIDX001`; `u32` shard count; per shard `u16` name length, the
//! file name, `u64` shard size in bytes, `u64` sample count, that many `u64` offsets; last, the
//! CRC-32C of everything before it. A shard whose name or size differs from the file on disk is
//! indexed again (its entry is stale), so a re-packed shard cannot be read at old offsets.

use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Sample, ShardFormat, ShardReport, read_shard, tfrecord, wds};
use crate::DataError;
use crate::error::read_file;

const MAGIC: &[u8; 8] = b"RSIDX001";
/// Largest index file read: 64 MiB holds 8 M offsets (ImageNet's train split has 1.28 M).
const MAX_INDEX: u64 = 64 << 20;

/// The samples of one split: its shards and where each of their samples starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitIndex {
    /// Shard files, in split order.
    pub shards: Vec<PathBuf>,
    /// Per shard, the byte offset of each sample that reads whole.
    pub offsets: Vec<Vec<u64>>,
}

impl SplitIndex {
    /// Samples per shard.
    pub fn counts(&self) -> Vec<u64> {
        self.offsets.iter().map(|o| o.len() as u64).collect()
    }

    /// Samples in the split.
    pub fn len(&self) -> u64 {
        self.offsets.iter().map(|o| o.len() as u64).sum()
    }

    /// True when the split holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The index file of split `split` in `dir`.
pub fn index_path(dir: &Path, split: &str) -> PathBuf {
    dir.join(format!("ringsam-index-{split}.bin"))
}

/// One shard's entry: file name, size, offsets.
struct Entry {
    name: String,
    size: u64,
    offsets: Vec<u64>,
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn file_size(p: &Path) -> Result<u64, DataError> {
    Ok(std::fs::metadata(p).map_err(|e| DataError::io(p, e))?.len())
}

/// Reads `shard` once and lists where its whole samples start; `report` says what was skipped.
pub fn index_shard(shard: &Path) -> (Vec<u64>, ShardReport, Option<DataError>) {
    let mut offsets = Vec::new();
    match read_shard(shard, |at, _| {
        offsets.push(at);
        true
    }) {
        Ok(report) => (offsets, report, None),
        // Framing damage ends the shard: the samples before it stay usable, as when streaming.
        Err(e) => (offsets, ShardReport::default(), Some(e)),
    }
}

/// The index of `shards` (split `split` of `dir`): read from its file where the file's entries
/// match the shards on disk, the rest indexed by reading them (on `threads` threads), and the
/// file rewritten when anything was indexed. `log` hears progress and damage. A directory that
/// cannot be written keeps the index in memory (logged: it is rebuilt on every open).
pub fn open_or_build(
    dir: &Path,
    split: &str,
    shards: &[PathBuf],
    threads: usize,
    log: &(dyn Fn(String) + Sync),
) -> Result<SplitIndex, DataError> {
    let path = index_path(dir, split);
    let mut stored = match path.is_file().then(|| read_index(&path)) {
        Some(Ok(entries)) => entries,
        Some(Err(e)) => {
            log(format!("{e}: indexing again"));
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut offsets: Vec<Option<Vec<u64>>> = Vec::with_capacity(shards.len());
    for s in shards {
        let (name, size) = (file_name(s), file_size(s)?);
        offsets.push(stored.iter_mut().find(|e| e.name == name && e.size == size).map(|e| std::mem::take(&mut e.offsets)));
    }
    let missing: Vec<usize> = (0..shards.len()).filter(|&i| offsets[i].is_none()).collect();
    if !missing.is_empty() {
        log(format!(
            "indexing {} of {} {split} shards in {} (read once; where each sample starts)",
            missing.len(),
            shards.len(),
            dir.display()
        ));
        for (i, o) in missing.iter().zip(build(shards, &missing, threads, log)) {
            offsets[*i] = Some(o);
        }
    }
    let index = SplitIndex { shards: shards.to_vec(), offsets: offsets.into_iter().map(Option::unwrap_or_default).collect() };
    if !missing.is_empty()
        && let Err(e) = write_index(&path, &index)
    {
        log(format!("cannot save the {split} index ({e}); it is kept in memory and rebuilt on the next open"));
    }
    Ok(index)
}

/// Indexes shards `which` of `shards` on up to `threads` threads, logging every ten seconds.
fn build(shards: &[PathBuf], which: &[usize], threads: usize, log: &(dyn Fn(String) + Sync)) -> Vec<Vec<u64>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let last = Mutex::new(std::time::Instant::now());
    let out: Vec<Mutex<Vec<u64>>> = which.iter().map(|_| Mutex::new(Vec::new())).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, which.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = which.get(k) else { break };
                    let (offsets, report, err) = index_shard(&shards[i]);
                    for (at, why) in report.skipped {
                        log(format!("{}: offset {at}: skipped: {why}", shards[i].display()));
                    }
                    if let Some(e) = err {
                        log(format!("shard cut short at its damage: {e} ({} samples before it kept)", offsets.len()));
                    }
                    *out[k].lock().expect("never poisoned") = offsets;
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    let mut t = last.lock().expect("never poisoned");
                    if t.elapsed().as_secs() >= 10 {
                        log(format!("indexed {n}/{} shards", which.len()));
                        *t = std::time::Instant::now();
                    }
                }
            });
        }
    });
    out.into_iter().map(|m| m.into_inner().expect("never poisoned")).collect()
}

/// Writes `index` to `path` atomically (a temporary file, synced, renamed).
pub fn write_index(path: &Path, index: &SplitIndex) -> Result<(), DataError> {
    let mut b = Vec::with_capacity(16 + index.len() as usize * 8);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(index.shards.len() as u32).to_le_bytes());
    for (s, o) in index.shards.iter().zip(&index.offsets) {
        let name = file_name(s);
        let len = u16::try_from(name.len()).map_err(|_| DataError::Config(format!("{}: shard name too long to index", s.display())))?;
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&file_size(s)?.to_le_bytes());
        b.extend_from_slice(&(o.len() as u64).to_le_bytes());
        o.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("bin.tmp");
    let io = |e| DataError::io(&tmp, e);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&b).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

/// Reads an index file; every count is checked against the bytes left before anything is
/// allocated, and the checksum before anything is trusted.
fn read_index(path: &Path) -> Result<Vec<Entry>, DataError> {
    let b = read_file(path, MAX_INDEX)?;
    let bad = |at: usize, msg: String| DataError::format(path, at as u64, msg);
    if b.len() < MAGIC.len() + 8 || &b[..8] != MAGIC {
        return Err(bad(0, "not a ringsam shard index (delete it to rebuild)".into()));
    }
    let (body, tail) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        return Err(bad(body.len(), "index checksum mismatch: damaged (delete it to rebuild)".into()));
    }
    let mut at: usize = 8;
    let mut take = |n: usize, what: &str| -> Result<&[u8], DataError> {
        let s = at.checked_add(n).and_then(|end| body.get(at..end)).ok_or_else(|| bad(at, format!("index ends inside {what}")))?;
        at += n;
        Ok(s)
    };
    let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    let shards = u32::from_le_bytes(take(4, "the shard count")?.try_into().expect("4 bytes")) as usize;
    let mut out = Vec::with_capacity(shards.min(body.len() / 18));
    for _ in 0..shards {
        let len = u16::from_le_bytes(take(2, "a name length")?.try_into().expect("2 bytes")) as usize;
        let name = String::from_utf8_lossy(take(len, "a shard name")?).into_owned();
        let size = u64_of(take(8, "a shard size")?);
        let n = u64_of(take(8, "a sample count")?);
        let bytes = usize::try_from(n).ok().and_then(|n| n.checked_mul(8)).unwrap_or(usize::MAX);
        let raw = take(bytes, &format!("the offsets of {name} ({n} claimed)"))?;
        out.push(Entry { name, size, offsets: raw.chunks_exact(8).map(u64_of).collect() });
    }
    Ok(out)
}

/// Reads the one sample that starts at `offset` of `shard` (an offset from its index).
pub fn read_sample_at(shard: &Path, file: &std::fs::File, offset: u64) -> Result<Sample, DataError> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset)).map_err(|e| DataError::io(shard, e))?;
    let r = BufReader::with_capacity(64 << 10, f);
    let wrong = |what: String| DataError::format(shard, offset, format!("{what} (the index is stale? delete it to rebuild)"));
    match ShardFormat::of(shard)? {
        ShardFormat::TfRecord => match tfrecord::TfRecordReader::starting_at(r, shard, offset).next_record()? {
            Some(tfrecord::Next::Record(_, data)) => tfrecord::decode_example(&data).map_err(wrong),
            Some(tfrecord::Next::Corrupt(_, why)) => Err(wrong(why)),
            None => Err(wrong("no record here".into())),
        },
        ShardFormat::Wds => match wds::WdsReader::starting_at(r, shard, offset).next_sample()? {
            Some(wds::Next::Sample(_, s)) => Ok(s),
            Some(wds::Next::Skipped(_, why)) => Err(wrong(why)),
            None => Err(wrong("no sample here".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_or_corrupted_index_is_refused_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("train-0.tfrecord");
        let mut bytes = Vec::new();
        for label in 0..3 {
            let s = Sample { key: format!("k{label}"), image: vec![label as u8; 10], label };
            tfrecord::write_record(&mut bytes, &tfrecord::encode_example(&s)).unwrap();
        }
        std::fs::write(&shard, &bytes).unwrap();
        let quiet = |_: String| {};
        let index = open_or_build(dir.path(), "train", std::slice::from_ref(&shard), 1, &quiet).unwrap();
        assert_eq!(index.offsets, vec![vec![0, bytes.len() as u64 / 3, 2 * bytes.len() as u64 / 3]]);
        let file = std::fs::File::open(&shard).unwrap();
        assert_eq!(read_sample_at(&shard, &file, index.offsets[0][2]).unwrap().label, 2);
        assert!(read_sample_at(&shard, &file, 3).is_err(), "not a record start");
        let path = index_path(dir.path(), "train");
        let good = std::fs::read(&path).unwrap();
        // A count that claims more offsets than the file holds, with a valid checksum.
        let mut lying = good[..good.len() - 4].to_vec();
        let n_at = 8 + 4 + 2 + "train-0.tfrecord".len() + 8;
        lying[n_at..n_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&lying);
        lying.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &lying).unwrap();
        let err = read_index(&path).err().unwrap().to_string();
        assert!(err.contains("index ends inside the offsets"), "{err}");
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(read_index(&path).err().unwrap().to_string().contains("checksum"));
        // A re-written shard (another size) is indexed again rather than read at old offsets.
        std::fs::write(&path, &good).unwrap();
        std::fs::write(&shard, &bytes[..2 * bytes.len() / 3]).unwrap();
        let again = open_or_build(dir.path(), "train", std::slice::from_ref(&shard), 1, &quiet).unwrap();
        assert_eq!(again.len(), 2);
    }
}
