//! One timeline drawn as inline SVG: a row per worker, a bar per span, on a time axis that
//! all the timelines of one experiment share so that their lengths compare directly.

use std::fmt::Write as _;

use super::escape;
use crate::lab::record::{Span, Timeline, Worker};

/// Rows drawn at most; the rest are counted in the caption. A thread pool rarely has more,
/// and a thousand one-request threads drawn as a thousand rows would say nothing more than
/// the first few dozen do.
pub(super) const MAX_ROWS: usize = 32;
/// Bars drawn at most per timeline, so that the report stays a few megabytes at worst.
pub(super) const MAX_BARS: usize = 4000;
/// The drawing's width in pixels (and user units: the SVG is drawn at 1:1).
pub(super) const WIDTH: f64 = 960.0;
/// The plot area's left and right edges; the row labels sit left of it.
pub(super) const PLOT_LEFT: f64 = 132.0;
pub(super) const PLOT_RIGHT: f64 = WIDTH - 36.0;
/// Bars are drawn at least this wide: a 10 µs task in a 10 s run would otherwise vanish.
pub(super) const MIN_BAR: f64 = 1.0;
const PLOT_WIDTH: f64 = PLOT_RIGHT - PLOT_LEFT;
const TOP: f64 = 6.0;
const ROW_HEIGHT: f64 = 18.0;
const BAR_HEIGHT: f64 = 12.0;
const AXIS_HEIGHT: f64 = 30.0;

/// A timeline drawn, and what the drawing left out (for the caption).
#[derive(Debug, Clone)]
pub(super) struct Drawing {
    /// The `<svg>` element.
    pub(super) svg: String,
    /// All the timeline's rows, drawn or not.
    pub(super) rows: usize,
    /// Rows not drawn (beyond `MAX_ROWS`), and the spans on them.
    pub(super) rows_hidden: usize,
    pub(super) spans_hidden: usize,
    /// Spans on the drawn rows.
    pub(super) spans_drawable: usize,
    /// Every `stride`-th span of each drawn row is drawn (1: all of them).
    pub(super) stride: usize,
    /// Bars drawn.
    pub(super) bars: usize,
}

/// Maps a timeline's times onto the plot area: `origin_ns` (the timeline's start) to the
/// left edge, `origin_ns + scale_ns` (the longest timeline's duration) to the right.
#[derive(Debug, Clone, Copy)]
struct Scale {
    origin_ns: u64,
    scale_ns: u64,
}

impl Scale {
    fn x(self, t_ns: u64) -> f64 {
        // Clamped: a span recorded a little outside its run (another process's clock read
        // before the parent's) stays inside the plot.
        let share = t_ns.saturating_sub(self.origin_ns) as f64 / self.scale_ns.max(1) as f64;
        PLOT_LEFT + share.min(1.0) * PLOT_WIDTH
    }

    /// A bar's left edge and width.
    fn bar(self, span: &Span) -> (f64, f64) {
        let left = self.x(span.start_ns);
        let mut width = self.x(span.end_ns.max(span.start_ns)) - left;
        // A hairline gap at the end of wide bars keeps back-to-back tasks on one worker
        // (a sequential run's chunks) distinguishable instead of merging into one bar.
        if width >= 4.0 {
            width -= 0.75;
        }
        if width < MIN_BAR {
            width = MIN_BAR;
        }
        (left.min(PLOT_RIGHT - width), width)
    }
}

/// The row labels: the row's own name if it has one, else `row_kind` and a number. Threads are
/// numbered 1, 2, ... in row order rather than by their process-wide ids, which only say how
/// many threads earlier experiments started; processes keep their pid, which a learner can
/// match with `ps`.
fn labels(rows: &[Worker], row_kind: &str, names: &[(Worker, String)]) -> Vec<String> {
    let is_process_kind = row_kind.contains("process");
    let mut threads = 0;
    rows.iter()
        .map(|w| match *w {
            _ if names.iter().any(|(n, _)| n == w) => names
                .iter()
                .find_map(|(n, name)| (n == w).then(|| name.clone()))
                .unwrap_or_default(),
            Worker::Thread(_) => {
                threads += 1;
                let kind = if is_process_kind { "thread" } else { row_kind };
                format!("{kind} {threads}")
            }
            Worker::Process(pid) => {
                let kind = if is_process_kind { row_kind } else { "process" };
                format!("{kind} {pid}")
            }
        })
        .collect()
}

