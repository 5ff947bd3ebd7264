//! The `publish` Lambda function. Publish events: `POST /v1/events` onto the events queue.

use hub::api::Operation;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_api(&[Operation::Publish]).await
}
