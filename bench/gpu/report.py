#!/usr/bin/env python3
# Turns the JSON lines bench/gpu/run_all.sh collected in a folder into one Markdown report (stdout): GEMM
# GFLOP/s in fp32 and f16 (lmpipe's WGSL GEMM, TF.js's stock matMul, torch.mm), training ms/step and
# tokens/s of every model and preset against PyTorch with the first step and its compile time apart and peak
# GPU memory, the parameter counts of both sides, the dispatch audit's predicted vs measured step, what was
# not measured and why, and each part's exit status, estimate and duration. Standard library only.
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


def first(**kw):
    return (pick(**kw) or [{}])[0]


def fmt(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def mib(x):
    return "-" if x is None else f"{x / 2**20:,.0f}"


def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"


meta = first(bench="meta")
print(f"# lmpipe GPU benchmark ({meta.get('date', '?')})\n")
print(f"Machine: {meta.get('gpu', '?')}; WebGPU adapter: {meta.get('adapter', '?')}; mode: {meta.get('mode', '?')}; "
      f"total {meta.get('total_s', '?')} s (budget {meta.get('budget_s', '?')} s; the plan's estimates "
      f"add up to ~{meta.get('planned_s', '?')} s).\n")

print("## GEMM, n x n x n (GFLOP/s)\n")
print("fp32: torch.mm with TF32 off. f16: torch.mm on float16 operands (tensor cores, f32 accumulation); lmpipe's "
      "WGSL GEMM has no f16 variant yet, and TF.js has no float16 dtype.\n")
print("| n | dtype | lmpipe WGSL | TF.js stock | torch.mm | lmpipe / torch | lmpipe / stock | rel. error lmpipe / stock |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
for dtype in ("fp32", "f16"):
    for n in sorted({r["n"] for r in pick(bench="gemm", dtype=dtype)}):
        g = {k: first(bench="gemm", n=n, kernel=k, dtype=dtype).get("gflops") for k in ("own", "stock", "torch")}
        t = first(bench="gemm", n=n, kernel="torch", dtype=dtype)
        torch_cell = f"skipped: {t['skipped']}" if t.get("skipped") else fmt(g["torch"])
        chk = first(bench="gemm_check", n=n) if dtype == "fp32" else {}
        err = lambda k: "-" if chk.get(k) is None else f"{chk[k]:.1e}"
        own = fmt(g["own"]) if dtype == "fp32" else "no f16 kernel"
        print(f"| {n} | {dtype} | {own} | {fmt(g['stock'])} | {torch_cell} | {ratio(g['own'], g['torch'])} | "
              f"{ratio(g['own'], g['stock'])} | {err('max_rel_err_own')} / {err('max_rel_err_stock')} |")
print()

print("## Training, one step = forward + backward + gradient norm + AdamW\n")
print("lmpipe: webgpu with its own kernels (WGSL GEMM unless 'stock matMul'); first step = the step that compiles "
      "its shaders and pipelines, reported apart from ms/step (compile = time inside createShaderModule / "
      "createComputePipeline, and pipelines created); peak GPU = the GPU buffers TF.js holds at its highest (in use "
      "plus pooled for reuse, weights included). PyTorch: eager, CUDA, fp32 with TF32 off or bf16 autocast; first "
      "step = the first warm-up step; peak GPU = torch.cuda.max_memory_allocated. 'vs PyTorch' = lmpipe tokens/s over "
      "PyTorch's on the same model, preset and batch: fp32 against fp32, mixed against bf16.\n")
print("| model | preset | batch x T | implementation | precision | ms/step | tokens/s | first step ms | "
      "compile ms (pipelines) | peak GPU MiB | vs PyTorch |")
print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
torch_rows = [t for t in pick(bench="torch_train") if not t.get("skipped")]
keys = []
for r in pick(bench="train") + torch_rows:
    k = (r.get("preset"), r.get("model"))
    if k not in keys:
        keys.append(k)
order = {"tiny": 0, "small": 1, "study": 2}
keys.sort(key=lambda k: (order.get(k[0], 9), ["gpt", "pixel-cumsum", "pixel-attn", "pixel-attn-wide"].index(k[1])
                         if k[1] in ("gpt", "pixel-cumsum", "pixel-attn", "pixel-attn-wide") else 9))
for preset, model in keys:
    ts = {t["precision"]: t for t in torch_rows if t.get("model") == model and t.get("preset") == preset}
    for r in pick(bench="train", model=model, preset=preset):
        t = ts.get("bf16" if r["precision"] == "mixed" else r["precision"])
        same = t and t.get("config", {}).get("batch") == r["batch_size"]
        vs = f"{r['tokens_per_s'] / t['tokens_per_s']:.2f}x" if same and t.get("tokens_per_s") else "-"
        impl = "lmpipe webgpu" + ("" if r["matmul"] == "own" else ", stock matMul")
        print(f"| {model} | {preset} | {r['batch_size']} x {r['tokens_per_step'] // r['batch_size']} | {impl} | "
              f"{r['precision']} | {fmt(r['ms_per_step'])} | {fmt(r['tokens_per_s'])} | {fmt(r['first_step_ms'], 0)} | "
              f"{fmt(r['first_step_compile_ms'], 0)} ({r['first_step_pipelines']}) | {mib(r.get('peak_gpu_bytes'))} | {vs} |")
    for t in ts.values():
        c = t.get("config", {})
        where = f"PyTorch {t.get('torch')} {t.get('device')}" + (" (no CUDA: dry run)" if t.get("note") else "")
        print(f"| {model} | {preset} | {c.get('batch')} x {c.get('context')} | {where} | {t['precision']} | "
              f"{fmt(t.get('ms_per_step'))} | {fmt(t.get('tokens_per_s'))} | {fmt(t.get('first_step_ms'), 0)} | - | "
              f"{mib(t.get('peak_gpu_bytes'))} | 1.00x |")
print()

print("## Same models on both sides (parameter counts)\n")
print("| model | preset | lmpipe | PyTorch | equal |")
print("|---|---|---:|---:|---|")
for c in pick(bench="model_config"):
    t = [x for x in pick(bench="torch_train") + pick(bench="torch_params")
         if x.get("model") == c["model"] and x.get("preset") == c["preset"] and x.get("params")]
    if t:
        print(f"| {c['model']} | {c['preset']} | {c['params']:,} | {t[0]['params']:,} | "
              f"{'yes' if t[0]['params'] == c['params'] else '**NO**'} |")
print()

replays = [r for r in rows if "replay" in r and "ms_per_step" in r]
if replays:
    print("## Train-loop steps replayed and not (bench/webgpu_replay.ts, median ms/step of steps 4-10)\n")
    print("| model | preset | batch | through TF.js ms/step | replayed ms/step | off / on | host ms to issue a replay |")
    print("|---|---|---:|---:|---:|---:|---:|")
    keys = sorted({(r["model"], r["preset"], r["batch"]) for r in replays})
    for k in keys:
        off = [r for r in replays if (r["model"], r["preset"], r["batch"]) == k and not r["replay"]]
        on = [r for r in replays if (r["model"], r["preset"], r["batch"]) == k and r["replay"]]
        if not off or not on:
            continue
        a, b = off[-1]["ms_per_step"], on[-1]["ms_per_step"]
        print(f"| {k[0]} | {k[1]} | {k[2]} | {fmt(a)} | {fmt(b)} | {a / b:.2f}x | {fmt(on[-1].get('host_ms'))} |")
    print()
hosts = [r for r in rows if "host_ms" in r and "variant" in r]
if hosts:
    print("## Host time of a step (bench/webgpu_host.ts, median of the timed steps)\n")
    print("wall = host + waiting; host = recording dispatches (of which bind groups) + TF.js's engine and lmpipe's "
          "op code outside recording + queue submits; waiting = on the step's host read and its final sync (Deno's "
          "WebGPU takes ~11 ms per read even with the GPU idle: bench/gpu/sync_latency.ts).\n")
    print("| model | preset | batch | dispatches | wall ms | host ms | recording ms (bind groups) | outside recording ms | "
          "submits ms | waiting ms | reads | host us per dispatch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for h in hosts:
        print(f"| {h['model']} | {h['preset']} | {h['batch_size']} | {h['dispatches']} | {fmt(h['wall_ms'])} | "
              f"{fmt(h['host_ms'])} | {fmt(h['record_ms'])} ({fmt(h['bind_group_ms'])}) | {fmt(h['outside_record_ms'])} | "
              f"{fmt(h['submit_ms'])} | {fmt(h['waiting_ms'])} | {h['reads']} | {fmt(h['host_us_per_dispatch'], 0)} |")
    print()

audits = [r for r in rows if r.get("summary")]
if audits:
    print("## Dispatch audit (bench/webgpu_audit.ts)\n")
    print("Measured GPU ms: every dispatch timed with timestamp queries, which puts each in its own pass; short "
          "kernels come out inflated (on the H200 the sum exceeded the step's wall time), so read it as a ranking.\n")
    print("| model | preset | batch | matMul | dispatches | predicted ms/step | measured GPU ms | "
          "underfilled | far above roofline |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for a in audits:
        print(f"| {a['model']} | {a['preset']} | {a['batch_size']} | {a['matmul']} | {a['dispatches']} | "
              f"{fmt(a['predicted_step_ms'], 2)} ({a['gpu']}) | {fmt(a.get('measured_gpu_ms'), 2)} | "
              f"{a['underfilled_dispatches']} | {a['far_above_roofline_dispatches']} |")
    print()

print("## Not measured\n")
print("- f16 GEMM in lmpipe: the WGSL GEMM is fp32 only (f16 operands exist in the conv and attention kernels).")
micro = {"gpt": 12, "pixel-attn": 8}
for model, b in micro.items():
    if not pick(bench="train", model=model, preset="study", batch_size=b):
        print(f"- {model} `study` at the study's micro-batch ({b}): its part was skipped or failed (see Parts).")
for t in pick(bench="torch_train"):
    if t.get("skipped"):
        print(f"- PyTorch {t['model']} {t['preset']} {t['precision']}: skipped ({t['skipped']}).")
for s in pick(bench="step"):
    if s["rc"] != 0:
        why = s["rc"] if isinstance(s["rc"], str) else (
            f"timed out after {s['seconds']} s" if s["rc"] in (124, 137) else f"exit {s['rc']}, see {s['name']}.log")
        print(f"- {s['name']}: {why}.")
print()

print("## Parts\n")
print("| part | exit | seconds | estimate (H200) |")
print("|---|---:|---:|---:|")
for s in pick(bench="step"):
    note = " (timed out)" if s["rc"] in (124, 137) else ""
    print(f"| {s['name']} | {s['rc']}{note} | {s['seconds']} | {s.get('estimate_s', '-')} |")
