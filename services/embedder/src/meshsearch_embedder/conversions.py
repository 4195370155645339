"""Every translation between the embedder's contract (`meshsearch.embedder.v1`) and its plain
types. The gRPC adapter calls these; nothing else reads or builds those messages."""

from __future__ import annotations

from meshsearch.embedder.v1 import embedder_pb2 as pb
from meshsearch_common import vectors
from meshsearch_embedder.backend import ModelInfo
from meshsearch_embedder.batcher import Embedded
from meshsearch_embedder.embedding import EmbedOptions
from meshsearch_embedder.selection import Selection


def options_in(message: pb.EmbedOptions) -> EmbedOptions:
    return EmbedOptions(
        normalize=message.normalize if message.HasField("normalize") else True,
        truncate=message.truncate if message.HasField("truncate") else True,
        prompt_name=message.prompt_name,
        dimensions=message.dimensions,
        background=message.background,
    )


def embeddings_out(result: Embedded, info: ModelInfo) -> pb.Embeddings:
    return pb.Embeddings(
        vectors=vectors.pack(result.vectors),
        dimension=result.vectors.shape[1],
        token_counts=result.token_counts,
        model_id=info.model_id,
        model_revision=info.revision,
        model_numerics=info.numerics,
        timing=pb.Timing(
            queue_ms=result.queue_s * 1000,
            tokenize_ms=result.tokenize_s * 1000,
            inference_ms=result.inference_s * 1000,
            backlog_ms=result.backlog_s * 1000,
        ),
    )


def selection_out(selection: Selection) -> pb.BackendSelection:
    return pb.BackendSelection(
        requested=selection.requested,
        reason=selection.reason,
        cached=selection.cached,
        cpu=selection.cpu,
        candidates=[
            pb.BackendCandidate(
                backend=c.backend,
                short_texts_per_second=c.short_per_s,
                long_texts_per_second=c.long_per_s,
                mean_cosine_to_reference=c.mean_cosine,
                eligible=c.eligible,
                rejected_because=c.rejected_because,
            )
            for c in selection.candidates
        ],
    )
