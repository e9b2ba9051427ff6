//! The new objects of one apply, written into our clone as they are produced
//! ([`super::repo::build_commit`]): a few as loose objects, more as one pack with its index,
//! streamed to disk one object at a time.
//!
//! **Why our own pack writer.** gix's bundle writer reads a pack back to index it: it inflates
//! and hashes every object again and keeps an entry of about 180 bytes per object until the
//! index is written (7 MB for the 40,000 objects of a cold pass over 10,000 requests), and the
//! objects had to be in memory to be counted for the pack header first. Here the ids are known
//! (the plan's blob ids; a tree's id is hashed as it is serialised), so an object is compressed
//! and appended as it is produced and only its id, offset and CRC-32 are kept, in a B-tree
//! by id ([`PackIndex`], about 55 bytes an object): it tells a repeated object, and is already
//! in the index's order (a hash set beside a list, sorted at the end, was 3.5 MB at 40,000
//! objects). The object count in the header is written last, and the file is read back once
//! for its SHA-1 trailer.
//!
//! **Formats** (git's `Documentation/gitformat-pack.txt`): the pack is `PACK`, version 2, the
//! object count, each object's type-and-size header and zlib stream (undeltified), then the
//! SHA-1 of all that. The index is version 2: `\377tOc`, version 2, a fan-out table of 256
//! cumulative counts by first id byte, the sorted ids, their CRC-32s (of the object's bytes in
//! the pack), their 31-bit offsets (or, with the high bit set, an index into a table of 64-bit
//! offsets), the pack's checksum and the index's own SHA-1. Both are written to temporary
//! files in `objects/pack/` and renamed to `pack-<checksum>.{pack,idx}`, the index last:
//! readers find a pack through its index, so none sees a partial one. A process killed before
//! the renames leaves only a `tmp_pack_*` file, which `git gc` removes.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::objs::Kind;

use crate::Error;

/// Above this many new objects one apply writes a single pack instead of loose objects (the
/// same threshold as git's `transfer.unpackLimit`): thousands of loose files are slow to write
/// and slow for `git push` to read back.
pub const PACK_THRESHOLD: usize = 100;

/// Where the objects of one apply go: kept (copied) until there are more than
/// [`PACK_THRESHOLD`], then a pack streamed to disk. Each id is written once.
pub(super) struct Objects<'r> {
    repo: &'r gix::Repository,
    sink: Sink,
}

/// Id → (offset in the pack, CRC-32 of its bytes in the pack) of each object of a pack.
type PackIndex = BTreeMap<ObjectId, (u64, u32)>;

enum Sink {
    /// Up to [`PACK_THRESHOLD`] objects, written loose by [`Objects::finish`].
    Few(Vec<(ObjectId, Kind, Vec<u8>)>),
    /// A pack being written.
    Pack(PackFile),
}

impl<'r> Objects<'r> {
    /// Nothing written yet.
    pub(super) fn new(repo: &'r gix::Repository) -> Self {
        Self {
            repo,
            sink: Sink::Few(Vec::new()),
        }
    }

    /// Adds object `id` of `kind` with `data` (its content, without the loose object header);
    /// `id` must be its id. An id already added is skipped.
    ///
    /// # Errors
    /// Creating or writing the pack's temporary file.
    pub(super) fn add(&mut self, id: ObjectId, kind: Kind, data: &[u8]) -> Result<(), Error> {
        debug_assert_eq!(
            gix::objs::compute_hash(self.repo.object_hash(), kind, data).ok(),
            Some(id)
        );
        let known = match &self.sink {
            Sink::Few(few) => few.iter().any(|(i, ..)| *i == id),
            Sink::Pack(pack) => pack.entries.contains_key(&id),
        };
        if known {
            return Ok(());
        }
        match &mut self.sink {
            Sink::Few(few) if few.len() < PACK_THRESHOLD => few.push((id, kind, data.to_vec())),
            Sink::Few(few) => {
                let dir = self.repo.common_dir().join("objects").join("pack");
                let mut pack = PackFile::create(&dir)?;
                for (id, kind, data) in std::mem::take(few) {
                    pack.append(id, kind, &data)?;
                }
                pack.append(id, kind, data)?;
                self.sink = Sink::Pack(pack);
            }
            Sink::Pack(pack) => pack.append(id, kind, data)?,
        }
        Ok(())
    }

