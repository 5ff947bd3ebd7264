//! The `confirm` Lambda function. Confirm ownership of a callback: `GET /v1/subscriptions/{id}/confirm` (no bearer token).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_api(hub::api::ApiFunction::Confirm).await
}
