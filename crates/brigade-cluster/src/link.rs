//! A connection that comes back: every thread of a client or worker talks to the broker
//! through one, so a dropped connection or a broker restart costs a retry, never the thread.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Broker, BrokerError, Connection};

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A broker connection that reconnects on transient errors.
pub(crate) struct Link {
    broker: Arc<dyn Broker>,
    con: Option<Box<dyn Connection>>,
    /// Set when a connection was (re)opened after a failure; the owner may want to catch up.
    reconnected: bool,
    what: &'static str,
}

impl Link {
    /// A link for the thread named `what` (for logs), with a first connection if the broker
    /// answers now.
    pub(crate) fn new(broker: Arc<dyn Broker>, what: &'static str) -> Self {
        let con = broker.connect().ok();
        Self {
            broker,
            con,
            reconnected: false,
            what,
        }
    }

    /// A link whose first connection is `con`.
    pub(crate) fn with(
        broker: Arc<dyn Broker>,
        con: Box<dyn Connection>,
        what: &'static str,
    ) -> Self {
        Self {
            broker,
            con: Some(con),
            reconnected: false,
            what,
        }
    }

    /// Runs `op`, reconnecting and retrying after transient errors until it succeeds or
    /// `give_up()` is true (checked between attempts). Other errors return at once.
    pub(crate) fn run<T>(
        &mut self,
        mut op: impl FnMut(&mut dyn Connection) -> Result<T, BrokerError>,
        give_up: impl Fn() -> bool,
    ) -> Result<T, BrokerError> {
        let mut backoff = FIRST_BACKOFF;
        let mut last = None;
        loop {
            if self.con.is_none() {
                match self.broker.connect() {
                    Ok(con) => {
                        self.con = Some(con);
                        self.reconnected = true;
                        tracing::info!(thread = self.what, "reconnected to the broker");
                    }
                    Err(e) if e.is_transient() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if let Some(con) = self.con.as_mut() {
                match op(con.as_mut()) {
                    Ok(v) => return Ok(v),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(thread = self.what, error = %e, "broker connection lost");
                        self.con = None;
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if give_up() {
                return Err(last.unwrap_or_else(|| BrokerError::Connection("gave up".into())));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Whether a connection was reopened since the last call (and clears the flag).
    pub(crate) fn take_reconnected(&mut self) -> bool {
        std::mem::take(&mut self.reconnected)
    }
}
