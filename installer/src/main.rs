//! `wasmpod-node-installer`: run by the chart's DaemonSet on every node of
//! the pool (install) and by its uninstall hook (uninstall), with the
//! host's `/` mounted at `--host-root`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};
use wasmpod_installer::layout::{self, Flavour, HostRoot};
use wasmpod_installer::restart::{self, Method};
use wasmpod_installer::shim_file::{self, Shim};
use wasmpod_installer::state::State;
use wasmpod_installer::{config, health, plan};

#[derive(Parser)]
#[command(
    version,
    about = "Puts wasmpod's shim into this node's containerd, or takes it out"
)]
struct Cli {
    /// Where the host's `/` is mounted.
    #[arg(long, default_value = "/host", global = true)]
    host_root: PathBuf,
    /// The containerd layout; detected when not given (rke2, k3s, k0s,
    /// microk8s, then plain containerd).
    #[arg(long, global = true)]
    layout: Option<Flavour>,
    /// The config plain containerd reads (host path).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The version of a config the installer creates where there is none
    /// (2 is read by containerd 1.6, 1.7 and 2.x).
    #[arg(long, default_value_t = config::DEFAULT_VERSION, global = true)]
    config_version: i64,
    /// Where the shim and the installer's record go (host path).
    #[arg(long, default_value = "/opt/wasmpod", global = true)]
    install_dir: PathBuf,
    /// A directory on containerd's PATH for a link to the shim (host path):
    /// containerd 1.6 finds shims there only; empty for none.
    #[arg(long, default_value = "/usr/local/bin", global = true)]
    bin_dir: PathBuf,
    /// How containerd is restarted after a change.
    #[arg(long, value_enum, default_value = "systemd", global = true)]
    restart: Method,
    /// Print what would change, as a unified diff, and change nothing.
    #[arg(long, global = true)]
    dry_run: bool,
    /// containerd's socket (host path); by default from the config it reads,
    /// else the layout's usual one.
    #[arg(long, global = true)]
    containerd_socket: Option<PathBuf>,
    /// How long containerd may take to come back healthy after a restart.
    #[arg(long, default_value_t = 60, global = true)]
    health_timeout: u64,
    /// After success, stay running until SIGTERM: a DaemonSet's pod must
    /// not exit, or it is started again.
    #[arg(long, global = true)]
    stay: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the shim and the `wasmpod` runtime (a second run changes nothing).
    Install {
        /// The shim to install, inside the installer's image.
        #[arg(long, default_value = wasmpod_installer::image::SHIM_IN_IMAGE)]
        shim: PathBuf,
    },
    /// Take out the runtime, the shim and the record, and nothing else.
    Uninstall,
    /// Write the installer's image (this binary, static, and the shim,
    /// FROM scratch) as an OCI image archive.
    Image {
        /// The shim to put in it.
        #[arg(long)]
        shim: PathBuf,
        /// The image's name.
        #[arg(long, default_value = "docker.io/wasmpod/node-installer:latest")]
        reference: String,
        /// The archive to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Run a command in the host's mount namespace (used for systemctl).
    #[command(hide = true)]
    HostExec {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true)]
        argv: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMPOD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Install { shim } => install(&cli, shim),
        Command::Uninstall => uninstall(&cli),
        Command::Image {
            shim,
            reference,
            output,
        } => image(shim, reference, output),
        Command::HostExec { argv } => host_exec(argv),
    };
    match result {
        Ok(()) if cli.stay && !cli.dry_run => stay(),
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wasmpod-node-installer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn install(cli: &Cli, shim_path: &Path) -> anyhow::Result<()> {
    let host = HostRoot::new(&cli.host_root);
    let layout = layout::detect(&host, cli.layout, cli.config.as_deref())?;
    info!(layout = layout.flavour.name(), config = %layout.target.display(), "containerd layout");
    let machine = nix::sys::utsname::uname().context("uname")?;
    let shim = Shim::read(
        shim_path,
        env!("CARGO_PKG_VERSION"),
        &machine.machine().to_string_lossy(),
    )?;
    let bin_dir = cli.install_dir.join("bin");
    let runtime_path = bin_dir.join(shim_file::LINK);
    let change = plan::install(
        &host,
        &layout,
        &runtime_path.to_string_lossy(),
        cli.config_version,
    )?;
    let recorded = State::load(&host, &cli.install_dir)?;
    let previous_shim = shim_file::current(&host.join(&bin_dir));
    if cli.dry_run {
        print!("{}", change.diff());
        if previous_shim.as_deref() != Some(shim.file_name.as_str()) {
            println!(
                "would install {} and point {} at it",
                bin_dir.join(&shim.file_name).display(),
                runtime_path.display()
            );
        }
        let on_path = host.join(&cli.bin_dir).join(shim_file::LINK);
        let link_missing = !cli.bin_dir.as_os_str().is_empty()
            && std::fs::read_link(&on_path).ok().as_deref() != Some(runtime_path.as_path());
        if link_missing {
            println!(
                "would link {} to {} (unless another file has that name)",
                cli.bin_dir.join(shim_file::LINK).display(),
                runtime_path.display()
            );
        }
        if !change.changes()
            && previous_shim.as_deref() == Some(shim.file_name.as_str())
            && !link_missing
        {
            println!("nothing to change");
        }
        return Ok(());
    }
    if shim.install(&host.join(&bin_dir))? {
        info!(shim = %bin_dir.join(&shim.file_name).display(), "shim installed");
    }
    if !cli.bin_dir.as_os_str().is_empty() {
        let on_path = cli.bin_dir.join(shim_file::LINK);
        match shim_file::link_on_path(&host.join(&cli.bin_dir), &runtime_path) {
            Ok(shim_file::PathLink::Made) => {
                info!(link = %on_path.display(), "shim linked on containerd's PATH")
            }
            Ok(shim_file::PathLink::Unchanged) => {}
            Ok(shim_file::PathLink::Foreign) => {
                warn!(file = %on_path.display(), "another file has the shim's name there and was left; containerd 1.6 would run it")
            }
            // runtime_path still serves containerd 1.7 and 2.x.
            Err(error) => {
                warn!(%error, "no link on containerd's PATH: containerd 1.6 will not find the shim")
            }
        }
    }
    let changed = change.changes();
    let mut state = State {
        flavour: layout.flavour,
        target: layout.target.clone(),
        created: match &recorded {
            Some(recorded) if recorded.target == layout.target => recorded.created,
            _ => change.before.is_none(),
        },
        previous: if changed {
            change.before.clone()
        } else {
            recorded.as_ref().and_then(|r| r.previous.clone())
        },
        shim: shim.file_name.clone(),
        verified: !changed && recorded.as_ref().is_some_and(|r| r.verified),
    };
    // The record goes first: an installer stopped after the config change
    // still knows what to roll back to.
    State::change(&host, &cli.install_dir, Some(&state))?.apply(&host)?;
    // A change recorded but never seen healthy (the last run was stopped
    // after its restart, or restarted nothing) is finished as if new.
    let resumed = !changed && recorded.as_ref().is_some_and(|r| !r.verified);
    if changed {
        change.apply(&host)?;
        info!(config = %layout.target.display(), "wasmpod runtime added to the containerd config");
    } else if resumed {
        info!(config = %layout.target.display(), "the containerd config has the wasmpod runtime, not yet seen healthy");
    } else {
        info!(config = %layout.target.display(), "the containerd config already has the wasmpod runtime");
    }
    if changed || resumed {
        restart::restart(cli.restart, &layout, false, run_in_host)?;
        if cli.restart == Method::None {
            warn!(
                "containerd was not restarted (restart method none): it reads the change at its next start"
            );
        } else {
            info!(method = ?cli.restart, "containerd restarted");
        }
    }
    if cli.restart != Method::None && !state.verified {
        let socket = socket(cli, &host, &layout, change.after.as_deref())?;
        match wait_healthy(cli, &host, &socket, true) {
            Ok(version) => {
                info!(%version, socket = %socket.display(), "containerd is healthy and lists the wasmpod runtime")
            }
            Err(error) if changed || resumed => {
                // From the config before the installer's change to now.
                let undo = plan::FileChange {
                    path: layout.target.clone(),
                    before: state.previous.clone(),
                    after: change.after.clone(),
                };
                return Err(roll_back(cli, &host, &layout, &undo, &socket, error));
            }
            // Not a change of this installer's: nothing of ours to put back.
            Err(error) => return Err(error.into()),
        }
        state.verified = true;
        State::change(&host, &cli.install_dir, Some(&state))?.apply(&host)?;
    }
    let mut keep = vec![shim.file_name.as_str()];
    keep.extend(previous_shim.as_deref());
    for old in shim_file::prune(&host.join(&bin_dir), &keep)? {
        info!(shim = old, "older shim removed");
    }
    Ok(())
}

fn uninstall(cli: &Cli) -> anyhow::Result<()> {
    let host = HostRoot::new(&cli.host_root);
    let recorded = State::load(&host, &cli.install_dir)?;
    // What the install recorded wins over a new detection.
    let (flavour, config) = match &recorded {
        Some(r) => (
            Some(r.flavour),
            (r.flavour == Flavour::Containerd).then(|| r.target.clone()),
        ),
        None => (cli.layout, cli.config.clone()),
    };
    let layout = layout::detect(&host, flavour, config.as_deref())?;
    let created = recorded.as_ref().is_some_and(|r| r.created);
    let change = plan::uninstall(&host, &layout, created)?;
    let bin_dir = host.join(cli.install_dir.join("bin"));
    if cli.dry_run {
        print!("{}", change.diff());
        if bin_dir.exists() {
            println!("would remove {}", cli.install_dir.join("bin").display());
        }
        return Ok(());
    }
    if change.changes() {
        let socket = socket(cli, &host, &layout, change.before.as_deref())?;
        change.apply(&host)?;
        info!(config = %layout.target.display(), "wasmpod runtime taken out of the containerd config");
        restart::restart(cli.restart, &layout, false, run_in_host)?;
        if cli.restart != Method::None {
            let version = wait_healthy(cli, &host, &socket, false)?;
            info!(%version, "containerd is healthy without the wasmpod runtime");
        }
    } else {
        info!(config = %layout.target.display(), "the containerd config has no wasmpod runtime");
    }
    if !cli.bin_dir.as_os_str().is_empty() {
        let runtime_path = cli.install_dir.join("bin").join(shim_file::LINK);
        if shim_file::unlink_from_path(&host.join(&cli.bin_dir), &runtime_path)? {
            info!(link = %cli.bin_dir.join(shim_file::LINK).display(), "shim link removed from containerd's PATH");
        }
    }
    for old in shim_file::prune(&bin_dir, &[])? {
        info!(shim = old, "shim removed");
    }
    State::change(&host, &cli.install_dir, None)?.apply(&host)?;
    for dir in [bin_dir, host.join(&cli.install_dir)] {
        // Only when empty: anything else there is not the installer's.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// The socket containerd serves on (host path): `--containerd-socket`, or
/// `[grpc] address` of the config it reads (`config`, the target's text,
/// for a TOML layout; the generated config for a template), or the
/// layout's usual one.
fn socket(
    cli: &Cli,
    host: &HostRoot,
    layout: &layout::Layout,
    config: Option<&str>,
) -> anyhow::Result<PathBuf> {
    if let Some(socket) = &cli.containerd_socket {
        return Ok(socket.clone());
    }
    let default = layout.flavour.default_socket();
    Ok(match &layout.edit {
        layout::Edit::Toml => health::socket_of(config, default),
        layout::Edit::TemplateBlock { generated } => {
            health::socket_of(plan::read_host(host, generated)?.as_deref(), default)
        }
        layout::Edit::DropIn => PathBuf::from(default),
    })
}

/// Waits for containerd on host socket `socket` to answer, with (`listed`)
/// or without the wasmpod handler in its CRI; returns its version.
fn wait_healthy(
    cli: &Cli,
    host: &HostRoot,
    socket: &Path,
    listed: bool,
) -> Result<String, health::HealthError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            health::HealthError::Unreachable(format!("cannot start an async runtime: {error}"))
        })?;
    let limit = std::time::Duration::from_secs(cli.health_timeout);
    runtime
        .block_on(health::wait(
            &host.join(socket),
            config::HANDLER,
            listed,
            limit,
        ))
        .map(|healthy| healthy.version)
}

