//! The epoch counters of a shim's engines. A kill or a forbidden system call
//! ticks every one: a wasi:http server's requests may run on the baseline
//! engine's code or on the optimised engine's, and each store checks only
//! its own engine's counter.

use wasmtime::Engine;

/// The engines whose stores a guest may run in.
#[derive(Debug, Clone)]
pub struct Epochs(Vec<Engine>);

impl Epochs {
    /// The epochs of `engines`.
    pub fn of(engines: Vec<Engine>) -> Self {
        Self(engines)
    }

    /// Makes every store of these engines run its deadline callback: the
    /// stores of the stopped guest trap, the others carry on. An atomic add
    /// per engine, so a signal handler may call it.
    pub fn tick(&self) {
        for engine in &self.0 {
            engine.increment_epoch();
        }
    }
}

impl From<&Engine> for Epochs {
    fn from(engine: &Engine) -> Self {
        Self(vec![engine.clone()])
    }
}
