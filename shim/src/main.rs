//! `containerd-shim-wasmpod-v1`: the binary containerd starts.

use anyhow::{Context, bail};
use containerd_shim::Config;
use containerd_shim_wasmpod::shim::{RUNTIME_TYPE, WasmpodShim};
use containerd_shim_wasmpod::{daemon, logging};

fn main() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let flags = containerd_shim::parse(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match flags.action.as_str() {
        _ if flags.info => {}
        "start" => return runtime.block_on(daemon::start(&flags)).context("start"),
        "" => {
            // Only the server has containerd's log fifo; `start` and
            // `delete` answer on stdout and must keep it clean.
            logging::init(flags.debug);
            return runtime.block_on(daemon::serve(&flags)).map_err(|e| {
                tracing::error!(error = %containerd_shim_wasmpod::error::chain(&e), "shim failed");
                e.into()
            });
        }
        "delete" => {}
        other => bail!("unknown action {other:?}"),
    }
    // `-info` and `delete` are the same for every shim: containerd-shim's.
    let config = Config {
        no_setup_logger: true,
        ..Default::default()
    };
    runtime.block_on(containerd_shim::run::<WasmpodShim>(
        RUNTIME_TYPE,
        Some(config),
    ));
    Ok(())
}
