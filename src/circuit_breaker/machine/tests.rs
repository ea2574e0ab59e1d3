//! The machine's rules, one step at a time on explicit instants.

use super::*;
use crate::circuit_breaker::CircuitBreakerLayer;

fn cfg() -> Config {
    CircuitBreakerLayer::builder()
        .half_open_permits(2)
        .success_threshold(2)
        .probe_timeout(Duration::from_secs(5))
        .history_len(3)
        .build()
        .unwrap()
        .config()
        .clone()
}

#[tokio::test(start_paused = true)]
async fn full_cycle_with_generations() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut m = Machine::new();
    assert!(
        m.trip(1, Reason::ConsecutiveFailures(5), t0, &cfg)
            .is_none(),
        "stale generation"
    );
    let t = m.trip(0, Reason::ConsecutiveFailures(5), t0, &cfg).unwrap();
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
    assert_eq!(m.generation(), 1);
    // Inclusive deadline.
    assert!(m
        .advance(t0 + Duration::from_millis(59_999), &cfg)
        .is_none());
    let t = m.advance(t0 + Duration::from_secs(60), &cfg).unwrap();
    assert_eq!(t.to, State::HalfOpen);
    let now = t0 + Duration::from_secs(60);
    let a = m.admit(now, &cfg).unwrap();
    let b = m.admit(now, &cfg).unwrap();
    let refused = m.admit(now, &cfg).unwrap_err();
    assert_eq!(refused.wake_at, Some(now + Duration::from_secs(5)));
    let Ticket::Probe { generation, id } = a else {
        panic!()
    };
    assert!(
        m.release_probe(generation, id),
        "dropped probe frees its permit"
    );
    assert!(!m.release_probe(generation, id), "only once");
    let a = m.admit(now, &cfg).unwrap();
    for ticket in [a, b] {
        let Ticket::Probe { generation, id } = ticket else {
            panic!()
        };
        let (t, _) = m.probe_finished(generation, id, ProbeResult::Success, now, &cfg);
        if let Some(t) = t {
            assert_eq!(t.reason, Reason::ProbesSucceeded(2));
        }
    }
    assert_eq!(m.state(), State::Closed);
    assert_eq!(m.history().count(), 3, "bounded history keeps the newest");
    assert_eq!(m.history().last().unwrap().to, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_timeout_reopens_and_late_result_is_ignored() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut m = Machine::new();
    m.trip(0, Reason::ProbeFailed, t0, &cfg);
    let now = t0 + Duration::from_secs(60);
    m.advance(now, &cfg);
    let Ticket::Probe { generation, id } = m.admit(now, &cfg).unwrap() else {
        panic!()
    };
    assert!(m
        .advance(now + Duration::from_millis(4_999), &cfg)
        .is_none());
    let t = m.advance(now + Duration::from_secs(5), &cfg).unwrap();
    assert_eq!((t.to, t.reason), (State::Open, Reason::ProbeTimedOut));
    let (t, freed) = m.probe_finished(generation, id, ProbeResult::Success, now, &cfg);
    assert!(t.is_none() && !freed);
    assert_eq!(m.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_responded_is_no_longer_timed() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut m = Machine::new();
    m.trip(0, Reason::ProbeFailed, t0, &cfg);
    let now = t0 + Duration::from_secs(60);
    m.advance(now, &cfg);
    let Ticket::Probe { generation, id } = m.admit(now, &cfg).unwrap() else {
        panic!()
    };
    let second = now + Duration::from_secs(1);
    m.admit(second, &cfg).unwrap();
    m.probe_responded(generation + 1, id); // another generation's: no effect
    assert_eq!(
        m.admit(now, &cfg).unwrap_err().wake_at,
        Some(now + Duration::from_secs(5))
    );
    m.probe_responded(generation, id);
    // Only the other probe's deadline is left to wake for.
    assert_eq!(
        m.admit(now, &cfg).unwrap_err().wake_at,
        Some(second + Duration::from_secs(5))
    );
    // The first probe's deadline has passed, and it does not reopen the circuit.
    assert!(m.advance(now + Duration::from_secs(5), &cfg).is_none());
    assert_eq!(m.state(), State::HalfOpen);
    // The other probe never responded: its timeout still reopens.
    let t = m.advance(second + Duration::from_secs(5), &cfg).unwrap();
    assert_eq!(t.reason, Reason::ProbeTimedOut);
}

#[tokio::test(start_paused = true)]
async fn a_fleet_opens_for_the_remaining_time_and_closes_only_what_is_open() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut m = Machine::new();
    assert!(
        m.apply_remote(State::Closed, None, false, t0, &cfg)
            .is_none(),
        "closing a closed circuit changes nothing"
    );
    let t = m
        .apply_remote(State::Open, Some(Duration::from_secs(7)), false, t0, &cfg)
        .unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Closed, State::Open, Reason::Fleet)
    );
    assert_eq!(m.retry_after(t0), Some(Duration::from_secs(7)));
    let t = m
        .apply_remote(State::Closed, None, false, t0, &cfg)
        .unwrap();
    assert_eq!((t.from, t.to), (State::Open, State::Closed));

    m.force(State::ForcedOpen, Reason::ForcedOpen, t0, &cfg);
    assert!(
        m.apply_remote(State::Closed, None, false, t0, &cfg)
            .is_none(),
        "a local manual state is kept unless the fleet shares manual operations"
    );
    assert!(m
        .apply_remote(State::Open, Some(Duration::from_secs(1)), false, t0, &cfg)
        .is_none());
    let t = m.apply_remote(State::Closed, None, true, t0, &cfg).unwrap();
    assert_eq!((t.from, t.to), (State::ForcedOpen, State::Closed));
    let t = m
        .apply_remote(State::ForcedOpen, None, true, t0, &cfg)
        .unwrap();
    assert_eq!(t.to, State::ForcedOpen);
    assert!(m
        .apply_remote(State::ForcedOpen, None, true, t0, &cfg)
        .is_none());
    assert!(
        m.apply_remote(State::HalfOpen, None, true, t0, &cfg)
            .is_none(),
        "a fleet never sends a circuit half-open"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leased_half_open_phase_holds_probes_until_granted_or_the_wait_ends() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut m = Machine::new();
    m.require_probe_lease(Duration::from_secs(2));
    assert!(!m.grant_probes(), "nothing to grant while closed");
    m.trip(0, Reason::ConsecutiveFailures(5), t0, &cfg);
    let half = t0 + Duration::from_secs(60);
    m.advance(half, &cfg).unwrap();
    assert_eq!(m.state(), State::HalfOpen);
    assert!(!m.has_free_permit(&cfg));
    let refused = m.admit(half, &cfg).unwrap_err();
    assert_eq!(refused.wake_at, Some(half + Duration::from_secs(2)));
    assert!(m.grant_probes());
    assert!(!m.grant_probes(), "granted once per phase");
    assert!(m.has_free_permit(&cfg));
    let Ticket::Probe { generation, id } = m.admit(half, &cfg).unwrap() else {
        panic!()
    };
    // The probe fails: the next half-open phase waits for its own grant.
    m.probe_finished(generation, id, ProbeResult::Failure, half, &cfg);
    let next = m.open_until().unwrap();
    m.advance(next, &cfg).unwrap();
    assert!(m.admit(next, &cfg).is_err());
    // Nobody grants: at the end of the wait the circuit probes on its own.
    assert!(m
        .advance(next + Duration::from_millis(1_999), &cfg)
        .is_none());
    assert!(m.admit(next + Duration::from_millis(1_999), &cfg).is_err());
    assert!(m.advance(next + Duration::from_secs(2), &cfg).is_none());
    assert!(m.admit(next + Duration::from_secs(2), &cfg).is_ok());
}

