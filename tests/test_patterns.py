"""Token-pattern classifier: every category on hand-written byte-level BPE strings, plus the edge cases."""

from types import SimpleNamespace

import numpy as np
import pytest

from serpent.errors import SerpentError
from serpent.patterns import (PALETTE, PATTERNS, classify_tokens, context_snippet, display_text, label_result,
                              label_results, n_prev_spaces, pattern_counts, token_text)


def at(tokens, t, **kw):
    return classify_tokens(tokens, **kw)[t]


def test_palette_covers_patterns_in_rainbow_order():
    assert list(PALETTE) == list(PATTERNS)
    assert len(set(PALETTE.values())) == len(PATTERNS)
    assert all(c.startswith("#") and len(c) == 7 for c in PALETTE.values())
    assert PATTERNS[0] == "induction" and PATTERNS[-1] == "other"


# Machado, Oliveira and Fernandes (2009): how a colour looks with protanopia, deuteranopia and tritanopia (severity
# 1), as a matrix on linear RGB
_DEFICIENCIES = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def _closest_pair(colours: list[str], deficiency: str | None = None) -> float:
    """The smallest CIELAB distance (ΔE, CIE76) between two of ``colours`` as seen with ``deficiency``."""
    srgb = np.array([[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)] for c in colours])
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    if deficiency:
        lin = np.clip(lin @ np.array(_DEFICIENCIES[deficiency]).T, 0, 1)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    return float(d[np.triu_indices(len(colours), 1)].min())


def test_palette_stays_distinguishable_with_colour_blindness():
    """Every two pattern colours stay clearly apart (ΔE ≥ 12) for normal vision and in a simulation of the three
    common colour-vision deficiencies; the rainbow palette the course had before (red and green side by side)
    fails the same check."""
    colours = [PALETTE[p] for p in PATTERNS]
    for deficiency in (None, *_DEFICIENCIES):
        assert _closest_pair(colours, deficiency) >= 12, deficiency
    rainbow = ["#e41a1c", "#ff7f00", "#e6c700", "#4daf4a", "#17becf", "#377eb8", "#984ea3", "#a0a0a0"]
    assert min(_closest_pair(rainbow, d) for d in _DEFICIENCIES) < 12


def test_token_text_decodes_byte_level():
    assert token_text("Ġhello") == " hello"
    assert token_text("ĊĠĠ") == "\n  "
    assert token_text("ĉ") == "\t"
    assert token_text("č") == "\r"
    assert token_text("<|endoftext|>") == ""
    # 'é' is two bytes c3 a9, which byte-level BPE writes as 'Ã©'
    assert token_text("Ã©") == "é"
    assert token_text("Ã") == "\ufffd"          # half a character
    with pytest.raises(SerpentError):
        token_text(5)


@pytest.mark.parametrize("tokens,t,expected", [
    # spacing: runs of spaces, one or many
    (["x", "Ċ", "ĠĠĠ", "Ġy"], 2, "spacing"),
    (["x", "Ġ"], 1, "spacing"),
    # formatting: newline, tab, carriage return, newline + indentation
    (["x", "Ċ"], 1, "formatting"),
    (["x", "ĉ"], 1, "formatting"),
    (["x", "čĊ"], 1, "formatting"),
    (["x", "ĊĠĠĠĠ"], 1, "formatting"),
    # delimiter: brackets and quotes, with or without leading space or punctuation glued on
    (["f", "("], 1, "delimiter"),
    (["x", "Ġ\""], 1, "delimiter"),
    (["x", "):"], 1, "delimiter"),
    (["x", "['"], 1, "delimiter"),
    (["x", "Ġ{}"], 1, "delimiter"),
    # numeric
    (["x", "Ġ=", "Ġ3"], 2, "numeric"),
    (["x", "0", "x", "ff"], 1, "numeric"),
    (["x", "Ġint", "32"], 2, "numeric"),
    # word start: leading space, first token, or after a non-word character
    (["Ġthe", "Ġcat"], 1, "word start"),
    (["hello"], 0, "word start"),
    (["(", "self"], 1, "word start"),
    (["Ċ", "import"], 1, "word start"),
    (["Ġ__", "init"], 0, "word start"),
    # word part: continuation of a word or identifier
    (["Ġsusc", "eptib", "ility"], 1, "word part"),
    (["Ġsusc", "eptib", "ility"], 2, "word part"),
    (["Ġ__", "init"], 1, "word part"),
    (["Ġx", "2", "ab"], 2, "word part"),
    # other: punctuation, operators, special tokens
    (["x", "."], 1, "other"),
    (["x", "Ġ=="], 1, "other"),
    (["x", ","], 1, "other"),
    (["x", "<|endoftext|>"], 1, "other"),
])
def test_every_category(tokens, t, expected):
    assert at(tokens, t) == expected


