#!/usr/bin/env python3
# Turns the JSON lines bench/gpu/run_all.sh collected in a folder into one Markdown report (stdout):
# GEMM GFLOP/s (lmpipe's WGSL GEMM, TF.js's stock matMul, torch.mm), training ms/step and tokens/s against
# PyTorch, first-step compile time, the dispatch audit's predicted vs measured step, and each sub-step's
# exit status and duration. Standard library only.
#   python3 bench/gpu/report.py OUT_DIR > OUT_DIR/gpu_results.md
import glob
import json
import os
import sys

out = sys.argv[1]
rows = []
for path in sorted(glob.glob(os.path.join(out, "*.jsonl"))):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass


def pick(**kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def fmt(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


meta = (pick(bench="meta") or [{}])[0]
print(f"# lmpipe GPU benchmark ({meta.get('date', '?')})\n")
print(f"Machine: {meta.get('gpu', '?')}; WebGPU adapter: {meta.get('adapter', '?')}; "
      f"mode: {meta.get('mode', '?')}; total {meta.get('total_s', '?')} s.\n")

print("## GEMM, fp32, n x n x n (GFLOP/s)\n")
print("| n | lmpipe WGSL | TF.js stock | torch.mm | lmpipe / torch | lmpipe / stock | rel. error lmpipe / stock |")
print("|---:|---:|---:|---:|---:|---:|---:|")
sizes = sorted({r["n"] for r in pick(bench="gemm")})
for n in sizes:
    g = {k: (pick(bench="gemm", n=n, kernel=k) or [{}])[0].get("gflops") for k in ("own", "stock", "torch")}
    chk = (pick(bench="gemm_check", n=n) or [{}])[0]
    err = lambda k: "-" if chk.get(k) is None else f"{chk[k]:.1e}"
    ratio = lambda a, b: "-" if not a or not b else f"{a / b:.2f}"
    print(f"| {n} | {fmt(g['own'])} | {fmt(g['stock'])} | {fmt(g['torch'])} | {ratio(g['own'], g['torch'])} | "
          f"{ratio(g['own'], g['stock'])} | {err('max_rel_err_own')} / {err('max_rel_err_stock')} |")
print("\nf16 GEMM: not measured (lmpipe's f16 kernels are not part of this build).\n")

print("## Training, one step = forward + backward + gradient norm + AdamW\n")
print("| model | preset | batch x T | precision | implementation | ms/step | tokens/s | first step ms | "
      "compile ms (pipelines) | vs PyTorch |")
print("|---|---|---|---|---|---:|---:|---:|---:|---:|")
torch_rows = pick(bench="torch_train")
for r in pick(bench="train"):
    t = [x for x in torch_rows if x.get("model") == r["model"] and x.get("preset") == r["preset"]]
    vs = f"{r['tokens_per_s'] / t[0]['tokens_per_s']:.2f}x" if t and t[0].get("tokens_per_s") else "-"
    T = r["tokens_per_step"] // r["batch_size"]
    print(f"| {r['model']} | {r['preset']} | {r['batch_size']} x {T} | {r['precision']} | lmpipe webgpu, "
          f"{'WGSL GEMM' if r['matmul'] == 'own' else 'stock matMul'} | {fmt(r['ms_per_step'])} | "
          f"{fmt(r['tokens_per_s'])} | {fmt(r['first_step_ms'], 0)} | {fmt(r['first_step_compile_ms'], 0)} "
          f"({r['first_step_pipelines']}) | {vs} |")
for t in torch_rows:
    c = t.get("config", {})
    print(f"| {t['model']} | {t['preset']} | {c.get('batch')} x {c.get('context')} | {t.get('precision')} | "
          f"PyTorch {t.get('torch')} {t.get('device')} | {fmt(t.get('ms_per_step'))} | {fmt(t.get('tokens_per_s'))} "
          f"| - | - | 1.00x |")
print("\n(pixel-attn has no PyTorch reference yet.)\n")

audits = [r for r in rows if r.get("summary")]
if audits:
    print("## Dispatch audit (bench/webgpu_audit.ts)\n")
    print("| model | preset | batch | matMul | dispatches | predicted ms/step | measured GPU ms | "
          "underfilled | far above roofline |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for a in audits:
        print(f"| {a['model']} | {a['preset']} | {a['batch_size']} | {a['matmul']} | {a['dispatches']} | "
              f"{fmt(a['predicted_step_ms'], 2)} ({a['gpu']}) | {fmt(a.get('measured_gpu_ms'), 2)} | "
              f"{a['underfilled_dispatches']} | {a['far_above_roofline_dispatches']} |")
    print()

print("## Sub-steps\n")
print("| step | exit | seconds |")
print("|---|---:|---:|")
for s in pick(bench="step"):
    note = " (timed out)" if s["rc"] in (124, 137) else ""
    print(f"| {s['name']} | {s['rc']}{note} | {s['seconds']} |")
