//! Line charts and the GLUE dot plot as SVG strings, drawn with `plotters`' SVG backend, for
//! inlining into the HTML report. Titles and axis labels are fixed text chosen by the caller,
//! except the GLUE chart's row labels (evaluation-set ids from the manifest), which the SVG
//! backend escapes like all text; the SVG carries no script, no external reference and no font
//! file (text is SVG `<text>`).
use crate::report::format;
use crate::report::metrics_log::Curve;
use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
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

/// The chart type the line charts draw on: f64 × f64, in SVG.
type XyChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
/// What drawing on it can fail with.
type DrawResult = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// An `<svg>` of [`WIDTH`] × [`HEIGHT`] with the frame every line chart shares — white
/// background, caption, axes over `x` and `y` with their labels and a light grid — what `draw`
/// puts on it, and the legend of its labelled series at `legend`.
fn xy_svg(
    title: &str,
    (x_label, y_label): (&str, &str),
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    legend: Option<SeriesLabelPosition>,
    draw: impl FnOnce(&mut XyChart<'_, '_>) -> DrawResult,
) -> Result<String> {
    let mut svg = String::new();
    let framed = || -> DrawResult {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(76)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&|v| format::axis(*v))
            .y_label_formatter(&|v| format::axis(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        draw(&mut c)?;
        if let Some(position) = legend {
            c.configure_series_labels()
                .position(position)
                .background_style(WHITE.mix(0.8))
                .border_style(RGBColor(200, 200, 200))
                .draw()?;
        }
        root.present()
    };
    framed().map_err(|e| anyhow!("drawing chart `{title}`: {e}"))?;
    Ok(svg)
}

/// Draw `chart` as an `<svg>` element; `None` when there are no points.
pub fn line_svg(chart: &Chart) -> Result<Option<String>> {
    if chart.points.is_empty() {
        return Ok(None);
    }
    let (x0, x1) = range(chart.points.iter().map(|p| p.0), 0.0);
    let (y0, y1) = range(chart.points.iter().map(|p| p.1), 0.05);
    let labels = (chart.x_label, chart.y_label);
    let svg = xy_svg(chart.title, labels, (x0, x1), (y0, y1), None, |c| {
        c.draw_series(LineSeries::new(
            chart.points.iter().copied(),
            RGBColor(31, 119, 180).stroke_width(2),
        ))?;
        Ok(())
    })?;
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
        raw.iter().chain(smooth.iter()).map(|p| p.1).chain(initial),
        0.05,
    );
    let blue = RGBColor(31, 119, 180);
    let upper_right = Some(SeriesLabelPosition::UpperRight);
    let svg = xy_svg(
        title,
        (x_label, "loss"),
        (x0, x1),
        (y0, y1),
        upper_right,
        |c| {
            c.draw_series(LineSeries::new(raw.iter().copied(), blue.mix(0.3)))?
                .label("logged loss")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], blue.mix(0.3)));
            let smoothed = format!("smoothed ({window}-record moving average)");
            c.draw_series(LineSeries::new(
                smooth.iter().copied(),
                blue.stroke_width(2),
            ))?
            .label(smoothed.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], blue.stroke_width(2))
            });
            if let Some(l0) = initial {
                let grey = RGBColor(110, 110, 110);
                let label = format!("initial loss {}", format::fixed(l0, 2));
                c.draw_series(DashedLineSeries::new(
                    [(x0, l0), (x1, l0)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
            }
            Ok(())
        },
    )?;
    Ok(Some(svg))
}

/// One evaluation set on the GLUE chart: every trial, the median with its interval, the
/// control and the reference, in percent points (`label` is the set and metric id).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMarks {
    pub label: String,
    pub trials: Vec<f64>,
    pub median: f64,
    pub ci95: Option<(f64, f64)>,
    pub control: Option<f64>,
    pub reference: Option<f64>,
}