    /// Writes what was added: loose objects, or the pack and its index. Returns how many
    /// objects were written.
    ///
    /// # Errors
    /// Writing an object, the pack or its index (the temporary pack is removed).
    pub(super) fn finish(self, secrets: &super::credentials::Secrets) -> Result<usize, Error> {
        let n = match &self.sink {
            Sink::Few(few) => few.len(),
            Sink::Pack(pack) => pack.entries.len(),
        };
        match self.sink {
            Sink::Few(few) => {
                for (i, (_, kind, data)) in few.iter().enumerate() {
                    if i == n / 2 {
                        crate::crash::point("git-tree-write");
                    }
                    gix::objs::Write::write_buf(self.repo, *kind, data)
                        .map_err(|e| Error::Repository(secrets.redact(&e.to_string())))?;
                }
            }
            Sink::Pack(pack) => {
                pack.finish()?;
                // The pack is on disk, its commit not yet published.
                crate::crash::point("git-tree-write");
            }
        }
        Ok(n)
    }
}

/// A pack being appended to in `objects/pack/`, and what its index needs of each object.
struct PackFile {
    dir: PathBuf,
    out: std::io::BufWriter<tempfile::NamedTempFile>,
    /// Bytes written so far (the next object's offset).
    offset: u64,
    /// Each object's offset and CRC-32 of its bytes in the pack.
    entries: PackIndex,
    /// The zlib stream of the object being appended (reused).
    buf: Vec<u8>,
}

/// Bytes of the pack header: `PACK`, version, object count.
const HEADER: usize = 12;

impl PackFile {
    fn create(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = tempfile::Builder::new()
            .prefix("tmp_pack_")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp);
        // The count is written by `finish`, once known.
        out.write_all(&pack_header(0))
            .map_err(|e| Error::io(dir, e))?;
        Ok(Self {
            dir: dir.to_owned(),
            out,
            offset: HEADER as u64,
            entries: PackIndex::new(),
            buf: Vec::new(),
        })
    }

    fn append(&mut self, id: ObjectId, kind: Kind, data: &[u8]) -> Result<(), Error> {
        let io = |e| Error::io(&self.dir, e);
        self.buf.clear();
        super::pack::entry_header(&mut self.buf, type_bits(kind), data.len());
        let mut z = flate2::write::ZlibEncoder::new(&mut self.buf, flate2::Compression::fast());
        z.write_all(data).map_err(io)?;
        z.finish().map_err(io)?;
        self.out.write_all(&self.buf).map_err(io)?;
        self.entries
            .insert(id, (self.offset, crc32fast::hash(&self.buf)));
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Completes the pack (count, trailer), writes its index and moves both into place.
    fn finish(self) -> Result<(), Error> {
        let dir = self.dir;
        let io = |e| Error::io(&dir, e);
        let count = u32::try_from(self.entries.len())
            .map_err(|_| Error::Repository("too many objects for one pack".into()))?;
        let mut file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.rewind().map_err(io)?;
        file.write_all(&pack_header(count)).map_err(io)?;
        file.rewind().map_err(io)?;
        let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut chunk).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&chunk[..n]);
        }
        let checksum = hasher
            .try_finalize()
            .map_err(|e| Error::Repository(format!("pack checksum: {e}")))?;
        file.write_all(checksum.as_slice()).map_err(io)?;
        let entries = self.entries;
        let mut idx = tempfile::Builder::new()
            .prefix("tmp_idx_")
            .tempfile_in(&dir)
            .map_err(io)?;
        {
            let mut w = std::io::BufWriter::new(idx.as_file_mut());
            write_index(&mut w, &entries, checksum.as_slice()).map_err(io)?;
            w.flush().map_err(io)?;
        }
        let name = format!("pack-{}", checksum.to_hex());
        let pack_path = dir.join(format!("{name}.pack"));
        let idx_path = dir.join(format!("{name}.idx"));
        file.persist(&pack_path)
            .map_err(|e| Error::io(&pack_path, e.error))?;
        idx.persist(&idx_path)
            .map_err(|e| Error::io(&idx_path, e.error))?;
        Ok(())
    }
}

