//! The experiments, one module each (the two I/O experiments share one), and what they share:
//! waiting for tasks that carry their own span, and naming the winner of a comparison.

pub(crate) mod blocking;
pub(crate) mod choosing_rule;
pub(crate) mod concurrency;
pub(crate) mod cpu_bound;
pub(crate) mod io;
pub(crate) mod python;
pub(crate) mod race;
pub(crate) mod startup;

use brigade::Task;

use super::Span;

/// Waits for `tasks` in order, splitting their values from their spans.
pub(crate) fn finish<T>(tasks: Vec<Task<(T, Span)>>) -> anyhow::Result<(Vec<T>, Vec<Span>)> {
    let mut values = Vec::with_capacity(tasks.len());
    let mut spans = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (value, span) = task.result()?;
        values.push(value);
        spans.push(span);
    }
    Ok((values, spans))
}

/// How `a` compares with `b` in words, when higher is better: within 5 % is "matched".
pub(crate) fn compared(a: f64, b: f64) -> &'static str {
    let ratio = a / b;
    if ratio > 1.05 {
        "beat"
    } else if ratio < 0.95 {
        "fell behind"
    } else {
        "matched"
    }
}
