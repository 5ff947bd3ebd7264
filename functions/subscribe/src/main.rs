//! The `subscribe` Lambda function. Subscribe (and refresh): `POST /v1/subscriptions`.

use hub::api::Operation;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_api(&[Operation::Subscribe]).await
}
