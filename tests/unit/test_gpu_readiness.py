"""The CUDA float16 path, checked on a CPU-only machine: device choice, precision and the
numerics it reports (part of the model identity)."""

from __future__ import annotations

import pytest

from meshsearch_embedder.backend import ModelInfo
from meshsearch_embedder.torch_backend import precision_for, resolve_device


@pytest.mark.parametrize(
    ("requested", "devices", "expected"),
    [("auto", 0, "cpu"), ("auto", 2, "cuda"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda"), ("cuda:1", 2, "cuda:1")],
)
def test_the_device_follows_the_setting_and_what_is_visible(requested: str, devices: int, expected: str) -> None:
    assert resolve_device(requested, devices) == expected


@pytest.mark.parametrize(("requested", "devices"), [("cuda", 0), ("cuda:2", 2), ("gpu", 1)])
def test_a_device_that_is_not_there_is_refused_at_start_naming_the_setting(requested: str, devices: int) -> None:
    with pytest.raises(ValueError, match="MESHSEARCH_EMBEDDER_DEVICE"):
        resolve_device(requested, devices)


@pytest.mark.parametrize(
    ("device", "dtype", "numerics"), [("cuda", "float16", "torch-float16"), ("cpu", "float32", "torch-float32")]
)
def test_cuda_runs_in_float16_and_says_so_in_the_identity(device: str, dtype: str, numerics: str) -> None:
    assert precision_for(device) == dtype
    info = ModelInfo("m", "r", 384, 256, precision_for(device), "torch", device, {})
    assert info.numerics == numerics
