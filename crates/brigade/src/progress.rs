//! Progress bars for long iterations (`map`, `as_completed`): the opt-in `progress` feature.
//!
//! Without the feature, [`Bar`] is a no-op of size zero, so the iterators carry one
//! unconditionally and the feature adds no `cfg` to them. With it, a bar is drawn on stderr
//! with indicatif, and only when stderr is a terminal: piped or logged output stays clean.

/// A bar that counts finished items; hidden until [`Bar::show`] is called.
#[derive(Debug, Default)]
pub(crate) struct Bar {
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

impl Bar {
    /// Starts drawing, with `len` items if known (a spinner with a count otherwise).
    #[cfg(feature = "progress")]
    pub(crate) fn show(&mut self, len: Option<usize>) {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = match len {
            Some(len) => indicatif::ProgressBar::new(len as u64),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style = match len {
            Some(_) => "{bar:40} {pos}/{len} [{elapsed_precise} < {eta}] {per_sec}",
            None => "{spinner} {pos} done [{elapsed_precise}] {per_sec}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(style) {
            bar.set_style(style);
        }
        self.bar = Some(bar);
    }

    /// One more item finished.
    #[inline]
    pub(crate) fn inc(&self) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The iteration ended: leave the bar as it stands.
    pub(crate) fn finish(&mut self) {
        #[cfg(feature = "progress")]
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}
