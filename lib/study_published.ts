// The numbers the original study published (its write-up, on a 4-GPU node): each model's training
// budget and final loss. One table, read by `study`'s report (the comparison columns of report.md and
// report.json) and by `plot` (the reference marks on loss charts).

export interface PublishedResult {
  /** Wall-clock training budget, seconds. */
  budgetSeconds: number;
  /** The budget as the write-up states it. */
  compute: string;
  /** The final loss as the write-up states it. */
  loss: string;
  /** The final (validation where given) loss as a number. */
  value: number;
  /** Chart mark labels: the budget ("cumsum 2h") and the loss, ending in the value drawn ("cumsum 6.46"). */
  mark: { budget: string; loss: string };
}

export const STUDY_PUBLISHED: Record<string, PublishedResult> = {
  "gpt": {
    budgetSeconds: 4 * 3600,
    compute: "4 h (2 h: < 3.5)",
    loss: "3.198",
    value: 3.198,
    mark: { budget: "gpt 4h", loss: "gpt 3.198" },
  },
  "pixel-cumsum": {
    budgetSeconds: 2 * 3600,
    compute: "2 h",
    loss: "10.8 → 6.46",
    value: 6.46,
    mark: { budget: "cumsum 2h", loss: "cumsum 6.46" },
  },
  "pixel-attn": {
    budgetSeconds: 3 * 3600,
    compute: "3 h",
    loss: "4.73",
    value: 4.73,
    mark: { budget: "attn 3h", loss: "attn 4.73" },
  },
  "pixel-attn-wide": {
    budgetSeconds: 3 * 3600 + 27 * 60,
    compute: "3 h 27 min",
    loss: "train 4.5023, val 4.5044",
    value: 4.5044,
    mark: { budget: "wide 3h27m", loss: "attn-wide 4.50" },
  },
};
