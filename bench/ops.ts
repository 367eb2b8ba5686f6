// Speed of the tensor ops that dominate training, per backend: the numbers behind the choices in
// lib/tensor/ops/matmul/wasm.ts and ops/conv2d/wasm.ts (2-D non-transposed matMuls on wasm, the im2col filter gradient, 2 wasm threads).
// wasm's thread count is fixed when wasm starts, so each configuration runs in its own process.
//
//   deno run -A bench/ops.ts                       # cpu, wasm 1 thread, wasm 2 threads, webgpu if any
//   deno run -A bench/ops.ts --backends wasm:1,wasm:2 --only conv --json
import { parseArgs } from "node:util";
import { getGpuAdapter, initBackend, tf } from "../lib/tensor/backend.ts";

interface OpResult {
  op: string;
  shape: string;
  gflop: number;
  ms: number;
  gflops: number;
}

interface Op {
  name: string;
  shape: string;
  gflop: number;
  /** Builds inputs and returns the function to time (it returns a tensor to wait for). */
  setup: () => { run: () => tf.Tensor; inputs: tf.Tensor[] };
}

const r = (shape: number[]) => tf.randomNormal(shape, 0, 1, "float32", 1);

function matMulOp(name: string, m: number, k: number, n: number, tA: boolean, tB: boolean, batch = 0): Op {
  const shA = tA ? [k, m] : [m, k], shB = tB ? [n, k] : [k, n];
  const bs = batch ? [batch] : [];
  return {
    name,
    shape: `${batch ? batch + "x" : ""}${m}x${k} @ ${k}x${n}${tA ? " tA" : ""}${tB ? " tB" : ""}`,
    gflop: (2 * m * k * n * Math.max(1, batch)) / 1e9,
    setup: () => {
      const a = r([...bs, ...shA]), b = r([...bs, ...shB]);
      return { run: () => tf.matMul(a, b, tA, tB), inputs: [a, b] };
    },
  };
}

function convOps(b: number, hw: number, ci: number, co: number): Op[] {
  const gflop = (2 * b * hw * hw * ci * co * 9) / 1e9;
  const shape = `${b}x${hw}x${hw}x${ci} * 3x3x${ci}x${co}`;
  const mk = () => ({
    x: r([b, hw, hw, ci]) as tf.Tensor4D,
    w: r([3, 3, ci, co]) as tf.Tensor4D,
    dy: r([b, hw, hw, co]) as tf.Tensor4D,
  });
  return [
    {
      name: "conv2d forward",
      shape,
      gflop,
      setup: () => {
        const { x, w, dy } = mk();
        return { run: () => tf.conv2d(x, w, 1, "same"), inputs: [x, w, dy] };
      },
    },
    {
      name: "conv2d input grad",
      shape,
      gflop,
      setup: () => {
        const { x, w, dy } = mk();
        return { run: () => tf.conv2dTranspose(dy, w, x.shape, 1, "same"), inputs: [x, w, dy] };
      },
    },
    {
      name: "conv2d filter grad",
      shape,
      gflop,
      setup: () => {
        const { x, w, dy } = mk();
        const attrs = { strides: 1, pad: "same", dataFormat: "NHWC", filterShape: w.shape };
        const kernel = () =>
          tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, attrs as unknown as tf.NamedAttrMap);
        return { run: () => kernel() as tf.Tensor, inputs: [x, w, dy] };
      },
    },
  ];
}

const OPS: Op[] = [
  matMulOp("matMul 2-D", 1024, 1024, 1024, false, false),
  matMulOp("matMul 2-D transposeA", 1024, 1024, 1024, true, false),
  matMulOp("matMul 2-D transposeB", 1024, 1024, 1024, false, true),
  matMulOp("matMul batched (attention)", 128, 64, 128, false, true, 16),
  matMulOp("tied head chunk", 256, 128, 50304, false, false),
  ...convOps(16, 32, 64, 64),
];

async function timeOp(op: Op, minSeconds: number): Promise<OpResult> {
  const { run, inputs } = op.setup();
  const sync = async (t: tf.Tensor) => {
    const one = tf.slice(tf.reshape(t, [-1]), 0, 1);
    await one.data();
    tf.dispose([t, one]);
  };
  await sync(run()); // warm-up: shader compilation, first allocations
  let n = 0;
  const t0 = performance.now();
  while (n < 1 || (performance.now() - t0 < minSeconds * 1000 && n < 20)) {
    await sync(tf.tidy(run));
    n++;
  }
  const ms = (performance.now() - t0) / n;
  tf.dispose(inputs);
  return { op: op.name, shape: op.shape, gflop: op.gflop, ms, gflops: op.gflop / (ms / 1000) };
}

async function child(backend: string, threads: number, minSeconds: number): Promise<void> {
  const info = await initBackend(backend as "wasm", { threads, quiet: true });
  const results: OpResult[] = [];
  for (const op of OPS) {
    results.push(await timeOp(op, backend === "cpu" ? 0 : minSeconds));
  }
  console.log(JSON.stringify({ backend, threads: info.threads, device: info.device, results }));
}

const HELP = `deno run -A bench/ops.ts [flags]

  --backends L   configurations, comma-separated: cpu, wasm:THREADS, webgpu
                 (default: cpu,wasm:1,wasm:2 and webgpu when an adapter exists)
  --only S       only the ops whose name contains S (e.g. conv, matMul)
  --seconds N    minimum timed seconds per op (default 1; at most 20 repetitions)
  --json         one JSON array instead of the Markdown table

Example: deno run -A bench/ops.ts --backends wasm:1,wasm:2 --only conv`;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    backends: { type: "string" },
    json: { type: "boolean", default: false },
    seconds: { type: "string", default: "1" },
    child: { type: "string" },
    only: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(HELP);
  Deno.exit(0);
}
const minSeconds = Number(values.seconds);
if (values.only) OPS.splice(0, OPS.length, ...OPS.filter((o) => o.name.includes(values.only!)));
if (values.child) {
  const [b, t] = values.child.split(":");
  await child(b, Number(t ?? 1), minSeconds);
} else {
  const configs = values.backends?.split(",") ??
    ["cpu", "wasm:1", "wasm:2", ...((await getGpuAdapter()) ? ["webgpu"] : [])];
  const rows: { backend: string; threads?: number; device: string; results: OpResult[] }[] = [];
  for (const c of configs) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL(import.meta.url).pathname,
        "--child",
        c,
        "--seconds",
        String(minSeconds),
        ...(values.only ? ["--only", values.only] : []),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`bench/ops.ts: configuration ${c} failed`);
    rows.push(JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!));
  }
  if (values.json) console.log(JSON.stringify(rows));
  else {
    const names = rows.map((r) => `${r.backend}${r.threads ? ` ${r.threads}t` : ""}`);
    console.log(`| op | shape | ${names.join(" | ")} |`);
    console.log(`|---|---|${names.map(() => "---:").join("|")}|`);
    for (const op of OPS) {
      const cells = rows.map((r) => {
        const x = r.results.find((q) => q.op === op.name);
        return x ? `${x.gflops.toFixed(1)}` : "-";
      });
      console.log(`| ${op.name} | ${op.shape} | ${cells.join(" | ")} |`);
    }
    console.log(
      `\nGFLOP/s (higher is better). Devices: ${rows.map((r, i) => `${names[i]} = ${r.device}`).join("; ")}`,
    );
  }
}
