//! What every cemwatch binary sets up the same way: logging to standard error, the shutdown
//! signal, the async runtime, and colours on a terminal.

use std::io::IsTerminal;

use cemwatch_shared::Severity;

/// Sets up logging to standard error; `CEMWATCH_LOG` overrides the level (`debug`, ...).
pub fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CEMWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (a test harness, the demo's in-process probes) keeps the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A future that completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // Without a handler (no signal support) only SIGTERM, or nothing, ends the wait.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// A multi-threaded runtime with every driver; `workers` threads (the number of cores when
/// `None`).
pub fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

/// Whether to colour standard output: a terminal, and `NO_COLOR` unset.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// Colours when `on`.
    pub fn new(on: bool) -> Self {
        Self { on }
    }
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    /// Green.
    pub fn good(&self, t: &str) -> String {
        self.wrap("32", t)
    }
    /// Yellow.
    pub fn warn(&self, t: &str) -> String {
        self.wrap("33", t)
    }
    /// Red.
    pub fn bad(&self, t: &str) -> String {
        self.wrap("31", t)
    }
    /// Faint.
    pub fn dim(&self, t: &str) -> String {
        self.wrap("2", t)
    }
    /// Bold.
    pub fn bold(&self, t: &str) -> String {
        self.wrap("1", t)
    }
    /// The colour of a severity: ok green, warn yellow, fail red.
    pub fn severity(&self, s: Severity, text: &str) -> String {
        match s {
            Severity::Ok => self.good(text),
            Severity::Warn => self.warn(text),
            Severity::Fail => self.bad(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_off_leaves_text_alone_and_on_wraps_it() {
        assert_eq!(Paint::new(false).bad("x"), "x");
        assert_eq!(Paint::new(true).bad("x"), "\x1b[31mx\x1b[0m");
        assert_eq!(
            Paint::new(true).severity(Severity::Ok, "ok"),
            "\x1b[32mok\x1b[0m"
        );
    }
}
