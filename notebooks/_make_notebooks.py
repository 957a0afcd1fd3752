"""Source of the course notebooks: ``python notebooks/_make_notebooks.py`` writes ``notebooks/0*.ipynb``.

The notebooks are committed (without outputs); this script is how they are written, so that the skeleton every
notebook shares (the course's house style) stays identical: a title with what you will learn, prerequisites and times; an "Open in
Colab" badge (a markdown cell removed from the book, whose page has its own launch button, so the book never loads
an image from the network); a setup cell hidden in the book (``remove-input``) that installs the package only in
Colab and prints versions and the device; a ``parameters`` cell with the full-size settings and the next cell
shrinking them when ``SERPENT_FAST=1``; exercises with difficulty, importance and minutes, a stub, a
``serpent.checks`` call and a hidden solution cell (tags ``hide-input`` + ``solution``, collapsed in Jupyter and a
form in Colab) that runs the same check; a summary and further reading.

The repository URL (Colab links, ``pip install``) is read from ``_config.yml``, where it is set once. Edit the
notebooks here and regenerate; ``tests/test_checks.py`` runs every solution cell against its check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _repo() -> tuple[str, str]:
    text = (ROOT / "_config.yml").read_text()
    url = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+url:\s*(\S+)", text, re.M).group(1).rstrip("/")
    branch = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+branch:\s*(\S+)", text, re.M).group(1)
    return url, branch


REPO_URL, BRANCH = _repo()
RAW_URL = REPO_URL.replace("https://github.com/", "https://raw.githubusercontent.com/")   # + /BRANCH/path


# ---------------------------------------------------------------------------------------------------------------
# cell helpers
# ---------------------------------------------------------------------------------------------------------------

def md(text: str, tags=()) -> dict:
    import nbformat
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


#: Code cells are formatted with black at this width when written: what fits the book's text column at a laptop's
#: width (tests/test_book.py measures it) and a Colab cell. Write them as you like here; keep comments and strings
#: within it (black does not split them; tests/test_notebooks.py says which lines are too long).
CODE_WIDTH = 79


def _formatted(text: str) -> str:
    try:
        import black
    except ImportError:
        raise SystemExit("the notebooks are written with black: pip install -r requirements.txt") from None
    try:
        return black.format_str(text, mode=black.Mode(line_length=CODE_WIDTH)).rstrip("\n")
    except black.InvalidInput:      # IPython syntax (!pip, %magic) is left as written
        return text


def code(text: str, tags=()) -> dict:
    import nbformat
    cell = nbformat.v4.new_code_cell(_formatted(text.strip("\n")))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def solution(text: str) -> dict:
    cell = code("# @title Solution (double-click to show the code)\n" + text.strip("\n"), tags=("hide-input", "solution"))
    cell.metadata["jupyter"] = {"source_hidden": True}
    cell.metadata["cellView"] = "form"
    return cell


def exercise(title: str, difficulty: int, importance: int, minutes: int, text: str) -> dict:
    # ● and ○ (geometric shapes) are in every text font; emoji draw as empty boxes where no emoji font is installed
    d = "●" * difficulty + "○" * (5 - difficulty)
    i = "●" * importance + "○" * (5 - importance)
    return md(f"### Exercise: {title}\n\n> **Difficulty** {d} ({difficulty}/5) · **Importance** {i} ({importance}/5) · "
              f"about **{minutes} minutes**\n\n"
              + text.strip("\n"))


def header(name: str, title: str, learn: list[str], prereq: str, t4: str, cpu: str, chapter: str) -> list[dict]:
    colab = f"https://colab.research.google.com/github/{REPO_URL.split('github.com/')[1]}/blob/{BRANCH}/notebooks/{name}.ipynb"
    bullets = "\n".join(f"* {x}" for x in learn)
    return [
        md(f"# {title}\n\nThe computations of the chapter [{chapter[1]}](../book/{chapter[0]}.md).\n\n"
           f"**What you will learn**\n\n{bullets}\n\n**Prerequisites:** {prereq}\n\n"
           f"**Time:** {t4} on a Colab T4, {cpu} on a laptop CPU; about a minute in fast mode (`SERPENT_FAST=1`)."),
        md(f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})",
           tags=("remove-cell",)),
        code(SETUP, tags=("remove-input",)),
    ]


SETUP = f'''
# Setup. In Colab: install the course package (Colab's own torch, numpy
# and pandas are left alone) and say where the course's published results
# are (course_run() downloads them once, checked against their manifest).
import os, sys, subprocess
if "google.colab" in sys.modules:
    PACKAGE = "serpent[widgets] @ git+{REPO_URL}"
    RESULTS = "{RAW_URL}/{BRANCH}/artifacts"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)
    os.environ.setdefault("SERPENT_ARTIFACTS_URL", RESULTS)

import importlib.metadata as _md
from serpent.device import default_device, describe_device
print(" · ".join(f"{{p}} {{_md.version(p)}}" for p in ("serpent", "torch", "transformer-lens", "altair")))
print("device:", describe_device(default_device()))
'''

FAST_CELL = '''
import os
# the tests, CI and the fast book build set SERPENT_FAST=1
FAST = os.environ.get("SERPENT_FAST", "0") == "1"
if FAST:
{body}
'''


def fast(body: str) -> dict:
    lines = "\n".join("    " + l for l in body.strip("\n").splitlines())
    return code(FAST_CELL.format(body=lines))


def footer(summary: list[str], reading: list[str], next_nb: str | None = None) -> list[dict]:
    s = "\n".join(f"* {x}" for x in summary)
    r = "\n".join(f"* {x}" for x in reading)
    nxt = f"\n\n**Next:** {next_nb}" if next_nb else ""
    return [md(f"## Summary\n\n{s}\n\n## Further reading\n\n{r}{nxt}")]


# ---------------------------------------------------------------------------------------------------------------
# 00 setup
# ---------------------------------------------------------------------------------------------------------------

def nb00():
    return header("00_setup", "0 · Setting up: the install, the device and the course's run",
                  ["check that the `serpent` package and its dependencies work on your machine",
                   "create (or load) the run every later notebook uses: a small model trained on Python source code, "
                   "with every analysis stage already computed",
                   "find your way around a *run directory*"],
                  "none.", "5 minutes", "6–10 minutes the first time (the tiny pipeline), seconds afterwards",
                  ("setup", "Setting up")) + [
        code('''
# None: the committed results of the full (GPU) run, else of the cpu run,
# else "tiny"; or "tiny" (a CPU in minutes), "cpu" (2 CPU cores, about 1.75
# hours), "colab" (a T4), "full" (a GPU)
PRESET = None
''', tags=("parameters",)),
        fast('print("fast mode: course_run() uses the committed results of the full "\n'
             '      "or cpu run if present, else runs/tiny if it is complete, else a "\n'
             '      "micro run (about a minute)")'),
        md('''
## 1. Does everything import, and is the fast path right?

The package computes losses with its own batched forward pass (`serpent.model.per_token_loss`), which runs many
copies of the model at once for SGLD. It must agree with TransformerLens' `HookedTransformer` to float precision:
'''),
        code('''
import torch
from serpent.config import get_preset
from serpent.model import build_model, hooked_per_token_loss, model_params, per_token_loss

cfg = get_preset("tiny").model
model = build_model(cfg)
tokens = torch.randint(0, cfg.d_vocab, (2, 32))
fast_path = per_token_loss(model_params(model), tokens, cfg)        # (B, T-1): per-token losses
reference = hooked_per_token_loss(model, tokens)
n_params = sum(p.numel() for p in model.parameters())
gap = (fast_path - reference).abs().max().item()
print(f"{n_params:,} parameters; max |fast - TransformerLens| = {gap:.2e}")
assert torch.allclose(fast_path, reference, atol=1e-4), "the fast forward disagrees with TransformerLens"
'''),
        md('''
## 2. The course's run

`course_run()` loads the committed results of the full-scale GPU run (`artifacts/full`) when the repository has
them, else those of the book's CPU run (`artifacts/cpu`: the same small model as `tiny`, trained 35 times longer, so
that its induction circuit forms), each checked against its manifest; otherwise it finds `runs/tiny` at the top of
the repository (or `/content/runs/tiny` in Colab). If that run is missing or incomplete it runs the whole pipeline —
the same as `python -m serpent run --preset tiny --out runs/tiny`:
corpus → tokenizer → training with checkpoints → induction scores → LLC → susceptibilities → the serpent. A complete
run is simply loaded, so the later notebooks start in seconds.
'''),
        code('''
from serpent.course import course_run
run = course_run(PRESET)
run
'''),
        md("Every stage records how long it took and a short summary:"),
        code('''
import json
import pandas as pd

stages = json.loads((run.path / "stages.json").read_text())
pd.DataFrame([{"stage": name, "seconds": round(s["seconds"], 1),
               "summary": ", ".join(f"{k}={v}" for k, v in s["summary"].items() if not isinstance(v, (list, dict)))[:110]}
              for name, s in stages.items()])
'''),
        md('''
## 3. What is in a run directory

| path | what |
| --- | --- |
| `config.json` | the `RunConfig` that produced the run (model, data, train, llc, susceptibility, embedding) |
| `tokenizer/`, `data/` | the byte-level BPE tokenizer and the token streams (train/test) |
| `checkpoints/step_*.safetensors` | the model at every checkpoint (TransformerLens parameter names) |
| `metrics.jsonl` | training and held-out loss |
| `induction/`, `llc/`, `susceptibility/`, `serpent/` | each analysis stage's results and charts |
| `explorer.html` | the serpent explorer: one page, works offline |
'''),
        code('''
def size(p):
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size

pd.DataFrame([{"entry": p.name + ("/" if p.is_dir() else ""), "MB": round(size(p) / 1e6, 2)}
              for p in sorted(run.path.iterdir())])
'''),
        md("## 4. A first look: the loss went down"),
        code('''
import altair as alt

m = pd.DataFrame(run.metrics())
long = m.melt(id_vars="step", value_vars=["train_loss", "test_loss"], var_name="split", value_name="loss")
alt.Chart(long).mark_line(point=True).encode(
    x=alt.X("step:Q", scale=alt.Scale(type="symlog"), title="training step (log scale)"),
    y=alt.Y("loss:Q", title="loss (nats per token)"), color="split:N", tooltip=["step", "split", "loss"],
).properties(width=420, height=240, title=f"{run.config.preset}: training and held-out loss")
'''),
        md('''
The same run from the command line:

```bash
python -m serpent run --preset tiny --out runs/tiny  # skips what is done
python -m serpent presets             # the presets and their sizes
python -m serpent explore runs/tiny   # (re)write the explorer page
```
'''),
    ] + footer(["The package works on this machine and its fast forward pass agrees with TransformerLens.",
                "`course_run()` gives every notebook the same run directory; computing it happens once.",
                "A run directory holds everything the pipeline produced, written atomically and resumable."],
               ["[Setting up](../book/setup.md) — Colab, the two notebook sizes, offline use.",
                "The `serpent` package's command line: `python -m serpent --help`."],
               "[1 · Growing a model](01_growing.ipynb)")


# ---------------------------------------------------------------------------------------------------------------
# 01 growing
# ---------------------------------------------------------------------------------------------------------------

def nb01():
    return header("01_growing", "1 · Growing a model: corpus, tokenizer, transformer, training curves",
                  ["what the course's corpus is and how a byte-level BPE tokenizer cuts it into tokens",
                   "the 2-layer attention-only transformer in TransformerLens vocabulary",
                   "read training curves against the unigram and bigram entropies of the data"],
                  "[notebook 0](00_setup.ipynb).", "3 minutes", "2 minutes", ("01_growing", "Growing a model")) + [
        code('''
# None: the full run's committed results, else the cpu run's, else "tiny"
PRESET = None
N_TOKENS = 160        # tokens of the snippet to draw
TOP_TOKENS = 25       # most frequent tokens to list
''', tags=("parameters",)),
        fast("N_TOKENS, TOP_TOKENS = 80, 15"),
        code('''
import json
import altair as alt
import numpy as np
import pandas as pd
import torch
from serpent.course import course_run

run = course_run(PRESET)
tok = run.tokenizer()
'''),
        md('''
## 1. The corpus

The default corpus is Python source code: every `.py` file of the interpreter (standard library and installed
packages), split into train and test *by file*, so that no file is seen in both. Code has all the token patterns
the serpent is coloured by: indentation runs, newlines, brackets, numbers, identifiers cut into word starts and word
parts, and many repeated bigrams.
'''),
        code('''
corpus = json.loads((run.path / "corpus.json").read_text())
starts, names = run.documents("train")
print({k: corpus[k] for k in ("spec", "files", "bytes") if k in corpus})
n_train, n_test = len(run.tokens("train")), len(run.tokens("test"))
print(f"{len(names):,} training documents, {n_train:,} training tokens, "
      f"{n_test:,} held-out tokens; e.g.", names[:3])
'''),
        md('''
## 2. The tokenizer

A GPT-2-style byte-level BPE trained on the corpus: `Ġ` marks a leading space, `Ċ` a newline, `ĉ` a tab, and
`<|endoftext|>` (id 0) separates documents. Here is the start of a held-out document, each token a box coloured
by the pattern it will get in chapter 6:
'''),
        code('''
from serpent.charts.tokens import token_strip

test = run.tokens("test")
t_starts, t_names = run.documents("test")
doc = int(np.argmax(np.diff(np.append(t_starts, len(test)))))          # the longest held-out document
ids = np.asarray(test[t_starts[doc]: t_starts[doc] + N_TOKENS], dtype=np.int64)
strings = [tok.token_str(int(i)) for i in ids]
token_strip(strings, title=f"{t_names[doc]}: the first {len(ids)} tokens")
'''),
        code('''
counts = np.bincount(np.asarray(run.tokens("train"), dtype=np.int64), minlength=tok.vocab_size)
top = np.argsort(-counts)[:TOP_TOKENS]
freq = pd.DataFrame({"token": [tok.token_str(int(i)).replace("Ġ", "␣").replace("Ċ", "↵") for i in top],
                     "share": counts[top] / counts.sum()})
alt.Chart(freq).mark_bar().encode(x=alt.X("share:Q", axis=alt.Axis(format="%")), y=alt.Y("token:N", sort=None),
                                  tooltip=["token", alt.Tooltip("share:Q", format=".2%")]
                                  ).properties(width=360, title="most frequent tokens")
'''),
        md('''
## 3. The model

A `HookedTransformer`: 2 layers of 8 attention heads, no MLPs, LayerNorm, and *shortformer* positions (the learned
positional embedding is added to the queries and keys only, never to the residual stream). Parameters carry
TransformerLens names, so everything you know from TransformerLens applies:
'''),
        code('''
model = run.load_model()
c = model.cfg
print(f"{c.n_layers} layers × {c.n_heads} heads, d_model {c.d_model}, "
      f"d_head {c.d_head}, n_ctx {c.n_ctx}, vocab {c.d_vocab}, "
      f"{c.positional_embedding_type} positions")
pd.DataFrame([{"name": n, "shape": tuple(p.shape), "parameters": p.numel()} for n, p in model.named_parameters()])
'''),
        code('''
logits, cache = model.run_with_cache(torch.as_tensor(ids[None, :64]), names_filter=lambda n: "attn" in n)
print(logits.shape, "| cached:", list(cache.keys())[:6], "...")
print("attention pattern of layer 1:", tuple(cache["blocks.1.attn.hook_pattern"].shape), "(batch, head, query, key)")
'''),
        md('''
## 4. Training curves against the entropies of the data

Two reference lines: the **unigram entropy** (the loss of the best model that ignores the context: it only knows
token frequencies) and the **bigram entropy** H(next | current) measured on the training stream (the best a model
can do that looks at one previous token; measured in-sample, so slightly optimistic). A model whose loss falls
below the bigram line uses more context than the previous token.
'''),
        code('''
from serpent.train import bigram_entropy, unigram_entropy

train = np.asarray(run.tokens("train"), dtype=np.int64)
unigram, bigram = unigram_entropy(train, tok.vocab_size), bigram_entropy(train, tok.vocab_size)
print(f"unigram entropy {unigram:.3f} nats, "
      f"bigram conditional entropy {bigram:.3f} nats")
'''),
        code('''
from serpent.charts.training import loss_curves_chart

loss_curves_chart(run.metrics(), {"unigram entropy": unigram, "bigram entropy (in-sample)": bigram},
                  run.checkpoint_steps())
'''),
        md('''
Both CPU presets fall through the unigram stage quickly and then towards the bigram line: the early stages of
development (LM1–LM2 in the paper's model). The `tiny` run stops there (2.5 M tokens). The book's `cpu` run (the
same model, 86 M tokens) goes on: a small, late bump in the loss around the induction head's onset, near step
24,000; the next notebook shows how to tell whether the circuit has formed.
'''),
    ] + footer(["The corpus is Python source split by file; the tokenizer is a 2k (tiny) or 5k byte-level BPE.",
                "The model is a 2-layer attention-only TransformerLens model with shortformer positions.",
                "Unigram and bigram entropies are the natural milestones of the loss curve."],
               ["Hoogland et al. 2024, *The developmental landscape of in-context learning* (the paper's model and "
                "its stages LM1–LM5).", "TransformerLens documentation: `HookedTransformer`, `run_with_cache`."],
               "[2 · Induction heads](02_induction.ipynb)")


# ---------------------------------------------------------------------------------------------------------------
# 02 induction
# ---------------------------------------------------------------------------------------------------------------

PREV_SOLUTION = '''
import torch
from serpent.checks import check_prev_token_score

def prev_token_score_solution(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    """(batch, n_heads, 2L+1, 2L+1) -> (n_heads,): mean attention from
    query t to key t-1, t = 2..2L."""
    prev = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)   # (batch, heads, 2L): entry t-1 is (query t, key t-1)
    return prev[..., 1:].mean(dim=(0, -1))                  # drop query 1 (its previous token is BOS)

check_prev_token_score(prev_token_score_solution);
'''

PREFIX_SOLUTION = '''
import torch
from serpent.checks import check_prefix_score

def prefix_score_solution(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    """(batch, n_heads, 2L+1, 2L+1) -> (n_heads,): mean attention from
    query L+i to key i+1, i = 1..L."""
    L = half_len
    queries = torch.arange(L + 1, 2 * L + 1)     # the second occurrences r_i at positions L+i
    keys = queries - L + 1                         # the token after the first occurrence, position i+1
    return pattern[:, :, queries, keys].mean(dim=(0, -1))

check_prefix_score(prefix_score_solution);
'''

KCOMP_SOLUTION = '''
import torch
from serpent.checks import check_k_composition

def k_composition_solution(W_OV: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor) -> float:
    """||W_OV (W_Q W_K^T)^T|| / (||W_OV|| ||W_Q W_K^T||), Frobenius norms."""
    W_QK = W_Q @ W_K.T                       # score = q_in @ W_QK @ k_in.T, and k_in = x @ W_OV
    reads = W_OV @ W_QK.T                    # so the key side sees x @ W_OV @ W_QK.T
    return float(torch.linalg.norm(reads) / (torch.linalg.norm(W_OV) * torch.linalg.norm(W_QK)))

check_k_composition(k_composition_solution);
'''


def nb02():
    return header("02_induction", "2 · Induction heads: detectors, curves over checkpoints, a planted circuit",
                  ["measure previous-token and prefix-matching (induction) scores of every head",
                   "follow them over the checkpoints of the course's run",
                   "check the detectors on a hand-built model that implements the induction circuit exactly",
                   "grow an induction circuit on your CPU in about a minute and watch the loss plateau, then drop",
                   "implement the two scores yourself (exercises with checks)",
                   "test which heads cause the copying: ablation, activation patching and K-composition"],
                  "[notebook 1](01_growing.ipynb); what an attention pattern is.", "3 minutes", "5 minutes",
                  ("02_induction", "Induction heads")) + [
        code('''
# None: the full run's committed results, else the cpu run's, else "tiny"
PRESET = None
# True: recompute the scores over all checkpoints here instead of loading
RECOMPUTE = False
N_SEQS = 32             # probe sequences
HALF_LEN = 128          # random tokens per half of a probe
PLANTED_HALF_LEN = 20   # probe length for the planted model
TOY_STEPS = 1200        # training steps of the toy model (the circuit forms near step 1,000)
''', tags=("parameters",)),
        fast("N_SEQS, HALF_LEN, PLANTED_HALF_LEN = 8, 32, 10"),
        code('''
import json
import altair as alt
import numpy as np
import pandas as pd
import torch
from serpent.course import course_run
from serpent.induction import (classify_heads, induction_scores, planted_induction_model, repeated_random_tokens,
                               scores_over_checkpoints)
from serpent.charts.induction import icl_chart, induction_scores_chart

run = course_run(PRESET)
'''),
        md('''
## 1. The probe and the two scores

The probe is `[BOS, r_1 … r_L, r_1 … r_L]`: random tokens, repeated once. On it:

* a **previous-token head** attends from every position t to t − 1: its *previous-token score* is the mean attention
  from query t to key t − 1 (t = 2 … 2L);
* an **induction head** attends from the second `r_i` (position L + i) to the token *after* the first `r_i`
  (position i + 1), and copies it: its *prefix-matching score* is the mean of that attention.

A head attending uniformly to everything before it scores about 1/t: the *chance* levels reported with the scores.
'''),
        code('''
probe = repeated_random_tokens(2, 5, 50, bos_id=0, seed=0)
print(probe)
'''),
        md('''
## 2. Scores over the course's checkpoints

The pipeline's `induction` stage computed both scores for every head at every checkpoint (`induction/scores.parquet`);
set `RECOMPUTE = True` to compute them here.
'''),
        code('''
if RECOMPUTE:
    scores = scores_over_checkpoints(run)
else:
    scores = pd.read_parquet(run.path / "induction" / "scores.parquet")
heads = classify_heads(scores)
print("previous-token heads:", heads["previous_token"], "| induction heads:", heads["induction"])
print("thresholds:", {k: round(v, 4) for k, v in heads["thresholds"].items() if k in ("prefix", "prev_token")})
induction_scores_chart(scores, thresholds=heads["thresholds"])
'''),
        code("icl_chart(scores)"),
        md('''
On the book's `cpu` run a layer-0 head (0:4) becomes a previous-token head within the first few thousand steps,
and a layer-1 head starts matching prefixes from about step 24,000 (about 49 M tokens, twice what the
√(batch × context) law of Aoyama et al. predicts), reaching about 0.09, nine times chance, at step 42,000: the
paper's order, on natural text, on a CPU. On the `tiny` run no head crosses the thresholds: its few million
training tokens show the early stages only (the ICL score is already negative there, because later tokens of a file
are easier to predict from the bigram statistics of that file).

## 3. A planted induction circuit

`planted_induction_model` builds, by hand, a 2-layer attention-only model whose head 0:1 copies the previous token
into the residual stream and whose head 1:2 matches the current token against that copy: the circuit of
Olsson et al., exactly. It is the ground truth the detectors are tested on.
'''),
        code('''
L = PLANTED_HALF_LEN
planted = planted_induction_model(d_vocab=64, n_ctx=2 * L + 1, n_heads=4, prev_head=1, induction_head=2)
probe = repeated_random_tokens(8, L, 64, bos_id=0, seed=1)
planted_scores = induction_scores(planted, probe=probe, bos_id=0)
c = classify_heads(planted_scores)
print("previous-token heads:", c["previous_token"], "| induction heads:", c["induction"])
planted_scores[planted_scores["head"] != "model"].pivot(index="head", columns="score", values="value").round(3)
'''),
        code('''
_, cache = planted.run_with_cache(probe, names_filter=lambda n: n.endswith("hook_pattern"))
pattern = cache["blocks.1.attn.hook_pattern"]                  # (batch, head, query, key)

def heat(p, title):
    q, k = np.meshgrid(np.arange(p.shape[0]), np.arange(p.shape[1]), indexing="ij")
    df = pd.DataFrame({"query": q.ravel(), "key": k.ravel(), "attention": p.ravel()})
    return alt.Chart(df).mark_rect().encode(x="key:O", y="query:O", color=alt.Color("attention:Q", scale=alt.Scale(scheme="greys")),
                                            tooltip=["query", "key", alt.Tooltip("attention:Q", format=".2f")]
                                            ).properties(width=230, height=230, title=title)

alt.hconcat(heat(cache["blocks.0.attn.hook_pattern"][0, 1].numpy(), "head 0:1 (previous token)"),
            heat(pattern[0, 2].numpy(), "head 1:2 (induction)"))
'''),
        md('''
The previous-token head is the sub-diagonal; the induction head is the stripe L − 1 below the diagonal in the
second half: query L + i looks at key i + 1.
'''),
        exercise("the previous-token score", 1, 3, 5, '''
Write `prev_token_score(pattern, half_len)`: from attention patterns `(batch, n_heads, 2L+1, 2L+1)` of the probe,
return `(n_heads,)`, the mean attention from query t to key t − 1 over t = 2 … 2L and over the batch.
'''),
        code('''
def prev_token_score(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    raise NotImplementedError("your code here")

from serpent.checks import check_prev_token_score
check_prev_token_score(prev_token_score);
'''),
        solution(PREV_SOLUTION),
        exercise("the prefix-matching score", 2, 4, 15, '''
Write `prefix_score(pattern, half_len)`: the mean attention from the second occurrence of each `r_i` (query L + i)
to the token after its first occurrence (key i + 1), over i = 1 … L and over the batch. Mind position 0 (BOS).
The check tells you if you read the earlier occurrence itself (a *duplicate-token* score), swap query and key,
forget the BOS, or sum instead of averaging.
'''),
        code('''
def prefix_score(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    raise NotImplementedError("your code here")

from serpent.checks import check_prefix_score
check_prefix_score(prefix_score);
'''),
        solution(PREFIX_SOLUTION),
        md("Your score on the planted model agrees with the package's detector:"),
        code('''
mine = prefix_score_solution(pattern, L)
theirs = planted_scores[(planted_scores["head"].str.startswith("1:")) & (planted_scores["score"] == "prefix")]["value"]
print("layer 1 prefix scores, yours:", mine.numpy().round(3), " serpent.induction:", theirs.to_numpy().round(3))
'''),
        md("…and on the last checkpoint of the course's run, next to the chance level:"),
        code('''
model = run.load_model()
Lr = min(HALF_LEN, (model.cfg.n_ctx - 1) // 2)
probe = repeated_random_tokens(N_SEQS, Lr, model.cfg.d_vocab, bos_id=run.tokenizer().bos_id, seed=0)
_, cache = model.run_with_cache(probe, names_filter=lambda n: n.endswith("hook_pattern"))
rows = []
for layer in range(model.cfg.n_layers):
    p = cache[f"blocks.{layer}.attn.hook_pattern"]
    for h, (a, b) in enumerate(zip(prev_token_score_solution(p, Lr), prefix_score_solution(p, Lr))):
        rows += [{"head": f"{layer}:{h}", "score": "previous token", "value": float(a)},
                 {"head": f"{layer}:{h}", "score": "prefix", "value": float(b)}]
from serpent.induction import chance_scores
chance = chance_scores(Lr)
bars = alt.Chart(pd.DataFrame(rows)).mark_bar().encode(x=alt.X("head:N", title="head"), y="value:Q",
                                                       column=alt.Column("score:N", title=None), tooltip=["head", "value"])
title = (f"last checkpoint (chance: prev {chance['prev_token']:.3f}, "
         f"prefix {chance['prefix']:.3f})")
bars.properties(width=260, height=180, title=title)
'''),
        md('''
## 4. Grow an induction circuit on your CPU

On text the circuit takes the `cpu` run tens of thousands of steps (an hour). On data where copying is the *only*
thing left to learn it forms in about a thousand steps. `grow_induction_circuit` trains the course's architecture, made small (`TOY_MODEL`:
2 layers × 8 heads, d_model 128, a context of 64 tokens, 512 token ids), on **repeated random segments**: BOS, then a
segment of `p` distinct random tokens repeated until the context is full, with a different period `p` in every
sequence. The first `p` tokens are unpredictable; every later one can be copied from one period back. Every 50 steps
it scores all 16 heads on a fixed probe, like the pipeline does at checkpoints.
'''),
        code('''
from serpent.course import toy_cache_dir
from serpent.induction_toy import TOY_MODEL, grow_induction_circuit, repeated_segments

print(repeated_segments(3, 24, 50, seed=0))       # three toy sequences: periods differ
# cache=: the result is kept in runs/toy and reused by notebooks 4 and 6
# (and by you, on the next run)
grown = grow_induction_circuit(TOY_MODEL, steps=TOY_STEPS, eval_every=50, keep_every=100, seed=0,
                               cache=toy_cache_dir())
toy, history = grown.model, grown.history
toy_heads = classify_heads(history)
print("previous-token heads:", toy_heads["previous_token"], "| induction heads:", toy_heads["induction"])
'''),
        code('''
from serpent.charts.induction import training_loss_chart
from serpent.induction_toy import loss_levels

training_loss_chart(history, loss_levels(TOY_MODEL))
'''),
        code("induction_scores_chart(history, thresholds=toy_heads['thresholds'], log_steps=False)"),
        md('''
Read the three charts together. The loss creeps down from the uniform-guess level for several hundred steps (the
model learns what it can without copying), then drops within about a hundred steps towards the ideal copier's level.
In the same window a layer-0 head starts attending to the previous token and layer-1 heads start attending to the
token after the earlier occurrence of the current one: both halves of the circuit appear *together*, because neither
is useful without the other. This abrupt, coordinated change after a plateau is what a developmental *stage
transition* looks like; chapters 3 and 4 measure such transitions with the learning coefficient.

Why vary the period? The detectors score attention on one probe of one length. A model trained on a single period
can solve it by "attend `p − 1` positions back", with no previous-token head at all; on a probe of that very length
this positional head scores like a perfect induction head. The exercise shows it.
'''),
        md('''
### Fool the detector

Train the toy model with one fixed period, `periods=(31, 31)`, and score it with `induction_scores(model,
half_len=L)` at `L = 31` (the trained length) and at `L = 20`. Before running the cell, predict: which heads will
`classify_heads` call induction heads at each length, and what will the loss on the second copy be at `L = 20`?
'''),
        code('''
from serpent.induction import classify_heads, induction_scores
from serpent.induction_toy import TOY_MODEL, grow_induction_circuit

fixed = grow_induction_circuit(TOY_MODEL, steps=600, periods=(31, 31), seed=0, progress=False,
                               cache=toy_cache_dir()).model

def probe_report(name, model):
    for L_probe in (31, 20):
        sc = induction_scores(model, n_seqs=16, half_len=L_probe, seed=1)
        c = classify_heads(sc)
        losses = sc[sc["head"] == "model"].set_index("score")["value"]
        first, second = losses["loss_first_half"], losses["loss_second_half"]
        print(f"{name}, L={L_probe}: induction heads {c['induction']}, "
              f"previous-token heads {c['previous_token']}, "
              f"loss 1st copy {first:.2f}, 2nd copy {second:.2f}")

probe_report("fixed period", fixed)
# Its layer-1 heads look "p - 1 back": perfect at L = 31, useless (worse
# than guessing) at L = 20.
'''),
        md("The model grown above on varied periods, on the same two probes: it copies at both lengths, because it "
           "matches content, not position."),
        code('probe_report("varied periods", toy)'),
        md('''
## 5. Do these heads *cause* the copying? Ablation, patching, composition

Attention scores say where a head looks, not what its output does. Three experiments on the grown toy
(`serpent.circuits`), each on the repeated-random-tokens probe:

* **Ablation**: replace one head's output by its average over the probe and measure the loss on the first copy
  (nothing to copy from) and on the second. A head the circuit needs raises the second copy's loss only.
* **Patching**: run a *corrupted* probe whose first copy is replaced by other tokens (nothing to copy, high loss on
  the second copy), and put back one head's output from the clean run. `recovered` is the share of the
  clean-vs-corrupted gap that this one head restores.
* **Composition**, from the weights alone: how much of a layer-1 head's *key* input a layer-0 head's output can
  reach (K-composition, Elhage et al. 2021), against the score of random matrices (`baseline`) and against the same
  pair at initialisation.

Predict before you run: which heads will ablation single out, and will one head alone recover most of the gap?
'''),
        code('''
from serpent.circuits import ablate_heads, composition_scores, patch_heads
from serpent.induction import repeated_random_tokens

probe_toy = repeated_random_tokens(16, 31, TOY_MODEL.d_vocab, seed=7)
ablation = ablate_heads(toy, probe_toy)
patching = patch_heads(toy, probe_toy)
print(f"intact: first copy {ablation.loss_first[0]:.2f} nats, "
      f"second copy {ablation.loss_second[0]:.2f}; "
      f"corrupted probe: second copy {patching.attrs['corrupted']:.2f}")
single = ablation[ablation["head"] != "none"].merge(patching[["head", "recovered"]], on="head")
bars = alt.Chart(single.melt(id_vars="head", value_vars=["delta_second", "recovered"])).mark_bar().encode(
    x=alt.X("head:N", title="head"), y=alt.Y("value:Q", title=None), color=alt.Color("head:N", legend=None),
    row=alt.Row("variable:N", title=None), tooltip=["head", "variable", alt.Tooltip("value:Q", format=".3f")])
bars.properties(width=420, height=120,
                title="one head at a time: ablation (loss rise) and "
                      "patching (gap recovered)")
'''),
        code('''
prev_heads = toy_heads["previous_token"]
others0 = [f"0:{h}" for h in range(TOY_MODEL.n_heads) if f"0:{h}" not in prev_heads]
groups = pd.concat([ablate_heads(toy, probe_toy, heads=g, together=True).iloc[1:]
                    for g in (prev_heads, others0, [f"1:{h}" for h in range(TOY_MODEL.n_heads)]) if g])
print("heads ablated together:")
print(groups[["head", "loss_first", "loss_second", "in_context_gain"]].round(2).to_string(index=False))
'''),
        md('''
In the toy the circuit is spread over several heads: ablating or patching any single one moves the second copy's
loss by a fraction of the gap. Groups tell more. In the published build (1,200 training steps) the four layer-0
heads that the previous-token score flags, ablated together, remove nearly all of the in-context gain (6.2 → 0.25
nats), but the other four layer-0 heads together remove most of it too (→ 1.1), and all layer-1 heads together
remove all of it (→ 0.06). The attention score picks out heads that matter, not every head that matters: a
detector's list is a hypothesis, and ablation is how it is tested. Single-head ablations understate what groups of
redundant heads do.
'''),
        code('''
comp_now = composition_scores(toy)
toy_init = grow_induction_circuit(TOY_MODEL, steps=TOY_STEPS, eval_every=50, keep_every=100, seed=0,
                                  cache=toy_cache_dir(), progress=False)     # the cached run: reload, then step 0
toy_init.model.load_state_dict(toy_init.snapshots[0], strict=False)
comp_init = composition_scores(toy_init.model)
k = comp_now[comp_now["kind"] == "K"].assign(at_init=comp_init[comp_init["kind"] == "K"]["score"].to_numpy())
print(f"K-composition: random-matrix baseline {k.baseline.iloc[0]:.3f}, "
      "largest at initialisation "
      f"{k.at_init.max():.3f}, largest after training {k.score.max():.3f}")
alt.Chart(k).mark_rect().encode(x=alt.X("target:N", title="layer-1 head (reads with its key)"),
                                y=alt.Y("source:N", title="layer-0 head (writes)"),
                                color=alt.Color("score:Q", title="K-composition"),
                                tooltip=["source", "target", alt.Tooltip("score:Q", format=".3f"),
                                         alt.Tooltip("at_init:Q", format=".3f")]
                                ).properties(width=260, height=260, title="which layer-0 outputs the layer-1 keys read")
'''),
        md('''
**On the book's run.** The same tests on the `cpu` run's last checkpoint, a model grown on natural text. First what
its circuit looks at: one repeated random sequence through the layer-0 previous-token head and the best layer-1
induction head (rows: the token attending; columns: the tokens it attends to).
'''),
        code('''
from serpent.charts.induction import attention_chart

book = run.load_model()
L_book = min(31, (book.cfg.n_ctx - 1) // 2)
probe_book = repeated_random_tokens(16, L_book, book.cfg.d_vocab, seed=7)
prev0 = [h for h in heads["previous_token"] if h.startswith("0:")]
last = scores[scores["step"] == scores["step"].max()].set_index(["head", "score"])["value"]
layer1 = [f"1:{h}" for h in range(book.cfg.n_heads)]
best_induction = max(layer1, key=lambda h: last[(h, "prefix")])
shown = ([prev0[0]] if prev0 else []) + [best_induction]
_, cache = book.run_with_cache(probe_book[:1], names_filter=lambda n: n.endswith("hook_pattern"))
views = []
for head in shown:
    layer, h = map(int, head.split(":"))
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, h].numpy()
    views.append(attention_chart(pattern, title=f"head {head}", size=200))
alt.hconcat(*views)
'''),
        code('''
layer0 = [f"0:{h}" for h in range(book.cfg.n_heads)]
groups = {"previous-token heads (layer 0)": prev0,
          "the other layer-0 heads": [h for h in layer0 if h not in prev0],
          "induction heads": heads["induction"],
          "the other layer-1 heads": [h for h in layer1 if h not in heads["induction"]]}
rows = [ablate_heads(book, probe_book, heads=g, together=True).iloc[1:].assign(ablated=name)
        for name, g in groups.items() if g]
table = pd.concat([ablate_heads(book, probe_book, heads=[]).assign(ablated="nothing")] + rows)
table[["ablated", "head", "loss_first", "loss_second", "in_context_gain"]].round(2)
'''),
        md('''
Read the stripes first: the previous-token head attends one token back, the induction head to the token *after*
the earlier copy of the current one. Then the table. On natural text the circuit is weaker than in the toy: the
second copy is easier by about 0.8 nats, not six (random tokens are far from Python, so both copies cost about 12
nats). In the published build two heads in each layer carry all of it: ablating the previous-token heads 0:4 and
0:5 together leaves 0.04 nats of the gain, ablating the induction heads 1:0 and 1:2 leaves none (−0.05), while
ablating the six *other* heads of either layer leaves 0.78. Unlike the toy, where the circuit is spread over many
heads, the book's run has grown a small one, and the scores found exactly its members.
'''),
        exercise("the K-composition score", 2, 3, 10, '''
Write `k_composition(W_OV, W_Q, W_K)`: the K-composition score of a layer-0 head whose OV circuit is
`W_OV` (`d_model × d_model`, with TransformerLens' row vectors: the head writes `x @ W_OV`) and a layer-1 head with
`W_Q`, `W_K` (`d_model × d_head`; the attention score is `q_in @ W_Q @ W_K.T @ k_in.T`). Substitute the layer-0
output for `k_in` and normalise with Frobenius norms. The check names composing with the query side,
a missing normalisation, and squared norms.
'''),
        code('''
def k_composition(W_OV: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor) -> float:
    raise NotImplementedError("your code here")

from serpent.checks import check_k_composition
check_k_composition(k_composition);
'''),
        solution(KCOMP_SOLUTION),
    ] + footer(["Both scores are read from the attention pattern on repeated random tokens; chance is about 1/t.",
                "The planted circuit is detected exactly: prev-token head in layer 0, induction head in layer 1.",
                "On repeated random segments the circuit grows in about a thousand steps on a CPU: a loss plateau, then "
                "previous-token and induction heads together. Score with two probe lengths: a positional head can pass "
                "for an induction head at one.",
                "Ablation and patching test what heads do: in the toy the circuit is spread over several heads, so "
                "ablating them together removes the in-context gain that no single ablation removes; K-composition "
                "reads the layer-0 to layer-1 link from the weights.",
                "The book's cpu run grows a previous-token head in layer 0 first and a prefix-matching head in layer 1 later; "
                "the tiny run stops before either (chapter 2 shows the paper's model)."],
               ["Olsson et al. 2022, *In-context learning and induction heads*.",
                "Elhage et al. 2021, *A mathematical framework for transformer circuits*."],
               "[3 · Singular learning theory in one notebook](03_slt.ipynb)")


# ---------------------------------------------------------------------------------------------------------------
# 03 SLT
# ---------------------------------------------------------------------------------------------------------------

SGLD_SOLUTION = '''
import math
import torch
from serpent.checks import check_sgld_step

def sgld_step_solution(w, grad, w_star, noise, *, epsilon, n_beta, gamma):
    """w - (eps/2) (n_beta grad + gamma (w - w*)) + sqrt(eps) noise."""
    drift = n_beta * grad + gamma * (w - w_star)
    return w - (epsilon / 2) * drift + math.sqrt(epsilon) * noise

check_sgld_step(sgld_step_solution);
'''


def nb03():
    return header("03_slt", "3 · SGLD and the learning coefficient on models whose answer we know",
                  ["sample a tempered, localized posterior with SGLD",
                   "estimate the local learning coefficient λ̂ = nβ (E[L] − L(w*)) and check it where λ is known: "
                   "d/2 for a d-dimensional quadratic, 1/(2 max(a, b)) for a normal crossing (and why finite nβ "
                   "falls short of it)",
                   "implement one SGLD step yourself and see its discretisation bias"],
                  "basic probability; chapter 3.", "2 minutes", "2 minutes", ("03_slt", "Singular learning theory")) + [
        code('''
DIMS = [1, 2, 4, 8, 16]     # quadratics: lambda = d/2
CROSSINGS = [(1, 1), (1, 2), (1, 3)]   # K(w) = (w1^a w2^b)^2: lambda = 1/(2 max(a, b))
CHAINS, DRAWS, BURNIN = 8, 2000, 500
STEPS_BY_HAND = 2000        # SGLD steps of your own sampler (64 chains) per step size
''', tags=("parameters",)),
        fast("DIMS, CROSSINGS, CHAINS, DRAWS, BURNIN, STEPS_BY_HAND = [1, 4], [(1, 1), (1, 2)], 4, 400, 100, 400"),
        code('''
import altair as alt
import numpy as np
import pandas as pd
import torch
from serpent.config import SamplerConfig
from serpent.llc import crossing_llc_target, estimate_llc
from serpent.sgld import run_sgld
'''),
        md('''
## 1. A quadratic: λ = d/2

For L(w) = ½‖w‖² in d dimensions the tempered posterior exp(−nβ L) is Gaussian with variance 1/nβ per coordinate,
so nβ·E[L] = d/2 exactly: the learning coefficient of a regular model is half its number of parameters. A loss
function for the sampler takes the stacked parameters of R replicas (chains) and returns per-sample losses `(R, …)`:
'''),
        code('''
def quadratic(p, batch):                       # p["w"]: (R, d) -> (R, 1)
    return 0.5 * (p["w"] ** 2).sum(-1, keepdim=True)

cfg = SamplerConfig(epsilon=0.01, gamma=0.0, n_beta=10.0, chains=CHAINS, draws=DRAWS, burnin=BURNIN, batch_size=1)
rows = []
for d in DIMS:
    r = estimate_llc(quadratic, {"w": torch.zeros(d)}, lambda i: None, cfg, progress=False)
    rows.append({"d": d, "llc": r.mean, "std": r.std, "exact": d / 2})
quad = pd.DataFrame(rows)
quad.round(3)
'''),
        code('''
# padded axes: the end points and their error bars stay inside the frame
top = float(max((quad["llc"] + quad["std"]).max(), quad["exact"].max()) * 1.15)
base = alt.Chart(quad).encode(x=alt.X("d:Q", title="dimension d", scale=alt.Scale(padding=18)))
alt.layer(base.mark_line(color="grey", strokeDash=[4, 3]).encode(y="exact:Q"),
          base.mark_errorbar().encode(y=alt.Y("lo:Q", title="learning coefficient",
                                              scale=alt.Scale(domain=[0, top])), y2="hi:Q"
                                      ).transform_calculate(lo="datum.llc - datum.std", hi="datum.llc + datum.std"),
          base.mark_point(filled=True, size=60).encode(y="llc:Q", tooltip=["d", "llc", "std", "exact"])
          ).properties(width=320, height=220, title="quadratic: estimate (dots) vs d/2 (dashed)")
'''),
        md('''
## 2. A normal crossing: a singular model

K(w) = (w₁ᵃ w₂ᵇ)² vanishes on both axes: the set of minima is a cross, not a point. Its learning coefficient is
1/(2 max(a, b)) — smaller than the 1 a regular 2-parameter model would have. A Gaussian localizer (γ = 1) keeps the
chains near the origin.

The estimator λ̂ = nβ (E[L] − L(w*)) reaches λ only as nβ → ∞. At a finite nβ it estimates nβ E[K] under the
localised posterior, which `crossing_llc_target` computes by quadrature: the column `target at nβ` is what a correct
sampler should return. When a = b the multiplicity is m = 2 and the target sits well below λ, by about
(m − 1)/log nβ (chapter 3): that gap is the free energy's log log term, not a sampler bug.
'''),
        code('''
cross_cfg = SamplerConfig(epsilon=5e-3, gamma=1.0, n_beta=100.0, chains=CHAINS, draws=DRAWS, burnin=BURNIN,
                          batch_size=1)
rows, samples = [], []
for a, b in CROSSINGS:
    def crossing(p, batch, a=a, b=b):
        w = p["w"]
        return ((w[:, 0] ** a * w[:, 1] ** b) ** 2)[:, None]
    r = estimate_llc(crossing, {"w": torch.zeros(2)}, lambda i: None, cross_cfg, progress=False)
    rows.append({"a": a, "b": b, "llc": round(r.mean, 3), "std": round(r.std, 3),
                 "target at nβ": round(crossing_llc_target(a, b, cross_cfg.n_beta, cross_cfg.gamma), 3),
                 "λ (nβ → ∞)": 1 / (2 * max(a, b)), "m": 2 if a == b else 1})
pd.DataFrame(rows)
'''),
        md("Where do the chains go? Collect the draws with the sampler's `on_draw` callback:"),
        code('''
def draws_of(loss, cfg):
    out = []
    run_sgld(loss, {"w": torch.zeros(2)}, lambda i: None, cfg,
             on_draw=lambda s: out.append(s.params["w"].clone()), progress=False)
    w = torch.stack(out, 1).reshape(-1, 2)[::5].numpy()
    return pd.DataFrame({"w1": w[:, 0], "w2": w[:, 1]})

crossing_12 = lambda p, batch: ((p["w"][:, 0] * p["w"][:, 1] ** 2) ** 2)[:, None]
quad_2d = lambda p, batch: (p["w"] ** 2).sum(-1, keepdim=True)
small = SamplerConfig(**{**cross_cfg.to_dict(), "chains": 4, "draws": 1000})
panels = []
for name, loss in (("quadratic w1² + w2²", quad_2d), ("normal crossing (w1 w2²)²", crossing_12)):
    df = draws_of(loss, small)
    panels.append(alt.Chart(df).mark_circle(size=6, opacity=0.4).encode(
        x=alt.X("w1:Q", scale=alt.Scale(domain=[-2.5, 2.5])), y=alt.Y("w2:Q", scale=alt.Scale(domain=[-2.5, 2.5]))
    ).properties(width=230, height=230, title=name))
alt.hconcat(*panels)
'''),
        md('''
The singular posterior spreads along the axes: there is much more volume of near-optimal parameters, and the
learning coefficient measures exactly that volume scaling.

## 3. Your own SGLD step
'''),
        exercise("one SGLD step", 2, 5, 15, r'''
Implement the update the package (and devinterp) uses, without weight decay:

$$w \leftarrow w - \frac{\varepsilon}{2}\Big(n\beta\,\nabla L(w) + \gamma\,(w - w^*)\Big) + \sqrt{\varepsilon}\,\xi,
\qquad \xi \sim \mathcal N(0, I).$$

`sgld_step(w, grad, w_star, noise, *, epsilon, n_beta, gamma)` gets the gradient of the minibatch loss at `w` and
the noise ξ, and returns the new `w` (a new tensor; leave `w` alone). The check fits your update and names what is
off: a sign, a missing nβ, ε instead of ε/2, the noise scale.
'''),
        code('''
def sgld_step(w, grad, w_star, noise, *, epsilon, n_beta, gamma):
    raise NotImplementedError("your code here")

from serpent.checks import check_sgld_step
check_sgld_step(sgld_step);
'''),
        solution(SGLD_SOLUTION),
        md(r'''
Now sample a 1-D quadratic L = ½ a w² with your step. The exact posterior variance is 1/p with precision
p = nβ·a + γ, but SGLD without a Metropolis correction has stationary variance 1/(p(1 − εp/4)): too wide, and
unstable for εp ≥ 4. Measure it:
'''),
        code('''
a, n_beta, gamma = 1.0, 10.0, 5.0
p = n_beta * a + gamma
g = torch.Generator().manual_seed(0)
rows = []
for eps in [0.02, 0.05, 0.1, 0.15, 0.2, 0.25]:
    w, w_star, xs = torch.zeros(64, dtype=torch.float64), torch.zeros(64, dtype=torch.float64), []
    for i in range(STEPS_BY_HAND):
        w = sgld_step_solution(w, a * w, w_star, torch.randn(64, generator=g, dtype=torch.float64),
                               epsilon=eps, n_beta=n_beta, gamma=gamma)
        if i >= 100:
            xs.append(w)
    var = torch.stack(xs).var().item()
    rows.append({"epsilon * p": eps * p, "measured": var * p, "theory 1/(1 - eps p / 4)": 1 / (1 - eps * p / 4)})
bias = pd.DataFrame(rows)
long = bias.melt(id_vars="epsilon * p", var_name="curve", value_name="variance × p")
alt.Chart(long).mark_line(point=True).encode(x="epsilon * p:Q", y="variance × p:Q", color="curve:N").properties(
    width=340, height=220, title="SGLD's discretisation bias (exact posterior: 1)")
'''),
    ] + footer(["SGLD samples exp(−nβ L − γ/2 ‖w − w*‖²) approximately; only the product nβ matters.",
                "λ̂ = nβ (E[L] − L(w*)) recovers d/2 for quadratics; for normal crossings it recovers its "
                "finite-nβ target, which approaches 1/(2 max(a, b)) slowly when the multiplicity is 2.",
                "Without a Metropolis step SGLD is biased by a factor 1/(1 − εp/4): keep ε small against the "
                "curvature."],
               ["Lau et al., *The local learning coefficient: a singularity-aware complexity measure* (AISTATS 2025; "
                "arXiv 2308.12108, first titled *Quantifying degeneracy in singular models via the learning "
                "coefficient*).",
                "Watanabe 2009, *Algebraic geometry and statistical learning theory*.",
                "Welling & Teh 2011, *Bayesian learning via stochastic gradient Langevin dynamics*."],
               "[4 · The LLC in practice](04_llc.ipynb)")


# ---------------------------------------------------------------------------------------------------------------
# 04 LLC
# ---------------------------------------------------------------------------------------------------------------

def nb04():
    return header("04_llc", "4 · The LLC in practice: across the run's checkpoints, calibrated",
                  ["read the LLC over training next to the induction scores",
                   "read SGLD loss traces: healthy, diverging, still climbing",
                   "calibrate ε and nβ with a sweep before trusting a number",
                   "watch the LLC jump across a stage transition you grow on your CPU"],
                  "[notebook 3](03_slt.ipynb).", "6 minutes", "7 minutes", ("04_llc_in_practice", "The LLC in practice")) + [
        code('''
# None: the full run's committed results, else the cpu run's, else "tiny"
PRESET = None
RECOMPUTE = False                  # True: re-estimate the LLC at every checkpoint here
CAL_EPSILONS = [3e-4, 1e-3, 3e-3, 1e-2]
CAL_N_BETAS = [10.0, 30.0]
CAL_CHAINS, CAL_BURNIN, CAL_DRAWS, CAL_BATCH = 2, 60, 40, 16   # per setting: 100 SGLD steps of 2 chains
TOY_KEEP_EVERY, TOY_DRAWS = 100, 100   # section 4: LLC every 100 steps of the induction toy, SGLD draws per chain
''', tags=("parameters",)),
        fast("CAL_EPSILONS, CAL_N_BETAS, CAL_CHAINS, CAL_BURNIN, CAL_DRAWS, CAL_BATCH = [3e-4, 3e-3, 3e-1], [10.0], 2, 4, 8, 4\n"
             "TOY_KEEP_EVERY, TOY_DRAWS = 200, 40"),
        code('''
import altair as alt
import numpy as np
import pandas as pd
from serpent.course import course_run, live_settings
from serpent.llc import calibrate, llc_over_checkpoints
from serpent.charts.llc import calibration_chart, llc_curve_chart, loss_trace_chart
from serpent.tokens import batch_at

run = course_run(PRESET)
print("LLC settings of this run:", run.config.llc)
# the live calibration below, resized when the full run's 3M model meets a
# CPU (hours otherwise)
live = live_settings(run.config.model, dict(epsilons=CAL_EPSILONS, n_betas=CAL_N_BETAS, draws=CAL_DRAWS,
                                            batch=CAL_BATCH, window=run.config.model.n_ctx),
                     cpu=dict(epsilons=[1e-4, 1e-3, 1e-2], n_betas=[10.0], draws=20, batch=4, window=128))
'''),
        md("## 1. The LLC across training"),
        code('''
if RECOMPUTE:
    table, traces = llc_over_checkpoints(run)
else:
    table = pd.read_parquet(run.path / "llc" / "llc.parquet")
    traces = pd.read_parquet(run.path / "llc" / "traces.parquet")
table[["step", "mean", "std", "init_loss"]].round(3)
'''),
        code("llc_curve_chart(table)"),
        md('''
Next to the induction scores of notebook 2, on a shared axis (in the paper's model the LLC dips while the
previous-token heads form, LM3, and rises with the induction heads, LM4):
'''),
        code('''
from serpent.charts.llc import llc_with_scores_chart

llc_with_scores_chart(table, pd.read_parquet(run.path / "induction" / "scores.parquet"))
'''),
        md('''
## 2. Loss traces

A healthy trace (the minibatch loss minus the loss at the checkpoint) rises and then stays flat. A steady climb
means the chains have not reached equilibrium (more draws, or a larger γ); spikes or a runaway mean ε is too large.
'''),
        code("loss_trace_chart(traces, table)"),
        md('''
## 3. Calibration

Sweep ε × nβ at the last checkpoint, with the same minibatches as the stage (2 chains, a burn-in of 60 steps,
then 40 draws per setting, to keep the sweep to a couple of minutes). `stable` means no divergence, a non-negative
estimate and a flat trace after the burn-in (|drift| < 0.1). Choose the largest ε at which the chains are stable
and the estimate no longer moves with ε; where it keeps moving (SGLD's step-size bias grows with ε), prefer the
smallest stable ε that reaches the plateau in the steps you can afford. A diverging run is reported, not hidden.
'''),
        code('''
step = run.checkpoint_steps()[-1]
cfg = run.config.llc.__class__(**{**run.config.llc.to_dict(), "chains": CAL_CHAINS, "burnin": CAL_BURNIN,
                                  "draws": live["draws"], "batch_size": live["batch"]})
train, bos = run.tokens("train"), run.tokenizer().bos_id
batches = lambda i: batch_at(train, i, cfg.batch_size, live["window"], cfg.seed, bos)
cal = calibrate(run.config.model, run.load_params(step), batches, cfg, live["epsilons"], live["n_betas"],
                progress=False)
cal.drop(columns=["error"]).round(4)
'''),
        code("calibration_chart(cal)"),
        code('''
for _, r in cal[cal["diverged"]].iterrows():
    print(f"epsilon={r.epsilon:g}, n_beta={r.n_beta:g}:", r.error[:200], "...")
'''),
        md('''
## 4. The LLC across a transition you grew

Notebook 2 grew an induction circuit on repeated random segments in about a minute. Grow it again, keeping the
parameters every `TOY_KEEP_EVERY` steps, and estimate the LLC at each of them with the same minibatches of the toy's
data: the learning coefficient of a model *before*, *during* and *after* a stage transition you can watch happen.
'''),
        code('''
from tqdm.auto import tqdm
from serpent.config import SamplerConfig
from serpent.llc import estimate_llc
from serpent.course import toy_cache_dir
from serpent.induction_toy import TOY_MODEL, grow_induction_circuit, sgld_minibatches

# the same circuit as notebook 2's (loaded from runs/toy if that notebook
# has run), snapshots every 100 steps
grown = grow_induction_circuit(TOY_MODEL, steps=1200, eval_every=50, keep_every=100, seed=0,
                               cache=toy_cache_dir())
toy_batches = sgld_minibatches(50)        # fixed SGLD minibatches of the toy's data, unseen in training
toy_cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=TOY_DRAWS, batch_size=16)
rows = []
kept = {step: params for step, params in grown.snapshots.items() if step % TOY_KEEP_EVERY == 0}
for step, params in tqdm(kept.items(), desc="LLC of the toy"):
    r = estimate_llc(TOY_MODEL, params, toy_batches, toy_cfg, progress=False)
    rows.append({"step": step, "mean": r.mean, "std": r.std})
toy_llc = pd.DataFrame(rows)
toy_llc.round(2).T
'''),
        code('''
h = grown.history
curves = pd.concat([
    toy_llc.assign(panel="LLC", value=toy_llc["mean"])[["step", "panel", "value"]],
    h[h["score"] == "train_loss"].assign(panel="training loss")[["step", "panel", "value"]],
    h[(h["score"] == "prefix") & (h["head"] != "model")].groupby("step")["value"].max().reset_index()
     .assign(panel="best prefix score")[["step", "panel", "value"]],
])
alt.Chart(curves).mark_line(point=True).encode(
    x=alt.X("step:Q", title="training step", axis=alt.Axis(tickCount=6, format=",d")), y=alt.Y("value:Q", title=None),
    tooltip=["panel", "step", alt.Tooltip("value:Q", format=".3f")],
).properties(width=460, height=120).facet(row=alt.Row("panel:N", title=None, sort=["LLC", "training loss"])
                                          ).resolve_scale(y="independent")
'''),
        md('''
The LLC climbs while the model learns what it can without copying, levels off on the plateau, and more than doubles
within a couple of hundred steps when the circuit forms (measured with seeds 0, 1, 2: about 18 on the plateau, 41–44
after). The loss falls and the LLC rises: the model got better *and* more complex, the signature of a stage in
which new structure appears. The settings are the tiny preset's (ε = 10⁻³, γ = 100, nβ = 10); before you trust the
numbers, read the traces and calibrate as in sections 2 and 3 (`estimate_llc(..., record_traces=True)`).
'''),
    ] + footer(["The LLC is estimated at every analysed checkpoint with the same minibatches, so differences are "
                "not data noise.", "Traces are the first diagnostic: flat after a rise is healthy.",
                "Calibrate ε and nβ per model: too large diverges, too small never equilibrates.",
                "Across the induction toy's transition the LLC levels off on the loss plateau and then more than "
                "doubles as the circuit forms."],
               ["Timaeus, *A guide to sampling hyperparameter selection* (2026).",
                "Hoogland et al. 2024 (LLC over training of the paper's model)."],
               "[5 · Susceptibilities](05_susceptibilities.ipynb)")


# ---------------------------------------------------------------------------------------------------------------
# 05 susceptibilities
# ---------------------------------------------------------------------------------------------------------------

SUS_SOLUTION = '''
import numpy as np
from serpent.checks import check_susceptibility_estimator

def susceptibility_solution(task, probe, full_task, full_probe, baseline):
    """chi_xy = -( E_C[phi (l_xy - L)] - E_C[phi] E_full[l_xy - L] ),
    phi = L - baseline."""
    phi = task - baseline                                    # (chains, draws)
    delta = probe - task[..., None]                          # (chains, draws, N)
    full_delta = (full_probe - full_task[..., None]).mean(axis=(0, 1))
    return -((phi[..., None] * delta).mean(axis=(0, 1)) - phi.mean() * full_delta)

check_susceptibility_estimator(susceptibility_solution);
'''


def nb05():
    return header("05_susceptibilities", "5 · Susceptibilities: per-token, per-head, for one checkpoint",
                  ["compute the susceptibility χ of every token to every head with one batched SGLD run",
                   "read a probe sequence coloured by χ, the response matrix (heads × token patterns) and its PCA",
                   "tell signal from noise with the per-chain standard errors",
                   "implement the estimator from loss traces"],
                  "[notebook 4](04_llc.ipynb); covariances.", "5 minutes", "5 minutes",
                  ("05_susceptibilities", "Susceptibilities")) + [
        code('''
# None: the full run's committed results, else the cpu run's, else "tiny"
PRESET = None
COMPONENTS = "heads"          # every head; or a list such as ["0:1", "1:6"]
CHAINS, DRAWS, BATCH = 4, 40, 16
PROBE_SEQS, PROBE_LEN = 4, 64
HEAD = None                   # the head of the traces exercise (None: the best prefix-score head)
''', tags=("parameters",)),
        fast('COMPONENTS, CHAINS, DRAWS, BATCH, PROBE_SEQS, PROBE_LEN = ["0:1", "0:4", "1:6", "1:7"], 2, 4, 4, 2, 32'),
        code('''
import json
import altair as alt
import numpy as np
import pandas as pd
import torch
from serpent.course import course_run, live_settings
from serpent.patterns import PATTERNS, label_result
from serpent.susceptibility import (load_susceptibilities, response_matrix, response_pca, sample_susceptibilities,
                                    susceptibilities, susceptibility_from_traces)
from serpent.charts.susceptibility import response_matrix_chart, response_pca_chart
from serpent.charts.tokens import token_strip
from serpent.tokens import batch_at, fixed_windows

run = course_run(PRESET)
tok = run.tokenizer()
step = run.checkpoint_steps()[-1]
ind = run.stage_summary("induction")["summary"]
# the live sampling below, resized when the full run's 3M model meets a
# CPU (hours otherwise): the best previous-token and induction heads and
# one other head per layer, short windows, few draws
live = live_settings(run.config.model, dict(components=COMPONENTS, chains=CHAINS, draws=DRAWS, batch=BATCH,
                                            probe_seqs=PROBE_SEQS, probe_len=PROBE_LEN, window=run.config.model.n_ctx),
                     cpu=dict(components=sorted({ind["best_prev_token"]["head"], ind["best_prefix"]["head"], "0:0",
                                                 "1:0"}), chains=2, draws=16, batch=4, probe_seqs=2, probe_len=64,
                              window=128))
sc = run.config.susceptibility.sampler
cfg = sc.__class__(**{**sc.to_dict(), "chains": live["chains"], "draws": live["draws"], "batch_size": live["batch"]})
train, bos = run.tokens("train"), tok.bos_id
batches = lambda i: batch_at(train, i, cfg.batch_size, live["window"], cfg.seed, bos)
probe, _ = fixed_windows(run.tokens("test"), live["probe_seqs"], min(live["probe_len"], live["window"]), seed=1337,
                         bos_id=bos)
'''),
        md('''
## 1. χ for one checkpoint

One call: a full (unrestricted) SGLD run plus one run restricted to each head, all chains of all of them as one
batched computation; at every draw the per-token losses of the probe sequences are folded into running sums, and χ
follows in closed form (chapter 5):

χ^C_xy = −( E_C[φ_C · (ℓ_xy − L)] − E_C[φ_C] · E_full[ℓ_xy − L] ),  φ_C = L − L₀.

**Sign convention:** χ < 0 means the head *expresses* the token, χ > 0 that it *suppresses* it.
'''),
        code('''
model = run.load_model(step)
res = susceptibilities(model, probe, batches, cfg, components=live["components"], step=step, progress=False)
seconds = res.settings["sampling_seconds"]
print(f"{len(res)} tokens × {len(res.components)} heads in {seconds:.1f} s; "
      f"E_C[phi] per head (small and positive when healthy):",
      {k: round(v, 4) for k, v in list(res.settings["phi_mean"].items())[:4]}, "...")
'''),
        md("A probe sequence coloured by χ for two heads:"),
        code('''
strings = [tok.token_str(int(i)) for i in res.probe_tokens[0, 1:]]
rows = res.seq_index == 0
two = res.components[:2] if len(res.components) < 8 else ["0:1", "1:6"]
alt.vconcat(*[token_strip(strings, res.chi[rows, res.components.index(h)], title=f"head {h}: χ of each token",
                          width=480) for h in two])
'''),
        md('''
## 2. All heads, all checkpoints: the run's precomputed results

The pipeline's `susceptibility` stage computed χ for every head at several checkpoints with the run's settings.
Label every token with its pattern (chapter 6) and average χ per head and pattern: the **response matrix**.
'''),
        code('''
results = load_susceptibilities(run)
last = results[max(results)]
frame = label_result(last, tok)
print(f"steps {sorted(results)}; {len(last)} tokens at step {last.step}")
matrix = response_matrix(last, frame["pattern"].astype(str), categories=[p for p in PATTERNS
                                                                         if (frame["pattern"] == p).any()])
response_matrix_chart(matrix)
'''),
        code('''
pca = response_pca(matrix)
response_pca_chart(pca)
'''),
        md('''
## 3. Signal or noise?

Every χ comes with a standard error from the spread of its per-chain estimates. The share of tokens with
|χ| > 2 SE tells you per head whether there is signal at these sampling settings (with 2 chains the SE is itself
very noisy: use 4 or more chains to read it). More draws help more slowly than 1/√draws, because successive SGLD
draws are correlated: on the tiny run two independent estimates correlate 0.81 at 10 draws, 0.88 at 30 and 0.95 at
270, while every token's 15 nearest neighbours in χ space (what UMAP draws) agree far less (0.11 → 0.23 shared);
`bench/susceptibility_draws.py` measures this for any run.
'''),
        code('''
z = np.abs(last.chi) / np.where(last.chi_se > 0, last.chi_se, np.nan)
sig = pd.DataFrame({"head": last.components, "share |chi| > 2 SE": np.nanmean(z > 2, axis=0),
                    "share chi < 0": (last.chi < 0).mean(axis=0)})
alt.Chart(sig.melt(id_vars="head")).mark_bar().encode(
    x=alt.X("head:N", sort=last.components), y=alt.Y("value:Q", axis=alt.Axis(format="%")),
    row=alt.Row("variable:N", title=None), tooltip=["head", alt.Tooltip("value:Q", format=".1%")]
).properties(width=420, height=110)
'''),
        md("## 4. The estimator from traces"),
        exercise("the susceptibility estimator", 3, 5, 20, '''
Given stored loss traces, compute χ for one head:

* `task` `(chains, draws)`: the task loss L of the run restricted to the head, at every draw;
* `probe` `(chains, draws, N)`: the per-token losses ℓ_xy of that run;
* `full_task`, `full_probe`: the same for the unrestricted run;
* `baseline`: L₀ in φ = L − L₀.

Return χ `(N,)`: χ_xy = −( E_C[φ (ℓ_xy − L)] − E_C[φ] E_full[ℓ_xy − L] ), expectations over chains and draws.
'''),
        code('''
def susceptibility_estimator(task, probe, full_task, full_probe, baseline):
    raise NotImplementedError("your code here")

from serpent.checks import check_susceptibility_estimator
check_susceptibility_estimator(susceptibility_estimator);
'''),
        solution(SUS_SOLUTION),
        md('''
Your estimator on real traces: run SGLD for the full model and one head, store every draw's losses, apply your
function, and compare with the package's streaming estimator, which never stores a trace (same seeds, same chains):
'''),
        code('''
from serpent.model import per_token_loss
from serpent.sgld import make_restriction, run_sgld, transformer_loss_fn

head = HEAD or ind["best_prefix"]["head"]
mcfg, params = run.config.model, run.load_params(step)
loss_fn = transformer_loss_fn(mcfg)
task_trace, probe_trace = [], []

def record(state):
    with torch.no_grad():
        l = per_token_loss(state.params, probe, mcfg).reshape(state.params["embed.W_E"].shape[0], -1)
    probe_trace.append(l.double()); task_trace.append(l.double().mean(1))

r = run_sgld(loss_fn, params, batches, cfg, [make_restriction("full", params), make_restriction(head, params)],
             on_draw=record, progress=False)
T = torch.stack(task_trace, 1).reshape(2, cfg.chains, -1).numpy()            # (restriction, chain, draw)
P = torch.stack(probe_trace, 1).reshape(2, cfg.chains, len(task_trace), -1).numpy()
mine = susceptibility_solution(T[1], P[1], T[0], P[0], baseline=r.init_loss)

def observe(p):
    l = per_token_loss(p, probe, mcfg)
    return l.reshape(l.shape[0], -1).mean(1), l.reshape(l.shape[0], -1)

streamed, _, _ = sample_susceptibilities(loss_fn, params, batches, cfg, [head], observe, progress=False)
gap = np.abs(mine - streamed[:, 0]).max()
print(f"head {head}: max |yours - streaming| = {gap:.2e} "
      f"(χ ranges over ±{np.abs(mine).max():.2e})")
'''),
    ] + footer(["χ is a covariance between a head's weight-restricted loss and a token's loss under the posterior.",
                "All heads and chains run as one batched SGLD computation; χ is streamed, never stored as traces.",
                "The response matrix summarises heads by token pattern; standard errors say what is signal."],
               ["Baker et al. 2025, *Structural inference: interpreting small language models with "
                "susceptibilities*.", "Gordon et al. 2026 (per-token susceptibilities as attribution scores).",
                "devinterp 2.0.1, `devinterp.slt.susceptibilities` (the same estimator)."],
               "[6 · The rainbow serpent](06_serpent.ipynb)")


# ---------------------------------------------------------------------------------------------------------------
# 06 serpent
# ---------------------------------------------------------------------------------------------------------------

PATTERN_SOLUTION = '''
from serpent.checks import check_pattern_classifier
from serpent.patterns import token_text

BRACKETS_QUOTES = set("()[]{}<>\\"'`")
is_letter = lambda ch: ch.isalpha() or ch == "_" or ch == "\\ufffd"
is_word_char = lambda ch: is_letter(ch) or ch.isdigit()
is_special = lambda tok: tok.startswith("<|") and tok.endswith("|>")

def base_pattern(text, special, prev_text):
    """Rules 2-8 for one token (prev_text: the previous token's text, None
    at the start or after a special token)."""
    if special or text == "":
        return "other"
    if text.strip(" ") == "":
        return "spacing"
    if text.isspace():
        return "formatting"
    core = text.strip()
    if not any(ch.isalnum() for ch in core) and any(ch in BRACKETS_QUOTES for ch in core):
        return "delimiter"
    if any(ch.isdigit() for ch in core):
        return "numeric"
    if is_letter(core[0]):
        continues = not text[0].isspace() and bool(prev_text) and is_word_char(prev_text[-1])
        return "word part" if continues else "word start"
    return "other"

def classify_solution(tokens):
    texts = [token_text(t) for t in tokens]
    seen, out = set(), []
    for t, tok in enumerate(tokens):
        prev_text = texts[t - 1] if t > 0 and not is_special(tokens[t - 1]) else None
        label = base_pattern(texts[t], is_special(tok), prev_text)
        if (t >= 1 and (tokens[t - 1], tok) in seen and not is_special(tokens[t - 1]) and not is_special(tok)
                and label not in ("spacing", "formatting")):
            label = "induction"
        out.append(label)
        if t >= 1:
            seen.add((tokens[t - 1], tok))      # visible to later positions only
    return out

check_pattern_classifier(classify_solution);
'''


def nb06():
    return header("06_serpent", "6 · The rainbow serpent: patterns, UMAP across checkpoints, separation",
                  ["classify every (context, token) pair into a pattern and write the classifier yourself",
                   "embed the 16-dimensional susceptibility vectors with UMAP at every checkpoint, aligned",
                   "measure how well the patterns separate, and explore the serpent with a checkpoint slider",
                   "grow a miniature serpent on a CPU whose induction tokens separate as its circuit forms"],
                  "[notebook 5](05_susceptibilities.ipynb).", "7 minutes", "9 minutes (UMAP: 1 more with RECOMPUTE)",
                  ("06_serpent", "The rainbow serpent")) + [
        code('''
# None: the full run's committed results, else the cpu run's, else "tiny"
PRESET = None
# True: recompute labels, UMAP and separation here (UMAP compiles with
# numba: about 30 s more)
RECOMPUTE = False
MAX_POINTS = 4000        # points per checkpoint in the interactive chart
TOY_SERPENT_STEPS = [0, 600, 900, 1200]   # section 6: checkpoints of the induction toy (multiples of 100, <= 1200)
TOY_PROBES, TOY_CHAINS, TOY_DRAWS = 16, 2, 30
''', tags=("parameters",)),
        fast("MAX_POINTS = 800\nTOY_PROBES, TOY_CHAINS, TOY_DRAWS = 8, 2, 8\nTOY_SERPENT_STEPS = [0, 1200]"),
        code('''
import json
import altair as alt
import numpy as np
import pandas as pd
from serpent.course import course_run
from serpent.patterns import PALETTE, PATTERNS, classify_tokens, label_result, pattern_counts
from serpent.susceptibility import load_susceptibilities
from serpent.charts.serpent import serpent_chart, small_multiples, spacing_fin_chart

run = course_run(PRESET)
tok = run.tokenizer()
results = load_susceptibilities(run)
print("checkpoints with susceptibilities:", sorted(results))
'''),
        md('''
## 1. Token patterns

Every dot of the serpent is a token y in its context x. Its colour is its *pattern*, from a deterministic classifier
on the raw BPE strings; the first matching rule wins:

1. **induction** — the bigram (previous token, y) already occurred earlier in the context (not for whitespace-only
   tokens, nor after `<|endoftext|>`);
2. **spacing** — spaces only; 3. **formatting** — whitespace with a newline or tab;
4. **delimiter** — brackets/quotes without letters or digits; 5. **numeric** — contains a digit;
6. **word start** / 7. **word part** — a letter token that starts or continues a word; 8. **other**.
'''),
        code('''
last = results[max(results)]
labels = label_result(last, tok)
counts = pattern_counts(labels["pattern"].astype(str))
df = pd.DataFrame({"pattern": list(counts), "tokens": list(counts.values())})
alt.Chart(df).mark_bar().encode(
    x=alt.X("pattern:N", sort=list(PATTERNS)), y="tokens:Q", tooltip=["pattern", "tokens"],
    color=alt.Color("pattern:N", scale=alt.Scale(domain=list(PATTERNS), range=[PALETTE[p] for p in PATTERNS]),
                    legend=None)).properties(width=360, height=200, title=f"patterns of the {len(labels)} probe tokens")
'''),
        exercise("the pattern classifier", 3, 3, 25, '''
Write `classify(tokens: list[str]) -> list[str]`: one pattern per position for raw byte-level BPE strings
(`'Ġ'` = leading space, `'Ċ'` newline, `'ĉ'` tab), by the rules above. `serpent.patterns.token_text` turns a BPE
string into its text. Hints: build the set of bigrams seen so far *after* classifying each position; a token
*continues a word* when it has no leading whitespace and the previous token's text ends in a letter, digit or `_`.
The check shows the most common confusion with an example in context and the rule it breaks.
'''),
        code('''
def classify(tokens: list[str]) -> list[str]:
    raise NotImplementedError("your code here")

from serpent.checks import check_pattern_classifier
check_pattern_classifier(classify);
'''),
        solution(PATTERN_SOLUTION),
        code('''
agree = np.mean([classify_solution([tok.token_str(int(i)) for i in seq]) == classify_tokens(
    [tok.token_str(int(i)) for i in seq]) for seq in last.probe_tokens])
print(f"your classifier agrees with serpent.patterns on {agree:.0%} "
      "of the probe sequences")
'''),
        md('''
## 2. UMAP across checkpoints

At every checkpoint each token's susceptibility vector (one χ per head) is standardised per head and projected to
2-D with UMAP; each checkpoint's map starts from the previous one and is Procrustes-aligned to it, so tokens move
smoothly. The pipeline's `serpent` stage did it (`serpent/embedding.parquet`); `RECOMPUTE = True` does it here.
'''),
        code('''
if RECOMPUTE:
    from serpent.embedding import embed_checkpoints, preprocess, separation_table
    labels_all = pd.concat([label_result(r, tok) for _, r in sorted(results.items())], ignore_index=True)
    emb = embed_checkpoints(results, run.config.embedding)
    feats = {s: preprocess(r.chi, run.config.embedding.preprocess) for s, r in results.items()}
    sep = separation_table(emb, labels_all, feats)
    frame = emb.merge(labels_all.drop(columns=["seq", "pos"]), on=["step", "point"], how="left")
else:
    frame = pd.read_parquet(run.path / "serpent" / "embedding.parquet")
    sep = {int(k): v for k, v in json.loads((run.path / "serpent" / "separation.json").read_text())["steps"].items()}
n_steps = frame["step"].nunique()
print(f"{len(frame):,} rows: {n_steps} checkpoints × "
      f"{len(frame) // n_steps:,} tokens")
'''),
        md('''
## 3. How separated are the patterns?

The separation is the chance-corrected k-nearest-neighbour purity of the pattern labels: 0 = the patterns are
mixed at random, 1 = perfectly separated. It is measured in the 2-D map and in the full susceptibility space (which
does not depend on UMAP's randomness).

The headline version is **cross-token**: a token's neighbours that are the *same token* elsewhere in the text are
skipped. Most patterns are nearly a function of the token (every `␣` is spacing), and even a random network gives
copies of one token similar susceptibilities, so plain purity is high at step 0 for a reason that has nothing to do
with learning. Cross-token purity asks whether *different* tokens of one pattern respond alike: about 0 at
initialisation, rising as the heads learn to treat a pattern as a pattern. Read it against
`cross_token_null_mean ± cross_token_null_sd`, the score of patterns that mean nothing (printed below).
'''),
        code('''
rows = [{"step": s, "space": space, "separation": v[key]} for s, v in sep.items()
        for space, key in (("2-D map", "map"), ("susceptibility space", "features"),
                           ("cross-token (headline)", "cross_token")) if v.get(key) is not None]
by_pattern = pd.DataFrame([{"pattern": p, "separation": x} for p, x in sep[max(sep)]["by_pattern"].items()])
for s, v in sep.items():
    if v.get("cross_token_null_sd") is not None:
        mean, sd = v["cross_token_null_mean"], v["cross_token_null_sd"]
        print(f"step {s:>6}: cross-token {v['cross_token']:+.3f}   "
              f"no-pattern null {mean:+.3f} ± {sd:.3f}")
alt.hconcat(
    alt.Chart(pd.DataFrame(rows)).mark_line(point=True).encode(
        x=alt.X("step:Q", scale=alt.Scale(type="symlog")), y="separation:Q", color="space:N",
        tooltip=["step", "space", alt.Tooltip("separation:Q", format=".3f")]).properties(
        width=240, height=200, title="separation of patterns over training"),
    alt.Chart(by_pattern).mark_bar().encode(
        x=alt.X("pattern:N", sort=list(PATTERNS)), y="separation:Q",
        color=alt.Color("pattern:N", scale=alt.Scale(domain=list(PATTERNS), range=[PALETTE[p] for p in PATTERNS]),
                        legend=None)).properties(width=220, height=200, title=f"per pattern, step {max(sep)}"))
'''),
        md('''
**Induction tokens and induction heads.** The question the whole course builds up to: do the tokens an induction
head can predict (the second occurrence of a bigram) gather in the serpent *when* the induction heads appear? Left:
the best prefix-matching score of any head at each checkpoint (notebook 2); right: the cross-token separation of the
induction pattern alone. Repeated identifiers respond alike even without an induction head, so a slow rise alone
proves nothing: on a run that grows the circuit (the book's `cpu` run; the `full` preset) the test is whether the
separation *jumps* when the prefix score does, measured against the same measure for patterns that mean nothing
(`python -m serpent milestones` prints both).
'''),
        code('''
scores = pd.read_parquet(run.path / "induction" / "scores.parquet")
prefix = scores[(scores["score"] == "prefix") & (scores["head"] != "model")].groupby("step")["value"].max()
timeline = pd.DataFrame([{"step": s, "best prefix score": float(prefix.get(s, np.nan)),
                          "induction tokens' separation": v.get("by_pattern_cross_token", {}).get("induction", np.nan)}
                         for s, v in sorted(sep.items())])
print(timeline.round(3).to_string(index=False))
long = timeline.melt("step", var_name="measure")
alt.Chart(long).mark_line(point=True).encode(
    x=alt.X("step:Q", scale=alt.Scale(type="symlog")), y=alt.Y("value:Q", title=None),
    tooltip=["step", "measure", alt.Tooltip("value:Q", format=".3f")]).properties(width=230, height=180).facet(
    column=alt.Column("measure:N", title=None)).resolve_scale(y="independent")
'''),
        md('''
## 4. The serpent

Drag the slider to move through training; click a pattern in the legend to isolate it (shift-click for several);
click a dot to see its χ for every head below (double-click to clear). The chart is plain Altair: it works in the
book, in Colab and in a page opened from disk.
'''),
        code("serpent_chart(frame, max_points=MAX_POINTS)"),
        code("small_multiples(frame, max_points=MAX_POINTS)"),
        md('''
**The spacing fin.** Whitespace tokens coloured by the width of the indentation they carry (spaces inside the
token plus the spaces just before it, `n_prev_spaces`): in a mature serpent they line up along a fin that counts
the indentation. In Python code a newline travels with the next line's indentation (`ĊĠĠĠ` is one *formatting*
token) and pure *spacing* tokens are rare, so the fin is looked for among both.
'''),
        code('''
spacing_fin_chart(frame, max_points=MAX_POINTS)
'''),
        md('''
## 5. Try it live

The package's token inspector (a kernel is needed, so these cells are not run when the book is built): pick a
checkpoint, search for a token, and see its context and its 16 susceptibilities as bars.
'''),
        code('''
from serpent.widgets import token_inspector
token_inspector(run).widget
''', tags=("skip-execution",)),
        md('''
Or build your own from ipywidgets: pick a checkpoint and a pattern, and see the map and the tokens of that pattern
with the largest |χ|.
'''),
        code('''
import ipywidgets as widgets
from IPython.display import display
from serpent.charts.serpent import serpent_snapshot

steps = sorted(frame["step"].unique())
step_w = widgets.SelectionSlider(options=steps, value=steps[-1], description="step")
pat_w = widgets.Dropdown(options=["all"] + list(PATTERNS), value="all", description="pattern")
out = widgets.Output()

def show(_=None):
    g = frame[frame["step"] == step_w.value]
    if pat_w.value != "all":
        g = g[g["pattern"] == pat_w.value]
    heads = [c for c in g.columns if ":" in c]
    top = g.assign(size=g[heads].abs().max(axis=1)).nlargest(8, "size")[["token", "context", "pattern", "size"]]
    with out:
        out.clear_output(wait=True)
        display(serpent_snapshot(g) if len(g) else "no tokens", top)

step_w.observe(show, "value"); pat_w.observe(show, "value"); show()
display(widgets.HBox([step_w, pat_w]), out)
''', tags=("skip-execution",)),
        md('''
**Two training seeds side by side** (the papers report that the body plan is reproducible across seeds): train a
second run and compare its small multiples with this one, and with two numbers per checkpoint
(`serpent.embedding.compare_serpents`): the Procrustes correlation of the two maps after aligning one onto the other
(1 = the same shape), and the overlap of each token's 15 nearest neighbours in the two runs' susceptibility spaces
(1 = the same neighbours; `knn_chance` is what unrelated runs would give); from a terminal,
`python -m serpent compare runs/tiny runs/tiny-seed1`. Not run when the book is built:
'''),
        code('''
import subprocess, sys
SEED_PRESET = run.config.preset
subprocess.run([sys.executable, "-m", "serpent", "run", "--preset", SEED_PRESET, "--out", f"runs/{SEED_PRESET}-seed1",
                "--set", "train.seed=1", "--set", "model.seed=1"], check=True)
from serpent.rundir import Run
from serpent.embedding import compare_serpents
other = pd.read_parquet(Run.open(f"runs/{SEED_PRESET}-seed1").path / "serpent" / "embedding.parquet")
display(compare_serpents(frame, other).round(3))
alt.vconcat(small_multiples(frame, max_points=1000).properties(title="seed 0"),
            small_multiples(other, max_points=1000).properties(title="seed 1"))
''', tags=("skip-execution",)),
        md('''
## 6. A serpent you can grow on a CPU: the induction toy

On text we only have a rule of thumb for which tokens the induction circuit predicts. The induction toy of
notebooks 2 and 4 grows its circuit in about a minute, and there we know exactly which tokens it predicts: a
token is **copyable** when the bigram (previous token, token) already occurred in its sequence, the induction
pattern's rule (`copyable_tokens`); every other token is **new**. Compute the susceptibilities of 16 toy sequences at
four moments (initialisation, the plateau, mid-transition, after) with the same estimator as the serpent, embed them
with UMAP aligned across the checkpoints, and colour the two kinds.
'''),
        code('''
from tqdm.auto import tqdm
from serpent.config import EmbeddingConfig, SamplerConfig
from serpent.embedding import embed_checkpoints, preprocess, separation
from serpent.induction_toy import (TOY_MODEL, copyable_tokens, grow_induction_circuit, repeated_segments,
                                   sgld_minibatches)
from serpent.susceptibility import susceptibilities

from serpent.course import toy_cache_dir

grown = grow_induction_circuit(TOY_MODEL, steps=1200, eval_every=50, keep_every=100, seed=0, progress=False,
                               cache=toy_cache_dir())         # notebook 2's circuit, from runs/toy when it ran
toy_probe = repeated_segments(TOY_PROBES, TOY_MODEL.n_ctx, TOY_MODEL.d_vocab, seed=7_000_000)
kind = np.where(copyable_tokens(toy_probe.numpy()), "copyable", "new")
toy_batches = sgld_minibatches(50)        # fixed SGLD minibatches of the toy's data, unseen in training
toy_cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=TOY_CHAINS, draws=TOY_DRAWS, batch_size=16)
toy_chi = {}
for step in tqdm(TOY_SERPENT_STEPS, desc="toy susceptibilities"):
    grown.model.load_state_dict(grown.snapshots[step], strict=False)
    toy_chi[step] = susceptibilities(grown.model, toy_probe, lambda i: toy_batches[i % len(toy_batches)], toy_cfg,
                                     step=step, progress=False)
r = toy_chi[max(toy_chi)]
toy_kind = kind[r.seq_index, r.position]
toy_sep = {step: separation(preprocess(res.chi), toy_kind) for step, res in toy_chi.items()}
print("separation of copyable vs new tokens (0 = chance, 1 = perfect):", {s: round(v, 2) for s, v in toy_sep.items()})
'''),
        code('''
toy_map = embed_checkpoints(toy_chi, EmbeddingConfig(n_neighbors=15, min_dist=0.1), progress=False)
toy_map["kind"] = toy_kind[toy_map["point"].to_numpy()]
loss = grown.history[grown.history["score"] == "train_loss"].set_index("step")["value"]
def panel(s):
    at = f"loss {loss[s]:.2f}, " if s in loss.index else ""
    return f"step {s} ({at}separation {toy_sep[s]:.2f})"

toy_map["panel"] = [panel(s) for s in toy_map["step"]]
alt.Chart(toy_map).mark_circle(size=12, opacity=0.7).encode(
    x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
    color=alt.Color("kind:N", scale=alt.Scale(domain=["copyable", "new"], range=[PALETTE["induction"], "#999999"])),
    tooltip=["kind", "seq", "pos"],
).properties(width=200, height=200).facet(facet=alt.Facet("panel:N", title=None, sort=list(toy_map["panel"].unique())),
                                          columns=2)
'''),
        md('''
At initialisation the two kinds are mixed: nothing in the model treats them differently. On the plateau they begin to
part (the model already predicts some repeats without a full circuit); once the previous-token and induction heads
have formed, copyable and new tokens lie in different regions and the separation is close to 1 (measured with this
notebook's settings: 0.02, 0.29, 0.66, 0.92 at steps 0, 600, 900, 1,200; with 24 sequences and 4 chains × 30 draws:
0.06, 0.43, 0.65, 0.99). This is the induction arm
of the serpent in miniature, with a ground truth for what it should show. On real text the circuit's tokens are
only one pattern among many, and the full run on a GPU is where to look for them.
'''),
    ] + footer(["Each token's pattern comes from a deterministic, pluggable classifier on BPE strings.",
                "UMAP of the standardised susceptibility vectors, aligned across checkpoints, draws the serpent.",
                "The separation measure turns 'the serpent looks handsome' into a number per checkpoint.",
                "On the induction toy, copyable tokens separate from new ones as the circuit forms: from about 0 at "
                "initialisation to above 0.9 after the transition."],
               ["Wang et al. 2025, *Embryology of a language model* (the rainbow serpent).",
                "McInnes et al. 2018, *UMAP*.", "The run's offline explorer page: `explorer.html` in the run "
                "directory."],
               "[7 · Going further](07_going_further.ipynb)")


# ---------------------------------------------------------------------------------------------------------------
# 07 going further
# ---------------------------------------------------------------------------------------------------------------

def nb07():
    return header("07_going_further", "7 · Going further: Pythia's architecture, the paper's checkpoints, your model",
                  ["run susceptibilities on any `HookedTransformer`: here the Pythia-14m architecture (rotary "
                   "positions, parallel attention and MLP), randomly initialised",
                   "load the paper's published checkpoints (when the Hugging Face hub is reachable)",
                   "apply the pipeline to your own model"],
                  "[notebook 5](05_susceptibilities.ipynb).", "5 minutes", "5 minutes",
                  ("07_going_further", "Going further")) + [
        code('''
# None: the full run's committed results, else the cpu run's, else "tiny"
PRESET = None
COMPONENTS = "heads+mlp"     # Pythia's 6 x 4 heads and 6 MLPs
CHAINS, DRAWS, BATCH = 2, 20, 8
PROBE_SEQS, PROBE_LEN = 4, 64
PAPER_STEPS = [0, 5000, 20000, 49900]   # checkpoints of timaeus/tetrahedron-3m-og to fetch when online
''', tags=("parameters",)),
        fast('COMPONENTS, CHAINS, DRAWS, BATCH, PROBE_SEQS, PROBE_LEN = ["0:0", "3:1", "5:3", "mlp:5"], 2, 3, 2, 2, 32'),
        code('''
import os, sys, warnings
warnings.filterwarnings("ignore", message="HookedTransformer is deprecated")
import altair as alt
import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from serpent.course import course_run
from serpent.susceptibility import susceptibilities
from serpent.tokens import batch_at, fixed_windows

run = course_run(PRESET)
tok = run.tokenizer()
'''),
        md('''
## 1. The Pythia-14m architecture, randomly initialised

No download: the configuration is written out (6 layers × 4 heads, d_model 128, MLPs of 512, rotary positions on
a quarter of each head, attention and MLP in parallel). We keep the course's tokenizer (a few thousand tokens instead
of Pythia's 50k) and a short context of 128 tokens, so that it runs on a CPU; `susceptibilities` takes the generic `torch.func` path
for architectures other than the course's.
'''),
        code('''
pythia_cfg = HookedTransformerConfig(
    n_layers=6, n_heads=4, d_model=128, d_head=32, d_mlp=512, act_fn="gelu", normalization_type="LN",
    positional_embedding_type="rotary", rotary_dim=8, parallel_attn_mlp=True, original_architecture="GPTNeoXForCausalLM",
    n_ctx=min(128, run.config.model.n_ctx), d_vocab=tok.vocab_size, seed=0, device="cpu")
pythia = HookedTransformer(pythia_cfg)
n_params = sum(p.numel() for p in pythia.parameters())
print(f"{n_params:,} parameters (the real Pythia-14m: 14M, mostly its "
      "50k-token embeddings)")
'''),
        code('''
train, bos = run.tokens("train"), tok.bos_id
sc = run.config.susceptibility.sampler
cfg = sc.__class__(**{**sc.to_dict(), "chains": CHAINS, "draws": DRAWS, "batch_size": BATCH})
batches = lambda i: batch_at(train, i, cfg.batch_size, pythia_cfg.n_ctx, cfg.seed, bos)
probe, _ = fixed_windows(run.tokens("test"), PROBE_SEQS, min(PROBE_LEN, pythia_cfg.n_ctx), seed=1337, bos_id=bos)
res = susceptibilities(pythia, probe, batches, cfg, components=COMPONENTS, progress=False)
print(f"{len(res)} tokens × {len(res.components)} components, "
      f"forward path: {res.settings['forward']}, "
      f"{res.settings['sampling_seconds']:.1f} s")
df = pd.DataFrame({"component": res.components, "mean |chi|": np.abs(res.chi).mean(0)})
alt.Chart(df).mark_bar().encode(x=alt.X("component:N", sort=res.components), y="mean |chi|:Q",
                                tooltip=["component", "mean |chi|"]).properties(
    width=480, height=180, title="random-init Pythia-14m architecture: mean |χ| per component")
'''),
        md('''
## 2. The paper's checkpoints

The tetrahedron-3m checkpoints of Hoogland et al. are on the Hugging Face hub (`timaeus/tetrahedron-3m-og`). The
loader reads them with `torch.load(weights_only=True)` and maps them onto the course's parameter names. The hub is
only contacted in Colab or when you set `SERPENT_ONLINE=1`; offline the cell says so and moves on.
'''),
        code('''
from serpent.checkpoints import download_timaeus_checkpoint, load_timaeus_checkpoint
from serpent.config import ModelConfig
from serpent.errors import CheckpointError
from serpent.induction import classify_heads, induction_scores
from serpent.model import build_model

ONLINE = ("google.colab" in sys.modules or os.environ.get("SERPENT_ONLINE") == "1") and not FAST
if ONLINE:
    paper = build_model(ModelConfig())          # the tetrahedron-3m architecture
    rows = []
    for s in PAPER_STEPS:
        try:
            paper.load_state_dict(load_timaeus_checkpoint(download_timaeus_checkpoint(s)), strict=False)
        except CheckpointError as e:
            print(e)
            break
        c = classify_heads(induction_scores(paper, n_seqs=16, half_len=128, bos_id=0))
        rows.append({"step": s, "previous-token heads": c["previous_token"], "induction heads": c["induction"]})
    from IPython.display import display
    display(pd.DataFrame(rows))
else:
    print("offline (or fast mode): not contacting the Hugging Face hub. In "
          "Colab this cell loads the paper's checkpoints at steps "
          f"{PAPER_STEPS} and finds their previous-token (0:1, 0:4) and "
          "induction heads (1:6, 1:7).")
'''),
        md('''
## 3. Your own model

Anything that is a `HookedTransformer` works: build it (or load it with `HookedTransformer.from_pretrained` when
online), give it SGLD minibatches from its training distribution and probe sequences, and call `susceptibilities`.
For the course's architecture family the fast batched forward is used automatically. A one-layer model with an MLP:
'''),
        code('''
from serpent.model import build_model
mine_cfg = ModelConfig(n_layers=1, n_heads=4, d_model=64, d_head=16, n_ctx=pythia_cfg.n_ctx,
                       d_vocab=tok.vocab_size, attn_only=False, d_mlp=128)
my_model = build_model(mine_cfg)
mine = susceptibilities(my_model, probe, batches, cfg, components="heads+mlp", progress=False)
print(mine.components, "| forward path:", mine.settings["forward"], "| chi", mine.chi.shape)
'''),
        md('''
To run the whole pipeline on a different corpus or size, use the command line with overrides:

```bash
python -m serpent run --preset tiny --set data.corpus=shakespeare \\
    --out runs/shakespeare
python -m serpent run --preset colab --out runs/colab  # on a T4
```
'''),
    ] + footer(["`susceptibilities` works on any HookedTransformer: a fast path for the course's family, a generic "
                "`torch.func` path for the rest (Pythia, GPT-2…).",
                "The paper's checkpoints load into the course's model with one call when the hub is reachable.",
                "Everything here is also a command: `python -m serpent`."],
               ["Gordon et al. 2026 (susceptibility clusters in Pythia-14m).",
                "Timaeus, *Spectroscopy* (Pythia-1.4B, 2026).", "Wang & Murfet 2026, *Patterning*."],
               "[8 · Patterning](08_patterning.ipynb)")


# ---------------------------------------------------------------------------------------------------------------
# 08 patterning
# ---------------------------------------------------------------------------------------------------------------

PATTERNING_SOLUTION = """
import numpy as np
from serpent.checks import check_patterning_shift

