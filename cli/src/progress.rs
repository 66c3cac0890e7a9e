//! One line per tenth of a transfer on stderr, for transfers worth watching.

/// Below this, a transfer is over before a progress line could help.
const WORTH_SHOWING: u64 = 4 << 20;

/// Progress of one blob transfer.
pub struct Progress {
    verb: &'static str,
    digest: String,
    total: u64,
    done: u64,
    shown_tenths: u64,
    started: std::time::Instant,
}

impl Progress {
    /// A transfer of `total` bytes of blob `digest`.
    pub fn new(verb: &'static str, digest: &str, total: u64) -> Self {
        let short = digest.get(..19).unwrap_or(digest).to_owned();
        Self {
            verb,
            digest: short,
            total,
            done: 0,
            shown_tenths: 0,
            started: std::time::Instant::now(),
        }
    }

    /// `n` more bytes went through.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if self.total < WORTH_SHOWING {
            return;
        }
        let tenths = (self.done * 10 / self.total).min(10);
        if tenths > self.shown_tenths {
            self.shown_tenths = tenths;
            let mib = |b: u64| b as f64 / f64::from(1 << 20);
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "{} {}: {:>3}% {:.1}/{:.1} MiB ({:.1} MiB/s)",
                self.verb,
                self.digest,
                tenths * 10,
                mib(self.done),
                mib(self.total),
                mib(self.done) / secs
            );
        }
    }
}
