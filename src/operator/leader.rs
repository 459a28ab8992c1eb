//! Leader election on a Lease, so that of several operator replicas exactly one reconciles.

use std::time::{Duration, Instant};

use kube_leader_election::{LeaseLock, LeaseLockResult};
use tokio_util::sync::CancellationToken;

/// How long a Lease stays valid without renewal; it is renewed every third of that.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// Waits until this replica holds the Lease; `false` when `stop` fired first.
pub async fn acquire(lock: &LeaseLock, stop: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            r = lock.try_acquire_or_renew() => match r {
                Ok(LeaseLockResult::Acquired(_)) => return true,
                Ok(LeaseLockResult::NotAcquired(_)) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the Lease; retrying"),
            },
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Renews the Lease until `stop`, then steps down so a standby replica takes over at once. A
/// renewal that fails for longer than two thirds of the TTL, or a Lease that another replica
/// took, means this replica may no longer reconcile: it cancels everything.
pub async fn keep(lock: LeaseLock, stop: CancellationToken, lost: CancellationToken) {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if let Err(e) = lock.step_down().await {
                    tracing::warn!(error = %e, "cannot release the Lease; it expires by itself");
                }
                return;
            }
            _ = tokio::time::sleep(LEASE_TTL / 3) => {}
        }
        match lock.try_acquire_or_renew().await {
            Ok(LeaseLockResult::Acquired(_)) => renewed = Instant::now(),
            Err(e) if renewed.elapsed() < LEASE_TTL * 2 / 3 => {
                tracing::warn!(error = %e, "cannot renew the Lease; retrying")
            }
            other => {
                tracing::error!(error = ?other.err(), "lost the Lease");
                lost.cancel();
                stop.cancel();
                return;
            }
        }
    }
}
