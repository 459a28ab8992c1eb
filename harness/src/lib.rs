//! The test cluster of c19: a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler) and a real node (kubelet, containerd, runc, CNI bridge), started inside
//! private network, mount and PID namespaces so that nothing leaves them and everything dies
//! with them.
//!
//! One home for the end-to-end suite (`tests/e2e`), the demo (`examples/demo.rs`) and any bench
//! that needs a cluster. The binaries come from `scripts/k8s-binaries` (Go modules, cached), the
//! packages from `scripts/install-deps` (Debian) and the images from `scripts/images` (OCI
//! layouts built without a registry): a test is only as real as what it runs.
//!
//! [`checker`] is the history checker of the fault suite and of the e2e lifecycle scenarios:
//! what a history of acknowledged writes says every agent must hold.

pub mod checker;
pub mod cluster;
pub mod cmd;
pub mod netns;
pub mod node;

pub use cluster::Cluster;
pub use cmd::{eventually, run};

/// The address of the node inside the namespace: the API server advertises it, the kubelet
/// registers with it, pods reach the API server through it.
pub const NODE_IP: &str = "10.0.0.1";
/// The node's pod range (CNI `host-local`); the controller-manager allocates the same one.
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The Service range; its first address is the `kubernetes` Service, routed to the API server.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// The node's name, as the kubelet registers it.
pub const NODE_NAME: &str = "c19-node";
