//! `webhook-hub`: every function of the hub in one process, for one machine (the embedded mode).

mod cli;
mod server;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Ok(cli::Command::Serve(options)) => match server::serve(options).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("webhook-hub: {err}");
                std::process::ExitCode::FAILURE
            }
        },
        Ok(cli::Command::Help) => {
            println!("{}", cli::USAGE);
            std::process::ExitCode::SUCCESS
        }
        Ok(cli::Command::Version) => {
            println!("webhook-hub {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("webhook-hub: {err}\n\n{}", cli::USAGE);
            std::process::ExitCode::from(2)
        }
    }
}
