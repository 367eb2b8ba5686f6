#!/usr/bin/env python3
# A PyTorch yardstick for lmpipe's training speed (issues 5 and 13): the same model shapes as
# lib/models/gpt.ts (GPT-2 as nanoGPT builds it: token + learned position embeddings, pre-LayerNorm
# blocks with causal multi-head attention and a 4x GELU MLP, final LayerNorm, head tied to the token
# embedding, no dropout, GPT-2 initialisation) and lib/models/pixel.ts (the three image models, class
# PixelModel), trained with the same step as lib/train_loop.ts (AdamW betas 0.9/0.95, weight decay 0.1 on
# matrices and embeddings only, gradient clipping by global norm 1.0, one loss read per step) on uniformly
# random token batches, on the CPU or CUDA (`--device cuda`: the model and batches move with .to(device),
# nothing else changes), fp32 or autocast bf16/fp16. Used only for measurement, by `deno run -A
# bench/train.ts --vs-torch` and bench/gpu/run_all.sh; never by the CI tests (CI has no PyTorch).
# With --lmpipe-config (bench/gpu/model_config.ts's output) the model is built from lmpipe's own config and
# the run stops unless its parameter count equals lmpipe's.
#
# Prints one JSON line per precision on stdout (tokens/s, median ms/step, the first step apart, peak CUDA
# memory, parameter count, configuration, the BLAS library and the OpenBLAS kernel it dispatched,
# OPENBLAS_CORETYPE); progress on stderr.
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
    """The 4x MLP: c_proj(gelu(c_fc(x))), GELU's tanh approximation or its exact erf form (config "gelu")."""

    def __init__(self, c, bias, gelu="tanh"):
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c, bias=bias)
        self.c_proj = nn.Linear(4 * c, c, bias=bias)
        self.approximate = "tanh" if gelu == "tanh" else "none"

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, c, heads, bias, use_sdpa, gelu="tanh"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c, elementwise_affine=True)
        self.attn = Attention(c, heads, bias, use_sdpa)
        self.ln_2 = nn.LayerNorm(c, elementwise_affine=True)
        self.mlp = Mlp(c, bias, gelu)
        if not bias:  # LayerNorm without bias (torch 1.13's LayerNorm has no bias=False switch)
            for ln in (self.ln_1, self.ln_2):
                ln.bias = None

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, vocab, context, n_layer, n_head, n_embd, bias, use_sdpa, gelu="tanh"):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(context, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, bias, use_sdpa, gelu) for _ in range(n_layer))
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


class ImageNorm(nn.GroupNorm):
    """cnn.ts's per-image norm: GroupNorm with one group, computed in float32 under autocast (as CUDA's
    autocast does by itself; torch 1.13's CPU autocast would hand it bf16 inputs with float32 weights)."""

    def __init__(self, channels):
        super().__init__(1, channels, eps=1e-5)

    def forward(self, x):
        return F.group_norm(x.float(), 1, self.weight, self.bias, self.eps)


