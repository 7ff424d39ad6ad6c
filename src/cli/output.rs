//! Writing to the terminal without panicking. A closed standard output (`impasto plan | head -1`,
//! `impasto settings out.png | true`) ends the command there, quietly, with exit 0, as the reader
//! asked; a closed or broken standard error is ignored (the exit code still says how the run
//! ended). `println!` and `eprintln!` panic on both; the command line uses [`outln!`] and
//! [`errln!`] instead.

use std::io::Write;

/// Writes one line to standard output; exits 0 if the reader has gone.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Writes one line to standard output, ignoring any error (a server's address: it keeps
/// serving whoever reads its output).
#[cfg_attr(not(feature = "studio"), allow(dead_code))]
pub fn line_or_ignore(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{args}").and_then(|_| out.flush());
}

/// Writes one line to standard error, ignoring any error.
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}
