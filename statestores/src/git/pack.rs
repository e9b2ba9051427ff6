//! The objects of a push and the pack that carries them, for the in-process push
//! (`super::send_pack`).
//!
//! **Which objects.** The server already has `expected` (it advertised it as the branch head)
//! and everything reachable from it. We send the commits from `new` back to `expected` along
//! first parents (our commits have one parent) and, for each commit, the trees and blobs of its
//! tree that are not in its parent's tree at the same path: only subtrees whose ids differ are
//! entered, so one changed file among 10,000 is a commit, the trees on its path and one blob.
//! An object that is also elsewhere in the parent's tree (same content at another path) may be
//! sent although the server has it: harmless. What is not covered is left to the git CLI
//! ([`Selection::TooLarge`], [`Selection::Unsupported`]), which negotiates properly.
//!
//! **The pack** (`Documentation/gitformat-pack.txt`): `PACK`, version 2, the object count
//! (big-endian u32), then each object: a type-and-size header (type in bits 4-6 of the first
//! byte, size in 4 + 7·n bits, little-endian groups, high bit = more), the zlib stream of its
//! content; then the SHA-1 of everything before it. Objects go whole, except a blob of
//! [`DELTA_MIN`] bytes or more that replaced one at its path: it goes as a `REF_DELTA` against
//! that blob (the id of the base after the header, then the zlib stream of the delta) when the
//! delta is under half its size. The server has the base, so the pack is thin, as `git push`'s
//! are; receive-pack completes it. The delta is the common prefix and suffix copied and the
//! middle inserted: the ownership index, which changes with every change and is about 400
//! bytes per file, is then a few hundred bytes on the wire whatever the store's size.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;

use gix::ObjectId;
use gix::objs::Kind;

/// At most this many commits between the remote head and ours (a normal apply adds one).
pub const MAX_COMMITS: usize = 32;
/// At most this many objects go in an in-process pack; more is left to the git CLI, whose
/// pack-objects deltifies (a first sync of thousands of files).
pub const MAX_OBJECTS: usize = 2_000;
/// At most this many bytes of (uncompressed) object content in an in-process pack.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

/// Blobs at least this large that replace a blob at the same path may go as a delta.
pub const DELTA_MIN: usize = 4 * 1024;

/// One object to send.
#[derive(Debug)]
pub struct Object {
    /// Its type.
    pub kind: Kind,
    /// Its id (the pack does not carry it; tests and `Debug` read it).
    #[allow(dead_code)]
    pub id: ObjectId,
    /// Its content (without the loose object header).
    pub data: Vec<u8>,
    /// For a blob of [`DELTA_MIN`] bytes or more: the blob it replaced at its path, id and
    /// content, which the server has (a delta base).
    pub base: Option<(ObjectId, Vec<u8>)>,
}

/// What [`select`] found.
#[derive(Debug)]
pub enum Selection {
    /// The objects to send, commits first, each once.
    Objects(Vec<Object>),
    /// More than [`MAX_COMMITS`], [`MAX_OBJECTS`] or [`MAX_BYTES`]: let the git CLI push.
    TooLarge,
    /// A shape we do not handle (a merge commit, a root commit, `expected` not on the first
    /// parent chain): let the git CLI push. The text says which.
    Unsupported(String),
}

/// The objects `new` needs on a server that has `expected` (see the module docs).
///
/// # Errors
/// An object missing from or unreadable in `repo` (gix's error text).
pub fn select(
    repo: &gix::Repository,
    expected: ObjectId,
    new: ObjectId,
) -> Result<Selection, String> {
    let mut sel = Collector {
        repo,
        seen: HashSet::new(),
        out: Vec::new(),
        bytes: 0,
    };
    let mut commit_id = new;
    for _ in 0..MAX_COMMITS {
        let commit = find(repo, commit_id)?;
        let decoded = gix::objs::CommitRef::from_bytes(&commit, repo.object_hash())
            .map_err(|e| format!("commit {commit_id}: {e}"))?;
        let tree = decoded.tree();
        let parents: Vec<ObjectId> = decoded.parents().collect();
        drop(decoded);
        let [parent] = parents[..] else {
            return Ok(Selection::Unsupported(format!(
                "commit {commit_id} has {} parents",
                parents.len()
            )));
        };
        let parent_tree = {
            let data = find(repo, parent)?;
            gix::objs::CommitRef::from_bytes(&data, repo.object_hash())
                .map_err(|e| format!("commit {parent}: {e}"))?
                .tree()
        };
        if !sel.add(Kind::Commit, commit_id, commit) || !sel.tree(tree, Some(parent_tree))? {
            return Ok(Selection::TooLarge);
        }
        if parent == expected {
            return Ok(Selection::Objects(sel.out));
        }
        commit_id = parent;
    }
    Ok(Selection::TooLarge)
}