class PixelModel(nn.Module):
    """lmpipe's image models (lib/models/pixel.ts) with a VGG CNN (cnn.ts): embeddings, warm-up GPT blocks,
    the map LayerNorm, each position's image (pixel-cumsum: a running sum of keys times pixel queries;
    pixel-attn / pixel-attn-wide: per-channel causal attention over value images), the CNN on every image
    on its own (3x3 convs, each followed by a per-image norm over H, W and C with a per-channel scale and
    shift, i.e. GroupNorm with one group, and ReLU), global average pooling, ln_f and an untied head.
    The `study` preset's differences from the study's code are followed too: no map or final LayerNorm
    (map_norm, final_norm false), a head bias (head_bias), a bias on the map projection (map_bias), and for
    pixel-cumsum softmax images (mapping "softmax") shared over a window of two positions (mix "window")."""

    def __init__(self, cfg, use_sdpa):
        super().__init__()
        self.cfg = cfg
        d, C, dk, S, V, T = cfg["nEmbd"], cfg["channels"], cfg["keyDim"], cfg["imageSize"], cfg["vocabSize"], cfg["contextLength"]
        bias = bool(cfg.get("bias", False))
        map_bias = bool(cfg.get("map_bias", False))
        self.model = cfg["model"]
        self.mapping, self.mix = cfg.get("mapping", "dot"), cfg.get("mix", "cumsum")
        self.running_mean = cfg.get("runningSum", "sum") == "mean"
        self.wte = nn.Embedding(V, d)
        self.wpe = nn.Embedding(T, d)
        gelu = cfg.get("gelu", "tanh")
        self.blocks = nn.ModuleList(Block(d, cfg["nHead"], bias, use_sdpa, gelu) for _ in range(cfg["nWarmup"]))
        self.map_ln = nn.LayerNorm(d) if cfg.get("map_norm", True) else None
        if self.map_ln is not None and not bias:
            self.map_ln.bias = None
        if self.model == "pixel-cumsum":
            self.key = nn.Linear(d, C * dk, bias=map_bias)
            self.query = nn.Parameter(torch.randn(C, dk, S * S) * 0.02)
        else:
            self.q = nn.Linear(d, C * dk, bias=False)
            self.k = nn.Linear(d, C * dk, bias=False)
            self.value = nn.Parameter(torch.randn(C, d, S * S) * 0.02)
            self.value_bias = nn.Parameter(torch.zeros(C, S * S)) if bias or map_bias else None
        if cfg["cnn"] not in ("vgg9", "vgg-wide"):
            sys.exit(f"bench/torch_reference.py: cnn '{cfg['cnn']}' has no PyTorch reference here (vgg9, vgg-wide)")
        if cfg.get("cnnNorm", "image") != "image":
            sys.exit("bench/torch_reference.py: only cnnNorm 'image' has a PyTorch reference here")
        widths = list(cfg.get("cnnWidths") or [])
        if not widths:
            w = cfg["cnnWidth"]
            widths = [w] * (cfg["cnnDepth"] or 9) if cfg["cnn"] == "vgg9" else [w, w, w, w, 2 * w, 2 * w, 2 * w, 2 * w, 2 * w, 2 * w, 4 * w]
        layers, in_c = [], C
        for out_c in widths:
            layers += [nn.Conv2d(in_c, out_c, 3, padding=1, bias=False), ImageNorm(out_c), nn.ReLU()]
            in_c = out_c
        self.cnn = nn.Sequential(*layers)
        self.ln_f = nn.LayerNorm(in_c) if cfg.get("final_norm", True) else None
        if self.ln_f is not None and not bias:
            self.ln_f.bias = None
        self.lm_head = nn.Linear(in_c, V, bias=bool(cfg.get("head_bias", False)))
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2 and not name.startswith("cnn."):
                nn.init.normal_(p, 0.0, 0.02)

    def shared_over_positions(self, own):
        """mix: a running sum (or mean) over positions, or a window of this position and the previous one."""
        if self.mix == "window":
            return own + F.pad(own, (0, 0) * (own.dim() - 2) + (1, 0))[:, :-1]
        sums = torch.cumsum(own, dim=1)
        if self.running_mean:
            t = sums.shape[1]
            sums = sums / torch.arange(1, t + 1, device=sums.device, dtype=sums.dtype).view(1, t, *[1] * (own.dim() - 2))
        return sums

    def images(self, hn):
        c = self.cfg
        B, T, d = hn.shape
        C, dk, S = c["channels"], c["keyDim"], c["imageSize"]
        if self.model == "pixel-cumsum":
            k = self.key(hn).view(B, T, C, dk)
            if self.mapping == "softmax":  # each token's images, then shared (not linear)
                own = S * F.softmax(torch.einsum("btck,ckp->btcp", k, self.query) / math.sqrt(dk), dim=-1)
                imgs = self.shared_over_positions(own)
            else:  # linear: share the keys, then one product per position
                imgs = torch.einsum("btck,ckp->btcp", self.shared_over_positions(k), self.query)
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
        feats = self.cnn(self.images(x if self.map_ln is None else self.map_ln(x))).mean(dim=(2, 3))
        logits = self.lm_head(feats if self.ln_f is None else self.ln_f(feats))
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


# The block options (lib/models/variants.ts) this replica builds: GPT-2's, with either GELU.
GPT2_BLOCK = {"norm": "layernorm", "mlp": "gelu", "pos": "learned", "qkv": "fused", "qkv_act": "none",
              "attn_extra": "none", "kv_heads": 0}