def patterning_shift_solution(chi, d_mu):
    k = chi.shape[1]
    P = np.eye(k) - np.ones((k, k)) / k      # projection onto shifts that sum to zero
    return P @ np.linalg.pinv(chi @ P) @ d_mu

check_patterning_shift(patterning_shift_solution);
"""


def nb08():
    return header("08_patterning", "8 · Patterning: choosing the data that grow a circuit",
                  ["invert the linear response of susceptibilities: which reweighting of the data moves the "
                   "circuit's heads the way you ask",
                   "compute it from the induction toy's susceptibilities on its loss plateau",
                   "train with the reweighted data and watch the induction circuit form sooner, or not at all"],
                  "[notebook 5](05_susceptibilities.ipynb) and the induction toy of "
                  "[notebook 2](02_induction.ipynb).", "3 minutes", "3 minutes",
                  ("07_going_further", "Going further")) + [
        code("""
PLATEAU_STEP = 600       # the toy's checkpoint on its loss plateau, before the circuit forms
PROBES, CHAINS, DRAWS = 16, 2, 30   # susceptibility sampling on the toy
STRENGTHS = [0.5, -0.5]  # how far to reweight along the shift (+: grow, -: hold back)
STEPS = 1200             # training steps of each reweighted toy
""", tags=("parameters",)),
        fast("PROBES, CHAINS, DRAWS, STEPS = 8, 2, 8, 900"),
        md("""
