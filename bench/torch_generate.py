#!/usr/bin/env python3
# The anchor of issue 17's sampling target: nanoGPT's own generate() (no key/value cache: every new token
# runs the model over the last `context` tokens and keeps the last position's logits; top-k by torch.topk,
# softmax, multinomial) on bench/torch_reference.py's GPT with the tuned malloc, timed in tokens/s, so that
# `bench/decode.ts` (lmpipe's cached step) can be compared with it on the same machine.
#
#   python3 bench/torch_generate.py --threads 1 --tokens 200 --rounds 3      (issue 17's T shape by default)
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402  (the model, and the tuned malloc it re-executes with)


def parse_args(argv):
    ap = argparse.ArgumentParser(description="nanoGPT's uncached generate(), timed (issue 17's anchor)")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--tokens", type=int, default=200, help="new tokens per round after a one-token prompt")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--top-k", type=int, default=200)
    return ap.parse_args(argv)


@ref.torch.no_grad()
def generate(model, idx, n, context, top_k):
    """nanoGPT's GPT.generate with temperature 1: the model over the cropped window, per new token."""
    F, torch = ref.F, ref.torch
    for _ in range(n):
        cond = idx if idx.size(1) <= context else idx[:, -context:]
        t = cond.shape[1]
        x = model.wte(cond) + model.wpe.weight[:t]
        for blk in model.blocks:
            x = blk(x, model.mask)
        logits = F.linear(model.ln_f(x[:, [-1], :]), model.wte.weight)[:, -1, :]  # nanoGPT: last position only
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("inf")
        idx = torch.cat((idx, torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)), dim=1)
    return idx


def main(argv):
    a = parse_args(argv)
    ref.torch.set_num_threads(a.threads)
    ref.torch.manual_seed(1)
    model = ref.Gpt(a.vocab, a.context, a.n_layer, a.n_head, a.n_embd, True, False).eval()
    start = ref.torch.tensor([[198]])
    generate(model, start, 8, a.context, a.top_k)
    rates = []
    for r in range(a.rounds):
        t0 = time.perf_counter()
        generate(model, start, a.tokens, a.context, a.top_k)
        rates.append(a.tokens / (time.perf_counter() - t0))
        print(f"round {r + 1}: {rates[-1]:.0f} tok/s", flush=True)
    core = ref.openblas_corename()
    print(f"nanoGPT generate, {a.n_layer} layers x {a.n_embd}, context {a.context}, {a.threads} thread(s), "
          f"torch {ref.torch.__version__}, OpenBLAS core {core}, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}: median {statistics.median(rates):.0f} tok/s")


if __name__ == "__main__":
    ref.ensure_tuned_malloc()
    main(sys.argv[1:])
