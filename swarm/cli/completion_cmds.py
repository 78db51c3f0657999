"""``swarm completion bash|zsh|fish``: a shell completion script generated from the parser.

Who calls it: :mod:`swarm.cli` registers it. The script is static: :func:`command_tree` walks
the argparse tree (every subcommand, its options and the choices of options and positionals)
and each shell's generator turns that into lookup tables plus a small function that finds
the command path in the words typed so far (``swarm bus publish``: words that are not
options and name a subcommand of the path so far) and offers that path's subcommands,
its options after a ``-``, an option's choices after it, else files. No dependency, no
Python run at completion time (so completing costs nothing). Install::

    swarm completion bash > ~/.local/share/bash-completion/completions/swarm
    swarm completion zsh > "${fpath[1]}/_swarm"     # or: source <(swarm completion zsh)
    swarm completion fish > ~/.config/fish/completions/swarm.fish
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

from swarm.cli import EXIT_OK
from swarm.cli.output import example

SHELLS = ("bash", "zsh", "fish")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "completion", help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script for SHELL, generated from swarm's own command tree: "
                    "subcommands, options and their choices.",
        epilog=example("swarm completion bash > ~/.local/share/bash-completion/completions/swarm",
                       'swarm completion zsh > "${fpath[1]}/_swarm"',
                       "swarm completion fish > ~/.config/fish/completions/swarm.fish"),
    )
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    p.set_defaults(handler=run_completion)


@dataclass
class Node:
    """One command path: its subcommands (name -> help), options, and choices."""

    path: str
    subcommands: dict[str, str] = field(default_factory=dict)
    options: list[tuple[list[str], str, bool]] = field(default_factory=list)  # (flags, help, takes a value)
    choices: dict[str, list[str]] = field(default_factory=dict)  # option flag -> its choices
    positional_choices: list[str] = field(default_factory=list)


def command_tree(parser: argparse.ArgumentParser) -> list[Node]:
    """Every command path of ``parser`` ("swarm", "swarm bus", "swarm bus publish", ...), parents first."""
    nodes: list[Node] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        node = Node(path)
        nodes.append(node)
        children: list[tuple[str, argparse.ArgumentParser]] = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help or "" for a in action._choices_actions}
                for name, sub in action.choices.items():
                    node.subcommands[name] = helps.get(name, "")
                    children.append((name, sub))
            elif action.option_strings:
                if action.help == argparse.SUPPRESS:
                    continue
                node.options.append((list(action.option_strings), action.help or "", action.nargs != 0))
                if action.choices:
                    for flag in action.option_strings:
                        node.choices[flag] = [str(c) for c in action.choices]
            elif action.choices:
                node.positional_choices += [str(c) for c in action.choices]
        for name, sub in children:
            walk(sub, f"{path} {name}")

    walk(parser, "swarm")
    return nodes


def _q(text: str) -> str:
    """Single-quoted for sh/zsh/fish (no expansion)."""
    return "'" + text.replace("'", "'\\''") + "'"


def _fq(text: str) -> str:
    """Single-quoted for fish (backslash and quote escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tables(nodes: list[Node]) -> str:
    """The lookup functions bash and zsh share: subcommands, options and choices of a path."""
    subs = "\n".join(f"        {_q(n.path)}) echo {_q(' '.join(n.subcommands))} ;;" for n in nodes if n.subcommands)
    opts = "\n".join(f"        {_q(n.path)}) echo {_q(' '.join(f for flags, _, _ in n.options for f in flags))} ;;"
                     for n in nodes if n.options)
    valued = "\n".join(f"        {_q(n.path + '|' + f)}) return 0 ;;"
                       for n in nodes for flags, _, takes in n.options if takes for f in flags)
    choice_rows = [f"        {_q(n.path + '|' + flag)}) echo {_q(' '.join(c))} ;;" for n in nodes for flag, c in n.choices.items()]
    choice_rows += [f"        {_q(n.path + '|')}) echo {_q(' '.join(n.positional_choices))} ;;"
                    for n in nodes if n.positional_choices]
    return f"""__swarm_subcommands() {{
    case "$1" in
{subs}
    esac
}}

__swarm_options() {{
    case "$1" in
{opts}
    esac
}}

__swarm_takes_value() {{
    case "$1|$2" in
{valued}
    esac
    return 1
}}

__swarm_choices() {{
    case "$1|$2" in
{chr(10).join(choice_rows)}
    esac
}}
"""


def bash_script(parser: argparse.ArgumentParser) -> str:
    return f"""# bash completion for swarm (generated by `swarm completion bash`; do not edit)
{_tables(command_tree(parser))}
_swarm() {{
    local cur prev cmdpath w i subs words_
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev=""
    (( COMP_CWORD > 0 )) && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmdpath="swarm"
    for (( i=1; i<COMP_CWORD; i++ )); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in -*) continue ;; esac
        subs=" $(__swarm_subcommands "$cmdpath") "
        [[ "$subs" == *" $w "* ]] && cmdpath="$cmdpath $w"
    done
    COMPREPLY=()
    if [[ "$prev" == -* ]] && __swarm_takes_value "$cmdpath" "$prev"; then
        words_="$(__swarm_choices "$cmdpath" "$prev")"
        [[ -n "$words_" ]] && COMPREPLY=( $(compgen -W "$words_" -- "$cur") )
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "$(__swarm_options "$cmdpath")" -- "$cur") )
        return 0
    fi
    words_="$(__swarm_subcommands "$cmdpath") $(__swarm_choices "$cmdpath" "")"
    if [[ -n "${{words_// /}}" ]]; then
        COMPREPLY=( $(compgen -W "$words_" -- "$cur") )
    fi
    return 0
}}

complete -o bashdefault -o default -F _swarm swarm
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    return f"""#compdef swarm
# zsh completion for swarm (generated by `swarm completion zsh`; do not edit)
{_tables(command_tree(parser))}
_swarm() {{
    local cur prev cmdpath w i subs words_
    cur="${{words[CURRENT]}}"
    prev="${{words[CURRENT-1]}}"
    cmdpath="swarm"
    for (( i=2; i<CURRENT; i++ )); do
        w="${{words[i]}}"
        [[ "$w" == -* ]] && continue
        subs=" $(__swarm_subcommands "$cmdpath") "
        [[ "$subs" == *" $w "* ]] && cmdpath="$cmdpath $w"
    done
    if [[ "$prev" == -* ]] && __swarm_takes_value "$cmdpath" "$prev"; then
        words_="$(__swarm_choices "$cmdpath" "$prev")"
        if [[ -n "$words_" ]]; then compadd -- ${{=words_}}; else _files; fi
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        compadd -- ${{=$(__swarm_options "$cmdpath")}}
        return 0
    fi
    words_="$(__swarm_subcommands "$cmdpath") $(__swarm_choices "$cmdpath" "")"
    if [[ -n "${{words_// /}}" ]]; then compadd -- ${{=words_}}; else _files; fi
    return 0
}}

if (( $+functions[compdef] )); then
    compdef _swarm swarm
fi
"""


def fish_script(parser: argparse.ArgumentParser) -> str:
    nodes = command_tree(parser)
    subs = "\n".join(f"        case {_fq(n.path)}\n            printf '%s\\n' {' '.join(_fq(s) for s in n.subcommands)}"
                     for n in nodes if n.subcommands)
    lines = [
        "# fish completion for swarm (generated by `swarm completion fish`; do not edit)",
        "function __swarm_subcommands",
        "    switch $argv[1]",
        subs,
        "    end",
        "end",
        "",
        "function __swarm_path --description 'the swarm command path typed so far'",
        "    set -l p swarm",
        "    for w in (commandline -opc)[2..-1]",
        "        string match -q -- '-*' $w; and continue",
        "        if contains -- $w (__swarm_subcommands $p)",
        '            set p "$p $w"',
        "        end",
        "    end",
        "    echo $p",
        "end",
        "",
        "complete -c swarm -e",
    ]
    for n in nodes:
        cond = f"-n {_fq(f'test (__swarm_path) = {_fq(n.path)}')}"
        for name, help_ in n.subcommands.items():
            lines.append(f"complete -c swarm -f {cond} -a {_fq(name)} -d {_fq(help_[:80])}")
        if n.positional_choices:
            lines.append(f"complete -c swarm -f {cond} -a {_fq(' '.join(n.positional_choices))}")
        for flags, help_, takes in n.options:
            parts = []
            for f in flags:
                if f.startswith("--"):
                    parts.append(f"-l {_fq(f[2:])}")
                elif len(f) == 2:
                    parts.append(f"-s {_fq(f[1:])}")
                else:
                    parts.append(f"-o {_fq(f[1:])}")
            choices = next((n.choices[f] for f in flags if f in n.choices), None)
            value = f" -x -a {_fq(' '.join(choices))}" if choices else (" -r" if takes else "")
            lines.append(f"complete -c swarm {cond} {' '.join(parts)}{value} -d {_fq(help_[:80])}")
    return "\n".join(lines) + "\n"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[shell](parser)


def run_completion(args: argparse.Namespace) -> int:
    from swarm.cli import build_parser

    sys.stdout.write(script(args.shell, build_parser()))
    return EXIT_OK
