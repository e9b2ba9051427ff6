//! The new tree of an apply, built from the base tree and the plan's changes sorted by path
//! ([`super::repo::build_commit`]).
//!
//! One directory at a time, depth first: a directory's entries are read from the base tree
//! only when a change falls under it, edited, written through the caller's `out` and dropped
//! before its parent is written. At most one directory per level is held, where gix's tree
//! editor keeps every tree it touched until the end (10 MB at the 30,000 trees of a cold pass
//! over 10,000 requests). A directory whose entries do not change keeps its id and is not
//! written again.
//!
//! The result is the tree gix's editor builds from the same removals followed by the same
//! upserts (a test holds the two to the same ids), including its rules: an upsert under a path
//! whose component is a file replaces the file by a directory; a directory left empty is
//! dropped from its parent; removing what is not there does nothing. One shape is left to the
//! editor, where the order of operations matters: the same name changed both as a file and as
//! a directory in one apply ([`Conflict`]).

use std::collections::HashMap;

use gix::ObjectId;
use gix::objs::tree::{Entry, EntryKind};

use crate::Error;

/// The same name is changed both as a file and as a directory: let gix's editor apply the
/// changes in order.
#[derive(Debug)]
pub(super) struct Conflict;

/// One change: the blob to put at the path, or `None` to remove what is there.
pub(super) type Change<'a> = (&'a str, Option<ObjectId>);

/// The changes of `removes` followed by `upserts`, sorted by path as [`build`] takes them: a
/// path both removed and upserted is upserted (as applying the removals first would leave it).
pub(super) fn changes<'a>(
    removes: impl Iterator<Item = &'a str>,
    upserts: impl Iterator<Item = (&'a str, ObjectId)>,
) -> Vec<Change<'a>> {
    let mut changes: Vec<Change<'a>> = removes
        .map(|p| (p, None))
        .chain(upserts.map(|(p, id)| (p, Some(id))))
        .collect();
    // Stable: of two equal paths the removal stays first, and the later one is kept.
    changes.sort_by(|a, b| a.0.cmp(b.0));
    changes.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            *earlier = *later;
        }
        same
    });
    changes
}

/// Builds the tree of `base` with `changes` applied and returns its id, or [`Conflict`].
/// `changes` are sorted by path (byte order), each path once; paths are relative, `/`
/// separated, without empty components. Every new tree goes through `out`, children before
/// parents; `out` returns its id.
///
/// # Errors
/// Reading a tree of `base` (gix's error text, redacted by `err`), or what `out` returns.
pub(super) fn build(
    repo: &gix::Repository,
    base: ObjectId,
    changes: &[Change<'_>],
    out: &mut dyn FnMut(&gix::objs::Tree) -> Result<ObjectId, Error>,
    err: &dyn Fn(gix::Error) -> Error,
) -> Result<Result<ObjectId, Conflict>, Error> {
    let mut b = Builder { repo, out, err };
    Ok(match b.dir(Some(base), changes, 0)? {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Ok((b.out)(&gix::objs::Tree::empty())?),
        Err(c) => Err(c),
    })
}

struct Builder<'r, 'o> {
    repo: &'r gix::Repository,
    out: &'o mut dyn FnMut(&gix::objs::Tree) -> Result<ObjectId, Error>,
    err: &'o dyn Fn(gix::Error) -> Error,
}

/// What happens to one name of a directory.
enum Edit<'c, 'p> {
    /// A file put there (`Some`) or whatever is there removed (`None`).
    File(Option<ObjectId>),
    /// Changes under it as a directory (their paths continue at the offset).
    Dir(&'c [Change<'p>], usize),
}

