//! Ownership index files deleted by someone else: re-adopted from the last commit this clone
//! applied.
//!
//! Without its index file, a Destination's files look like files we never wrote: the plan
//! would neither restore them nor ever prune them (orphans), and edits to them would stay.
//! So after each publish the clone keeps [`APPLIED_REF`] at the commit it applied, and when the
//! branch head lacks an index file that commit had, its entries are taken from that commit:
//! the plan then restores the index and every indexed file that was deleted or edited (drift),
//! from the desired content or from the indexed blob (which the clone has: it wrote it).
//!
//! An index file deleted together with every file it lists is a person letting that
//! Destination's files go (README "Deletion": after a `cleanup: none` removal), and stands.
//! Only an outside edit is undone: when a commit between the head and [`APPLIED_REF`] has the
//! store's own author (`spec.gitAuthor`), another promised (a shard, another replica) wrote
//! the branch since, and its removal of an index file stands. An index file edited rather than
//! deleted is not detected here (its entries are what the plan trusts).

use std::collections::{BTreeSet, HashMap};

use gix::ObjectId;

use super::config::GitAuthor;
use super::credentials::Secrets;
use super::repo;
use crate::Error;
use crate::index::{self, IndexEntry};

/// The clone's ref at the last commit it applied (pushed, or compare-and-swapped locally).
pub const APPLIED_REF: &str = "refs/promised/applied";

/// Commits looked at between the head and [`APPLIED_REF`] before giving up (a rewritten
/// history need not contain it).
const WALK_LIMIT: usize = 200;

/// Points [`APPLIED_REF`] at `commit`, just applied; a failure is logged (naming the store's
/// `url`), not returned: the commit is published either way.
pub fn record_applied(repo: &gix::Repository, commit: ObjectId, secrets: &Secrets, url: &str) {
    if let Err(e) = repo::set_ref(repo, APPLIED_REF, commit, secrets) {
        tracing::warn!(store = %url, error = %e, "cannot record the applied commit in the clone");
    }
}

/// The ownership index of the head's tree (`files`), with lost index files re-adopted
/// ([`adopt_lost_index`]). Errors: the repository cannot be read, an index file does not parse.
pub(super) fn load_index(
    inner: &super::Inner,
    repo: &gix::Repository,
    head: Option<ObjectId>,
    files: &HashMap<String, ObjectId>,
) -> Result<Vec<IndexEntry>, Error> {
    let mut index =
        crate::plan::load_index(files, |oid| repo::read_blob(repo, oid, &inner.secrets))?;
    adopt_lost_index(inner, repo, head, files, &mut index)?;
    Ok(index)
}

/// Adds to `index` the entries of every index file that [`APPLIED_REF`]'s tree has and the
/// head's tree (`files`) lacks, unless a commit since has the store's `gitAuthor`; logs the
/// Destinations whose index was re-adopted and returns them. Errors: the repository cannot be
/// read.
pub(super) fn adopt_lost_index(
    inner: &super::Inner,
    repo: &gix::Repository,
    head: Option<ObjectId>,
    files: &HashMap<String, ObjectId>,
    index: &mut Vec<IndexEntry>,
) -> Result<Vec<String>, Error> {
    let (author, secrets, url) = (&inner.spec.git_author, &inner.secrets, &inner.url_display);
    let Some(applied) = repo::read_ref(repo, APPLIED_REF, secrets)? else {
        return Ok(Vec::new());
    };
    if Some(applied) == head || !repo.has_object(applied) {
        return Ok(Vec::new());
    }
    let (old_files, _) = repo::head_files(repo, Some(applied), secrets)?;
    let lost: BTreeSet<&String> = old_files
        .keys()
        .filter(|p| index::destination_of(p).is_some() && !files.contains_key(*p))
        .collect();
    if lost.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(h) = head
        && written_by_promised_since(repo, h, applied, author, secrets)?
    {
        return Ok(Vec::new());
    }
    let known: BTreeSet<String> = index.iter().map(|e| e.path.clone()).collect();
    let mut destinations = BTreeSet::new();
    for p in lost {
        let one: HashMap<String, ObjectId> = HashMap::from([(p.clone(), old_files[p])]);
        let entries = crate::plan::load_index(&one, |oid| repo::read_blob(repo, oid, secrets))?;
        // Index and every file it lists deleted together: a person let that Destination's
        // files go (README "Deletion", `cleanup: none`); that stands.
        if !entries.iter().any(|e| files.contains_key(&e.path)) {
            continue;
        }
        index.extend(entries.into_iter().filter(|e| !known.contains(&e.path)));
        destinations.extend(index::destination_of(p).map(str::to_owned));
    }
    let destinations: Vec<String> = destinations.into_iter().collect();
    if destinations.is_empty() {
        return Ok(destinations);
    }
    tracing::warn!(store = %url, ?destinations, "ownership index deleted outside promised: re-adopted from the last commit promised applied, its files are restored");
    Ok(destinations)
}

/// Whether a commit reachable from `head` before `applied` (at most [`WALK_LIMIT`]) has
/// `author`'s name and email.
fn written_by_promised_since(
    repo: &gix::Repository,
    head: ObjectId,
    applied: ObjectId,
    author: &GitAuthor,
    secrets: &Secrets,
) -> Result<bool, Error> {
    let walk = repo
        .rev_walk([head])
        .all()
        .map_err(|e| Error::Repository(secrets.redact(&e.to_string())))?;
    for info in walk.take(WALK_LIMIT) {
        let info = info.map_err(|e| Error::Repository(secrets.redact(&e.to_string())))?;
        if info.id == applied {
            return Ok(false);
        }
        let commit = repo
            .find_commit(info.id)
            .map_err(|e| Error::Repository(secrets.redact(&e.to_string())))?;
        let sig = commit
            .author()
            .map_err(|e| Error::Repository(secrets.redact(&e.to_string())))?;
        if sig.name == author.name.as_str() && sig.email == author.email.as_str() {
            return Ok(true);
        }
    }
    Ok(false)
}
