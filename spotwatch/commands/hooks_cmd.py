"""Front end of `spotwatch hooks`: what would run, in order, and why the rest would not.

Exit status: 0 when nothing is refused, 1 when a hook is refused as unsafe or
the directory itself is unsafe, 2 when the directory is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spotwatch.config import DEFAULT_HOOKS_DIR, DEFAULT_RESUME_DIR
from spotwatch.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, SpotwatchError

if TYPE_CHECKING:
    from spotwatch.hook_tools import ToolCheck
    from spotwatch.hooks import HookPlan

def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hooks",
        help="show which hooks would run, in order, and why the others would not",
        description=(
            "List the hooks spotwatch would run, in order, and every other file in the "
            "hooks directory with the reason it would not run and the fix; and the tools "
            "each hook names in a '# Tools:' line at its top that are not on PATH. Exit status: "
            "0 fine, 1 something is refused as unsafe, 2 the directory is missing."
        ),
    )
    parser.add_argument(
        "--hooks-dir",
        metavar="DIR",
        default=os.environ.get("SPOTWATCH_HOOKS_DIR") or DEFAULT_HOOKS_DIR,
        help="the hooks directory (env SPOTWATCH_HOOKS_DIR; default %(default)s)",
    )
    parser.add_argument(
        "--resume-dir",
        metavar="DIR",
        default=os.environ.get("SPOTWATCH_RESUME_DIR") or DEFAULT_RESUME_DIR,
        help="the resume hooks, run on the way back (env SPOTWATCH_RESUME_DIR; "
        "default %(default)s; may be missing)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--examples", action="store_true",
                        help="list the shipped action and drain examples and what each needs")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.examples:
        return show_examples(as_json=bool(args.json))
    return show_hooks(
        Path(args.hooks_dir), as_json=bool(args.json), resume_dir=Path(args.resume_dir)
    )


def show_examples(*, as_json: bool = False) -> int:
    from dataclasses import asdict

    from spotwatch import examples, shipped
    from spotwatch.install import CONFIG_DIR

    found = examples.describe_all(shipped.examples())
    if as_json:
        json.dump([asdict(e) for e in found], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(examples.render(found, CONFIG_DIR))
    return EXIT_OK


def show_hooks(directory: Path, *, as_json: bool = False, resume_dir: Path | None = None) -> int:
    """Print the plan for ``directory`` (and ``resume_dir``'s); return the exit status."""
    from spotwatch.hooks import plan_hooks

    plan = plan_hooks(directory)
    if plan.missing:
        raise SpotwatchError(f"{plan.problem}; {plan.fix}", exit_code=EXIT_USAGE)
    # The resume hooks are optional: a missing directory only means no way back runs.
    resume = plan_hooks(resume_dir) if resume_dir is not None else None
    tools = check_tools(plan)
    resume_tools = check_tools(resume) if resume is not None and not resume.missing else {}
    if as_json:
        data = plan_to_json(plan, tools)
        if resume is not None:
            data["resume"] = None if resume.missing else plan_to_json(resume, resume_tools)
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_plan(plan, tools))
        if resume is not None:
            sys.stdout.write("\nResume hooks (run on the way back, SPOTWATCH_PHASE=resume):\n")
            if resume.missing:
                sys.stdout.write(f"Hooks directory: {printable(str(resume_dir))} does not "
                                 "exist: nothing runs on the way back.\n")  # fmt: skip
            else:
                sys.stdout.write(render_plan(resume, resume_tools))
    refused = plan.refused or (resume is not None and not resume.missing and resume.refused)
    return EXIT_FAILURE if refused else EXIT_OK


def _target(path: Path) -> str | None:
    """Where a symlink points (resolved), or None for a plain file."""
    return os.path.realpath(path) if os.path.islink(path) else None


def check_tools(plan: HookPlan) -> dict[str, ToolCheck]:
    """Each file's ``# Tools:`` looked up on PATH, by name: the hooks that would run
    and the rest (a disabled example is checked before it is enabled)."""
    from spotwatch import hook_tools

    entries = [(h.name, h.path) for h in plan.hooks] + [(r.name, r.path) for r in plan.rejected]
    return {name: hook_tools.check(path) for name, path in entries if os.path.isfile(path)}


