"""The README stays a short entry page, and the documentation hangs together: the README is at most
200 lines, its "Documentation" map links every page of docs/, and every relative link in the
README and in docs/*.md points at a file (and heading) that exists."""

import glob
import os
import re

import pytest
from readme_helpers import DOCS, README, ROOT

MAX_README_LINES = 200
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def section(text: str, heading: str) -> str:
    marker = f"\n## {heading}\n"
    assert marker in text, f"no section '## {heading}'"
    return text.split(marker, 1)[1].split("\n## ", 1)[0]


def anchors(path: str) -> set[str]:
    """The anchors GitHub gives the headings of the Markdown file `path`."""
    seen, out = {}, set()
    for line in prose(read(path)).splitlines():
        match = re.match(r"#{1,6} (.*)", line)
        if not match:
            continue
        title = match.group(1).strip().replace("`", "").lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def markdown_files() -> list[str]:
    return [README, *sorted(glob.glob(os.path.join(DOCS, "*.md")))]


def test_readme_is_short():
    lines = read(README).count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines, at most {MAX_README_LINES}"


def test_readme_keeps_the_ci_test_command():
    ci = read(os.path.join(ROOT, ".ci", "run"))
    assert "\npython -m pytest -q\n" in ci
    quick_start = section(read(README), "Quick start")
    assert 'pip install -e ".[test]" && python -m pytest -q\n' in quick_start
    assert 'python -m pytest -q -m "not slow"' in quick_start


def test_readme_docs_map_links_every_doc():
    docs_map = section(read(README), "Documentation")
    linked = {os.path.normpath(target) for target in LINK.findall(docs_map)}
    pages = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(DOCS, "*.md"))}
    assert pages, "no docs/*.md found"
    missing = sorted(pages - linked)
    assert not missing, f"README's Documentation map does not link {missing}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(path):
    broken = []
    for target in LINK.findall(prose(read(path))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part or path))
        if not os.path.exists(linked):
            broken.append(f"{target} (no file {os.path.relpath(linked, ROOT)})")
        elif anchor and linked.endswith(".md") and anchor not in anchors(linked):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{os.path.relpath(path, ROOT)}: broken links {broken}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_named_module_files_exist(path):
    """Paths such as `mhp_keras/serving/export.py` name files of the current layout, not of the
    flat one before it (whose old import paths `mhp_keras._moved` still accepts)."""
    named = set(re.findall(r"\bmhp_keras/[\w/]+\.py\b", read(path)))
    missing = sorted(p for p in named if not os.path.isfile(os.path.join(ROOT, p)))
    assert not missing, f"{os.path.relpath(path, ROOT)} names files that do not exist: {missing}"
