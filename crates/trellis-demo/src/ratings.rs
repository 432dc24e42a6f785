//! The `ratings` gRPC service (`trellis.demo.Ratings`, h2c): unary `Rate` and server-streaming
//! `Watch`, with stars derived from the item id so answers are predictable.

pub(crate) mod client;
pub(crate) mod proto;
mod server;

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::server::TcpIncoming;

use crate::DemoError;
use proto::{RateReply, RateRequest};

const SERVICE_NAME: &str = "trellis.demo.Ratings";
const RATE_PATH: &str = "/trellis.demo.Ratings/Rate";
const WATCH_PATH: &str = "/trellis.demo.Ratings/Watch";

/// How many replies a `Watch` stream sends before it ends.
const WATCH_UPDATES: u32 = 3;

/// The pause between two `Watch` replies, so the stream is visibly a stream.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);

type WatchStream = Pin<Box<dyn Stream<Item = Result<RateReply, Status>> + Send>>;

/// Serves `trellis.demo.Ratings` over h2c on `listener` until `shutdown` resolves.
pub async fn serve_ratings(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    tonic::transport::Server::builder()
        .add_service(server::RatingsServer)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}

/// The stars `Rate` gives `item`: a stable value in 1..=5.
pub fn stars_for(item: &str) -> u32 {
    let sum = item.bytes().map(u32::from).fold(0u32, u32::wrapping_add);
    sum % 5 + 1
}

fn rate(request: &RateRequest) -> Result<RateReply, Status> {
    validate(request)?;
    Ok(RateReply {
        item: request.item.clone(),
        stars: stars_for(&request.item),
    })
}

/// [`WATCH_UPDATES`] replies whose stars step through 1..=5, starting at `stars_for(item)`.
fn watch(request: RateRequest) -> Result<WatchStream, Status> {
    validate(&request)?;
    let first = stars_for(&request.item);
    let item = request.item;
    let replies = futures_util::stream::iter(0..WATCH_UPDATES).then(move |update| {
        let item = item.clone();
        async move {
            if update > 0 {
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
            Ok(RateReply {
                item,
                stars: (first - 1 + update) % 5 + 1,
            })
        }
    });
    Ok(Box::pin(replies))
}

fn validate(request: &RateRequest) -> Result<(), Status> {
    if request.item.is_empty() {
        return Err(Status::invalid_argument("item must not be empty"));
    }
    Ok(())
}