fn pack_header(count: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(b"PACK");
    h[4..8].copy_from_slice(&2u32.to_be_bytes());
    h[8..].copy_from_slice(&count.to_be_bytes());
    h
}

/// The pack's type number of `kind` (`OBJ_COMMIT` 1, `OBJ_TREE` 2, `OBJ_BLOB` 3, `OBJ_TAG` 4).
pub(super) fn type_bits(kind: Kind) -> u8 {
    match kind {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    }
}

/// A version 2 pack index of `entries` for the pack with `checksum` (see the module docs), its
/// own SHA-1 last.
fn write_index(
    out: &mut impl std::io::Write,
    entries: &PackIndex,
    checksum: &[u8],
) -> std::io::Result<()> {
    let mut w = Hashing {
        out,
        hasher: gix::hash::hasher(gix::hash::Kind::Sha1),
    };
    w.write_all(b"\xfftOc")?;
    w.write_all(&2u32.to_be_bytes())?;
    let mut fanout = [0u32; 256];
    for id in entries.keys() {
        fanout[usize::from(id.as_slice()[0])] += 1;
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        w.write_all(&total.to_be_bytes())?;
    }
    for id in entries.keys() {
        w.write_all(id.as_slice())?;
    }
    for (_, crc) in entries.values() {
        w.write_all(&crc.to_be_bytes())?;
    }
    let mut large = Vec::new();
    for (offset, _) in entries.values() {
        let small = match u32::try_from(*offset) {
            Ok(o) if o < 0x8000_0000 => o,
            _ => {
                let i = u32::try_from(large.len()).map_err(std::io::Error::other)?;
                large.push(*offset);
                0x8000_0000 | i
            }
        };
        w.write_all(&small.to_be_bytes())?;
    }
    for offset in large {
        w.write_all(&offset.to_be_bytes())?;
    }
    w.write_all(checksum)?;
    let own = w.hasher.try_finalize().map_err(std::io::Error::other)?;
    w.out.write_all(own.as_slice())
}

/// Writes through to `out` and hashes what it wrote.
struct Hashing<'a, W: std::io::Write> {
    out: &'a mut W,
    hasher: gix::hash::Hasher,
}

