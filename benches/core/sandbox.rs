//! What one sandboxed container costs, and where that goes:
//!
//! - one container through the process runtime (`run_workflow`: directories, `object.yaml`,
//!   sandbox, output and metadata collection) against `bwrap` alone with our mounts running
//!   `sh -c true`, and against a bare `sh -c true` spawn, one at a time and interleaved;
//! - the sandbox-alone floor: `bwrap` alone back to back at the daemon's default concurrency;
//! - the breakdown: a ladder from a bare spawn through `bwrap --unshare-user --bind / /` and
//!   each namespace added, to our real argument list (`bwrap_args`) without and with its
//!   `/etc` entries, each at several concurrencies: wall time and CPU time per container.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use promised::model::Pipeline;
use promised::pipeline::sandbox::{HostLayout, SandboxSpec, bwrap_args, bwrap_env};
use promised::pipeline::{Action, ObjectIdentity, WorkflowInput, WorkflowType, run_workflow};

use crate::stats::{Samples, Unit};

/// One rung of the breakdown: a label and its cost at each concurrency.
pub struct Rung {
    pub label: String,
    /// `(concurrency, wall seconds per container, CPU seconds per container)`.
    pub cells: Vec<(usize, f64, f64)>,
}

/// The per-container measures (size-independent).
pub struct SandboxResult {
    /// One container through `run_workflow`, one at a time, as the daemon runs it (the
    /// resident sandbox unless `BENCH_SETTINGS` says `residentSandbox: false`).
    pub runtime: Samples,
    /// The same with one bwrap per container (`residentSandbox: false`).
    pub runtime_bwrap: Samples,
    /// Seconds per container of `run_workflow` as the daemon runs it, back to back at
    /// `floor_workers` at once: what a cold pass's pipelines cost at the least.
    pub runtime_floor_per: f64,
    /// `bwrap` alone with our mounts, one at a time.
    pub bwrap: Samples,
    /// A bare `sh -c true` spawn, one at a time.
    pub bare: Samples,
    /// Seconds per container of `bwrap` alone back to back at `floor_workers` at once.
    pub floor_per: f64,
    pub floor_workers: usize,
    pub floor_total: usize,
    pub ladder: Vec<Rung>,
    pub run_dir: PathBuf,
}

/// Children's user + system CPU seconds so far (`/proc/self/stat` `cutime` + `cstime`,
/// in clock ticks of 1/100 s): every waited-for child and its waited-for descendants.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after the command name start at field 3 (`state`); cutime is 16, cstime 17.
    (f.get(13).unwrap_or(&0) + f.get(14).unwrap_or(&0)) as f64 / 100.0
}

/// Runs `f` `total` times on `workers` threads; (wall time, children's CPU seconds).
fn parallel(total: usize, workers: usize, f: &(dyn Fn() + Sync)) -> (Duration, f64) {
    let next = AtomicUsize::new(0);
    let cpu0 = children_cpu();
    let t = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    f();
                }
            });
        }
    });
    (t.elapsed(), children_cpu() - cpu0)
}

