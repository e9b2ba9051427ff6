//! The in-cluster parts of the daemon config: which runtime runs Pipelines
//! ([`Runtime`]), the Kubernetes Job runtime ([`KubernetesSettings`], key `kubernetes`) and
//! leader election ([`LeaderElectionSettings`], key `leaderElection`). README "In a cluster".

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where Pipelines run (`runtime:`; a Promise may choose with the annotation
/// `promised.dev/runtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// On this host: bubblewrap (or `sandbox: none`), with the image runtime when `images:`
    /// is set. The default.
    #[default]
    Process,
    /// As Kubernetes Jobs, one per Pipeline, like Kratix (needs `kubernetes:` or its
    /// defaults and an API to talk to).
    Kubernetes,
}

/// The Promise annotation that chooses the runtime of its workflows: `kubernetes` or
/// `process` (overrides the daemon config's `runtime:`).
pub const RUNTIME_ANNOTATION: &str = "promised.dev/runtime";

impl Runtime {
    /// The runtime a `promised.dev/runtime` annotation value names: `process` or
    /// `kubernetes`. Errors: any other value (returned as is, for the message).
    pub fn from_annotation(value: &str) -> Result<Runtime, String> {
        match value {
            "process" => Ok(Runtime::Process),
            "kubernetes" => Ok(Runtime::Kubernetes),
            other => Err(other.to_string()),
        }
    }
}

/// `kubernetes:`: the Kubernetes Job runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubernetesSettings {
    /// Namespace of the Jobs and their input Secrets. Default: the daemon pod's namespace
    /// (else `$KUBECONFIG`'s context namespace, else `default`).
    pub namespace: Option<String>,
    /// Image of the containers promised adds to each Job (input reader, output collector):
    /// the daemon's own image, which holds the `promised` binary. Default
    /// `ghcr.io/promised-dev/promised:<version of this binary>`.
    pub adapter_image: String,
    /// `ttlSecondsAfterFinished` of each Job: how long Kubernetes keeps a finished Job the
    /// daemon did not delete (it deletes the ones it has read). Default `1h`.
    #[serde(with = "humantime_serde")]
    pub job_ttl: Duration,
    /// An image pull Secret (in the Jobs' namespace) for the adapter image, listed first in
    /// each pod's `imagePullSecrets` (Kratix: `PIPELINE_ADAPTER_PULL_SECRET`). Default none.
    pub adapter_pull_secret: Option<String>,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            namespace: None,
            adapter_image: format!(
                "ghcr.io/promised-dev/promised:{}",
                env!("CARGO_PKG_VERSION")
            ),
            job_ttl: Duration::from_secs(3600),
            adapter_pull_secret: None,
        }
    }
}

/// `leaderElection:`: with two or more replicas, one reconciles and the others stand by on a
/// `coordination.k8s.io/v1` Lease. Unset: no election (one replica, or systemd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LeaderElectionSettings {
    /// Lease name (with shards: the prefix of `<leaseName>-shard-<i>`). Default `promised`.
    pub lease_name: String,
    /// Namespace of the Leases. Default: the daemon pod's namespace.
    pub namespace: Option<String>,
    /// This replica's identity, the Lease `holderIdentity`. Default `$POD_NAME`, else the
    /// host name.
    pub identity: Option<String>,
    /// Lease duration: a standby takes over at most this long after the leader stops
    /// renewing. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// A leader whose last renewal it has seen is older than this stops writing (its pass
    /// stops before the next state store write), so it stops before another replica may
    /// take the Lease; `leaseDuration - renewDeadline` is the clock skew between nodes that
    /// is tolerated. Below `leaseDuration`. Default `10s` (as client-go).
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    /// How often each replica reads its Leases: the leader checks its renewal (the write
    /// fence), standbys look for a free or expired Lease, and with shards the members are
    /// listed and shards rebalanced. At most half of `renewDeadline`. Default `2s` (as
    /// client-go).
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
    /// Shards the Promises are split into (each held by its own Lease). Default 1: one
    /// leader does all the work.
    pub shards: u32,
}

impl Default for LeaderElectionSettings {
    fn default() -> Self {
        LeaderElectionSettings {
            lease_name: "promised".into(),
            namespace: None,
            identity: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            shards: 1,
        }
    }
}
