#!/usr/bin/env python3
# A PyTorch yardstick for lmpipe's `gpt` training speed (issue 5): the same model shapes as
# lib/models/gpt.ts (GPT-2 as nanoGPT builds it: token + learned position embeddings, pre-LayerNorm
# blocks with causal multi-head attention and a 4x GELU-tanh MLP, final LayerNorm, head tied to the
# token embedding, no dropout, GPT-2 initialisation), trained with the same step as lib/train_loop.ts
# (AdamW betas 0.9/0.95, weight decay 0.1 on matrices and embeddings only, gradient clipping by global
# norm 1.0, one loss read per step) on uniformly random token batches. Used only for measurement, by
# `deno run -A bench/train.ts --vs-torch`; never by the CI tests (CI has no PyTorch).
#
# Prints one JSON line on stdout (tokens/s, median ms/step, parameter count, configuration, the BLAS
# library and the OpenBLAS kernel it dispatched, OPENBLAS_CORETYPE); progress on stderr.
#
# An honest anchor: glibc's default malloc returns PyTorch's large activation buffers to the kernel after
# every op, so every step page-faults them back in (257 tokens/s instead of 1,713 on 1 thread, issue 17).
# This script therefore re-executes itself with the tuned malloc settings of docs (MALLOC_MMAP_THRESHOLD_,
# MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_) unless they are set already, and times the step nanoGPT's
# train.py takes: forward, backward, clip, AdamW step, zero_grad.
#
#   python3 bench/torch_reference.py --preset tiny --steps 3 --warmup-steps 1 --threads 1
#   python3 bench/torch_reference.py --n-layer 4 --n-embd 128 --n-head 4 --context 128 --batch 8 --precision bf16
import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import time

# glibc malloc settings that keep freed buffers in the process (see the header); applied before torch loads.
TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "1073741824",
}


def ensure_tuned_malloc():
    """Re-executes this script with TUNED_MALLOC in the environment unless every variable is set already."""
    if all(k in os.environ for k in TUNED_MALLOC) or os.environ.get("LMPIPE_TORCH_MALLOC") == "default":
        return
    env = dict(os.environ)
    for k, v in TUNED_MALLOC.items():
        env.setdefault(k, v)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


if __name__ == "__main__":
    ensure_tuned_malloc()

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as err:  # the bench looks for a python with torch first; this is for direct use
    sys.exit(
        f"bench/torch_reference.py: PyTorch is not importable by {sys.executable} ({err}). On Debian: "
        "apt-get install -y --no-install-recommends python3-torch, then run it with /usr/bin/python3."
    )

# lib/models/gpt.ts GPT_PRESETS (vocab 50304 = GPT-2's 50257 padded to a multiple of 64).
PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, context=1024),
    "small": dict(n_layer=6, n_head=6, n_embd=384, context=256),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, context=64),
}
SAMPLED_VOCAB = 50257  # random targets cover GPT-2's real tokens, as bench/train.ts's synthetic shards


def log(msg):
    print(f"torch_reference: {msg}", file=sys.stderr, flush=True)


class Attention(nn.Module):
    """Causal multi-head self-attention with q, k, v from one [C, 3C] projection."""

    def __init__(self, c, heads, bias, use_sdpa):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(c, 3 * c, bias=bias)
        self.c_proj = nn.Linear(c, c, bias=bias)
        self.use_sdpa = use_sdpa

    def forward(self, x, mask):
        b, t, c = x.shape
        d = c // self.heads
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, d).transpose(1, 2) for z in (q, k, v))  # [B, H, T, D]
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
            scores = scores.masked_fill(mask[:t, :t], float("-inf"))
            y = F.softmax(scores, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    """The 4x MLP: c_proj(gelu_tanh(c_fc(x)))."""

    def __init__(self, c, bias):
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c, bias=bias)
        self.c_proj = nn.Linear(4 * c, c, bias=bias)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, c, heads, bias, use_sdpa):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c, elementwise_affine=True)
        self.attn = Attention(c, heads, bias, use_sdpa)
        self.ln_2 = nn.LayerNorm(c, elementwise_affine=True)
        self.mlp = Mlp(c, bias)
        if not bias:  # LayerNorm without bias (torch 1.13's LayerNorm has no bias=False switch)
            for ln in (self.ln_1, self.ln_2):
                ln.bias = None

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, vocab, context, n_layer, n_head, n_embd, bias, use_sdpa):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(context, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, bias, use_sdpa) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        if not bias:
            self.ln_f.bias = None
        # True above the diagonal: key j > query i is hidden.
        self.register_buffer("mask", torch.triu(torch.ones(context, context, dtype=torch.bool), 1), persistent=False)
        # GPT-2 initialisation: N(0, 0.02) everywhere, residual projections N(0, 0.02 / sqrt(2 L)),
        # biases 0, LayerNorm weights 1 (nn.LayerNorm's own default).
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                residual = name.endswith("c_proj.weight")  # attn.c_proj and mlp.c_proj
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer) if residual else 0.02)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe.weight[:t]
        for blk in self.blocks:
            x = blk(x, self.mask)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head: the token embedding, [B, T, V]
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.reshape(-1))


