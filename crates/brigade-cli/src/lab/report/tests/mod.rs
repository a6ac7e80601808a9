//! The report's tests, on outcomes built by hand. The whole page is parsed as XML, so every
//! test also checks that the page is well-formed.

mod sample;

use super::svg::{MAX_BARS, MAX_ROWS};
use super::tree::{self, Element};
use super::*;
use crate::lab::record::{Kind, Span, Worker};

const T0: u64 = 1_000_000_000_000;
const MS: u64 = 1_000_000;

fn info(quick: bool) -> RunInfo {
    RunInfo {
        version: "0.1.0",
        workers: 4,
        cores: 4,
        quick,
        cpu: "Test CPU @ 3.00GHz".to_owned(),
        span_cost_ns: 25.0,
    }
}

fn span(worker: Worker, kind: Kind, start_ms: f64, end_ms: f64) -> Span {
    Span {
        worker,
        kind,
        start_ns: T0 + (start_ms * 1e6) as u64,
        end_ns: T0 + (end_ms * 1e6) as u64,
    }
}

fn timeline(model: &str, row_kind: &'static str, duration_ms: u64, spans: Vec<Span>) -> Timeline {
    Timeline {
        model: model.to_owned(),
        row_kind,
        start_ns: T0,
        end_ns: T0 + duration_ms * MS,
        spans,
        row_names: Vec::new(),
    }
}

fn outcome(name: &'static str, agrees: Option<bool>) -> Outcome {
    let mut o = Outcome::new(name);
    o.measure("sequential", "wall", 2.0, "s");
    o.measure("threads", "wall", 0.5, "s");
    o.measure("threads", "speedup", 4.0, "×");
    o.conclude(format!("verdict of {name}"), agrees);
    o
}

fn page(info: &RunInfo, outcomes: &[Outcome]) -> (String, Element) {
    let html = html(info, outcomes);
    let root = tree::parse(&html).unwrap_or_else(|e| panic!("not well-formed: {e}"));
    assert_eq!(root.name, "html");
    (html, root)
}

fn sections(root: &Element) -> Vec<&Element> {
    root.select("section", "experiment")
}

#[test]
fn one_section_per_outcome_in_order_with_a_table_of_contents() {
    let outcomes = [
        outcome("race", Some(true)),
        outcome("cpu-bound", Some(false)),
        Outcome::skipped("python", "python3 is not installed".to_owned()),
        outcome("not-in-the-registry", None),
    ];
    let (_, root) = page(&info(false), &outcomes);
    let sections = sections(&root);
    let names: Vec<&str> = sections
        .iter()
        .map(|s| s.attr("data-experiment").unwrap())
        .collect();
    assert_eq!(
        names,
        ["race", "cpu-bound", "python", "not-in-the-registry"]
    );
    let links: Vec<String> = root.select("nav", "toc")[0]
        .select("a", "")
        .iter()
        .map(|a| a.attr("href").unwrap().to_owned())
        .collect();
    let ids: Vec<String> = sections
        .iter()
        .map(|s| format!("#{}", s.attr("id").unwrap()))
        .collect();
    assert_eq!(links, ids);
    // Titles and claims come from the registry; an unknown name stands for its title.
    let race = crate::lab::experiment("race").unwrap();
    assert!(sections[0].select("h2", "")[0].text().contains(race.title));
    assert!(
        sections[0].select("p", "claim")[0]
            .text()
            .contains(race.claim)
    );
    assert!(
        sections[3].select("h2", "")[0]
            .text()
            .contains("not-in-the-registry")
    );
    assert!(sections[3].select("p", "claim").is_empty());
}

