"""A wasi:http/proxy handler written in Python, built by componentize-py.

    GET /...             200 "hello from wasi:http PATH"
    GET /slow/MS         the same, after MS milliseconds (for draining)
    GET /fetch/HOST:PORT GET http://HOST:PORT/ and answer with what came back

Each request prints one line to stdout, which is the container's log.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import monotonic_clock, outgoing_handler
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
)


def name(value) -> str:
    return type(value).__name__.split("_", 1)[-1]


def fetch(authority: str) -> str:
    request = OutgoingRequest(Fields())
    request.set_scheme(Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query("/")
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        return f"fetch {authority}: error {name(e.value)}"
    with future:
        while (result := future.get()) is None:
            with future.subscribe() as ready:
                ready.block()
    inner = result.value if isinstance(result, Ok) else result
    if isinstance(inner, Err):
        return f"fetch {authority}: error {name(inner.value)}"
    response = inner.value
    with response:
        return f"fetch {authority}: ok {response.status()}"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        print(f"handling {name(request.method()).upper()} {path}", flush=True)
        if path.startswith("/slow/"):
            with monotonic_clock.subscribe_duration(int(path[6:]) * 1_000_000) as done:
                done.block()
        if path.startswith("/fetch/"):
            text = fetch(path[7:]) + "\n"
        else:
            text = f"hello from wasi:http {path}\n"
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(body, None)
