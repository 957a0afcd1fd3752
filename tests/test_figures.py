"""The book's figures and quoted numbers (serpent.figures) read the committed `cpu` run correctly, and every
number or figure a chapter pastes exists (a typo in a glue key would otherwise surface only in the 10-minute book
build)."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serpent import figures
from serpent.artifacts import load_artifacts
from serpent.charts.serpent import spacing_fin_chart
from serpent.charts.susceptibility import response_matrix_chart
from serpent.charts.training import loss_curves_chart
from serpent.train import bigram_entropy, unigram_entropy

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    return load_artifacts(ROOT / "artifacts" / "cpu", into=tmp_path_factory.mktemp("fig") / "cpu-artifacts")


@pytest.fixture(scope="module")
def numbers(cpu_run):
    return {**figures.book_numbers(cpu_run), **figures.ablation_numbers(cpu_run), **figures.cluster_numbers(cpu_run),
            **figures.anatomy_numbers(cpu_run), **figures.seed_numbers()}


def test_onset_is_the_first_checkpoint_from_which_a_score_stays_above():
    s = pd.DataFrame({"step": [0, 10, 20, 30, 40], "head": "1:0", "score": "prefix",
                      "value": [0.0, 0.2, 0.01, 0.2, 0.3]})       # crosses at 10, falls back, stays from 30
    assert figures._onset(s, "1:0", "prefix", 0.1) == 30
    assert figures._onset(s, "1:0", "prefix", 0.5) is None


def test_book_numbers_agree_with_the_runs_own_tables(cpu_run, numbers):
    m = pd.DataFrame(cpu_run.metrics())
    llc = pd.read_parquet(cpu_run.path / "llc" / "llc.parquet").sort_values("step")
    heads = json.loads((cpu_run.path / "induction" / "heads.json").read_text())
    assert numbers["final_step"] == cpu_run.config.train.steps == int(m["step"].iloc[-1])
    assert numbers["test_loss_last"] == pytest.approx(m["test_loss"].dropna().iloc[-1])
    assert numbers["test_loss_first"] > numbers["unigram_entropy"] > numbers["test_loss_last"]
    assert numbers["llc_last"] == pytest.approx(llc["mean"].iloc[-1])
    assert numbers["llc_at_0"] == pytest.approx(llc["mean"].iloc[0]) == pytest.approx(numbers["llc_first"])
    assert numbers["llc_checkpoints"] == len(llc)
    assert numbers["prefix_head"] in heads["induction"] and numbers["prefix_head_2"] in heads["induction"]
    assert numbers["prefix_score"] >= numbers["prefix_score_2"] >= numbers["prefix_threshold"]
    assert numbers["prev_head"].startswith("0:") and numbers["prev_head"] in heads["previous_token"]
    # the circuit's order, and the onset's token count against the scaling law it is compared with
    assert 0 < numbers["prev_onset"] < numbers["prefix_onset"] <= numbers["final_step"]
    tokens = numbers["prefix_onset"] * numbers["batch"] * numbers["context"]
    assert numbers["prefix_onset_tokens_millions"] == pytest.approx(tokens / 1e6)
    assert numbers["onset_over_law"] == pytest.approx(tokens / (10 ** 5.7 * np.sqrt(16 * 128)))
    assert numbers["sep_induction_last"] == pytest.approx(numbers[f"sep_induction_at_{numbers['chi_step']}"])
    assert numbers["sep_sigmas_last"] > 3        # the book says the induction stratum is far above its null


def test_bigram_entropy_has_known_answers():
    rng = np.random.default_rng(0)
    iid = rng.integers(0, 8, size=200_000)       # independent tokens: the previous one tells nothing
    assert bigram_entropy(iid, 8) == pytest.approx(unigram_entropy(iid, 8), abs=2e-3)
    assert unigram_entropy(iid, 8) == pytest.approx(np.log(8), abs=1e-3)
    cycle = np.tile(np.arange(5), 1000)          # each token fixes the next
    assert bigram_entropy(cycle, 5) == pytest.approx(0.0, abs=1e-12)


def test_every_book_figure_draws_from_the_run(cpu_run, numbers):
    loss = figures.loss_figure(cpu_run).to_dict()
    rules = [d for d in loss["datasets"].values() if d and "reference" in d[0]]
    assert rules and {r["reference"]: r["loss"] for r in rules[0]}["unigram entropy"] == numbers["unigram_entropy"]
    for fn in (figures.corpus_figure, figures.induction_figure, figures.llc_figure, figures.chi_tokens_figure,
               figures.response_figure, figures.small_multiples_figure, figures.spacing_fin_figure):
        spec = fn(cpu_run).to_dict()
        assert spec.get("$schema", "").startswith("https://vega.github.io/schema/vega-lite/"), fn.__name__
    toy = figures.toy_figure().to_dict()       # the notebooks' shared toy (runs/toy: trained once, then reused)
    assert len(toy["vconcat"]) == 2
    births = figures.clusters_figure(cpu_run).to_dict()                   # issue 34: clusters beside head scores
    assert len(births["vconcat"]) == 2
    onsets = [d for d in births["datasets"].values() if d and "onset" in d[0]][0]
    assert [o["step"] for o in onsets] == [numbers["prev_onset"], numbers["prefix_onset"]]
    assert numbers["clusters_tokens"] == numbers["chi_tokens"] and numbers["clusters_n"] >= numbers["clusters_standing"]
    serpent = json.dumps(figures.serpent_figure(cpu_run, max_points=50).to_dict())
    assert serpent.count('"step": ') >= 50 * numbers["chi_checkpoints"]   # every checkpoint on the slider
    body = figures.body_axes_figure(cpu_run).to_dict()                    # issue 31: the baby and the adult
    points = [r for d in _data_of(body) for r in d if "pc1" in r]
    assert len(points) == 2 * numbers["chi_tokens"]                       # every token of the two checkpoints
    assert len({r["panel"] for r in points}) == 2
    thick = figures.thickening_figure(cpu_run).to_dict()
    series = {r["series"] for d in _data_of(thick) for r in d if "series" in r}
    assert len(thick["hconcat"]) == 2 and len(series) == 3
    assert numbers["thickening_last"] > 2 and numbers["auc_last"] > numbers["auc_null_last"]
    tables = figures.robustness_tables()                                  # the computed page's robustness table
    assert set(tables["preprocess"]["pre-processing"]) == {"raw", "center", "standardize", "whiten", "normalize"}
    assert tables["chosen_view"]["view"] == "umap:" + cpu_run.config.embedding.preprocess


def _data_of(spec) -> list[list]:
    """Every inline data set of a Vega-Lite spec (named datasets and ``data.values`` anywhere in it)."""
    found = list((spec.get("datasets") or {}).values()) if isinstance(spec, dict) else []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("data"), dict) and isinstance(node["data"].get("values"), list):
                found.append(node["data"]["values"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(spec)
    return found


def _page_keys(text: str) -> tuple[set, set, set]:
    used = set(re.findall(r"\{glue:(?:text|md)\}`([A-Za-z0-9_]+)", text))
    figs = set(re.findall(r"```\{glue:figure\} (\S+)", text))
    glued = set(re.findall(r'glue\("([^"]+)"', text))
    return used, figs, glued


def test_every_pasted_number_and_figure_exists(numbers):
    pages = [p for p in sorted(BOOK.glob("*.md")) if "{glue" in p.read_text()]
    assert len(pages) >= 6
    for page in pages:
        text = page.read_text()
        used, figs, glued = _page_keys(text)
        assert "figures.glue_numbers(run" in text or not used, page.name
        # a page may paste what it glues itself (the workshop's measured times, the computed page's build mode)
        assert used - glued <= set(numbers), f"{page.name}: unknown numbers {sorted(used - glued - set(numbers))}"
        assert figs <= glued, f"{page.name}: figures never glued {sorted(figs - glued)}"
        for fmt_key, spec in re.findall(r"\{glue:text\}`([A-Za-z0-9_]+):([^`]+)`", text):
            format(numbers[fmt_key], spec)          # the format spec suits the value (no "None:.2f")
        # text is glued as Markdown: pasted with glue:text it would print "<IPython.core.display.Markdown object>"
        as_text = set(re.findall(r"\{glue:text\}`([A-Za-z0-9_]+)(?::[^`]*)?`", text))
        wrong = sorted(k for k in as_text & set(numbers) if isinstance(numbers[k], str))
        assert not wrong, f"{page.name}: paste {wrong} with {{glue:md}}, not {{glue:text}}"


def test_no_chapter_promises_a_figure_only_a_notebook_has():
    for page in sorted(BOOK.glob("0*.md")):
        assert "{admonition} Figure in notebook" not in page.read_text(), page.name


def test_chart_helpers_check_input_and_count_spaces():
    with pytest.raises(ValueError, match="step"):
        loss_curves_chart(pd.DataFrame({"x": [1]}))
    m = pd.DataFrame({"a": [1.0, -3.0], "b": [0.5, 2.0]}, index=["0:0", "1:0"])
    scale = response_matrix_chart(m).to_dict()["encoding"]["color"]["scale"]
    assert scale["domain"] == [-3.0, 3.0]               # symmetric: white means zero
    frame = pd.DataFrame({"step": [5, 5, 5], "point": [0, 1, 2], "x": [0.0, 1, 2], "y": [0.0, 1, 2],
                          "pattern": ["formatting", "spacing", "word start"], "token": ["ĊĠĠĠ", "ĠĠ", "Ġx"],
                          "context": ["a", "b", "c"], "n_prev_spaces": [1, 0, 0]})
    spec = spacing_fin_chart(frame).to_dict()
    points = [d for d in spec["layer"][1]["data"]["values"]]
    assert sorted(p["spaces"] for p in points) == [2, 4]     # 3 + 1 before, and 2; the word is grey


def test_numbers_read_as_the_chapters_write_them():
    assert figures._power_text(1e-3) == "10⁻³" and figures._power_text(3e-4) == "3 × 10⁻⁴"
    assert figures._power_text(100.0) == "10²"
    assert figures._listing([]) == "none" and figures._listing(["0", "8"]) == "0 and 8"
    assert figures._listing(["a", "b", "c"]) == "a, b and c"


def test_the_book_runs_circuit_is_its_flagged_heads(numbers):
    """Chapter 2's causal claim about the book's run: ablating the flagged heads removes the in-context gain,
    ablating every other head of the same layer does not."""
    gain = numbers["gain_intact"]
    assert gain > 0.3
    assert numbers["gain_without_prev"] < 0.2 * gain and numbers["gain_without_induction"] < 0.2 * gain
    assert numbers["gain_without_other0"] > 0.8 * gain and numbers["gain_without_other1"] > 0.8 * gain


def test_quoted_pause_and_fin_come_from_the_runs_tables(cpu_run, numbers):
    """The LLC pause the chapters quote is the milestones table's, and the spacing fin's verdict follows its R²."""
    from serpent.milestones import milestones
    table = milestones(cpu_run).set_index("milestone")["ours"]
    row = table["LLC pause or dip (least rise, then rising again)"]
    assert row.startswith(f"steps {numbers['llc_pause_from']:,} → {numbers['llc_pause_to']:,}")
    llc = pd.read_parquet(cpu_run.path / "llc" / "llc.parquet").set_index("step")["mean"]
    assert numbers["llc_pause_first"] == llc[numbers["llc_pause_from"]] < llc.iloc[-1]
    assert 0 <= numbers["fin_r2_last"] <= 1 and numbers["fin_tokens"] > 0
    assert numbers["fin_verdict"].startswith("a fin" if numbers["fin_r2_last"] >= 0.5 else "no fin")
    assert numbers["score_checkpoints"] > numbers["checkpoints"]
    assert (numbers["d_model"], numbers["context"]) == (cpu_run.config.model.d_model, cpu_run.config.model.n_ctx)


def test_the_seed_numbers_span_every_kept_seed():
    """Chapter 6's "Another initialisation" quotes ranges over the runs bench/seeds.py compared (issue 31 item 4)."""
    import json
    from serpent.io import find_root
    r = json.loads((find_root() / "bench" / "results" / "seeds.json").read_text())
    nums, tables = figures.seed_numbers(), figures.seed_tables()
    assert nums["seeds_n"] == str(len(r["seeds"])) == str(len(tables["onsets"])) and len(r["seeds"]) >= 2
    last = str(r["steps"][-1])
    aucs = [v["anatomy"][last]["induction_auc_pc2"] for v in r["seeds"].values()]
    assert nums["seeds_auc_end"] == f"{min(aucs):.2f}–{max(aucs):.2f}" or nums["seeds_auc_end"] == f"{min(aucs):.2f}"
    onsets = sorted(v["onsets"]["induction_onset"] for v in r["seeds"].values())
    assert nums["seeds_induction_onsets"].startswith(f"{onsets[0]:,}")
    # seeds whose probe tokens differ from seed 0's are not compared token by token
    assert all(v.get("same_probe", True) or s not in r["agreement"] for s, v in r["seeds"].items())


