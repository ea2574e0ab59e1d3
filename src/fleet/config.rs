//! [`Builder`]: where the fleet's Redis is, what the fleet is called, what it shares and how
//! long it waits; and the checked [`Settings`] the background task runs on.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::ProtocolVersion;

use super::Fleet;
use crate::ConfigError;

/// Configures a [`Fleet`]; see the [module docs](super) for what each setting is for.
///
/// Every setting has a default: `Fleet::builder().build()` joins the fleet `"default"` on
/// `redis://127.0.0.1:6379/`.
#[derive(Clone)]
pub struct Builder {
    url: String,
    prefix: String,
    fleet: String,
    share_manual: bool,
    share_failures: bool,
    failure_window: Duration,
    probe_lease: Duration,
    command_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    queue_capacity: usize,
    max_remote_open: Duration,
    runtime: Option<tokio::runtime::Handle>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            url: "redis://127.0.0.1:6379/".to_owned(),
            prefix: "tower-breaker".to_owned(),
            fleet: "default".to_owned(),
            share_manual: false,
            share_failures: true,
            failure_window: Duration::from_secs(10),
            probe_lease: Duration::from_secs(10),
            command_timeout: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            queue_capacity: 1024,
            max_remote_open: Duration::from_secs(3600),
            runtime: None,
        }
    }
}

impl Builder {
    /// The Redis server, as a `redis://` (or `rediss://`, `redis+unix://`) URL. Default
    /// `redis://127.0.0.1:6379/`. The fleet talks RESP3 to it (Redis 6 or later, or Valkey),
    /// whatever the URL's `protocol` says.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The first part of every key and channel name the fleet uses. Default `"tower-breaker"`.
    /// Fleets with different prefixes never see each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The fleet's name: the processes that share circuits (one service's replicas, say).
    /// Default `"default"`. Must not contain `|`.
    pub fn fleet(mut self, fleet: impl Into<String>) -> Self {
        self.fleet = fleet.into();
        self
    }

    /// Whether [`force_open`](crate::circuit_breaker::Handle::force_open),
    /// [`force_closed`](crate::circuit_breaker::Handle::force_closed) and
    /// [`reset`](crate::circuit_breaker::Handle::reset) in one process apply to every process
    /// that also shares manual operations. Default `false`: manual operations stay local.
    pub fn share_manual(mut self, share: bool) -> Self {
        self.share_manual = share;
        self
    }

    /// Whether the failures of shared circuits are counted across the fleet, so that a
    /// circuit trips everywhere once the fleet as a whole has seen its `consecutive_failures`
    /// (see [Counting failures across the fleet](super#counting-failures-across-the-fleet)).
    /// Default `true`. With `false`, each process counts only its own failures, and the fleet
    /// shares trips, closes and probe leases only.
    pub fn share_failures(mut self, share: bool) -> Self {
        self.share_failures = share;
        self
    }

    /// How long the fleet's failure count of a circuit waits for the next failure: when no
    /// process of the fleet records a failure of that circuit for this long, the count starts
    /// again from zero. Default 10 s. A dead dependency fails every call, so a few times the
    /// fleet-wide gap between two calls is enough; keep it below the usual gap between two
    /// failures of a healthy dependency, or its everyday errors add up to a trip (see
    /// [Counting failures across the fleet](super#counting-failures-across-the-fleet)).
    pub fn failure_window(mut self, window: Duration) -> Self {
        self.failure_window = window;
        self
    }

    /// How long a half-open circuit that did not win the fleet's probe lease holds its probes
    /// back, waiting for the winner's result, before it probes on its own. Default 10 s. Set
    /// it above the time a probe call may take, or slow probes end the wait and every process
    /// probes.
    pub fn probe_lease(mut self, wait: Duration) -> Self {
        self.probe_lease = wait;
        self
    }

    /// How long the background task waits for Redis to connect or answer one command before it
    /// takes Redis for unreachable. Default 1 s. (Calls never wait for Redis.)
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The back-off between reconnection attempts: `min` after a loss, doubling up to `max`.
    /// Default 100 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// How many local transitions may wait for the background task; past that, transitions
    /// are not shared (a held-back probe then goes at once). Also how many circuits' failure
    /// reports may wait (one per circuit at most); past that, failures are not counted
    /// fleet-wide. Default 1024.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// The longest another process's trip opens a circuit here, whatever the message says.
    /// Default one hour.
    pub fn max_remote_open(mut self, max: Duration) -> Self {
        self.max_remote_open = max;
        self
    }

