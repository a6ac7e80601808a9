//! What an experiment produces: measurements, a verdict computed from them, and timelines;
//! and the table every output form (terminal, JSON, HTML) is drawn from.

use serde::Serialize;

use super::record::Timeline;

/// One number measured under one model. `--json` prints each as one line with these field
/// names, which are stable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Measurement {
    pub(crate) experiment: &'static str,
    pub(crate) model: String,
    pub(crate) metric: &'static str,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
}

/// The conclusion drawn from an experiment's measurements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Verdict {
    /// One line, computed from the measurements.
    pub(crate) text: String,
    /// Whether the measurements agree with the primers' rule; `None` where the experiment
    /// tests no rule (or could not, e.g. on one core).
    pub(crate) agrees: Option<bool>,
}

/// An experiment's full result.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) experiment: &'static str,
    pub(crate) measurements: Vec<Measurement>,
    pub(crate) verdict: Verdict,
    /// Explanations that go with the table (not conclusions: those are the verdict's).
    pub(crate) notes: Vec<String>,
    pub(crate) timelines: Vec<Timeline>,
    /// Why the experiment did not run, if it did not (python3 missing, say).
    pub(crate) skipped: Option<String>,
}

impl Outcome {
    /// An outcome under construction for `experiment`.
    pub(crate) fn new(experiment: &'static str) -> Self {
        Outcome {
            experiment,
            measurements: Vec::new(),
            verdict: Verdict {
                text: String::new(),
                agrees: None,
            },
            notes: Vec::new(),
            timelines: Vec::new(),
            skipped: None,
        }
    }

    /// An outcome that says why `experiment` did not run.
    pub(crate) fn skipped(experiment: &'static str, reason: String) -> Self {
        let mut outcome = Outcome::new(experiment);
        outcome.verdict.text = format!("skipped: {reason}");
        outcome.skipped = Some(reason);
        outcome
    }

    /// Records `metric` of `model`.
    pub(crate) fn measure(
        &mut self,
        model: &str,
        metric: &'static str,
        value: f64,
        unit: &'static str,
    ) {
        self.measurements.push(Measurement {
            experiment: self.experiment,
            model: model.to_owned(),
            metric,
            value,
            unit,
        });
    }

    /// The value of `metric` under `model`, if measured.
    pub(crate) fn get(&self, model: &str, metric: &str) -> Option<f64> {
        self.measurements
            .iter()
            .find(|m| m.model == model && m.metric == metric)
            .map(|m| m.value)
    }

    /// Sets the verdict.
    pub(crate) fn conclude(&mut self, text: String, agrees: Option<bool>) {
        self.verdict = Verdict { text, agrees };
    }

    /// The measurements as a table: one row per model, one column per metric, both in the
    /// order first measured.
    pub(crate) fn table(&self) -> Table {
        let mut table = Table {
            columns: Vec::new(),
            rows: Vec::new(),
        };
        for m in &self.measurements {
            let column = match table.columns.iter().position(|c| c.metric == m.metric) {
                Some(i) => i,
                None => {
                    table.columns.push(Column {
                        metric: m.metric,
                        unit: m.unit,
                    });
                    table.columns.len() - 1
                }
            };
            let row = match table.rows.iter().position(|r| r.model == m.model) {
                Some(i) => i,
                None => {
                    table.rows.push(Row {
                        model: m.model.clone(),
                        cells: Vec::new(),
                    });
                    table.rows.len() - 1
                }
            };
            let cells = &mut table.rows[row].cells;
            if cells.len() <= column {
                cells.resize(column + 1, None);
            }
            cells[column] = Some(m.value);
        }
        let width = table.columns.len();
        for row in &mut table.rows {
            row.cells.resize(width, None);
        }
        table
    }
}

/// A metric's column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub(crate) metric: &'static str,
    pub(crate) unit: &'static str,
}

impl Column {
    /// The header: the metric, with its unit where it has one.
    pub(crate) fn header(&self) -> String {
        if self.unit.is_empty() {
            self.metric.to_owned()
        } else {
            format!("{} ({})", self.metric, self.unit)
        }
    }
}

/// A model's row; `None` where the metric does not apply to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) model: String,
    pub(crate) cells: Vec<Option<f64>>,
}

/// Measurements pivoted for display.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table {
    pub(crate) columns: Vec<Column>,
    pub(crate) rows: Vec<Row>,
}

impl Table {
    /// The table as aligned plain text, numbers right-aligned, `-` for a missing cell.
    pub(crate) fn to_text(&self) -> String {
        let mut grid: Vec<Vec<String>> = Vec::with_capacity(self.rows.len() + 1);
        let mut header = vec!["model".to_owned()];
        header.extend(self.columns.iter().map(Column::header));
        grid.push(header);
        for row in &self.rows {
            let mut line = vec![row.model.clone()];
            line.extend(row.cells.iter().map(|c| c.map_or("-".to_owned(), number)));
            grid.push(line);
        }
        let widths: Vec<usize> = (0..grid[0].len())
            .map(|i| grid.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (n, line) in grid.iter().enumerate() {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i == 0 {
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad));
                } else {
                    text.push_str("  ");
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                }
            }
            out.push_str("  ");
            out.push_str(text.trim_end());
            out.push('\n');
            if n == 0 {
                let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                out.push_str("  ");
                out.push_str(&"-".repeat(rule));
                out.push('\n');
            }
        }
        out
    }
}

/// A number as people read it: three significant figures, thousands grouped.
pub(crate) fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let magnitude = value.abs();
    // Counts print as counts ("20", not "20.0").
    let decimals = if magnitude >= 100.0 || value.fract() == 0.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else {
        // Three significant figures below one.
        (2 - magnitude.log10().floor() as i32).clamp(2, 9) as usize
    };
    let text = format!("{value:.decimals$}");
    let (sign, text) = text
        .strip_prefix('-')
        .map_or(("", text.as_str()), |t| ("-", t));
    let (int, frac) = text
        .split_once('.')
        .map_or((text, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// `a / b` as a factor for a verdict, e.g. `1.93×`.
pub(crate) fn factor(a: f64, b: f64) -> String {
    format!("{}×", number(a / b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.8), "1,234,568");
        assert_eq!(number(123.45), "123");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.012345), "0.0123");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(20.0), "20");
        assert_eq!(number(1.5), "1.50");
        assert_eq!(number(-2500.0), "-2,500");
        assert_eq!(factor(3.0, 2.0), "1.50×");
    }

    #[test]
    fn the_table_pivots_models_and_metrics_in_first_seen_order() {
        let mut o = Outcome::new("cpu-bound");
        o.measure("sequential", "wall", 2.0, "s");
        o.measure("threads", "wall", 1.0, "s");
        o.measure("threads", "speedup", 2.0, "×");
        let t = o.table();
        assert_eq!(t.columns.len(), 2);
        assert_eq!(t.rows[0].cells, vec![Some(2.0), None]);
        assert_eq!(t.rows[1].cells, vec![Some(1.0), Some(2.0)]);
        let text = t.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("wall (s)") && lines[0].contains("speedup (×)"));
        assert!(lines[2].starts_with("  sequential") && lines[2].ends_with('-'));
        assert_eq!(o.get("threads", "speedup"), Some(2.0));
        assert_eq!(o.get("sequential", "speedup"), None);
    }
}
