"""The documentation stays whole: no placeholders, no broken links, synopses as --help prints them.

README.md, CONTRIBUTING.md and docs/ are read as files; the synopses are compared
with the usage argparse builds for each command, in process.
"""

from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from spotwatch.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
COMMANDS_PAGE = REPO / "docs" / "commands.md"
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m pytest"
)
PLACEHOLDER = re.compile(r"PLACEHOLDER|TODO|XXX|FIXME")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def doc_pages() -> list[Path]:
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]


def without_code(text: str) -> str:
    """The text less fenced blocks, indented blocks and code spans: links there are not links."""
    text = FENCE.sub("", text)
    prose = [line for line in text.splitlines() if not line.startswith("    ")]
    return re.sub(r"`[^`\n]*`", "", "\n".join(prose))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(
        ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN"
    )
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_the_pages_exist_and_the_readme_is_short() -> None:
    names = {p.relative_to(REPO).as_posix() for p in doc_pages()}
    for page in (
        "docs/index.md", "docs/hooks.md", "docs/operating.md", "docs/commands.md",
        "docs/clouds.md", "docs/fleet.md", "docs/iam.md", "docs/design.md",
        "docs/benchmarks.md", "docs/actions/README.md",
    ):  # fmt: skip
        assert page in names
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines < 400, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_carries_the_test_command_ci_runs() -> None:
    """.ci/run runs the README's test command verbatim: the two must not drift apart."""
    assert TEST_COMMAND in (REPO / "README.md").read_text()
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_placeholder_text(page: Path) -> None:
    found = [
        f"{page.relative_to(REPO)}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if PLACEHOLDER.search(line)
    ]
    assert not found, "placeholder text left in the docs:\n" + "\n".join(found)


def test_placeholder_pattern_catches_what_it_should() -> None:
    assert PLACEHOLDER.search("run PLACEHOLDER_INSTALL_CMD")
    assert PLACEHOLDER.search("hooks/services/T000/B000/XXXX")
    assert not PLACEHOLDER.search("a todo list of hooks")


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(without_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(REPO)}")
    assert not broken, f"broken links in {page.relative_to(REPO)}:\n" + "\n".join(broken)


def test_anchor_rules_match_github() -> None:
    assert slug("What spotwatch watches: `--watch`") == "what-spotwatch-watches---watch"
    metrics = "metrics-for-prometheus---metrics-file"
    assert slug("Metrics for Prometheus (`--metrics-file`)") == metrics
    assert slug("Why not prometheus_client") == "why-not-prometheus_client"


# -- synopses -----------------------------------------------------------------------


def leaf_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """'run' -> its parser, 'fleet setup' -> ..., for every command that does something."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = leaf_parsers(sub)
                out.update({f"{name} {k}": v for k, v in nested.items()} if nested else {name: sub})
    return out


def normalised(usage: str) -> str:
    usage = re.sub(r"^usage:\s*", "", usage.strip())
    usage = usage.replace(" [-h]", "")
    return " ".join(usage.split())


def documented_synopses() -> dict[str, str]:
    """Each `## ` section's first indented block, if it is a synopsis: command -> text."""
    out: dict[str, str] = {}
    lines = COMMANDS_PAGE.read_text().splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("## "):
            continue
        body = iter(lines[index + 1 :])
        block: list[str] = []
        for candidate in body:
            if candidate.strip() or block:
                if not candidate.startswith("    "):
                    break
                block.append(candidate[4:])
        current: list[str] = []
        for row in block:
            if row.startswith("spotwatch ") and current:
                text = " ".join(current)
                out[command_of(text)] = text
                current = []
            if row.startswith("spotwatch ") or current:
                current.append(row)
        if current:
            text = " ".join(current)
            out[command_of(text)] = text
    return out


def command_of(synopsis: str) -> str:
    words = synopsis.split()[1:]
    name = words[0]
    return f"{name} {words[1]}" if name == "fleet" else name


def test_every_command_has_a_synopsis_in_the_reference() -> None:
    commands = set(leaf_parsers(build_parser()))
    missing = sorted(commands - set(documented_synopses()))
    assert not missing, f"docs/commands.md has no synopsis for: {', '.join(missing)}"


@pytest.mark.parametrize("command", sorted(leaf_parsers(build_parser())))
def test_synopsis_is_what_help_prints(command: str) -> None:
    parser = leaf_parsers(build_parser())[command]
    expected = normalised(parser.format_usage())
    documented = documented_synopses().get(command)
    if documented is None:
        pytest.fail(f"no synopsis for {command} in docs/commands.md")
    assert " ".join(documented.split()) == expected, (
        f"docs/commands.md's synopsis of 'spotwatch {command}' differs from its --help;"
        f" run tools/update-synopses, or write it as:\n\n    {expected}\n"
    )


def test_documented_synopsis_reader_sees_a_wrong_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "commands.md"
    page.write_text("# x\n\n## `spotwatch hooks`\n\n    spotwatch hooks [--hooks-dir D]\n\nprose\n")
    monkeypatch.setattr(sys.modules[__name__], "COMMANDS_PAGE", page)
    assert documented_synopses() == {"hooks": "spotwatch hooks [--hooks-dir D]"}


def test_strict_dropin_quotes_the_exposure_figures_the_docs_give() -> None:
    comment = (REPO / "systemd" / "spotwatch.service.d" / "strict.conf").read_text()
    match = re.search(r"rates it (\d\.\d),\s*#?\s*against (\d\.\d) for the default unit", comment)
    assert match, "strict.conf should name its exposure and the default unit's"
    strict, default = match.groups()
    operating = (REPO / "docs" / "operating.md").read_text()
    assert f"exposure {default}" in operating
    assert f"Strict drop-in (exposure {strict})" in operating


COMMAND_LINE = re.compile(
    r"(?:^|[\s/(`])spotwatch ((?:fleet )?[a-z]+)((?:[ \t]+[^|&;#>\s`]+)*)"
)


def flags_named(text: str) -> list[tuple[str, str]]:
    """(command, --flag) for every `spotwatch COMMAND ... --flag` written in the text."""
    out = []
    for line in [*re.findall(r"`([^`\n]+)`", text), *text.splitlines()]:
        for match in COMMAND_LINE.finditer(line):
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", match.group(2)):
                out.append((match.group(1), flag))
    return out


def test_flags_named_reads_commands_in_prose_and_code() -> None:
    text = "Run `spotwatch drill --lead 30 | tee x --no`.\n    sudo spotwatch fleet watch --json"
    found = flags_named(text)
    assert found == [("drill", "--lead"), ("drill", "--lead"), ("fleet watch", "--json")]


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_flag_the_docs_give_a_command_exists(page: Path) -> None:
    parsers = leaf_parsers(build_parser())
    unknown = sorted(
        {
            f"spotwatch {command} {flag}"
            for command, flag in flags_named(page.read_text())
            if command in parsers
            and flag not in {o for a in parsers[command]._actions for o in a.option_strings}
        }
    )
    assert not unknown, f"{page.relative_to(REPO)} names flags that do not exist: {unknown}"
