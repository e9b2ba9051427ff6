//! The runner every fuzz target uses: proptest's `TestRunner` with a case budget (CI) or a
//! time budget (the long form), each case run on its own thread with a timeout (no hang) and
//! its peak allocation measured by a counting global allocator (bounded memory).

use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Counts every allocation of this test binary (current and peak bytes).
#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// One target at a time: the peak allocation of a case is only its own when nothing else
/// allocates, and the long form is meant to use one core.
static SERIAL: Mutex<()> = Mutex::new(());

/// Most a case may allocate above what was allocated when it started: 256 MiB. Inputs are at
/// most a few hundred KiB, so anything near this is an expansion (an alias bomb that is not
/// refused, a size taken from the input and allocated up front).
pub const MAX_CASE_ALLOCATION: usize = 256 << 20;

/// How long one case may run before it counts as a hang: `PROMISED_FUZZ_CASE_TIMEOUT`
/// seconds, default 60 (cases take milliseconds; the bound is generous for a loaded machine).
fn case_timeout() -> Duration {
    Duration::from_secs(env_u64("PROMISED_FUZZ_CASE_TIMEOUT").unwrap_or(60))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// How much to run: `PROMISED_FUZZ_SECONDS` (run batches until that many seconds have
/// passed, random seeds), else `PROMISED_FUZZ_CASES` or the target's CI default (one batch,
/// a fixed seed per target so CI is reproducible).
enum Budget {
    Cases(u32),
    Seconds(u64),
}

fn budget(ci_cases: u32) -> Budget {
    match env_u64("PROMISED_FUZZ_SECONDS") {
        Some(s) => Budget::Seconds(s),
        None => Budget::Cases(
            env_u64("PROMISED_FUZZ_CASES")
                .map(|c| c as u32)
                .unwrap_or(ci_cases),
        ),
    }
}

/// The largest allocation peak of any case of the running target.
static MAX_PEAK: AtomicUsize = AtomicUsize::new(0);
/// Cases run by the running target.
static CASES: AtomicU64 = AtomicU64::new(0);

/// Runs `check` on inputs drawn from `strategy`. A case fails when `check` returns an error,
/// panics, does not return within the case timeout, or allocates more than
/// [`MAX_CASE_ALLOCATION`]; the target then panics with the (shrunk) input and the seed.
/// Prints a tally line `fuzz target NAME: N cases in S s, 0 failures, …`.
pub fn fuzz<S>(name: &str, ci_cases: u32, strategy: S, check: fn(S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: Send + 'static + Debug,
{
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    MAX_PEAK.store(0, Ordering::Relaxed);
    CASES.store(0, Ordering::Relaxed);
    let budget = budget(ci_cases);
    let start = Instant::now();
    // CI: a seed fixed per target; the long form: a new one per batch, printed on failure.
    let mut seed: u64 = match budget {
        Budget::Cases(_) => name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        }),
        Budget::Seconds(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    let mut batches = 0u64;
    loop {
        let cases = match budget {
            Budget::Cases(c) => c,
            Budget::Seconds(_) => 500,
        };
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_time: 120_000,
            ..Config::default()
        };
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
        let mut runner = TestRunner::new_with_rng(config, rng);
        let result = runner.run(&strategy, |input| guarded(input, check));
        if let Err(e) = result {
            let what = match e {
                TestError::Abort(why) => format!("aborted: {why}"),
                TestError::Fail(why, input) => format!("{why}\nminimal failing input: {input:#?}"),
            };
            panic!(
                "fuzz target {name} failed after {} cases (seed {seed:#018x}): {what}",
                CASES.load(Ordering::Relaxed)
            );
        }
        batches += 1;
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        match budget {
            Budget::Cases(_) => break,
            Budget::Seconds(s) if start.elapsed() >= Duration::from_secs(s) => break,
            Budget::Seconds(_) => {}
        }
    }
    println!(
        "fuzz target {name}: {} cases in {:.0} s ({batches} batches), 0 failures, largest allocation peak of a case {:.1} MiB",
        CASES.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        MAX_PEAK.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
    );
}

/// Runs `check` once on `input`, guarded as a fuzz case (thread, timeout, allocation bound);
/// panics with the reason when it fails. Prints the case's time and allocation peak.
pub fn once<T: Send + 'static + Debug>(name: &str, input: T, check: fn(T) -> Result<(), String>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    MAX_PEAK.store(0, Ordering::Relaxed);
    let start = Instant::now();
    if let Err(e) = guarded(input, check) {
        panic!("{name}: {e}");
    }
    println!(
        "{name}: {:.1} s, allocation peak {:.1} MiB",
        start.elapsed().as_secs_f64(),
        MAX_PEAK.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
    );
}

/// One case on its own thread (default 2 MiB stack, as the daemon's threads have): its result,
/// a panic, a timeout or an allocation over the bound.
fn guarded<T: Send + 'static + Debug>(
    input: T,
    check: fn(T) -> Result<(), String>,
) -> Result<(), TestCaseError> {
    CASES.fetch_add(1, Ordering::Relaxed);
    let base = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| check(input)));
            let _ = tx.send(r);
        })
        .map_err(|e| TestCaseError::fail(format!("cannot start a thread: {e}")))?;
    let outcome = rx.recv_timeout(case_timeout());
    let result = match outcome {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => Err(TestCaseError::fail(why)),
        Ok(Err(panic)) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(TestCaseError::fail(format!("panicked: {msg}")))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(TestCaseError::fail(format!(
                "no answer within {:?}: a hang (PROMISED_FUZZ_CASE_TIMEOUT sets the bound)",
                case_timeout()
            )));
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(TestCaseError::fail(
            "the case's thread ended without an answer",
        )),
    };
    let _ = handle.join();
    let peak = ALLOC.peak_usage().saturating_sub(base);
    MAX_PEAK.fetch_max(peak, Ordering::Relaxed);
    if peak > MAX_CASE_ALLOCATION {
        return Err(TestCaseError::fail(format!(
            "allocated {peak} bytes at its peak, over the {MAX_CASE_ALLOCATION}-byte bound"
        )));
    }
    result
}
