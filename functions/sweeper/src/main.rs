//! The `sweeper` Lambda function, on an EventBridge schedule: removes lapsed subscriptions and
//! sends the expiring notices that are due.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_sweeper().await
}
