"""A two-rank (or N-rank) all-reduce over plain TCP sockets, using only the torchrun-style
rendezvous suanli gives every rank: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE.

Rank 0 listens on MASTER_ADDR:MASTER_PORT; every other rank connects, sends its vector and
receives the sum of all ranks' vectors. Every rank prints the combined result, so the job's
merged log shows the same line from each rank. No torch needed: this is what
`torch.distributed`'s TCP store and gloo do for real, shrunk to a page.

With a checkpoint directory (SUANLI_CHECKPOINT_DIR) rank 0 also writes the result there.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import struct
import sys
import time

import numpy as np


def send_array(sock: socket.socket, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    data = buf.getvalue()
    sock.sendall(struct.pack("!Q", len(data)) + data)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_array(sock: socket.socket) -> np.ndarray:
    (size,) = struct.unpack("!Q", recv_exact(sock, 8))
    return np.load(io.BytesIO(recv_exact(sock, size)), allow_pickle=False)


def local_vector(rank: int, size: int) -> np.ndarray:
    """Each rank's contribution: rank r holds (r + 1) * [1, 2, …, size]."""
    return (rank + 1) * np.arange(1, size + 1, dtype=np.int64)


def allreduce_sum(vec: np.ndarray, rank: int, world: int, addr: str, port: int, timeout_s: float) -> np.ndarray:
    if world == 1:
        return vec
    if rank == 0:
        with socket.create_server(("", port), reuse_port=False) as srv:
            srv.settimeout(timeout_s)
            peers = [srv.accept()[0] for _ in range(world - 1)]
        total = vec.copy()
        for p in peers:
            total += recv_array(p)
        for p in peers:
            send_array(p, total)
            p.close()
        return total
    deadline = time.monotonic() + timeout_s
    while True:  # rank 0 may not be listening yet
        try:
            sock = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.settimeout(timeout_s)
        send_array(sock, vec)
        return recv_array(sock)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4, help="length of each rank's vector")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the other ranks")
    args = ap.parse_args()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    except (KeyError, ValueError) as e:
        print(f"ddp_numpy: the rendezvous environment is missing or bad ({e}); run it as a suanli job", file=sys.stderr)
        return 2
    print(f"rank {rank}/{world} master {addr}:{port} devices {os.environ.get('CUDA_VISIBLE_DEVICES', os.environ.get('ASCEND_RT_VISIBLE_DEVICES', ''))}",
          flush=True)
    vec = local_vector(rank, args.size)
    total = allreduce_sum(vec, rank, world, addr, port, args.timeout)
    expected = sum(local_vector(r, args.size) for r in range(world))
    ok = bool(np.array_equal(total, expected))
    print(f"rank {rank}: local {vec.tolist()} allreduce sum {total.tolist()} {'ok' if ok else 'WRONG'}", flush=True)
    ckpt = os.environ.get("SUANLI_CHECKPOINT_DIR")
    if rank == 0 and ckpt:
        np.save(os.path.join(ckpt, "allreduce.npy"), total)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
