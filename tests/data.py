"""Access to the public evaluation sets in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("MESHSEARCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def sts_pairs(split: str = "dev") -> list[tuple[str, str, float]]:
    """(sentence1, sentence2, gold score 0-5) of the STS benchmark split."""
    path = SHARED_DATA / "stsbenchmark" / f"sts-{split}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tests expect ../shared/data beside the repository")
    with path.open(encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row[5], row[6], float(row[4])) for row in rows if len(row) >= 7]


def scifact_abstracts(count: int) -> list[tuple[str, str]]:
    """(id, "title text") of the first `count` BEIR SciFact abstracts, as MTEB encodes them."""
    import json

    path = SHARED_DATA / "scifact" / "corpus.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tests expect ../shared/data beside the repository")
    abstracts = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            abstracts.append((row["_id"], f"{row['title']} {row['text']}".strip()))
            if len(abstracts) == count:
                break
    return abstracts
