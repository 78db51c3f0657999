"""The compose file must not depend on whether libyaml is installed.

:func:`swarm.compiler.templating.safe_dump_yaml` uses libyaml's emitter only for
documents whose scalars are all printable ASCII; this property holds that the two
emitters agree byte for byte there, and the unit tests show the fallback."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from swarm.compiler.templating import _YAML_OPTIONS, _all_printable_ascii, safe_dump_yaml

pytestmark = pytest.mark.skipif(not hasattr(yaml, "CSafeDumper"), reason="libyaml not installed")

TRICKY = ["", " ", "yes", "no", "on", "null", "~", "1.0", "0x1f", "- a", "a: b", "#c", "'", '"', "*x", "&y", "!t",
          "${VAR:?x}", "a ", " a", "[]", "{}", "%", "@", "`", "1e3", "2026-01-01", "=", "<<", "?", "|", ">"]
ascii_text = st.one_of(st.sampled_from(TRICKY), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200))
scalars = st.one_of(ascii_text, st.integers(-(2**40), 2**40), st.booleans(), st.none())
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(ascii_text.filter(bool), children, max_size=4)
    ),
    max_leaves=30,
).filter(lambda d: isinstance(d, dict))


def dump(data: Any, dumper: type) -> str:
    return yaml.dump(data, Dumper=dumper, **_YAML_OPTIONS)


@given(documents)
def test_both_emitters_agree_on_printable_ascii(document: dict[str, Any]) -> None:
    assert _all_printable_ascii(document)
    assert dump(document, yaml.CSafeDumper) == dump(document, yaml.SafeDumper)
    assert yaml.safe_load(safe_dump_yaml(document)) == document


@pytest.mark.parametrize("value", ["ünï 🐝", "line\nbreak", "tab\t", "nul\x00", "\u2028"])
def test_anything_else_uses_the_pure_emitter(value: str) -> None:
    document = {"labels": {"k": value}}
    assert not _all_printable_ascii(document)
    assert safe_dump_yaml(document) == dump(document, yaml.SafeDumper)
    assert yaml.safe_load(safe_dump_yaml(document)) == document
