# Yardstick for bench/gpu/gemm.ts and bench/gpu/probe.ts: PyTorch's matMul rate on the same GPU, n x n x n,
# fp32 with TF32 off (real fp32, as lmpipe's) and f16 (torch.float16 operands, tensor cores, f32
# accumulation). Prints one JSON line per size and dtype ({"bench": "gemm", "kernel": "torch", "dtype": ...});
# a dtype the device cannot run (f16 on the CPU) gets a line with "skipped" and the reason.
#   python3 bench/gpu/torch_matmul.py [--sizes 1024,2048,4096] [--dtypes fp32,f16] [--device cuda|cpu]
import argparse
import json
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="1024,2048,4096")
ap.add_argument("--dtypes", default="fp32,f16")
ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
ap.add_argument("--seconds", type=float, default=1.0)
a = ap.parse_args()
dev = a.device
if dev == "cuda" and not torch.cuda.is_available():
    raise SystemExit("bench/gpu/torch_matmul.py: no CUDA device visible to torch; use --device cpu")
torch.backends.cuda.matmul.allow_tf32 = False
DTYPES = {"fp32": torch.float32, "f16": torch.float16}
name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


for dtype in a.dtypes.split(","):
    if dtype not in DTYPES:
        raise SystemExit(f"bench/gpu/torch_matmul.py: --dtypes: '{dtype}' is neither fp32 nor f16")
    for n in (int(s) for s in a.sizes.split(",")):
        line = {"bench": "gemm", "kernel": "torch", "dtype": dtype, "n": n, "device": name, "torch": torch.__version__}
        if dtype == "f16" and dev == "cpu":  # CPU half matMuls are emulated or missing: not a yardstick
            print(json.dumps(dict(line, skipped="f16 matMul is measured on CUDA only")), flush=True)
            continue
        x = (torch.rand(n, n, device=dev) * 2 - 1).to(DTYPES[dtype])
        y = (torch.rand(n, n, device=dev) * 2 - 1).to(DTYPES[dtype])
        c = x @ y
        sync()
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < a.seconds or reps < 3:
            for _ in range(4):
                c = x @ y
            reps += 4
            sync()
        s = time.perf_counter() - t
        print(json.dumps(dict(line, gflops=round(2 * n**3 * reps / s / 1e9, 1), ms=round(s * 1000 / reps, 3), reps=reps)),
              flush=True)