    /// The tokio runtime the background task runs on. Default: the runtime `build` is called
    /// on.
    pub fn runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Checks the settings, then spawns the background task (on [`runtime`](Self::runtime),
    /// else on the current tokio runtime) and returns at once: the first connection is made in
    /// the background, and until it is, circuits behave as local ones.
    ///
    /// Errors name the bad setting; `runtime` when there is neither a runtime handle nor a
    /// current runtime.
    pub fn build(self) -> Result<Fleet, ConfigError> {
        let client = self.checked()?;
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => tokio::runtime::Handle::try_current().map_err(|_| {
                ConfigError::new("runtime", "build() needs a tokio runtime, or pass one")
            })?,
        };
        let channel = format!("{}:{}", self.prefix, self.fleet);
        let settings = Settings {
            client,
            origin: new_origin(),
            fleet: self.fleet,
            share_manual: self.share_manual,
            share_failures: self.share_failures,
            failure_window: self.failure_window,
            probe_lease: self.probe_lease,
            command_timeout: self.command_timeout,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            queue_capacity: self.queue_capacity,
            max_remote_open: self.max_remote_open,
            channel,
        };
        Ok(Fleet::start(settings, &runtime))
    }

    /// Runs the checks of [`build`](Self::build) without connecting or spawning anything: an
    /// error names the bad setting. (A missing runtime is left for `build`.)
    pub fn check(&self) -> Result<(), ConfigError> {
        self.checked().map(drop)
    }

    /// The checks of `build`, and the RESP3 client for the URL.
    fn checked(&self) -> Result<redis::Client, ConfigError> {
        let err = ConfigError::new;
        let client =
            redis::Client::open(self.url.as_str()).map_err(|_| err("url", "not a Redis URL"))?;
        // Pub/sub messages arrive as RESP3 pushes on the same connection as the commands, so
        // one connection does both and its loss is seen once.
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))
            .map_err(|_| err("url", "not a Redis URL"))?;
        if self.prefix.is_empty() {
            return Err(err("prefix", "must not be empty"));
        }
        if self.fleet.is_empty() || self.fleet.contains('|') {
            return Err(err("fleet", "must be non-empty, without `|`"));
        }
        if self.probe_lease.is_zero() {
            return Err(err("probe_lease", "must be greater than zero"));
        }
        if self.failure_window.is_zero() {
            return Err(err("failure_window", "must be greater than zero"));
        }
        if self.command_timeout.is_zero() {
            return Err(err("command_timeout", "must be greater than zero"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(err("reconnect_backoff", "needs 0 < min <= max"));
        }
        if self.queue_capacity == 0 {
            return Err(err("queue_capacity", "must be at least 1"));
        }
        if self.max_remote_open.is_zero() {
            return Err(err("max_remote_open", "must be greater than zero"));
        }
        Ok(client)
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL is left out: it may hold a password.
        f.debug_struct("Builder")
            .field("prefix", &self.prefix)
            .field("fleet", &self.fleet)
            .field("share_manual", &self.share_manual)
            .field("share_failures", &self.share_failures)
            .field("failure_window", &self.failure_window)
            .field("probe_lease", &self.probe_lease)
            .field("command_timeout", &self.command_timeout)
            .field(
                "reconnect_backoff",
                &(self.reconnect_min, self.reconnect_max),
            )
            .field("queue_capacity", &self.queue_capacity)
            .field("max_remote_open", &self.max_remote_open)
            .finish_non_exhaustive()
    }
}

/// Checked settings, shared by the fleet handle and its background task.
pub(super) struct Settings {
    pub(super) client: redis::Client,
    /// This process's (this `Fleet`'s) id in messages and leases.
    pub(super) origin: String,
    pub(super) fleet: String,
    /// `<prefix>:<fleet>`: the channel, and the start of every key.
    pub(super) channel: String,
    pub(super) share_manual: bool,
    pub(super) share_failures: bool,
    /// The failure count's time to live, renewed by each failure counted.
    pub(super) failure_window: Duration,
    pub(super) probe_lease: Duration,
    pub(super) command_timeout: Duration,
    pub(super) reconnect_min: Duration,
    pub(super) reconnect_max: Duration,
    pub(super) queue_capacity: usize,
    pub(super) max_remote_open: Duration,
}

impl Settings {
    /// `INCR`ed for each message about `name`: its fleet-wide generation.
    pub(super) fn generation_key(&self, name: &str) -> String {
        format!("{}:gen:{name}", self.channel)
    }

