"""The embedder's own account of its work, read from its Prometheus /metrics: time in forward
passes and in tokenizing, passes, texts and padded tokens. Benchmarks subtract two readings to
say where a workload's time went inside the service, beside what they measured from outside."""

from __future__ import annotations

from dataclasses import dataclass, fields
from urllib.request import urlopen

from prometheus_client.parser import text_string_to_metric_families

# (metric family, sample suffix) -> the account's field it adds to.
_SOURCES = {
    ("meshsearch_embedder_inference_seconds", "_sum"): "inference_s",
    ("meshsearch_embedder_inference_seconds", "_count"): "passes",
    ("meshsearch_embedder_batch_size", "_sum"): "texts",
    ("meshsearch_embedder_batch_tokens", "_sum"): "padded_tokens",
    ("meshsearch_embedder_padding_efficiency", "_sum"): "padding_efficiency_sum",
    ("meshsearch_embedder_tokenize_seconds", "_sum"): "tokenize_s",
    ("meshsearch_embedder_tokenize_seconds", "_count"): "tokenize_calls",
}


@dataclass(frozen=True)
class EmbedderAccount:
    """Running totals since the embedder started; `later - earlier` is what happened between."""

    inference_s: float = 0.0  # wall time of forward passes
    passes: float = 0.0
    texts: float = 0.0  # texts embedded (rows over all passes)
    padded_tokens: float = 0.0  # rows x longest row, summed over passes (before any shape bucket)
    padding_efficiency_sum: float = 0.0  # per pass: real / padded tokens
    tokenize_s: float = 0.0
    tokenize_calls: float = 0.0

    def __sub__(self, earlier: EmbedderAccount) -> EmbedderAccount:
        return EmbedderAccount(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)})

    @property
    def rows_per_pass(self) -> float:
        return self.texts / max(self.passes, 1)

    @property
    def padding_efficiency(self) -> float:
        """Mean over passes of real / padded tokens (1.0: no padding)."""
        return self.padding_efficiency_sum / max(self.passes, 1)

    @property
    def engine_texts_per_s(self) -> float:
        """Texts per second of forward-pass time: what the engine does while it runs."""
        return self.texts / self.inference_s if self.inference_s else 0.0

    def summary(self) -> str:
        return (
            f"inference {self.inference_s:.1f} s in {self.passes:,.0f} passes "
            f"({self.padded_tokens / max(self.passes, 1):.0f} padded tokens each), "
            f"tokenizing {self.tokenize_s:.1f} s"
        )


def read_embedder_account(metrics_port: int, host: str = "127.0.0.1") -> EmbedderAccount:
    """The embedder's totals so far, scraped from its metrics port."""
    with urlopen(f"http://{host}:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for suffix in ("_sum", "_count"):
                name = _SOURCES.get((family.name, suffix))
                if name and sample.name.endswith(suffix):
                    totals[name] = totals.get(name, 0.0) + sample.value
    return EmbedderAccount(**totals)
