"""Wires the embedder together and runs it under the common server bootstrap."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import grpc

from meshsearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from meshsearch_common.limits import RequestLimits
from meshsearch_common.readiness import Readiness
from meshsearch_embedder import metrics
from meshsearch_embedder.backend import EncoderBackend, content_revision, require_model_dir
from meshsearch_embedder.batcher import Batcher
from meshsearch_embedder.embedding import EmbeddingService, EmbedOptions, Limits
from meshsearch_embedder.grpc_service import EmbedderServicer
from meshsearch_embedder.selection import CPU_CANDIDATES, Selection, SelectionCache, cache_key, select_backend
from meshsearch_embedder.settings import EmbedderSettings

log = logging.getLogger(__name__)

# Texts of a few lengths, so warmup exercises short and long shapes before traffic arrives, and
# a full batch of long ones, so admission starts from a measured throughput, not a guess.
_WARMUP_TEXTS = ["warmup", "a short sentence to warm the model up", "a longer passage " * 40]
_WARMUP_BATCH = ["a longer passage " * 40] * 8


def load_encoder(settings: EmbedderSettings, backend: str) -> EncoderBackend:
    """One named backend; blocking (loads weights, may export ONNX on first use)."""
    if backend == "torch":
        from meshsearch_embedder.torch_backend import TorchEncoder

        return TorchEncoder(
            settings.model_path, model_id=settings.model_id, device=settings.device, threads=settings.inference_threads
        )
    if backend.startswith("openvino"):
        from meshsearch_embedder.openvino_backend import OPENVINO_PRECISIONS, OpenVinoEncoder

        return OpenVinoEncoder(
            settings.model_path,
            cache_dir=settings.onnx_cache_dir,
            model_id=settings.model_id,
            threads=settings.inference_threads,
            precision=OPENVINO_PRECISIONS[backend],
            streams=settings.inference_streams,
        )
    from meshsearch_embedder.onnx_backend import OnnxEncoder

    return OnnxEncoder(
        settings.model_path,
        cache_dir=settings.onnx_cache_dir,
        quantize=backend == "onnx-int8",
        model_id=settings.model_id,
        threads=settings.inference_threads,
        spinning=settings.thread_spinning,
    )


def choose_encoder(settings: EmbedderSettings) -> tuple[EncoderBackend, Selection]:
    """The configured backend, or for `auto` the one selection.py picks; blocking."""
    load = partial(load_encoder, settings)
    if settings.backend != "auto":
        return select_backend(settings.backend, load, on_gpu=False)
    from meshsearch_embedder.torch_backend import cuda_device_count, resolve_device

    # Only auto asks about GPUs (that loads torch, which a replica named onnx or openvino avoids),
    # and only auto on a CPU measures, so only it needs the cache of measured choices.
    if resolve_device(settings.device, cuda_device_count()).startswith("cuda"):
        return select_backend(settings.backend, load, on_gpu=True)
    revision = content_revision(require_model_dir(settings.model_path))
    cache = SelectionCache(
        Path(settings.onnx_cache_dir) / "selection",
        cache_key(revision, settings.inference_threads, CPU_CANDIDATES, settings.inference_streams),
    )
    return select_backend(settings.backend, load, on_gpu=False, cache=cache)


class EmbedderApp:
    name = "embedder"

    def __init__(self, settings: EmbedderSettings) -> None:
        self.settings = settings
        self._core: Readiness[EmbeddingService] = Readiness("embedder model")
        self._batcher: Batcher | None = None

    def request_limits(self) -> RequestLimits:
        return RequestLimits(default_bytes=self.settings.max_request_bytes)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(EmbedderServicer(self._core), server)
        return [embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"].full_name]

    async def start(self) -> None:
        settings = self.settings
        encoder, selection = await asyncio.to_thread(choose_encoder, settings)
        metrics.report_backend(selection)
        log.info(
            "backend chosen",
            extra={
                "backend": selection.backend,
                "requested": selection.requested,
                "reason": selection.reason,
                "cached": selection.cached,
                "candidates": [asdict(c) for c in selection.candidates],
            },
        )
        self._batcher = Batcher(
            encoder,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            background_batch_tokens=settings.background_batch_tokens,
            max_tokens_in_flight=settings.max_tokens_in_flight,
            min_padding_efficiency=settings.min_padding_efficiency,
            admission_budget_share=settings.admission_budget_share,
            inline_infer_tokens=settings.inline_infer_tokens,
            fill_row_buckets=settings.fill_row_buckets,
        )
        await self._batcher.start()
        service = EmbeddingService(
            self._batcher,
            encoder.info,
            selection,
            Limits(settings.max_texts_per_request, settings.max_text_bytes),
        )
        for texts in (_WARMUP_TEXTS, _WARMUP_TEXTS, _WARMUP_BATCH):
            await service.embed(texts, EmbedOptions())
        self._core.set(service)
        log.info("model ready", extra={"model_id": encoder.info.model_id, "device": encoder.info.device})

    async def stop(self) -> None:
        if self._batcher:
            await self._batcher.stop()


def create_app() -> EmbedderApp:
    return EmbedderApp(EmbedderSettings())