def test_induction_repeated_bigram():
    toks = ["Ġthe", "Ġrainbow", "Ġserpent", "Ġis", "Ġthe", "Ġrainbow"]
    pats = classify_tokens(toks)
    assert pats[5] == "induction"
    assert pats[1] == "word start"           # first occurrence of the bigram is not induction
    assert pats[4] == "word start"           # (Ġis, Ġthe) never occurred before
    # the repeated unigram alone is not enough: the previous token must match too
    assert classify_tokens(["Ġa", "Ġb", "Ġc", "Ġb"])[3] == "word start"


def test_induction_beats_every_other_rule():
    # numeric, delimiter, word part and other targets all become induction when their bigram repeats
    for target in ["Ġ42", "(", "ility", "."]:
        toks = ["Ġx", target, "Ġy", "Ġx", target]
        assert classify_tokens(toks)[4] == "induction", target


def test_repeated_bigram_at_start_of_context():
    # the bigram at positions (0, 1) cannot be induction: nothing precedes it
    toks = ["Ġa", "Ġb", "Ġa", "Ġb", "Ġa"]
    pats = classify_tokens(toks)
    assert pats[0] == "word start" and pats[1] == "word start"
    assert pats[2] == "word start"           # (Ġb, Ġa) is new at t=2
    assert pats[3] == "induction" and pats[4] == "induction"
    # an immediately repeated token: (x, x) at t=1 is new, at t=2 it repeats the bigram ending at t=1
    assert classify_tokens(["Ġ7", "Ġ7", "Ġ7"]) == ["numeric", "numeric", "induction"]


def test_induction_not_across_special_tokens():
    toks = ["<|endoftext|>", "Ġa", "Ġb", "<|endoftext|>", "Ġa"]
    # (EOT, Ġa) repeats, but a bigram whose first token is special is not induction
    assert classify_tokens(toks)[4] == "word start"


def test_numeric_wins_over_word_start():
    # a token that is both a word start (leading space, begins a word) and numeric
    assert at(["x", "Ġ2nd"], 1) == "numeric"
    assert at(["x", "Ġ42"], 1) == "numeric"
    assert at(["Ġx", "Ġv2"], 1) == "numeric"


def test_whitespace_induction_switch():
    toks = ["x", "Ċ", "ĠĠĠ", "y", "Ċ", "ĠĠĠ"]
    assert classify_tokens(toks)[5] == "spacing"                    # default: whitespace never induction
    assert classify_tokens(toks, whitespace_induction=True)[5] == "induction"


def test_n_prev_spaces_counts_the_run():
    toks = ["Ċ", "ĠĠĠĠ", "ĠĠĠĠ", "Ġif", "Ġx", "Ġ", "Ġ", "Ġ", ":"]
    got = n_prev_spaces(toks).tolist()
    assert got == [0, 0, 4, 8, 0, 0, 1, 2, 3]
    # a newline ends the run; a token's trailing spaces start one
    assert n_prev_spaces(["x", "ĠĠ", "Ċ", "Ġa"]).tolist() == [0, 0, 2, 0]
    assert n_prev_spaces(["ab", "ĠĠ", "cd"]).tolist() == [0, 0, 2]
    assert n_prev_spaces(["ĊĠĠ", "Ġx"]).tolist() == [0, 2]


