//! The results as markdown, in the shape of docs/benchmarks.md's "Results" section: every
//! measure at every size beside its goal (issue 25) and the figure before that issue, the
//! cost per request across sizes, and the sandbox breakdown.

use crate::corepath::SizeResult;
use crate::sandbox::{SandboxResult, ladder_table, summary};
use crate::stats::{Samples, Unit, mb, sig3, thousands};
use crate::store::StoreResult;

/// The size the goals are stated for.
const GOAL_N: usize = 10_000;

/// Everything one run measured.
pub struct Results {
    /// The header lines (machine, commit, parameters, duration).
    pub header: Vec<String>,
    pub sizes: Vec<SizeResult>,
    pub stores: Vec<(usize, StoreResult)>,
    pub sandbox: Option<SandboxResult>,
    /// Why the image runtime was not measured, when it was not.
    pub image_skipped: Option<String>,
    pub cores: usize,
    pub notes: Vec<String>,
}

/// One row of the goals table.
struct Goal {
    measure: &'static str,
    goal: &'static str,
    before: &'static str,
    cell: fn(&Results, &SizeResult) -> String,
    /// Whether the goal is met, judged at [`GOAL_N`]; `None`: reported only.
    met: fn(&Results, &SizeResult) -> Option<bool>,
}

fn s_ms(s: &Samples) -> String {
    s.show(Unit::Ms)
}

fn cold_image_ratio(s: &SizeResult) -> Option<f64> {
    let img = s.cold_image.as_ref()?;
    Some(img.median() / s.cold_host.median())
}

fn floor_s(r: &Results, n: usize) -> Option<f64> {
    r.sandbox.as_ref().map(|sb| sb.floor_per * n as f64)
}

fn max_kib(v: &[u64]) -> u64 {
    v.iter().copied().max().unwrap_or(0)
}