## 1. Reading, then writing

Notebooks 5 and 6 *read* structure: the susceptibility χ^C_xy says how the posterior expectation of head C's
observable φ_C would move if the token y in context x were upweighted in the data. Averaged over a class of
tokens k (here: tokens the induction circuit can copy, and new tokens), these numbers form the response matrix
χ_Ck, and to first order a shift dh of the classes' weights moves the observables by

dμ_C = Σ_k χ_Ck dh_k.

**Patterning** (Wang and Murfet, 2026) runs this backwards: choose the change dμ you want (lower φ on the circuit's
heads: their weights more tightly constrained, more structure there) and solve for the data shift. Among shifts that
only redistribute weight between classes (Σ_k dh_k = 0), the smallest one whose response comes closest to dμ is

dh = P (χ P)⁺ dμ,  P = I − 11ᵀ/K  (⁺: the Moore–Penrose pseudo-inverse).

The toy makes it concrete: we know the circuit it grows (notebook 2), so we can ask for it and check the answer.
"""),
        code("""
import altair as alt
import numpy as np
import pandas as pd
from serpent.config import SamplerConfig
from serpent.course import toy_cache_dir
from serpent.induction import classify_heads
from serpent.induction_toy import (TOY_MODEL, copyable_tokens, grow_induction_circuit, repeated_segments,
                                   sgld_minibatches)
