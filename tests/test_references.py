"""Every document the project refers to is part of the project.

Scans every tracked text file of the checkout (``git ls-files``) and fails, listing
``file:line`` of each offender, on

* a citation of an outside formula sheet (the word written in capitals below as
  ``OUTSIDE_SHEET``) or a path into a folder outside the repository
  (``OUTSIDE_FOLDER``): the physics is documented in ``docs/theory.md``;
* a path to a Markdown file (a name ending in ``.md``) named in code or docs that
  does not exist: resolved against the repository root or the mentioning file's
  folder, and a bare file name also against ``docs/``;
* a relative Markdown link ``[text](target)`` whose target does not exist relative
  to the file (anchors stripped; http(s), mailto and pure ``#anchor`` links ignored);
* a citation ``docs/theory.md §N`` or ``§N.M`` (and every ``§`` number in
  ``docs/theory.md`` itself) naming a section that has no heading there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THEORY = "docs/theory.md"

# Spelled in pieces so that this file does not match its own patterns.
OUTSIDE_SHEET = "SP" + "EC"
OUTSIDE_FOLDER = "sha" + "red/"

SHEET_RE = re.compile(r"\b" + OUTSIDE_SHEET + r"\b")
FOLDER_RE = re.compile(r"(?<![\w-])" + re.escape(OUTSIDE_FOLDER))
URL_RE = re.compile(r"\b(?:https?|ftp)://\S+")
MD_PATH_RE = re.compile(r"(?<![\w./*-])((?:\.{1,2}/)*\w[\w./-]*\.md)(?![\w-])")
MD_LINK_RE = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SECTION = r"\d+(?:\.\d+)?"
CITATION_RE = re.compile(r"theory\.md((?:[\s,;]*(?:and\s+)?§\s*" + SECTION
                         + r"(?:\s*[-–]\s*" + SECTION + r")?)+)")
SECTION_RE = re.compile(r"§\s*(" + SECTION + r")(?:\s*[-–]\s*(" + SECTION + r"))?")
HEADING_RE = re.compile(r"^#{1,6}\s+§(" + SECTION + r")(?![\d.]*\d)")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name]


def text_lines(path: Path) -> list[str] | None:
    """The file's lines, or None for a binary, unreadable or deleted file."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None


def theory_sections() -> set[str]:
    lines = text_lines(ROOT / THEORY) or []
    return {m.group(1) for line in lines if (m := HEADING_RE.match(line))}


def in_repository(candidate: Path) -> bool:
    """True for an existing path inside the checkout (``..`` may not leave it)."""
    resolved = candidate.resolve()
    return resolved.exists() and resolved.is_relative_to(ROOT)


def mention_exists(path: Path, target: str) -> bool:
    """A path named in prose or code: relative to the repository root or to the
    file's folder; a bare file name may also live in docs/."""
    candidates = [ROOT / target, path.parent / target]
    if "/" not in target:
        candidates.append(ROOT / "docs" / target)
    return any(in_repository(c) for c in candidates)


def link_exists(path: Path, target: str) -> bool:
    """A Markdown link target, relative to the linking file (as a renderer reads it)."""
    target = target.split("#", 1)[0].split("?", 1)[0]
    if not target:
        return True
    if target.startswith("/"):
        return in_repository(ROOT / target.lstrip("/"))
    return in_repository(path.parent / target)


def offenders() -> list[str]:
    sections = theory_sections()
    found = []
    for path in tracked_files():
        lines = text_lines(path)
        if lines is None:
            continue
        rel = path.relative_to(ROOT).as_posix()
        is_markdown = path.suffix == ".md"
        for number, line in enumerate(lines, 1):
            where = f"{rel}:{number}"
            if SHEET_RE.search(line):
                found.append(f"{where}: cites the outside formula sheet "
                             f"(use docs/theory.md §N): {line.strip()}")
            if FOLDER_RE.search(line):
                found.append(f"{where}: refers to a folder outside the repository: "
                             f"{line.strip()}")
            bare = URL_RE.sub(" ", line)
            for target in MD_PATH_RE.findall(bare):
                if not mention_exists(path, target):
                    found.append(f"{where}: names {target}, which is not in the repository")
            if is_markdown:
                for target in MD_LINK_RE.findall(line):
                    if re.match(r"^(?:[a-z][a-z0-9+.-]*:|#)", target, flags=re.I):
                        continue
                    if not link_exists(path, target):
                        found.append(f"{where}: link to {target}, which does not exist "
                                     f"relative to {rel}")
            cited = [m.group(1) for m in CITATION_RE.finditer(bare)]
            if rel == THEORY and not HEADING_RE.match(line):
                cited.append(line)
            for text in cited:
                for m in SECTION_RE.finditer(text):
                    for sec in filter(None, m.groups()):
                        if sec not in sections:
                            found.append(f"{where}: cites {THEORY} §{sec}, which has no "
                                         f"heading there")
    return found


def test_theory_has_the_numbered_sections():
    sections = theory_sections()
    wanted = {"1", "2", "2.1", "2.2", "2.3", "2.4", "2.5", "3", "4", "5", "6"}
    assert wanted <= sections, f"{THEORY} lacks the sections {sorted(wanted - sections)}"


def test_no_reference_to_a_document_outside_the_repository():
    bad = offenders()
    assert not bad, (f"{len(bad)} reference(s) to documents or sections that are not in "
                     "the repository:\n" + "\n".join(bad))
