#!/usr/bin/env python3
# Parameter counts of the study's networks as PyTorch builds them, the yardstick for lmpipe's counts
# (tests/cnn_test.ts hard-codes what this prints; docs/pixel.md tables them side by side with lmpipe's).
# The study's published code (github FIRCALiviu/nanoGPT) is rebuilt here class by class with the same
# layers in the same order: Resnet3 and ResidualBlock (model_resnet.py), the nanoGPT Block it uses with
# bias=False (mirrornet.py / model_shotnet.py), the image mappings CausalReflection (mirrornet.py, idea 2)
# and Shot (model_shotnet.py, idea 1), and the whole ShotNet and MirrorNet. The VGGs have no code in the
# repository (the write-up says they were edited on the compute node and never committed), so they are
# built from the write-up's description in PyTorch's defaults (Conv2d with bias, BatchNorm2d after each
# conv, Linear head with bias); counts of those are the write-up's networks, not published code. The
# control GPT is nanoGPT's (12 layers, 768 wide, head tied), with bias=False as the study ran it and with
# bias=True as GPT-2.
#
# With --study-repo DIR (a checkout of the study's repository), the study's own classes are imported
# from DIR too and every count is checked against the rebuild (a mismatch exits 1).
#
#   /usr/bin/python3 bench/torch_resnet3_count.py [--study-repo DIR]
# Prints one JSON object on stdout. Used for reference only; no lmpipe test needs PyTorch.
import argparse
import contextlib
import json
import sys

import torch
import torch.nn as nn

VOCAB = 50304


class ResidualBlock(nn.Module):
    """model_resnet.py's ResidualBlock: stride 2 and a 1x1 stride-2 shortcut when the width changes."""

    def __init__(self, inchan, outchan):
        super().__init__()
        augment = inchan != outchan
        stride = 2 if augment else 1
        self.conv1 = nn.Conv2d(inchan, outchan, 3, padding=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(outchan)
        self.conv2 = nn.Conv2d(outchan, outchan, 3, padding=1, stride=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outchan)
        self.skip = nn.Sequential()
        if augment:
            self.skip = nn.Sequential(
                nn.Conv2d(inchan, outchan, kernel_size=1, stride=2, bias=False), nn.BatchNorm2d(outchan)
            )
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        h = self.relu1(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu2(self.skip(x) + h)


class Resnet3(nn.Module):
    """model_resnet.py's Resnet3: unpadded 3x3 stem with bias, 3 stages of 4 blocks, GAP, Linear head."""

    def __init__(self, inchan, vec_len):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(inchan, 64, 3), nn.BatchNorm2d(64))
        self.block1 = nn.Sequential(
            ResidualBlock(64, 64), ResidualBlock(64, 64), ResidualBlock(64, 64), ResidualBlock(64, 128)
        )
        self.block2 = nn.Sequential(
            ResidualBlock(128, 128), ResidualBlock(128, 128), ResidualBlock(128, 128), ResidualBlock(128, 512)
        )
        self.block3 = nn.Sequential(
            ResidualBlock(512, 512), ResidualBlock(512, 512), ResidualBlock(512, 512), ResidualBlock(512, 2**10)
        )
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(1024, vec_len)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def vgg(widths, inchan, vec_len):
    """The write-up's VGGs (no published code): 3x3 'same' convs with bias, BatchNorm, ReLU; GAP; Linear."""
    layers, c = [], inchan
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    return nn.ModuleDict({"convs": nn.Sequential(*layers), "fc": nn.Linear(c, vec_len)})


VGG9 = [64] * 9
VGG_WIDE = [64, 64, 64, 64, 128, 128, 128, 128, 128, 128, 256]


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm with bias=False: a weight only."""

    def __init__(self, ndim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))


class Block(nn.Module):
    """nanoGPT's Block as the image models build it: n_embd 512, 8 heads, bias=False."""

    def __init__(self, d):
        super().__init__()
        self.ln_1 = LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.attn_proj = nn.Linear(d, d, bias=False)
        self.ln_2 = LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)


class CausalReflection(nn.Module):
    """mirrornet.py's image mapping (idea 2): q/k without bias, one value image per head with bias."""

    def __init__(self, d, heads, width):
        super().__init__()
        self.c_attn = nn.Linear(d, 2 * d, bias=False)
        self.v_proj = nn.Linear(d, heads * width * width)


class Shot(nn.Module):
    """model_shotnet.py's image mapping (idea 1): a learned 128-d vector per pixel, a Linear per token."""

    def __init__(self, chan_word, width=64, pictures=8, n_embd=128):
        super().__init__()
        self.keys = nn.Parameter(
            nn.Linear(width * width * pictures, n_embd, bias=False).weight.reshape(pictures, width * width, n_embd)
        )
        self.query = nn.Linear(chan_word, pictures * n_embd)


