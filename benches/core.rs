//! The core-path benchmark (results and how to read them: `docs/benchmarks.md`).
//!
//! Run: `cargo bench --bench core` (release build of the `promised` binary and this harness).
//! Environment, all optional:
//!
//! | variable | default | what |
//! |---|---|---|
//! | `BENCH_SIZES` | `1000,10000,50000` | request counts |
//! | `BENCH_RUNS` | `3,10000:2,50000:1` | cold passes per runtime (and whole-process no-ops, at least 3, and store pushes) per size: a plain number for every size, `SIZE:RUNS` for one size |
//! | `BENCH_PROMISES` | `3` | Promises the requests are spread over (e.g. `100`) |
//! | `BENCH_CHANGES` | `20` | one-request changes sent through the daemon per size |
//! | `BENCH_CONTAINERS` | `200` | samples per side of the per-container comparison, and per part and concurrency of the sandbox breakdown |
//! | `BENCH_CONCURRENCY` | `1,2,8` | containers at once in the sandbox breakdown |
//! | `BENCH_IMAGES` | `1` | `0`: skip the image runtime's cold passes |
//! | `BENCH_SETTINGS` | empty | YAML added to the daemon config of every `promised` run and to the runner of the per-container measures (e.g. `concurrency: 4`, or the setting of a sandbox mechanism under test) |
//! | `BENCH_OUT` | `target/bench-core.md` | where the results (markdown, a `## Results` section) are written, also after each size |
//! | `BENCH_GENERATE` | unset | only write the config repo of the first size to this directory |
//!
//! For each size N it generates a config repo of N resource requests over the Promises (one
//! resource `configure` Pipeline each: a `sh` script kept beside `promise.yaml` that reads
//! `/kratix/input/object.yaml` and writes one ConfigMap and a `status.yaml`) and 3
//! Destinations on one `GitStateStore`, served with the config repo by `git daemon` on
//! 127.0.0.1, and measures (module under `benches/core/`):
//!
//! 1. **cold** (`corepath`): `promised reconcile` with an empty state directory and an empty
//!    state store, process start to exit (the commit is pushed before it exits), with the host
//!    process runtime, and with the image runtime (`images`: the same Promises with their
//!    container on a busybox image served by `docker-registry` on 127.0.0.1, pulled once with
//!    `promised images pull` into a shared cache before the timed runs);
//! 2. **no-op** (`corepath`): `promised reconcile` again (nothing changed): the whole process,
//!    and the daemon's no-op passes (webhook without a new config commit; a new config commit
//!    changing no request) until the pass is counted in `/metrics`; processes spawned are
//!    counted with `strace -f` when strace is installed;
//! 3. **one change** (`corepath`): through `promised run`: one request edited, committed and
//!    pushed to the config remote, then a signed `POST /hooks/git`; timed from the webhook call
//!    to the new state store commit appearing on the remote (p50, p99);
//! 4. **RSS** (`corepath`): the daemon's peak resident set (`VmHWM`) after its cold pass and at
//!    the end; each cold `promised reconcile`'s, sampled every 10 ms;
//! 5. **store** (`store`): `StateStore::apply` of an N-file tree to a fresh remote against
//!    `git fast-import` + `git push` of the same tree, interleaved;
//!
//! and once (`sandbox`): one container through the process runtime (`run_workflow`) against
//! `bwrap` alone and a bare spawn; the sandbox-alone floor (`bwrap` back to back at the
//! daemon's concurrency); and one sandboxed run part by part (namespaces, mounts) at each
//! `BENCH_CONCURRENCY`.

#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/registry.rs"]
mod registry;

#[path = "core/config.rs"]
mod config;
#[path = "core/corepath.rs"]
mod corepath;
#[path = "core/daemon.rs"]
mod daemon;
#[path = "core/images.rs"]
mod images;
#[path = "core/report.rs"]
mod report;
#[path = "core/sandbox.rs"]
mod sandbox;
#[path = "core/stats.rs"]
mod stats;
#[path = "core/store.rs"]
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use report::Results;
use stats::thousands;

