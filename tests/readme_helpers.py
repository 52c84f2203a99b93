"""Reads code blocks out of the project's Markdown, for the tests that run the documented examples
(tests/test_readme_example.py, tests/test_serving_recipe.py) so the docs cannot go stale."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def markdown_blocks(heading: str, language: str = "python", path: str = README) -> list[str]:
    """The ```language blocks under the `## heading` of the Markdown file `path`, in order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{re.escape(language)}\n(.*?)```", section, re.S)


def readme_block(heading: str, language: str = "python") -> str:
    """The first ```language block under the README heading `heading`."""
    return markdown_blocks(heading, language)[0]
