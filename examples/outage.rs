//! A simulated outage, on tokio's paused clock (runs in well under a second of real time).
//!
//! A primary and a secondary backend sit behind a [`Failover`], each wrapped in a default-mode
//! circuit breaker (5 consecutive failures; open 5 s, doubling up to 20 s while probes fail).
//! Load is steady: a request every 50 ms (20 req/s), each in its own task. Both backends
//! answer in 40 ms; the primary fails every call from t = 20 s to t = 50 s, then recovers.
//!
//! The example prints what a reader wants to know about the outage — requests sent to the dead
//! primary after its circuit tripped, failed requests seen by callers, and how long after its
//! recovery the primary took traffic again — and draws the primary's circuit state, the share
//! of traffic it served and the callers' success rate over time to `docs/outage.svg`.
//!
//! Run with `cargo run --example outage` (writes the SVG to the path given as the first
//! argument, default `docs/outage.svg`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plotters::prelude::*;
use tokio::time::Instant;
use tower::{service_fn, util::BoxCloneSyncService, Service, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
use tower_breaker::failover::Failover;
use tower_breaker::BoxError;
use tower_layer::Layer;

const RUN: Duration = Duration::from_secs(90);
const OUTAGE_START: Duration = Duration::from_secs(20);
const OUTAGE_END: Duration = Duration::from_secs(50);
const EVERY: Duration = Duration::from_millis(50);
const LATENCY: Duration = Duration::from_millis(40);
/// Width of the buckets the plot's rates are computed over.
const BUCKET: Duration = Duration::from_millis(500);

type Backend = BoxCloneSyncService<u64, &'static str, BoxError>;

/// What the simulation records.
#[derive(Default)]
struct Log {
    /// (time the primary was called, whether it was down then)
    primary_calls: Vec<(Duration, bool)>,
    /// (time the caller's request was issued, served by the primary, ok)
    requests: Vec<(Duration, bool, bool)>,
    /// (time, new state) of the primary's circuit
    transitions: Vec<(Duration, State)>,
}

fn backend(
    name: &'static str,
    down: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    start: Instant,
) -> Backend {
    BoxCloneSyncService::new(service_fn(move |_request: u64| {
        let down = down.load(Ordering::SeqCst);
        if name == "primary" {
            log.lock()
                .unwrap()
                .primary_calls
                .push((start.elapsed(), down));
        }
        async move {
            tokio::time::sleep(LATENCY).await;
            if down {
                Err::<&'static str, BoxError>(format!("{name}: 503").into())
            } else {
                Ok(name)
            }
        }
    }))
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/outage.svg".into());
    let start = Instant::now();
    let log = Arc::new(Mutex::new(Log::default()));
    let primary_down = Arc::new(AtomicBool::new(false));

    let breaker = |name: &str| {
        CircuitBreakerLayer::builder()
            .name(name)
            .consecutive_failures(5)
            .open_duration(Duration::from_secs(5))
            .max_open_duration(Duration::from_secs(20))
            .build()
            .expect("valid settings")
    };
    let primary_breaker = breaker("primary");
    let handle = primary_breaker.handle();
    {
        let log = log.clone();
        handle.on_transition(move |t| {
            let at = t.at.duration_since(start);
            log.lock().unwrap().transitions.push((at, t.to));
        });
    }
    let failover = Failover::with_names([
        (
            "primary",
            primary_breaker.layer(backend("primary", primary_down.clone(), log.clone(), start)),
        ),
        (
            "secondary",
            breaker("secondary").layer(backend(
                "secondary",
                Arc::new(AtomicBool::new(false)),
                log.clone(),
                start,
            )),
        ),
    ]);

    // Steady offered load: one request every 50 ms, each in its own task (waiting for
    // readiness is part of its latency).
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while start.elapsed() < RUN {
        let now = start.elapsed();
        primary_down.store((OUTAGE_START..OUTAGE_END).contains(&now), Ordering::SeqCst);
        let mut svc = failover.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let result = match svc.ready().await {
                Ok(svc) => svc.call(i).await,
                Err(e) => Err(e),
            };
            let by_primary = matches!(result, Ok("primary"))
                || matches!(&result, Err(e) if e.to_string().starts_with("primary"));
            log.lock()
                .unwrap()
                .requests
                .push((now, by_primary, result.is_ok()));
        }));
        i += 1;
        tokio::time::sleep_until(start + EVERY * u32::try_from(i).unwrap()).await;
    }
    for task in tasks {
        task.await.unwrap();
    }

    let log = log.lock().unwrap();
    let tripped = log
        .transitions
        .iter()
        .find(|(_, s)| *s == State::Open)
        .map(|(t, _)| *t)
        .expect("the primary's circuit trips");
    let to_dead_after_trip = log
        .primary_calls
        .iter()
        .filter(|(t, down)| *down && *t >= tripped)
        .count();
    let to_dead_total = log.primary_calls.iter().filter(|(_, down)| *down).count();
    let failed = log.requests.iter().filter(|(_, _, ok)| !ok).count();
    let back = log
        .primary_calls
        .iter()
        .find(|(t, down)| !down && *t >= OUTAGE_END)
        .map(|(t, _)| *t)
        .expect("the primary takes traffic again");
    let closed_again = log
        .transitions
        .iter()
        .find(|(t, s)| *s == State::Closed && *t >= OUTAGE_END)
        .map(|(t, _)| *t)
        .expect("the primary's circuit closes again");

    println!(
        "outage of the primary from t={}s to t={}s; {} requests offered at {} req/s",
        OUTAGE_START.as_secs(),
        OUTAGE_END.as_secs(),
        log.requests.len(),
        1000 / EVERY.as_millis()
    );
    println!(
        "circuit tripped at t={:.2}s (after {} calls to the dead primary)",
        tripped.as_secs_f64(),
        to_dead_total - to_dead_after_trip
    );
    println!(
        "requests sent to the dead primary after the trip: {to_dead_after_trip} (half-open probes)"
    );
    println!(
        "failed requests seen by callers: {failed} of {} ({:.2} %)",
        log.requests.len(),
        failed as f64 * 100.0 / log.requests.len() as f64
    );
    println!(
        "primary used again {:.2}s after it recovered (t={:.2}s; circuit closed at t={:.2}s)",
        (back - OUTAGE_END).as_secs_f64(),
        back.as_secs_f64(),
        closed_again.as_secs_f64()
    );
    println!("transitions of the primary's circuit:");
    for (t, s) in &log.transitions {
        println!("  t={:>6.2}s  -> {s}", t.as_secs_f64());
    }

    draw(&log, &out).expect("draw the SVG");
    println!("wrote {out}");
}

