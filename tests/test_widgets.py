"""The ipywidgets token inspector (no kernel needed: widget state is plain Python)."""

import pandas as pd
import pytest

from serpent.errors import SerpentError
from serpent.widgets import chi_bars_svg, token_inspector


def frame():
    rows = []
    for s in (0, 50):
        for p, tok in enumerate(["␣self", "(", "␣selfish", "42"]):
            rows.append({"step": s, "point": p, "x": 0.0, "y": 0.0, "token": tok,
                         "context": f"a «{tok}» b", "pattern": ["word start", "delimiter", "word start", "numeric"][p],
                         "n_prev_spaces": p, "0:0": (p + 1) * (1 if s else -1), "0:1": 0.5 * s})
    return pd.DataFrame(rows)


def test_inspector_follows_controls():
    ins = token_inspector(frame())
    assert ins.step.value == 50 and len(ins.choice.options) == 4
    ins.search.value = "SELF"                                  # case-insensitive substring
    assert [v for _, v in ins.choice.options] == [0, 2]
    ins.choice.value = 2
    assert "␣selfish" in ins.html.value and "<mark" in ins.html.value
    assert ins.html.value.count("<rect") == 2
    assert "#d1495b" in ins.html.value                         # χ > 0 at step 50: red
    ins.step.value = 0
    assert "#3b6fb6" in ins.html.value                         # χ < 0 at step 0: blue
    ins.search.value = "zzz"
    assert ins.choice.options == () and "no token" in ins.html.value


def test_inspector_errors_and_bars():
    with pytest.raises(SerpentError):
        token_inspector(pd.DataFrame({"x": [1]}))
    with pytest.raises(SerpentError, match="does not exist"):
        token_inspector("/nonexistent/run")
    svg = chi_bars_svg([1.0, -2.0, 0.0], ["a", "b", "c"])
    assert svg.count("<rect") == 3 and svg.startswith("<svg")
    with pytest.raises(SerpentError):
        chi_bars_svg([1.0], ["a", "b"])
