//! Opening the standard streams containerd hands a task.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// A stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// `binary://` loggers and other schemes are not implemented.
    #[error("stdio URI {0} is not supported (use a fifo path or file://)")]
    Scheme(String),
    /// Opening the fifo or file failed.
    #[error("cannot open {name} {}", path.display())]
    Open {
        /// stdin, stdout or stderr.
        name: &'static str,
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The standard streams containerd gave the container.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Read end for the guest's stdin; `None` reads as empty.
    pub stdin: Option<File>,
    /// Where the guest's stdout goes; `None` discards it.
    pub stdout: Option<File>,
    /// Where the guest's stderr goes; `None` discards it.
    pub stderr: Option<File>,
}

/// The paths from a create request; empty means "not connected".
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    /// Fifo the guest reads.
    pub stdin: String,
    /// Fifo or `file://` the guest writes.
    pub stdout: String,
    /// Fifo or `file://` the guest writes.
    pub stderr: String,
}

impl StdioPaths {
    /// Opens the three streams. containerd opens the other end of each fifo
    /// before it asks for a task, so these opens do not wait.
    pub fn open(&self) -> Result<Stdio, StdioError> {
        Ok(Stdio {
            stdin: open_input(&self.stdin)?,
            stdout: open_output("stdout", &self.stdout)?,
            stderr: open_output("stderr", &self.stderr)?,
        })
    }
}

fn target(uri: &str) -> Result<(PathBuf, bool), StdioError> {
    match uri.split_once("://") {
        None => Ok((PathBuf::from(uri), false)),
        Some(("file", path)) => Ok((PathBuf::from(path), true)),
        Some(_) => Err(StdioError::Scheme(uri.to_owned())),
    }
}

fn open_output(name: &'static str, uri: &str) -> Result<Option<File>, StdioError> {
    if uri.is_empty() {
        return Ok(None);
    }
    let (path, is_file) = target(uri)?;
    let mut options = OpenOptions::new();
    options.write(true);
    if is_file {
        options.create(true).append(true).mode(0o640);
    } else {
        // A fifo opened for reading too always has a reader: while
        // containerd restarts, the guest's writes fill the pipe and then
        // wait for it (as under runc's shim), instead of failing with EPIPE
        // and failing the guest (a wasi:http handler that prints answers 500).
        options.read(true);
    }
    options
        .open(&path)
        .map(Some)
        .map_err(|source| StdioError::Open { name, path, source })
}

fn open_input(uri: &str) -> Result<Option<File>, StdioError> {
    if uri.is_empty() {
        return Ok(None);
    }
    let (path, _) = target(uri)?;
    // Non-blocking so the open does not wait for a writer, then blocking
    // again so reads wait for data like a native process's would.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|source| StdioError::Open {
            name: "stdin",
            path: path.clone(),
            source,
        })?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| StdioError::Open {
            name: "stdin",
            path: path.clone(),
            source: e.into(),
        })?,
    );
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(flags - nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| StdioError::Open {
        name: "stdin",
        path,
        source: e.into(),
    })?;
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_paths_mean_no_stream() {
        let stdio = StdioPaths::default().open().expect("open");
        assert!(stdio.stdin.is_none() && stdio.stdout.is_none() && stdio.stderr.is_none());
    }

    #[test]
    fn file_uri_appends_and_fifo_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("out.log");
        let fifo = dir.path().join("in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let paths = StdioPaths {
            stdin: fifo.to_string_lossy().into_owned(),
            stdout: format!("file://{}", log.display()),
            stderr: String::new(),
        };
        let stdio = paths.open().expect("open");
        assert!(stdio.stdin.is_some());
        std::io::Write::write_all(&mut stdio.stdout.expect("stdout"), b"hi").expect("write");
        assert_eq!(std::fs::read(&log).expect("read"), b"hi");
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let paths = StdioPaths {
            stdout: "binary:///usr/bin/logger".into(),
            ..Default::default()
        };
        assert!(matches!(paths.open(), Err(StdioError::Scheme(_))));
    }
}