from serpent.milestones import onset
from serpent.patterning import circuit_target, class_weights, patterning_shift
from serpent.susceptibility import response_matrix, susceptibilities

# notebook 2's circuit, from runs/toy when that notebook has run
grown = grow_induction_circuit(TOY_MODEL, steps=1200, eval_every=50, keep_every=100, seed=0, progress=False,
                               cache=toy_cache_dir())
heads = classify_heads(grown.history)
threshold = heads["thresholds"]["prefix"]
print("the unweighted toy's circuit: previous-token heads", heads["previous_token"],
      "| induction heads", heads["induction"])


def best_prefix(history):
    rows = history[(history["score"] == "prefix") & history["head"].str.startswith("1:")]
    return rows.groupby("step")["value"].max()


base = best_prefix(grown.history)
print("induction onset (best layer-1 prefix score stays above", round(threshold, 3), "from step):",
      onset(base.index.tolist(), base.to_numpy(), threshold))
"""),
        md("""
## 2. The response matrix on the plateau

At step `PLATEAU_STEP` the loss has plateaued and no head is an induction head yet. χ for every head, on probe
sequences of the toy's data, averaged over copyable and new tokens:
"""),
        code("""
probe = repeated_segments(PROBES, TOY_MODEL.n_ctx, TOY_MODEL.d_vocab, seed=7_000_000)
kind = np.where(copyable_tokens(probe.numpy()), "copyable", "new")
batches = sgld_minibatches(50)        # fixed SGLD minibatches of the toy's data, unseen in training
cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=CHAINS, draws=DRAWS, batch_size=16)
grown.model.load_state_dict(grown.snapshots[PLATEAU_STEP], strict=False)
res = susceptibilities(grown.model, probe, lambda i: batches[i % len(batches)], cfg, step=PLATEAU_STEP,
                       progress=False)