def image_model(mapping, d=512, context=1024, vocab=VOCAB):
    """ShotNet / MirrorNet: embeddings, 3 warm-up blocks, the mapping, Resnet3(8, vocab)."""
    return nn.ModuleDict(
        {
            "wpe": nn.Embedding(context, d),
            "wte": nn.Embedding(vocab, d),
            "block1": Block(d),
            "block2": Block(d),
            "block3": Block(d),
            "image_mapping": mapping,
            "resnet": Resnet3(8, vocab),
        }
    )


def nanogpt(n_layer=12, d=768, bias=True, context=1024, vocab=VOCAB):
    """nanoGPT's GPT (model.py) as the study's control: head tied to wte (counted once)."""

    class NanoBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d, elementwise_affine=True) if bias else LayerNorm(d)
            self.c_attn = nn.Linear(d, 3 * d, bias=bias)
            self.attn_proj = nn.Linear(d, d, bias=bias)
            self.ln_2 = nn.LayerNorm(d) if bias else LayerNorm(d)
            self.c_fc = nn.Linear(d, 4 * d, bias=bias)
            self.mlp_proj = nn.Linear(4 * d, d, bias=bias)

    return nn.ModuleDict(
        {
            "wte": nn.Embedding(vocab, d),
            "wpe": nn.Embedding(context, d),
            "h": nn.Sequential(*[NanoBlock() for _ in range(n_layer)]),
            "ln_f": nn.LayerNorm(d) if bias else LayerNorm(d),
        }
    )


def count(m):
    return sum(p.numel() for p in m.parameters())


def bn_count(m):
    return sum(count(x) for x in m.modules() if isinstance(x, nn.BatchNorm2d))


def resnet3_counts(r):
    """Resnet3's counts: total, per child, the CNN without its head, BatchNorm parameters."""
    children = {n: count(c) for n, c in r.named_children()}
    return {
        "total": count(r),
        "by_child": children,
        "cnn_without_fc": count(r) - children["fc"],
        "batchnorm": bn_count(r),
    }


def by_module(model):
    """An image model's counts grouped as lmpipe's `train --dry-run` groups them."""
    r = model["resnet"]
    return {
        "transformer": sum(count(model[k]) for k in ["wte", "wpe", "block1", "block2", "block3"]),
        "map": count(model["image_mapping"]),
        "cnn": count(r) - count(r.fc),
        "lm_head": count(r.fc),
    }


def check_against_repo(repo, out):
    """Imports the study's own classes from `repo` and compares their counts with the rebuild."""
    sys.path.insert(0, repo)
    # the study's modules print warnings on stdout; keep stdout for the JSON
    with contextlib.redirect_stdout(sys.stderr):
        import model_resnet  # the study's code
        import mirrornet
        import model_shotnet

        theirs = {
            "resnet3": count(model_resnet.Resnet3(8, VOCAB)),
            "mirrornet": count(mirrornet.MirrorNet()),
            "shotnet": count(model_shotnet.ShotNet()),
        }
    ours = {"resnet3": out["resnet3"]["total"], "mirrornet": out["mirrornet"]["total"], "shotnet": out["shotnet"]["total"]}
    return theirs, theirs == ours


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study-repo", help="a checkout of the study's repository: check the rebuild against it")
    a = ap.parse_args()
    torch.manual_seed(0)
    out = {"torch": torch.__version__, "vocab": VOCAB}
    out["resnet3"] = resnet3_counts(Resnet3(8, VOCAB))
    for name, widths in [("vgg9", VGG9), ("vgg_wide", VGG_WIDE)]:
        v = vgg(widths, 8, VOCAB)
        out[name] = {
            "total": count(v),
            "cnn_without_fc": count(v["convs"]),
            "fc": count(v["fc"]),
            "batchnorm": bn_count(v),
            "source": "the write-up's description (no published code)",
        }
    for name, mapping in [("shotnet", Shot(512, 20, 8)), ("mirrornet", CausalReflection(512, 8, 20))]:
        m = image_model(mapping)
        out[name] = {"total": count(m), "by_module": by_module(m)}
    for name, bias in [("gpt_control_bias_false", False), ("gpt2_bias_true", True)]:
        out[name] = {"total": count(nanogpt(bias=bias)), "source": "nanoGPT's GPT, 12 x 768, head tied"}
    if a.study_repo:
        theirs, same = check_against_repo(a.study_repo, out)
        out["study_repo_check"] = {"counts": theirs, "equal": same}
        if not same:
            print(json.dumps(out, indent=1))
            sys.exit(1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
