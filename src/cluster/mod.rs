//! In-cluster operation: the Kubernetes API client, the access (RBAC) each in-cluster part
//! needs, and the settings of the Kubernetes Job runtime and of leader election.
//!
//! - [`access`]: every API call the daemon makes, as `(group, resource, verbs)`; the Role in
//!   `deploy/` grants exactly these (checked by `tests/deploy.rs`).
//! - [`settings`]: `runtime: kubernetes` + `kubernetes:` and `leaderElection:` of the daemon
//!   config.
//! - [`election`]: leader election and sharding on `coordination.k8s.io/v1` Leases
//!   ([`lease`] holds one Lease with a write gate, [`shards`] the pure shard and rendezvous
//!   functions); docs/sharding.md.
//!
//! The client comes from [`client`]: `kube::Config::infer` (in a pod: the service account
//! token and `KUBERNETES_SERVICE_HOST`; outside: `$KUBECONFIG` or `~/.kube/config`), so the
//! daemon needs no kubeconfig in a cluster.

pub mod access;
pub mod election;
pub mod lease;
pub mod settings;
pub mod shards;

#[cfg(test)]
mod shard_sim;

pub use access::{Access, required_access};
pub use election::{Election, Leadership};
pub use settings::{KubernetesSettings, LeaderElectionSettings, Runtime};

/// A client for the cluster the daemon runs in (or `$KUBECONFIG`'s current context), with
/// `namespace` as its default namespace when given (else the pod's own namespace, else
/// `default`).
///
/// Errors: no in-cluster environment and no kubeconfig, or an unreadable one; the message
/// says which (kube's `InferConfigError`).
pub async fn client(namespace: Option<&str>) -> Result<kube::Client, String> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes API to talk to: {e}"))?;
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        config.default_namespace = ns.to_string();
    }
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}