struct Collector<'r> {
    repo: &'r gix::Repository,
    seen: HashSet<ObjectId>,
    out: Vec<Object>,
    bytes: usize,
}

impl Collector<'_> {
    /// `false` when a limit is reached.
    fn add(&mut self, kind: Kind, id: ObjectId, data: Vec<u8>) -> bool {
        self.add_with_base(kind, id, data, None)
    }

    /// [`Collector::add`], with the blob this one replaced, as a delta base.
    fn add_with_base(
        &mut self,
        kind: Kind,
        id: ObjectId,
        data: Vec<u8>,
        base: Option<(ObjectId, Vec<u8>)>,
    ) -> bool {
        if self.seen.insert(id) {
            self.bytes += data.len() + base.as_ref().map_or(0, |b| b.1.len());
            self.out.push(Object {
                kind,
                id,
                data,
                base,
            });
        }
        self.out.len() <= MAX_OBJECTS && self.bytes <= MAX_BYTES
    }

    /// Add tree `new` and what in it differs from `old` (by path); `false` at a limit.
    fn tree(&mut self, new: ObjectId, old: Option<ObjectId>) -> Result<bool, String> {
        if Some(new) == old || self.seen.contains(&new) {
            return Ok(true);
        }
        let new_data = find(self.repo, new)?;
        let new_entries = entries(new, &new_data)?;
        let old_entries: HashMap<Vec<u8>, (bool, ObjectId)> = match old {
            Some(old) => entries(old, &find(self.repo, old)?)?
                .into_iter()
                .map(|(name, is_tree, _, id)| (name, (is_tree, id)))
                .collect(),
            None => HashMap::new(),
        };
        if !self.add(Kind::Tree, new, new_data) {
            return Ok(false);
        }
        for (name, is_tree, is_commit, id) in new_entries {
            // A submodule's commit lives in another repository.
            if is_commit {
                continue;
            }
            let before = old_entries.get(&name);
            if before.is_some_and(|(_, old_id)| *old_id == id) {
                continue;
            }
            let within = if is_tree {
                let old_sub = before.filter(|(t, _)| *t).map(|(_, id)| *id);
                self.tree(id, old_sub)?
            } else if self.seen.contains(&id) {
                true
            } else {
                let data = find(self.repo, id)?;
                // The blob this one replaced at its path: the server has it (or gets it in
                // this pack), so a large one may go as a delta against it.
                let base = match before {
                    Some((false, old_id)) if data.len() >= DELTA_MIN => {
                        Some((*old_id, find(self.repo, *old_id)?))
                    }
                    _ => None,
                };
                self.add_with_base(Kind::Blob, id, data, base)
            };
            if !within {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// `(name, is tree, is submodule commit, id)` of each entry of tree `id`.
type Entry = (Vec<u8>, bool, bool, ObjectId);

fn entries(id: ObjectId, data: &[u8]) -> Result<Vec<Entry>, String> {
    gix::objs::TreeRefIter::from_bytes(data, id.kind())
        .map(|e| {
            let e = e.map_err(|e| format!("tree {id}: {e}"))?;
            Ok((
                e.filename.to_vec(),
                e.mode.is_tree(),
                e.mode.is_commit(),
                e.oid.to_owned(),
            ))
        })
        .collect()
}

fn find(repo: &gix::Repository, id: ObjectId) -> Result<Vec<u8>, String> {
    repo.find_object(id)
        .map(|o| o.detach().data)
        .map_err(|e| format!("object {id}: {e}"))
}

/// A version 2 pack of `objects` (see the module docs). With `thin`, a blob that has a base
/// goes as a `REF_DELTA` against it when the delta is under half its size (the server has the
/// base: a thin pack, which receive-pack completes; only when it does not advertise
/// `no-thin`); everything else undeltified.
///
/// # Errors
/// Only compression errors (none in practice: the output is a `Vec`).
pub fn write(objects: &[Object], thin: bool) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + objects.iter().map(|o| o.data.len()).sum::<usize>());
    out.extend_from_slice(b"PACK");
    out.extend_from_slice(&2u32.to_be_bytes());
    let count = u32::try_from(objects.len()).map_err(std::io::Error::other)?;
    out.extend_from_slice(&count.to_be_bytes());
    for o in objects {
        let delta = o
            .base
            .as_ref()
            .filter(|_| thin)
            .map(|(base_id, base)| (base_id, delta(base, &o.data)))
            .filter(|(_, d)| d.len() < o.data.len() / 2);
        let (type_bits, data) = match &delta {
            Some((_, d)) => (7, d.as_slice()), // OBJ_REF_DELTA
            None => (super::objects::type_bits(o.kind), o.data.as_slice()),
        };
        entry_header(&mut out, type_bits, data.len());
        if let Some((base_id, _)) = &delta {
            out.extend_from_slice(base_id.as_slice());
        }
        let mut z = flate2::write::ZlibEncoder::new(&mut out, flate2::Compression::fast());
        z.write_all(data)?;
        z.finish()?;
    }
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(&out);
    let digest = hasher.try_finalize().map_err(std::io::Error::other)?;
    out.extend_from_slice(digest.as_slice());
    Ok(out)
}

/// Appends a pack entry's type-and-size header: the type in bits 4-6 of the first byte, the
/// size in 4 + 7·n bits, little-endian groups, the high bit meaning "more".
pub(super) fn entry_header(out: &mut Vec<u8>, type_bits: u8, size: usize) {
    let mut size = size;
    let mut byte = (type_bits << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size != 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// A git delta (`gitformat-pack.txt`, "Deltified representation") turning `base` into
/// `target`: the common prefix and suffix are copied from `base`, the middle inserted. One
/// change in a large file (the ownership index) is a few instructions.
pub fn delta(base: &[u8], target: &[u8]) -> Vec<u8> {
    let prefix = prefix_len(base, target);
    let suffix = suffix_len(base, target, base.len().min(target.len()) - prefix);
    let mut out = Vec::new();
    varint(&mut out, base.len());
    varint(&mut out, target.len());
    copy(&mut out, 0, prefix);
    for chunk in target[prefix..target.len() - suffix].chunks(0x7f) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    copy(&mut out, base.len() - suffix, suffix);
    out
}

/// Compared a block at a time (`memcmp`) before byte by byte.
const BLOCK: usize = 4096;

/// How many leading bytes `a` and `b` share.
fn prefix_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many trailing bytes `a` and `b` share, at most `max`.
fn suffix_len(a: &[u8], b: &[u8], max: usize) -> usize {
    let (la, lb) = (a.len(), b.len());
    let mut i = 0;
    while i + BLOCK <= max && a[la - i - BLOCK..la - i] == b[lb - i - BLOCK..lb - i] {
        i += BLOCK;
    }
    i + a[..la - i]
        .iter()
        .rev()
        .zip(b[..lb - i].iter().rev())
        .take(max - i)
        .take_while(|(x, y)| x == y)
        .count()
}

/// A delta header size: 7 bits at a time, least significant first, high bit = more.
fn varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Copy instructions for `len` bytes of the base from `offset`: at most 0xffffff each, the
/// offset and size bytes present only when not zero.
fn copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let n = len.min(0xff_ffff);
        let at = out.len();
        out.push(0x80);
        for i in 0..4 {
            let b = ((offset >> (8 * i)) & 0xff) as u8;
            if b != 0 {
                out[at] |= 1 << i;
                out.push(b);
            }
        }
        for i in 0..3 {
            let b = ((n >> (8 * i)) & 0xff) as u8;
            if b != 0 {
                out[at] |= 0x10 << i;
                out.push(b);
            }
        }
        offset += n;
        len -= n;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// `git index-pack ARGS` in `dir` with `pack` on stdin; panics with git's stderr unless
    /// it succeeds (a real git accepts what we wrote).
    fn index_pack(dir: &std::path::Path, args: &[&str], pack: &[u8]) {
        let mut child = Command::new("git")
            .arg("index-pack")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("index-pack");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(pack)
            .expect("write");
        let res = child.wait_with_output().expect("wait");
        assert!(
            res.status.success(),
            "index-pack: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }

    /// `git -C dir ARGS` without the user's or system's config; its stdout, trimmed. Panics
    /// with git's stderr unless it succeeds.
    pub(in crate::git) fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A repository with a deep tree of `files` files, one commit, then a second commit that
    /// changes one file deep down and adds one: (repo dir, first commit, second commit).
    fn two_commits(files: usize) -> (tempfile::TempDir, ObjectId, ObjectId) {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path();
        git(p, &["init", "-q", "-b", "main"]);
        git(p, &["config", "user.name", "t"]);
        git(p, &["config", "user.email", "t@example.com"]);
        for i in 0..files {
            let d = p.join(format!("d{}/e{}", i % 7, i % 3));
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join(format!("f{i}.yaml")), format!("n: {i}\n")).expect("write");
        }
        git(p, &["add", "-A"]);
        git(p, &["commit", "-q", "-m", "one"]);
        let first = git(p, &["rev-parse", "HEAD"]);
        std::fs::write(p.join("d1/e1/f1.yaml"), "n: changed\n").expect("write");
        std::fs::create_dir_all(p.join("new/dir")).expect("mkdir");
        // 300 bytes: a size header of more than one byte.
        std::fs::write(p.join("new/dir/x.yaml"), "x".repeat(300)).expect("write");
        git(p, &["add", "-A"]);
        git(p, &["commit", "-q", "-m", "two"]);
        let second = git(p, &["rev-parse", "HEAD"]);
        (
            dir,
            ObjectId::from_hex(first.as_bytes()).expect("oid"),
            ObjectId::from_hex(second.as_bytes()).expect("oid"),
        )
    }

    /// The selection of one change is the commit, the trees on the two changed paths and the
    /// two blobs; a real `git index-pack` accepts our pack of them and finds exactly those
    /// objects, and `git verify-pack` checks its trailer.
    #[test]
    fn one_change_is_a_handful_of_objects_in_a_pack_git_accepts() {
        let (dir, first, second) = two_commits(200);
        let repo = gix::open(dir.path()).expect("open");
        let Selection::Objects(objects) = select(&repo, first, second).expect("select") else {
            panic!("not selected")
        };
        // commit; trees: root, d1, d1/e1, new, new/dir; blobs: f1, x.
        assert_eq!(objects.len(), 8, "{objects:?}");
        assert_eq!(objects[0].id, second);
        let pack = write(&objects, false).expect("pack");

        let out = tempfile::tempdir().expect("tmp");
        let pack_path = out.path().join("p.pack");
        index_pack(
            dir.path(),
            &["--strict", "--stdin", &pack_path.to_string_lossy()],
            &pack,
        );
        let listed = git(
            dir.path(),
            &["verify-pack", "-v", &pack_path.to_string_lossy()],
        );
        let mut ids: Vec<String> = listed
            .lines()
            .filter(|l| l.len() > 40 && l.as_bytes()[40] == b' ')
            .map(|l| l[..40].to_owned())
            .collect();
        ids.sort();
        let mut want: Vec<String> = objects.iter().map(|o| o.id.to_string()).collect();
        want.sort();
        assert_eq!(ids, want);
    }

    /// A large blob changed in the middle and one grown at its end go as deltas against the
    /// blobs they replaced: a repository that has only the first commit completes the thin
    /// pack with `git index-pack --fix-thin` and then has the second commit, byte for byte.
    #[test]
    fn large_changed_blobs_go_as_deltas_in_a_thin_pack_git_completes() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path();
        git(p, &["init", "-q", "-b", "main"]);
        git(p, &["config", "user.name", "t"]);
        git(p, &["config", "user.email", "t@example.com"]);
        let big = |change: &str| {
            (0..2000)
                .map(|i| {
                    if i == 1000 {
                        format!("entry {i}: {change}\n")
                    } else {
                        format!("entry {i}: 0123456789abcdef\n")
                    }
                })
                .collect::<String>()
        };
        std::fs::write(p.join("index.json"), big("before")).expect("write");
        std::fs::write(p.join("log.txt"), big("x")).expect("write");
        git(p, &["add", "-A"]);
        git(p, &["commit", "-q", "-m", "one"]);
        git(p, &["branch", "one"]);
        let first = ObjectId::from_hex(git(p, &["rev-parse", "HEAD"]).as_bytes()).expect("oid");
        std::fs::write(p.join("index.json"), big("after, and longer")).expect("write");
        std::fs::write(p.join("log.txt"), big("x") + "appended\n").expect("write");
        git(p, &["add", "-A"]);
        git(p, &["commit", "-q", "-m", "two"]);
        let second = ObjectId::from_hex(git(p, &["rev-parse", "HEAD"]).as_bytes()).expect("oid");

        let repo = gix::open(p).expect("open");
        let Selection::Objects(objects) = select(&repo, first, second).expect("select") else {
            panic!("not selected")
        };
        assert_eq!(objects.iter().filter(|o| o.base.is_some()).count(), 2);
        let thin = write(&objects, true).expect("pack");
        let whole = write(&objects, false).expect("pack");
        assert!(
            thin.len() < 1000 && thin.len() * 4 < whole.len(),
            "{} {}",
            thin.len(),
            whole.len()
        );

        let server = tempfile::tempdir().expect("tmp");
        let s = server.path();
        git(s, &["init", "-q", "--bare"]);
        git(
            s,
            &["fetch", "-q", &p.to_string_lossy(), "one:refs/heads/main"],
        );
        index_pack(s, &["--strict", "--stdin", "--fix-thin"], &thin);
        git(s, &["update-ref", "refs/heads/main", &second.to_string()]);
        git(s, &["fsck", "--strict"]);
        for (file, content) in [
            ("index.json", big("after, and longer")),
            ("log.txt", big("x") + "appended\n"),
        ] {
            let got = git(s, &["cat-file", "blob", &format!("main:{file}")]);
            assert_eq!(got, content.trim_end(), "{file}");
        }
    }

    /// Prefix and suffix never overlap, across block boundaries too.
    #[test]
    fn prefix_and_suffix_lengths() {
        let a = vec![7u8; 10_000];
        let mut b = a.clone();
        b[5_000] = 8;
        assert_eq!(prefix_len(&a, &b), 5_000);
        assert_eq!(suffix_len(&a, &b, 10_000 - 5_000), 4_999);
        let longer = [a.as_slice(), &[7u8; 3]].concat();
        let p = prefix_len(&a, &longer);
        assert_eq!((p, suffix_len(&a, &longer, a.len() - p)), (10_000, 0));
        assert_eq!(prefix_len(b"", b"x"), 0);
    }

    /// A root commit or a head that is not on the chain is not ours to push in process.
    #[test]
    fn shapes_we_do_not_handle_are_left_to_the_cli() {
        let (dir, first, second) = two_commits(3);
        let repo = gix::open(dir.path()).expect("open");
        // `first` has no parent: the chain from it never reaches `second`.
        assert!(matches!(
            select(&repo, second, first).expect("select"),
            Selection::Unsupported(_)
        ));
    }

    /// More changed objects than [`MAX_OBJECTS`] is left to the CLI.
    #[test]
    fn a_large_change_is_left_to_the_cli() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path();
        git(p, &["init", "-q", "-b", "main"]);
        git(p, &["config", "user.name", "t"]);
        git(p, &["config", "user.email", "t@example.com"]);
        std::fs::write(p.join("a"), "a").expect("write");
        git(p, &["add", "-A"]);
        git(p, &["commit", "-q", "-m", "one"]);
        let first = ObjectId::from_hex(git(p, &["rev-parse", "HEAD"]).as_bytes()).expect("oid");
        for i in 0..=MAX_OBJECTS {
            std::fs::write(p.join(format!("f{i}")), format!("{i}")).expect("write");
        }
        git(p, &["add", "-A"]);
        git(p, &["commit", "-q", "-m", "two"]);
        let second = ObjectId::from_hex(git(p, &["rev-parse", "HEAD"]).as_bytes()).expect("oid");
        let repo = gix::open(p).expect("open");
        assert!(matches!(
            select(&repo, first, second).expect("select"),
            Selection::TooLarge
        ));
    }
}
