//! The Git state store writing an N-file tree against `git fast-import` + `git push` of the
//! same tree, to a fresh remote each run, interleaved.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use statestores::git::{GitOptions, GitStateStoreSpec};
use statestores::{
    ChangeSet, CommitMeta, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore,
};

use crate::common::{GitDaemon, git};
use crate::stats::Samples;

/// One size's store measure.
pub struct StoreResult {
    pub ours: Samples,
    pub git: Samples,
    /// ours / git per run, sorted.
    pub ratios: Vec<f64>,
}

impl StoreResult {
    pub fn median_ratio(&self) -> f64 {
        self.ratios[self.ratios.len() / 2]
    }
}

fn change_set(n_files: usize) -> ChangeSet {
    let per = 100.min(n_files);
    let mut writes = Vec::new();
    for p in 0..n_files.div_ceil(per) {
        let dest = if p % 2 == 0 { "worker-1" } else { "worker-2" };
        let rr = format!("req-{p:04}");
        let owner = Owner {
            key: format!("{dest}/resources/default/redis/{rr}/configure/5058f"),
            destination: dest.into(),
            promise: "redis".into(),
            resource: Some(format!("default/{rr}")),
            pipeline: Some("configure".into()),
        };
        let files = (0..per.min(n_files - p * per))
            .map(|i| {
                let mut content = format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {rr}-{i}\n  namespace: default\ndata:\n"
                );
                for k in 0..24 {
                    content.push_str(&format!("  key{k}: value-{p}-{i}-{k}-xxxxxxxx\n"));
                }
                FileWrite {
                    path: format!("destinations/{}/cm-{i:03}.yaml", owner.key),
                    content: content.into_bytes(),
                }
            })
            .collect();
        writes.push(PlacementWrite {
            owner: owner.into(),
            files,
        });
    }
    ChangeSet {
        writes,
        removals: vec![],
        meta: CommitMeta {
            config_commit: Some("0123456789abcdef".into()),
            ..Default::default()
        },
    }
}

fn fast_import_and_push(bare: &Path, cs: &ChangeSet, url: &str) -> Duration {
    let start = Instant::now();
    git(
        bare.parent().expect("parent"),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            bare.to_str().expect("utf-8"),
        ],
    );
    let mut child = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import");
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        let files: Vec<&FileWrite> = cs.writes.iter().flat_map(|w| &w.files).collect();
        for (mark, f) in files.iter().enumerate() {
            write!(
                stdin,
                "blob\nmark :{}\ndata {}\n",
                mark + 1,
                f.content.len()
            )
            .expect("w");
            stdin.write_all(&f.content).expect("w");
            stdin.write_all(b"\n").expect("w");
        }
        let msg = "fast-import baseline";
        write!(
            stdin,
            "commit refs/heads/main\ncommitter bench <b@x> 1700000000 +0000\ndata {}\n{msg}\n",
            msg.len()
        )
        .expect("w");
        for (mark, f) in files.iter().enumerate() {
            writeln!(stdin, "M 100644 :{} {}", mark + 1, f.path).expect("w");
        }
        stdin.write_all(b"\n").expect("w");
    }
    assert!(child.wait().expect("wait").success());
    git(
        bare,
        &["push", "-q", url, "refs/heads/main:refs/heads/main"],
    );
    start.elapsed()
}

pub fn store_push(n: usize, runs: usize) -> StoreResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    let d = GitDaemon::start(&srv);
    let cs = change_set(n);
    let (mut ours, mut base, mut ratio) = (Samples::default(), Samples::default(), Vec::new());
    for run in 0..runs {
        let url = d.bare_repo(&format!("fi-{run}.git"));
        let b = fast_import_and_push(&tmp.path().join(format!("fi-src-{run}.git")), &cs, &url);
        let url = d.bare_repo(&format!("ours-{run}.git"));
        let store = GitStateStore::open(
            "bench",
            GitStateStoreSpec::new(url),
            GitOptions::new(tmp.path().join(format!("state-{run}"))),
        )
        .expect("open store");
        let t = Instant::now();
        let out = rt.block_on(store.apply(&cs)).expect("apply");
        let o = t.elapsed();
        assert_eq!(out.written, n);
        ours.push(o);
        base.push(b);
        ratio.push(o.as_secs_f64() / b.as_secs_f64());
    }
    ratio.sort_by(f64::total_cmp);
    StoreResult {
        ours,
        git: base,
        ratios: ratio,
    }
}
