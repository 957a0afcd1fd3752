"""Charts of training: the loss curves against the data's entropies, with the checkpoints marked.

Input: the rows of ``metrics.jsonl`` (:meth:`serpent.rundir.Run.metrics`: ``step``, ``train_loss``, ``test_loss``).
The step axis is ``symlog`` (step 0 is drawn).

>>> import pandas as pd
>>> m = pd.DataFrame({"step": [0, 10, 100], "train_loss": [7.6, 5.0, 4.0], "test_loss": [7.6, 5.1, 4.2]})
>>> type(loss_curves_chart(m, {"unigram entropy": 6.0}, checkpoint_steps=[0, 100])).__name__
'LayerChart'
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import altair as alt
import pandas as pd

__all__ = ["loss_curves_chart"]


def loss_curves_chart(metrics: pd.DataFrame | Sequence[Mapping], references: Optional[Mapping[str, float]] = None,
                      checkpoint_steps: Optional[Sequence[int]] = None, *, width: int = 400, height: int = 260,
                      title: str = "Training and held-out loss (ticks: checkpoints)") -> alt.LayerChart:
    """Training and held-out loss against step, dashed lines at ``references`` (name → nats, e.g. the unigram and
    bigram entropies) and a tick under the axis at every checkpoint."""
    m = pd.DataFrame(metrics)
    cols = [c for c in ("train_loss", "test_loss") if c in m]
    if "step" not in m or not cols:
        raise ValueError(f"metrics need a 'step' column and train_loss or test_loss; got {list(m.columns)}")
    long = m.melt(id_vars="step", value_vars=cols, var_name="split", value_name="loss").dropna()
    long["split"] = long["split"].map({"train_loss": "training", "test_loss": "held-out"})
    x = alt.X("step:Q", scale=alt.Scale(type="symlog"), title="training step (log scale)")
    layers = [alt.Chart(long).mark_line(point=True).encode(
        x=x, y=alt.Y("loss:Q", title="loss (nats per token)"), color=alt.Color("split:N", title="loss"),
        tooltip=["step", "split", alt.Tooltip("loss:Q", format=".3f")])]
    if references:
        refs = pd.DataFrame({"loss": list(references.values()), "reference": list(references)})
        layers.append(alt.Chart(refs).mark_rule(strokeDash=[6, 3]).encode(
            y="loss:Q", color=alt.Color("reference:N", title="reference"),
            tooltip=["reference", alt.Tooltip("loss:Q", format=".3f")]))
    if checkpoint_steps is not None and len(checkpoint_steps):
        layers.append(alt.Chart(pd.DataFrame({"step": list(checkpoint_steps)})).mark_tick(
            color="grey", thickness=1, size=8).encode(x=x, y=alt.value(height - 4), tooltip=["step"]))
    return alt.layer(*layers).resolve_scale(color="independent").properties(width=width, height=height, title=title)
