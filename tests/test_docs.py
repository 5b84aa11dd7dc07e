"""The repository stands on its own: what its text files cite must be in it.

Every tracked source, build and documentation file (``git ls-files``: .py .pyx .pxd .pxi .pyi .md .toml .cfg .yaml,
Makefiles; not ``node_modules``) is scanned for

- markdown file names, bare or with a path: a bare name counts as existing when a tracked file of that name exists
  anywhere in the repository; a path must resolve (from the repository root or from the citing file's folder) to a
  tracked file, never to a place outside the repository;
- a section cited after a markdown name (``docs/PROTOCOL.md, Resume``, ``FORWARDING.md#key-frames``): it must be
  a heading of that file;
- paths outside the repository: a relative path that climbs out of it (or to nothing), a home directory or the
  root user's, or the absolute work tree of the machine the project was written on.

URLs are not citations of repository files and are skipped. The samples below spell their bad citations so that this
file does not cite them itself.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]

SUFFIXES = {".py", ".pyx", ".pxd", ".pxi", ".pyi", ".md", ".toml", ".cfg", ".yaml", ".yml"}

#: A markdown file name, possibly with a path and an anchor or a ", Section" after it.
MD_NAME = re.compile(r"(?<![\w/.-])(/?(?:\.{1,2}/|[\w.-]+/)*[\w.-]*\w\.md)(?![\w-])(#[\w-]+)?")
#: The section text after a markdown name and a comma (an id such as B9 or a capitalised heading), to the end of it.
SECTION = re.compile(r"\s*,\s+([A-Z0-9][^)\];:.\"`]*)")
#: What may follow a cited heading: the end, another section (", x", " and x"), a range ("B1-B6", "x to y").
SECTION_END = r"(?:$|,|-| and | to )"
#: Paths outside any checkout. The work tree's name is spelt with a class so that this file does not match itself.
OUTSIDE = re.compile(r"(?<![\w.])(/wor[k]/[\w.-]|/hom[e]/[\w.-]+/|/roo[t]/|/User[s]/[\w.-]+/)")
#: A relative path that starts by climbing to the parent folder.
CLIMB = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.-][\w./-]*)")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    text: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text!r}: {self.problem}"


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    return [n for n in out.decode().split("\0") if n and "node_modules/" not in n]


def is_text_to_scan(name: str) -> bool:
    path = PurePosixPath(name)
    return (path.suffix in SUFFIXES or path.name == "Makefile") and (ROOT / name).is_file()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)]


def _inside(path: Path) -> bool:
    try:
        path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    return True


def _resolve_md(name: str, citing: str, tracked: set[str], by_name: dict[str, list[str]]) -> str | None:
    """The tracked file a cited markdown name refers to, or None."""
    if "/" not in name:
        found = by_name.get(name)
        return found[0] if found else None
    for base in (ROOT, (ROOT / citing).parent):
        candidate = base / name
        if not _inside(candidate):
            continue
        rel = candidate.resolve().relative_to(ROOT).as_posix()
        if rel in tracked:
            return rel
    return None


def _flat(text: str) -> str:
    """Comment prefixes and line breaks inside a citation become single spaces."""
    return re.sub(r"\s*\n\s*(?:#+\s*)?", " ", text)


def scan(citing: str, text: str, tracked: set[str], docs: dict[str, str]) -> list[Finding]:
    """Everything ``text`` (the content of the tracked file ``citing``) refers to that is not in the repository."""
    by_name: dict[str, list[str]] = {}
    for t in sorted(tracked):
        by_name.setdefault(PurePosixPath(t).name, []).append(t)
    findings: list[Finding] = []

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def in_url(pos: int) -> bool:
        start = max(text.rfind(c, 0, pos) for c in " \t\n(<[\"'`") + 1
        return "://" in text[start:pos]

    for m in MD_NAME.finditer(text):
        name, anchor = m.group(1), m.group(2)
        if in_url(m.start()):
            continue
        target = _resolve_md(name, citing, tracked, by_name)
        if target is None:
            where = "outside the repository" if "/" in name and not _inside((ROOT / citing).parent / name) else None
            findings.append(Finding(citing, line_of(m.start()), name, where or "no such file in the repository"))
            continue
        heads = headings(docs.get(target, ""))
        if anchor and anchor[1:] not in {slug(h) for h in heads}:
            findings.append(Finding(citing, line_of(m.start()), name + anchor, f"no heading {anchor} in {target}"))
        section = SECTION.match(_flat(text[m.end(): m.end() + 300]))
        if section and heads:
            cited = section.group(1).strip()
            if not any(re.match(re.escape(h) + SECTION_END, cited) for h in heads):
                findings.append(Finding(citing, line_of(m.start()), f"{name}, {cited}", f"no such heading in {target}"))
    for m in OUTSIDE.finditer(text):
        if not in_url(m.start()):
            findings.append(Finding(citing, line_of(m.start()), m.group(1), "a path outside the repository"))
    for m in CLIMB.finditer(text):
        target_path = (ROOT / citing).parent / m.group(1)
        if in_url(m.start()):
            continue
        if not _inside(target_path):
            findings.append(Finding(citing, line_of(m.start()), m.group(1), "a path outside the repository"))
            continue
        rel = target_path.resolve().relative_to(ROOT).as_posix()
        if rel not in tracked and not any(t.startswith(rel + "/") for t in tracked):
            findings.append(Finding(citing, line_of(m.start()), m.group(1), "no such path in the repository"))
    return findings


def _read_all(names: list[str]) -> dict[str, str]:
    return {n: (ROOT / n).read_text(encoding="utf-8", errors="replace") for n in names}


def test_every_citation_is_in_the_repository() -> None:
    tracked = set(tracked_files())
    names = sorted(n for n in tracked if is_text_to_scan(n))
    texts = _read_all(names)
    docs = {n: t for n, t in texts.items() if n.endswith(".md")}
    findings = [f for n in names for f in scan(n, texts[n], tracked, docs)]
    assert not findings, "cites what is not in the repository:\n" + "\n".join(map(str, findings))


def _sample(text: str) -> str:
    """Sample text with ``%md`` for the markdown suffix and ``{up}`` for a climb to the parent folder."""
    return text.replace("%md", ".md").replace("{up}", "../")


def test_the_scan_finds_bad_citations() -> None:
    tracked = {_sample("docs/GUIDE%md"), _sample("README%md"), "pkg/mod.py"}
    docs = {_sample("docs/GUIDE%md"): "# Guide\n\n## Resume\n\n### B9\n", _sample("README%md"): "# Title\n"}
    good = _sample(
        "# see docs/GUIDE%md, Resume; GUIDE%md#resume, docs/GUIDE%md, B9 and README%md\n"
        "# (docs/GUIDE%md,\n# Resume) and {up}README%md and https://example.org/x/NOTES%md\n"
        "# docs/GUIDE%md, B9 and Resume; docs/GUIDE%md, Resume, step 2\n"
    )
    assert scan("pkg/mod.py", good, tracked, docs) == []
    bad = _sample(
        "# NOTES%md §3\n"                      # 1: not in the repository
        "# docs/NOTES%md\n"                    # 2: no such path
        "# {up}{up}notes/design/GUIDE%md\n"    # 3: outside, although a GUIDE file exists inside
        "# docs/GUIDE%md, Reconnect\n"         # 4: no such heading
        "# GUIDE%md#b10\n"                     # 5: no such anchor
        "# see /wor" "k/notes/x\n"             # 6: the work tree
        "# /hom" "e/someone/notes\n"           # 7: a home directory
        "# {up}{up}elsewhere/file.txt\n"       # 8: climbs out of the repository
        "# {up}no-such-folder/file.txt\n"      # 9: climbs to nothing
        "# /opt/notes/GUIDE%md\n"              # 10: an absolute path
        "# docs/GUIDE%md, Resumes\n"           # 11: a heading's name is not a prefix
    )
    found = scan("pkg/mod.py", bad, tracked, docs)
    assert sorted({f.line for f in found}) == list(range(1, 12)), "\n".join(map(str, found))
    assert any(f.line == 3 and f.problem == "outside the repository" for f in found)
