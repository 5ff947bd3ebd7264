//! The `manage` Lambda function. Manage subscriptions: list, get, update, delivery log, secret and its rotation.

use hub::api::Operation;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_api(&[Operation::List, Operation::Get, Operation::Update, Operation::Deliveries, Operation::Secret, Operation::RotateSecret]).await
}