/// The smallest stride that keeps the bars of all rows (each row keeping its first span)
/// within `cap`.
fn stride(counts: &[usize], cap: usize) -> usize {
    let total: usize = counts.iter().sum();
    let mut k = total.div_ceil(cap.max(1)).max(1);
    while counts.iter().map(|n| n.div_ceil(k)).sum::<usize>() > cap && k < total {
        k += 1;
    }
    k
}

/// How many spans of one row are in progress on average while any is: their summed
/// durations over the time their union covers. `spans` in start order.
fn mean_overlap(spans: &[&Span]) -> f64 {
    let (mut busy, mut total) = (0u64, 0u64);
    let mut current: Option<(u64, u64)> = None;
    for span in spans {
        let end = span.end_ns.max(span.start_ns);
        total += end - span.start_ns;
        current = match current {
            Some((start, until)) if span.start_ns <= until => Some((start, until.max(end))),
            Some((start, until)) => {
                busy += until - start;
                Some((span.start_ns, end))
            }
            None => Some((span.start_ns, end)),
        };
    }
    if let Some((start, until)) = current {
        busy += until - start;
    }
    if busy == 0 {
        1.0
    } else {
        (total as f64 / busy as f64).max(1.0)
    }
}

/// How opaque a row's bars are. Alone, a bar is nearly solid; where many overlap (an event
/// loop's thousand requests in flight on one thread) each is faint, so the stack darkens
/// with the number in flight and the ramps where requests start and finish stay visible.
/// The overlap is averaged over time rather than taken at its peak, so that a burst of
/// short ticks does not fade the long blocking call they pile up behind.
fn opacity(overlap: f64) -> f64 {
    (0.85 / overlap.max(1.0).sqrt()).max(0.12)
}

/// The axis ticks over `0..=scale_ns`: a 1-2-5 step giving at most about nine, labelled in
/// milliseconds, or in seconds for runs of two seconds and more.
pub(super) fn ticks(scale_ns: u64) -> Vec<(u64, String)> {
    let raw = scale_ns.max(1) as f64 / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let step_ns = (step.round() as u64).max(1);
    let (unit_ns, unit) = if scale_ns >= 2_000_000_000 {
        (1e9, "s")
    } else {
        (1e6, "ms")
    };
    let decimals = (-(step_ns as f64 / unit_ns).log10().floor()).clamp(0.0, 6.0) as usize;
    (0..)
        .map(|i| i * step_ns)
        .take_while(|t| *t <= scale_ns)
        .map(|t| {
            let label = if t == 0 {
                "0".to_owned()
            } else {
                format!("{:.decimals$} {unit}", t as f64 / unit_ns)
            };
            (t, label)
        })
        .collect()
}

/// Milliseconds since the timeline's start, for tooltips.
fn ms(t_ns: u64, origin_ns: u64) -> String {
    format!("{:.3}", t_ns.saturating_sub(origin_ns) as f64 / 1e6)
}

