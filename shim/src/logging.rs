//! Logs go to the `log` fifo containerd opens in the bundle directory, so
//! they appear in containerd's own log next to its lines for the container.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Sends `tracing` (and the `log` records of containerd-shim) to the shim
/// log fifo when it exists, else to stderr. `debug` is containerd's
/// `-debug` flag; `RUST_LOG` overrides both.
pub fn init(debug: bool) {
    // The fifo exists only in the daemon's working directory (the bundle).
    let result = match OpenOptions::new().write(true).open("log") {
        Ok(fifo) => subscriber(debug).with_writer(Mutex::new(fifo)).try_init(),
        Err(_) => subscriber(debug).with_writer(std::io::stderr).try_init(),
    };
    if let Err(e) = result {
        eprintln!("wasmpod: logging not set up: {e}");
    }
}

/// Like [`init`], but logs nothing without the fifo: `start` prints its
/// answer for containerd and keeps its output free of anything else.
pub fn init_fifo_only(debug: bool) {
    // Non-blocking: without a reader, no log rather than a hung `start`.
    let fifo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log");
    if let Ok(fifo) = fifo {
        let _ = subscriber(debug).with_writer(Mutex::new(fifo)).try_init();
    }
}

fn subscriber(
    debug: bool,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    EnvFilter,
> {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},cranelift=warn,wasmtime=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
}
