//! Where the daemon keeps plaintext, and for how long (PRODUCT.md §7).
//!
//! Values for `run` are opened straight into secret memory ([`SecretMemory`]) and handed to the
//! child as a [`SecretEnv`]. With `--cache-ttl N` (default 60 s) a value is kept after its run
//! ends, so the next run within N idle seconds needs no round trip; it is evicted (wiped and
//! unmapped, `evict` in the trail) once idle that long, and at once when the server says the
//! session is revoked. A cached value is served only while it is younger than N seconds since it
//! was fetched (then it is fetched again), so steady use cannot keep a revoked or descoped value
//! alive past N seconds. `--cache-ttl 0` keeps nothing past its use. `get_credential` never caches:
//! the agent now holds its own copy, and a second one here would serve no one.
//!
//! A cached value is served without asking the server, so neither its audit nor its rate limit
//! sees that use (the trail does: `fetch` with outcome `cached`), and a revocation or a scope change
//! reaches a cached value only up to N seconds after it was fetched. Where every use must reach the server, run with
//! `--cache-ttl 0`.
//!
//! A high-value credential (released one approved use at a time) is never cached: each use is the
//! owner's decision. A value cached before the credential was marked lives out its TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkeys_core::ApiClient;
use agentkeys_core::exec::SecretEnv;
use agentkeys_core::integrity::Verifier;
use agentkeys_core::secret_mem::SecretMemory;
use agentkeys_core::session::Session;
use agentkeys_core::vault::{self, Namespace, VaultError};
use agentkeys_proto::ErrorCode;

use crate::trail::{Event, Trail, Via};

/// The default idle TTL of the cache.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Plaintext kept between uses, each value in its own secret memory.
#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    trail: Trail,
}

#[derive(Debug)]
struct Entry {
    value: Arc<SecretMemory>,
    /// When the server last answered for it: it is served from here only for the TTL after.
    fetched_at: Instant,
    /// When its last use ended (or began, while one is running).
    idle_since: Instant,
}

impl Cache {
    pub fn new(ttl: Duration, trail: Trail) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()), trail }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, service: &str) -> Option<Arc<SecretMemory>> {
        let now = Instant::now();
        let mut entries = self.entries();
        let entry = entries.get_mut(service)?;
        if now.duration_since(entry.fetched_at) >= self.ttl {
            // Too old to serve without asking the server again; the fetch replaces it.
            return None;
        }
        entry.idle_since = now;
        Some(Arc::clone(&entry.value))
    }

    fn put(&self, service: &str, value: &Arc<SecretMemory>) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        self.entries().insert(service.to_owned(), Entry { value: Arc::clone(value), fetched_at: now, idle_since: now });
    }

    /// A use of these services ended: their idle time starts now.
    pub fn done(&self, services: &[String]) {
        let now = Instant::now();
        let mut entries = self.entries();
        for service in services {
            if let Some(entry) = entries.get_mut(service) {
                entry.idle_since = now;
            }
        }
    }

    /// Evicts every value idle for the TTL and not in use by a running child; returns how many.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let evicted: Vec<String> = {
            let mut entries = self.entries();
            let due: Vec<String> = entries
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.value) == 1 && now.duration_since(e.idle_since) >= self.ttl)
                .map(|(service, _)| service.clone())
                .collect();
            // Dropping the entry drops the last reference: the memory is wiped and unmapped.
            for service in &due {
                entries.remove(service);
            }
            due
        };
        for service in &evicted {
            self.trail.record(Event::Evict, service, Via::Run, "idle");
        }
        evicted.len()
    }

    /// Drops every value (the session was revoked); values in use go when their run ends.
    pub fn clear(&self, why: &str) {
        let services: Vec<String> = self.entries().drain().map(|(service, _)| service).collect();
        for service in &services {
            self.trail.record(Event::Evict, service, Via::Run, why);
        }
    }

    /// Evicts idle values every second until the process ends.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        if self.ttl.is_zero() {
            return;
        }
        let cache = Arc::downgrade(self);
        let tick = self.ttl.min(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(cache) = cache.upgrade() else { return };
                cache.evict_idle(Instant::now());
            }
        });
    }
}

/// The credentials of `bindings` (`VAR`, service) as a secret environment for a child: from the
/// cache when there, else fetched, opened and moved into secret memory (the opened heap copy is
/// wiped at once). Records `fetch` (outcome `cached` for a cache hit) or `deny` in the trail.
/// `reason` is what the owner sees if a read needs an approval.
pub async fn open_for_run(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    (trail, cache): (&Trail, Option<&Cache>),
    bindings: Vec<(String, String)>,
    reason: Option<&str>,
) -> Result<(SecretEnv, Vec<String>), VaultError> {
    let mut env = SecretEnv::new();
    let mut services = Vec::with_capacity(bindings.len());
    for (var, service) in bindings {
        if let Some(value) = cache.and_then(|cache| cache.get(&service)) {
            trail.record(Event::Fetch, &service, Via::Run, "cached");
            env.push(var, value);
            services.push(service);
            continue;
        }
        let read = vault::read_for(client, session, verifier, Namespace::Vault, &service, reason).await;
        trail.record_read(&service, Via::Run, read.as_ref().map(|_| ()).map_err(|e| e.code()));
        let opened = match read {
            Ok(opened) => opened,
            Err(error) => {
                if let (Some(cache), Some(ErrorCode::Revoked | ErrorCode::SessionInvalid)) = (cache, error.code()) {
                    cache.clear("revoked");
                }
                return Err(error);
            }
        };
        let value = Arc::new(SecretMemory::copy_of(&opened.value).map_err(VaultError::SecretMemory)?);
        let high_value = opened.high_value;
        drop(opened);
        if let Some(cache) = cache.filter(|_| !high_value) {
            cache.put(&service, &value);
        }
        env.push(var, value);
        services.push(service);
    }
    Ok((env, services))
}
