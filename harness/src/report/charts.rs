//! Line charts as SVG strings, drawn with `plotters`' SVG backend, for inlining into the HTML
//! report. Titles and axis labels are fixed text chosen by the caller (never run data); the
//! SVG carries no script, no external reference and no font file (text is SVG `<text>`).
use crate::report::format;
use crate::report::metrics_log::Curve;
use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// Chart size in SVG user units (the page scales it to its width).
pub const WIDTH: u32 = 760;
pub const HEIGHT: u32 = 300;

/// What to draw.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub points: &'a Curve,
}

/// `[lo, hi]` of `values` with a margin, widened when all values are equal.
fn range(values: impl Iterator<Item = f64>, margin: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * lo.abs().max(1.0) {
        let pad = (lo.abs() * 0.05).max(0.5);
        return (lo - pad, hi + pad);
    }
    (lo - span * margin, hi + span * margin)
}

/// Draw `chart` as an `<svg>` element; `None` when there are no points.
pub fn line_svg(chart: &Chart) -> Result<Option<String>> {
    if chart.points.is_empty() {
        return Ok(None);
    }
    let (x0, x1) = range(chart.points.iter().map(|p| p.0), 0.0);
    let (y0, y1) = range(chart.points.iter().map(|p| p.1), 0.05);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing chart `{}`: {e}", chart.title);
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(chart.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(76)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        c.configure_mesh()
            .x_desc(chart.x_label)
            .y_desc(chart.y_label)
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&|v| format::axis(*v))
            .y_label_formatter(&|v| format::axis(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(
            chart.points.iter().copied(),
            RGBColor(31, 119, 180).stroke_width(2),
        ))
        .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(Some(svg))
}

/// The MLM loss as the paper draws it: every logged value as a faint line, the smoothed loss
/// over it, and the initial loss as a dashed horizontal line, with a legend. `x_label` names
/// the x unit (budget time); `window` is the smoothing window in records (for the legend).
pub fn loss_svg(
    x_label: &str,
    raw: &Curve,
    smooth: &Curve,
    window: usize,
    initial: Option<f64>,
) -> Result<Option<String>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let title = "MLM loss against budget time";
    let (x0, x1) = range(raw.iter().map(|p| p.0), 0.0);
    let (y0, y1) = range(
        raw.iter()
            .chain(smooth.iter())
            .map(|p| p.1)
            .chain(initial.into_iter()),
        0.05,
    );
    let blue = RGBColor(31, 119, 180);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing chart `{title}`: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(76)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc("loss")
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&|v| format::axis(*v))
            .y_label_formatter(&|v| format::axis(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(raw.iter().copied(), blue.mix(0.3)))
            .map_err(|e| err(&e))?
            .label("logged loss")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], blue.mix(0.3)));
        let smoothed = format!("smoothed ({window}-record moving average)");
        c.draw_series(LineSeries::new(
            smooth.iter().copied(),
            blue.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label(smoothed.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], blue.stroke_width(2)));
        if let Some(l0) = initial {
            let grey = RGBColor(110, 110, 110);
            let label = format!("initial loss {}", format::fixed(l0, 2));
            c.draw_series(DashedLineSeries::new(
                [(x0, l0), (x1, l0)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(Some(svg))
}

/// Colours of overlaid series, in order (cycled).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Several curves on one chart with a legend; `series` are (label, points), the labels fixed
/// text chosen by the caller (`[1]`, `[2]`, … — never run data). `None` when every curve is
/// empty.
pub fn lines_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, &Curve)],
) -> Result<Option<String>> {
    let all = || series.iter().flat_map(|(_, c)| c.iter());
    if all().next().is_none() {
        return Ok(None);
    }
    let (x0, x1) = range(all().map(|p| p.0), 0.0);
    let (y0, y1) = range(all().map(|p| p.1), 0.05);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing chart `{title}`: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(76)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&|v| format::axis(*v))
            .y_label_formatter(&|v| format::axis(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (label, points)) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            c.draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_svg_and_handles_flat_and_empty_curves() {
        let pts: Curve = (0..100).map(|i| (i as f64, (i as f64).sqrt())).collect();
        let svg = line_svg(&Chart {
            title: "t <&>",
            x_label: "x",
            y_label: "y",
            points: &pts,
        })
        .unwrap()
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "no line drawn"
        );
        assert!(!svg.contains("t <&>"), "title not escaped");
        let flat: Curve = vec![(1.0, 5.0), (2.0, 5.0)];
        assert!(line_svg(&Chart {
            title: "flat",
            x_label: "x",
            y_label: "y",
            points: &flat
        })
        .unwrap()
        .is_some());
        assert!(line_svg(&Chart {
            title: "empty",
            x_label: "x",
            y_label: "y",
            points: &Vec::new()
        })
        .unwrap()
        .is_none());
        assert_eq!(range([3.0].into_iter(), 0.0), (2.5, 3.5));
    }

    #[test]
    fn loss_chart_has_raw_smoothed_and_initial_lines() {
        let raw: Curve = (0..100)
            .map(|i| (i as f64 / 100.0, 8.0 - (i as f64).sqrt() / 4.0))
            .collect();
        let sm = crate::report::metrics_log::smooth(&raw, 5);
        let svg = loss_svg("budget used (device-minutes)", &raw, &sm, 5, Some(8.25))
            .unwrap()
            .unwrap();
        assert!(svg.contains("initial loss 8.25"), "no initial-loss legend");
        assert!(
            svg.contains("5-record moving average"),
            "no smoothing legend"
        );
        assert!(svg.contains("budget used (device-minutes)"));
        // The raw line, the smoothed line, the dashed initial loss (one path per dash) and
        // the legend's samples.
        assert!(svg.matches("<polyline").count() + svg.matches("<path").count() >= 6);
        assert!(loss_svg("x", &Vec::new(), &Vec::new(), 1, None)
            .unwrap()
            .is_none());
    }
}
