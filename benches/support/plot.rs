//! PNG line charts of benchmark results, written next to their JSON reports. Text needs a TTF
//! font: DejaVu Sans from Debian's fonts-dejavu-core, or the file in `C19_BENCH_FONT`; without
//! one the plot is skipped with a note, the figures are in the table and the JSON anyway.

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = std::env::var("C19_BENCH_FONT")
            .into_iter()
            .chain(FONTS.iter().map(|f| f.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return register_font("sans-serif", FontStyle::Normal, bytes).is_ok();
            }
        }
        false
    })
}

/// Draws `series` as lines with markers into `target/bench/<name>.png`.
pub fn lines(name: &str, title: &str, x_label: &str, y_label: &str, series: &[Series]) {
    if !font_ready() {
        println!("plot {name}: skipped (no TTF font; set C19_BENCH_FONT)");
        return;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench/{name}.png"));
    match draw(&path, title, x_label, y_label, series) {
        Ok(()) => println!("plotted {}", path.display()),
        Err(e) => println!("plot {name}: {e}"),
    }
}

fn draw(
    path: &PathBuf,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    for (x, y) in all {
        x_max = x_max.max(*x);
        y_max = y_max.max(*y);
    }
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max * 1.05 + 1e-9, 0f64..y_max * 1.1 + 1e-9)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The empirical CDF of `sorted` samples as step points: (value, fraction ≤ value).
pub fn cdf(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    let mut points = Vec::with_capacity(sorted.len() * 2);
    for (i, v) in sorted.iter().enumerate() {
        points.push((*v, i as f64 / n));
        points.push((*v, (i + 1) as f64 / n));
    }
    points
}
