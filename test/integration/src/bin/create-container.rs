//! `create-container ADDRESS NAMESPACE ID IMAGE SPEC.json`: creates a
//! container for the wasmpod runtime through containerd's API, as the CRI
//! does, so that `make bench` can run a Wasm artifact with `ctr task start`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, namespace, id, image, spec] = args.as_slice() else {
        eprintln!("usage: create-container ADDRESS NAMESPACE ID IMAGE SPEC.json");
        return ExitCode::from(2);
    };
    let created = std::fs::read(spec)
        .map_err(Box::<dyn std::error::Error>::from)
        .and_then(|bytes| Ok(serde_json::from_slice(&bytes)?))
        .and_then(|spec| {
            wasmpod_integration::create_container(address, namespace, id, image, &spec)
        });
    match created {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("create-container: {e}");
            ExitCode::FAILURE
        }
    }
}
