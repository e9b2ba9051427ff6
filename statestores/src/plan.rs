//! The pure core of an apply: given what the branch head holds (every blob path with its git
//! object id, plus our ownership index) and the desired [`ChangeSet`], decide which blobs to
//! write and which paths to delete. No I/O happens here, so every rule is unit-tested.
//!
//! Rules (Kratix `nestedByMetadata` semantics, `kratix-contract.md` §4.1, plus drift repair):
//! - a [`PlacementWrite`] is the owner's complete file set: indexed files of that owner that are
//!   not listed are deleted;
//! - a removal deletes every indexed file of that owner (pruned and removed files are deleted
//!   even when someone edited them: the index says we own them and nothing produces them now);
//! - content whose git blob id equals the head's entry is left alone (counted as unchanged);
//! - an indexed file whose head blob id differs from the index (edited or deleted by someone
//!   else) is reported as drift and restored: from the desired content if the owner is in the
//!   change set, otherwise from the indexed blob, when the object database still has it;
//! - paths we never indexed are never touched unless a placement claims that exact path;
//! - when two placements in one change set claim one path, the later one wins (logged).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use gix::ObjectId;

use crate::index::{self, IndexEntry, Sha256Sum};
use crate::{ChangeSet, Drift, DriftKind, Error, Owner};

/// One blob to place at a path.
#[derive(Debug)]
pub struct Upsert<'a> {
    /// Repository path (borrowed from the change set where it can be).
    pub path: Cow<'a, str>,
    /// Git blob id of the content.
    pub oid: ObjectId,
    /// What to write ([`Plan::bytes`]).
    pub content: Content<'a>,
}

/// The content of an [`Upsert`].
#[derive(Debug)]
pub enum Content<'a> {
    /// These bytes (a file of the change set).
    Bytes(Cow<'a, [u8]>),
    /// The object is in the store's history already (drift restored): nothing to write.
    Existing,
    /// An ownership index file: the entries `Plan::index[range]` of `destination`, encoded
    /// again when written ([`index::encode`]). Kept as bytes, a cold pass's index files were
    /// held until the commit was written (4 MB at 10,000 entries).
    Index {
        /// The Destination whose index file this is.
        destination: String,
        /// Its entries in [`Plan::index`], sorted by path.
        range: std::ops::Range<usize>,
    },
}

/// Per-owner summary for the commit body and trailers.
#[derive(Debug, Clone)]
pub struct OwnerChange {
    /// The owner.
    pub owner: Arc<Owner>,
    /// Files written for it.
    pub written: usize,
    /// Files deleted for it.
    pub deleted: usize,
    /// Whether the whole placement was removed.
    pub removed: bool,
}

/// What one apply will do.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// Blobs to write (content files and index files).
    pub upserts: Vec<Upsert<'a>>,
    /// Paths to delete.
    pub removes: Vec<String>,
    /// Content files written (excludes index files).
    pub written: usize,
    /// Content files deleted (excludes index files).
    pub deleted: usize,
    /// Desired files already up to date.
    pub unchanged: usize,
    /// Drift found (and repaired by this plan).
    pub drift: Vec<Drift>,
    /// Owners whose files change, keyed by owner key.
    pub changed: BTreeMap<String, OwnerChange>,
    /// The ownership index after the plan (every destination's entries).
    pub index: Vec<IndexEntry>,
}

impl Plan<'_> {
    /// `true` when applying the plan would not change the tree.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removes.is_empty()
    }

    /// The bytes of `u` (an upsert of this plan), whose Git blob id is `u.oid`; `None` when
    /// the object exists already ([`Content::Existing`]).
    pub fn bytes<'b>(&'b self, u: &'b Upsert<'_>) -> Option<Cow<'b, [u8]>> {
        match &u.content {
            Content::Bytes(b) => Some(Cow::Borrowed(b)),
            Content::Existing => None,
            Content::Index { destination, range } => Some(Cow::Owned(index::encode(
                destination,
                &self.index[range.clone()],
            ))),
        }
    }
}

/// Git blob id of `content` (SHA-1 object format).
pub fn blob_oid(content: &[u8]) -> ObjectId {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, content)
        .expect("sha1 hashing of an in-memory buffer cannot fail")
}

/// Lower-case hex sha256 of `content`.
pub fn sha256_hex(content: &[u8]) -> String {
    Sha256Sum::of(content).to_string()
}