def test_the_seed_agreement_numbers_are_those_of_the_seeds_on_the_book_runs_tokens():
    """Chapter 6 quotes the token-by-token agreement of the seeds that probed the book run's tokens with seed 0,
    beside one model sampled twice: the numbers are seeds.json's, at its first and last compared checkpoints."""
    import json
    from serpent.io import find_root
    r = json.loads((find_root() / "bench" / "results" / "seeds.json").read_text())
    nums, tables = figures.seed_numbers(), figures.seed_tables()
    paired = sorted(r["agreement"], key=int)
    assert paired and nums["seeds_paired"].split(" ", 1)[1].replace(" and ", ", ") == ", ".join(paired)
    assert nums["seeds_pc2_heads"].count(" in seed ") == len(r["seeds"])
    pc2 = {s: v["anatomy"][str(r["steps"][-1])]["pc2_top_head"] for s, v in r["seeds"].items()}
    assert (nums["seeds_pc2_own_prev"] == "every run") == all(pc2[s] == v["onsets"]["best_prev_head"]
                                                             for s, v in r["seeds"].items())
    assert all(r["seeds"][s]["same_probe"] for s in paired)
    last = str(r["steps"][-1])
    knn = [r["agreement"][s][last]["knn_overlap"] for s in paired]
    assert nums["seeds_pair_knn_end"].split("–")[0] == f"{min(knn):.3f}"
    assert nums["seeds_ceiling_knn_end"] == f"{r['ceiling'][last]['knn_overlap']:.3f}"
    assert nums["seeds_chance"] == f"{r['ceiling'][last]['knn_chance']:.3f}"
    shared = tables["onsets"].set_index("seed")["tokenizer and probe"]
    assert all(shared[int(s)] == "the book run's" for s in paired)
