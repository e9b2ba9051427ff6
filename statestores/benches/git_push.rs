//! Benchmark: write and push a 10,000-file tree with the remote Git backend, against
//! `git fast-import` + `git push` of the same tree, in the same run, to the same kind of
//! server (`git daemon --enable=receive-pack` on 127.0.0.1, one bare repo per run).
//!
//! Run: `cargo bench -p statestores --bench git_push` (env `BENCH_FILES`, `BENCH_RUNS`).
//! Results are recorded in `docs/benchmarks.md`.

#![allow(missing_docs)]

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use statestores::git::{GitOptions, GitStateStoreSpec};
use statestores::{
    ChangeSet, CommitMeta, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore,
};

fn git(dir: Option<&Path>, args: &[&str]) {
    let mut c = Command::new("git");
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    let out = c
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_git_daemon(base: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (Ok(input), output) = (stream.try_clone(), stream) else {
                continue;
            };
            if let Ok(mut child) = Command::new("git")
                .args(["daemon", "--inetd", "--export-all", "--enable=receive-pack"])
                .arg(format!("--base-path={}", base.display()))
                .arg(&base)
                .stdin(Stdio::from(OwnedFd::from(input)))
                .stdout(Stdio::from(OwnedFd::from(output)))
                .spawn()
            {
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
            }
        }
    });
    port
}

/// 10,000 files: 2 destinations × 50 requests × 100 files of ~1 KiB YAML each.
fn change_set(n_files: usize) -> ChangeSet {
    let per = 100;
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
                    content.push_str(&format!("  key{k}: value-{p}-{i}-{k}-{}\n", "x".repeat(8)));
                }
                FileWrite {
                    path: format!("destinations/{}/cm-{i:03}.yaml", owner.key),
                    content: content.into_bytes(),
                }
            })
            .collect();
        writes.push(PlacementWrite { owner, files });
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

fn fast_import_and_push(work: &Path, cs: &ChangeSet, url: &str) -> Duration {
    let start = Instant::now();
    let repo = work.join("fi.git");
    git(
        None,
        &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
    );
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["fast-import", "--quiet"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
        let mut mark = 0;
        for w in &cs.writes {
            for f in &w.files {
                mark += 1;
                write!(stdin, "blob\nmark :{mark}\ndata {}\n", f.content.len()).unwrap();
                stdin.write_all(&f.content).unwrap();
                stdin.write_all(b"\n").unwrap();
            }
        }
        let msg = "fast-import baseline";
        write!(
            stdin,
            "commit refs/heads/main\ncommitter bench <b@x> 1700000000 +0000\ndata {}\n{msg}\n",
            msg.len()
        )
        .unwrap();
        let mut mark = 0;
        for w in &cs.writes {
            for f in &w.files {
                mark += 1;
                writeln!(stdin, "M 100644 :{mark} {}", f.path).unwrap();
            }
        }
        stdin.write_all(b"\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    git(
        Some(&repo),
        &["push", "-q", url, "refs/heads/main:refs/heads/main"],
    );
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("BENCH_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let port = start_git_daemon(srv.clone());
    let cs = change_set(n);
    let bytes: usize = cs
        .writes
        .iter()
        .flat_map(|w| &w.files)
        .map(|f| f.content.len())
        .sum();
    println!(
        "tree: {n} files, {:.1} MiB of content",
        bytes as f64 / 1048576.0
    );

    let (mut ours, mut base, mut noop, mut incr) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        // Baseline: git fast-import + git push.
        let name = format!("fi-{run}.git");
        git(
            None,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                srv.join(&name).to_str().unwrap(),
            ],
        );
        let work = tmp.path().join(format!("fi-work-{run}"));
        std::fs::create_dir_all(&work).unwrap();
        let b = fast_import_and_push(&work, &cs, &format!("git://127.0.0.1:{port}/{name}"));
        base.push(b);

        // Ours: a fresh store (fresh persistent clone) pushing to a fresh bare repo.
        let name = format!("ours-{run}.git");
        git(
            None,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                srv.join(&name).to_str().unwrap(),
            ],
        );
        let store = GitStateStore::open(
            "bench",
            GitStateStoreSpec::new(format!("git://127.0.0.1:{port}/{name}")),
            GitOptions::new(tmp.path().join(format!("state-{run}"))),
        )
        .unwrap();
        let start = Instant::now();
        let out = rt.block_on(store.apply(&cs)).unwrap();
        let o = start.elapsed();
        assert_eq!(out.written, n);
        ours.push(o);

        let start = Instant::now();
        let out = rt.block_on(store.apply(&cs)).unwrap();
        noop.push(start.elapsed());
        assert!(out.version.is_none());

        let mut changed = cs.clone();
        for w in changed.writes.iter_mut().take(1) {
            for f in &mut w.files {
                f.content.extend_from_slice(b"# changed\n");
            }
        }
        let start = Instant::now();
        let out = rt.block_on(store.apply(&changed)).unwrap();
        incr.push(start.elapsed());
        assert_eq!(out.written, 100);
        println!(
            "run {run}: promised {:.3}s, fast-import+push {:.3}s, ratio {:.2}; no-op re-apply {:.3}s; 100-file update {:.3}s",
            o.as_secs_f64(),
            b.as_secs_f64(),
            o.as_secs_f64() / b.as_secs_f64(),
            noop[run].as_secs_f64(),
            incr[run].as_secs_f64()
        );
    }
    let (o, b) = (median(ours), median(base));
    println!(
        "median: promised {:.3}s, git fast-import + git push {:.3}s, ratio {:.2} (goal <= 2.00); no-op {:.3}s; 100-file update {:.3}s",
        o.as_secs_f64(),
        b.as_secs_f64(),
        o.as_secs_f64() / b.as_secs_f64(),
        median(noop).as_secs_f64(),
        median(incr).as_secs_f64()
    );
}
