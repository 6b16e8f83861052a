"""The README's Python snippets run as written."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # snippets name configs/ relative to the root
    namespace: dict = {}
    exec(compile(SNIPPETS[index], f"README.md python snippet {index}", "exec"), namespace)
