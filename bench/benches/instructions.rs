//! Instructions per call, counted by `valgrind --tool=callgrind` (load-independent, unlike the
//! timings): for each variant this binary runs itself under callgrind twice, with `N1` and `N2`
//! calls, and reports `(Ir(N2) - Ir(N1)) / (N2 - N1)` — the per-call count with the setup
//! subtracted — and the difference to `bare`.
//!
//! Run: `cargo bench -p tower-breaker-benches --bench instructions` (needs `valgrind` on the
//! `PATH`).

use std::process::Command;

mod common;
use common::*;

const N1: u64 = 20_000;
const N2: u64 = 220_000;

fn main() {
    if let Ok(name) = std::env::var("TB_INSTR_VARIANT") {
        let n: u64 = std::env::var("TB_INSTR_N").unwrap().parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut call = maker(&name)();
        for i in 0..n {
            call(i);
        }
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let count = |name: &str, n: u64| -> u64 {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&exe)
            .env("TB_INSTR_VARIANT", name)
            .env("TB_INSTR_N", n.to_string())
            .output()
            .expect("valgrind must be installed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        stderr
            .lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no callgrind total for {name}: {stderr}"))
    };
    let per_call = |name: &str| (count(name, N2) - count(name, N1)) as f64 / (N2 - N1) as f64;
    let bare = per_call("bare");
    println!("{:<40} {:>12} {:>12}", "variant", "instr/call", "over bare");
    println!("{:<40} {:>12.1} {:>12.1}", "bare", bare, 0.0);
    for name in VARIANTS
        .iter()
        .skip(1)
        .chain(&["breaker_fail_fast_open_rejection"])
    {
        let n = per_call(name);
        println!("{:<40} {:>12.1} {:>12.1}", name, n, n - bare);
    }
}
