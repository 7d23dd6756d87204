//! `ienk-cli`: see `ienk-cli --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    match ienk_cli::run(std::env::args_os(), &mut stdout.lock()) {
        Err(clap_error) => clap_error.exit(),
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("ienk-cli: error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