/// The name rules Git itself applies to every tree entry, as the Git writer checks them with
/// gix's rules (`core.protectNTFS` on), plus `core.protectHFS`: no empty, `.` or `..`
/// names and no name Git or a checkout on NTFS or HFS+ would take for `.git` (`.GIT`, `.git.`,
/// `.git::$INDEX_ALLOCATION`, `git~1`, `.g\u{200c}it`, …).
const GIT_NAME_RULES: gix::validate::path::component::Options =
    gix::validate::path::component::Options {
        protect_windows: false,
        protect_hfs: true,
        protect_ntfs: true,
    };

/// Reject what no state store can store, wherever it is placed: an empty or absolute path, NUL,
/// backslash, empty, `.` or `..` segments, and segments Git refuses (`.git` in any case or
/// disguise, see `GIT_NAME_RULES`). The one rule for store-relative paths, also applied to
/// `/kratix/output` paths before placement so one request's output fails that request alone.
pub fn validate_relative_path(path: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::InvalidPath {
            path: path.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("must be relative to the store root");
    }
    if path.contains('\0') || path.contains('\\') {
        return bad("contains NUL or backslash");
    }
    if path.chars().any(char::is_control) {
        // Git stores them, but Argo CD, Flux and every shell script that lists the files
        // break on a newline or tab in a name.
        return bad("contains a control character (newline, tab, …)");
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("empty, `.` or `..` segment");
        }
        if seg.eq_ignore_ascii_case(".git") {
            return bad("`.git` segment");
        }
        if let Err(e) = gix::validate::path::component(seg.into(), None, GIT_NAME_RULES) {
            return bad(&format!("segment {seg:?} is refused by Git: {e}"));
        }
    }
    Ok(())
}

/// Reject paths that are not safe, store-relative, `/`-separated file paths
/// ([`validate_relative_path`]), or that point into our own `.promised/` metadata. What the Git
/// writer checks before it plans anything.
pub fn validate_path(path: &str) -> Result<(), Error> {
    validate_relative_path(path)?;
    if path == ".promised" || path.starts_with(".promised/") {
        return Err(Error::InvalidPath {
            path: path.to_owned(),
            reason: "`.promised/` is reserved for promised's ownership index".into(),
        });
    }
    Ok(())
}

/// Destination names become index file names: one segment, no dots-only names.
pub fn validate_destination(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0')
    {
        return Err(Error::InvalidPath {
            path: name.to_owned(),
            reason: "destination name must be a single non-empty path segment".into(),
        });
    }
    Ok(())
}

/// Read every index file present in `head_files` (shards, and an earlier version's one file per
/// Destination: [`index::destination_of`]) via `read_blob` and return all entries.
pub fn load_index(
    head_files: &HashMap<String, ObjectId>,
    mut read_blob: impl FnMut(&ObjectId) -> Result<Vec<u8>, Error>,
) -> Result<Vec<IndexEntry>, Error> {
    let mut paths: Vec<&String> = head_files
        .keys()
        .filter(|p| index::destination_of(p).is_some())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let bytes = read_blob(&head_files[p])?;
        out.extend(index::decode(p, &bytes)?);
    }
    Ok(out)
}

/// An index entry ordered and looked up by its path alone (a set of them is a map from path
/// to entry without a second copy of each path).
struct ByPath(IndexEntry);

impl PartialEq for ByPath {
    fn eq(&self, other: &Self) -> bool {
        self.0.path == other.0.path
    }
}

impl Eq for ByPath {}

impl PartialOrd for ByPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.path.cmp(&other.0.path)
    }
}

impl std::borrow::Borrow<str> for ByPath {
    fn borrow(&self) -> &str {
        &self.0.path
    }
}