    /// The latest open message about `name`, expiring with its open phase, for processes that
    /// (re)connect while it lasts.
    pub(super) fn state_key(&self, name: &str) -> String {
        format!("{}:state:{name}", self.channel)
    }

    /// A `SCAN` pattern matching every [`state_key`](Self::state_key), with the glob
    /// characters of the prefix and fleet escaped.
    pub(super) fn state_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.channel.len() + 8);
        for c in self.channel.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":state:*");
        pattern
    }

    /// Taken with `SET NX` by the process that probes `name` in the half-open phase after the
    /// open phase of `generation`.
    pub(super) fn lease_key(&self, name: &str, generation: u64) -> String {
        format!("{}:probe:{name}:{generation}", self.channel)
    }

    /// The fleet's failure count of `name` in one closed phase is the key this plus the
    /// phase's generation (the value of [`generation_key`](Self::generation_key) when counted;
    /// `0` before any).
    pub(super) fn failure_key_stem(&self, name: &str) -> String {
        format!("{}:failures:{name}:", self.channel)
    }

    /// Set once by the first process to connect: a new value means Redis lost its keys (a
    /// restart without persistence, a flush), generations included.
    pub(super) fn epoch_key(&self) -> String {
        format!("{}:epoch", self.channel)
    }

    /// How long a lease key lives: past the lease wait (by then every process probes anyway),
    /// so it only has to outlive the phase it decides.
    pub(super) fn lease_ttl(&self) -> Duration {
        self.probe_lease
            .saturating_mul(2)
            .max(Duration::from_secs(1))
    }
}

/// A fresh process id: 64 random bits from std's randomly keyed hasher, mixed with the process
/// id, the time and a counter, so that two fleets in one process differ too.
fn new_origin() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    hasher.write_u128(nanos);
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_settings_name_their_field() {
        let field = |b: Builder| b.build().unwrap_err().field();
        let b = Fleet::builder;
        assert_eq!(field(b().url("http://example.com")), "url");
        assert_eq!(field(b().url("not a url")), "url");
        assert_eq!(field(b().prefix("")), "prefix");
        assert_eq!(field(b().fleet("")), "fleet");
        assert_eq!(field(b().fleet("a|b")), "fleet");
        assert_eq!(field(b().probe_lease(Duration::ZERO)), "probe_lease");
        assert_eq!(field(b().failure_window(Duration::ZERO)), "failure_window");
        assert_eq!(
            field(b().command_timeout(Duration::ZERO)),
            "command_timeout"
        );
        let (one, two) = (Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(field(b().reconnect_backoff(two, one)), "reconnect_backoff");
        assert_eq!(
            field(b().reconnect_backoff(Duration::ZERO, one)),
            "reconnect_backoff"
        );
        assert_eq!(field(b().queue_capacity(0)), "queue_capacity");
        assert_eq!(
            field(b().max_remote_open(Duration::ZERO)),
            "max_remote_open"
        );
    }

    #[test]
    fn needs_a_runtime() {
        assert_eq!(Fleet::builder().build().unwrap_err().field(), "runtime");
        // Checking needs none, and finds what building would.
        assert!(Fleet::builder().check().is_ok());
        let err = Fleet::builder().queue_capacity(0).check().unwrap_err();
        assert_eq!(err.field(), "queue_capacity");
    }

    #[tokio::test]
    async fn keys_and_channel_follow_prefix_and_fleet() {
        let fleet = Fleet::builder()
            .url("redis://127.0.0.1:1/")
            .prefix("p*")
            .fleet("f")
            .build()
            .unwrap();
        let s = fleet.settings();
        assert_eq!(s.channel, "p*:f");
        assert_eq!(s.generation_key("a/b"), "p*:f:gen:a/b");
        assert_eq!(s.state_key("a"), "p*:f:state:a");
        assert_eq!(s.state_pattern(), "p\\*:f:state:*");
        assert_eq!(s.lease_key("a", 7), "p*:f:probe:a:7");
        assert_eq!(s.failure_key_stem("a/b"), "p*:f:failures:a/b:");
        assert!(s.share_failures);
        assert_eq!(s.failure_window, Duration::from_secs(10));
        assert_eq!(s.epoch_key(), "p*:f:epoch");
        assert_eq!(s.origin.len(), 16);
        let other = Fleet::builder()
            .url("redis://127.0.0.1:1/")
            .build()
            .unwrap();
        assert_ne!(other.settings().origin, s.origin);
        // The URL (and any password in it) stays out of debug output.
        let debug = format!("{:?}", Fleet::builder().url("redis://:hunter2@127.0.0.1/"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
