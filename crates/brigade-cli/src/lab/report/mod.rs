//! The HTML report: one self-contained page with the run's facts, each experiment's claim,
//! table, notes and verdict, and its timelines drawn as inline SVG.
//!
//! Self-contained means a learner can mail the file or open it offline: the stylesheet is
//! inlined, there are no scripts, and nothing is fetched (no fonts, no images). The page is
//! also well-formed XML (void elements closed, only XML's five entities), which lets the
//! tests parse all of it, and keeps each SVG valid if copied out into a file of its own.

mod svg;
#[cfg(test)]
mod tree;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::outcome::{Table, number};
use super::{Outcome, RunInfo, Timeline};

const STYLE: &str = include_str!("style.css");

/// What each kind of span means, for the legends.
const KINDS: [(&str, &str); 4] = [
    ("cpu", "computing"),
    (
        "wait",
        "waiting without holding a thread (async sleep or request)",
    ),
    ("block", "holding a thread while waiting (blocking call)"),
    ("tick", "a short task whose lateness is measured"),
];

/// Writes the report into `dir` (created if need be) and gives its path.
/// Makes sure a report can be written into `dir` (creating it), before minutes of
/// experiments: a file is created there and removed again.
pub(crate) fn check_writable(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!(".brigade-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write into {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

pub(crate) fn write(dir: &Path, info: &RunInfo, outcomes: &[Outcome]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("report.html");
    std::fs::write(&path, html(info, outcomes))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The report as one HTML page.
pub(crate) fn html(info: &RunInfo, outcomes: &[Outcome]) -> String {
    let ids = section_ids(outcomes);
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    out.push_str(
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n\
         <title>brigade lab report</title>\n<style>\n",
    );
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n");
    header(&mut out, info, outcomes);
    contents(&mut out, outcomes, &ids);
    out.push_str("<main>\n");
    if outcomes.is_empty() {
        out.push_str("<p class=\"none\">No experiment produced an outcome.</p>\n");
    }
    for (outcome, id) in outcomes.iter().zip(&ids) {
        section(&mut out, outcome, id, info.span_cost_ns);
    }
    out.push_str("</main>\n");
    let _ = write!(
        out,
        "<footer>Written by <code>brigade lab</code> {}. A single file: no scripts, nothing \
         fetched; hover over a bar for its times.</footer>\n</body>\n</html>\n",
        escape(info.version)
    );
    out
}

/// `text` made safe for HTML and XML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration as people read it: `1.23 s`, `45.6 ms`, `12.0 µs`.
fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{} s", number(ns / 1e9))
    } else if ns >= 1e6 {
        format!("{} ms", number(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} µs", number(ns / 1e3))
    } else {
        format!("{} ns", number(ns))
    }
}

/// One anchor per section, from the experiment's name, unique even if a name repeats.
fn section_ids(outcomes: &[Outcome]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        let slug: String = o
            .experiment
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("exp-{slug}");
        let mut id = base.clone();
        let mut n = 1;
        while ids.contains(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        ids.push(id);
    }
    ids
}

/// The title of experiment `name`, or the name itself for one the registry does not know.
fn title(name: &str) -> &str {
    super::experiment(name).map_or(name, |e| e.title)
}

/// How an outcome stands against the rule: a CSS class and words for it.
fn standing(o: &Outcome) -> (&'static str, &'static str, &'static str) {
    match (&o.skipped, o.verdict.agrees) {
        (Some(_), _) => ("skipped", "–", "skipped"),
        (None, Some(true)) => ("agrees", "✓", "agrees with the rule"),
        (None, Some(false)) => ("differs", "✗", "differs from the rule"),
        (None, None) => ("untested", "·", "no rule tested"),
    }
}

fn header(out: &mut String, info: &RunInfo, outcomes: &[Outcome]) {
    out.push_str(
        "<header class=\"top\">\n<h1>brigade lab</h1>\n<p class=\"subtitle\">The primers' \
         claims about concurrency, run under each model on this machine.</p>\n<dl class=\"facts\">\n",
    );
    let fact = |out: &mut String, name: &str, value: &str| {
        let _ = writeln!(out, "<dt>{name}</dt><dd>{value}</dd>");
    };
    fact(out, "brigade", &escape(info.version));
    fact(out, "CPU", &escape(&info.cpu));
    fact(out, "cores", &info.cores.to_string());
    fact(out, "workers per pool", &info.workers.to_string());
    fact(
        out,
        "run",
        if info.quick {
            "<code>--quick</code> (a smoke test)"
        } else {
            "full"
        },
    );
    let overheads = outcomes
        .iter()
        .flat_map(|o| &o.timelines)
        .map(|t| t.overhead_pct(info.span_cost_ns));
    let cost = match overheads.reduce(f64::max) {
        Some(most) => format!(
            "{} ns per span; recording timelines cost at most {} % of any run",
            number(info.span_cost_ns),
            overhead(most)
        ),
        None => format!(
            "{} ns per span; no timelines were recorded",
            number(info.span_cost_ns)
        ),
    };
    fact(out, "recording cost", &cost);
    out.push_str("</dl>\n");
    if info.quick {
        out.push_str(
            "<p class=\"banner\" role=\"note\"><strong>Smoke test, not a measurement.</strong> \
             This run used <code>--quick</code>: every experiment was shrunk to a few seconds \
             in all, so the numbers and verdicts below only show that the lab works. Run \
             without <code>--quick</code> to measure.</p>\n",
        );
    }
    out.push_str("</header>\n");
}

fn contents(out: &mut String, outcomes: &[Outcome], ids: &[String]) {
    if outcomes.is_empty() {
        return;
    }
    out.push_str("<nav class=\"toc\">\n<h2>Contents</h2>\n<ol>\n");
    for (o, id) in outcomes.iter().zip(ids) {
        let (class, _, words) = standing(o);
        let _ = writeln!(
            out,
            "<li><a href=\"#{id}\">{}</a><span class=\"tag {class}\">{words}</span></li>",
            escape(title(o.experiment)),
        );
    }
    out.push_str("</ol>\n</nav>\n");
}

fn section(out: &mut String, o: &Outcome, id: &str, span_cost_ns: f64) {
    let _ = writeln!(
        out,
        "<section class=\"experiment\" id=\"{id}\" data-experiment=\"{}\">\n\
         <h2><span class=\"name\">{}</span>{}</h2>",
        escape(o.experiment),
        escape(o.experiment),
        escape(title(o.experiment)),
    );
    if let Some(e) = super::experiment(o.experiment) {
        let _ = writeln!(
            out,
            "<p class=\"claim\"><span class=\"label\">The rule:</span>{}</p>",
            escape(e.claim)
        );
    }
    if let Some(reason) = &o.skipped {
        let _ = writeln!(
            out,
            "<p class=\"skipped\"><strong>Skipped:</strong> {}</p>\n</section>",
            escape(reason)
        );
        return;
    }
    table(out, &o.table());
    if !o.notes.is_empty() {
        out.push_str("<ul class=\"notes\">\n");
        for note in &o.notes {
            let _ = writeln!(out, "<li>{}</li>", escape(note));
        }
        out.push_str("</ul>\n");
    }
    let (class, mark, words) = standing(o);
    let text = if o.verdict.text.is_empty() {
        "(no verdict)".to_owned()
    } else {
        escape(&o.verdict.text)
    };
    let _ = writeln!(
        out,
        "<div class=\"verdict {class}\"><span class=\"mark\">{mark} {words}:</span>{text}</div>"
    );
    timelines(out, &o.timelines, span_cost_ns);
    out.push_str("</section>\n");
}

fn table(out: &mut String, table: &Table) {
    if table.rows.is_empty() {
        out.push_str("<p class=\"none\">No measurements.</p>\n");
        return;
    }
    out.push_str("<table class=\"measurements\">\n<thead><tr><th class=\"model\">model</th>");
    for c in &table.columns {
        let _ = write!(out, "<th>{}</th>", escape(&c.header()));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        let _ = write!(out, "<tr><th>{}</th>", escape(&row.model));
        for cell in &row.cells {
            match cell {
                Some(v) => {
                    let _ = write!(out, "<td>{}</td>", escape(&number(*v)));
                }
                None => out.push_str("<td class=\"none\">–</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn legend(out: &mut String) {
    out.push_str("<div class=\"legend\">");
    for (kind, meaning) in KINDS {
        let _ = write!(
            out,
            "<span><span class=\"swatch {kind}\"></span><strong>{kind}</strong>: {meaning}</span>"
        );
    }
    out.push_str("</div>\n");
}

/// `n` and the noun, plural where `n` is not one: "8 threads", "1 process", "10,000 spans".
fn count(n: usize, noun: &str) -> String {
    // `number` rounds to three figures; a count is exact, only grouped.
    let digits = n.to_string();
    let mut n_text = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            n_text.push(',');
        }
        n_text.push(c);
    }
    match (n, noun.ends_with('s')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n_text} {noun}es"),
        (_, false) => format!("{n_text} {noun}s"),
    }
}

/// A recording overhead, which the report states as an upper bound ("at most X %"): below
/// 0.01 % the digits say nothing a learner needs, and 0.01 is still a true bound.
fn overhead(pct: f64) -> String {
    if pct < 0.01 {
        "0.01".to_owned()
    } else {
        number(pct)
    }
}

/// "1st", "2nd", "3rd", "4th", ...
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn timelines(out: &mut String, timelines: &[Timeline], span_cost_ns: f64) {
    if timelines.is_empty() {
        return;
    }
    // One scale for all: a model that took half as long draws half as long.
    let scale_ns = timelines
        .iter()
        .map(|t| t.end_ns.saturating_sub(t.start_ns))
        .max()
        .unwrap_or(1)
        .max(1);
    out.push_str("<h3>Timelines</h3>\n");
    let axis = if timelines.len() == 1 {
        format!("The time axis runs from 0 to {}.", duration(scale_ns))
    } else {
        format!(
            "All {} timelines share one time axis, 0 to {} (the longest run), so their \
             lengths compare directly; the shaded lane shows how long each run took.",
            timelines.len(),
            duration(scale_ns)
        )
    };
    let _ = writeln!(
        out,
        "<p class=\"scale-note\">One row per worker, one bar per task. {axis}</p>"
    );
    legend(out);
    for t in timelines {
        let d = svg::timeline(t, scale_ns);
        let _ = write!(
            out,
            "<figure class=\"timeline\">\n<figcaption><strong>{}</strong> — {}, {} in {}; \
             recording cost at most {} % of this run.",
            escape(&t.model),
            escape(&count(d.rows, t.row_kind)),
            count(t.spans.len(), "span"),
            duration(t.end_ns.saturating_sub(t.start_ns)),
            overhead(t.overhead_pct(span_cost_ns)),
        );
        if d.rows_hidden > 0 {
            let _ = write!(
                out,
                " <span class=\"caveat\">{} more rows not drawn ({}).</span>",
                d.rows_hidden,
                count(d.spans_hidden, "span"),
            );
        }
        if d.stride > 1 {
            let _ = write!(
                out,
                " <span class=\"caveat\">Too many spans to draw one by one: every {} span of \
                 each row is drawn ({} for {}).</span>",
                ordinal(d.stride),
                count(d.bars, "bar"),
                count(d.spans_drawable, "span"),
            );
        }
        out.push_str("</figcaption>\n");
        out.push_str(&d.svg);
        out.push_str("\n</figure>\n");
    }
}

#[cfg(test)]
mod tests;
