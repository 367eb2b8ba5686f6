# Yardstick for bench/gpu/probe.ts: PyTorch's fp32 (TF32 off) matMul rate on the same GPU.
import time
import torch

torch.backends.cuda.matmul.allow_tf32 = False
for n in (1024, 2048, 4096):
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    c = a @ b
    torch.cuda.synchronize()
    t = time.time()
    for _ in range(10):
        c = a @ b
    torch.cuda.synchronize()
    print(f"torch fp32 matmul {n}^3: {2 * n**3 * 10 / (time.time() - t) / 1e9:.0f} GFLOP/s")
