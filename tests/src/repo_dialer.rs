//! A samod `Dialer` for Thôn Sync's `GET /v1/repo`: the WebSocket opened
//! with the device token as `Authorization: Bearer`, binary frames in and
//! out. Shared by `bench --repo` and the samod interop tests
//! (`tests/tests/repo_samod.rs`), each including this file as a module.

use std::convert::Infallible;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use samod::{DialError, Dialer, Transport};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Dials `/v1/repo` with a device token as `Authorization: Bearer`.
pub struct BearerDialer {
    /// The endpoint, `ws://HOST/v1/repo`.
    pub url: samod::Url,
    /// The device token.
    pub token: String,
}

impl Dialer for BearerDialer {
    type Error = Infallible;

    fn url(&self) -> samod::Url {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'static, Result<Transport, DialError<Infallible>>> {
        let (url, token) = (self.url.clone(), self.token.clone());
        Box::pin(async move {
            let mut request = url.as_str().into_client_request().map_err(DialError::transient)?;
            let auth = format!("Bearer {token}").parse().map_err(DialError::transient)?;
            request.headers_mut().insert("authorization", auth);
            let (ws, _) = tokio_tungstenite::connect_async(request).await.map_err(DialError::transient)?;
            let (sink, stream) = ws.split();
            let stream = stream.filter_map(|m| async move {
                match m {
                    Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
            let sink = sink.with(|b: Vec<u8>| async move {
                Ok::<_, tokio_tungstenite::tungstenite::Error>(Message::Binary(b.into()))
            });
            Ok(Transport::new(Box::pin(stream), Box::pin(sink)))
        })
    }
}
