"""PyTorch side of `crates/tensor/examples/mm_cmp.rs`: GFLOP/s of a linear layer's three
products on the `llama-tiny` step's shapes (4096 rows), 2 threads:
forward `x @ w.t()`, `dx = g @ w`, `dw = g.t() @ x`.

    python3 bench/mm_torch.py [fwd] [dx] [dw]
"""
import sys
import time

import torch

torch.set_num_threads(2)
M = 4096
only = sys.argv[1:]
out = []
for (N, K) in [(768, 256), (256, 256), (1376, 256), (256, 688), (2048, 256)]:
    x, w, g = torch.randn(M, K), torch.randn(N, K), torch.randn(M, N)
    flop = 2.0 * M * N * K
    res = []
    for name, f in [("fwd", lambda: x @ w.t()), ("dx", lambda: g @ w), ("dw", lambda: g.t() @ x)]:
        if only and name not in only:
            continue
        for _ in range(3):
            f()
        t = time.perf_counter()
        for _ in range(20):
            f()
        dt = (time.perf_counter() - t) / 20
        res.append(f"{name} {flop / dt / 1e9:.0f}")
    out.append(f"{N}x{K}: " + " ".join(res))
print("torch  " + " | ".join(out))