/// Puts the config back as it was after a failed health check, restarts
/// containerd again, and says both what failed and where that left it.
fn roll_back(
    cli: &Cli,
    host: &HostRoot,
    layout: &layout::Layout,
    change: &plan::FileChange,
    socket: &Path,
    failure: health::HealthError,
) -> anyhow::Error {
    error!(error = %failure, "containerd is not healthy with the change; putting the previous config back");
    let outcome = change
        .reversed()
        .apply(host)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            restart::restart(cli.restart, layout, true, run_in_host).map_err(anyhow::Error::from)
        })
        .and_then(|()| wait_healthy(cli, host, socket, false).map_err(anyhow::Error::from));
    match outcome {
        Ok(version) => {
            info!(%version, "the previous config is back and containerd is healthy");
            anyhow::anyhow!(
                "{failure}; the previous config of {} was put back and containerd {version} is healthy again",
                layout.target.display()
            )
        }
        Err(error) => {
            anyhow::anyhow!("{failure}; putting the previous config back failed too: {error:#}")
        }
    }
}

/// Waits for SIGTERM or SIGINT, which as a container's pid 1 would
/// otherwise be ignored.
fn stay() -> ExitCode {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(error) = signals.thread_block() {
        eprintln!("wasmpod-node-installer: cannot wait for SIGTERM: {error}");
        return ExitCode::FAILURE;
    }
    info!("done; staying until the pod is stopped");
    match signals.wait() {
        Ok(signal) => info!(?signal, "stopping"),
        Err(error) => warn!(%error, "waiting for a signal failed"),
    }
    ExitCode::SUCCESS
}

fn image(shim: &Path, reference: &str, output: &Path) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("find this binary")?;
    let architecture = wasmpod_oci::host_architecture();
    wasmpod_installer::image::write(&me, shim, reference, architecture, output)?;
    println!("{} ({reference})", output.display());
    Ok(())
}

/// Runs `argv` through this binary's hidden `host-exec`, which enters the
/// host's mount namespace first (a fresh single-threaded process can).
fn run_in_host(argv: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new("/proc/self/exe")
        .arg("host-exec")
        .args(argv)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|error| error.to_string())?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| status.to_string())
}

fn host_exec(argv: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let ns = std::fs::File::open("/proc/1/ns/mnt")
        .context("open /proc/1/ns/mnt (the pod needs hostPID)")?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
        .context("enter the host's mount namespace")?;
    let (program, args) = argv.split_first().context("no command")?;
    Err(std::process::Command::new(program).args(args).exec())
        .with_context(|| format!("run {program} on the host"))
}
