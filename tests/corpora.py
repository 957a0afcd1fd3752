"""Small Python-like corpora that test fixtures train micro runs on (no download, seeded)."""

import random
from pathlib import Path

WORDS = ["def", "return", "self", "import", "class", "value", "print", "for", "in", "range", "if", "else"]


def write_code_corpus(folder: Path, docs: int, lines: int, max_indent: int, words=(5, 5), seed: int = 0) -> Path:
    """``docs`` files ``doc{i}.py`` of ``lines`` lines each: up to ``max_indent`` levels of indentation, then
    ``words`` (min, max) random keywords and a call ``(j)``. Returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(docs):
        text = ["    " * rng.randint(0, max_indent)
                + " ".join(rng.choice(WORDS) for _ in range(words[0] if words[0] == words[1] else rng.randint(*words)))
                + f"({j})" for j in range(lines)]
        (folder / f"doc{i}.py").write_text("\n".join(text) + "\n")
    return folder