chi = response_matrix(res, kind[res.seq_index, res.position], categories=["copyable", "new"])
long = chi.reset_index(names="head").melt("head", var_name="tokens", value_name="mean χ")
alt.Chart(long).mark_bar().encode(
    x=alt.X("head:N", title=None), y="mean χ:Q", color=alt.Color("tokens:N", title="tokens"),
    xOffset="tokens:N", tooltip=["head", "tokens", alt.Tooltip("mean χ:Q", format=".4f")]
).properties(width=520, height=200, title=f"response matrix of the toy at step {PLATEAU_STEP}")
"""),
        md("""
Every head *expresses* the copyable tokens (χ < 0: more of them would constrain the head's weights) and suppresses
the new ones, the layer-1 heads most strongly. Before any head copies, the susceptibilities already say which data
feed the circuit.
"""),
        exercise("invert the response", 2, 4, 10, """
Write `patterning_shift(chi, d_mu)`: given the response matrix as an array `chi` (C components × K classes) and the
wanted change `d_mu` (C,), return the class-weight shift (K,) that sums to zero and whose response `chi @ shift`
comes closest to `d_mu`, with the smallest norm. The check names a missing zero-sum constraint, the transpose in
place of the pseudo-inverse, a flipped sign, and projecting after inverting.
"""),
        code("""
def patterning_shift_yours(chi: np.ndarray, d_mu: np.ndarray) -> np.ndarray:
    raise NotImplementedError("your code here")

from serpent.checks import check_patterning_shift
check_patterning_shift(patterning_shift_yours);
"""),
        solution(PATTERNING_SOLUTION),
        md("""
## 3. Ask for the circuit

The target: lower φ by one unit on every head of the unweighted toy's circuit (its previous-token and induction
heads), leave the others alone. The shift becomes training weights per class with `class_weights`
(`1 + strength · shift / max|shift|`, mean 1); a negative strength asks for the opposite.
"""),
        code("""
