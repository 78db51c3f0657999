"""The project stands alone: nothing in it cites a document that is not in the repository.

A reader of a docstring, a comment, the README or the public OpenAPI description must
find what it refers to in the repo itself; a pointer to a planning document kept
outside the repository is a dead end for every user and contributor. The names
are assembled below, so this file does not cite them either.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_PLAN_DOC, _HABITS_DOC, _OUTSIDE_DIR = "DES" + "IGN", "STY" + "LE", "../" + "shared"
#: Citations of outside planning documents, as they were once written here.
CITATION = re.compile(
    rf"\b{_PLAN_DOC}(?:\.md)?\s*§|\b{_PLAN_DOC}\.md\b|\b{_HABITS_DOC}(?:\.md)?\b|{re.escape(_OUTSIDE_DIR)}\b"
)


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [REPO / p for p in out.decode().split("\0") if p]
    return [f for f in files if f.is_file() and f.suffix in {".py", ".md", ".yaml", ".yml", ".json", ".j2", ".lua", ".toml", ".txt", ""}]


def test_no_file_cites_a_document_outside_the_repository() -> None:
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if CITATION.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert hits == []


def test_the_pattern_catches_the_old_citations() -> None:
    for old in (f"registry of a swarm ({_PLAN_DOC} §5)", f"({_HABITS_DOC}: watchfiles)", f"see {_OUTSIDE_DIR}/{_PLAN_DOC}.md"):
        assert CITATION.search(old), old
    assert not CITATION.search("the design of the router")
