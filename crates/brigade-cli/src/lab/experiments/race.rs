//! TODO

use crate::lab::{Ctx, Outcome};

pub(crate) fn run(_ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    anyhow::bail!("not written yet")
}
