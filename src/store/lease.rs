//! A lease: a small object that at most one process holds at a time, taken with a
//! conditional write, so that two compactors of one array file never overlap (two
//! overlapping compactions could delete a sidecar a third writer created after the
//! first one finished: see docs/remote.md#automatic-compaction).
//!
//! Design.
//! - Taking it: `PutMode::Create` of the lease object. Its body names the holder
//!   (`pid N host H`, the words `atlas.lock` uses, so a dead holder on this host is
//!   recognised at once) and when the lease ends (`expires_unix T`, the holder's
//!   clock) plus a random token, so every taking writes a new version.
//! - A lease past its end (or whose holder is a dead process of this host, or this
//!   process without holding it: a failed release, a torn write) is taken over with `PutMode::Update` on the version read: of two processes taking over
//!   the same stale lease, exactly one succeeds. Backends without conditional
//!   updates (a local directory) delete the stale object and create it again; two
//!   breakers there could both succeed only on one host, which the dead-pid check
//!   makes rare (documented in docs/reliability.md).
//! - A holder checks the lease before each step that must not overlap another
//!   holder's ([`Lease::check`]): still within its time, less a margin for the step
//!   itself, and the object still its own version. It never renews: a step that
//!   would outlast the lease is not started.
//! - Release deletes the object if it is still this holder's version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{GetResult, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::Result;

/// A lease held by this process; see the module notes.
pub struct Lease {
    token: u64,
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// What this holder wrote (a random token makes it unique): the object still
    /// holding it is the test of ownership (ETags of a local directory can repeat).
    body: Vec<u8>,
    taken: Instant,
    ttl: Duration,
    released: bool,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Tokens of the leases this process holds now.
static HELD: parking_lot::Mutex<Vec<u64>> = parking_lot::Mutex::new(Vec::new());

/// Whether a lease body names this very process but none of the leases it holds: one
/// it failed to release, or a torn write of one (a store that tore the PUT).
fn orphan_of_ours(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let words: Vec<&str> = text.split_whitespace().collect();
    let mine = words.len() >= 4 && words[0] == "pid" && words[1] == std::process::id().to_string() && words[2] == "host" && words[3] == super::atlas::host_name();
    let token = words.iter().position(|w| *w == "token").and_then(|i| words.get(i + 1)).and_then(|t| u64::from_str_radix(t, 16).ok());
    mine && !token.is_some_and(|t| HELD.lock().contains(&t))
}

/// Whether a lease body is past its end (by this host's clock) or names a dead
/// process of this host. A body that cannot be read is treated as expired once the
/// object is older than `ttl` (by the store's clock, through `last_modified`).
fn expired(body: &[u8], got_age: Duration, ttl: Duration) -> bool {
    // Every lease body ends in its token and a newline: one that does not is a torn
    // write (a store that kept a prefix), which no holder can have checked as its own.
    let whole = body.ends_with(b"\n") && String::from_utf8_lossy(body).split_whitespace().any(|w| w == "token");
    if !whole || super::atlas::holder_is_dead(body) || orphan_of_ours(body) {
        return true;
    }
    let text = String::from_utf8_lossy(body);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "expires_unix" {
            return match words.next().and_then(|t| t.parse::<u64>().ok()) {
                Some(t) => unix_now() >= t,
                None => got_age > ttl,
            };
        }
    }
    got_age > ttl
}

