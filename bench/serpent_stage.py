"""Benchmark: the serpent stage (labels, aligned UMAP, separation, PNGs, explorer page) at the sizes of the presets.

Builds a run directory with a BPE tokenizer trained on standard-library text and synthetic susceptibilities of the
preset's size (probe sequences x probe length tokens per checkpoint, ``susceptibility.sampler.checkpoints`` checkpoints),
then times ``serpent_stage`` in this fresh process, so UMAP's numba warm-up is counted. Prints the time per phase.

    python bench/serpent_stage.py                    # tiny preset: 16 x 127 tokens x 4 checkpoints
    python bench/serpent_stage.py --preset full      # 32 x 1023 tokens x 12 checkpoints
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

t_start = time.time()

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--out", default=None, help="run directory to keep (default: a temporary one)")
    args = ap.parse_args()

    from serpent.config import get_preset
    from serpent.outputs import SUSCEPTIBILITY, TOKENIZER
    from serpent.stages import serpent_stage
    from serpent.patterns import PATTERNS, classify_ids
    from serpent.rundir import Run
    from serpent.susceptibility import SusceptibilityResult
    from serpent.tokenizer import train_bpe

    cfg = get_preset(args.preset)
    S = cfg.susceptibility.probe_sequences
    L = cfg.susceptibility.probe_length or cfg.model.n_ctx
    K = cfg.susceptibility.sampler.checkpoints
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "run"
    run = Run.create(out, cfg)
    src = Path(os.__file__).parent
    text = "".join(p.read_text(errors="replace") for p in sorted(src.glob("*.py"))[:60])
    tok = train_bpe([text], min(cfg.model.d_vocab, 4000))
    tok.save(TOKENIZER.file(run))
    ids = np.array(tok.encode(text))
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(ids) - L, S)
    probe = np.stack([np.concatenate([[tok.bos_id], ids[s:s + L - 1]]) for s in starts]).astype(np.int64)
    seq, pos = np.repeat(np.arange(S), L - 1), np.tile(np.arange(1, L), S)
    pats = np.array([p for s in range(S) for p in classify_ids(probe[s], tok)[1:]])
    centers = {p: rng.normal(size=16) * 3 for p in PATTERNS}
    comps = [f"{l}:{h}" for l in range(2) for h in range(8)]
    steps = np.unique(np.round(np.geomspace(1, cfg.train.steps, K)).astype(int))
    for k, step in enumerate(steps):
        chi = (k / (len(steps) - 1)) * np.array([centers[p] for p in pats]) + rng.normal(size=(len(seq), 16))
        SusceptibilityResult(step=int(step), components=comps, chi=chi.astype(np.float32),
                             chi_se=np.zeros_like(chi, np.float32), probe_tokens=probe, seq_index=seq, position=pos,
                             doc_names=[""] * S, settings={}).save(
            SUSCEPTIBILITY.file(run, step=int(step)))
    t0 = time.time()
    summary = serpent_stage(run, progress=True)
    total = time.time() - t0
    print(f"\npreset {args.preset}: {len(seq):,} tokens x {len(steps)} checkpoints on {os.cpu_count()} CPU cores")
    print(f"serpent stage: {total:.1f} s (phases: {summary['seconds']}); process start to end "
          f"{time.time() - t_start:.1f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"cross-token separation first -> last: {summary['separation_first']:.3f} -> {summary['separation_last']:.3f}")
    print(f"explorer page: {summary['explorer']} ({Path(summary['explorer']).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    sys.exit(main())
