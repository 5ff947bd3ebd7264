//! `webhook-hub`: every function of the hub in one process, for one machine (the embedded mode).

mod cli;
mod dead_letters;
mod listen;
mod server;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    match cli.command {
        cli::Command::Serve(options) => finish(server::serve(options).await),
        cli::Command::Listen(options) => finish(listen::listen(options).await),
        cli::Command::DeadLetters(options) => finish(dead_letters::dead_letters(options).await),
        cli::Command::Backup(options) => finish(
            hub::adapters::sqlite::backup(&options.data, &options.to).map(|pages| {
                println!(
                    "webhook-hub: backed up {} to {} ({pages} pages)",
                    options.data.display(),
                    options.to.display()
                );
            }),
        ),
    }
}

fn finish(outcome: Result<(), String>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("webhook-hub: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