impl Builder<'_, '_> {
    /// The directory `base` (or a new one) with `changes` applied, whose paths continue at byte
    /// `off`. `Ok(None)`: the directory is empty.
    fn dir(
        &mut self,
        base: Option<ObjectId>,
        changes: &[Change<'_>],
        off: usize,
    ) -> Result<Result<Option<ObjectId>, Conflict>, Error> {
        // The edits of this directory's names, in path order.
        let mut edits: Vec<(&str, Edit<'_, '_>)> = Vec::new();
        let mut i = 0;
        while i < changes.len() {
            let (path, op) = changes[i];
            let rel = &path[off..];
            match rel.find('/') {
                None => {
                    edits.push((rel, Edit::File(op)));
                    i += 1;
                }
                Some(k) => {
                    // Every path under `name/` follows (a prefix is a contiguous run in byte
                    // order).
                    let name = &rel[..=k];
                    let mut j = i + 1;
                    while j < changes.len() && changes[j].0[off..].starts_with(name) {
                        j += 1;
                    }
                    edits.push((&rel[..k], Edit::Dir(&changes[i..j], off + k + 1)));
                    i = j;
                }
            }
        }
        // A name edited twice is a file and a directory (paths are unique).
        let mut names: Vec<&str> = edits.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Ok(Err(Conflict));
        }
        drop(names);

        let empty = ObjectId::empty_tree(self.repo.object_hash());
        let mut entries: Vec<Entry> = match base {
            Some(id) if id != empty => {
                let tree = self.repo.find_tree(id).map_err(|e| (self.err)(e))?;
                let decoded = tree.decode().map_err(|e| (self.err)(e))?;
                gix::objs::Tree::from(decoded).entries
            }
            _ => Vec::new(),
        };
        let at: HashMap<Vec<u8>, usize> = if entries.is_empty() {
            HashMap::new()
        } else {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.filename.to_vec(), i))
                .collect()
        };
        let mut changed = false;
        let mut removed = Vec::new();
        for (name, edit) in edits {
            let existing = at.get(name.as_bytes()).copied();
            let new = match edit {
                Edit::File(None) => {
                    if let Some(i) = existing {
                        removed.push(i);
                        changed = true;
                    }
                    continue;
                }
                Edit::File(Some(oid)) => (EntryKind::Blob, oid),
                Edit::Dir(sub, sub_off) => {
                    let sub_base = existing
                        .filter(|i| entries[*i].mode.is_tree())
                        .map(|i| entries[i].oid);
                    // Only removals under a file: nothing to remove there.
                    if existing.is_some()
                        && sub_base.is_none()
                        && sub.iter().all(|(_, op)| op.is_none())
                    {
                        continue;
                    }
                    match self.dir(sub_base, sub, sub_off)? {
                        Err(c) => return Ok(Err(c)),
                        Ok(Some(id)) => (EntryKind::Tree, id),
                        Ok(None) => {
                            if let Some(i) = existing {
                                removed.push(i);
                                changed = true;
                            }
                            continue;
                        }
                    }
                }
            };
            let mode = new.0.into();
            match existing {
                Some(i) if entries[i].mode == mode && entries[i].oid == new.1 => {}
                Some(i) => {
                    entries[i].mode = mode;
                    entries[i].oid = new.1;
                    changed = true;
                }
                None => {
                    entries.push(Entry {
                        mode,
                        filename: name.into(),
                        oid: new.1,
                    });
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(Ok(base.filter(|id| *id != empty)));
        }
        drop(at);
        removed.sort_unstable();
        for i in removed.into_iter().rev() {
            entries.remove(i);
        }
        if entries.is_empty() {
            return Ok(Ok(None));
        }
        entries.sort();
        let tree = gix::objs::Tree { entries };
        Ok(Ok(Some((self.out)(&tree)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency for a test's random shapes).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % n
        }
        /// Names whose git order differs from byte order once one is a directory (`a` vs
        /// `a-b`, `a.b`, `a0`), at depth 1 to 3.
        fn path(&mut self) -> String {
            const NAMES: [&str; 6] = ["a", "a-b", "a.b", "a0", "b", "ab"];
            (0..=self.below(3))
                .map(|_| NAMES[self.below(NAMES.len())])
                .collect::<Vec<_>>()
                .join("/")
        }
    }

    fn blob_id(n: usize) -> ObjectId {
        gix::objs::compute_hash(
            gix::hash::Kind::Sha1,
            gix::objs::Kind::Blob,
            n.to_string().as_bytes(),
        )
        .expect("hash")
    }

    /// For hundreds of random base trees and change sets (files replaced by directories and
    /// back, removals of what is not there, directories emptied), the tree built here is the
    /// tree gix's editor builds from the removals and then the upserts, id for id; the shapes
    /// left to the editor are the ones where a name is both a file and a directory.
    #[test]
    fn builds_the_tree_gix_editor_builds() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = gix::init_bare(dir.path().join("r.git")).expect("init");
        let empty = ObjectId::empty_tree(repo.object_hash());
        let write = |t: &gix::objs::Tree| -> Result<ObjectId, Error> {
            Ok(repo.write_object(t).expect("write").detach())
        };
        let err = |e: gix::Error| Error::Repository(e.to_string());
        let mut rng = Lcg(7);
        let (mut compared, mut conflicts) = (0, 0);
        for round in 0..1000 {
            let mut ed = gix::objs::tree::Editor::new(
                gix::objs::Tree::empty(),
                &repo.objects,
                repo.object_hash(),
            );
            for _ in 0..rng.below(25) {
                ed.upsert(
                    rng.path().split('/'),
                    EntryKind::Blob,
                    blob_id(rng.below(5)),
                )
                .expect("upsert");
            }
            let base = ed.write(&mut |t: &gix::objs::Tree| write(t)).expect("base");
            let mut removes: Vec<String> = (0..rng.below(8)).map(|_| rng.path()).collect();
            let mut upserts: Vec<(String, ObjectId)> = (0..rng.below(8))
                .map(|_| (rng.path(), blob_id(rng.below(5))))
                .collect();
            removes.sort();
            removes.dedup();
            upserts.sort();
            upserts.dedup_by(|a, b| a.0 == b.0);

            let mut ed = gix::objs::tree::Editor::new(
                if base == empty {
                    gix::objs::Tree::empty()
                } else {
                    repo.find_tree(base)
                        .expect("base")
                        .decode()
                        .expect("decode")
                        .into()
                },
                &repo.objects,
                repo.object_hash(),
            );
            for p in &removes {
                ed.remove(p.split('/')).expect("remove");
            }
            for (p, id) in &upserts {
                ed.upsert(p.split('/'), EntryKind::Blob, *id)
                    .expect("upsert");
            }
            let want = ed
                .write(&mut |t: &gix::objs::Tree| write(t))
                .expect("editor");

            let changes = changes(
                removes.iter().map(String::as_str),
                upserts.iter().map(|(p, id)| (p.as_str(), *id)),
            );
            let mut out = |t: &gix::objs::Tree| write(t);
            match build(&repo, base, &changes, &mut out, &err).expect("build") {
                Ok(got) => {
                    assert_eq!(got, want, "round {round}: {removes:?} {upserts:?}");
                    compared += 1;
                }
                Err(Conflict) => conflicts += 1,
            }
        }
        assert!(compared > 250 && conflicts > 10, "{compared} {conflicts}");
    }
}
