//! Charts as inline SVG drawn on the server: stacked bars of deliveries per bucket by outcome
//! (delivered, retried, dead-lettered), readable without JavaScript.

use std::fmt::Write as _;
use std::time::SystemTime;

/// One bar: a bucket's start and its counts by outcome.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bar {
    pub(crate) start: Option<SystemTime>,
    pub(crate) delivered: u64,
    pub(crate) retried: u64,
    pub(crate) dead: u64,
}

const W: f64 = 960.0;
const H: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// An SVG of `bars` (oldest first), titled `title` for screen readers; `per` names the
/// bucket width ("per minute").
pub(crate) fn stacked(bars: &[Bar], title: &str, per: &str) -> String {
    let max = bars
        .iter()
        .map(|b| b.delivered + b.retried + b.dead)
        .max()
        .unwrap_or(0)
        .max(1);
    let total: u64 = bars.iter().map(|b| b.delivered + b.retried + b.dead).sum();
    let plot_w = W - LEFT - 4.0;
    let plot_h = H - BOTTOM - TOP;
    let n = bars.len().max(1) as f64;
    let bw = plot_w / n;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title" preserveAspectRatio="none"><title id="chart-title">{} ({} in total, at most {max} {per})</title>"#,
        escape(title),
        total
    );
    for i in 0..=4 {
        let y = TOP + plot_h * f64::from(i) / 4.0;
        let value = max as f64 * f64::from(4 - i) / 4.0;
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - 4.0,
            LEFT - 6.0,
            y + 4.0,
            short(value)
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let x = LEFT + bw * i as f64;
        let mut y = TOP + plot_h;
        for (count, class) in [
            (b.delivered, "c-delivered"),
            (b.retried, "c-retried"),
            (b.dead, "c-dead"),
        ] {
            if count == 0 {
                continue;
            }
            let h = plot_h * count as f64 / max as f64;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{x:.2}" y="{y:.2}" width="{:.2}" height="{h:.2}"/>"#,
                (bw * 0.85).max(0.5)
            );
        }
    }
    let labels = 6.min(bars.len());
    for k in 0..labels {
        let i = if labels <= 1 {
            0
        } else {
            k * (bars.len() - 1) / (labels - 1)
        };
        if let Some(start) = bars[i].start {
            let x = LEFT + bw * i as f64;
            let anchor = if k == 0 {
                "start"
            } else if k + 1 == labels {
                "end"
            } else {
                "middle"
            };
            let text = crate::time::rfc3339(start);
            let label = text.get(5..16).unwrap_or(&text).replace('T', " ");
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{}" text-anchor="{anchor}">{label}</text>"#,
                H - 6.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_tallest_and_empty_series_draw_axes_only() {
        let bars = [
            Bar {
                delivered: 10,
                ..Bar::default()
            },
            Bar {
                delivered: 5,
                retried: 3,
                dead: 2,
                ..Bar::default()
            },
        ];
        let svg = stacked(&bars, "deliveries <1h>", "per minute");
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("deliveries &lt;1h&gt;"));
        let empty = stacked(&[], "none", "per minute");
        assert_eq!(empty.matches("<rect").count(), 0);
    }
}
