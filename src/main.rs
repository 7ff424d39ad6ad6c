//! The `impasto` binary: parse the command line, run it, map the result to an exit code
//! (0 done, 1 the run failed but wrote its last good image, 2 bad input, 130 interrupted).

mod cli;

use clap::Parser;

fn main() {
    let args = match cli::args::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => std::process::exit(cli::usage_error(e)),
    };
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("impasto: {err:#}");
            2
        }
    };
    std::process::exit(code);
}
