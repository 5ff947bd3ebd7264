//! The `subscribe` Lambda function. Subscribe (and refresh): `POST /v1/subscriptions`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_api(hub::api::ApiFunction::Subscribe).await
}
