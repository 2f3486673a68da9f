#!/usr/bin/env python3
"""The kernel's CPU per byte for moving data over loopback: one TCP stream against 65000-byte
UDP datagrams (what a loopback QUIC ring sends), with no protocol above either.

It answers one question behind issue 24's floor: is the kernel's UDP path cheaper per byte than
its TCP path? If it is not, QUIC's AEAD comes on top of everything TCP costs. Each transfer
runs a sender and a receiver process; CPU is their user + sys time (getrusage), summed, per
byte moved. UDP has no flow control, so the receiver grants credit every 16 datagrams over a
second socket (one small datagram per ~1 MB: a few per cent of the syscalls, counted too). The
interpreter's per-call cost is in both rows; the payload is never touched in Python.

    /usr/bin/python3 benches/udp_vs_tcp_kernel.py [--gib 2] [--rounds 3]
"""
import argparse
import multiprocessing as mp
import resource
import socket
import statistics

DATAGRAM = 65000
TCP_WRITE = 1 << 20
WINDOW = 64
STALL_S = 30  # a lost datagram or a dead peer ends the run instead of hanging it


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def tcp_receiver(port_q, total, out_q):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(STALL_S)
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.settimeout(STALL_S)
    buf = bytearray(TCP_WRITE)
    view = memoryview(buf)
    t0, got = cpu_s(), 0
    while got < total:
        n = conn.recv_into(view)
        if n == 0:
            raise SystemExit(f"TCP stream ended after {got} of {total} bytes")
        got += n
    out_q.put(cpu_s() - t0)


def tcp_sender(port, total, out_q):
    s = socket.create_connection(("127.0.0.1", port), timeout=STALL_S)
    chunk = memoryview(bytearray(TCP_WRITE))
    t0, sent = cpu_s(), 0
    while sent < total:
        n = min(TCP_WRITE, total - sent)
        s.sendall(chunk[:n])
        sent += n
    out_q.put(cpu_s() - t0)
    s.close()


def udp_window(sock):
    """Datagrams that may be in flight: what the receive buffer the kernel granted holds, with
    room to spare (it may be capped well below what was asked for, by net.core.rmem_max)."""
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    window = min(WINDOW, int(granted / 1.25) // (DATAGRAM + 1024))
    if window < 2:
        raise SystemExit(f"a UDP receive buffer of {granted} bytes holds under 2 datagrams of {DATAGRAM}: "
                         "raise net.core.rmem_max")
    return window


def udp_receiver(port_q, total, out_q):
    data = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    data.bind(("127.0.0.1", 0))
    data.settimeout(STALL_S)
    window = udp_window(data)
    credit_every = max(1, window // 4)
    port_q.put((data.getsockname()[1], window, credit_every))
    buf = bytearray(DATAGRAM)
    t0, got, count = cpu_s(), 0, 0
    while got < total:
        n, addr = data.recvfrom_into(buf)
        if n != DATAGRAM:
            raise SystemExit(f"a datagram of {n} bytes, expected {DATAGRAM}")
        got += n
        count += 1
        if count % credit_every == 0:
            data.sendto(b"c", addr)  # credit goes back on the same socket pair
    out_q.put(cpu_s() - t0)


def udp_sender(dest_info, total, out_q):
    port, window, credit_every = dest_info
    data = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    data.bind(("127.0.0.1", 0))
    data.settimeout(STALL_S)
    chunk = memoryview(bytearray(DATAGRAM))
    dest = ("127.0.0.1", port)
    t0, sent, granted = cpu_s(), 0, window
    while sent < total:
        while granted == 0:
            data.recv(16)
            granted += credit_every
        data.sendto(chunk, dest)
        sent += DATAGRAM
        granted -= 1
    out_q.put(cpu_s() - t0)


def one(kind, total):
    ctx = mp.get_context("fork")
    port_q, out_q = ctx.Queue(), ctx.Queue()
    recv, send = (tcp_receiver, tcp_sender) if kind == "tcp" else (udp_receiver, udp_sender)
    r = ctx.Process(target=recv, args=(port_q, total, out_q), daemon=True)
    r.start()
    dest = port_q.get(timeout=STALL_S)
    s = ctx.Process(target=send, args=(dest, total, out_q), daemon=True)
    s.start()
    s.join()
    r.join()
    if r.exitcode != 0 or s.exitcode != 0:
        raise SystemExit(f"{kind}: sender exit {s.exitcode}, receiver exit {r.exitcode} (a socket timed out after {STALL_S} s, or a datagram was lost)")
    return (out_q.get() + out_q.get()) * 1e9 / total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0, help="GiB per transfer")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of TCP then UDP")
    a = ap.parse_args()
    if not 0 < a.gib <= 64:
        ap.error(f"--gib {a.gib}: expected more than 0 and at most 64")
    if a.rounds < 1:
        ap.error(f"--rounds {a.rounds}: expected at least 1")
    # Whole datagrams; the TCP sender's last write is the remainder of a 1 MiB one.
    total = max(int(a.gib * (1 << 30)) // DATAGRAM, WINDOW) * DATAGRAM
    rows = {"tcp": [], "udp": []}
    for i in range(a.rounds):
        for kind in ("tcp", "udp"):
            rows[kind].append(one(kind, total))
            print(f"round {i + 1} {kind}: {rows[kind][-1]:.3f} ns/B (sender + receiver CPU per byte)", flush=True)
    tcp, udp = statistics.median(rows["tcp"]), statistics.median(rows["udp"])
    print(f"median: TCP {tcp:.3f} ns/B, UDP {udp:.3f} ns/B, UDP / TCP {udp / tcp:.2f}")


if __name__ == "__main__":
    main()