class PixelModel(nn.Module):
    """lmpipe's image models (lib/models/pixel.ts) with a VGG CNN (cnn.ts): embeddings, warm-up GPT blocks,
    the map LayerNorm, each position's image (pixel-cumsum: a running sum of keys times pixel queries;
    pixel-attn / pixel-attn-wide: per-channel causal attention over value images), the CNN on every image
    on its own (3x3 convs, each followed by a per-image norm over H, W and C with a per-channel scale and
    shift, i.e. GroupNorm with one group, and ReLU), global average pooling, ln_f and an untied head."""

    def __init__(self, cfg, use_sdpa):
        super().__init__()
        self.cfg = cfg
        d, C, dk, S, V, T = cfg["nEmbd"], cfg["channels"], cfg["keyDim"], cfg["imageSize"], cfg["vocabSize"], cfg["contextLength"]
        bias = bool(cfg.get("bias", False))
        self.model = cfg["model"]
        self.wte = nn.Embedding(V, d)
        self.wpe = nn.Embedding(T, d)
        self.blocks = nn.ModuleList(Block(d, cfg["nHead"], bias, use_sdpa) for _ in range(cfg["nWarmup"]))
        self.map_ln = nn.LayerNorm(d)
        if not bias:
            self.map_ln.bias = None
        if self.model == "pixel-cumsum":
            self.key = nn.Linear(d, C * dk, bias=False)
            self.query = nn.Parameter(torch.randn(C, dk, S * S) * 0.02)
        else:
            self.q = nn.Linear(d, C * dk, bias=False)
            self.k = nn.Linear(d, C * dk, bias=False)
            self.value = nn.Parameter(torch.randn(C, d, S * S) * 0.02)
            self.value_bias = nn.Parameter(torch.zeros(C, S * S)) if bias else None
        if cfg["cnn"] not in ("vgg9", "vgg-wide"):
            sys.exit(f"bench/torch_reference.py: cnn '{cfg['cnn']}' has no PyTorch reference here (vgg9, vgg-wide)")
        if cfg.get("cnnNorm", "image") != "image":
            sys.exit("bench/torch_reference.py: only cnnNorm 'image' has a PyTorch reference here")
        widths = list(cfg.get("cnnWidths") or [])
        if not widths:
            w = cfg["cnnWidth"]
            widths = [w] * cfg["cnnDepth"] if cfg["cnn"] == "vgg9" else [w, w, w, w, 2 * w, 2 * w, 2 * w, 2 * w, 2 * w, 2 * w, 4 * w]
        layers, in_c = [], C
        for out_c in widths:
            layers += [nn.Conv2d(in_c, out_c, 3, padding=1, bias=False), nn.GroupNorm(1, out_c, eps=1e-5), nn.ReLU()]
            in_c = out_c
        self.cnn = nn.Sequential(*layers)
        self.ln_f = nn.LayerNorm(in_c)
        if not bias:
            self.ln_f.bias = None
        self.lm_head = nn.Linear(in_c, V, bias=False)
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2 and not name.startswith("cnn."):
                nn.init.normal_(p, 0.0, 0.02)

    def images(self, hn):
        c = self.cfg
        B, T, d = hn.shape
        C, dk, S = c["channels"], c["keyDim"], c["imageSize"]
        if self.model == "pixel-cumsum":
            sums = torch.cumsum(self.key(hn), dim=1).view(B, T, C, dk)
            imgs = torch.einsum("btck,ckp->btcp", sums, self.query)
        else:
            q = (self.q(hn) / math.sqrt(dk)).view(B, T, C, dk).transpose(1, 2)  # [B, C, T, dk]
            k = self.k(hn).view(B, T, C, dk).transpose(1, 2)
            probs = F.softmax((q @ k.transpose(-2, -1)).masked_fill(self.mask[:T, :T], float("-inf")), dim=-1)
            if S * S <= d:  # values first, as lmpipe's attnOrder auto
                v = torch.einsum("btd,cdp->bctp", hn, self.value)
                if self.value_bias is not None:
                    v = v + self.value_bias[None, :, None, :]
                imgs = (probs @ v).permute(0, 2, 1, 3)  # [B, T, C, P]
            else:  # attend first
                mixed = probs @ hn[:, None]  # [B, C, T, d]
                imgs = torch.einsum("bctd,cdp->btcp", mixed, self.value)
                if self.value_bias is not None:
                    imgs = imgs + self.value_bias[None, None]
        return imgs.reshape(B * T, C, S, S)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe.weight[:t]
        for blk in self.blocks:
            x = blk(x, self.mask)
        feats = self.cnn(self.images(self.map_ln(x))).mean(dim=(2, 3))
        logits = self.lm_head(self.ln_f(feats))
        return F.cross_entropy(logits.float(), targets.reshape(-1))


