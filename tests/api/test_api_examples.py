"""The four calls of the Python API (src/__init__.py) each carry an example in their docstring; each runs."""
import re

import pytest

import src


@pytest.mark.parametrize("name", src.__all__)
def test_the_docstring_example_runs(name, tmp_path, monkeypatch, capsys):
    doc = getattr(src, name).__doc__
    match = re.search(r"Example[^:]*::\n\n((?:        .*\n|\n)+)", doc)
    assert match, f"{name} has no example"
    code = "\n".join(line[8:] for line in match.group(1).splitlines())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"<{name} example>", "exec"), {})
    assert capsys.readouterr().out.strip(), "the example prints what it computed"
