//! The `unsubscribe` Lambda function. Unsubscribe: `DELETE /v1/subscriptions/{id}` and `DELETE /v1/subscriptions?owner=me`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_api(hub::api::ApiFunction::Unsubscribe).await
}
