//! The `publish` Lambda function. Publish events: `POST /v1/events` onto the events queue.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_api(hub::api::ApiFunction::Publish).await
}