def blas_library():
    """The BLAS this process loaded (from /proc/self/maps; Linux only), e.g. 'openblas-openmp/libopenblasp-r0.3.21.so'."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return "unknown"
    names = sorted(p for p in paths if any(k in p.rsplit("/", 1)[-1] for k in ("openblas", "mkl", "blis")))
    if names:
        # the file and its folder: Debian's OpenMP and pthread builds share a file name
        return ", ".join("/".join(n.rsplit("/", 2)[-2:]) for n in names)
    ref = sorted(p for p in paths if "libblas" in p)
    return f"reference BLAS ({ref[0]})" if ref else "none found"


def openblas_corename():
    """The kernel family OpenBLAS dispatched in this process (openblas_get_corename), e.g. 'SkylakeX', or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1]})
    except OSError:
        return None
    for path in paths:
        try:
            fn = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        return fn().decode()
    return None


def malloc_settings():
    """The glibc malloc variables in effect ('default' when none is set)."""
    set_ = {k: os.environ[k] for k in TUNED_MALLOC if k in os.environ}
    return set_ or "default"


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/torch_reference.py",
        description="Times training steps of lmpipe's gpt model in PyTorch (a yardstick for bench/train.ts --vs-torch).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  /usr/bin/python3 bench/torch_reference.py --preset tiny --steps 3 --threads 1\n"
        "  /usr/bin/python3 bench/torch_reference.py --n-layer 4 --n-head 4 --n-embd 128 --context 128 --batch 8 \\\n"
        "      --threads 2 --precision bf16",
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="base shapes (default tiny)")
    ap.add_argument("--model", default="gpt", choices=["gpt", "pixel-cumsum", "pixel-attn", "pixel-attn-wide"],
                    help="gpt (default), or an image model given by --pixel-config")
    ap.add_argument("--pixel-config", help="an image model's lmpipe config as JSON (its run's config.json)")
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--n-head", type=int)
    ap.add_argument("--n-embd", type=int)
    ap.add_argument("--context", type=int, help="context length T")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--no-bias", action="store_true", help="no biases in linears and LayerNorms")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    ap.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's own)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                    help="fp32, or autocast: bf16 (CPU or CUDA), fp16 (CUDA only, with a GradScaler)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="auto = cuda when available")
    ap.add_argument("--attention", choices=["auto", "manual", "sdpa"], default="auto",
                    help="sdpa = F.scaled_dot_product_attention (torch >= 2.0); auto uses it when present")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, profile one step and print its N most costly ops (self CPU time) on stderr")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    for k, v in PRESETS[a.preset].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in ("n_layer", "n_head", "n_embd", "context", "vocab", "batch", "steps"):
        if getattr(a, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(a, k)}")
    if a.warmup_steps < 0:
        ap.error(f"--warmup-steps must be >= 0, got {a.warmup_steps}")
    if a.n_embd % a.n_head != 0:
        ap.error(f"--n-embd ({a.n_embd}) must be a multiple of --n-head ({a.n_head})")
    return a