def lmpipe_config(path, model, preset):
    """The line of `path` (JSON lines of bench/gpu/model_config.ts) for `model` and `preset`: its config and
    lmpipe's parameter count. Stops with a message when the file, the line or a block option is missing."""
    where = f"bench/torch_reference.py: --lmpipe-config {path}"
    try:
        with open(path) as f:
            lines = [json.loads(x) for x in f if x.strip().startswith("{")]
    except (OSError, json.JSONDecodeError) as err:
        sys.exit(f"{where}: cannot read it ({err}); write it with bench/gpu/model_config.ts")
    found = [x for x in lines if x.get("model") == model and x.get("preset") == preset]
    if not found:
        have = ", ".join(f"{x.get('model')}/{x.get('preset')}" for x in lines) or "none"
        sys.exit(f"{where}: no line for {model}/{preset} (it has {have}); write it again with bash bench/gpu/prepare.sh, or deno run -A bench/gpu/model_config.ts --models M --presets P > FILE")
    cfg = found[0]["config"]
    for k, want in GPT2_BLOCK.items():
        if cfg.get(k, want) != want:
            sys.exit(f"{where}: {model}/{preset} has {k} {cfg[k]!r}; this replica builds GPT-2's block ({k} {want!r}) only")
    if model == "gpt" and cfg.get("tie", True) is not True:
        sys.exit(f"{where}: {model}/{preset} has an untied head; this replica ties it to the token embedding")
    return cfg, found[0]["params"]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/torch_reference.py",
        description="Times training steps of lmpipe's models in PyTorch (a yardstick for bench/train.ts --vs-torch "
        "and bench/gpu/run_all.sh).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  /usr/bin/python3 bench/torch_reference.py --preset tiny --steps 3 --threads 1\n"
        "  /usr/bin/python3 bench/torch_reference.py --n-layer 4 --n-head 4 --n-embd 128 --context 128 --batch 8 \\\n"
        "      --threads 2 --precision bf16\n"
        "  python3 bench/torch_reference.py --lmpipe-config OUT/model_config.jsonl --model pixel-attn --preset small \\\n"
        "      --device cuda --precision fp32,bf16 --batch 4",
    )
    ap.add_argument("--preset", default="tiny",
                    help=f"base shapes: {', '.join(sorted(PRESETS))} (default tiny), or any preset of --lmpipe-config")
    ap.add_argument("--model", default="gpt", choices=["gpt", "pixel-cumsum", "pixel-attn", "pixel-attn-wide"],
                    help="gpt (default), or an image model given by --pixel-config or --lmpipe-config")
    ap.add_argument("--pixel-config", help="an image model's lmpipe config as JSON (its run's config.json)")
    ap.add_argument("--lmpipe-config", metavar="FILE",
                    help="JSON lines of bench/gpu/model_config.ts: build --model at --preset from lmpipe's own config "
                    "and stop unless the parameter count equals lmpipe's")
    ap.add_argument("--params-only", action="store_true",
                    help="build the model, check its parameter count (against --lmpipe-config's), print it, and stop")
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--n-head", type=int)
    ap.add_argument("--n-embd", type=int)
    ap.add_argument("--context", type=int, help="context length T")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--no-bias", action="store_true", help="no biases in linears and LayerNorms")
    ap.add_argument("--gelu", choices=["tanh", "exact"], default="tanh", help="gpt's GELU (default tanh)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (default 2, as bench/train.ts)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's own)")
    ap.add_argument("--precision", default="fp32",
                    help="fp32, or autocast: bf16 (CPU or CUDA), fp16 (CUDA only, with a GradScaler); a comma list "
                    "(fp32,bf16) measures each in turn on a fresh model, one JSON line each")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="auto = cuda when available")
    ap.add_argument("--mode", choices=["train", "eval"], default="train",
                    help="train: nanoGPT's training step; eval: the loss of one batch under no_grad, as "
                         "nanoGPT's estimate_loss (default train)")
    ap.add_argument("--no-cuda", choices=["error", "skip", "cpu"], default="error",
                    help="--device cuda without a CUDA device: stop with a message (default), print one JSON line "
                    "saying why and exit 0 (skip), or run on the CPU and say so in the JSON (cpu)")
    ap.add_argument("--tf32", choices=["off", "on"], default="off",
                    help="CUDA fp32 matMuls and convs in TF32 (default off: real fp32, as lmpipe's fp32)")
    ap.add_argument("--attention", choices=["auto", "manual", "sdpa"], default="auto",
                    help="sdpa = F.scaled_dot_product_attention (torch >= 2.0); auto uses it when present")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, profile one step and print its N most costly ops (self CPU time) on stderr")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    a.precisions = a.precision.split(",")
    for p in a.precisions:
        if p not in ("fp32", "bf16", "fp16"):
            ap.error(f"--precision: '{p}' is none of fp32, bf16, fp16")
    a.expect_params, a.config = None, None
    if a.lmpipe_config:
        a.config, a.expect_params = lmpipe_config(a.lmpipe_config, a.model, a.preset)
        if a.model == "gpt":
            c = a.config
            a.n_layer, a.n_head, a.n_embd = c["nLayer"], c["nHead"], c["nEmbd"]
            a.context, a.vocab, a.no_bias, a.gelu = c["contextLength"], c["vocabSize"], not c["bias"], c.get("gelu", "tanh")
    elif a.pixel_config:
        a.config = json.loads(a.pixel_config)
        a.preset = a.config.get("preset", a.preset)  # the label: the config's own preset, not --preset's default
    if a.model != "gpt" and a.config:  # the image models' warm-up blocks, for the JSON line's "config"
        c = a.config
        for k, v in (("n_layer", c["nWarmup"]), ("n_head", c["nHead"]), ("n_embd", c["nEmbd"]),
                     ("context", c["contextLength"])):
            if getattr(a, k) is None:
                setattr(a, k, v)
        a.vocab, a.no_bias = c["vocabSize"], not c.get("bias", False)
    if not a.config and a.preset not in PRESETS:
        ap.error(f"--preset {a.preset}: use one of {', '.join(sorted(PRESETS))}, or --lmpipe-config for lmpipe's presets")
    for k, v in PRESETS.get(a.preset, {}).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in ("n_layer", "n_head", "n_embd", "context", "vocab", "batch", "steps"):
        if getattr(a, k) is None or getattr(a, k) < 1:
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
    if a.params_only:
        model = build_model(a, False)
        print(json.dumps({"bench": "torch_params", "model": a.model, "preset": a.preset,
                          "params": sum(p.numel() for p in model.parameters()), "params_lmpipe": a.expect_params}))
        return
    cuda = torch.cuda.is_available()
    note = None
    if a.device == "cuda" and not cuda:
        why = f"this PyTorch sees no CUDA device (torch {torch.__version__}, built with CUDA {torch.version.cuda})"
        if a.no_cuda == "error":
            sys.exit(f"bench/torch_reference.py: --device cuda: {why}; use --device cpu")
        if a.no_cuda == "skip":
            for p in a.precisions:
                print(json.dumps({"bench": "torch_train", "impl": "pytorch", "model": a.model, "preset": a.preset,
                                  "precision": p, "skipped": why}), flush=True)
            log(f"skipped: {why}")
            return
        note = f"ran on the CPU: {why}"
        log(note)
    device = "cuda" if cuda and a.device in ("cuda", "auto") else "cpu"
    if "fp16" in a.precisions and device != "cuda":
        sys.exit("bench/torch_reference.py: --precision fp16 needs CUDA (CPU autocast is bf16): use --precision bf16")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = a.tf32 == "on"
        torch.backends.cudnn.allow_tf32 = a.tf32 == "on"
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    if a.attention == "sdpa" and not has_sdpa:
        sys.exit(f"bench/torch_reference.py: --attention sdpa needs torch >= 2.0 (this is {torch.__version__})")
    use_sdpa = a.attention == "sdpa" or (a.attention == "auto" and has_sdpa)
    for precision in a.precisions:
        measure(a, precision, device, use_sdpa, note)


