//! The `promised` binary: parses the command line and hands over to [`promised::cli`].

use clap::Parser;

/// mimalloc instead of glibc's allocator: a pass over 10,000 requests allocates and frees
/// millions of small objects, where glibc spends most of its time consolidating free lists
/// (measured in docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let default = if matches!(cli.command, promised::cli::Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
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
