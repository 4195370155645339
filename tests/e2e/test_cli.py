"""The `meshsearch` client commands against the live mesh, as a user runs them: exit codes,
messages, progress to the end, and --help everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from meshsearch_cli.main import app
from meshsearch_cli.stack import EmbeddedStack
from tests.e2e.ingest_helpers import sentences


def meshsearch(stack: EmbeddedStack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHSEARCH_TARGET": f"127.0.0.1:{stack.ports.api}", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "meshsearch_cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ingest_a_jsonl_file_then_search_it(stack: EmbeddedStack, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    documents = sentences(400, salt="cli-")
    rows = [{"_id": d.id, "title": "", "text": d.text, "metadata": {"n": i}} for i, d in enumerate(documents)]
    rows.append({"_id": "blank", "text": " "})
    corpus.write_text("\n".join(json.dumps(row) for row in rows) + "\n")

    ingest = meshsearch(stack, "ingest", str(corpus), "-c", "cli_docs", "--create")
    output = ingest.stdout + ingest.stderr
    assert ingest.returncode == 1, output  # one dead letter: not everything was stored
    assert "created collection cli_docs" in output and "401/401" in output
    assert "completed with dead letters" in output and "400 stored, 1 not" in output
    job_id = output.split("meshsearch jobs dead-letter ")[1].split("`")[0]

    letters = meshsearch(stack, "jobs", "dead-letter", job_id)
    assert letters.returncode == 0 and "blank" in letters.stdout and "non-whitespace" in letters.stdout
    listed = meshsearch(stack, "jobs", "list", "-c", "cli_docs")
    assert job_id in listed.stdout and "completed" in listed.stdout
    found = meshsearch(stack, "search", documents[7].text, "-c", "cli_docs", "-k", "3")
    first_row = next(line for line in found.stdout.splitlines() if line.startswith("│ 1 "))
    assert found.returncode == 0 and documents[7].id in first_row, found.stdout
    shown = meshsearch(stack, "collections", "show", "cli_docs")
    assert "400" in shown.stdout


def test_ingest_from_stdin_and_a_directory(stack: EmbeddedStack, tmp_path: Path) -> None:
    lines = "\n".join(json.dumps({"id": f"in{i}", "text": d.text}) for i, d in enumerate(sentences(20)))
    piped = meshsearch(stack, "ingest", "-", "-c", "cli_stdin", "--create", stdin=lines)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert "completed: 20 documents stored" in piped.stdout
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "tides.md").write_text("# Tides\nThe Moon pulls the oceans.")
    (tmp_path / "notes" / "bread.txt").write_text("Yeast makes dough rise.")
    files = meshsearch(stack, "ingest", str(tmp_path / "notes"), "-c", "cli_files", "--create")
    assert files.returncode == 0 and "completed: 2 documents stored" in files.stdout
    answer = meshsearch(stack, "search", "why is there a high tide", "-c", "cli_files", "-k", "1")
    assert "tides.md" in answer.stdout


def test_failures_have_conventional_exit_codes_and_no_traceback(stack: EmbeddedStack, tmp_path: Path) -> None:
    missing = meshsearch(stack, "ingest", str(tmp_path / "absent.jsonl"), "-c", "x")
    assert missing.returncode == 66 and "does not exist" in missing.stderr
    (tmp_path / "bad.jsonl").write_text('{"id": "1", "text": "fine"}\nnot json\n')
    bad = meshsearch(stack, "ingest", str(tmp_path / "bad.jsonl"), "-c", "cli_docs")
    assert bad.returncode == 65 and "line 2: not JSON" in bad.stderr
    no_collection = meshsearch(stack, "search", "anything", "-c", "no_such_collection")
    assert no_collection.returncode == 65 and "NOT_FOUND" in no_collection.stderr
    no_job = meshsearch(stack, "jobs", "show", "f" * 32)
    assert no_job.returncode == 65 and "does not exist" in no_job.stderr
    usage = meshsearch(stack, "search")
    assert usage.returncode == 2
    unreachable = subprocess.run(
        [sys.executable, "-m", "meshsearch_cli", "collections", "list", "--target", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unreachable.returncode == 69 and "UNAVAILABLE" in unreachable.stderr
    for result in (missing, bad, no_collection, no_job, usage, unreachable):
        assert "Traceback" not in result.stdout + result.stderr


def command_paths(command: Any) -> list[tuple[str, ...]]:  # a click Command (typer vendors click)
    """Every command and group under `command`, as the words that name it."""
    found: list[tuple[str, ...]] = [()]
    for name, sub in getattr(command, "commands", {}).items():
        found += [(name, *rest) for rest in command_paths(sub)]
    return found


@pytest.mark.parametrize("path", command_paths(typer.main.get_command(app)), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshsearch_cli", *path, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "Usage" in result.stdout, (path, result.stderr)
