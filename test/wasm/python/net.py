"""A wasi:cli command that uses wasi:sockets, for the socket-grant tests.

Runs the operations its arguments name, in order, and prints one line for
each: `OP TARGET: ok ...` or `OP TARGET: error CODE`. A failed operation does
not stop the ones after it.

    listen PORT          TCP listen on 0.0.0.0:PORT (kept for `accept`)
    accept               accept one connection, send "hello from wasm\\n"
    connect IP PORT      TCP connect, send "hello from wasm\\n"
    udp IP PORT          send one UDP datagram "hello from wasm"
    lookup NAME          resolve NAME
"""

import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import (
    instance_network,
    ip_name_lookup,
    network,
    tcp_create_socket,
    udp,
    udp_create_socket,
)

GREETING = b"hello from wasm\n"

# Every socket and stream stays referenced until the guest exits: dropping a
# socket while its streams live is a trap ("resource has children").
KEEP = []


def address(ip: str, port: int) -> network.IpSocketAddress:
    octets = tuple(int(part) for part in ip.split("."))
    return network.IpSocketAddress_Ipv4(network.Ipv4SocketAddress(port, octets))


def code(error: Err) -> str:
    value = error.value
    return value.name.lower().replace("_", "-") if hasattr(value, "name") else str(value)


def finish(sock, step):
    """Runs a wasi:sockets `finish-*` call, blocking while it would block."""
    while True:
        try:
            return step()
        except Err as e:
            if e.value != network.ErrorCode.WOULD_BLOCK:
                raise
            sock.subscribe().block()


class Run(exports.Run):
    def run(self) -> None:
        net = instance_network.instance_network()
        args = sys.argv[1:]
        listener = None
        while args:
            op, args = args[0], args[1:]
            target = ""
            try:
                if op == "listen":
                    target, args = args[0], args[1:]
                    sock = tcp_create_socket.create_tcp_socket(network.IpAddressFamily.IPV4)
                    sock.start_bind(net, address("0.0.0.0", int(target)))
                    finish(sock, sock.finish_bind)
                    sock.start_listen()
                    finish(sock, sock.finish_listen)
                    listener = sock
                    KEEP.append(sock)
                    print(f"listen {target}: ok", flush=True)
                elif op == "accept":
                    if listener is None:
                        print("accept: error not-listening", flush=True)
                        continue
                    conn = finish(listener, listener.accept)
                    KEEP.append(conn)
                    out = conn[2]
                    out.blocking_write_and_flush(GREETING)
                    print("accept: ok", flush=True)
                elif op == "connect":
                    (ip, port), args = args[:2], args[2:]
                    target = f"{ip}:{port}"
                    sock = tcp_create_socket.create_tcp_socket(network.IpAddressFamily.IPV4)
                    sock.start_connect(net, address(ip, int(port)))
                    KEEP.append(sock)
                    streams = finish(sock, sock.finish_connect)
                    KEEP.append(streams)
                    out = streams[1]
                    out.blocking_write_and_flush(GREETING)
                    print(f"connect {target}: ok", flush=True)
                elif op == "udp":
                    (ip, port), args = args[:2], args[2:]
                    target = f"{ip}:{port}"
                    sock = udp_create_socket.create_udp_socket(network.IpAddressFamily.IPV4)
                    sock.start_bind(net, address("0.0.0.0", 0))
                    finish(sock, sock.finish_bind)
                    KEEP.append(sock)
                    streams = sock.stream(address(ip, int(port)))
                    KEEP.append(streams)
                    out = streams[1]
                    out.check_send()
                    out.send([udp.OutgoingDatagram(GREETING.strip(), None)])
                    print(f"udp {target}: ok", flush=True)
                elif op == "lookup":
                    target, args = args[0], args[1:]
                    stream = ip_name_lookup.resolve_addresses(net, target)
                    KEEP.append(stream)
                    found = []
                    while True:
                        try:
                            addr = stream.resolve_next_address()
                        except Err as e:
                            if e.value != network.ErrorCode.WOULD_BLOCK:
                                raise
                            stream.subscribe().block()
                            continue
                        if addr is None:
                            break
                        found.append(".".join(map(str, addr.value)) if isinstance(addr, network.IpAddress_Ipv4) else str(addr.value))
                    print(f"lookup {target}: ok {' '.join(found)}", flush=True)
                else:
                    print(f"{op}: error unknown-operation", flush=True)
            except Err as e:
                label = f"{op} {target}" if target else op
                print(f"{label}: error {code(e)}", flush=True)