/// The GLUE results as a dot plot, one row per evaluation set: the 95% interval as a bar, the
/// median as a diamond, every trial as a dot, the control as a cross and the reference as a
/// triangle, with a legend. `None` without rows.
pub fn tasks_svg(rows: &[TaskMarks], control_name: &str) -> Result<Option<String>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let title = "GLUE per evaluation set (percent points)";
    let values = rows.iter().flat_map(|r| {
        r.trials
            .iter()
            .copied()
            .chain([r.median])
            .chain(r.ci95.into_iter().flat_map(|(a, b)| [a, b]))
            .chain(r.control)
            .chain(r.reference)
    });
    let (x0, x1) = range(values, 0.08);
    // Room on the right for the legend, clear of the marks.
    let x1 = x1 + 0.5 * (x1 - x0);
    let n = rows.len();
    let height = (90 + 50 * n as u32).max(230);
    let label_width = rows
        .iter()
        .map(|r| r.label.chars().count() as u32)
        .max()
        .unwrap_or(0)
        .clamp(6, 40)
        * 7
        + 16;
    let (blue, red, green) = (
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing chart `{title}`: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(label_width)
            .build_cartesian_2d(x0..x1, -0.5..(n as f64 - 0.5))
            .map_err(|e| err(&e))?;
        let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        let y_label = move |y: &f64| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[n - 1 - i as usize].clone()
            } else {
                String::new()
            }
        };
        c.configure_mesh()
            .x_labels(8)
            .y_labels(2 * n + 1)
            .disable_y_mesh()
            .x_label_formatter(&|v| format::axis(*v))
            .y_label_formatter(&y_label)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        // Row i is drawn at y = n - 1 - i, so the first set is at the top.
        let y = |i: usize| (n - 1 - i) as f64;
        c.draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
            let (lo, hi) = r.ci95?;
            Some(Rectangle::new(
                [(lo, y(i) - 0.09), (hi, y(i) + 0.09)],
                blue.mix(0.25).filled(),
            ))
        }))
        .map_err(|e| err(&e))?
        .label("95% interval")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 3), (x + 16, y + 3)], blue.mix(0.25).filled())
        });
        c.draw_series(rows.iter().enumerate().flat_map(|(i, r)| {
            r.trials
                .iter()
                .map(move |&t| Circle::new((t, y(i)), 3, blue.mix(0.6).filled()))
        }))
        .map_err(|e| err(&e))?
        .label("trials")
        .legend(move |(x, y)| Circle::new((x + 8, y), 3, blue.mix(0.6).filled()));
        c.draw_series(rows.iter().enumerate().map(|(i, r)| {
            PathElement::new(
                vec![(r.median, y(i) - 0.22), (r.median, y(i) + 0.22)],
                blue.stroke_width(3),
            )
        }))
        .map_err(|e| err(&e))?
        .label("median")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x + 8, y - 6), (x + 8, y + 6)], blue.stroke_width(3))
        });
        if rows.iter().any(|r| r.control.is_some()) {
            let label = format!("control ({control_name})");
            c.draw_series(
                rows.iter().enumerate().filter_map(|(i, r)| {
                    Some(Cross::new((r.control?, y(i)), 6, red.stroke_width(2)))
                }),
            )
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| Cross::new((x + 8, y), 5, red.stroke_width(2)));
        }
        if rows.iter().any(|r| r.reference.is_some()) {
            c.draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
                Some(TriangleMarker::new((r.reference?, y(i)), 7, green.filled()))
            }))
            .map_err(|e| err(&e))?
            .label("reference")
            .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 5, green.filled()));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
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
    let labels = (x_label, y_label);
    let middle_right = Some(SeriesLabelPosition::MiddleRight);
    let svg = xy_svg(title, labels, (x0, x1), (y0, y1), middle_right, |c| {
        for (i, (label, points)) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            c.draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        }
        Ok(())
    })?;
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
    fn task_chart_marks_trials_interval_control_and_reference() {
        let rows = vec![
            TaskMarks {
                label: "demo-sentiment/accuracy".into(),
                trials: vec![60.67, 58.33, 58.0],
                median: 58.33,
                ci95: Some((54.66, 62.5)),
                control: Some(48.5),
                reference: None,
            },
            TaskMarks {
                label: "sst2/accuracy".into(),
                trials: vec![90.0],
                median: 90.0,
                ci95: None,
                control: None,
                reference: Some(92.2),
            },
        ];
        let svg = tasks_svg(&rows, "no-pretraining").unwrap().unwrap();
        for text in [
            "demo-sentiment/accuracy",
            "sst2/accuracy",
            "control (no-pretraining)",
            "reference",
            "95% interval",
            "trials",
        ] {
            assert!(svg.contains(text), "no {text:?}");
        }
        // Four trial dots plus the legend's.
        assert!(svg.matches("<circle").count() >= 5, "{svg}");
        assert!(tasks_svg(&[], "x").unwrap().is_none());
        // A hostile set id stays text.
        let mut hostile = rows[..1].to_vec();
        hostile[0].label = "<script>alert(1)</script>".into();
        let svg = tasks_svg(&hostile, "c").unwrap().unwrap();
        assert!(!svg.contains("<script") && svg.contains("&lt;script&gt;"));
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
