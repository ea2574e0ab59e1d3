//! A simulated outage, on tokio's paused clock (runs in well under a second of real time), run
//! twice: with readiness-only failover, and with failed requests re-sent to the fallback.
//!
//! A primary and a secondary backend sit behind a [`Failover`], each wrapped in a default-mode
//! circuit breaker (5 consecutive failures; open 5 s, doubling up to 20 s while probes fail).
//! Load is steady: a request every 50 ms (20 req/s), each in its own task. Both backends
//! answer in 40 ms; the primary fails every call from t = 20 s to t = 50 s, then recovers.
//!
//! The same timeline runs twice:
//!
//! 1. **readiness only** — `Failover::with_names(...)`: traffic moves to the secondary while
//!    the primary's circuit is open, but the calls that trip it and each failed half-open probe
//!    still fail for their callers;
//! 2. **with resend** — `.resend_failures(Resend::cloned())`: each of those failed calls is
//!    re-sent to the secondary, so callers see no failure at all.
//!
//! For each run the example prints what a reader wants to know about the outage — requests
//! sent to the dead primary after its circuit tripped, `failed requests seen by callers`, how
//! many requests were re-sent, and how long after its recovery the primary took traffic again —
//! and draws both runs, one panel each (the callers' success rate, the share of traffic served
//! by the primary, failed and re-sent requests, and the primary's circuit state over time), to
//! `docs/outage.svg`. It exits non-zero if callers saw any failure in the resend run.
//!
//! Run with `cargo run -p tower-breaker-benches --example outage` (writes the SVG to the path
//! given as the first argument, default the repository's `docs/outage.svg`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plotters::coord::Shift;
use plotters::prelude::*;
use tokio::time::Instant;
use tower::{service_fn, util::BoxCloneSyncService, Service, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
use tower_breaker::failover::{Failover, Resend};
use tower_breaker::BoxError;
use tower_layer::Layer;

const RUN: Duration = Duration::from_secs(90);
const OUTAGE_START: Duration = Duration::from_secs(20);
const OUTAGE_END: Duration = Duration::from_secs(50);
const EVERY: Duration = Duration::from_millis(50);
const LATENCY: Duration = Duration::from_millis(40);
/// Width of the buckets the plot's rates are computed over.
const BUCKET: Duration = Duration::from_millis(500);
/// The members, in priority order.
const NAMES: [&str; 2] = ["primary", "secondary"];
const PRIMARY: usize = 0;
const SECONDARY: usize = 1;

type Backend = BoxCloneSyncService<u64, &'static str, BoxError>;

/// One call a backend received.
struct Call {
    at: Duration,
    request: u64,
    member: usize,
    /// Whether the member was down then (so the call failed).
    down: bool,
}

/// One caller's request, as the caller saw it.
struct Request {
    /// When it was issued.
    at: Duration,
    /// The member whose answer (or error) the caller got.
    answered_by: usize,
    ok: bool,
}

/// What one run of the simulation records.
#[derive(Default)]
struct Log {
    calls: Vec<Call>,
    requests: Vec<Request>,
    /// (time, new state) of the primary's circuit
    transitions: Vec<(Duration, State)>,
}

/// One run: its label, its log and `Routes::served()` at the end.
struct Run {
    title: &'static str,
    log: Log,
    served: Vec<u64>,
}

fn backend(member: usize, down: Arc<AtomicBool>, log: Arc<Mutex<Log>>, start: Instant) -> Backend {
    let name = NAMES[member];
    BoxCloneSyncService::new(service_fn(move |request: u64| {
        let down = down.load(Ordering::SeqCst);
        log.lock().unwrap().calls.push(Call {
            at: start.elapsed(),
            request,
            member,
            down,
        });
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

fn breaker(name: &str) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name(name)
        .consecutive_failures(5)
        .open_duration(Duration::from_secs(5))
        .max_open_duration(Duration::from_secs(20))
        .build()
        .expect("valid settings")
}

/// Runs the outage once, from now on tokio's clock; with `resend`, the failover re-sends failed
/// requests to the next ready member.
async fn simulate(title: &'static str, resend: bool) -> Run {
    let start = Instant::now();
    let log = Arc::new(Mutex::new(Log::default()));
    let primary_down = Arc::new(AtomicBool::new(false));

    let primary_breaker = breaker(NAMES[PRIMARY]);
    {
        let log = log.clone();
        primary_breaker.handle().on_transition(move |t| {
            let at = t.at.duration_since(start);
            log.lock().unwrap().transitions.push((at, t.to));
        });
    }
    let failover = Failover::with_names([
        (
            NAMES[PRIMARY],
            primary_breaker.layer(backend(PRIMARY, primary_down.clone(), log.clone(), start)),
        ),
        (
            NAMES[SECONDARY],
            breaker(NAMES[SECONDARY]).layer(backend(
                SECONDARY,
                Arc::new(AtomicBool::new(false)),
                log.clone(),
                start,
            )),
        ),
    ]);
    let routes = failover.routes();
    let failover: Backend = if resend {
        Backend::new(failover.resend_failures(Resend::cloned()))
    } else {
        Backend::new(failover)
    };

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
            let answered_by = match &result {
                Ok(name) => NAMES.iter().position(|n| n == name).unwrap(),
                Err(e) if e.to_string().starts_with(NAMES[PRIMARY]) => PRIMARY,
                Err(_) => SECONDARY,
            };
            log.lock().unwrap().requests.push(Request {
                at: now,
                answered_by,
                ok: result.is_ok(),
            });
        }));
        i += 1;
        tokio::time::sleep_until(start + EVERY * u32::try_from(i).unwrap()).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    Run {
        title,
        log,
        served: routes.served(),
    }
}

/// The figures printed for a run.
struct Summary {
    tripped: Duration,
    to_dead_after_trip: usize,
    to_dead_total: usize,
    failed: usize,
    /// When each re-sent request was issued (it reached both members).
    resent: Vec<Duration>,
    back: Duration,
    closed_again: Duration,
}

impl Summary {
    fn of(log: &Log) -> Summary {
        let tripped = log
            .transitions
            .iter()
            .find(|(_, s)| *s == State::Open)
            .map(|(t, _)| *t)
            .expect("the primary's circuit trips");
        let primary_calls = || log.calls.iter().filter(|c| c.member == PRIMARY);
        let to_dead_after_trip = primary_calls()
            .filter(|c| c.down && c.at >= tripped)
            .count();
        let to_dead_total = primary_calls().filter(|c| c.down).count();
        let at_primary: HashSet<u64> = primary_calls().map(|c| c.request).collect();
        let resent = log
            .calls
            .iter()
            .filter(|c| c.member == SECONDARY && at_primary.contains(&c.request))
            .map(|c| EVERY * u32::try_from(c.request).unwrap())
            .collect();
        let back = primary_calls()
            .find(|c| !c.down && c.at >= OUTAGE_END)
            .map(|c| c.at)
            .expect("the primary takes traffic again");
        let closed_again = log
            .transitions
            .iter()
            .find(|(t, s)| *s == State::Closed && *t >= OUTAGE_END)
            .map(|(t, _)| *t)
            .expect("the primary's circuit closes again");
        Summary {
            tripped,
            to_dead_after_trip,
            to_dead_total,
            failed: log.requests.iter().filter(|r| !r.ok).count(),
            resent,
            back,
            closed_again,
        }
    }
}

fn print_run(run: &Run, summary: &Summary) {
    let log = &run.log;
    let total = log.requests.len();
    println!("== {} ==", run.title);
    println!(
        "circuit tripped at t={:.2}s (after {} calls to the dead primary)",
        summary.tripped.as_secs_f64(),
        summary.to_dead_total - summary.to_dead_after_trip
    );
    println!(
        "requests sent to the dead primary after the trip: {} (half-open probes)",
        summary.to_dead_after_trip
    );
    println!(
        "failed requests seen by callers: {} of {total} ({:.2} %)",
        summary.failed,
        summary.failed as f64 * 100.0 / total as f64
    );
    let dispatches: u64 = run.served.iter().sum();
    println!(
        "requests re-sent to the secondary after failing on the primary: {}",
        summary.resent.len()
    );
    println!(
        "dispatches (Routes::served()): primary {}, secondary {} ({dispatches} for {total} requests)",
        run.served[PRIMARY],
        run.served[SECONDARY],
    );
    println!(
        "primary used again {:.2}s after it recovered (t={:.2}s; circuit closed at t={:.2}s)",
        (summary.back - OUTAGE_END).as_secs_f64(),
        summary.back.as_secs_f64(),
        summary.closed_again.as_secs_f64()
    );
    println!("transitions of the primary's circuit:");
    for (t, s) in &log.transitions {
        println!("  t={:>6.2}s  -> {s}", t.as_secs_f64());
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/outage.svg").into());
    let runs = [
        simulate("readiness only: Failover::with_names(...)", false).await,
        simulate(
            "with resend: Failover::with_names(...).resend_failures(Resend::cloned())",
            true,
        )
        .await,
    ];
    let summaries = runs.each_ref().map(|run| Summary::of(&run.log));

    println!(
        "outage of the primary from t={}s to t={}s; {} requests offered at {} req/s; run twice",
        OUTAGE_START.as_secs(),
        OUTAGE_END.as_secs(),
        runs[0].log.requests.len(),
        1000 / EVERY.as_millis()
    );
    println!(
        "same load and outage in both runs; the breakers' back-off jitter is random, so\n\
         re-trip and return times differ by up to a few seconds between runs"
    );
    for (run, summary) in runs.iter().zip(&summaries) {
        println!();
        print_run(run, summary);
    }

    draw(&runs, &summaries, &out).expect("draw the SVG");
    println!();
    println!("wrote {out}");

    // Every failed call on the primary was re-sent, and the counts agree with Routes.
    let [_, resend] = &runs;
    let summary = &summaries[1];
    let dispatches: u64 = resend.served.iter().sum();
    let extra = dispatches - resend.log.requests.len() as u64;
    if summary.failed != 0 || extra != summary.resent.len() as u64 {
        eprintln!(
            "regression: with resend, callers saw {} failed requests (expected 0); \
             {extra} extra dispatches for {} re-sent requests",
            summary.failed,
            summary.resent.len()
        );
        std::process::exit(1);
    }
}

fn level(state: State) -> f64 {
    match state {
        State::Closed | State::Disabled => 0.0,
        State::HalfOpen => 0.5,
        State::Open | State::ForcedOpen => 1.0,
    }
}

const OUTAGE_FILL: RGBColor = RGBColor(255, 220, 220);
const SUCCESS: RGBColor = RGBColor(0, 160, 0);
const SHARE: RGBColor = RGBColor(30, 80, 220);
const FAILED: RGBColor = RGBColor(220, 0, 0);
const RESENT: RGBColor = RGBColor(230, 130, 0);
/// Where the per-request markers (failed, re-sent) sit, below the rates' 0 %.
const MARKERS_AT: f64 = -7.0;

fn draw(runs: &[Run], summaries: &[Summary], path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (960, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Primary outage t=20..50 s behind Failover + circuit breakers (20 req/s), run twice",
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((runs.len(), 1));
    for ((area, run), summary) in panels.iter().zip(runs).zip(summaries) {
        draw_run(area, run, summary)?;
    }
    root.present()?;
    Ok(())
}

fn draw_run(
    area: &DrawingArea<SVGBackend, Shift>,
    run: &Run,
    summary: &Summary,
) -> Result<(), Box<dyn std::error::Error>> {
    let end = RUN.as_secs_f64();
    let log = &run.log;
    let (_, height) = area.dim_in_pixel();
    let (top, bottom) = area.split_vertically(height * 70 / 100);

    // Rates per bucket.
    let buckets = (RUN.as_millis() / BUCKET.as_millis()) as usize;
    let mut total = vec![0u32; buckets];
    let mut ok = vec![0u32; buckets];
    let mut primary = vec![0u32; buckets];
    for r in &log.requests {
        let b = ((r.at.as_millis() / BUCKET.as_millis()) as usize).min(buckets - 1);
        total[b] += 1;
        ok[b] += u32::from(r.ok);
        primary[b] += u32::from(r.answered_by == PRIMARY);
    }
    let at = |b: usize| (b as f64 + 0.5) * BUCKET.as_secs_f64();
    let rate = |v: &[u32]| -> Vec<(f64, f64)> {
        (0..buckets)
            .filter(|&b| total[b] > 0)
            .map(|b| (at(b), f64::from(v[b]) * 100.0 / f64::from(total[b])))
            .collect()
    };
    let failed: Vec<f64> = log
        .requests
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.at.as_secs_f64())
        .collect();
    let resent: Vec<f64> = summary.resent.iter().map(Duration::as_secs_f64).collect();

    let outage = |y0: f64, y1: f64| {
        std::iter::once(Rectangle::new(
            [
                (OUTAGE_START.as_secs_f64(), y0),
                (OUTAGE_END.as_secs_f64(), y1),
            ],
            OUTAGE_FILL.filled(),
        ))
    };

    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} — failed requests seen by callers: {} of {}",
                run.title,
                failed.len(),
                log.requests.len()
            ),
            ("sans-serif", 15),
        )
        .margin(8)
        .margin_right(24)
        .x_label_area_size(22)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, -14.0..106.0)?;
    chart
        .configure_mesh()
        .y_labels(13)
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|v: &f64| {
            if *v >= 0.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_desc("% of requests (per 0.5 s)")
        .draw()?;
    chart
        .draw_series(outage(-14.0, 106.0))?
        .label("primary down")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], OUTAGE_FILL.filled()));
    chart
        .draw_series(LineSeries::new(rate(&ok), SUCCESS.stroke_width(4)))?
        .label("callers' success rate")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], SUCCESS.stroke_width(4)));
    chart
        .draw_series(LineSeries::new(rate(&primary), SHARE.stroke_width(2)))?
        .label("share served by the primary")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], SHARE.stroke_width(2)));
    let marks = chart.draw_series(
        failed
            .iter()
            .map(|&t| Cross::new((t, MARKERS_AT), 5, FAILED.stroke_width(2))),
    )?;
    if !failed.is_empty() {
        marks
            .label(format!("failed request ({})", failed.len()))
            .legend(|(x, y)| Cross::new((x + 7, y), 5, FAILED.stroke_width(2)));
    }
    let marks = chart.draw_series(
        resent
            .iter()
            .map(|&t| TriangleMarker::new((t, MARKERS_AT), 6, RESENT.filled())),
    )?;
    if !resent.is_empty() {
        marks
            .label(format!(
                "failed on the primary, re-sent to the secondary ({})",
                resent.len()
            ))
            .legend(|(x, y)| TriangleMarker::new((x + 7, y), 6, RESENT.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .margin(18)
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
        .margin(8)
        .margin_top(2)
        .margin_right(24)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, -0.15..1.15)?;
    chart
        .configure_mesh()
        .y_labels(3)
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|v: &f64| match (v * 2.0).round() as i32 {
            0 => "closed".into(),
            1 => "half-open".into(),
            2 => "open".into(),
            _ => String::new(),
        })
        .x_desc("t (s)")
        .draw()?;
    chart.draw_series(outage(-0.15, 1.15))?;
    chart
        .draw_series(LineSeries::new(steps, FAILED.stroke_width(2)))?
        .label("primary's circuit")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], FAILED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
