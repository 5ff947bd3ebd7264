//! The `manage` Lambda function. Manage subscriptions: list, get, update, delivery log, secret and its rotation.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_api(hub::api::ApiFunction::Manage).await
}
