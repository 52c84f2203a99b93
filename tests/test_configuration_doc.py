"""docs/configuration.md documents every config key, with its default, and every `--mode`, and
nothing else.

The keys are defined once, in `base_config()`, and the modes once, in
`mhp_keras.training.modes.MODES`; the doc's tables are checked against both, so a new key or mode
cannot go undocumented and a removed one cannot linger in the doc.
"""

import pathlib
import re

from mhp_keras.config.defaults import base_config
from mhp_keras.training import modes

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def sections() -> dict[str, str]:
    """Heading ("Keys", "Modes", ...) -> the text below it, up to the next `## ` heading."""
    parts = re.split(r"^## (.+)$", DOC.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def table_rows(text: str) -> list[list[str]]:
    """The cells of each body row of the markdown tables in `text` (headers and rules left out)."""
    lines = text.splitlines()
    rule = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")
    rows = []
    for i, line in enumerate(lines):
        header = i + 1 < len(lines) and rule.match(lines[i + 1])
        if line.startswith("|") and not rule.match(line) and not header:
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def leaf_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for name, value in config.items():
        if isinstance(value, dict):
            keys += leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_config_key_is_documented_once():
    documented = []
    for row in table_rows(sections()["Keys"]):
        # A row may document several keys: "`data.image_size`, `data.channels`".
        documented += re.findall(r"`([^`]+)`", row[0])
    expected = leaf_keys(base_config().to_dict())
    assert sorted(set(expected) - set(documented)) == [], "undocumented keys"
    assert sorted(set(documented) - set(expected)) == [], "documented keys that do not exist"
    assert len(documented) == len(set(documented)), "a key documented twice"


def doc_value(text: str):
    """A default as the doc writes it: unset, True / False, a number, or text (maybe quoted)."""
    if text == "unset":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text.strip('"')


def test_documented_defaults_are_base_configs():
    config = base_config()
    wrong = []
    for row in table_rows(sections()["Keys"]):
        keys = re.findall(r"`([^`]+)`", row[0])
        # One default per key ("16, 1"), or one shared by every key of the row ("").
        parts = row[1].split(", ")
        parts = parts * len(keys) if len(parts) == 1 else parts
        assert len(parts) == len(keys), row[:2]
        for key, part in zip(keys, parts):
            value = config
            for name in key.split("."):
                value = value[name]
            documented = doc_value(part.strip())
            same = documented is value if isinstance(value, bool) else documented == value
            if not same:
                wrong.append(f"{key}: doc {part!r}, base_config {value!r}")
    assert not wrong


def test_modes_table_is_the_registry():
    rows = table_rows(sections()["Modes"])
    assert [row[0].strip("`") for row in rows] == list(modes.MODES)
    for row in rows:
        mode = modes.MODES[row[0].strip("`")]
        assert row[1] == ("yes" if mode.creates_workdir else "no"), row[0]
        assert row[2] == mode.description, row[0]
