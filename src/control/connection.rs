//! The control API as a [`Surface`] of the shared server, so operators' listener has the guest
//! listener's defences: connection limit, client deadline for heads and bodies, eviction of
//! idle connections when full, head and body size limits, graceful drain; plus the refusal of
//! cross-site requests, which only browsers send.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use super::console::ServerStop;
use super::{failure, request_id, ControlApi, ControlError, MAX_BODY};
use crate::metrics::{Metrics, SurfaceKind};
use crate::server::{Answer, ClientWait, Connection, Refusal, Surface};

impl Surface for ControlApi {
    type PerConnection = ();

    const KIND: SurfaceKind = SurfaceKind::Control;

    const MAX_BODY: usize = MAX_BODY;

    /// A cross-site form POST needs no answer to change an instance.
    const REFUSES_CROSS_SITE: bool = true;

    fn connect(&self, _peer: SocketAddr, _local: Option<SocketAddr>, _waiting: &Arc<ClientWait>) {}

    fn respond(
        self: &Arc<Self>,
        connection: &Arc<Connection<()>>,
        mut request: Request<Full<Bytes>>,
    ) -> Answer<'static> {
        // The console's long polls end when the server stops.
        let stop = ServerStop(connection.stop.clone());
        request.extensions_mut().insert(stop);
        let api = self.clone();
        Answer::later(async move { Ok(api.handle(request).await) })
    }

    fn refused(&self, why: Refusal) -> Response<Full<Bytes>> {
        let error = match why {
            Refusal::Browser(_) => ControlError::BrowserRequest,
            Refusal::BodyTooLarge => ControlError::InvalidParameterValue(format!(
                "The request body is larger than {MAX_BODY} bytes."
            )),
            Refusal::BodyIncomplete => ControlError::InvalidParameterValue(
                "The request body did not arrive whole in time.".into(),
            ),
        };
        failure(&error, &request_id())
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