fn level(state: State) -> f64 {
    match state {
        State::Closed | State::Disabled => 0.0,
        State::HalfOpen => 0.5,
        State::Open | State::ForcedOpen => 1.0,
    }
}

fn draw(log: &Log, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let end = RUN.as_secs_f64();
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(330);

    // Rates per bucket.
    let buckets = (RUN.as_millis() / BUCKET.as_millis()) as usize;
    let mut total = vec![0u32; buckets];
    let mut ok = vec![0u32; buckets];
    let mut primary = vec![0u32; buckets];
    for (t, by_primary, success) in &log.requests {
        let b = ((t.as_millis() / BUCKET.as_millis()) as usize).min(buckets - 1);
        total[b] += 1;
        ok[b] += u32::from(*success);
        primary[b] += u32::from(*by_primary);
    }
    let at = |b: usize| (b as f64 + 0.5) * BUCKET.as_secs_f64();
    let rate = |v: &[u32]| -> Vec<(f64, f64)> {
        (0..buckets)
            .filter(|&b| total[b] > 0)
            .map(|b| (at(b), f64::from(v[b]) * 100.0 / f64::from(total[b])))
            .collect()
    };

    let outage = |y0: f64, y1: f64| {
        std::iter::once(Rectangle::new(
            [
                (OUTAGE_START.as_secs_f64(), y0),
                (OUTAGE_END.as_secs_f64(), y1),
            ],
            RGBColor(255, 220, 220).filled(),
        ))
    };

    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Primary outage t=20..50 s behind Failover + circuit breakers (20 req/s)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..end, 0.0..105.0)?;
    chart
        .configure_mesh()
        .y_desc("% of requests (per 0.5 s)")
        .x_desc("t (s)")
        .draw()?;
    chart
        .draw_series(outage(0.0, 105.0))?
        .label("primary down")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 15, y + 5)],
                RGBColor(255, 220, 220).filled(),
            )
        });
    chart
        .draw_series(LineSeries::new(rate(&ok), GREEN.stroke_width(5)))?
        .label("callers' success rate")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], GREEN.stroke_width(5)));
    chart
        .draw_series(LineSeries::new(rate(&primary), BLUE.stroke_width(2)))?
        .label("share served by the primary")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;

    // The primary's circuit state as a step line.
    let mut steps = vec![(0.0, 0.0)];
    let mut current = 0.0;
    for (t, s) in &log.transitions {
        let t = t.as_secs_f64();
        steps.push((t, current));
        current = level(*s);
        steps.push((t, current));
    }
    steps.push((end, current));
    let mut chart = ChartBuilder::on(&bottom)
        .caption("Primary's circuit state", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..end, -0.1..1.15)?;
    chart
        .configure_mesh()
        .y_labels(3)
        .y_label_formatter(&|v: &f64| match (v * 2.0).round() as i32 {
            0 => "closed".into(),
            1 => "half-open".into(),
            2 => "open".into(),
            _ => String::new(),
        })
        .x_desc("t (s)")
        .draw()?;
    chart.draw_series(outage(-0.1, 1.15))?;
    chart.draw_series(LineSeries::new(steps, RED.stroke_width(2)))?;
    root.present()?;
    Ok(())
}
