//! The `tracing` events the event loop emits: one warning when a spawn site is flagged, with
//! structured fields, and one when a dropped loop cancels tasks left after its grace. A
//! process-wide subscriber captures them (events come from the loop's threads), so this file
//! holds one test.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use brigade::EventLoop;
use common::Watchdog;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One captured event: its level, target, and fields written as text.
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    target: String,
    fields: Vec<(String, String)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

static EVENTS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

struct Capture;

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        EVENTS.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields: fields.0,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn warnings_with(field: &str) -> Vec<Captured> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.level == Level::WARN && e.field(field).is_some())
        .cloned()
        .collect()
}

#[test]
fn a_flagged_site_and_a_grace_that_runs_out_are_reported_with_structured_fields() {
    let _w = Watchdog::new(
        "a_flagged_site_and_a_grace_that_runs_out_are_reported_with_structured_fields",
    );
    tracing::subscriber::set_global_default(Capture).unwrap();
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(Duration::from_millis(20))
        .drop_grace(Duration::from_millis(10))
        .build()
        .unwrap();
    let spawned_at = (file!(), line!() + 3);
    for _ in 0..2 {
        // The same line twice: the site is flagged once, so it is reported once.
        let task = lp.spawn(async { std::thread::sleep(Duration::from_millis(80)) });
        task.result().unwrap();
    }
    let (file, line) = spawned_at;
    let flagged = warnings_with("poll_ms");
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let event = &flagged[0];
    assert_eq!(event.target, "brigade::event_loop");
    assert_eq!(event.field("file"), Some(file));
    assert_eq!(event.field("line"), Some(line.to_string().as_str()));
    assert!(event.field("column").is_some());
    assert_eq!(event.field("threshold_ms"), Some("20.0"));
    let poll_ms: f64 = event.field("poll_ms").unwrap().parse().unwrap();
    assert!(poll_ms >= 80.0, "{poll_ms}");
    assert!(event.field("site").unwrap().starts_with(file));

    // A task that never ends outlives the drop's grace: cancelled, and said so.
    let forever = lp.spawn(std::future::pending::<()>());
    drop(lp);
    // Ended only after the warning (the finisher warns, then cancels).
    assert_eq!(forever.result(), Err(brigade::Error::Cancelled));
    let cancelled = warnings_with("unfinished");
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    assert_eq!(cancelled[0].field("unfinished"), Some("1"));
    assert_eq!(cancelled[0].target, "brigade::event_loop");
}
