//! Run reports: markdown + JSON, and an SVG plot of loss and learning rate (written by hand:
//! a polyline needs no plotting library).

use std::path::Path;

/// One logging line of a `train_log.jsonl`: (step, loss, learning rate).
pub type LogPoint = (f64, f64, f64);

/// (step, loss, lr) of every logging line of a `train_log.jsonl`.
pub fn read_train_log(path: &Path) -> Vec<LogPoint> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v.get("step")?.as_f64()?,
                v.get("loss")?.as_f64()?,
                v.get("learning_rate")?.as_f64()?,
            ))
        })
        .collect()
}

/// Two polylines (loss, left axis; learning rate, right axis) over steps.
pub fn loss_lr_svg(points: &[LogPoint], title: &str) -> String {
    let (w, h, pad) = (720.0, 360.0, 50.0);
    let max_step = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_loss = points.iter().map(|p| p.1).fold(1e-9, f64::max);
    let max_lr = points.iter().map(|p| p.2).fold(1e-12, f64::max);
    let x = |s: f64| pad + (w - 2.0 * pad) * s / max_step;
    let y = |v: f64, max: f64| h - pad - (h - 2.0 * pad) * v / max;
    let line = |f: &dyn Fn(&LogPoint) -> (f64, f64)| {
        points
            .iter()
            .map(|p| {
                let (a, b) = f(p);
                format!("{a:.1},{b:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let loss = line(&|p| (x(p.0), y(p.1, max_loss)));
    let lr = line(&|p| (x(p.0), y(p.2, max_lr)));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20" font-size="14">{title}</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="{r}" y="{lb}" text-anchor="end">step (max {max_step})</text>
<text x="5" y="{pad}" fill="#c0392b">loss (max {max_loss:.3})</text>
<text x="{r}" y="{pad}" text-anchor="end" fill="#2471a3">lr (max {max_lr:.2e})</text>
<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{loss}"/>
<polyline fill="none" stroke="#2471a3" stroke-width="1.5" stroke-dasharray="4 3" points="{lr}"/>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        lb = h - pad + 30.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_both_series() {
        let svg = loss_lr_svg(&[(1.0, 4.0, 1e-5), (2.0, 2.0, 2e-5)], "t");
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Step 1 of 2 sits mid-axis (50 + 620 / 2); the first loss is the maximum (top, y = 50).
        assert!(svg.contains("360.0,50.0"), "{svg}");
    }
}
