//! `containerd-shim-wasmpod-v1`: the binary containerd starts.

use anyhow::{Context, bail};
use containerd_shim::Config;
use containerd_shim_wasmpod::shim::{RUNTIME_TYPE, WasmpodShim};
use containerd_shim_wasmpod::{compiler, daemon, logging};

fn main() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == compiler::ACTION) {
        // Started by a shim, in its bundle: logs go to the shim's fifo.
        logging::init_fifo_only(false);
        return compiler::process(&args[1..]).map(drop).map_err(|e| {
            tracing::warn!(error = %containerd_shim_wasmpod::error::chain(&e), "compile process failed");
            e.into()
        });
    }
    let flags = containerd_shim::parse(&args)?;
    limit_malloc_arenas();
    // The server's own work is small (ttrpc, events); guests run on their
    // own threads, so one worker is enough.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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

/// glibc gives each thread that allocates its own 1 MiB+ arena; a shim with
/// a few threads would carry several mostly empty ones. One arena is plenty
/// for its allocation rate.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only adjusts allocator tuning; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