impl<W: std::io::Write> std::io::Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::pack::tests::git;

    fn blob(repo: &gix::Repository, text: &str) -> (ObjectId, Vec<u8>) {
        let data = text.as_bytes().to_vec();
        let id = gix::objs::compute_hash(repo.object_hash(), Kind::Blob, &data).expect("hash");
        (id, data)
    }

    fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        v.sort();
        v
    }

    /// More objects than the threshold (one of them added twice, one of them larger than a
    /// one-byte size header) become one pack: `git verify-pack` accepts it, `git index-pack`
    /// indexes it to the very bytes of our index, `git fsck` finds every object, and no
    /// temporary file is left.
    #[test]
    fn many_objects_are_one_pack_whose_index_is_gits_own() {
        let dir = tempfile::tempdir().expect("tmp");
        git(dir.path(), &["init", "-q", "--bare", "r.git"]);
        let repo = gix::open(dir.path().join("r.git")).expect("open");
        let mut objects = Objects::new(&repo);
        let mut ids = Vec::new();
        for i in 0..=PACK_THRESHOLD + 20 {
            let (id, data) = blob(&repo, &format!("n: {i}\n{}", "x".repeat(i * 13)));
            objects.add(id, Kind::Blob, &data).expect("add");
            ids.push(id);
        }
        let (again, data) = blob(&repo, "n: 0\n");
        objects.add(again, Kind::Blob, &data).expect("add again");
        let n = objects.finish(&Default::default()).expect("finish");
        assert_eq!(n, PACK_THRESHOLD + 21);
        let pack_dir = dir.path().join("r.git/objects/pack");
        let packs = files(&pack_dir, "pack");
        let idxs = files(&pack_dir, "idx");
        assert_eq!((packs.len(), idxs.len()), (1, 1), "{packs:?} {idxs:?}");
        let leftovers: Vec<_> = std::fs::read_dir(&pack_dir)
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().starts_with("tmp_"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let ours = std::fs::read(&idxs[0]).expect("our index");
        let pack = packs[0].to_str().expect("utf-8");
        let verify = git(dir.path(), &["verify-pack", "-v", pack]);
        assert!(verify.contains(&format!("{}", ids[0])), "{verify}");
        let theirs_path = dir.path().join("theirs.idx");
        git(
            dir.path(),
            &[
                "index-pack",
                "-o",
                theirs_path.to_str().expect("utf-8"),
                pack,
            ],
        );
        assert!(ours == std::fs::read(&theirs_path).expect("git's index"));
        git(&dir.path().join("r.git"), &["fsck", "--strict"]);
        let listed = git(
            &dir.path().join("r.git"),
            &[
                "cat-file",
                "--batch-all-objects",
                "--batch-check=%(objectname)",
            ],
        );
        let mut want: Vec<String> = ids.iter().map(ToString::to_string).collect();
        want.sort();
        assert_eq!(listed.lines().collect::<Vec<_>>(), want);
        // The repository reads them back through the index.
        let (id, data) = blob(&repo, &format!("n: 100\n{}", "x".repeat(1300)));
        let repo = gix::open(dir.path().join("r.git")).expect("reopen");
        assert_eq!(repo.find_object(id).expect("found").data, data);
    }

    /// Up to the threshold, objects are written loose, each once.
    #[test]
    fn few_objects_are_loose() {
        let dir = tempfile::tempdir().expect("tmp");
        git(dir.path(), &["init", "-q", "--bare", "r.git"]);
        let repo = gix::open(dir.path().join("r.git")).expect("open");
        let mut objects = Objects::new(&repo);
        for i in 0..3 {
            let (id, data) = blob(&repo, &format!("n: {i}\n"));
            objects.add(id, Kind::Blob, &data).expect("add");
            objects.add(id, Kind::Blob, &data).expect("add twice");
        }
        assert_eq!(objects.finish(&Default::default()).expect("finish"), 3);
        let pack_dir = dir.path().join("r.git/objects/pack");
        assert!(files(&pack_dir, "pack").is_empty());
        let count = git(&dir.path().join("r.git"), &["count-objects", "-v"]);
        assert!(count.starts_with("count: 3\n"), "{count}");
    }

    /// Offsets of 2 GiB and more go to the index's table of 64-bit offsets, which gix reads
    /// back as the same offsets.
    #[test]
    fn large_offsets_go_to_the_64_bit_table() {
        let dir = tempfile::tempdir().expect("tmp");
        let entries: PackIndex = (0u8..6)
            .rev()
            .map(|i| {
                let mut raw = [0u8; 20];
                raw[0] = i * 40;
                raw[19] = i;
                let offset = [12, 0x7fff_ffff, 0x8000_0000, 5 << 32, 99, 1 << 40][usize::from(i)];
                (ObjectId::from_bytes_or_panic(&raw), (offset, u32::from(i)))
            })
            .collect();
        let path = dir.path().join("x.idx");
        let mut out = Vec::new();
        write_index(&mut out, &entries, &[7u8; 20]).expect("write");
        std::fs::write(&path, &out).expect("save");
        let idx = gix::odb::pack::index::File::at(&path, gix::hash::Kind::Sha1).expect("read");
        assert_eq!(idx.num_objects() as usize, entries.len());
        for (i, (id, (offset, crc))) in entries.iter().enumerate() {
            let i = u32::try_from(i).expect("small");
            assert_eq!(idx.oid_at_index(i), id.as_ref());
            assert_eq!(idx.pack_offset_at_index(i), *offset);
            assert_eq!(idx.crc32_at_index(i), Some(*crc));
        }
        assert!(
            idx.verify_checksum(
                &mut gix::progress::Discard,
                &std::sync::atomic::AtomicBool::new(false)
            )
            .is_ok()
        );
    }
}