/// Draws `timeline` with `scale_ns` (the longest duration among its experiment's
/// timelines) across the plot.
pub(super) fn timeline(timeline: &Timeline, scale_ns: u64) -> Drawing {
    let workers = timeline.rows();
    let drawn = &workers[..workers.len().min(MAX_ROWS)];
    let labels = labels(drawn, timeline.row_kind, &timeline.row_names);
    let mut rows: Vec<Vec<&Span>> = vec![Vec::new(); drawn.len()];
    let mut spans_hidden = 0;
    for span in &timeline.spans {
        match drawn.iter().position(|w| *w == span.worker) {
            Some(i) => rows[i].push(span),
            None => spans_hidden += 1,
        }
    }
    for row in &mut rows {
        row.sort_by_key(|s| (s.start_ns, s.end_ns));
    }
    let counts: Vec<usize> = rows.iter().map(Vec::len).collect();
    let stride = stride(&counts, MAX_BARS);
    let scale = Scale {
        origin_ns: timeline.start_ns,
        scale_ns: scale_ns.max(1),
    };
    let height = TOP + ROW_HEIGHT * drawn.len().max(1) as f64 + AXIS_HEIGHT;
    let plot_bottom = height - AXIS_HEIGHT;
    let model = escape(&timeline.model);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="timeline of {model}">"#
    );
    let _ = write!(svg, "<title>timeline of {model}</title>");

    // The lanes cover this run only, so a model that finished early visibly ends early.
    let run_end = scale.x(timeline.end_ns);
    svg.push_str(r#"<g class="lanes">"#);
    for i in 0..drawn.len().max(1) {
        let y = TOP + ROW_HEIGHT * i as f64;
        let _ = write!(
            svg,
            r#"<rect class="lane" x="{PLOT_LEFT}" y="{y}" width="{:.2}" height="{ROW_HEIGHT}"/>"#,
            (run_end - PLOT_LEFT).max(MIN_BAR)
        );
    }
    svg.push_str("</g>");

    svg.push_str(r#"<g class="axis">"#);
    for (t, label) in ticks(scale.scale_ns) {
        let x = PLOT_LEFT + t as f64 / scale.scale_ns as f64 * PLOT_WIDTH;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{x:.2}" y1="{TOP}" x2="{x:.2}" y2="{:.1}"/><text class="axis-label" x="{x:.2}" y="{:.1}">{}</text>"#,
            plot_bottom + 4.0,
            plot_bottom + 17.0,
            escape(&label)
        );
    }
    let _ = write!(
        svg,
        r#"<line class="baseline" x1="{PLOT_LEFT}" y1="{plot_bottom}" x2="{PLOT_RIGHT}" y2="{plot_bottom}"/>"#
    );
    svg.push_str("</g>");

    if drawn.is_empty() {
        let _ = write!(
            svg,
            r#"<text class="empty" x="{PLOT_LEFT}" y="{:.1}">no spans recorded</text>"#,
            TOP + ROW_HEIGHT / 2.0 + 4.0
        );
    }

    let mut bars = 0;
    for (i, (row, label)) in rows.iter().zip(&labels).enumerate() {
        let y = TOP + ROW_HEIGHT * i as f64;
        let sampled: Vec<&Span> = row.iter().step_by(stride).copied().collect();
        let label = escape(label);
        let overlap = mean_overlap(&sampled);
        let _ = write!(
            svg,
            r#"<g class="row"><title>{label}: {} spans, {} in progress on average while busy</title><text class="label" x="{:.1}" y="{:.1}">{label}</text><g class="bars" fill-opacity="{:.2}">"#,
            row.len(),
            super::number(overlap),
            PLOT_LEFT - 8.0,
            y + ROW_HEIGHT / 2.0 + 4.0,
            opacity(overlap),
        );
        let bar_y = y + (ROW_HEIGHT - BAR_HEIGHT) / 2.0;
        for span in &sampled {
            let (x, width) = scale.bar(span);
            let _ = write!(
                svg,
                r#"<rect class="{kind}" x="{x:.2}" y="{bar_y}" width="{width:.2}" height="{BAR_HEIGHT}"><title>{model} · {label} · {kind} · {} – {} ms</title></rect>"#,
                ms(span.start_ns, scale.origin_ns),
                ms(span.end_ns, scale.origin_ns),
                kind = span.kind.name(),
            );
            bars += 1;
        }
        svg.push_str("</g></g>");
    }
    svg.push_str("</svg>");

    Drawing {
        svg,
        rows: workers.len(),
        rows_hidden: workers.len() - drawn.len(),
        spans_hidden,
        spans_drawable: counts.iter().sum(),
        stride,
        bars,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::{self, Element};
    use super::*;
    use crate::lab::record::Kind;

    const T0: u64 = 5_000_000_000;
    const MS: u64 = 1_000_000;

    fn span(worker: Worker, kind: Kind, start_ms: u64, end_ms: u64) -> Span {
        Span {
            worker,
            kind,
            start_ns: T0 + start_ms * MS,
            end_ns: T0 + end_ms * MS,
        }
    }

    fn timeline(row_kind: &'static str, duration_ms: u64, spans: Vec<Span>) -> Timeline {
        Timeline {
            model: "threads".to_owned(),
            row_kind,
            start_ns: T0,
            end_ns: T0 + duration_ms * MS,
            spans,
            row_names: Vec::new(),
        }
    }

    fn parse(d: &Drawing) -> Element {
        let svg = tree::parse(&d.svg).unwrap_or_else(|e| panic!("{e}\n{}", d.svg));
        assert_eq!(svg.name, "svg");
        svg
    }

    fn bars(e: &Element) -> Vec<&Element> {
        e.select("rect", "")
            .into_iter()
            .filter(|r| {
                ["cpu", "wait", "block", "tick"]
                    .iter()
                    .any(|k| r.has_class(k))
            })
            .collect()
    }

    #[test]
    fn one_row_group_per_worker_and_one_bar_per_span() {
        let t = timeline(
            "thread",
            100,
            vec![
                span(Worker::Thread(17), Kind::Cpu, 0, 40),
                span(Worker::Thread(9), Kind::Block, 5, 30),
                span(Worker::Thread(17), Kind::Wait, 40, 60),
                span(Worker::Process(4123), Kind::Tick, 50, 51),
                span(Worker::Thread(9), Kind::Cpu, 30, 90),
                span(Worker::Thread(17), Kind::Cpu, 60, 100),
            ],
        );
        let d = super::timeline(&t, 100 * MS);
        let svg = parse(&d);
        let rows = svg.select("g", "row");
        assert_eq!(rows.len(), 3);
        let labels: Vec<String> = rows
            .iter()
            .map(|r| r.select("text", "label")[0].text())
            .collect();
        assert_eq!(labels, ["thread 1", "thread 2", "process 4123"]);
        let per_row: Vec<usize> = rows.iter().map(|r| bars(r).len()).collect();
        assert_eq!(per_row, [3, 2, 1]);
        assert_eq!(bars(&svg).len(), 6);
        assert_eq!((d.bars, d.stride, d.rows_hidden), (6, 1, 0));
        let first = &bars(rows[0])[1];
        assert!(first.has_class("wait"), "{first:?}");
        let tip = first.tooltip().unwrap();
        assert!(tip.contains("threads") && tip.contains("thread 1"), "{tip}");
        assert!(tip.contains("40.000 – 60.000 ms"), "{tip}");
        assert!(bars(rows[2])[0].has_class("tick"));
    }

    #[test]
    fn bars_lie_in_the_plot_in_start_order_on_the_shared_scale() {
        // Out of order in the vector, one before the run and one past the scale, one tiny.
        let mut spans: Vec<Span> = [70, 10, 50, 30, 90]
            .into_iter()
            .map(|s| span(Worker::Thread(1), Kind::Cpu, s, s + 5))
            .collect();
        spans.push(Span {
            start_ns: T0 - MS,
            end_ns: T0 + MS,
            ..spans[0]
        });
        spans.push(span(Worker::Thread(1), Kind::Cpu, 195, 260));
        spans.push(Span {
            start_ns: T0 + 120 * MS,
            end_ns: T0 + 120 * MS + 10,
            ..spans[0]
        });
        // Drawn on a scale twice its duration, as beside a model that took twice as long.
        let t = timeline("thread", 100, spans);
        let d = super::timeline(&t, 200 * MS);
        let svg = parse(&d);
        let height = svg.num("height");
        let xs: Vec<f64> = bars(&svg).iter().map(|r| r.num("x")).collect();
        assert_eq!(xs.len(), 8);
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
        for bar in bars(&svg) {
            let (x, w, y, h) = (
                bar.num("x"),
                bar.num("width"),
                bar.num("y"),
                bar.num("height"),
            );
            assert!(x >= PLOT_LEFT && x + w <= PLOT_RIGHT + 1e-9, "{bar:?}");
            assert!(w >= MIN_BAR, "{bar:?}");
            assert!(y >= 0.0 && y + h <= height, "{bar:?}");
        }
        // 50 ms on a 200 ms scale is a quarter of the way across.
        let quarter = PLOT_LEFT + PLOT_WIDTH / 4.0;
        assert!((xs[3] - quarter).abs() < 0.01, "{xs:?}");
        assert_eq!(xs[0], PLOT_LEFT);
        // The span that runs past the scale starts where it started and is cut at the edge.
        let last = bars(&svg)[7];
        assert!(
            (last.num("x") - (PLOT_LEFT + 0.975 * PLOT_WIDTH)).abs() < 0.01,
            "{last:?}"
        );
        // The lane shows where this run ended: half-way.
        let lane = &svg.select("rect", "lane")[0];
        assert!(
            (lane.num("width") - PLOT_WIDTH / 2.0).abs() < 0.01,
            "{lane:?}"
        );
    }

    #[test]
    fn rows_beyond_the_cap_are_counted_not_drawn() {
        let spans = (0..MAX_ROWS as u32 + 8)
            .flat_map(|n| {
                let s = u64::from(n);
                [
                    span(Worker::Thread(100 + n), Kind::Block, s, s + 10),
                    span(Worker::Thread(100 + n), Kind::Block, s + 20, s + 30),
                ]
            })
            .collect();
        let d = super::timeline(&timeline("thread", 100, spans), 100 * MS);
        let svg = parse(&d);
        assert_eq!(svg.select("g", "row").len(), MAX_ROWS);
        assert_eq!(bars(&svg).len(), 2 * MAX_ROWS);
        assert_eq!(
            (d.rows, d.rows_hidden, d.spans_hidden),
            (MAX_ROWS + 8, 8, 16)
        );
        // The rows drawn are the first to start.
        let last = svg.select("text", "label").last().unwrap().text();
        assert_eq!(last, format!("thread {MAX_ROWS}"));
    }

    #[test]
    fn above_the_bar_cap_a_deterministic_subset_keeps_every_row() {
        let mut spans: Vec<Span> = (0..3 * MAX_BARS as u64)
            .map(|i| Span {
                worker: Worker::Thread(1),
                kind: Kind::Wait,
                start_ns: T0 + i * 1000,
                end_ns: T0 + i * 1000 + 50 * MS,
            })
            .collect();
        spans.push(span(Worker::Thread(2), Kind::Block, 1, 2));
        spans.push(span(Worker::Thread(2), Kind::Block, 3, 4));
        let t = timeline("loop thread", 100, spans);
        let d = super::timeline(&t, 100 * MS);
        let svg = parse(&d);
        let drawn = bars(&svg).len();
        assert!(drawn <= MAX_BARS && drawn > MAX_BARS / 2, "{drawn}");
        assert_eq!(d.bars, drawn);
        assert!(d.stride >= 3, "{}", d.stride);
        assert_eq!(d.spans_drawable, 3 * MAX_BARS + 2);
        let rows = svg.select("g", "row");
        assert_eq!(bars(rows[1]).len(), 1, "the small row keeps its first span");
        assert_eq!(d.svg, super::timeline(&t, 100 * MS).svg);
        // The overlapping row is drawn fainter than the lone bar.
        let alpha = |r: &Element| r.select("g", "bars")[0].num("fill-opacity");
        assert!(alpha(rows[0]) < 0.3 && alpha(rows[1]) > 0.8);

        // At the cap exactly, everything is drawn.
        let t = timeline("thread", 100, t.spans[..MAX_BARS].to_vec());
        let d = super::timeline(&t, 100 * MS);
        assert_eq!((d.stride, d.bars), (1, MAX_BARS));
    }

    #[test]
    fn the_stride_is_the_smallest_that_keeps_under_the_cap() {
        assert_eq!(stride(&[10, 20], 30), 1);
        assert_eq!(stride(&[31], 30), 2);
        // 8 spans over a cap of 4 would take every 2nd, but each row rounds up: 2 + 3 > 4.
        assert_eq!(stride(&[3, 5], 4), 3);
        assert_eq!(stride(&[MAX_BARS - 1, MAX_BARS + 1], MAX_BARS), 3);
        assert_eq!(stride(&[], MAX_BARS), 1);
        for counts in [vec![1; 40], vec![7, 7, 7, 7, 7], vec![100_000, 1, 1]] {
            let k = stride(&counts, 10);
            let drawn = |k: usize| counts.iter().map(|n| n.div_ceil(k)).sum::<usize>();
            assert!(
                drawn(k) <= 10 || k >= *counts.iter().max().unwrap(),
                "{counts:?}: {k}"
            );
            assert!(
                k == 1 || drawn(k - 1) > 10,
                "{counts:?}: {k} is not the smallest"
            );
        }
    }

    #[test]
    fn a_burst_of_ticks_does_not_fade_the_call_they_wait_behind() {
        let w = Worker::Thread(1);
        let mut spans = vec![span(w, Kind::Block, 0, 300)];
        spans.extend((0..40).map(|i| Span {
            worker: w,
            kind: Kind::Tick,
            start_ns: T0 + 299 * MS + i * 1000,
            end_ns: T0 + 299 * MS + i * 1000 + 50_000,
        }));
        spans.push(span(Worker::Thread(2), Kind::Wait, 0, 100));
        spans.push(span(Worker::Thread(2), Kind::Wait, 0, 100));
        let d = super::timeline(&timeline("loop thread", 300, spans), 300 * MS);
        let svg = parse(&d);
        let alpha: Vec<f64> = svg
            .select("g", "bars")
            .iter()
            .map(|g| g.num("fill-opacity"))
            .collect();
        assert!(alpha[0] > 0.8, "{alpha:?}");
        // Two requests in flight the whole time: each half as dark, the pair about as dark.
        assert!(
            alpha[1] < 0.7 && 1.0 - (1.0 - alpha[1]).powi(2) > 0.8,
            "{alpha:?}"
        );
    }

    #[test]
    fn an_empty_timeline_is_still_a_drawing() {
        let d = super::timeline(&timeline("thread", 0, Vec::new()), 0);
        let svg = parse(&d);
        assert!(svg.select("g", "row").is_empty());
        assert_eq!(svg.select("text", "empty")[0].text(), "no spans recorded");
    }

    #[test]
    fn ticks_read_in_ms_or_s() {
        let labels = |ns| -> Vec<String> { ticks(ns).into_iter().map(|(_, l)| l).collect() };
        assert_eq!(
            labels(1_500 * MS),
            [
                "0", "200 ms", "400 ms", "600 ms", "800 ms", "1000 ms", "1200 ms", "1400 ms"
            ]
        );
        assert_eq!(
            labels(10_000 * MS),
            ["0", "2 s", "4 s", "6 s", "8 s", "10 s"]
        );
        assert_eq!(labels(3 * MS)[1], "0.5 ms");
        assert_eq!(labels(20_000)[1], "0.005 ms");
        for ns in [1, 7, 999, 123_456_789, 86_400_000_000_000] {
            let t = ticks(ns);
            assert!((2..=10).contains(&t.len()) || ns < 8, "{ns}: {t:?}");
            assert!(t.iter().all(|(t, _)| *t <= ns));
        }
    }

    #[test]
    fn labels_use_the_row_kind() {
        let rows = [Worker::Thread(12), Worker::Process(77), Worker::Thread(3)];
        assert_eq!(
            labels(&rows, "loop thread", &[]),
            ["loop thread 1", "process 77", "loop thread 2"]
        );
        assert_eq!(
            labels(&rows, "process", &[]),
            ["thread 1", "process 77", "thread 2"]
        );
        let named = [(Worker::Thread(3), "cpu site on compute".to_owned())];
        assert_eq!(
            labels(&rows, "thread", &named),
            ["thread 1", "process 77", "cpu site on compute"]
        );
    }
}
