"""Token patterns: a deterministic classifier of each (context, token) pair, and the rainbow palette.

Every dot of the serpent is one target token ``y = tokens[t]`` seen after its context ``tokens[:t]``; its colour is
the *pattern* of that pair. The classifier works on the raw strings of a byte-level BPE (GPT-2 style: ``'Ġ'`` is a
leading space, ``'Ċ'`` a newline, ``'ĉ'`` a tab), which it first maps back to text. Rules are applied in this order
and **the first match wins**:

1. ``induction``   the bigram ``(tokens[t-1], tokens[t])`` already occurred earlier in the context (some
   ``j < t-1`` with ``tokens[j] == tokens[t-1]`` and ``tokens[j+1] == tokens[t]``); the previous token must not be a
   special token such as ``<|endoftext|>``. Whitespace-only targets are *not* induction by default
   (``whitespace_induction=False``): in code nearly every indentation token repeats a bigram, and counting them as
   induction would empty the spacing class and hide the spacing fin.
2. ``spacing``     the token is spaces only (``'Ġ'``, ``'ĠĠĠ'``...). Its fin coordinate is :func:`n_prev_spaces`.
3. ``formatting``  whitespace only, with a newline, tab or carriage return (``'Ċ'``, ``'ĊĠĠĠ'``, ``'ĉ'``).
4. ``delimiter``   a bracket or quote and no letter or digit (``'('``, ``'Ġ"'``, ``'):'``, ``"['"``).
5. ``numeric``     contains a digit (so ``'Ġ42'`` is numeric, not a word start: numbers win over words).
6. ``word start``  begins (after optional whitespace) with a letter and starts a word: it has leading whitespace,
   or the text before it does not end in a word character, or it is the first token.
7. ``word part``   begins with a letter and continues a word (no leading whitespace, text before ends in a word
   character).
8. ``other``       everything else: punctuation and operators (``'.'``, ``'Ġ='``), special tokens.

"Letter" here means an alphabetic character or ``'_'`` (identifiers in code); a byte that is only part of a UTF-8
character counts as a letter, since such fragments are pieces of non-ASCII words. ``n_prev_spaces`` is the number
of space characters immediately before the token (across token boundaries, stopping at anything else).

The palette maps the eight patterns to fixed colours in rainbow order, used by every chart, the explorer page and
the widgets, so colours never change between checkpoints or figures; it is the Okabe–Ito palette, safe for readers
with the common colour-vision deficiencies (``tests/test_patterns.py`` checks it in a simulation of them).

>>> toks = ["def", "Ġf", "(", "x", "):", "Ċ", "ĠĠĠ", "Ġreturn", "Ġ42", "Ċ", "def", "Ġf"]
>>> classify_tokens(toks)
['word start', 'word start', 'delimiter', 'word start', 'delimiter', 'formatting', 'spacing', 'word start', 'numeric', 'formatting', 'word start', 'induction']
>>> int(n_prev_spaces(toks)[7])
3
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .errors import SerpentError

__all__ = ["PATTERNS", "PALETTE", "token_text", "display_text", "classify_tokens", "repeated_bigrams", "n_prev_spaces",
           "classify_ids", "context_snippet", "label_result", "label_results", "pattern_counts"]

#: Pattern names in priority order (the first matching rule wins).
PATTERNS: tuple[str, ...] = ("induction", "spacing", "formatting", "delimiter", "numeric", "word start",
                             "word part", "other")

#: Fixed colours in rainbow order (vermilion → purple), light grey for ``other``: the Okabe–Ito palette (Okabe and Ito,
#: "Color Universal Design", 2008), published as distinguishable under the common colour-vision deficiencies;
#: ``tests/test_patterns.py`` checks it with a simulation of protanopia, deuteranopia and tritanopia.
PALETTE: dict[str, str] = {
    "induction": "#d55e00",
    "spacing": "#e69f00",
    "formatting": "#f0e442",
    "delimiter": "#009e73",
    "numeric": "#56b4e9",
    "word start": "#0072b2",
    "word part": "#cc79a7",
    "other": "#bbbbbb",
}

_BRACKETS_QUOTES = set("()[]{}<>\"'`")


def _byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte→printable-character map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_DECODE = _byte_decoder()


def _is_special(tok: str) -> bool:
    return len(tok) > 4 and tok.startswith("<|") and tok.endswith("|>")


def token_text(tok: str) -> str:
    """The text a raw byte-level BPE token stands for (``'Ġfoo'`` → ``' foo'``).

    A string with characters outside the byte-level alphabet (e.g. a real space) is taken to be text already.
    Bytes that do not form a complete UTF-8 character become U+FFFD. Special tokens decode to ``''``.

    >>> token_text("ĠĠif"), token_text("Ċĉ"), token_text("<|endoftext|>"), token_text("plain text")
    ('  if', '\\n\\t', '', 'plain text')
    """
    if not isinstance(tok, str):
        raise SerpentError(f"token strings must be str, got {type(tok).__name__}; pass tokenizer.token_str(id)")
    if _is_special(tok):
        return ""
    try:
        raw = bytes(_DECODE[c] for c in tok)
    except KeyError:
        return tok
    return raw.decode("utf-8", errors="replace")


def display_text(text: str) -> str:
    """Text made visible on one line: newline → ``↵``, tab → ``⇥``, carriage return → ``␍``.

    >>> display_text("a\\n\\tb")
    'a↵⇥b'
    """
    return text.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def _is_letter(ch: str) -> bool:
    return ch.isalpha() or ch == "_" or ch == "\ufffd"


def _is_word_char(ch: str) -> bool:
    return _is_letter(ch) or ch.isdigit()


def _classify_one(text: str, special: bool, prev_text: Optional[str]) -> str:
    """Rules 2-8 for one token (``prev_text`` is the previous token's text, None at the start or after a special)."""
    if special or text == "":
        return "other"
    if text.strip(" ") == "":
        return "spacing"
    if text.isspace():
        return "formatting"
    core = text.strip()
    has_alnum = any(ch.isalnum() for ch in core)
    if not has_alnum and any(ch in _BRACKETS_QUOTES for ch in core):
        return "delimiter"
    if any(ch.isdigit() for ch in core):
        return "numeric"
    if _is_letter(core[0]):
        lead_ws = text[0].isspace()
        continues = (not lead_ws) and bool(prev_text) and _is_word_char(prev_text[-1])
        return "word part" if continues else "word start"
    return "other"


def repeated_bigrams(seq: Sequence) -> list[bool]:
    """The induction rule: ``True`` at ``t`` when the bigram ``(seq[t-1], seq[t])`` already occurred in ``seq[:t]``
    (some ``j + 1 <= t - 1`` with ``seq[j], seq[j+1]`` equal to it). Works on strings or token ids.

    >>> repeated_bigrams([5, 6, 5, 6]), repeated_bigrams([7, 7, 7])
    ([False, False, False, True], [False, False, True])
    """
    seen: set = set()
    out = [False] * len(seq)
    for t in range(1, len(seq)):
        bigram = (seq[t - 1], seq[t])
        out[t] = bigram in seen
        seen.add(bigram)          # the bigram ending at t is visible to later positions only
    return out


def classify_tokens(tokens: Sequence[str], *, whitespace_induction: bool = False) -> list[str]:
    """Pattern of every position of one sequence of raw byte-level BPE token strings: ``(T,)`` → ``list[str]``.

    Position ``t`` is classified as the target token ``tokens[t]`` after the context ``tokens[:t]`` (rules in the
    module docstring). Equal strings are treated as equal token ids.

    >>> classify_tokens(["Ġa", "Ġb", "Ġa", "Ġb"])          # a repeated bigram: the second 'Ġb' is induction
    ['word start', 'word start', 'word start', 'induction']
    >>> classify_tokens(["Ġ7", "Ġ7", "Ġ7"])                # (Ġ7, Ġ7) repeats at t=2; at t=1 it is new
    ['numeric', 'numeric', 'induction']
    """
    tokens = list(tokens)
    texts = [token_text(t) for t in tokens]
    specials = [_is_special(t) for t in tokens]
    repeated = repeated_bigrams(tokens)
    out: list[str] = []
    for t in range(len(tokens)):
        prev_text = None
        if t > 0 and not specials[t - 1]:
            prev_text = texts[t - 1]
        base = _classify_one(texts[t], specials[t], prev_text)
        label = base
        if (repeated[t] and not specials[t - 1] and not specials[t]
                and (whitespace_induction or base not in ("spacing", "formatting"))):
            label = "induction"
        out.append(label)
    return out


def n_prev_spaces(tokens: Sequence[str]) -> np.ndarray:
    """Number of space characters immediately before each token: ``(T,)`` int64 (the spacing fin's coordinate).

    >>> n_prev_spaces(["Ċ", "ĠĠ", "Ġ", "Ġx", "y"]).tolist()
    [0, 0, 2, 3, 0]
    """
    out = np.zeros(len(tokens), dtype=np.int64)
    run = 0
    for t, tok in enumerate(tokens):
        out[t] = run
        text = token_text(tok)
        if _is_special(tok):
            run = 0
        elif text and text.strip(" ") == "":
            run += len(text)
        else:
            stripped = text.rstrip(" ")
            run = len(text) - len(stripped)
    return out


def classify_ids(ids: Sequence[int], tokenizer: Any, **kwargs) -> list[str]:
    """:func:`classify_tokens` for token ids, using ``tokenizer.token_str``."""
    return classify_tokens([tokenizer.token_str(int(i)) for i in ids], **kwargs)


def context_snippet(tokens: Sequence[str], position: int, before: int = 8, after: int = 3) -> str:
    """One-line view of ``tokens[position]`` in its context, the token marked with « »; ``…`` where cut.

    >>> context_snippet(["def", "Ġf", "(", "x", "):", "Ċ"], 3, before=2, after=1)
    '… f(«x»):…'
    """
    if not 0 <= position < len(tokens):
        raise SerpentError(f"position {position} is outside a sequence of {len(tokens)} tokens")
    lo, hi = max(0, position - before), min(len(tokens), position + after + 1)
    left = "".join(token_text(t) for t in tokens[lo:position])
    right = "".join(token_text(t) for t in tokens[position + 1:hi])
    mid = token_text(tokens[position])
    s = display_text(left) + "«" + display_text(mid) + "»" + display_text(right)
    # make the leading space of the previous-token boundary visible only inside the mark
    return ("…" if lo > 0 else "") + s.replace("« ", "«␣") + ("…" if hi < len(tokens) else "")


def _strings_of(tokenizer: Any, ids: np.ndarray, cache: dict) -> list[str]:
    out = []
    for i in ids.tolist():
        s = cache.get(i)
        if s is None:
            s = cache[i] = tokenizer.token_str(int(i))
        out.append(s)
    return out


def label_result(result: Any, tokenizer: Any, *, before: int = 8, after: int = 3,
                 whitespace_induction: bool = False):
    """One row per probed token of a susceptibility result: a :class:`pandas.DataFrame`.

    ``result`` needs ``step``, ``components`` (C names), ``chi`` (N, C), ``probe_tokens`` (S, L) int,
    ``seq_index`` (N,) and ``position`` (N,) (the target is ``probe_tokens[s, position]``, its context
    ``probe_tokens[s, :position]``). Columns: ``step, point, seq, pos, token_id, token, context, pattern,
    n_prev_spaces`` and one float column per component (``"0:0"`` …).

    >>> from types import SimpleNamespace
    >>> class Tok:
    ...     vocab = ["<|endoftext|>", "Ġa", "Ġb", "Ċ"]
    ...     def token_str(self, i): return self.vocab[i]
    >>> res = SimpleNamespace(step=0, components=["0:0", "0:1"], chi=np.array([[1., 2.], [3., 4.]], np.float32),
    ...     probe_tokens=np.array([[0, 1, 2, 1, 2]]), seq_index=np.array([0, 0]), position=np.array([2, 4]))
    >>> label_result(res, Tok())[["pos", "token", "pattern", "0:1"]].values.tolist()
    [[2, '␣b', 'word start', 2.0], [4, '␣b', 'induction', 4.0]]
    """
    import pandas as pd

    chi = np.asarray(result.chi)
    probe = np.asarray(result.probe_tokens)
    seq = np.asarray(result.seq_index, dtype=np.int64)
    pos = np.asarray(result.position, dtype=np.int64)
    comps = list(result.components)
    if chi.ndim != 2 or chi.shape[0] != len(seq) or chi.shape[1] != len(comps) or len(pos) != len(seq):
        raise SerpentError(f"susceptibility result has inconsistent shapes: chi {chi.shape}, seq_index {seq.shape}, "
                           f"position {pos.shape}, {len(comps)} components; recompute the susceptibility stage")
    if probe.ndim != 2 or (len(seq) and (seq.max() >= probe.shape[0] or pos.max() >= probe.shape[1]
                                         or seq.min() < 0 or pos.min() < 0)):
        raise SerpentError(f"seq_index/position point outside probe_tokens of shape {probe.shape}; "
                           "the result file is corrupt: recompute the susceptibility stage")
    cache: dict = {}
    patterns = np.empty(len(seq), dtype=object)
    spaces = np.zeros(len(seq), dtype=np.int64)
    tokens = np.empty(len(seq), dtype=object)
    contexts = np.empty(len(seq), dtype=object)
    for s in np.unique(seq):
        rows = np.nonzero(seq == s)[0]
        strs = _strings_of(tokenizer, probe[s], cache)
        pats = classify_tokens(strs, whitespace_induction=whitespace_induction)
        nsp = n_prev_spaces(strs)
        for r in rows:
            p = int(pos[r])
            patterns[r] = pats[p]
            spaces[r] = nsp[p]
            tokens[r] = display_text(token_text(strs[p])).replace(" ", "␣")
            contexts[r] = context_snippet(strs, p, before=before, after=after)
    df = pd.DataFrame({
        "step": np.full(len(seq), int(result.step), dtype=np.int64),
        "point": np.arange(len(seq), dtype=np.int64),
        "seq": seq, "pos": pos,
        "token_id": probe[seq, pos].astype(np.int64) if len(seq) else np.zeros(0, np.int64),
        "token": tokens.astype(str), "context": contexts.astype(str),
        "pattern": pd.Categorical(patterns, categories=list(PATTERNS)),
        "n_prev_spaces": spaces,
    })
    for j, c in enumerate(comps):
        df[c] = chi[:, j].astype(np.float32)
    return df


def label_results(results_by_step: dict, tokenizer: Any, **kwargs):
    """:func:`label_result` for every checkpoint, concatenated; tokens are classified once when the checkpoints
    share their probe sequences (the usual case), and only the step and χ columns change between checkpoints."""
    import hashlib
    import pandas as pd

    done: dict[str, Any] = {}
    frames = []
    for step in sorted(results_by_step):
        r = results_by_step[step]
        key = hashlib.sha1(b"".join(np.ascontiguousarray(np.asarray(a, dtype=np.int64)).tobytes() for a in
                                    (r.probe_tokens, r.seq_index, r.position)) + repr(list(r.components)).encode()
                           ).hexdigest()
        if key not in done:
            done[key] = label_result(r, tokenizer, **kwargs)
            df = done[key]
        else:
            df = done[key].copy()
            df["step"] = int(r.step)
            chi = np.asarray(r.chi)
            for j, c in enumerate(r.components):
                df[c] = chi[:, j].astype(np.float32)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def pattern_counts(patterns: Sequence[str]) -> dict[str, int]:
    """Count of each pattern, in palette order (zeros included).

    >>> pattern_counts(["numeric", "other", "numeric"])["numeric"]
    2
    """
    counts = {p: 0 for p in PATTERNS}
    for p in patterns:
        if p not in counts:
            raise SerpentError(f"unknown pattern {p!r}; known patterns: {list(PATTERNS)}")
        counts[p] += 1
    return counts