def _tools_json(tools: Mapping[str, ToolCheck], name: str) -> dict[str, Any]:
    found = tools.get(name)
    needs = found.needs if found is not None else None
    return {"needs": list(needs) if needs is not None else None,
            "missing": list(found.missing) if found is not None else []}  # fmt: skip


def plan_to_json(plan: HookPlan, tools: Mapping[str, ToolCheck] | None = None) -> dict[str, Any]:
    tools = tools or {}
    return {
        "directory": str(plan.directory),
        "problem": plan.problem,
        "fix": plan.fix or None,
        "refused": plan.refused,
        "hooks": [
            {
                "order": i,
                "name": h.name,
                "path": str(h.path),
                "target": _target(h.path),
                **_tools_json(tools, h.name),
            }
            for i, h in enumerate(plan.hooks, 1)
        ],
        "rejected": [
            {
                "name": r.name,
                "path": str(r.path),
                "severity": r.severity,
                "reason": r.reason,
                "fix": r.fix,
                **_tools_json(tools, r.name),
            }
            for r in plan.rejected
        ],
    }


def printable(text: str) -> str:
    """``text`` safe for one line of a terminal: odd bytes and control characters escaped."""
    if text.isprintable():
        return text
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in raw.decode("utf-8", "backslashreplace")
    )


def render_plan(plan: HookPlan, tools: Mapping[str, ToolCheck] | None = None) -> str:
    """The plan as aligned text for a person."""
    lines = [f"Hooks directory: {printable(str(plan.directory))}"]
    if plan.problem is not None:
        lines.append(
            f"REFUSED: {printable(plan.problem)}; nothing in it runs. Fix: {printable(plan.fix)}"
        )
    lines.append("")
    if plan.hooks:
        lines.append("Would run, in this order:")
        width = len(str(len(plan.hooks)))
        for i, hook in enumerate(plan.hooks, 1):
            target = _target(hook.path)
            suffix = f" -> {printable(target)}" if target else ""
            lines.append(f"  {i:>{width}}. {printable(hook.name)}{suffix}")
    else:
        lines.append("Would run: nothing.")
    if plan.rejected:
        lines.append("")
        lines.append("Would not run:")
        rows = [("NAME", "STATUS", "REASON", "FIX")]
        rows += [
            (printable(r.name), r.severity, printable(r.reason), printable(r.fix))
            for r in plan.rejected
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            cells = [row[i].ljust(widths[i]) for i in range(3)] + [row[3]]
            lines.append("  " + "  ".join(cells).rstrip())
    counts = {
        s: sum(1 for r in plan.rejected if r.severity == s)
        for s in ("refused", "skipped", "ignored")
    }
    lines += _tools_lines(plan, tools or {})
    lines.append("")
    lines.append(
        f"{len(plan.hooks)} would run; {counts['refused']} refused, "
        f"{counts['skipped']} skipped, {counts['ignored']} ignored."
    )
    return "\n".join(lines) + "\n"


def _tools_lines(plan: HookPlan, tools: Mapping[str, ToolCheck]) -> list[str]:
    declared = {name: t for name, t in tools.items() if t.needs}
    if not declared:
        return []
    running = {h.name for h in plan.hooks}
    missing = [(name, t) for name, t in declared.items() if t.missing]
    if not missing:
        return ["", "Tools the hooks name (# Tools:): all found on PATH."]
    lines = ["", "Tools the hooks name (# Tools:) that are not on PATH:"]
    width = max(len(printable(name)) for name, _ in missing)
    for name, found in missing:
        note = "" if name in running else "  (would not run now)"
        lines.append(f"  {printable(name).ljust(width)}  missing {', '.join(found.missing)}{note}")
    lines.append(f"  PATH={os.environ.get('PATH', os.defpath)}: install them, or the hook "
                 "fails (exit 127) when it runs")  # fmt: skip
    return lines