#[test]
fn the_table_has_units_in_its_headers_and_readable_numbers() {
    let mut o = Outcome::new("cpu-bound");
    o.measure("sequential", "wall", 1_234_567.8, "ms");
    o.measure("threads", "wall", 0.012345, "ms");
    o.measure("threads", "speedup", 4.0, "×");
    o.measure("threads", "lost updates", 0.0, "");
    let (_, root) = page(&info(false), &[o]);
    let table = &root.select("table", "measurements")[0];
    let headers: Vec<String> = table.select("thead", "")[0]
        .select("th", "")
        .iter()
        .map(|h| h.text())
        .collect();
    assert_eq!(
        headers,
        ["model", "wall (ms)", "speedup (×)", "lost updates"]
    );
    let rows: Vec<Vec<String>> = table.select("tbody", "")[0]
        .select("tr", "")
        .iter()
        .map(|r| r.elements().map(Element::text).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["sequential", "1,234,568", "–", "–"],
            ["threads", "0.0123", "4", "0"]
        ]
    );
}

#[test]
fn verdicts_are_marked_by_agreement_in_words() {
    let outcomes = [
        outcome("cpu-bound", Some(true)),
        outcome("io-few-fast", Some(false)),
        outcome("startup-cost", None),
    ];
    let (_, root) = page(&info(false), &outcomes);
    let expected = [
        ("agrees", "agrees with the rule"),
        ("differs", "differs from the rule"),
        ("untested", "no rule tested"),
    ];
    for (section, (class, words)) in sections(&root).iter().zip(expected) {
        let verdicts = section.select("div", "verdict");
        assert_eq!(verdicts.len(), 1);
        assert!(verdicts[0].has_class(class), "{:?}", verdicts[0]);
        let text = verdicts[0].text();
        assert!(
            text.contains(words) && text.contains("verdict of"),
            "{text}"
        );
    }
    let tags: Vec<&str> = root
        .select("span", "tag")
        .iter()
        .map(|t| t.attr("class").unwrap())
        .collect();
    assert_eq!(tags, ["tag agrees", "tag differs", "tag untested"]);
}

#[test]
fn a_skipped_experiment_shows_why_and_nothing_else() {
    let mut skipped = Outcome::skipped("python", "python3 is not on PATH".to_owned());
    skipped.measure("threads", "wall", 1.0, "s");
    let (_, root) = page(&info(false), &[skipped]);
    let section = sections(&root)[0];
    let why = section.select("p", "skipped");
    assert_eq!(why.len(), 1);
    assert_eq!(why[0].text(), "Skipped: python3 is not on PATH");
    assert!(section.select("table", "").is_empty());
    assert!(section.select("div", "verdict").is_empty());
    assert_eq!(
        root.select("span", "skipped").len(),
        1,
        "the contents say so too"
    );
}

#[test]
fn text_is_escaped_everywhere() {
    let evil = r#"<script>alert("x & 'y'")</script>"#;
    let mut o = outcome("race", Some(true));
    o.notes.push(evil.to_owned());
    o.measure(evil, "wall", 1.0, "s");
    o.conclude(format!("verdict {evil}"), Some(true));
    o.timelines.push(timeline(
        evil,
        "thread",
        10,
        vec![span(Worker::Thread(1), Kind::Cpu, 0.0, 5.0)],
    ));
    let mut info = info(false);
    info.cpu = evil.to_owned();
    let (html, root) = page(&info, &[o]);
    assert!(
        !html.to_lowercase().contains("<script"),
        "a script tag got through"
    );
    assert_eq!(root.select("script", "").len(), 0);
    let notes = root.select("ul", "notes")[0].select("li", "");
    assert_eq!(notes[0].text(), evil, "the note reads as written");
    assert!(root.select("div", "verdict")[0].text().contains(evil));
    assert!(root.select("dl", "facts")[0].text().contains(evil));
    let bar_tip = root.select("rect", "cpu")[0].tooltip().unwrap();
    assert!(bar_tip.starts_with(evil), "{bar_tip}");
    assert!(root.select("figcaption", "")[0].text().contains(evil));
}

