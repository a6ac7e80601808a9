//! TODO

use crate::lab::{Ctx, Outcome};

pub(crate) fn few_fast(_ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    anyhow::bail!("not written yet")
}

pub(crate) fn many_slow(_ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    anyhow::bail!("not written yet")
}
