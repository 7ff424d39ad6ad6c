//! `impasto serve`: loads the network once, binds, prints the page's address (with its token)
//! and serves impasto studio until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use impasto::device;
use impasto::engine::Backend;
use impasto::studio::{Studio, StudioOptions};
use impasto::vgg::Vgg;
use impasto::weights;

use super::args::ServeArgs;

/// The default work directory: `$IMPASTO_HOME/studio`, else the user's data directory.
fn default_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("IMPASTO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home).join("studio"));
    }
    match dirs::data_dir() {
        Some(d) => Ok(d.join("impasto").join("studio")),
        None => Ok(weights::fetch::cache_dir()?.join("studio")),
    }
}

pub fn serve(a: &ServeArgs) -> Result<i32> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => default_dir()?,
    };
    let path = match &a.weights {
        Some(p) => p.clone(),
        None => weights::fetch::ensure_default_weights(&mut |m| errln!("impasto: {m}"))?,
    };
    let vgg = Vgg::new(weights::load(&path, None)?, Default::default());
    let say = &mut |m: &str| errln!("impasto: {m}");
    let net: Arc<dyn Backend + Send> = Arc::from(
        device::backend(vgg, a.device.device(), &|_| Ok(()), say)
            .map_err(|e| super::args::in_flags(e, &impasto::settings::Settings::new("", [])))?
            .0,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(a.host, a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        let options = StudioOptions {
            weights: a.weights.clone(),
            device: a.device.device(),
            memory: a.memory.map_or(impasto::studio::DEFAULT_MEMORY, |m| m.saturating_mul(1 << 20)),
            timeout: a.timeout.map_or(impasto::studio::DEFAULT_TIMEOUT, std::time::Duration::from_secs_f64),
            ..StudioOptions::new(dir.clone())
        };
        let studio = Studio::new(net, addr, options).with_context(|| format!("{}: cannot use it", dir.display()))?;
        if !a.host.is_loopback() {
            errln!(
                "impasto: warning: listening on {addr}, reachable from other machines; the token is the only protection"
            );
        }
        let url = studio.url(addr);
        super::output::line_or_ignore(format_args!("{url}"));
        errln!("impasto: studio at {url} (work directory {}); Ctrl-C stops it", dir.display());
        if a.open {
            open_browser(&url);
        }
        impasto::studio::serve(studio, listener).await.context("the server stopped")
    })?;
    Ok(0)
}

/// Starts the platform's browser on `url` (a failure is only reported).
fn open_browser(url: &str) {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(program).arg(url).spawn() {
        errln!("impasto: cannot start a browser ({program}: {e}); open {url} yourself");
    }
}

#[cfg(test)]
mod tests {
    /// The help's defaults are the studio's.
    #[test]
    fn the_help_says_the_studios_defaults() {
        use clap::CommandFactory;
        let command = super::super::args::Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        let help = |id: &str| serve.get_arguments().find(|a| a.get_id() == id).unwrap().get_help().unwrap().to_string();
        assert!(help("memory").contains(&format!("[default: {}]", impasto::studio::DEFAULT_MEMORY >> 20)));
        assert!(help("timeout").contains(&format!("[default: {}]", impasto::studio::DEFAULT_TIMEOUT.as_secs())));
    }
}
