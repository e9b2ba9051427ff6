//! The `promised` binary: parses the command line and hands over to [`promised::cli`].

use clap::Parser;

/// mimalloc instead of glibc's allocator: a pass over 10,000 requests allocates and frees
/// millions of small objects, where glibc spends most of its time consolidating free lists
/// (measured in docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option index of the purge delay (`mi_option_purge_delay` in `mimalloc.h`, the
/// same in its v2 and v3; `libmimalloc-sys` exports no constant for it).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// For the daemon (`promised run`): returns freed memory to the system at once (mimalloc's
/// purge delay 0 instead of its default 1,000 ms), unless `MIMALLOC_PURGE_DELAY` is set, which
/// mimalloc reads itself.
///
/// A pass frees most of what it allocates within a second (the admitted documents, the state
/// store's tree and pack), so with the default delay the pages of one stage were still
/// committed when the next stage allocated its own: peak RSS of a cold pass over 10,000
/// requests 270–306 MB with the default, 221 MB with 0, for the same heap and time
/// (docs/benchmarks.md, "Memory", third round). Short-lived commands keep the default: the
/// purges cost a whole-process no-op at 10,000 requests about 30 ms, and their memory goes back
/// when they exit. Call while the process has one thread (mimalloc's options are not thread
/// safe).
#[cfg(feature = "mimalloc")]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain store into mimalloc's option table, made before any other thread
        // exists.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

fn main() {
    // No transparent huge pages for promised (inherited by what it starts), as mimalloc's own
    // `MIMALLOC_ALLOW_THP=0` does: mimalloc advises huge pages for its arenas, and with the
    // common `defrag=madvise` setting every first touch of such a 2 MiB page may compact
    // memory synchronously. A no-op `promised reconcile` at 10,000 requests spent 0.1–0.66 s
    // of system time there (0.12–0.18 s without) and peaked 15–25 MB higher
    // (docs/benchmarks.md, "No-op and one-change paths"). Failure (an old kernel) is harmless.
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    // The resident sandbox's helper: before anything else, while the process has one thread
    // (it unshares a user namespace and forks).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "sandbox-helper")
    {
        std::process::exit(promised::pipeline::resident::helper::main());
    }
    let cli = promised::cli::Cli::try_parse().unwrap_or_else(|e| {
        // `promised plan` exits 2 for "changes" (like `terraform plan -detailed-exitcode`):
        // a command line it cannot parse is an error, 1, not clap's usual 2.
        let plan = std::env::args().skip(1).find(|a| !a.starts_with('-')) == Some("plan".into());
        if plan && e.use_stderr() {
            let _ = e.print();
            std::process::exit(1);
        }
        e.exit()
    });
    let daemon = matches!(cli.command, promised::cli::Command::Run(_));
    #[cfg(feature = "mimalloc")]
    if daemon {
        tune_allocator();
    }
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a journal or log file gets plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cli.log_format() {
        promised::settings::LogFormat::Json => {
            builder.json().init();
            promised::cli::set_json_logs(true);
        }
        promised::settings::LogFormat::Text => builder.init(),
    }
    let code = promised::cli::run(cli, &mut std::io::stdout().lock());
    promised::pipeline::rundir::remove_own();
    statestores::git::credentials::remove_key_dirs();
    std::process::exit(code);
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use super::*;

    /// The option index is mimalloc's purge delay: its default is 1,000 ms in mimalloc v3
    /// (which `libmimalloc-sys` builds unless its `v2` feature is on), and the tuning sets
    /// it to 0 unless the environment already did.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_is_zero_unless_the_environment_sets_it() {
        // SAFETY: reads and writes of mimalloc's option table; this test binary runs no
        // other test touching it.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), 1000, "mimalloc's default purge delay, at this index");
        }
        let before = get();
        tune_allocator();
        let expected = if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            0
        } else {
            before
        };
        assert_eq!(get(), expected);
    }
}
