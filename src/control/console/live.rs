//! Live updates by long polling: the page asks for the next change after the version it shows,
//! and the answer comes as soon as a change is applied (the control API's change counter, plus
//! the console's own for faults), or after [`TICK`] so that the request counts move too. Each
//! waiting request holds one of [`MAX_STREAMS`] permits; a closed tab frees its permit when its
//! request ends, after [`TICK`] at most (sooner when the server notices the closed
//! connection), and every wait ends when the server stops.

use std::time::Duration;

use super::error::ConsoleError;
use super::ServerStop;
use crate::control::ControlApi;
use crate::server::stopping;

/// Longest a long poll waits without a change.
pub const TICK: Duration = Duration::from_secs(5);
/// Long polls waiting at once, across all pages.
pub const MAX_STREAMS: usize = 32;

impl ControlApi {
    /// The version of what the console shows: it grows with every change.
    pub(super) fn console_version(&self) -> u64 {
        *self.inventory.subscribe().borrow() + *self.console.changed.borrow()
    }

    /// Waits until the version differs from `since` (answers at once without `since`, or when
    /// it already differs), [`TICK`] passes or the server stops; returns the version then.
    pub(super) async fn next_change(
        &self,
        since: Option<u64>,
        stop: Option<ServerStop>,
    ) -> Result<u64, ConsoleError> {
        let _permit = self
            .console
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConsoleError::TooManyStreams)?;
        let mut applied = self.inventory.subscribe();
        let mut changed = self.console.changed.subscribe();
        let version = self.console_version();
        if since != Some(version) {
            return Ok(version);
        }
        let mut stop = stop.map(|s| s.0);
        let stopped = async {
            match stop.as_mut() {
                Some(stop) => stopping(stop).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = applied.changed() => {}
            _ = changed.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped => {}
        }
        Ok(self.console_version())
    }
}