struct Params {
    sizes: Vec<usize>,
    /// Runs for sizes without their own entry.
    runs: usize,
    runs_at: BTreeMap<usize, usize>,
    promises: usize,
    changes: usize,
    containers: usize,
    concurrency: Vec<usize>,
    images: bool,
    /// YAML added to every daemon config (`BENCH_SETTINGS`).
    settings_yaml: String,
    settings: promised::settings::Settings,
    out: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

impl Params {
    fn from_env() -> Params {
        let mut runs = 3;
        let mut runs_at = BTreeMap::new();
        let spec = std::env::var("BENCH_RUNS").unwrap_or_else(|_| "3,10000:2,50000:1".into());
        for part in spec.split(',').map(str::trim) {
            match part.split_once(':') {
                Some((n, r)) => {
                    if let (Ok(n), Ok(r)) = (n.trim().parse(), r.trim().parse::<usize>()) {
                        runs_at.insert(n, r.max(1));
                    }
                }
                None => {
                    if let Ok(r) = part.parse::<usize>() {
                        runs = r.max(1);
                    }
                }
            }
        }
        let settings_yaml = std::env::var("BENCH_SETTINGS").unwrap_or_default();
        let settings = if settings_yaml.trim().is_empty() {
            promised::settings::Settings::default()
        } else {
            serde_saphyr::from_str(&settings_yaml)
                .unwrap_or_else(|e| panic!("BENCH_SETTINGS is not a daemon config: {e}"))
        };
        Params {
            settings_yaml,
            settings,
            sizes: list("BENCH_SIZES", "1000,10000,50000"),
            runs,
            runs_at,
            promises: env_or("BENCH_PROMISES", 3usize).max(1),
            changes: env_or("BENCH_CHANGES", 20usize).max(1),
            containers: env_or("BENCH_CONTAINERS", 200usize).max(5),
            concurrency: list("BENCH_CONCURRENCY", "1,2,8"),
            images: std::env::var("BENCH_IMAGES").map_or(true, |v| v != "0"),
            out: std::env::var_os("BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| common::repo_root().join("target/bench-core.md")),
        }
    }

    fn runs(&self, n: usize) -> usize {
        self.runs_at.get(&n).copied().unwrap_or(self.runs)
    }
}

/// The first line of `program args`' output, or "unknown".
fn version(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn write_out(p: &Params, r: &Results) {
    if let Some(dir) = p.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&p.out, r.markdown()).expect("write results");
}

fn main() {
    let p = Params::from_env();
    let promises = config::promise_names(p.promises);
    // `BENCH_GENERATE=DIR`: only write the config repo for the first size (state store
    // `file://DIR-state.git`), for profiling by hand.
    if let Some(dir) = std::env::var_os("BENCH_GENERATE").map(PathBuf::from) {
        let n = p.sizes.first().copied().unwrap_or(1000);
        let state = format!("file://{}-state.git", dir.display());
        config::write_config(&dir, n, &promises, &state, config::HOST_IMAGE);
        println!(
            "wrote {n} requests to {}; state store {state}",
            dir.display()
        );
        return;
    }
    let started = Instant::now();
    let load_start = loadavg();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let root = common::repo_root();
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(&root)
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let date = version("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let machine = format!(
        "{date}, commit `{commit}`{}, {cores} cores, kernel {}, {}, {}, {}, {}.",
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        },
        kernel.trim(),
        version("bwrap", &["--version"]),
        version("git", &["--version"]),
        version("rustc", &["--version"]),
        if cfg!(debug_assertions) {
            "**debug build** (`cargo test --bench core`: not for results)"
        } else {
            "release profile (`cargo bench`)"
        },
    );
    println!("promised core benchmark: {machine}");
    let runs: Vec<String> = p
        .sizes
        .iter()
        .map(|&n| format!("{} at {}", p.runs(n), thousands(n)))
        .collect();
    let mut params = format!(
        "Requests over {} Promises; cold passes per runtime: {}; {} one-request changes per size; {} samples per side (and per part and concurrency) for the per-container measures.",
        p.promises,
        runs.join(", "),
        p.changes,
        p.containers
    );
    if !p.settings_yaml.trim().is_empty() {
        params.push_str(&format!(
            " Daemon settings (`BENCH_SETTINGS`): `{}`.",
            p.settings_yaml.trim().replace('\n', "; ")
        ));
    }
    let mut results = Results {
        header: vec![machine, String::new(), params],
        sizes: Vec::new(),
        stores: Vec::new(),
        sandbox: None,
        image_skipped: None,
        cores,
        notes: Vec::new(),
    };

    assert!(
        common::bwrap_works(),
        "bubblewrap cannot create a sandbox here, and every pipeline of the bench runs in it \
         (Debian: apt-get install bubblewrap; unprivileged user namespaces must be allowed)"
    );
    let t = Instant::now();
    results.sandbox = Some(sandbox::measure(p.containers, &p.concurrency, &p.settings));
    results.notes.push(format!(
        "the per-container measures took {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    write_out(&p, &results);

    let image_env = if p.images {
        match images::start() {
            Ok(env) => Some(env),
            Err(why) => {
                println!("image runtime skipped: {why}");
                results.image_skipped = Some(why);
                None
            }
        }
    } else {
        results.image_skipped = Some("`BENCH_IMAGES=0`".into());
        None
    };

    for &n in &p.sizes {
        let runs = p.runs(n);
        let t = Instant::now();
        results.stores.push((n, store::store_push(n, runs)));
        let store_took = t.elapsed();
        let s = corepath::measure(
            n,
            &corepath::SizeParams {
                runs,
                changes: p.changes,
                promises: &promises,
                images: image_env.as_ref(),
                settings: &p.settings_yaml,
            },
        );
        results.notes.push(format!(
            "N = {}: {:.0} s in all (store measure {:.0} s)",
            thousands(n),
            s.took.as_secs_f64() + store_took.as_secs_f64(),
            store_took.as_secs_f64()
        ));
        results.sizes.push(s);
        write_out(&p, &results);
    }

    results.header[0].push_str(&format!(
        " The whole run took {:.1} min; load average {load_start} at the start, {} at the end.",
        started.elapsed().as_secs_f64() / 60.0,
        loadavg()
    ));
    write_out(&p, &results);
    println!("\n{}\nwritten to {}", results.markdown(), p.out.display());
}