impl Lease {
    /// Takes the lease at `path` for `ttl`, or returns `None` when another process
    /// holds it (not expired).
    pub async fn try_acquire(store: Arc<dyn ObjectStore>, path: Path, ttl: Duration) -> Result<Option<Lease>> {
        static TAKINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let token = nanos ^ TAKINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed).rotate_left(48);
        let body = format!("pid {} host {} expires_unix {} token {token:016x}\n", std::process::id(), super::atlas::host_name(), unix_now() + ttl.as_secs());
        let payload = || PutPayload::from(body.clone().into_bytes());
        let taken = Instant::now();
        let made = |r: object_store::PutResult, store: Arc<dyn ObjectStore>, path: Path| {
            let _ = r;
            HELD.lock().push(token);
            Some(Lease { token, store, path, body: body.clone().into_bytes(), taken, ttl, released: false })
        };
        // Twice: once more when the holder released it between our create and our read.
        for _ in 0..2 {
            match store.put_opts(&path, payload(), PutOptions::from(PutMode::Create)).await {
                Ok(r) => return Ok(made(r, store, path)),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let got: GetResult = match store.get(&path).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let age = (chrono::Utc::now() - got.meta.last_modified).to_std().unwrap_or_default();
            let theirs = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
            let held = got.bytes().await?;
            if !expired(&held, age, ttl) {
                return Ok(None);
            }
            tracing::info!(lease = %path, holder = %String::from_utf8_lossy(&held).trim(), "taking over an expired compaction lease");
            return match store.put_opts(&path, payload(), PutOptions::from(PutMode::Update(theirs))).await {
                Ok(r) => Ok(made(r, store, path)),
                // Someone else took it over first.
                Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => Ok(None),
                Err(object_store::Error::NotImplemented { .. }) => {
                    let _ = store.delete(&path).await;
                    match store.put_opts(&path, payload(), PutOptions::from(PutMode::Create)).await {
                        Ok(r) => Ok(made(r, store, path)),
                        Err(object_store::Error::AlreadyExists { .. }) => Ok(None),
                        Err(e) => Err(e.into()),
                    }
                }
                Err(e) => Err(e.into()),
            };
        }
        Ok(None)
    }

    /// Whether a step taking up to `margin` may start: the lease has that long left
    /// and the object is still this holder's version. An error when not.
    pub async fn check(&self, margin: Duration) -> Result<()> {
        if self.taken.elapsed() + margin >= self.ttl {
            return Err(super::ErrorDetail::Conflict(format!("{}: the compaction lease ran out before the step could start", self.path)).into());
        }
        if !self.ours().await? {
            return Err(super::ErrorDetail::Conflict(format!("{}: the compaction lease was taken over by another process", self.path)).into());
        }
        Ok(())
    }

