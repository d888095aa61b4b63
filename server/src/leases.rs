//! Which devices may hold documents in memory at once.
//!
//! An exchange keeps its documents loaded from its first round to its last
//! (no reload between rounds), so memory follows the exchanges in progress.
//! A *lease* is a device's right to have one: at most
//! [`crate::state::Limits::max_syncing_devices`] devices hold one, and a
//! device without one waits for it in [`crate::sync_api::admit`], before
//! its body is read, holding a connection but neither its upload nor a
//! document. Memory then follows the lease count, not the devices that
//! connect at once.
//!
//! A lease ends when the server's answer to a round says nothing (the
//! exchange is done, as far as the server can tell: [`Leases::finish`]), or
//! when its device has sent nothing for [`Limits::syncing_idle`] (a device
//! cut off mid-exchange); its exchange's documents are then let go of, and
//! a device that comes back queues for a lease again and reloads what the
//! cache dropped. A round in progress never loses its lease.
//!
//! [`Limits::syncing_idle`]: crate::state::Limits::syncing_idle

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The leases of a server.
pub struct Leases {
    /// One permit per lease.
    permits: Arc<Semaphore>,
    /// The leases held, by device id.
    held: Mutex<HashMap<String, Held>>,
    /// A lease whose device sent nothing for this long may be taken back.
    idle: Duration,
}

/// One lease.
struct Held {
    /// Returned to [`Leases::permits`] when the lease is dropped.
    _permit: OwnedSemaphorePermit,
    /// Requests of the device inside the lease now (one, as a device's
    /// requests take turns, or zero between rounds).
    in_flight: usize,
    /// When the device's last request left, for expiry.
    last_used: Instant,
    /// Set by [`Leases::finish`]: the lease ends when its request leaves.
    finished: bool,
}

/// A request inside its device's lease; leaving (drop) starts the idle clock.
pub struct InLease<'a> {
    leases: &'a Leases,
    device: String,
}

impl Leases {
    /// `count` leases (at least one), taken back after `idle` without a request.
    pub fn new(count: usize, idle: Duration) -> Self {
        Self { permits: Arc::new(Semaphore::new(count.max(1))), held: Mutex::new(HashMap::new()), idle }
    }

    /// Enters `device`'s lease, waiting for one if it has none. While it
    /// waits it takes back idle leases, handing their devices to
    /// `let_go` (whose exchanges must then release their documents).
    /// `None` when the server is shutting down.
    pub async fn enter(&self, device: &str, let_go: impl Fn(&[String])) -> Option<InLease<'_>> {
        let poll = (self.idle / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            if self.join(device, None) {
                return Some(InLease { leases: self, device: device.to_owned() });
            }
            match tokio::time::timeout(poll, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => {
                    self.join(device, Some(permit));
                    return Some(InLease { leases: self, device: device.to_owned() });
                }
                Ok(Err(_closed)) => return None,
                Err(_waited) => {
                    let expired = self.expire_idle();
                    if !expired.is_empty() {
                        let_go(&expired);
                    }
                }
            }
        }
    }

    /// Counts a request into `device`'s lease if it has one, or into a new
    /// lease made of `permit`; false when it has none and no permit came.
    fn join(&self, device: &str, permit: Option<OwnedSemaphorePermit>) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lease) = held.get_mut(device) {
            lease.in_flight += 1;
            lease.finished = false;
            return true; // a spare permit, if any, goes back on drop
        }
        let Some(permit) = permit else { return false };
        held.insert(
            device.to_owned(),
            Held { _permit: permit, in_flight: 1, last_used: Instant::now(), finished: false },
        );
        true
    }

    /// Ends `device`'s lease once its current request leaves: the server
    /// has nothing more to say in its exchange.
    pub fn finish(&self, device: &str) {
        if let Some(lease) = self.held.lock().unwrap_or_else(|p| p.into_inner()).get_mut(device) {
            lease.finished = true;
        }
    }

    /// Takes back the leases with no request inside for the idle time;
    /// returns their devices.
    pub fn expire_idle(&self) -> Vec<String> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let idle: Vec<String> = held
            .iter()
            .filter(|(_, l)| l.in_flight == 0 && l.last_used.elapsed() >= self.idle)
            .map(|(d, _)| d.clone())
            .collect();
        for device in &idle {
            held.remove(device);
        }
        idle
    }

    /// Devices holding a lease now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for InLease<'_> {
    fn drop(&mut self) {
        let mut held = self.leases.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lease) = held.get_mut(&self.device) {
            lease.in_flight = lease.in_flight.saturating_sub(1);
            lease.last_used = Instant::now();
            if lease.in_flight == 0 && lease.finished {
                held.remove(&self.device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_device_waits_for_a_lease_and_gets_an_idle_one() {
        let leases = Leases::new(1, Duration::from_millis(60));
        let first = leases.enter("dev-a", |_| {}).await.expect("a lease");
        drop(first);
        assert_eq!(leases.held(), 1, "between rounds the lease stays with its device");
        let let_go = Mutex::new(Vec::new());
        let started = Instant::now();
        let second = leases
            .enter("dev-b", |d| let_go.lock().unwrap().extend_from_slice(d))
            .await
            .expect("a lease once dev-a's is idle");
        assert!(started.elapsed() >= Duration::from_millis(60), "dev-a's lease was idle only after 60 ms");
        assert_eq!(*let_go.lock().unwrap(), vec!["dev-a".to_owned()]);
        drop(second);
    }

    #[tokio::test]
    async fn a_finished_lease_is_free_at_once_and_a_round_in_progress_keeps_its_own() {
        let leases = Leases::new(1, Duration::from_secs(3600));
        let a = leases.enter("dev-a", |_| {}).await.expect("a lease");
        // dev-b cannot get one while dev-a's round is in progress, however long.
        let waiting = tokio::time::timeout(Duration::from_millis(100), leases.enter("dev-b", |_| {})).await;
        assert!(waiting.is_err(), "dev-b waited");
        leases.finish("dev-a");
        assert_eq!(leases.held(), 1, "finishing takes effect when the request leaves");
        drop(a);
        assert_eq!(leases.held(), 0);
        let b = tokio::time::timeout(Duration::from_millis(500), leases.enter("dev-b", |_| {}))
            .await
            .expect("dev-b no longer waits")
            .expect("a lease");
        // A device coming back within its lease does not wait.
        drop(b);
        let again = tokio::time::timeout(Duration::from_millis(100), leases.enter("dev-b", |_| {})).await;
        assert!(again.is_ok(), "dev-b re-entered its own lease");
    }
}
