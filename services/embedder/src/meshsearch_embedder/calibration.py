"""The texts and measurements behind the auto backend: how fast a backend embeds short and long
texts on this machine, and how closely it agrees with the torch float32 reference.

The texts are written for this purpose (no dataset ships in the image): short ones are a
sentence each, like search queries; long ones fill a whole window of the model, like passages.
Both matter because the candidates' speed ranks differently by length (int8 matrix products win
on short texts; on long ones attention, which stays float, takes a growing share).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meshsearch_embedder.backend import EncoderBackend

SHORT_TEXTS = (
    "How do migrating birds find their way home?",
    "The bakery on the corner opens at seven every morning.",
    "Which vitamins does the body fail to make on its own?",
    "She parked the bicycle beside the library steps.",
    "Interest rates rose for the third month in a row.",
    "A short guide to pruning apple trees in winter",
    "The committee postponed its vote until next week.",
    "Why does bread go stale faster in the fridge?",
    "Two hikers were rescued from the ridge after the storm.",
    "Symptoms of iron deficiency in young children",
    "The orchestra tuned their instruments before the concert.",
    "Can a database index slow down writes?",
    "Volcanic ash grounded flights across the region.",
    "He translated the letter from Portuguese into English.",
    "Best practices for storing passwords on a server",
    "The river flooded the lower fields in early spring.",
)

_PASSAGE_SENTENCES = (
    "The survey followed several thousand households over a decade and recorded how they spent "
    "their income on food, housing, transport and schooling.",
    "Researchers noticed that families who moved closer to their work spent less on fuel but "
    "more on rent, and that the balance depended strongly on the size of the city.",
    "In smaller towns the savings on transport outweighed the higher rents within two years.",
    "In the largest cities, by contrast, rents rose faster than wages throughout the period, so "
    "that moving closer to work rarely paid for itself.",
    "The authors caution that households were not assigned to cities at random and that people "
    "who expected to gain from a move were more likely to make it.",
    "They therefore compare each household with similar ones that stayed, matched on income, "
    "age, number of children and the kind of work they did before the move.",
    "Even after this adjustment the pattern held: commuting costs fell, housing costs rose, and "
    "the net effect varied with local prices more than with any trait of the family itself.",
    "The study ends with a list of open questions about schooling, which it could not measure "
    "well, and about how the results would change under different transport policies.",
)


def long_texts(count: int = 8) -> list[str]:
    """`count` passages long enough to fill a 256-token window, each starting at another sentence
    so that no two are identical."""
    sentences = list(_PASSAGE_SENTENCES) * 3
    size = len(_PASSAGE_SENTENCES)
    return [" ".join(sentences[i % size : i % size + 2 * size]) for i in range(count)]


def quantization_texts() -> list[str]:
    """Texts whose activations set the static int8 scales of `openvino-int8`: the short texts,
    each passage sentence alone, pairs of short texts, and the long texts (which the backend also
    cuts to several window lengths). Written here, not drawn from an evaluation set, so the
    offline quality gate (STS-b) stays out of sample."""
    pairs = [f"{SHORT_TEXTS[i]} {SHORT_TEXTS[i + 1]}" for i in range(0, len(SHORT_TEXTS) - 1, 2)]
    return [*SHORT_TEXTS, *_PASSAGE_SENTENCES, *pairs, *long_texts()]


PAUSE_S = 0.3
# Threads that feed engines with several streams, kept across calls (an engine keeps an infer
# request per thread, so fresh threads would time the making of requests too).
_STREAMS = ThreadPoolExecutor(
    max_workers=8, thread_name_prefix="calibrate"
)  # lets the previous engine's spinning threads go to sleep


@dataclass(frozen=True)
class Calibration:
    """Throughput on short and long texts (texts per second) and the rows it embedded."""

    short_per_s: float
    long_per_s: float
    vectors: npt.NDArray[np.float32]  # unit rows, SHORT_TEXTS then long_texts()
    by_length: dict[int, npt.NDArray[np.float32]]  # unit rows of the long texts cut to each length


PROBE_STEP = 16  # lengths probed: every multiple of this up to the model's window, and 8


def probe_lengths(max_tokens: int) -> list[int]:
    """The text lengths (in tokens) at which every candidate's vectors are compared with the
    reference's. Why not only whole texts: kernels are chosen per input shape, and one shape can
    be wrong while its neighbours are right (OpenVINO's int8-with-bf16 kernels on an Intel Xeon
    with AMX at exactly 32 tokens, docs/benchmarks.md). The multiples of 16 are also the lengths
    bucketed engines pad every batch to (backend.ShapeBuckets), so for them each shape served
    is a shape checked."""
    return sorted({min(8, max_tokens), *range(PROBE_STEP, max_tokens + 1, PROBE_STEP)})


def vectors_by_length(encoder: EncoderBackend) -> dict[int, npt.NDArray[np.float32]]:
    """The long texts cut to each probe length, ending with their last special token, as one
    batch per length."""
    token_ids = encoder.tokenize(long_texts(), truncate=True)
    result = {}
    for length in probe_lengths(encoder.info.max_tokens):
        rows = encoder.encode([ids[: length - 1] + ids[-1:] for ids in token_ids])
        result[length] = (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return result


def _embed(encoder: EncoderBackend, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Unit vectors of `texts`, embedded as the batcher would run them: an engine with several
    streams gets that many batches at once (timed one at a time, such an engine would use only
    its share of the cores, and lose to engines it beats in service)."""
    token_ids = encoder.tokenize(list(texts), truncate=True)
    parts = min(encoder.concurrent_batches, len(token_ids))
    if parts <= 1:
        rows = encoder.encode(token_ids)
    else:
        size = -(-len(token_ids) // parts)
        chunks = list(_STREAMS.map(encoder.encode, [token_ids[i : i + size] for i in range(0, len(token_ids), size)]))
        rows = np.concatenate(chunks)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


def _seconds(encoder: EncoderBackend, texts: Sequence[str]) -> float:
    started = time.perf_counter()
    _embed(encoder, texts)
    return time.perf_counter() - started


def calibrate(encoders: dict[str, EncoderBackend], repeats: int = 3) -> dict[str, Calibration]:
    """Measure every encoder on the same texts, keeping each one's best time: the least disturbed
    by whatever else runs on a shared machine. Each is measured in a block of its own after a
    pause: the engines' worker threads spin for a while after a call, and an engine measured
    while another's threads still spin loses a core to them (interleaving call by call made
    every candidate 2-3x slower here). Two passes in opposite orders, so a machine that drifts
    during the measurement favours none of them."""
    short, long = list(SHORT_TEXTS), long_texts()
    names = list(encoders)
    vectors = {name: np.concatenate([_embed(encoders[name], short), _embed(encoders[name], long)]) for name in names}
    best_short = dict.fromkeys(names, float("inf"))
    best_long = dict.fromkeys(names, float("inf"))
    for order in (names, names[::-1]):
        for name in order:
            time.sleep(PAUSE_S)
            _embed(encoders[name], short)  # wake its threads
            for _ in range(repeats):
                best_short[name] = min(best_short[name], _seconds(encoders[name], short))
                best_long[name] = min(best_long[name], _seconds(encoders[name], long))
    return {
        name: Calibration(
            len(short) / best_short[name], len(long) / best_long[name], vectors[name], vectors_by_length(encoders[name])
        )
        for name in names
    }


def mean_cosine(vectors: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]) -> float:
    """Mean cosine similarity of matching unit rows."""
    return float((vectors * reference).sum(axis=1).mean())