    /// Whether the lease object still holds what this holder wrote.
    async fn ours(&self) -> Result<bool> {
        match self.store.get(&self.path).await {
            Ok(g) => Ok(g.bytes().await?.as_ref() == self.body.as_slice()),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up (deletes the object if it is still this holder's).
    pub async fn release(mut self) {
        self.released = true;
        HELD.lock().retain(|t| *t != self.token);
        if self.ours().await.unwrap_or(false)
            && let Err(e) = self.store.delete(&self.path).await
        {
            tracing::warn!(lease = %self.path, error = %e, "could not release a compaction lease; it expires by itself");
        }
    }
}

impl Drop for Lease {
    /// Only reached when the holder was cancelled: release in the background.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        HELD.lock().retain(|t| *t != self.token);
        let (store, path, body) = (self.store.clone(), self.path.clone(), std::mem::take(&mut self.body));
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Ok(g) = store.get(&path).await
                    && g.bytes().await.is_ok_and(|b| b.as_ref() == body.as_slice())
                {
                    let _ = store.delete(&path).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    fn stores() -> Vec<(Arc<dyn ObjectStore>, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        vec![(Arc::new(InMemory::new()), None), (local, Some(dir))]
    }

    #[tokio::test]
    async fn one_holder_at_a_time_then_release() {
        for (store, _dir) in stores() {
            let p = Path::from("x/compact.lease");
            let a = Lease::try_acquire(store.clone(), p.clone(), Duration::from_secs(60)).await.unwrap().expect("free lease is taken");
            assert!(Lease::try_acquire(store.clone(), p.clone(), Duration::from_secs(60)).await.unwrap().is_none(), "a held lease is refused");
            a.check(Duration::from_secs(1)).await.unwrap();
            a.release().await;
            assert!(store.head(&p).await.is_err(), "release deletes the object");
            let b = Lease::try_acquire(store.clone(), p.clone(), Duration::from_secs(60)).await.unwrap();
            assert!(b.is_some(), "a released lease is free again");
        }
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_once_and_its_holder_notices() {
        for (store, _dir) in stores() {
            let p = Path::from("x/compact.lease");
            // A lease that ends at once (ttl 0): its holder may start no step.
            let old = Lease::try_acquire(store.clone(), p.clone(), Duration::ZERO).await.unwrap().expect("taken");
            assert!(old.check(Duration::ZERO).await.is_err(), "a lease past its time allows no step");
            let new = Lease::try_acquire(store.clone(), p.clone(), Duration::from_secs(60)).await.unwrap().expect("expired lease taken over");
            assert!(Lease::try_acquire(store.clone(), p.clone(), Duration::from_secs(60)).await.unwrap().is_none(), "the new holder's lease is refused");
            // The old holder, checking by version, sees it lost the lease, and its
            // release leaves the new holder's object alone.
            let mut stale = old;
            stale.ttl = Duration::from_secs(60);
            let e = stale.check(Duration::ZERO).await.unwrap_err().to_string();
            assert!(e.contains("taken over"), "{e}");
            stale.release().await;
            assert!(store.head(&p).await.is_ok(), "the old holder's release keeps the new lease");
            new.check(Duration::from_secs(1)).await.unwrap();
            new.release().await;
        }
    }

    #[tokio::test]
    async fn two_takers_of_one_stale_lease_one_wins() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let p = Path::from("x/compact.lease");
        let dead = Lease::try_acquire(store.clone(), p.clone(), Duration::ZERO).await.unwrap().expect("taken");
        std::mem::forget(dead);
        let (a, b) = tokio::join!(Lease::try_acquire(store.clone(), p.clone(), Duration::from_secs(60)), Lease::try_acquire(store.clone(), p.clone(), Duration::from_secs(60)));
        let won = [a.unwrap(), b.unwrap()].into_iter().filter(|l| l.is_some()).count();
        assert_eq!(won, 1, "exactly one of two takers of a stale lease holds it");
    }

    /// A lease this process left behind (its release failed, or the store tore its PUT)
    /// does not block this process's next compaction for the lease's length.
    #[tokio::test]
    async fn a_lease_this_process_left_behind_is_taken_at_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let p = Path::from("x/compact.lease");
        let torn = format!("pid {} host {} expi", std::process::id(), super::super::atlas::host_name());
        store.put(&p, PutPayload::from(torn.into_bytes())).await.unwrap();
        assert!(Lease::try_acquire(store.clone(), p.clone(), Duration::from_secs(60)).await.unwrap().is_some(), "a torn lease of this process is stale");
        let held = Lease::try_acquire(store.clone(), Path::from("y/compact.lease"), Duration::from_secs(60)).await.unwrap().expect("taken");
        assert!(Lease::try_acquire(store.clone(), Path::from("y/compact.lease"), Duration::from_secs(60)).await.unwrap().is_none(), "a lease this process holds is not");
        drop(held);
    }

    #[test]
    fn expiry_reading() {
        let ttl = Duration::from_secs(60);
        let soon = format!("pid 1 host elsewhere expires_unix {} token 0\n", unix_now() + 30);
        assert!(!expired(soon.as_bytes(), Duration::ZERO, ttl));
        let past = format!("pid 1 host elsewhere expires_unix {} token 0\n", unix_now().saturating_sub(1));
        assert!(expired(past.as_bytes(), Duration::ZERO, ttl));
        assert!(expired(b"pid 1 host elsewhere expi", Duration::ZERO, ttl), "a torn body is stale at once");
        assert!(!expired(b"pid 1 host elsewhere token 0\n", Duration::from_secs(5), ttl));
        assert!(expired(b"pid 1 host elsewhere token 0\n", Duration::from_secs(61), ttl));
    }
}