shift = patterning_shift(chi, circuit_target(heads))
print("shift of the class weights:", shift.round(3).to_dict())
weights = {s: class_weights(shift, s) for s in STRENGTHS}
for s, w in weights.items():
    print(f"strength {s:+}: each copyable token counts {w['copyable']:.2f}, "
          f"each new token {w['new']:.2f}")
"""),
        md("""
## 4. Train on the reweighted data

The same toy, the same seed, the same batches; only the weight of each token's loss changes (a weighted mean over
the batch). The unweighted curve is the circuit of notebook 2.
"""),
        code("""
curves = [base.rename("best prefix score").reset_index().assign(data="unweighted")]
onsets = {"unweighted": onset(base.index.tolist(), base.to_numpy(), threshold)}
for s, w in weights.items():
    g = grow_induction_circuit(TOY_MODEL, steps=STEPS, eval_every=50, seed=0, progress=False, data_weights=w,
                               cache=toy_cache_dir())
    label = f"copyable ×{w['copyable']:.2f}, new ×{w['new']:.2f}"
    p = best_prefix(g.history)
    curves.append(p.rename("best prefix score").reset_index().assign(data=label))
    onsets[label] = onset(p.index.tolist(), p.to_numpy(), threshold)
print("induction onset step (None: not within the run):", onsets)
df = pd.concat(curves, ignore_index=True)
rule = alt.Chart(pd.DataFrame({"y": [threshold]})).mark_rule(strokeDash=[5, 3], color="grey").encode(y="y:Q")
lines = alt.Chart(df).mark_line(point=True).encode(
    x=alt.X("step:Q", title="training step"), y=alt.Y("best prefix score:Q", title="best layer-1 prefix score"),
    color=alt.Color("data:N", title=None, legend=alt.Legend(orient="bottom", columns=1)),
    tooltip=["data", "step", alt.Tooltip("best prefix score:Q", format=".3f")])
