// A literal float64 forward pass of the gpt/llama families with every architecture option, written as
// plain loops straight from the definitions in docs/variants.md (nothing shared with lib/ except the
// parameter names), for tests/variants_test.ts to compare the TF.js model against.

/** A parameter as plain numbers, row-major, with its shape. */
export interface RefTensor {
  data: Float64Array;
  shape: number[];
}

/** The config fields the reference reads (a GptConfig with every option present). */
export interface RefConfig {
  vocabSize: number;
  nLayer: number;
  nHead: number;
  nEmbd: number;
  bias: boolean;
  tie: boolean;
  norm: string;
  mlp: string;
  pos: string;
  qkv: string;
  qkv_act: string;
  attn_extra: string;
  kv_heads: number;
}

type Vec = Float64Array;

const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
const silu = (x: number) => x / (1 + Math.exp(-x));

/** x [in] @ W [in, out] + b [out] */
function matVec(x: Vec, w: RefTensor, b?: RefTensor): Vec {
  const [n, m] = w.shape;
  const y = new Float64Array(m);
  for (let j = 0; j < m; j++) {
    let s = b ? b.data[j] : 0;
    for (let i = 0; i < n; i++) s += x[i] * w.data[i * m + j];
    y[j] = s;
  }
  return y;
}

function norm(kind: string, x: Vec, w: RefTensor, b?: RefTensor): Vec {
  const C = x.length, eps = 1e-5;
  let mean = 0;
  if (kind === "layernorm") { for (const v of x) mean += v / C; }
  let sq = 0;
  for (const v of x) sq += (v - mean) ** 2 / C; // the variance, or (rmsnorm) the mean square
  const y = new Float64Array(C);
  for (let i = 0; i < C; i++) y[i] = ((x[i] - mean) / Math.sqrt(sq + eps)) * w.data[i] + (b ? b.data[i] : 0);
  return y;
}

/** Turns each pair (2i, 2i+1) of the head vector x by the angle pos · 10000^(-2i/D). */
function rotate(x: Vec, pos: number): Vec {
  const D = x.length, y = new Float64Array(D);
  for (let i = 0; i < D / 2; i++) {
    const a = pos * 10000 ** (-2 * i / D), c = Math.cos(a), s = Math.sin(a);
    y[2 * i] = x[2 * i] * c - x[2 * i + 1] * s;
    y[2 * i + 1] = x[2 * i] * s + x[2 * i + 1] * c;
  }
  return y;
}

/** Logits [T][V] of one sequence of tokens. ALiBi slopes as Press et al. for a power-of-two nHead. */
export function referenceLogits(c: RefConfig, p: Map<string, RefTensor>, tokens: number[]): number[][] {
  const get = (n: string) => {
    const t = p.get(n);
    if (!t) throw new Error(`reference: no parameter ${n}`);
    return t;
  };
  const T = tokens.length, C = c.nEmbd, H = c.nHead, D = C / H;
  const kvH = c.kv_heads || H, kvC = kvH * D, group = H / kvH;
  const wte = get("transformer.wte.weight");
  let x: Vec[] = tokens.map((tok, t) => {
    const v = new Float64Array(C);
    for (let i = 0; i < C; i++) {
      v[i] = wte.data[tok * C + i];
      if (c.pos === "learned") v[i] += get("transformer.wpe.weight").data[t * C + i];
      if (c.pos === "sinusoidal") {
        const a = t / 10000 ** ((i - (i % 2)) / C);
        v[i] += 0.02 * (i % 2 === 0 ? Math.sin(a) : Math.cos(a)); // the table scaled to GPT-2's init std
      }
    }
    return v;
  });
  for (let l = 0; l < c.nLayer; l++) {
    const pre = `transformer.h.${l}.`;
    const w = (n: string) => get(pre + n);
    const b = (n: string) => p.get(pre + n);
    const a = x.map((v) => norm(c.norm, v, w("ln_1.weight"), b("ln_1.bias")));
    const act = (v: Vec) => c.qkv_act === "gelu" ? v.map(geluTanh) : v;
    const q: Vec[] = [], k: Vec[] = [], val: Vec[] = [];
    for (const row of a) {
      if (c.qkv === "fused") {
        const y = act(matVec(row, w("attn.c_attn.weight"), b("attn.c_attn.bias")));
        q.push(y.slice(0, C)), k.push(y.slice(C, C + kvC)), val.push(y.slice(C + kvC));
      } else {
        q.push(act(matVec(row, w("attn.c_q.weight"), b("attn.c_q.bias"))));
        k.push(act(matVec(row, w("attn.c_k.weight"), b("attn.c_k.bias"))));
        val.push(act(matVec(row, w("attn.c_v.weight"), b("attn.c_v.bias"))));
      }
    }
    const extra = c.attn_extra === "linear" ? a.map((row) => matVec(row, w("attn.c_extra.weight"))) : null;
    const merged = a.map(() => new Float64Array(C));
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group), slope = 2 ** (-8 * (h + 1) / H);
      const head = (v: Vec, off: number) => v.slice(off * D, (off + 1) * D);
      for (let i = 0; i < T; i++) {
        let qi: Vec = head(q[i], h);
        if (c.pos === "rope") qi = rotate(qi, i);
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let kj: Vec = head(k[j], g);
          if (c.pos === "rope") kj = rotate(kj, j);
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qi[d] * kj[d];
          let score = dot / Math.sqrt(D);
          if (c.pos === "alibi") score -= slope * (i - j);
          if (extra) score += extra[j][h];
          s.push(score);
        }
        const mx = Math.max(...s);
        const e = s.map((v) => Math.exp(v - mx));
        const z = e.reduce((u, v) => u + v, 0);
        for (let j = 0; j <= i; j++) {
          for (let d = 0; d < D; d++) merged[i][h * D + d] += (e[j] / z) * val[j][g * D + d];
        }
      }
    }
    x = x.map((v, t) => {
      const o = matVec(merged[t], w("attn.c_proj.weight"), b("attn.c_proj.bias"));
      return v.map((u, i) => u + o[i]);
    });
    x = x.map((v) => {
      const m = norm(c.norm, v, w("ln_2.weight"), b("ln_2.bias"));
      const hid = matVec(m, w("mlp.c_fc.weight"), b("mlp.c_fc.bias"));
      let inner: Vec;
      if (c.mlp === "gelu") inner = hid.map(geluTanh);
      else {
        const F = hid.length / 2, f = c.mlp === "swiglu" ? silu : geluTanh;
        inner = new Float64Array(F);
        for (let i = 0; i < F; i++) inner[i] = f(hid[i]) * hid[F + i];
      }
      const o = matVec(inner, w("mlp.c_proj.weight"), b("mlp.c_proj.bias"));
      return v.map((u, i) => u + o[i]);
    });
  }
  const head = get(c.tie ? "transformer.wte.weight" : "lm_head.weight");
  return x.map((v) => {
    const h = norm(c.norm, v, get("transformer.ln_f.weight"), p.get("transformer.ln_f.bias"));
    const out: number[] = [];
    for (let tok = 0; tok < c.vocabSize; tok++) {
      let s = 0;
      for (let i = 0; i < C; i++) s += h[i] * head.data[tok * C + i];
      out.push(s);
    }
    return out;
  });
}
