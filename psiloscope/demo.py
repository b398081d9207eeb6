"""`psiloscope demo`: the whole path on the embedded default, offline, in about ten minutes on 2 cores.

Train a multi-tap skip adapter (d = 3, 4, 5, alpha = 0.65) on World English Bible text on the frozen
SmolLM2-135M-Instruct, evaluate it against the frozen base, dump both on held-out text, compare, and write
the report. Re-running resumes: a finished run and cached dumps are reused.
"""

from __future__ import annotations

import time
from pathlib import Path

DEMO_STEPS = 40
DEMO_TOKENS = 6000
DEMO_SEQ_LEN = 128


def run_demo(out: str | Path = "demo-out", *, steps: int | None = None, tokens: int | None = None) -> Path:
    """Run the demo into folder `out`; returns the report path."""
    from psiloscope.compare import compare, summary_lines
    from trainer.config import TrainConfig
    from trainer.train import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps = steps or DEMO_STEPS
    run_dir = out / "run"
    # Budget on a 2-core CPU: ~120 tokens/s per training step and ~400 tokens/s forward. 40 steps of 4 x 128
    # tokens, then an evaluation with the per-layer toggle (30 forward passes over 12 held-out sequences).
    cfg = TrainConfig(distances=(3, 4, 5), alpha=0.65, steps=steps, batch_size=4, seq_len=DEMO_SEQ_LEN, lr=1e-3,
                      warmup=max(1, steps // 6), eval_every=0, eval_seqs=12, eval_toggle=True,
                      report_every=max(1, steps // 15), save_every=max(1, steps // 2), out=str(run_dir),
                      resume=(run_dir / "config.json").is_file())
    print(f"[1/3] training a d=3,4,5 skip adapter for {steps} steps -> {run_dir}")
    train(cfg)
    print("[2/3] dumping frozen base and adapted run on held-out text, comparing")
    result = compare(str(run_dir), tokens=tokens or DEMO_TOKENS, seq_len=256, n_boot=500,
                     cache_dir=str(out / "dumps"), probe_max_rows=2000)
    html = out / "report.html"
    result.to_json(out / "results.json")
    result.to_html(html)
    print(f"[3/3] report: {html.resolve()}  ({time.perf_counter() - start:.0f} s in all)")
    for line in summary_lines(result.results):
        print("  " + line)
    return html