def main(argv):
    a = parse_args(argv)
    if a.threads is not None:
        if a.threads < 1:
            sys.exit(f"bench/torch_reference.py: --threads must be >= 1, got {a.threads}")
        torch.set_num_threads(a.threads)
        try:
            torch.set_num_interop_threads(1)  # no inter-op parallelism in eager training anyway
        except RuntimeError:
            pass  # already fixed in this process
    cuda = torch.cuda.is_available()
    if a.device == "cuda" and not cuda:
        sys.exit("bench/torch_reference.py: --device cuda: this PyTorch sees no CUDA device "
                 f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use --device cpu")
    device = "cuda" if a.device == "cuda" or (a.device == "auto" and cuda) else "cpu"
    if a.precision == "fp16" and device != "cuda":
        sys.exit("bench/torch_reference.py: --precision fp16 needs CUDA (CPU autocast is bf16): use --precision bf16")
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    if a.attention == "sdpa" and not has_sdpa:
        sys.exit(f"bench/torch_reference.py: --attention sdpa needs torch >= 2.0 (this is {torch.__version__})")
    use_sdpa = a.attention == "sdpa" or (a.attention == "auto" and has_sdpa)

    torch.manual_seed(a.seed)
    if a.model == "gpt":
        model = Gpt(a.vocab, a.context, a.n_layer, a.n_head, a.n_embd, not a.no_bias, use_sdpa).to(device)
    else:
        if not a.pixel_config:
            sys.exit(f"bench/torch_reference.py: --model {a.model} needs --pixel-config JSON (lmpipe's config)")
        pcfg = json.loads(a.pixel_config)
        pcfg["model"] = a.model
        model = PixelModel(pcfg, use_sdpa).to(device)
        a.vocab, a.context = pcfg["vocabSize"], pcfg["contextLength"]
    params = sum(p.numel() for p in model.parameters())  # the tied head is wte, counted once
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    scaler = torch.cuda.amp.GradScaler() if a.precision == "fp16" else None
    gen = torch.Generator().manual_seed(a.seed + 1)
    B, T = a.batch, a.context

    def step():
        data = torch.randint(0, min(SAMPLED_VOCAB, a.vocab), (B, T + 1), generator=gen)
        x, y = data[:, :-1].to(device), data[:, 1:].to(device)
        if amp_dtype is None:
            loss = model(x, y)
        else:
            with torch.autocast(device_type=device, dtype=amp_dtype):
                loss = model(x, y)
        # nanoGPT train.py's order: backward, clip, step, then zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # the one host read per step, as lmpipe's loop (also syncs CUDA)

    warm_up_blas = torch.ones(8, 8) @ torch.ones(8, 8)  # loads the BLAS library before it is named
    blas = blas_library()
    if blas.startswith("reference"):
        log(f"WARNING: PyTorch runs on the netlib {blas}, ~10x slower than OpenBLAS; on Debian: "
            "apt-get install -y --no-install-recommends libopenblas0-openmp")
    del warm_up_blas
    log(f"{device}, {torch.get_num_threads()} thread(s), {a.precision}: {a.warmup_steps} + {a.steps} steps "
        f"of {B} x {T} tokens, {params / 1e6:.2f}M parameters; BLAS {blas} (kernel {openblas_corename()}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}), malloc {malloc_settings()}")
    for _ in range(a.warmup_steps):
        step()
    times, losses = [], []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times)
    out = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": a.precision,
        "attention": "sdpa" if use_sdpa else "manual",
        "blas": blas,
        "blas_core": openblas_corename(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset"),
        "malloc": malloc_settings(),
        "model": a.model,
        "config": {"n_layer": a.n_layer, "n_head": a.n_head, "n_embd": a.n_embd, "context": T,
                   "vocab": a.vocab, "bias": not a.no_bias, "batch": B},
        "params": params,
        "warmup_steps": a.warmup_steps,
        "steps": a.steps,
        "ms_per_step": round(ms, 2),  # the median of the timed steps
        "ms_per_step_min": round(min(times), 2),
        "ms_per_step_mean": round(sum(times) / len(times), 2),
        "tokens_per_s": round(B * T * 1000 / ms, 1),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }
    print(json.dumps(out), flush=True)
    if a.profile > 0:
        with torch.autograd.profiler.profile(record_shapes=True) as prof:
            step()
        table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=a.profile)
        print(table, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
