"""The shipped action and drain examples, described from their own header comments.

Each example starts with a comment: its first sentence says what it does, a
``# Needs:`` paragraph what it needs (tools, permissions), ``# Resume:`` its
counterpart in resume.d. ``spotwatch hooks --examples`` lists them from that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    path: str  # under spotwatch/data and /etc/spotwatch: hooks.d/examples/NAME
    summary: str
    needs: str
    resume: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def describe(path: str, text: str) -> Example:
    """``text``'s header comment as an Example (pure)."""
    header: list[str] = []
    for line in text.splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    paragraphs: dict[str, list[str]] = {"": []}
    current = ""
    for line in header:
        label, sep, rest = line.partition(":")
        if sep and label == "Tools":
            continue  # the machine-readable list (hook_tools); Needs: says it in words
        if sep and label in ("Needs", "Resume", "Settings"):
            current = label
            paragraphs[current] = [rest.strip()]
        elif not line:
            current = "-" if current else current
            paragraphs.setdefault(current, [])
        else:
            paragraphs.setdefault(current, []).append(line)
    intro = " ".join(paragraphs[""])
    summary = intro.split(". ")[0].rstrip(".")
    return Example(
        path=path,
        summary=summary,
        needs=" ".join(paragraphs.get("Needs", [])),
        resume=" ".join(paragraphs.get("Resume", [])),
    )


def describe_all(files: Mapping[str, bytes]) -> list[Example]:
    return [describe(path, content.decode("utf-8", "replace")) for path, content in files.items()]


def render(examples: list[Example], config_dir: str) -> str:
    lines = []
    for folder in ("hooks.d/examples", "resume.d/examples"):
        chosen = [e for e in examples if e.path.startswith(folder + "/")]
        if not chosen:
            continue
        kind = "hooks" if folder.startswith("hooks") else "resume hooks"
        lines.append(f"{kind}, in {config_dir}/{folder} (enable: copy one up to "
                     f"{config_dir}/{folder.split('/')[0]}/):")
        for example in chosen:
            lines.append(f"  {example.name}: {example.summary}")
            if example.needs:
                lines.append(f"      needs: {example.needs}")
            if example.resume:
                lines.append(f"      resume: {example.resume}")
    return "\n".join(lines) + "\n"