const GOALS: &[Goal] = &[
    Goal {
        measure: "cold pass, host process runtime: `promised reconcile` start to exit (commit pushed)",
        goal: "≤ 30 s at 10,000",
        before: "59.5–71.8 s",
        cell: |_, s| {
            format!(
                "{}; {:.2} ms/request",
                s.cold_host.show(Unit::S),
                s.cold_host.median() * 1e3 / s.n as f64
            )
        },
        met: |_, s| Some(s.cold_host.median() <= 30.0),
    },
    Goal {
        measure: "sandbox-alone floor: `bwrap` alone with our mounts, back to back at the daemon's concurrency, one per request",
        goal: "the cold pass is not bounded by it (cold < floor)",
        before: "33.3–57.2 s (cold 1.2–1.8× it)",
        cell: |r, s| match floor_s(r, s.n) {
            Some(f) => format!("{f:.1} s; cold pass {:.2}× it", s.cold_host.median() / f),
            None => "not measured".into(),
        },
        met: |r, s| floor_s(r, s.n).map(|f| s.cold_host.median() < f),
    },
    Goal {
        measure: "cold pass, image runtime (pipeline container `image:` from a registry on 127.0.0.1, warm image cache)",
        goal: "≤ 1.2× the host process runtime",
        before: "per container 13.7 vs 8.5 ms: 1.6× (`scripts/bench-image-runtime`); sandbox alone 11 vs 5 ms",
        cell: |r, s| match (&s.cold_image, cold_image_ratio(s)) {
            (Some(img), Some(ratio)) => format!(
                "{}; {:.2} ms/request; **{ratio:.2}×** the host process runtime",
                img.show(Unit::S),
                img.median() * 1e3 / s.n as f64
            ),
            _ => format!(
                "skipped: {}",
                r.image_skipped.as_deref().unwrap_or("not measured")
            ),
        },
        met: |_, s| cold_image_ratio(s).map(|x| x <= 1.2),
    },
    Goal {
        measure: "peak RSS of the daemon (`VmHWM` after its cold pass, the changes and the no-op passes)",
        goal: "≤ 100 MB at 10,000",
        before: "258–266 MB",
        cell: |_, s| {
            format!(
                "**{}** ({} after the cold pass, {} resident at the end); {:.1} KB/request",
                mb(s.hwm),
                mb(s.hwm_after_cold),
                mb(s.rss),
                s.hwm as f64 / s.n as f64
            )
        },
        met: |_, s| Some(s.hwm as f64 / 1024.0 <= 100.0),
    },
    Goal {
        measure: "peak RSS of a cold `promised reconcile` (`VmHWM`, sampled every 10 ms): host process / image runtime",
        goal: "reported",
        before: "",
        cell: |_, s| {
            let img = if s.cold_image_hwm.is_empty() {
                "–".to_string()
            } else {
                mb(max_kib(&s.cold_image_hwm))
            };
            format!("{} / {img}", mb(max_kib(&s.cold_host_hwm)))
        },
        met: |_, _| None,
    },
    Goal {
        measure: "no-op: the whole `promised reconcile` process, nothing changed",
        goal: "≤ 150 ms at 10,000",
        before: "391–681 ms",
        cell: |_, s| format!("{}; {}", s_ms(&s.noop_process), s.noop_spawns),
        met: |_, s| Some(s.noop_process.median() <= 0.150),
    },
    Goal {
        measure: "no-op: daemon pass, same config commit (webhook to pass done), answered from the last pass, which changed nothing (README \"Quiet passes\")",
        goal: "≤ 20 ms at 10,000",
        before: "48–50 ms",
        cell: |_, s| format!("{}; {}", s_ms(&s.noop_same), s.noop_daemon_spawns[0]),
        met: |_, s| Some(s.noop_same.median() <= 0.020),
    },
    Goal {
        measure: "no-op: daemon pass, same config commit, reconciled in full (the pass right after one that wrote)",
        goal: "reported (the goal above, before quiet passes)",
        before: "48–50 ms",
        cell: |_, s| s_ms(&s.noop_full),
        met: |_, _| None,
    },
    Goal {
        measure: "no-op: daemon pass, new config commit changing no request",
        goal: "reported (issue 8: ≤ 100 ms)",
        before: "99.6 ms (`0d13fcf`)",
        cell: |_, s| format!("{}; {}", s_ms(&s.noop_new), s.noop_daemon_spawns[1]),
        met: |_, _| None,
    },
    Goal {
        measure: "one changed request: signed webhook to the new commit on the state store remote (daemon), p50",
        goal: "≤ 150 ms at 10,000",
        before: "274–288 ms",
        cell: |_, s| {
            format!(
                "**{}** (min {}, {} samples)",
                Unit::Ms.fmt(s.change.pct(50.0)),
                Unit::Ms.fmt(s.change.min()),
                s.change.len()
            )
        },
        met: |_, s| Some(s.change.pct(50.0) <= 0.150),
    },
    Goal {
        measure: "one changed request, p99",
        goal: "reported",
        before: "472 ms (`0d13fcf`, 50 samples)",
        cell: |_, s| Unit::Ms.fmt(s.change.pct(99.0)),
        met: |_, _| None,
    },
    Goal {
        measure: "the daemon's own cold start: process start to its first commit on the remote",
        goal: "reported",
        before: "",
        cell: |_, s| Unit::S.fmt(s.daemon_cold.as_secs_f64()),
        met: |_, _| None,
    },
];

/// `per request (marginal per added request since the previous size)` cells of one measure;
/// `value` in the row's unit, `None` when not measured at that size.
fn growth_row(
    md: &mut String,
    label: &str,
    unit: &str,
    scale: f64,
    sizes: &[SizeResult],
    value: impl Fn(&SizeResult) -> Option<f64>,
) {
    md.push_str(&format!("| {label} | {unit} |"));
    let mut prev: Option<(usize, f64)> = None;
    for s in sizes {
        match value(s) {
            Some(v) => {
                let per = v * scale / s.n as f64;
                match prev {
                    Some((pn, pv)) if s.n > pn => {
                        let marginal = (v - pv) * scale / (s.n - pn) as f64;
                        md.push_str(&format!(" {} ({}) |", sig3(per), sig3(marginal)));
                    }
                    _ => md.push_str(&format!(" {} |", sig3(per))),
                }
                prev = Some((s.n, v));
            }
            None => {
                md.push_str(" – |");
                prev = None;
            }
        }
    }
    md.push('\n');
}

