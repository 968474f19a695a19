//! The throughput and p99 latency of a run over time, as a small SVG chart written beside the
//! JSON report. Hand-written: two polylines and a few labels need no plotting library.

use std::fmt::Write;

/// One second of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    pub mb_per_s: f64,
    pub pages_per_s: f64,
    /// p99 acknowledgement latency of the pages acknowledged in this second (0 if none).
    pub p99_ms: f64,
}

const W: f64 = 800.0;
const PANEL_H: f64 = 170.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;

fn panel(
    out: &mut String,
    top: f64,
    title: &str,
    unit: &str,
    pts: &[(f64, f64)],
    t_max: f64,
    colour: &str,
) {
    let y_max = pts.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / t_max.max(1e-9);
    let y = |v: f64| top + PANEL_H - PANEL_H * v / y_max;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL_H}" fill="none" stroke="#999"/>"##,
        W - LEFT - RIGHT
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="13">{title}</text>"#,
        top - 6.0
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = y_max * frac;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="end">{v:.1} {unit}</text><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#eee"/>"##,
            LEFT - 4.0,
            y(v) + 4.0,
            W - RIGHT,
            y(v),
            y(v)
        );
    }
    let points: Vec<String> = pts
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
        points.join(" ")
    );
}

/// Renders the samples; `title` goes on top.
pub fn svg(samples: &[Sample], title: &str) -> String {
    let t_max = samples.last().map_or(1.0, |s| s.t);
    let h = 2.0 * PANEL_H + 110.0;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="15">{}</text>
"#,
        escape(title)
    );
    let mb: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, s.mb_per_s)).collect();
    let p99: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, s.p99_ms)).collect();
    panel(
        &mut out,
        45.0,
        "throughput (plaintext MB/s)",
        "MB/s",
        &mb,
        t_max,
        "#1f77b4",
    );
    panel(
        &mut out,
        45.0 + PANEL_H + 35.0,
        "p99 page acknowledgement (ms), per second",
        "ms",
        &p99,
        t_max,
        "#d62728",
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{t_max:.0} s</text><text x="{LEFT}" y="{}" font-size="11">0 s</text></svg>"#,
        W - RIGHT,
        h - 12.0,
        h - 12.0
    );
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_both_series() {
        let s: Vec<Sample> = (1..=5)
            .map(|i| Sample {
                t: i as f64,
                mb_per_s: 10.0 * i as f64,
                pages_per_s: 1.0,
                p99_ms: 3.0,
            })
            .collect();
        let svg = svg(&s, "run <1>");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("run &lt;1&gt;"));
        assert!(
            svg.contains("55.0 MB/s"),
            "top of the axis is 1.1 x the peak"
        );
    }
}