fn probe(ticket: Ticket) -> (u32, u32) {
    match ticket {
        Ticket::Probe { generation, id } => (generation, id),
        other => panic!("not a probe: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn outstanding_probes_have_distinct_ids() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut m = Machine::new();
    m.trip(0, Reason::ProbeFailed, t0, &cfg);
    let now = t0 + Duration::from_secs(60);
    m.advance(now, &cfg);
    let (generation, a) = probe(m.admit(now, &cfg).unwrap());
    let (_, b) = probe(m.admit(now, &cfg).unwrap());
    assert_ne!(a, b);
    assert!(m.release_probe(generation, a));
    let (_, c) = probe(m.admit(now, &cfg).unwrap());
    assert_ne!(c, b, "a re-issued id is not one still outstanding");
}

#[tokio::test(start_paused = true)]
async fn a_probe_times_out_from_when_its_call_started() {
    let cfg = cfg(); // probe_timeout 5 s
    let t0 = Instant::now();
    let mut m = Machine::new();
    m.trip(0, Reason::ProbeFailed, t0, &cfg);
    let admitted = t0 + Duration::from_secs(60);
    m.advance(admitted, &cfg);
    let (generation, id) = probe(m.admit(admitted, &cfg).unwrap());
    // Admitted in poll_ready, called 3 s later: the timeout counts from the call.
    let called = admitted + Duration::from_secs(3);
    m.probe_started(generation, id, called);
    assert!(m.advance(admitted + Duration::from_secs(5), &cfg).is_none());
    assert!(m
        .advance(called + Duration::from_millis(4_999), &cfg)
        .is_none());
    let t = m.advance(called + Duration::from_secs(5), &cfg).unwrap();
    assert_eq!(t.reason, Reason::ProbeTimedOut);
}

#[tokio::test(start_paused = true)]
async fn a_stale_probe_frees_nothing_in_a_later_half_open_phase() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut m = Machine::new();
    m.trip(0, Reason::ProbeFailed, t0, &cfg);
    let first = t0 + Duration::from_secs(60);
    m.advance(first, &cfg);
    let (stale, _) = probe(m.admit(first, &cfg).unwrap());
    // That probe times out; the next half-open phase admits a probe of its own.
    m.advance(first + Duration::from_secs(5), &cfg).unwrap();
    let second = m.open_until().unwrap();
    m.advance(second, &cfg).unwrap();
    let (current, id) = probe(m.admit(second, &cfg).unwrap());
    assert_ne!(stale, current);
    assert!(
        !m.release_probe(stale, id),
        "an old generation frees nothing"
    );
    assert!(m.release_probe(current, id));
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_base_does_not_switch_on_back_off_the_configuration_left_off() {
    // `max_open_duration` equal to `open_duration`: back-off is off, whatever base the
    // adaptive table sets, so a re-trip opens for the base again.
    let cfg = CircuitBreakerLayer::builder()
        .open_duration(Duration::from_secs(60))
        .max_open_duration(Duration::from_secs(60))
        .build()
        .unwrap()
        .config()
        .clone();
    let t0 = Instant::now();
    let mut m = Machine::new();
    m.set_base_open(Duration::from_secs(10));
    m.trip(0, Reason::ConsecutiveFailures(5), t0, &cfg).unwrap();
    let mut now = t0;
    for _ in 0..3 {
        assert_eq!(m.retry_after(now), Some(Duration::from_secs(10)));
        now = m.open_until().unwrap();
        m.advance(now, &cfg).unwrap();
        let (generation, id) = probe(m.admit(now, &cfg).unwrap());
        m.probe_finished(generation, id, ProbeResult::Failure, now, &cfg);
    }
    assert_eq!(m.retry_after(now), Some(Duration::from_secs(10)));
}