#[test]
fn nothing_is_fetched_and_nothing_runs() {
    let mut o = outcome("cpu-bound", Some(true));
    o.notes
        .push("see https://example.com/primer for more".to_owned());
    o.timelines.push(timeline(
        "threads",
        "thread",
        10,
        vec![span(Worker::Thread(1), Kind::Cpu, 0.0, 5.0)],
    ));
    let (html, root) = page(&info(true), &[o]);
    for e in root.descendants() {
        for (name, value) in &e.attrs {
            let value = value.trim().to_lowercase();
            if ["src", "href", "xlink:href", "srcset", "poster", "data"].contains(&name.as_str()) {
                assert!(
                    value.starts_with('#'),
                    "<{} {name}={value:?}> points outside the page",
                    e.name
                );
            }
            assert!(
                !name.starts_with("on"),
                "an event handler: <{} {name}>",
                e.name
            );
        }
        assert!(
            ![
                "script", "link", "img", "iframe", "object", "embed", "image", "use"
            ]
            .contains(&e.name.as_str()),
            "<{}> would load or run something",
            e.name
        );
    }
    for fetch in ["@import", "url(", "@font-face"] {
        assert!(!html.contains(fetch), "{fetch} in the page");
    }
    // The note's address stays text, not a link.
    assert!(
        root.select("a", "")
            .iter()
            .all(|a| a.attr("href").unwrap().starts_with('#'))
    );
}

#[test]
fn quick_runs_are_marked_as_smoke_tests() {
    let outcomes = [outcome("cpu-bound", Some(true))];
    let (_, quick) = page(&info(true), &outcomes);
    let banners = quick.select("*", "banner");
    assert_eq!(banners.len(), 1);
    assert!(banners[0].text().contains("Smoke test, not a measurement"));
    assert!(quick.select("dl", "facts")[0].text().contains("--quick"));
    let (html, full) = page(&info(false), &outcomes);
    assert!(full.select("*", "banner").is_empty());
    assert!(!html.contains("--quick"));
}

#[test]
fn the_header_gives_the_machine_and_the_largest_recording_cost() {
    // 25 ns a span: 40 spans in 1 ms cost 0.1 %, 4000 spans in 1 ms cost 10 %.
    let spans = |n: u32| -> Vec<Span> {
        (0..n)
            .map(|i| span(Worker::Thread(i % 4), Kind::Wait, 0.0, 0.5))
            .collect()
    };
    let mut a = outcome("io-few-fast", Some(true));
    a.timelines
        .push(timeline("threads", "thread", 1, spans(40)));
    let mut b = outcome("io-many-slow", Some(true));
    b.timelines
        .push(timeline("event loop", "loop thread", 1, spans(4000)));
    let (_, root) = page(&info(false), &[a, b]);
    let facts = root.select("dl", "facts")[0].text();
    for fact in [
        "0.1.0",
        "Test CPU @ 3.00GHz",
        "workers per pool4",
        "cores4",
        "25 ns per span",
        "recording timelines cost at most 10 % of any run",
    ] {
        assert!(facts.contains(fact), "{fact:?} not in {facts:?}");
    }
    let captions: Vec<String> = root
        .select("figcaption", "")
        .iter()
        .map(|c| c.text())
        .collect();
    assert!(
        captions[0].contains("at most 0.100 % of this run"),
        "{captions:?}"
    );
    assert!(
        captions[1].contains("at most 10 % of this run"),
        "{captions:?}"
    );

    let (_, bare) = page(&info(false), &[outcome("race", Some(true))]);
    assert!(
        bare.select("dl", "facts")[0]
            .text()
            .contains("no timelines were recorded")
    );
}

