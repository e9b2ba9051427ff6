//! The verified head of a Git state store: the last branch head whose tree is known to
//! match its ownership index, kept in memory with its listing and index (an apply on it walks
//! no tree), and its id recorded in the persistent clone for the next process
//! (`<clone>/promised-verified-head`), so a fresh `promised reconcile` whose fetch finds the
//! remote still at that head writes nothing and reads no tree: a commit's tree cannot change,
//! and drift needs a new commit. Only the latest verified head is recorded, as in memory, so
//! a remote rewound to an older commit is checked in full.

use std::collections::HashMap;

use gix::ObjectId;

use super::{Backend, Inner};

/// Path → blob id of a tree's files, and its ownership index.
pub(super) type Listing = (HashMap<String, ObjectId>, Vec<crate::index::IndexEntry>);

/// The file in the persistent clone that records the verified head.
pub(super) const PERSISTED_HEAD_FILE: &str = "promised-verified-head";

/// The first word of [`PERSISTED_HEAD_FILE`]; another format (a later version's) is ignored.
const PERSISTED_HEAD_FORMAT: &str = "v1 ";

/// A branch head whose tree matches its ownership index, so an apply with nothing to write
/// skips the plan (a tree that did not change cannot drift), and with its listing the next
/// apply on the same head skips the tree walk and the index parse too (an incremental apply at
/// 10,000 files).
pub(super) struct Verified {
    pub(super) head: ObjectId,
    /// Path → blob id of every file of the head's tree, and its ownership index; `None` for a
    /// head verified by an earlier process ([`Inner::persisted_head`]).
    pub(super) listing: Option<Listing>,
    /// When the remote was last seen at `head` (fetched, or pushed by us).
    pub(super) seen: std::time::Instant,
}

impl Inner {
    /// The verified head when it is recent enough to be trusted without a fetch
    /// ([`GitOptions::trust_head_for`]), and for how much longer; remote backend only.
    pub(super) fn trusted_head(&self) -> Option<(ObjectId, std::time::Duration)> {
        if !matches!(self.backend, Backend::Remote { .. }) || self.opts.trust_head_for.is_zero() {
            return None;
        }
        let v = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let v = v.as_ref()?;
        let left = self.opts.trust_head_for.checked_sub(v.seen.elapsed())?;
        (!left.is_zero()).then_some((v.head, left))
    }

    /// The head the write-permission check fetched, if recent enough to trust (see
    /// `checked_head`); taken, so only the first apply after a check uses it.
    pub(super) fn take_checked_head(&self) -> Option<Option<ObjectId>> {
        let taken = self
            .checked_head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        taken
            .filter(|(_, at)| at.elapsed() < self.opts.trust_head_for)
            .map(|(head, _)| head)
    }

    pub(super) fn take_verified(&self, head: Option<ObjectId>) -> Option<Verified> {
        let mut v = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&*v, head) {
            (Some(cached), Some(h)) if cached.head == h => v.take(),
            _ => None,
        }
    }

    /// Remembers `v` as the verified head, and (remote backend) records its id in the clone
    /// for the next process ([`Inner::persisted_head`]).
    pub(super) fn set_verified(&self, v: Option<Verified>) {
        if let Some(v) = &v {
            self.persist_head(v.head);
        }
        *self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = v;
    }

    /// The branch head an earlier process (or this one) last verified, as recorded in the
    /// persistent clone: a fresh process whose fetch finds the remote still there has nothing
    /// to check, as a commit's tree cannot change. `None`: none recorded, recorded by another
    /// format, unreadable, or the local backend (the store is someone's repository, not ours
    /// to write into, and may be shared by several state directories).
    pub(super) fn persisted_head(&self) -> Option<ObjectId> {
        if !matches!(self.backend, Backend::Remote { .. }) {
            return None;
        }
        let text = std::fs::read_to_string(self.repo_path.join(PERSISTED_HEAD_FILE)).ok()?;
        let hex = text.strip_prefix(PERSISTED_HEAD_FORMAT)?.trim();
        ObjectId::from_hex(hex.as_bytes()).ok()
    }

    /// Records `head` for [`Inner::persisted_head`] (replaced whole, by rename; skipped when
    /// it is already recorded). A failure is logged: the next process then checks the tree.
    fn persist_head(&self, head: ObjectId) {
        if !matches!(self.backend, Backend::Remote { .. }) || self.persisted_head() == Some(head) {
            return;
        }
        let path = self.repo_path.join(PERSISTED_HEAD_FILE);
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{PERSISTED_HEAD_FORMAT}{head}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(store = %self.url_display, file = %path.display(), error = %e,
                "cannot record the verified head in the clone");
        }
    }
}
