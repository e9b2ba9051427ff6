//! `promised run`: parses the daemon's flags and starts it ([`crate::daemon::run`]) on a
//! multi-threaded runtime, until SIGTERM or SIGINT.
//!
//! Exit codes: `0` after a drain, `2` the daemon could not start (bad config, port in use,
//! unreadable state directory).

use std::path::PathBuf;

use clap::Args;

use super::DaemonConfigArgs;
use super::stderr::eprint_error;

/// Exit status and examples at the end of `promised run --help`.
pub(super) const RUN_EXAMPLES: &str = "\
Runs until SIGTERM or SIGINT (which drain running pipelines); SIGHUP reloads the daemon config.

Exit status: 0 after a drain, 2 the daemon could not start (bad config, port in use,
unreadable state directory).

Examples:
  promised run --config /srv/platform-config --daemon-config /etc/promised/promised.yaml
  promised run --config https://github.com/acme/platform-config.git --ref main --poll-interval 30s
  promised run --config . --listen 127.0.0.1:8473 --log-format json";

/// `promised run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The config repo: a directory (watched) or a Git repository (polled; with --ref).
    #[arg(long, value_name = "DIR|GIT-URL")]
    pub config: String,
    /// Git ref to follow: a branch or tag (makes --config a Git repository; default HEAD for
    /// URLs).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Daemon config and state directory.
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// HTTP listen address for webhooks, health, metrics and status (overrides listen in the
    /// daemon config; default 127.0.0.1:8473).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Git poll interval, e.g. 30s or 5m (overrides pollInterval in the daemon config).
    #[arg(long, value_name = "DURATION")]
    pub poll_interval: Option<String>,
    /// File with the webhook secret (overrides webhookSecretFile in the daemon config).
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Pipelines running at once (overrides concurrency in the daemon config).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
}

impl RunArgs {
    /// Flag values as a partial settings map.
    pub fn flags(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(v) = &self.listen {
            m.insert("listen".into(), v.clone().into());
        }
        if let Some(v) = &self.poll_interval {
            m.insert("pollInterval".into(), v.clone().into());
        }
        if let Some(v) = &self.webhook_secret_file {
            m.insert(
                "webhookSecretFile".into(),
                v.to_string_lossy().into_owned().into(),
            );
        }
        if let Some(v) = self.concurrency {
            m.insert("concurrency".into(), v.into());
        }
        if let Some(v) = &self.daemon.state_dir {
            m.insert("stateDir".into(), v.to_string_lossy().into_owned().into());
        }
        m
    }
}

/// Runs `promised run` until it is stopped; returns the exit code (see the module docs).
pub fn run_cmd(a: &RunArgs) -> i32 {
    let source = super::source_of(&a.config, a.reference.as_deref());
    let opts = crate::daemon::DaemonOptions {
        source,
        daemon_config: a.daemon.daemon_config.clone(),
        flags: a.flags(),
    };
    let Some(rt) = super::runtime() else { return 2 };
    let code = match rt.block_on(crate::daemon::run(opts)) {
        Ok(()) => 0,
        Err(e) => {
            eprint_error(e);
            2
        }
    };
    // A blocking task still inside a network call (a fetch from a server that stopped
    // answering, cut short by the shutdown grace) must not keep the process alive: dropping
    // the runtime would wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}
