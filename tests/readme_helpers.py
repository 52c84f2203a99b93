"""Reads code blocks out of the project's Markdown, for the tests that run the documented examples
(tests/test_readme_example.py, tests/test_serving_recipe.py) so the docs cannot go stale."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
USAGE = os.path.join(DOCS, "usage.md")  # "Use it from Python"
SERVING = os.path.join(DOCS, "serving.md")  # the REST and gRPC clients


def markdown_blocks(heading: str, language: str = "python", path: str = README) -> list[str]:
    """The ```language blocks under the `## heading` of the Markdown file `path`, in order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    marker = f"\n## {heading}\n"
    assert marker in text, f"{os.path.relpath(path, ROOT)} has no section '## {heading}'"
    section = text.split(marker, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{re.escape(language)}\n(.*?)```", section, re.S)


def markdown_block(heading: str, path: str, language: str = "python") -> str:
    """The first ```language block under the `## heading` of the Markdown file `path`."""
    blocks = markdown_blocks(heading, language, path)
    assert blocks, f"no ```{language} block under '## {heading}' in {os.path.relpath(path, ROOT)}"
    return blocks[0]