/// Compute the plan. `has_object` tells whether an indexed blob is still in the object database
/// (for restoring drift of placements that are not part of this change set). `old_index` is
/// taken, not copied: its entries move into [`Plan::index`] (at 10,000 files a copy was 5 MB
/// of a pass's peak; docs/benchmarks.md, "Memory", fifth round).
pub fn plan<'a>(
    head_files: &HashMap<String, ObjectId>,
    old_index: Vec<IndexEntry>,
    changes: &'a ChangeSet,
    has_object: impl Fn(&ObjectId) -> bool,
) -> Result<Plan<'a>, Error> {
    let mut p = Plan::default();

    // Validate input first: nothing is planned for an invalid change set.
    for w in &changes.writes {
        validate_destination(&w.owner.destination)?;
        for f in &w.files {
            validate_path(&f.path)?;
        }
    }

    let written_keys: BTreeSet<&str> = changes
        .writes
        .iter()
        .map(|w| w.owner.key.as_str())
        .collect();
    let removed_keys: BTreeSet<&str> = changes
        .removals
        .iter()
        .map(String::as_str)
        .filter(|k| !written_keys.contains(k))
        .collect();

    // The index we will commit, by path.
    let mut new_index: BTreeSet<ByPath> = old_index.into_iter().map(ByPath).collect();
    // Index shards (Destination, shard of the owner key) whose entries may change; the others
    // keep their file as it is (a one-request change re-encodes one shard of one Destination).
    let mut touched: BTreeSet<(String, u8)> = BTreeSet::new();
    let slot = |o: &Owner| (o.destination.clone(), index::shard_of(&o.key));

    let drift_kind = |e: &IndexEntry| -> Option<DriftKind> {
        match head_files.get(&e.path) {
            None => Some(DriftKind::Deleted),
            Some(h) if *h != e.oid => Some(DriftKind::Modified),
            Some(_) => None,
        }
    };

    // Desired files, last claim of a path wins.
    let mut desired: BTreeMap<&'a str, (&'a [u8], &'a Arc<Owner>)> = BTreeMap::new();
    for w in &changes.writes {
        for f in &w.files {
            if let Some((_, prev)) =
                desired.insert(f.path.as_str(), (f.content.as_slice(), &w.owner))
                && prev.key != w.owner.key
            {
                tracing::warn!(path = %f.path, first = %prev.key, second = %w.owner.key,
                    "two placements write the same path; the later one wins");
            }
        }
    }

    let touch = |p: &mut Plan<'a>, owner: &Arc<Owner>| {
        p.changed
            .entry(owner.key.clone())
            .or_insert_with(|| OwnerChange {
                owner: Arc::clone(owner),
                written: 0,
                deleted: 0,
                removed: false,
            });
    };

    // 1. Deletions: removed owners, and files of written owners they no longer produce.
    let mut gone = Vec::new();
    for ByPath(e) in &new_index {
        let key = e.owner.key.as_str();
        let is_removed = removed_keys.contains(key);
        let is_pruned = written_keys.contains(key) && !desired.contains_key(e.path.as_str());
        if !(is_removed || is_pruned) {
            continue;
        }
        // Another placement may have taken over the path in this change set.
        if desired.contains_key(e.path.as_str()) {
            continue;
        }
        gone.push(e.path.clone());
        touched.insert(slot(&e.owner));
        if head_files.contains_key(&e.path) {
            p.removes.push(e.path.clone());
            p.deleted += 1;
            touch(&mut p, &e.owner);
            let c = p.changed.get_mut(key).expect("just inserted");
            c.deleted += 1;
            c.removed |= is_removed;
        }
    }
    for path in gone {
        new_index.remove(path.as_str());
    }
    for key in &removed_keys {
        if let Some(c) = p.changed.get_mut(*key) {
            c.removed = true;
        }
    }

    // 2. Writes. The upserts are kept until the commit is written: sized here and before the
    // index files, not grown by doubling (0.5 MB of spare room at 10,000 files).
    p.upserts.reserve_exact(desired.len());
    for w in &changes.writes {
        touched.insert(slot(&w.owner));
    }
    for (path, (content, owner)) in &desired {
        let oid = blob_oid(content);
        let old = new_index.get(*path).map(|b| &b.0);
        if let Some(old) = old
            && old.owner.key != owner.key
        {
            touched.insert(slot(&old.owner));
        }
        if let Some(old) = old
            && let Some(kind) = drift_kind(old)
        {
            p.drift.push(Drift {
                path: (*path).to_owned(),
                owner: Owner::clone(&old.owner),
                kind,
            });
        }
        new_index.replace(ByPath(IndexEntry {
            path: (*path).to_owned(),
            sha256: Sha256Sum::of(content),
            oid,
            owner: Arc::clone(owner),
        }));
        if head_files.get(*path) == Some(&oid) {
            p.unchanged += 1;
            continue;
        }
        p.upserts.push(Upsert {
            path: Cow::Borrowed(path),
            oid,
            content: Content::Bytes(Cow::Borrowed(content)),
        });
        p.written += 1;
        touch(&mut p, owner);
        p.changed
            .get_mut(&owner.key)
            .expect("just inserted")
            .written += 1;
    }

    // 3. Drift of placements outside this change set: restore the indexed blob. (What is
    // left of the old index in `new_index` after 1 and 2 is its entries of owners neither
    // written nor removed, and the paths now desired, skipped here.)
    for ByPath(e) in &new_index {
        let key = e.owner.key.as_str();
        if written_keys.contains(key)
            || removed_keys.contains(key)
            || desired.contains_key(e.path.as_str())
        {
            continue;
        }
        let Some(kind) = drift_kind(e) else { continue };
        touched.insert(slot(&e.owner));
        p.drift.push(Drift {
            path: e.path.clone(),
            owner: Owner::clone(&e.owner),
            kind,
        });
        match e.oid {
            oid if has_object(&oid) => {
                p.upserts.push(Upsert {
                    path: Cow::Owned(e.path.clone()),
                    oid,
                    content: Content::Existing,
                });
                p.written += 1;
                touch(&mut p, &e.owner);
                p.changed.get_mut(key).expect("just inserted").written += 1;
            }
            _ => {
                tracing::warn!(path = %e.path, owner = %e.owner.key,
                    "owned file drifted and its original blob is not available; it is restored on the next write of its placement");
            }
        }
    }

    // 4. Index files, one per Destination and shard. Every other index file of the head (a
    // shard emptied, a Destination gone, an earlier version's one file per Destination) goes.
    let mut by_slot: BTreeMap<(String, u8), Vec<IndexEntry>> = BTreeMap::new();
    p.upserts.reserve_exact(touched.len());
    // The index is kept with the store's listing until the next apply: sized once, not grown
    // by doubling (up to 1 MB of spare room at 10,000 entries).
    p.index.reserve_exact(new_index.len());
    for ByPath(e) in new_index {
        by_slot.entry(slot(&e.owner)).or_default().push(e);
    }
    let mut stale: BTreeSet<&String> = head_files
        .keys()
        .filter(|p| index::destination_of(p).is_some())
        .collect();
    for (key, mut entries) in by_slot {
        let (dest, shard) = (&key.0, key.1);
        let path = index::index_path(dest, shard);
        let present = stale.remove(&path);
        if present && !touched.contains(&key) {
            p.index.extend(entries); // unchanged: its file stays
            continue;
        }
        let oid = blob_oid(&index::encode_sorted(dest, &mut entries));
        let start = p.index.len();
        p.index.extend(entries);
        if head_files.get(&path) != Some(&oid) {
            p.upserts.push(Upsert {
                path: Cow::Owned(path),
                oid,
                content: Content::Index {
                    destination: dest.clone(),
                    range: start..p.index.len(),
                },
            });
        }
    }
    p.removes.extend(stale.into_iter().cloned());
    p.drift.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileWrite, PlacementWrite};

    fn owner(key: &str, dest: &str) -> Owner {
        Owner {
            key: key.into(),
            destination: dest.into(),
            promise: "redis".into(),
            resource: Some("default/a".into()),
            pipeline: Some("configure".into()),
        }
    }

    fn write(key: &str, dest: &str, files: &[(&str, &str)]) -> PlacementWrite {
        PlacementWrite {
            owner: owner(key, dest).into(),
            files: files
                .iter()
                .map(|(p, c)| FileWrite {
                    path: (*p).into(),
                    content: c.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    /// Apply a plan to an in-memory "tree" (path -> content) to simulate commits.
    fn apply_to(
        tree: &mut HashMap<String, Vec<u8>>,
        p: &Plan<'_>,
        store: &HashMap<ObjectId, Vec<u8>>,
    ) {
        for r in &p.removes {
            tree.remove(r);
        }
        for u in &p.upserts {
            let c = match p.bytes(u) {
                Some(c) => c.to_vec(),
                None => store[&u.oid].clone(),
            };
            assert_eq!(blob_oid(&c), u.oid, "{}", u.path);
            tree.insert(u.path.to_string(), c);
        }
    }

    fn files_of(tree: &HashMap<String, Vec<u8>>) -> HashMap<String, ObjectId> {
        tree.iter().map(|(k, v)| (k.clone(), blob_oid(v))).collect()
    }

    /// The index shard of placement `key` on `dest`.
    fn shard(dest: &str, key: &str) -> String {
        index::index_path(dest, index::shard_of(key))
    }

    fn index_of(tree: &HashMap<String, Vec<u8>>) -> Vec<IndexEntry> {
        load_index(&files_of(tree), |oid| {
            Ok(tree.values().find(|v| blob_oid(v) == *oid).unwrap().clone())
        })
        .unwrap()
    }

    thread_local! {
        /// Every blob ever seen, like a repository's history.
        static HISTORY: std::cell::RefCell<HashMap<ObjectId, Vec<u8>>> = Default::default();
    }

    fn run(
        tree: &mut HashMap<String, Vec<u8>>,
        cs: &ChangeSet,
    ) -> (usize, usize, usize, Vec<Drift>, bool) {
        HISTORY.with(|h| {
            h.borrow_mut()
                .extend(tree.values().map(|v| (blob_oid(v), v.clone())))
        });
        let objects: HashMap<ObjectId, Vec<u8>> = HISTORY.with(|h| h.borrow().clone());
        let idx = index_of(tree);
        let p = plan(&files_of(tree), idx.clone(), cs, |o| {
            objects.contains_key(o)
        })
        .unwrap();
        let r = (
            p.written,
            p.deleted,
            p.unchanged,
            p.drift.clone(),
            p.is_empty(),
        );
        apply_to(tree, &p, &objects);
        HISTORY.with(|h| {
            h.borrow_mut()
                .extend(tree.values().map(|v| (blob_oid(v), v.clone())))
        });
        r
    }

    #[test]
    fn write_reapply_prune_remove() {
        let mut tree = HashMap::new();
        tree.insert("README.md".to_string(), b"theirs".to_vec());
        let cs = ChangeSet {
            writes: vec![
                write("a", "d1", &[("d1/a/x.yaml", "x"), ("d1/a/y.yaml", "y")]),
                write("b", "d2", &[("d2/b/z.yaml", "z")]),
            ],
            ..Default::default()
        };
        let (w, d, u, drift, empty) = run(&mut tree, &cs);
        assert_eq!((w, d, u, drift.len(), empty), (3, 0, 0, 0, false));
        assert!(tree.contains_key(&shard("d1", "a")));
        assert!(tree.contains_key(&shard("d2", "b")));
        assert_eq!(shard("d2", "b"), ".promised/index/d2/e5.json");

        let (w, d, u, _, empty) = run(&mut tree, &cs);
        assert_eq!((w, d, u, empty), (0, 0, 3, true));

        let prune = ChangeSet {
            writes: vec![write("a", "d1", &[("d1/a/x.yaml", "x2")])],
            ..Default::default()
        };
        let (w, d, u, _, _) = run(&mut tree, &prune);
        assert_eq!((w, d, u), (1, 1, 0));
        assert!(!tree.contains_key("d1/a/y.yaml"));

        let remove = ChangeSet {
            removals: vec!["b".into()],
            ..Default::default()
        };
        let (w, d, _, _, _) = run(&mut tree, &remove);
        assert_eq!((w, d), (0, 1));
        assert!(!tree.contains_key("d2/b/z.yaml"));
        assert!(
            !tree.contains_key(&shard("d2", "b")),
            "an emptied shard goes"
        );
        assert_eq!(tree["README.md"], b"theirs");
    }

    #[test]
    fn only_the_touched_shard_of_the_index_is_rewritten() {
        let mut tree = HashMap::new();
        let cs = ChangeSet {
            writes: vec![
                write("a", "d1", &[("d1/a/x.yaml", "x")]),
                write("c", "d1", &[("d1/c/z.yaml", "z")]),
                write("b", "d2", &[("d2/b/y.yaml", "y")]),
            ],
            ..Default::default()
        };
        run(&mut tree, &cs);
        assert_ne!(shard("d1", "a"), shard("d1", "c"));
        let before = tree.clone();
        let only_a = ChangeSet {
            writes: vec![write("a", "d1", &[("d1/a/x.yaml", "x2")])],
            ..Default::default()
        };
        let idx = index_of(&tree);
        let p = plan(&files_of(&tree), idx.clone(), &only_a, |_| true).unwrap();
        let paths: Vec<&str> = p.upserts.iter().map(|u| &*u.path).collect();
        assert_eq!(paths, ["d1/a/x.yaml", shard("d1", "a").as_str()]);
        assert!(p.removes.is_empty(), "{:?}", p.removes);
        // The plan still knows the whole index (the store caches it for the next apply).
        assert_eq!(p.index.len(), 3);
        let store = HashMap::new();
        apply_to(&mut tree, &p, &store);
        for untouched in [shard("d1", "c"), shard("d2", "b")] {
            assert_eq!(tree[&untouched], before[&untouched], "{untouched}");
        }
        assert_eq!(index_of(&tree).len(), 3);
    }

    #[test]
    fn an_earlier_versions_index_is_read_and_replaced_by_shards_on_the_next_write() {
        // Written by an earlier version: one file per Destination.
        let mut legacy = vec![
            IndexEntry {
                path: "d1/a/x.yaml".into(),
                sha256: Sha256Sum::of(b"x"),
                oid: blob_oid(b"x"),
                owner: owner("a", "d1").into(),
            },
            IndexEntry {
                path: "d1/c/z.yaml".into(),
                sha256: Sha256Sum::of(b"z"),
                oid: blob_oid(b"z"),
                owner: owner("c", "d1").into(),
            },
        ];
        let mut tree = HashMap::from([
            ("d1/a/x.yaml".to_string(), b"x".to_vec()),
            ("d1/c/z.yaml".to_string(), b"z".to_vec()),
            (
                ".promised/index/d1.json".to_string(),
                index::encode_sorted("d1", &mut legacy),
            ),
        ]);
        assert_eq!(index_of(&tree), legacy, "read as it is");
        // A change to placement a only: c's entry is not lost in the move.
        let only_a = ChangeSet {
            writes: vec![write("a", "d1", &[("d1/a/x.yaml", "x2")])],
            ..Default::default()
        };
        let (w, d, u, drift, _) = run(&mut tree, &only_a);
        assert_eq!((w, d, u, drift.len()), (1, 0, 0, 0));
        assert!(!tree.contains_key(".promised/index/d1.json"));
        let mut index_files: Vec<&String> = tree
            .keys()
            .filter(|p| p.starts_with(".promised/"))
            .collect();
        index_files.sort();
        assert_eq!(index_files, [&shard("d1", "a"), &shard("d1", "c")]);
        let now = index_of(&tree);
        assert_eq!(now.len(), 2);
        assert_eq!(now.iter().find(|e| e.owner.key == "c"), Some(&legacy[1]));
        assert_eq!(tree["d1/c/z.yaml"], b"z");
        // And the next pass with nothing new writes nothing.
        let (w, d, _, _, empty) = run(&mut tree, &only_a);
        assert_eq!((w, d, empty), (0, 0, true));
    }

    #[test]
    fn drift_is_restored_in_and_outside_the_change_set() {
        let mut tree = HashMap::new();
        let cs = ChangeSet {
            writes: vec![
                write("a", "d1", &[("d1/a/x.yaml", "x")]),
                write("b", "d1", &[("d1/b/y.yaml", "y")]),
            ],
            ..Default::default()
        };
        run(&mut tree, &cs);
        tree.insert("d1/a/x.yaml".into(), b"edited".to_vec());
        tree.remove("d1/b/y.yaml");
        tree.insert("d1/mine.yaml".into(), b"person".to_vec());
        // Only placement a is in this change set; b is restored from history.
        let only_a = ChangeSet {
            writes: vec![write("a", "d1", &[("d1/a/x.yaml", "x")])],
            ..Default::default()
        };
        let (w, d, _, drift, _) = run(&mut tree, &only_a);
        assert_eq!((w, d), (2, 0));
        assert_eq!(drift.len(), 2);
        assert_eq!(drift[0].kind, DriftKind::Modified);
        assert_eq!(drift[1].kind, DriftKind::Deleted);
        assert_eq!(tree["d1/a/x.yaml"], b"x");
        assert_eq!(tree["d1/b/y.yaml"], b"y");
        assert_eq!(tree["d1/mine.yaml"], b"person");
    }

    #[test]
    fn rejects_unsafe_paths() {
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            ".promised/index/x.json",
            "a/.git/config",
            "./a",
            "a/.GIT/config",
            "a/.git./config",
            "a/.git /config",
            "a/.git::$INDEX_ALLOCATION/config",
            "a/GIT~1/config",
            "a/.g\u{200c}it/config",
            "a\\b",
            "a\0b",
            "a/new\nline.yaml",
            "a/tab\there.yaml",
            "a/esc\u{1b}[0m.yaml",
        ] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        for good in [
            "dest/resources/ns/x.yaml",
            "a/.gitignore",
            "a/.github/x.yaml",
            "a/git/x",
            "a/.gitkeep",
            "a/x~",
            "a/b:c",
        ] {
            assert!(validate_path(good).is_ok(), "{good}");
        }
        assert!(validate_destination("a/b").is_err());
    }
}
