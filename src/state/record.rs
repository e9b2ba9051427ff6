//! [`ObjectRecord`]'s methods: compaction and sharing after a pass or a load, and a new
//! record.

use std::collections::BTreeSet;

use super::{HashText, ObjectRecord, StoredDocument};
use crate::status::ObjectStatus;

impl ObjectRecord {
    /// Gives back the spare capacity of the record's lists (outputs, placements, their files,
    /// the status's). A list built by pushes keeps room for 4 or more entries where a request
    /// mostly has 1: at 10,000 requests 9–11 MB of the cold pass's peak heap
    /// (docs/benchmarks.md, "Memory", third round).
    pub fn shrink_to_fit(&mut self) {
        for o in &mut self.outputs {
            o.files.shrink_to_fit();
            o.selectors.shrink_to_fit();
        }
        self.outputs.shrink_to_fit();
        for p in &mut self.placements {
            p.files.shrink_to_fit();
        }
        self.placements.shrink_to_fit();
        self.status.shrink_to_fit();
    }

    /// Replaces the repeated strings of the record read back from `state.json` (its outputs'
    /// pipeline, its placements' store, Destination, pipeline and group id, its status's texts
    /// and lists) by the
    /// process's shared copies ([`ObjectStatus::share_texts`]), and has each placed file hold
    /// the content hash of its output file (one string for both, as a pass leaves them).
    pub fn share_texts(&mut self) {
        for o in &mut self.outputs {
            o.pipeline.share();
        }
        let hashes: BTreeSet<&std::sync::Arc<str>> = self
            .outputs
            .iter()
            .flat_map(|o| o.files.iter().map(|f| &f.sha256))
            .collect();
        for p in &mut self.placements {
            for t in [
                &mut p.store,
                &mut p.destination,
                &mut p.pipeline,
                &mut p.group_id,
            ] {
                t.share();
            }
            for f in &mut p.files {
                if let Some(h) = hashes.get(&f.sha256) {
                    f.sha256 = std::sync::Arc::clone(h);
                }
            }
        }
        self.status.share_texts();
    }

    /// The record of an object nothing has been done for yet, with `status`: no input hash,
    /// not completed, no object, outputs or placements.
    pub fn new(status: ObjectStatus) -> ObjectRecord {
        ObjectRecord {
            input_hash: HashText::default(),
            completed: false,
            object: StoredDocument::default(),
            promise: None,
            promise_dir: None,
            outputs: Vec::new(),
            placements: Vec::new(),
            spec_hash: HashText::default(),
            failures: 0,
            retry_at: None,
            deleting: false,
            steady: HashText::default(),
            failed_upgrade: String::new(),
            status: status.into(),
        }
    }
}