def test_context_snippet_marks_token():
    toks = ["def", "Ġf", "(", "x", "):", "Ċ", "ĠĠĠ", "Ġreturn"]
    s = context_snippet(toks, 7, before=3, after=2)
    assert s == "…):↵   «␣return»"
    assert context_snippet(toks, 0, before=3, after=1) == "«def» f…"
    with pytest.raises(SerpentError):
        context_snippet(toks, 8)
    assert display_text("a\tb\r\n") == "a⇥b␍↵"


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def token_str(self, i):
        return self.vocab[i]


def test_label_result_rows_match_classifier():
    vocab = ["<|endoftext|>", "Ġa", "Ġb", "Ċ", "ĠĠ", "Ġ3", "("]
    rng = np.random.default_rng(0)
    probe = rng.integers(0, len(vocab), size=(3, 20))
    seq = np.repeat(np.arange(3), 19)
    pos = np.tile(np.arange(1, 20), 3)
    chi = rng.normal(size=(len(seq), 4)).astype(np.float32)
    res = SimpleNamespace(step=7, components=["0:0", "0:1", "1:0", "1:1"], chi=chi, probe_tokens=probe,
                          seq_index=seq, position=pos)
    df = label_result(res, _Tok(vocab))
    assert len(df) == len(seq)
    assert (df["step"] == 7).all()
    for s in range(3):
        strs = [vocab[i] for i in probe[s]]
        expect = classify_tokens(strs)
        rows = df[df["seq"] == s]
        assert rows["pattern"].astype(str).tolist() == [expect[p] for p in rows["pos"]]
        assert rows["n_prev_spaces"].tolist() == [int(n_prev_spaces(strs)[p]) for p in rows["pos"]]
    np.testing.assert_array_equal(df[["0:0", "0:1", "1:0", "1:1"]].to_numpy(), chi)
    assert all("«" in c and "»" in c for c in df["context"])
    counts = pattern_counts(df["pattern"].astype(str))
    assert sum(counts.values()) == len(df)


def test_label_results_reuses_labels_across_checkpoints():
    vocab = ["<|endoftext|>", "Ġa", "Ġb", "Ċ", "ĠĠ", "Ġ3", "("]
    rng = np.random.default_rng(1)
    probe = rng.integers(0, len(vocab), size=(2, 12))
    seq, pos = np.repeat(np.arange(2), 11), np.tile(np.arange(1, 12), 2)
    res = {s: SimpleNamespace(step=s, components=["0:0", "0:1"], chi=rng.normal(size=(22, 2)).astype(np.float32),
                              probe_tokens=probe, seq_index=seq, position=pos) for s in (0, 5, 9)}
    df = label_results(res, _Tok(vocab))
    assert df["step"].tolist() == [0] * 22 + [5] * 22 + [9] * 22
    for s, r in res.items():
        one = label_result(r, _Tok(vocab))
        got = df[df.step == s].reset_index(drop=True)
        assert got.drop(columns=["pattern"]).equals(one.drop(columns=["pattern"]))
        assert (got["pattern"].astype(str) == one["pattern"].astype(str)).all()


def test_label_result_rejects_bad_shapes():
    res = SimpleNamespace(step=0, components=["0:0"], chi=np.zeros((3, 2)), probe_tokens=np.zeros((1, 5), int),
                          seq_index=np.zeros(3, int), position=np.arange(3))
    with pytest.raises(SerpentError, match="inconsistent shapes"):
        label_result(res, _Tok(["Ġa"]))
    res = SimpleNamespace(step=0, components=["0:0"], chi=np.zeros((1, 1)), probe_tokens=np.zeros((1, 5), int),
                          seq_index=np.zeros(1, int), position=np.array([9]))
    with pytest.raises(SerpentError, match="outside probe_tokens"):
        label_result(res, _Tok(["Ġa"]))
    with pytest.raises(SerpentError):
        pattern_counts(["bogus"])
