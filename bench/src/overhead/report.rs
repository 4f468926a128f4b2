//! The overhead bench's report: each mode's median over its interleaved
//! runs, the spread around it, and the cost against the baseline's median.

use serde_json::{json, Value};

fn lat(r: &Value, k: &str) -> f64 {
    r["latency_ms"][k].as_f64().unwrap_or(0.0)
}

fn cpu(r: &Value) -> f64 {
    r["n1_cpu_ms_per_request"].as_f64().unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (max - min) / median, in percent: how far apart a mode's runs were.
fn spread_pct(v: &[f64]) -> f64 {
    let m = median(v.to_vec());
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    if v.is_empty() || m <= 0.0 {
        return 0.0;
    }
    100.0 * (hi - lo) / m
}

fn pct(x: f64, base: f64) -> f64 {
    100.0 * (x / base.max(1e-9) - 1.0)
}

/// One row per mode (in `modes`' order): medians, spreads, and the cost
/// against the baseline's medians. A cost is inside the noise when it is
/// smaller than the baseline's own spread.
pub(super) fn summarize(runs: &[Value], modes: &[&str]) -> Vec<Value> {
    let of = |m: &str| -> Vec<&Value> { runs.iter().filter(|r| r["mode"] == m).collect() };
    let metric = |rs: &[&Value], f: &dyn Fn(&Value) -> f64| -> Vec<f64> {
        rs.iter().map(|r| f(r)).collect()
    };
    let base = of("baseline");
    let (b50, b99, bcpu) = (
        median(metric(&base, &|r| lat(r, "p50"))),
        median(metric(&base, &|r| lat(r, "p99"))),
        median(metric(&base, &cpu)),
    );
    modes
        .iter()
        .map(|m| {
            let rs = of(m);
            let p50 = metric(&rs, &|r| lat(r, "p50"));
            let p99 = metric(&rs, &|r| lat(r, "p99"));
            let p999 = metric(&rs, &|r| lat(r, "p99_9"));
            let c = metric(&rs, &cpu);
            let rate = metric(&rs, &|r| r["rate_per_s"].as_f64().unwrap_or(0.0));
            let failed: u64 = rs.iter().map(|r| r["failed"].as_u64().unwrap_or(0)).sum();
            let migration_cut_short = rs
                .iter()
                .any(|r| r.get("migration_ran_throughout") == Some(&Value::Bool(false)));
            json!({
                "mode": m,
                "runs": rs.len(),
                "rate_per_s": median(rate),
                "p50_ms": median(p50.clone()),
                "p99_ms": median(p99.clone()),
                "p99_9_ms": median(p999),
                "n1_cpu_ms_per_request": median(c.clone()),
                "spread_pct": {"p50": spread_pct(&p50), "p99": spread_pct(&p99), "cpu": spread_pct(&c)},
                "vs_baseline": {
                    "p50_pct": pct(median(p50), b50),
                    "p99_pct": pct(median(p99), b99),
                    "cpu_per_request_pct": pct(median(c), bcpu),
                },
                "failed": failed,
                "migration_ended_inside_a_window": migration_cut_short,
            })
        })
        .collect()
}

pub(super) fn print_table(rows: &[Value]) {
    let g = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    let sp = |r: &Value, k: &str| r["spread_pct"][k].as_f64().unwrap_or(0.0);
    let vs = |r: &Value, k: &str| r["vs_baseline"][k].as_f64().unwrap_or(0.0);
    println!(
        "\n{:<17} {:>4} {:>8} {:>8} {:>7} {:>8} {:>7} {:>9} {:>12} {:>7} {:>9} {:>9} {:>9} {:>6}",
        "mode",
        "runs",
        "achieved",
        "p50 ms",
        "±p50",
        "p99 ms",
        "±p99",
        "p99.9 ms",
        "CPU ms/req",
        "±CPU",
        "p50 vs b",
        "p99 vs b",
        "CPU vs b",
        "failed"
    );
    for r in rows {
        println!(
            "{:<17} {:>4} {:>8.0} {:>8.3} {:>6.1}% {:>8.3} {:>6.1}% {:>9.3} {:>12.4} {:>6.1}% {:>+8.1}% {:>+8.1}% {:>+8.1}% {:>6}{}",
            r["mode"].as_str().unwrap_or(""),
            r["runs"],
            g(r, "rate_per_s"),
            g(r, "p50_ms"),
            sp(r, "p50"),
            g(r, "p99_ms"),
            sp(r, "p99"),
            g(r, "p99_9_ms"),
            g(r, "n1_cpu_ms_per_request"),
            sp(r, "cpu"),
            vs(r, "p50_pct"),
            vs(r, "p99_pct"),
            vs(r, "cpu_per_request_pct"),
            r["failed"],
            if r["migration_ended_inside_a_window"] == Value::Bool(true) {
                "  (a migration ended inside its window)"
            } else {
                ""
            }
        );
    }
    println!("(± = spread of the runs, (max - min) / median; a cost below the baseline's spread is noise)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        let run = |mode: &str, p99: f64, c: f64| {
            json!({"mode": mode, "latency_ms": {"p50": 1.0, "p99": p99, "p99_9": 0.0},
                   "n1_cpu_ms_per_request": c, "rate_per_s": 500.0, "failed": 0})
        };
        let runs = vec![
            run("baseline", 2.0, 1.0),
            run("journaling", 3.0, 1.5),
            run("baseline", 2.2, 1.1),
            run("journaling", 3.3, 1.2),
            run("baseline", 1.8, 0.9),
            run("journaling", 2.7, 1.35),
        ];
        let rows = summarize(&runs, &["baseline", "journaling"]);
        assert_eq!(rows[0]["p99_ms"], 2.0);
        assert!((rows[0]["spread_pct"]["p99"].as_f64().unwrap() - 20.0).abs() < 1e-9);
        assert!((rows[1]["vs_baseline"]["p99_pct"].as_f64().unwrap() - 50.0).abs() < 1e-9);
        assert!(
            (rows[1]["vs_baseline"]["cpu_per_request_pct"]
                .as_f64()
                .unwrap()
                - 35.0)
                .abs()
                < 1e-9
        );
        assert_eq!(rows[1]["runs"], 3);
    }
}