impl Results {
    /// The markdown, starting with a `## Results` heading.
    pub fn markdown(&self) -> String {
        let mut md = String::from("## Results\n\n");
        for h in &self.header {
            md.push_str(h);
            md.push('\n');
        }
        md.push('\n');

        // Goals.
        let goal_size = self.sizes.iter().find(|s| s.n == GOAL_N);
        md.push_str("### Against the goals of issue 25\n\n| measure |");
        for s in &self.sizes {
            md.push_str(&format!(" N = {} |", thousands(s.n)));
        }
        md.push_str(" goal (2 cores) | before issue 25 (10,000) | verdict at 10,000 |\n|---|");
        for _ in &self.sizes {
            md.push_str("---|");
        }
        md.push_str("---|---|---|\n");
        for g in GOALS {
            md.push_str(&format!("| {} |", g.measure));
            for s in &self.sizes {
                md.push_str(&format!(" {} |", (g.cell)(self, s)));
            }
            let verdict = if g.goal.starts_with("reported") {
                "reported"
            } else {
                match goal_size.map(|s| (g.met)(self, s)) {
                    None => "not run at 10,000",
                    Some(None) => "not measured",
                    Some(Some(true)) => "met",
                    Some(Some(false)) => "**missed**",
                }
            };
            md.push_str(&format!(" {} | {} | {verdict} |\n", g.goal, g.before));
        }
        md.push_str(
            "\nCold passes and no-op processes: median (min–max) over the runs; daemon passes: \
             median (min–max) over at least 5. The image runtime's ratio is of the cold passes' \
             medians at the same size and concurrency, so it is the per-container ratio plus \
             what the image runtime costs once per pass.\n\n",
        );

        // Growth.
        md.push_str(
            "### Cost per request across sizes\n\nEach cell: the measure ÷ N, and in brackets the \
             marginal cost of the requests added since the previous size (Δ measure ÷ Δ N), \
             which leaves out what is paid once. Flat or falling is the goal (issue 25, \
             \"Growth\").\n\n| measure | unit |",
        );
        for s in &self.sizes {
            md.push_str(&format!(" N = {} |", thousands(s.n)));
        }
        md.push_str("\n|---|---|");
        for _ in &self.sizes {
            md.push_str("---|");
        }
        md.push('\n');
        let sz = &self.sizes;
        growth_row(
            &mut md,
            "cold pass, host process runtime",
            "ms/request",
            1e3,
            sz,
            |s| Some(s.cold_host.median()),
        );
        growth_row(
            &mut md,
            "cold pass, image runtime",
            "ms/request",
            1e3,
            sz,
            |s| s.cold_image.as_ref().map(Samples::median),
        );
        growth_row(
            &mut md,
            "no-op, whole process",
            "µs/request",
            1e6,
            sz,
            |s| Some(s.noop_process.median()),
        );
        growth_row(
            &mut md,
            "no-op, daemon, same commit",
            "µs/request",
            1e6,
            sz,
            |s| Some(s.noop_same.median()),
        );
        growth_row(
            &mut md,
            "no-op, daemon, same commit, full pass",
            "µs/request",
            1e6,
            sz,
            |s| Some(s.noop_full.median()),
        );
        growth_row(
            &mut md,
            "no-op, daemon, new commit",
            "µs/request",
            1e6,
            sz,
            |s| Some(s.noop_new.median()),
        );
        growth_row(&mut md, "one change, p50", "µs/request", 1e6, sz, |s| {
            Some(s.change.pct(50.0))
        });
        growth_row(&mut md, "daemon peak RSS", "KB/request", 1.0, sz, |s| {
            Some(s.hwm as f64)
        });
        growth_row(
            &mut md,
            "cold `promised reconcile` peak RSS, host process runtime",
            "KB/request",
            1.0,
            sz,
            |s| Some(max_kib(&s.cold_host_hwm) as f64),
        );
        md.push('\n');

        // The sandbox.
        if let Some(sb) = &self.sandbox {
            md.push_str("### One sandboxed run, part by part\n\n");
            md.push_str(&ladder_table(sb, self.cores));
            md.push('\n');
            for line in summary(sb) {
                md.push_str(&format!("- {line}\n"));
            }
            md.push('\n');
        }

        // The store.
        if !self.stores.is_empty() {
            md.push_str(
                "### Git state store: an N-file tree written and pushed\n\n| files | promised `StateStore::apply` | `git fast-import` + `git push` | ratio (min–max) | goal (issue 8) | before |\n|---|---|---|---|---|---|\n",
            );
            for (n, st) in &self.stores {
                md.push_str(&format!(
                    "| {} | {} | {} | {:.2}× ({:.2}–{:.2}) | ≤ 2× | 0.58× at 10,000 (`0d13fcf`) |\n",
                    thousands(*n),
                    s_ms(&st.ours),
                    s_ms(&st.git),
                    st.median_ratio(),
                    st.ratios[0],
                    st.ratios[st.ratios.len() - 1]
                ));
            }
            md.push('\n');
        }

        if !self.notes.is_empty() {
            for n in &self.notes {
                md.push_str(&format!("- {n}\n"));
            }
            md.push('\n');
        }
        md
    }
}