def sync(device):
    """Waits for the GPU's queued work (CUDA runs asynchronously); nothing to wait for on the CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


def build_model(a, use_sdpa):
    """The model of `a` on the CPU, seeded; stops when --lmpipe-config's parameter count differs."""
    torch.manual_seed(a.seed)
    if a.model == "gpt":
        model = Gpt(a.vocab, a.context, a.n_layer, a.n_head, a.n_embd, not a.no_bias, use_sdpa, a.gelu)
    else:
        if not a.config:
            sys.exit(f"bench/torch_reference.py: --model {a.model} needs --pixel-config JSON or --lmpipe-config")
        pcfg = dict(a.config, model=a.model)
        model = PixelModel(pcfg, use_sdpa)
        a.vocab, a.context = pcfg["vocabSize"], pcfg["contextLength"]
    params = sum(p.numel() for p in model.parameters())  # the tied head is wte, counted once
    if a.expect_params is not None and params != a.expect_params:
        sys.exit(f"bench/torch_reference.py: PyTorch's {a.model}/{a.preset} has {params} parameters, lmpipe's "
                 f"{a.expect_params}: not the same model; bring PixelModel/Gpt here in line with lib/models/")
    return model


def measure(a, precision, device, use_sdpa, note):
    """Builds a fresh model (same seed), trains warm-up + timed steps in `precision` and prints one JSON line."""
    model = build_model(a, use_sdpa)
    params = sum(p.numel() for p in model.parameters())  # the tied head is wte, counted once
    model = model.to(device)  # the one place the device enters, with the batches' .to(device) in step()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.cuda.amp.GradScaler() if precision == "fp16" else None
    gen = torch.Generator().manual_seed(a.seed + 1)
    B, T = a.batch, a.context

    def step():
        data = torch.randint(0, min(SAMPLED_VOCAB, a.vocab), (B, T + 1), generator=gen)
        x, y = data[:, :-1].to(device), data[:, 1:].to(device)
        if a.mode == "eval":
            with torch.no_grad():
                if amp_dtype is None:
                    loss = model(x, y)
                else:
                    with torch.autocast(device_type=device, dtype=amp_dtype):
                        loss = model(x, y)
            return loss.item()
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
        return loss.item()  # the one host read per step, as lmpipe's loop

    def timed_step():
        sync(device)
        t0 = time.perf_counter()
        loss = step()
        sync(device)
        return loss, (time.perf_counter() - t0) * 1000

    warm_up_blas = torch.ones(8, 8) @ torch.ones(8, 8)  # loads the BLAS library before it is named
    blas = blas_library()
    if blas.startswith("reference"):
        log(f"WARNING: PyTorch runs on the netlib {blas}, ~10x slower than OpenBLAS; on Debian: "
            "apt-get install -y --no-install-recommends libopenblas0-openmp")
    del warm_up_blas
    log(f"{a.model}/{a.preset} on {device}, {torch.get_num_threads()} thread(s), {precision}: {a.warmup_steps} + "
        f"{a.steps} steps of {B} x {T} tokens, {params / 1e6:.2f}M parameters; BLAS {blas} (kernel "
        f"{openblas_corename()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}), malloc "
        f"{malloc_settings()}")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first_ms = None
    for i in range(a.warmup_steps):
        _, ms = timed_step()
        if i == 0:
            first_ms = ms  # CUDA context, cuBLAS/cuDNN handles and kernel choice: apart from the step time
    times, losses = [], []
    for _ in range(a.steps):
        loss, ms = timed_step()
        losses.append(loss)
        times.append(ms)
    ms = statistics.median(times)
    out = {
        "bench": "torch_train",
        "impl": "pytorch",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": precision,
        "tf32": a.tf32 == "on" if device == "cuda" else None,
        "attention": "sdpa" if use_sdpa else "manual",
        "blas": blas,
        "blas_core": openblas_corename(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset"),
        "malloc": malloc_settings(),
        "model": a.model,
        "preset": a.preset,
        "config": {"n_layer": a.n_layer, "n_head": a.n_head, "n_embd": a.n_embd, "context": T,
                   "vocab": a.vocab, "bias": not a.no_bias, "batch": B},
        "params": params,
        "params_lmpipe": a.expect_params,
        "warmup_steps": a.warmup_steps,
        "steps": a.steps,
        "first_step_ms": None if first_ms is None else round(first_ms, 1),
        "ms_per_step": round(ms, 2),  # the median of the timed steps
        "ms_per_step_min": round(min(times), 2),
        "ms_per_step_mean": round(sum(times) / len(times), 2),
        "tokens_per_s": round(B * T * 1000 / ms, 1),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }
    if note:
        out["note"] = note
    print(json.dumps(out), flush=True)
    if a.profile > 0:
        with torch.autograd.profiler.profile(record_shapes=True) as prof:
            step()
        table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=a.profile)
        print(table, file=sys.stderr, flush=True)
    del model, opt
    if device == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
