//! The `impasto` binary: parse the command line, run it, map the result to an exit code
//! (0 done, 1 the run failed but wrote its last good image, 2 bad input, 130 interrupted).

/// A line on standard output (a closed pipe ends the command, exit 0: [`cli::output`]).
macro_rules! outln {
    () => { $crate::cli::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::output::line(format_args!($($arg)*)) };
}

/// A line on standard error (errors writing it are ignored: [`cli::output`]).
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::output::err_line(format_args!($($arg)*)) };
}

mod cli;

use clap::{CommandFactory, FromArgMatches};

fn main() {
    // `impasto plan ARGS` is `impasto stylize --dry-run ARGS`, or `impasto video --dry-run ARGS`
    // for a clip.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "plan") {
        let command = if argv.get(2).is_some_and(|a| cli::video::is_clip_name(std::path::Path::new(a))) {
            "video"
        } else {
            "stylize"
        };
        argv.splice(1..2, [command.into(), "--dry-run".into()]);
    }
    let parsed =
        cli::args::Cli::command().try_get_matches_from(argv).and_then(|m| cli::args::Cli::from_arg_matches(&m));
    let args = match parsed {
        Ok(args) => args,
        Err(e) => std::process::exit(cli::usage_error(e)),
    };
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            errln!("impasto: {err:#}");
            2
        }
    };
    std::process::exit(code);
}
