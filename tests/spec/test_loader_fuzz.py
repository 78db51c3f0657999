"""Robustness properties of the loader on mangled specs (hypothesis).

Whatever the bytes, loading either succeeds or raises SpecError whose issues
point inside the files; and the fast (libyaml) and pure-Python parsers give the
same result, so which one a machine has never changes what a user sees.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.errors import SpecError, SpecIssue
from swarm.spec import yamldoc
from swarm.spec.loader import LoadedSpec, parse_spec_texts
from tests.spec.specdata import AGENT, SWARM, files

SIGNIFICANT = list(":-[]{},#&*!|>'\"%@` \n\t.") + ["a", "1", "---\n", "  ", "port: 1\n", "<<: "]


@st.composite
def mangled(draw: st.DrawFn) -> str:
    text = SWARM if draw(st.booleans()) else AGENT
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate-line"]))
        if op == "insert":
            text = text[:i] + draw(st.sampled_from(SIGNIFICANT)) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 8)) :]
        else:
            start = text.rfind("\n", 0, i) + 1
            end = text.find("\n", i)
            end = len(text) if end < 0 else end + 1
            text = text[:end] + text[start:end] + text[end:]
    return text


def _load(raw: dict[str, bytes]) -> LoadedSpec | list[SpecIssue]:
    try:
        return parse_spec_texts(raw)
    except SpecError as exc:
        return exc.issues


_YAML_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _assert_positions_inside(raw: dict[str, bytes], found: list[SpecIssue]) -> None:
    for issue in found:
        for pos in (issue.position, *issue.related):
            if pos is None:
                continue
            # lines as YAML counts them: a lone \r (and NEL, LS, PS) breaks a line too
            lines = _YAML_LINE_BREAK.split(raw[pos.file].decode("utf-8", "replace"))
            assert 1 <= pos.line <= len(lines), issue.format()
            assert 1 <= pos.column <= len(lines[pos.line - 1]) + 1, issue.format()


@given(mangled(), st.booleans())
def test_mangled_specs_give_spec_errors_inside_the_file(text: str, as_agent_file: bool) -> None:
    raw = files(swarm=text) if not as_agent_file else files(swarm=SWARM, w1=text)
    result = _load(raw)
    if isinstance(result, list):
        assert result, "SpecError without issues"
        _assert_positions_inside(raw, result)


@pytest.mark.skipif(yamldoc._FAST_LOADER is None, reason="libyaml is not available")
@given(mangled())
def test_fast_and_pure_python_parsers_agree(text: str) -> None:
    raw = files(swarm=SWARM, w1=text)
    fast = _load(raw)
    saved = yamldoc._FAST_LOADER
    yamldoc._FAST_LOADER = None
    try:
        slow = _load(raw)
    finally:
        yamldoc._FAST_LOADER = saved
    if isinstance(fast, list) or isinstance(slow, list):
        assert isinstance(fast, list) and isinstance(slow, list), (fast, slow)
        assert [i.format() for i in fast] == [i.format() for i in slow]
    else:
        assert fast.spec == slow.spec and fast.digest == slow.digest


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes) -> None:
    raw = files(swarm=SWARM)
    raw["specs/agents/x.yaml"] = data
    result = _load(raw)
    if isinstance(result, list):
        # a UTF-8 error's column counts bytes; every other issue counts characters
        _assert_positions_inside(raw, [i for i in result if "UTF-8" not in i.message])
