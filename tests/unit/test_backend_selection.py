"""MESHSEARCH_EMBEDDER_BACKEND=auto: which backend is chosen, why, and when the choice is reused.
Fake encoders with known speed and accuracy stand in for the real ones (the real selection runs
in tests/integration/test_embedder_backends.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from meshsearch_embedder import calibration
from meshsearch_embedder.backend import EncoderBackend, ModelInfo
from meshsearch_embedder.selection import SelectionCache, cache_key, select_backend


class FakeEncoder(EncoderBackend):
    """Embeds a text as a fixed random direction of its words, plus `noise`; sleeps
    `per_text_s` per text and `per_token_s` per word."""

    def __init__(self, name: str, per_text_s: float, per_token_s: float, noise: float = 0.0) -> None:
        self.info = ModelInfo("fake", "r1", 16, 256, "float32", name, "cpu", {})
        self._per_text_s, self._per_token_s, self._noise = per_text_s, per_token_s, noise
        self._rng = np.random.default_rng(7)

    def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        return [[hash(word) % 1000 for word in text.split()][:256] for text in texts]

    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        time.sleep(self._per_text_s * len(batch) + self._per_token_s * sum(len(ids) for ids in batch))
        rows = np.array([np.random.default_rng(sum(ids)).standard_normal(16) for ids in batch], dtype=np.float32)
        return rows + self._noise * self._rng.standard_normal(rows.shape).astype(np.float32)


class Loads:
    """A loader over fakes that records what it was asked to load."""

    def __init__(self, encoders: dict[str, FakeEncoder | Exception]) -> None:
        self.encoders = encoders
        self.loaded: list[str] = []

    def __call__(self, name: str) -> EncoderBackend:
        self.loaded.append(name)
        encoder = self.encoders[name]
        if isinstance(encoder, Exception):
            raise encoder
        return encoder


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "PAUSE_S", 0.0)


def fakes(**overrides: FakeEncoder | Exception) -> Loads:
    encoders: dict[str, FakeEncoder | Exception] = {
        "torch": FakeEncoder("torch", 0.002, 0.00002),
        "onnx": FakeEncoder("onnx", 0.001, 0.00001),
        "onnx-int8": FakeEncoder("onnx-int8", 0.0004, 0.000005, noise=0.02),
        "openvino": FakeEncoder("openvino", 0.0007, 0.000007),
        "openvino-bf16": RuntimeError("this CPU has no bfloat16 units (AVX512_BF16 or AMX)"),
        "openvino-int8": ModuleNotFoundError("No module named 'nncf'", name="nncf"),
    }
    encoders.update({name.replace("_", "-"): encoder for name, encoder in overrides.items()})
    return Loads(encoders)


def test_a_named_backend_is_loaded_alone_and_nothing_is_measured() -> None:
    loads = fakes()
    encoder, selection = select_backend("onnx", loads, on_gpu=False)
    assert loads.loaded == ["onnx"] and encoder.info.backend == "onnx"
    assert selection.reason == "named explicitly" and not selection.candidates


def test_auto_on_a_gpu_takes_torch_without_measuring() -> None:
    loads = fakes()
    encoder, selection = select_backend("auto", loads, on_gpu=True)
    assert loads.loaded == ["torch"] and selection.backend == "torch" and "CUDA" in selection.reason


def test_auto_on_a_cpu_takes_the_fastest_candidate_that_agrees_with_torch() -> None:
    encoder, selection = select_backend("auto", fakes(), on_gpu=False)
    assert selection.backend == "onnx-int8" and encoder.info.backend == "onnx-int8"
    rates = {c.backend: c.short_per_s for c in selection.candidates}
    assert rates["onnx-int8"] > rates["onnx"] > rates["torch"] > 0
    unavailable = {"openvino-bf16", "openvino-int8"}
    assert all(c.eligible and c.mean_cosine >= 0.99 for c in selection.candidates if c.backend not in unavailable)
    no_bf16 = next(c for c in selection.candidates if c.backend == "openvino-bf16")
    assert no_bf16.rejected_because == "failed to load: this CPU has no bfloat16 units (AVX512_BF16 or AMX)"
    assert "AMD" in selection.cpu or "flags" in selection.cpu


def test_a_fast_candidate_whose_vectors_drift_from_torch_is_not_eligible() -> None:
    loads = fakes(onnx_int8=FakeEncoder("onnx-int8", 0.0001, 0.000001, noise=1.0))
    _, selection = select_backend("auto", loads, on_gpu=False)
    drifted = next(c for c in selection.candidates if c.backend == "onnx-int8")
    assert not drifted.eligible and "mean cosine" in drifted.rejected_because
    assert selection.backend == "openvino"


class WrongAtOneLength(FakeEncoder):
    """Right everywhere except on batches exactly `length` tokens long, as a kernel chosen for
    one shape can be."""

    def __init__(self, name: str, length: int) -> None:
        super().__init__(name, 0.0001, 0.000001)
        self._length = length

    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        rows = super().encode(batch)
        if max(len(ids) for ids in batch) == self._length:
            return rows + 2 * self._rng.standard_normal(rows.shape).astype(np.float32)
        return rows


def test_a_candidate_wrong_at_one_text_length_is_not_eligible_and_the_length_is_named() -> None:
    loads = fakes(onnx_int8=WrongAtOneLength("onnx-int8", 32))
    _, selection = select_backend("auto", loads, on_gpu=False)
    wrong = next(c for c in selection.candidates if c.backend == "onnx-int8")
    assert wrong.mean_cosine >= 0.99  # whole texts agree: only the probe by length catches it
    assert not wrong.eligible and "at 32 tokens" in wrong.rejected_because
    assert selection.backend == "openvino"


def test_every_length_bucketed_engines_pad_to_is_probed() -> None:
    assert calibration.probe_lengths(256) == [8, *range(16, 257, 16)]
    assert calibration.probe_lengths(6) == [6]


def test_a_candidate_that_cannot_load_is_reported_and_skipped() -> None:
    missing = ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
    no_openvino = ModuleNotFoundError("No module named 'openvino'", name="openvino")
    loads = fakes(onnx=missing, onnx_int8=missing, openvino=no_openvino)
    _, selection = select_backend("auto", loads, on_gpu=False)
    assert selection.backend == "torch"
    skipped = {c.backend: c.rejected_because for c in selection.candidates if not c.eligible}
    assert skipped == {
        "onnx": "onnxruntime is not installed",
        "onnx-int8": "onnxruntime is not installed",
        "openvino": "openvino is not installed",
        "openvino-bf16": "failed to load: this CPU has no bfloat16 units (AVX512_BF16 or AMX)",
        "openvino-int8": "nncf is not installed",
    }


def test_the_choice_weighs_long_texts_too() -> None:
    # Faster than torch on sentences, far slower on full windows: loses on the 4:1 mix.
    loads = fakes(
        onnx=FakeEncoder("onnx", 0.0005, 0.0001),
        onnx_int8=FakeEncoder("onnx-int8", 0.0005, 0.0001, noise=0.02),
        openvino=FakeEncoder("openvino", 0.0005, 0.0001),
    )
    _, selection = select_backend("auto", loads, on_gpu=False)
    assert selection.backend == "torch"
    onnx = next(c for c in selection.candidates if c.backend == "onnx")
    torch = next(c for c in selection.candidates if c.backend == "torch")
    assert onnx.short_per_s > torch.short_per_s and onnx.long_per_s < torch.long_per_s


def test_a_cached_choice_is_reused_without_loading_or_measuring_the_others(tmp_path: Path) -> None:
    cache = SelectionCache(tmp_path, cache_key("r1", 0, ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16")))
    _, first = select_backend("auto", fakes(), on_gpu=False, cache=cache)
    assert not first.cached
    loads = fakes()
    encoder, second = select_backend("auto", loads, on_gpu=False, cache=cache)
    assert loads.loaded == [first.backend] and second.cached and encoder.info.backend == first.backend
    assert second.candidates == first.candidates


def test_a_cached_choice_that_no_longer_loads_is_measured_again(tmp_path: Path) -> None:
    cache = SelectionCache(tmp_path, "key")
    select_backend("auto", fakes(), on_gpu=False, cache=cache)
    broken = RuntimeError("the cached ONNX file is corrupt")
    _, again = select_backend("auto", fakes(onnx_int8=broken), on_gpu=False, cache=cache)
    assert not again.cached and again.backend == "openvino"


def test_the_cache_key_changes_with_the_model_and_the_threads() -> None:
    base = cache_key("r1", 0, ("torch", "onnx"))
    assert base == cache_key("r1", 0, ("torch", "onnx"))
    assert len({base, cache_key("r2", 0, ("torch", "onnx")), cache_key("r1", 1, ("torch", "onnx"))}) == 3


def test_an_engine_with_several_streams_is_timed_as_the_batcher_feeds_it() -> None:
    """Two streams embed two batches at once in service; timed one batch at a time, such an
    engine would look half as fast as it serves and lose to slower candidates."""
    one_stream = FakeEncoder("openvino", 0.002, 0.0)
    two_streams = FakeEncoder("openvino", 0.002, 0.0)
    two_streams.concurrent_batches = 2
    measured = calibration.calibrate({"one": one_stream, "two": two_streams}, repeats=1)
    assert measured["two"].short_per_s > 1.6 * measured["one"].short_per_s
    assert np.allclose(measured["two"].vectors, measured["one"].vectors)  # same rows, same order