/// Runs `program args` with exactly `env`, output discarded; panics unless it succeeds.
fn run_quiet(program: &Path, args: &[OsString], env: &[(String, String)]) {
    let s = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn");
    assert!(s.success(), "{} {args:?} failed", program.display());
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Measures everything above, the runner configured by `settings` (`BENCH_SETTINGS`): `samples` per side for the one-at-a-time comparison, and per
/// rung and concurrency for the breakdown.
pub fn measure(
    samples: usize,
    concurrencies: &[usize],
    settings: &promised::settings::Settings,
) -> SandboxResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pipelines: Vec<Pipeline> = vec![
        serde_json::from_value(serde_json::json!({
            "apiVersion": "platform.kratix.io/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "bench"},
            "spec": {"containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "true"]}]}
        }))
        .expect("pipeline"),
    ];
    // The runner as the daemon configures it (run directories in `runDir`'s default); its
    // resident sandbox's helper is the `promised` binary, not this harness.
    let mut cfg = promised::settings::Settings {
        state_dir: tmp.path().join("state"),
        ..settings.clone()
    }
    .runner();
    if cfg.resident.is_some() {
        cfg.resident = Some(PathBuf::from(env!("CARGO_BIN_EXE_promised")));
    }
    let cfg_bwrap = promised::pipeline::RunnerConfig {
        resident: None,
        ..cfg.clone()
    };
    let object_yaml = "apiVersion: bench.promised.dev/v1\nkind: alpha\nmetadata:\n  name: r-00001\n  namespace: default\nspec:\n  size: small\n";
    let input = WorkflowInput {
        workflow_type: WorkflowType::Resource,
        action: Action::Configure,
        promise_name: "alpha".into(),
        crd_plural: "alphas".into(),
        object: ObjectIdentity {
            kind: "alpha".into(),
            group: "bench.promised.dev".into(),
            version: "v1".into(),
            name: "r-00001".into(),
            namespace: "default".into(),
        },
        object_yaml: object_yaml.into(),
        promise_dir: None,
        pipeline_namespace: None,
        pipelines: &pipelines,
        existing_status: Default::default(),
        runtime_annotation: None,
        promise_hash: String::new(),
    };
    // The sandbox alone: the same mounts on directories made once.
    let dirs: Vec<PathBuf> = ["input", "output", "metadata"]
        .iter()
        .map(|d| {
            let p = tmp.path().join("fixed").join(d);
            std::fs::create_dir_all(&p).expect("mkdir");
            p
        })
        .collect();
    std::fs::write(dirs[0].join("object.yaml"), object_yaml).expect("object.yaml");
    let env: Vec<(String, String)> = vec![("KRATIX_WORKFLOW_TYPE".into(), "resource".into())];
    let argv: Vec<String> = vec!["sh".into(), "-c".into(), "true".into()];
    let spec = SandboxSpec {
        input: &dirs[0],
        output: &dirs[1],
        metadata: &dirs[2],
        promise_dir: None,
        mounts: &[],
        network: false,
        working_dir: None,
        env: &env,
        argv: &argv,
        hidden: &[],
    };
    let layout = HostLayout::detect();
    let full = bwrap_args(&layout, &spec);
    let no_etc = bwrap_args(
        &HostLayout {
            etc: Vec::new(),
            ..layout.clone()
        },
        &spec,
    );
    let benv = bwrap_env(&spec);
    let bwrap = cfg.bwrap.clone();
    let sh = PathBuf::from("/bin/sh");
    let run_bwrap = || run_quiet(&bwrap, &full, &benv);
    let run_bare = || run_quiet(&sh, &os(&["-c", "true"]), &benv);

    // One at a time, interleaved so machine noise hits all three alike (after a warm-up).
    let (mut runtime, mut runtime_bwrap, mut sandbox, mut bare) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for c in [&cfg, &cfg_bwrap] {
        let r = rt.block_on(run_workflow(c, &input));
        assert!(r.succeeded(), "{:?}", r.error());
    }
    run_bwrap();
    for _ in 0..samples {
        let t = Instant::now();
        let r = rt.block_on(run_workflow(&cfg, &input));
        runtime.push(t.elapsed());
        assert!(r.succeeded(), "{:?}", r.error());
        let t = Instant::now();
        let r = rt.block_on(run_workflow(&cfg_bwrap, &input));
        runtime_bwrap.push(t.elapsed());
        assert!(r.succeeded(), "{:?}", r.error());
        let t = Instant::now();
        run_bwrap();
        sandbox.push(t.elapsed());
        let t = Instant::now();
        run_bare();
        bare.push(t.elapsed());
    }

    // The floor of a cold pass: the sandbox alone at the daemon's default concurrency.
    let floor_workers = settings.effective_concurrency();
    let floor_total = samples * 2;
    let (wall, _) = parallel(floor_total, floor_workers, &run_bwrap);
    let floor_per = wall.as_secs_f64() / floor_total as f64;
    // The same count through the runtime as the daemon runs it, at the same concurrency.
    let runtime_floor_per = rt.block_on(async {
        use futures_util::StreamExt;
        let t = Instant::now();
        let mut runs = futures_util::stream::iter(0..floor_total)
            .map(|_| run_workflow(&cfg, &input))
            .buffer_unordered(floor_workers);
        while let Some(r) = runs.next().await {
            assert!(r.succeeded(), "{:?}", r.error());
        }
        t.elapsed().as_secs_f64() / floor_total as f64
    });

    // The ladder.
    let base = ["--unshare-user", "--bind", "/", "/"];
    let mut steps: Vec<(String, PathBuf, Vec<OsString>)> = vec![(
        "bare `sh -c true` spawn, no sandbox".into(),
        sh.clone(),
        os(&["-c", "true"]),
    )];
    let mut flags: Vec<&str> = base.to_vec();
    let with = |flags: &[&str]| {
        let mut a = os(flags);
        a.extend(os(&["--", "sh", "-c", "true"]));
        a
    };
    steps.push((
        "`bwrap --unshare-user --bind / /`".into(),
        bwrap.clone(),
        with(&flags),
    ));
    for ns in [
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ] {
        flags.push(ns);
        steps.push((format!("+ `{ns}`"), bwrap.clone(), with(&flags)));
    }
    let etc = layout.etc.len();
    steps.push((
        format!(
            "our arguments (`bwrap_args`: `--unshare-all`, read-only binds, `/tmp`, `/proc`, `/dev`, `/kratix`) without the {etc} `/etc` entries"
        ),
        bwrap.clone(),
        no_etc,
    ));
    steps.push((
        format!(
            "our arguments, all {} of them ({etc} `/etc` entries)",
            full.len()
        ),
        bwrap.clone(),
        full.clone(),
    ));
    for (_, program, args) in &steps {
        run_quiet(program, args, &benv); // each works here, before anything is timed
    }
    let rounds = 4;
    let per_round = samples.div_ceil(rounds).max(1);
    let mut acc = vec![vec![(Duration::ZERO, 0.0, 0usize); concurrencies.len()]; steps.len()];
    for (ci, &c) in concurrencies.iter().enumerate() {
        for _ in 0..rounds {
            for (si, (_, program, args)) in steps.iter().enumerate() {
                let (w, cpu) = parallel(per_round, c, &|| run_quiet(program, args, &benv));
                let a = &mut acc[si][ci];
                a.0 += w;
                a.1 += cpu;
                a.2 += per_round;
            }
        }
    }
    let ladder = steps
        .iter()
        .zip(acc)
        .map(|((label, _, _), cells)| Rung {
            label: label.clone(),
            cells: concurrencies
                .iter()
                .zip(cells)
                .map(|(&c, (w, cpu, k))| (c, w.as_secs_f64() / k as f64, cpu / k as f64))
                .collect(),
        })
        .collect();
    SandboxResult {
        runtime,
        runtime_bwrap,
        runtime_floor_per,
        bwrap: sandbox,
        bare,
        floor_per,
        floor_workers,
        floor_total,
        ladder,
        run_dir: cfg.work_dir.clone(),
    }
}

/// The breakdown as a markdown table (ms per container; wall, and CPU in brackets).
pub fn ladder_table(r: &SandboxResult, cores: usize) -> String {
    let Some(first) = r.ladder.first() else {
        return String::new();
    };
    let mut md = String::from("| part of a sandboxed run | ");
    for (c, _, _) in &first.cells {
        md.push_str(&format!("{c} at once: wall (CPU) | "));
    }
    md.push_str("added at 1 at once |\n|---|");
    for _ in &first.cells {
        md.push_str("---|");
    }
    md.push_str("---|\n");
    let mut prev: Option<f64> = None;
    for rung in &r.ladder {
        md.push_str(&format!("| {} | ", rung.label));
        for (_, wall, cpu) in &rung.cells {
            md.push_str(&format!("{:.2} ({:.2}) | ", wall * 1e3, cpu * 1e3));
        }
        let w1 = rung.cells[0].1;
        match prev {
            Some(p) => md.push_str(&format!("{:+.2} |\n", (w1 - p) * 1e3)),
            None => md.push_str("– |\n"),
        }
        prev = Some(w1);
    }
    md.push_str(&format!(
        "\nms per container; wall = elapsed ÷ containers with that many running at once, CPU = \
         user + system time of the sandbox processes ÷ containers (namespace teardown done later \
         by kernel threads is not counted; the clock has 10 ms ticks, summed over all containers of a \
         cell). CPU ÷ wall is how many cores the sandboxes kept busy: where it nears {cores} \
         (the cores here), the rung is CPU-bound.\n"
    ));
    md
}

/// The one-at-a-time comparison and the floor, as lines for the notes.
pub fn summary(r: &SandboxResult) -> Vec<String> {
    vec![
        format!(
            "one container at a time: process runtime (`run_workflow`) in the resident sandbox {} ({:.2}× `bwrap` alone), with one bwrap per container {}, `bwrap` alone with our mounts {} ({:.2}× the resident runtime), bare `sh -c true` spawn {} (`bwrap` {:.2}× of it); {} samples each; run directories in {}",
            r.runtime.show(Unit::Ms),
            r.runtime.median() / r.bwrap.median(),
            r.runtime_bwrap.show(Unit::Ms),
            r.bwrap.show(Unit::Ms),
            r.bwrap.median() / r.runtime.median(),
            r.bare.show(Unit::Ms),
            r.bwrap.median() / r.bare.median(),
            r.runtime.len(),
            r.run_dir.display()
        ),
        format!(
            "sandbox-alone floor: `bwrap` alone with our mounts, {} containers back to back, {} at once (the daemon's default concurrency): {} per container",
            r.floor_total,
            r.floor_workers,
            Unit::Ms.fmt(r.floor_per)
        ),
        format!(
            "the process runtime as the daemon runs it (`run_workflow`, resident sandbox), {} containers back to back, {} at once: {} per container ({:.2}× the bwrap-alone floor)",
            r.floor_total,
            r.floor_workers,
            Unit::Ms.fmt(r.runtime_floor_per),
            r.runtime_floor_per / r.floor_per
        ),
    ]
}