#[test]
fn the_timelines_of_an_experiment_share_one_scale() {
    let mut o = outcome("cpu-bound", Some(true));
    let task = |start, end| vec![span(Worker::Thread(1), Kind::Cpu, start, end)];
    o.timelines
        .push(timeline("sequential", "thread", 2000, task(0.0, 2000.0)));
    o.timelines
        .push(timeline("threads", "thread", 500, task(0.0, 500.0)));
    // Another experiment's scale is its own.
    let mut other = outcome("race", Some(true));
    other
        .timelines
        .push(timeline("threads", "thread", 500, task(0.0, 500.0)));
    let (_, root) = page(&info(false), &[o, other]);
    let width = |s: &Element, i: usize| {
        s.select("svg", "timeline")[i].select("rect", "cpu")[0].num("width")
    };
    let sections = sections(&root);
    let (long, short) = (width(sections[0], 0), width(sections[0], 1));
    assert!((long / short - 4.0).abs() < 0.05, "{long} vs {short}");
    assert!(
        (width(sections[1], 0) - long).abs() < 1.0,
        "the race's own scale"
    );
    assert_eq!(sections[0].select("svg", "timeline").len(), 2);
    assert!(
        sections[0]
            .text()
            .contains("All 2 timelines share one time axis, 0 to 2 s")
    );
    assert_eq!(sections[0].select("div", "legend").len(), 1);
}

#[test]
fn captions_count_the_rows_and_spans_left_out() {
    let mut o = outcome("io-many-slow", Some(true));
    let rows = MAX_ROWS as u32 + 5;
    let threads = (0..rows)
        .map(|n| span(Worker::Thread(n + 1), Kind::Block, f64::from(n), 100.0))
        .collect();
    o.timelines
        .push(timeline("threads", "thread", 100, threads));
    let many = (0..2 * MAX_BARS)
        .map(|i| span(Worker::Thread(1), Kind::Wait, i as f64 * 0.01, 90.0))
        .collect();
    o.timelines
        .push(timeline("event loop", "loop thread", 100, many));
    let (_, root) = page(&info(false), &[o]);
    let captions: Vec<String> = root
        .select("figcaption", "")
        .iter()
        .map(|c| c.text())
        .collect();
    assert!(
        captions[0].contains(&format!("{rows} threads")),
        "{}",
        captions[0]
    );
    assert!(
        captions[0].contains("5 more rows not drawn (5 spans)"),
        "{}",
        captions[0]
    );
    assert!(!captions[0].contains("every"), "{}", captions[0]);
    assert!(captions[1].contains("1 loop thread,"), "{}", captions[1]);
    assert!(
        captions[1].contains(&format!(
            "every 2nd span of each row is drawn ({} for {})",
            count(MAX_BARS, "bar"),
            count(2 * MAX_BARS, "span")
        )),
        "{}",
        captions[1]
    );
    let svgs = root.select("svg", "timeline");
    assert_eq!(svgs[0].select("g", "row").len(), MAX_ROWS);
    assert_eq!(svgs[1].select("rect", "wait").len(), MAX_BARS);
}

#[test]
fn write_creates_the_directory_and_the_page() {
    let dir = std::env::temp_dir().join(format!(
        "brigade-report-test-{}-{}",
        std::process::id(),
        crate::lab::record::now_ns()
    ));
    let nested = dir.join("a/b");
    let outcomes = [outcome("cpu-bound", Some(true))];
    let path = write(&nested, &info(false), &outcomes).unwrap();
    assert_eq!(path, nested.join("report.html"));
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, html(&info(false), &outcomes));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn small_helpers_read_well() {
    assert_eq!(duration(2_340_000_000), "2.34 s");
    assert_eq!(duration(45_600_000), "45.6 ms");
    assert_eq!(duration(12_000), "12 µs");
    assert_eq!(duration(0), "0 ns");
    assert_eq!(count(1, "process"), "1 process");
    assert_eq!(count(3, "process"), "3 processes");
    assert_eq!(count(2, "loop thread"), "2 loop threads");
    assert_eq!(count(10_000, "span"), "10,000 spans");
    assert_eq!(count(1_234_567, "bar"), "1,234,567 bars");
    let ords: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101].map(ordinal).to_vec();
    assert_eq!(
        ords,
        [
            "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"
        ]
    );
    let mut twice = outcome("race", None);
    twice.experiment = "race";
    assert_eq!(
        section_ids(&[twice.clone(), twice]),
        ["exp-race", "exp-race-2"]
    );
    assert_eq!(
        escape(r#"<a href="x">&'"#),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}
