"""The Node.js client (clients/node, which loads the contract from protos/ at run time) uses
every unary RPC of the data path against the live api and reads the google.rpc details of an
error."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from meshsearch_cli.stack import EmbeddedStack

CLIENT = Path(__file__).parents[2] / "clients" / "node" / "test" / "every_rpc.mjs"


def test_a_node_client_from_the_protos_uses_every_rpc_and_reads_error_details(stack: EmbeddedStack) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required (make setup installs it)"
    run = subprocess.run(
        [node, str(CLIENT), f"127.0.0.1:{stack.ports.api}"], capture_output=True, text=True, timeout=180, check=False
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["created"]["storage"] == "STORAGE_FLOAT16" and seen["created"]["chunking"]["chunk_tokens"] == 32
    assert seen["indexed"]["indexed_count"] == 3
    assert [d["id"] for d in seen["got"]["documents"]] == ["a"] and seen["got"]["missing_ids"] == ["zzz"]
    assert len(seen["page"]["documents"]) == 2 and seen["page"]["next_page_token"]
    assert seen["vector"]["hits"][0]["document"]["id"] == "c" and seen["vector"]["mode"] == "SEARCH_MODE_VECTOR"
    assert seen["keyword"]["hits"][0]["document"]["id"] == "a" and seen["keyword"]["mode"] == "SEARCH_MODE_KEYWORD"
    hybrid = seen["hybrid"]["hits"]
    assert [h["document"]["id"] for h in hybrid] == ["b"] and hybrid[0]["document"]["text"] == ""
    assert [r["hits"][0]["document"]["id"] for r in seen["batch"]["results"]] == ["c", "a"]
    assert len(seen["collections"]["collections"]) == 1  # page_size 1
    assert seen["deleted"]["deleted_count"] == 2 and seen["described"]["document_count"] == "1"
    error = seen["error"]
    assert error["code"] == 3  # INVALID_ARGUMENT
    details = {d["type"]: d["value"] for d in error["details"]}
    assert details["google.rpc.BadRequest"]["field_violations"][0]["field"] == "top_k"
    assert details["google.rpc.ErrorInfo"] == {"reason": "INVALID_ARGUMENT", "domain": "meshsearch.io", "metadata": {}}
