"""``# Tools:`` headers: parsing, and every shipped hook naming what it runs."""

from __future__ import annotations

import re

import pytest

from spotwatch import hook_tools, shipped

# Commands a minimal Debian lacks that a shipped hook might run.
NOT_EVERYWHERE = ("curl", "wget", "jq", "aws", "kubectl", "docker", "nomad", "scontrol",
                  "squeue", "systemctl")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "tools"),
    [
        ("#!/bin/sh\n# Tools: curl aws\necho\n", ("curl", "aws")),
        ("#!/bin/sh\n# What it does.\n# Tools: kubectl, jq\n", ("kubectl", "jq")),
        ("#!/bin/sh\n# Tools: none\n", ()),
        ("#!/bin/sh\necho\n# Tools: curl\n", None),  # only the leading comment counts
        ("#!/bin/sh\n# no such line\n", None),
        ("# Tools: curl $(rm -rf /)\n", ("curl",)),  # words that are no command are dropped
    ],
)
def test_declared(text: str, tools: tuple[str, ...] | None) -> None:
    assert hook_tools.declared(text) == tools


def shipped_hooks() -> dict[str, str]:
    found = {f"hooks.d/{n}": c.decode() for n, c in shipped.example_hooks().items()}
    found.update({f"resume.d/{n}": c.decode()
                  for n, c in shipped.example_hooks(shipped.RESUME).items()})  # fmt: skip
    found.update({n: c.decode() for n, c in shipped.examples().items()})
    return found


def test_every_shipped_hook_names_the_tools_it_runs() -> None:
    hooks = shipped_hooks()
    assert len(hooks) >= 18  # every hook and example under data/
    for name, text in hooks.items():
        tools = hook_tools.declared(text)
        assert tools is not None, f"{name} has no '# Tools:' line at its top"
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        used = {t for t in NOT_EVERYWHERE if re.search(rf"(^|[\s;|&(`]){t}\b", body, re.M)}
        assert used <= set(tools), f"{name} runs {sorted(used - set(tools))} but does not say"
