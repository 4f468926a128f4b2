//! The soak's chart: one small panel per series (its samples as a line,
//! its range on the axis), with the migration and the rollback marked; a
//! plain SVG in the dashboard's colours, readable in any browser.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::Value;

use super::sample::Sample;

const W: f64 = 360.0;
const H: f64 = 150.0;
const COLS: usize = 3;
const PAD: f64 = 36.0;

pub(super) fn svg(samples: &[Sample], events: &[Value]) -> String {
    let keys: BTreeSet<&String> = samples.iter().flat_map(|s| s.1.keys()).collect();
    let rows = keys.len().div_ceil(COLS);
    let t_max = samples.iter().map(|s| s.0).fold(1.0, f64::max);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fff"/>"##,
        W * COLS as f64,
        H * rows as f64
    );
    for (i, key) in keys.iter().enumerate() {
        let (x0, y0) = ((i % COLS) as f64 * W, (i / COLS) as f64 * H);
        panel(&mut out, key, samples, events, (x0, y0), t_max);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(
    out: &mut String,
    key: &str,
    samples: &[Sample],
    events: &[Value],
    (x0, y0): (f64, f64),
    t_max: f64,
) {
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(t, v)| v.get(key).map(|x| (*t, *x)))
        .collect();
    let hi = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let (pw, ph) = (W - PAD - 10.0, H - PAD - 14.0);
    let sx = |t: f64| x0 + PAD + pw * t / t_max;
    let sy = |v: f64| y0 + 18.0 + ph * (1.0 - v / hi);
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" font-weight="bold">{key}</text><rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>"##,
        x0 + PAD,
        y0 + 13.0,
        x0 + PAD,
        y0 + 18.0
    );
    for v in [0.0, hi / 2.0, hi] {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#555">{}</text>"##,
            x0 + PAD - 3.0,
            sy(v) + 4.0,
            short(v)
        );
    }
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" fill="#555">0 s</text><text x="{}" y="{}" text-anchor="end" fill="#555">{:.0} s</text>"##,
        x0 + PAD,
        y0 + H - 2.0,
        x0 + PAD + pw,
        y0 + H - 2.0,
        t_max
    );
    for e in events {
        if let Some(t) = e["start_s"].as_f64() {
            let _ = write!(
                out,
                r##"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="#e8a33d" stroke-dasharray="3,2"><title>{}</title></line>"##,
                y0 + 18.0,
                y0 + 18.0 + ph,
                e["event"].as_str().unwrap_or(""),
                x = sx(t)
            );
        }
    }
    let line: Vec<String> = pts
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", sx(*t), sy(*v)))
        .collect();
    let _ = write!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#2b6cb0" stroke-width="1.5"/>"##,
        line.join(" ")
    );
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn one_panel_per_series_with_its_points_and_events() {
        let s = |t: f64, a: f64| {
            (
                t,
                BTreeMap::from([("a".to_string(), a), ("b".to_string(), 1.0)]),
            )
        };
        let samples = vec![s(0.0, 1.0), s(60.0, 2.0), s(120.0, 1500.0)];
        let ev = vec![serde_json::json!({"event": "migration", "start_s": 30.0})];
        let out = svg(&samples, &ev);
        assert_eq!(out.matches("<polyline").count(), 2);
        assert!(out.contains(">migration</title>"));
        assert!(
            out.contains(">825<"),
            "the middle tick is half of 1.1 x the largest value: {out}"
        );
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
    }
}
