# Yardstick for bench/gpu/gemm.ts and bench/gpu/probe.ts: PyTorch's fp32 (TF32 off) matMul rate on the
# same GPU, n x n x n. Prints one JSON line per size ({"bench": "gemm", "kernel": "torch", ...}).
#   python3 bench/gpu/torch_matmul.py [--sizes 1024,2048,4096] [--device cuda|cpu]
import argparse
import json
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="1024,2048,4096")
ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
ap.add_argument("--seconds", type=float, default=1.0)
a = ap.parse_args()
dev = a.device
if dev == "cuda" and not torch.cuda.is_available():
    raise SystemExit("bench/gpu/torch_matmul.py: no CUDA device visible to torch; use --device cpu")
torch.backends.cuda.matmul.allow_tf32 = False


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


for n in (int(s) for s in a.sizes.split(",")):
    x = torch.rand(n, n, device=dev) * 2 - 1
    y = torch.rand(n, n, device=dev) * 2 - 1
    c = x @ y
    sync()
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < a.seconds or reps < 3:
        for _ in range(4):
            c = x @ y
        reps += 4
        sync()
    s = time.perf_counter() - t
    name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
    print(json.dumps({"bench": "gemm", "kernel": "torch", "n": n, "gflops": round(2 * n**3 * reps / s / 1e9, 1),
                      "ms": round(s * 1000 / reps, 3), "reps": reps, "device": name, "torch": torch.__version__}),
          flush=True)
