// What one run of a study produced: the report's row, written to the run's study_result.json and read by
// the report, the scaling fit and --merge (a file of its own so those modules share it without a circle).

/** What one model's run produced. */
export interface ModelResult {
  /** The model spec as written in --models (e.g. gpt:pos=rope), with ' @ SIZE' under --sizes. */
  model: string;
  /** The model spec alone (absent in reports written before specs existed: then `model`). */
  spec?: string;
  /** The size (a preset, maybe with changes) under --sizes. */
  size?: string;
  /** The --set flags the run trained with (the size's, then the spec's). */
  sets?: string[];
  /** Run folder, relative to the study folder. */
  run_dir: string;
  status: "ok" | "failed" | "skipped";
  error?: string;
  params?: number;
  flops_per_token?: number;
  /** Training FLOPs: flops_per_token x tokens. */
  compute_flops?: number;
  steps?: number;
  tokens?: number;
  /** Mean train loss over the last logged steps (see train_loss_window). */
  train_loss?: number;
  train_loss_window?: number;
  /** Mean cross-entropy over the shared validation tokens, from `lmpipe eval`. */
  val_loss?: number;
  val_tokens?: number;
  tokens_per_s?: number;
  /** Training wall-clock seconds, as logged. */
  elapsed_s?: number;
  /** Peak resident memory of the training process (bytes), where the OS reports it. */
  peak_memory_bytes?: number | null;
  /** Peak bytes the tensor backend held in a step (train's peak_bytes: GPU buffers on webgpu). */
  peak_tensor_bytes?: number;
  /** Whether the run was resumed or reused from an earlier invocation. */
  resumed?: boolean;
}
