//! The `promised` binary: parses the command line and hands over to [`promised::cli`].

use clap::Parser;

fn main() {
    let cli = promised::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let code = promised::cli::run(cli, &mut std::io::stdout().lock());
    std::process::exit(code);
}
