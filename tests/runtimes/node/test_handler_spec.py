"""A node agent's ``handler``: the spec says where the code is (``path/to/file.ts:export``),
the checks refuse what could leave the source directory or fit the other runtime,
at the handler's file:line:col, and the compiler turns it into a COPY and an import."""

from __future__ import annotations

import pytest

from swarm.errors import CompileError
from swarm.runtimes.node import handler_copy, handler_import, handler_parts
from tests.spec.specdata import AGENT, SWARM, agent_file, at, issues, load, one
from swarm.spec.checks import check_spec

NODE_AGENT = AGENT + "runtime: node\n"


def _clean(**texts: str) -> None:
    loaded = load(**texts)
    assert check_spec(loaded.spec, loaded.sources) == []


@pytest.mark.parametrize("handler", ["handlers/architect.ts:handle", "a.js:default", "h/x_y/Z-1.v2.ts:$run"])
def test_a_relative_ts_or_js_path_and_an_export_is_a_node_handler(handler: str) -> None:
    _clean(swarm=SWARM, w1=NODE_AGENT + f"handler: '{handler}'\n")


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        ("../outside.ts:handle", "may not contain '..'"),
        ("handlers/../../x.ts:handle", "may not contain '..'"),
        ("handlers/./x.ts:handle", "may not contain '..', '.'"),
        ("/etc/agent.ts:handle", "must be relative"),
        ("handlers//x.ts:handle", "empty segments"),
        ("pkg.mod:handle", "a node agent's handler is 'path/to/file.ts:export'"),
        ("handlers/x.py:handle", None),  # structurally no handler at all: the field's pattern refuses it
        ("handlers/$x.ts:handle", "characters outside"),
    ],
)
def test_a_bad_node_handler_is_refused_at_its_position(handler: str, words: str | None) -> None:
    text = NODE_AGENT + f"handler: '{handler}'\n"
    found = issues(swarm=SWARM, w1=text)
    issue = one(found, "handler")
    assert issue.path == "agents[1].handler"
    assert issue.position == at(agent_file("w1"), text, "'" + handler)
    if words is not None:
        assert words in issue.message, issue.message


def test_a_python_agent_may_not_name_a_node_handler() -> None:
    text = AGENT + "handler: handlers/a.ts:handle\n"
    issue = one(issues(swarm=SWARM, w1=text), "handler 'handlers/a.ts:handle'")
    assert "a python agent's handler is 'package.module:function'" in issue.message
    assert issue.position == at(agent_file("w1"), text, "handlers/a.ts:handle")


def test_the_handler_becomes_a_copy_of_its_top_directory_and_an_import() -> None:
    assert handler_parts("handlers/architect.ts:handle") == ("handlers/architect.ts", "handle")
    assert handler_copy("handlers/architect.ts:handle") == ("handlers/", "src/user/handlers/")
    assert handler_copy("architect.js:handle") == ("architect.js", "src/user/")
    assert handler_import("handlers/sub/architect.ts:handle") == ("./user/handlers/sub/architect.js", "handle")
    assert handler_import("lib/a.js:default") == ("./user/lib/a.js", "default")
    for bad in ("../a.ts:h", "a.py:h", "pkg.mod:h"):
        with pytest.raises(CompileError):
            handler_parts(bad)
