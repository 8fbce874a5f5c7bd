"""A real small training job: a two-layer neural network in plain numpy on scikit-learn's
bundled handwritten digits (1,797 8x8 images, shipped inside the package; nothing is
downloaded). Prints loss and accuracy every --log-every epochs (a few seconds in all); exits 0 when test accuracy reaches
--target (default 0.9), 1 otherwise.

suanli sets SUANLI_JOB_ID, SUANLI_NODE and CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES;
this script prints them so you can see where it ran (it computes on the CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from sklearn.datasets import load_digits


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--log-every", type=int, default=10, help="print every N epochs (and the last)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "0")))
    args = ap.parse_args()

    devices = os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get("ASCEND_RT_VISIBLE_DEVICES") or "none"
    print(f"job {os.environ.get('SUANLI_JOB_ID', '-')} on {os.environ.get('SUANLI_NODE', 'local')} devices {devices}")

    rng = np.random.default_rng(args.seed)
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    xtr, ytr, xte, yte = x[:split], y[:split], x[split:], y[split:]
    print(f"data: {len(xtr)} train, {len(xte)} test, {x.shape[1]} features, 10 classes")

    w1 = rng.normal(0, 1 / np.sqrt(x.shape[1]), (x.shape[1], args.hidden))
    b1 = np.zeros(args.hidden)
    w2 = rng.normal(0, 1 / np.sqrt(args.hidden), (args.hidden, 10))
    b2 = np.zeros(10)

    def forward(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.maximum(0, xb @ w1 + b1)
        z = h @ w2 + b2
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return h, p / p.sum(axis=1, keepdims=True)

    t0 = time.time()
    acc_te = 0.0
    for epoch in range(1, args.epochs + 1):
        perm = rng.permutation(len(xtr))
        for i in range(0, len(xtr), args.batch):
            idx = perm[i : i + args.batch]
            xb, yb = xtr[idx], ytr[idx]
            h, p = forward(xb)
            g = p.copy()
            g[np.arange(len(yb)), yb] -= 1
            g /= len(yb)
            gw2, gb2 = h.T @ g, g.sum(axis=0)
            gh = (g @ w2.T) * (h > 0)
            gw1, gb1 = xb.T @ gh, gh.sum(axis=0)
            w1 -= args.lr * gw1
            b1 -= args.lr * gb1
            w2 -= args.lr * gw2
            b2 -= args.lr * gb2
        if epoch % args.log_every and epoch != args.epochs:
            continue
        _, ptr = forward(xtr)
        loss = float(-np.log(ptr[np.arange(len(ytr)), ytr] + 1e-12).mean())
        acc_tr = float((ptr.argmax(axis=1) == ytr).mean())
        _, pte = forward(xte)
        acc_te = float((pte.argmax(axis=1) == yte).mean())
        print(f"epoch {epoch:3d}/{args.epochs} loss {loss:.4f} train_acc {acc_tr:.4f} test_acc {acc_te:.4f}")
    print(f"done in {time.time() - t0:.2f}s: test accuracy {acc_te:.4f}")
    return 0 if acc_te >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
