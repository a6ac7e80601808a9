//! The experiments, one module each (the two I/O experiments share one).

pub(crate) mod blocking;
pub(crate) mod concurrency;
pub(crate) mod cpu_bound;
pub(crate) mod io;
pub(crate) mod python;
pub(crate) mod race;
pub(crate) mod startup;