(lines + rule).properties(width=460, height=240, title="the induction circuit under three data weightings")
"""),
        md("""
With the notebook's settings (seed 0) the circuit forms at step 850 on the unweighted data, at step 600 when the
copyable tokens count three times as much as the new ones, and not within 1,200 steps the other way round (its best
prefix score stays below 0.01). The same happened for seeds 1 and 2 (BENCHMARKS.md, "Patterning the toy").

**What this shows, and what it does not.** Reweighting toward what the circuit's heads express grows the circuit
sooner; away from it, holds it back. On the toy that is no surprise in hindsight (copyable tokens are the only ones
an induction head helps with), which is the point: the susceptibilities, read on the plateau *before* any head
copies, pointed to the right data without being told. The response is linear only for small shifts; a strength of
±0.5 is far from infinitesimal, and the delay is an extrapolation that happened to hold. Wang and Murfet do this on
the 3M language model, reweighting its training data along principal directions of its susceptibilities.
"""),
        md("""
### Try it

* Target only the layer-0 previous-token heads (`{h: -1.0 for h in heads["previous_token"]}`): is the shift
  different, and does the circuit still form sooner?
* Use a smaller strength (0.1, 0.25) and compare the onset's change with the linear prediction (twice the strength,
  twice the effect?).
* Take the response matrix at initialisation (step 0) instead of the plateau: does it already point the same way?
"""),
    ] + footer(["The response matrix is a linear map from data shifts to changes in the heads' observables; its "
                "pseudo-inverse, within shifts that only move weight between classes, gives the data for a target.",
                "Read on the toy's plateau, it says to upweight the tokens an induction head can copy: the circuit "
                "then forms sooner, and with the opposite weights not at all in the same training time."],
               ["Wang & Murfet 2026, *Patterning: the dual of interpretability* (arXiv 2601.13548).",
                "Adam, Hoogland & Murfet 2026, *Patterning toy models of superposition* (Timaeus)."])


NOTEBOOKS = {"00_setup": nb00, "01_growing": nb01, "02_induction": nb02, "03_slt": nb03, "04_llc": nb04,
             "05_susceptibilities": nb05, "06_serpent": nb06, "07_going_further": nb07, "08_patterning": nb08}


SOLUTIONS = ROOT / "notebooks" / "solutions"   # the instructor's versions: solutions in place of the stubs


def with_solutions(cells: list, name: str) -> list:
    """The solutions version of a notebook's cells: each exercise's stub (the code cell that raises
    NotImplementedError) is dropped and the solution below it shown, not collapsed; the badge opens this version."""
    import copy
    out = []
    for cell in cells:
        cell = copy.deepcopy(cell)
        tags = cell.metadata.get("tags", [])
        if "solution" in tags:
            if out and out[-1].cell_type == "code" and "NotImplementedError" in out[-1].source:
                out.pop()
            cell.metadata["tags"] = [t for t in tags if t != "hide-input"]
            cell.metadata.pop("jupyter", None)
            cell.metadata.pop("cellView", None)
            cell.source = cell.source.replace("# @title Solution (double-click to show the code)", "# Solution")
        elif cell.cell_type == "markdown" and f"blob/{BRANCH}/notebooks/{name}.ipynb" in cell.source:
            cell.source = cell.source.replace(f"notebooks/{name}.ipynb", f"notebooks/solutions/{name}.ipynb")
        elif cell.cell_type == "markdown" and cell.source.startswith("# "):
            title, rest = cell.source.split("\n", 1)
            cell.source = f"{title} (solutions)\n{rest}"
        if cell.cell_type == "markdown":       # one folder deeper: relative links go one level up
            cell.source = re.sub(r"\]\((?!https?:|#)", "](../", cell.source)
        out.append(cell)
    return out


def has_exercises(name: str) -> bool:
    return any("solution" in c.metadata.get("tags", []) for c in NOTEBOOKS[name]())


def build(name: str, solutions: bool = False):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = NOTEBOOKS[name]()
    if solutions:
        nb.cells = with_solutions(nb.cells, name)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}, "colab": {"provenance": []}}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    return nb


def main(names=None) -> None:
    import nbformat
    for name in names or NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nbformat.write(build(name), str(path))
        print("wrote", path.relative_to(ROOT))
        if has_exercises(name):
            SOLUTIONS.mkdir(exist_ok=True)
            path = SOLUTIONS / f"{name}.ipynb"
            nbformat.write(build(name, solutions=True), str(path))
            print("wrote", path.relative_to(ROOT))


if __name__ == "__main__":
    main(sys.argv[1:] or None)
