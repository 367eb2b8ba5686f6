// lmpipe's resolved config and parameter count for each model x preset, one JSON line each, so that
// bench/torch_reference.py --lmpipe-config builds the same model in PyTorch and stops when its parameter
// count differs. Builds each model on the cpu backend (no GPU needed); used by bench/gpu/run_all.sh.
//
//   deno run -A bench/gpu/model_config.ts [--models gpt,pixel-attn] [--presets small,study]
import { parseFlags, str } from "../../lib/flags.ts";
import { initBackend } from "../../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../../lib/models/registry.ts";

const p = parseFlags("bench/gpu/model_config", Deno.args, {
  models: { type: "string" },
  presets: { type: "string" },
});
const models = str(p, "models", "gpt,pixel-cumsum,pixel-attn,pixel-attn-wide").split(",");
const presets = str(p, "presets", "small,study").split(",");
await initBackend("cpu", { quiet: true });
for (const model of models) {
  for (const preset of presets) {
    const config = resolveConfig(model, preset);
    const m = createModel(config, 1);
    console.log(JSON.stringify({ bench: "model_config", model, preset, params: m.paramCount(), config }));
    m.dispose();
  }
}
