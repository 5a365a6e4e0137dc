"""The package is installed (``pip install -e .``, done by ``make setup``) and its README imports work.

Every check runs a fresh interpreter in a temporary folder outside the repository with PYTHONPATH
cleared, so ``import src`` can only succeed through the installation, as in a notebook.
"""
import pytest
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
INSTALL_HINT = "install the package: make setup, or pip install --no-deps -e . in the virtualenv"


def run_elsewhere(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def readme_python_blocks(text: str):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def import_statements(block: str):
    """The ``import x`` / ``from x import y`` statements of a code block, parenthesised continuations joined."""
    statements, lines = [], iter(block.splitlines())
    for line in lines:
        if re.match(r"\s*(import|from)\s+[\w.]+", line):
            statement = line.strip()
            while statement.count("(") > statement.count(")"):
                statement += " " + next(lines).strip()
            statements.append(statement)
    return statements


def test_readme_import_parser_finds_plain_and_parenthesised_imports():
    block = "import os\nx = 1\nfrom a.b import (c,\n    d)\n  from e import f  # note\nprint('import x')\n"
    assert import_statements(block) == ["import os", "from a.b import (c, d)", "from e import f  # note"]


@pytest.mark.slow
def test_every_import_line_of_the_readme_works_from_another_folder(tmp_path):
    statements = [s for block in readme_python_blocks(README.read_text(encoding="utf-8")) for s in import_statements(block)]
    # The helpers the README shows must be among them (a parser that found nothing would pass vacuously).
    joined = "\n".join(statements)
    for name in ("load_model", "load_result", "load_summaries", "layer_similarity"):
        assert re.search(rf"\bimport\b.*\b{name}\b", joined), f"the README shows no import of {name}"
    # One interpreter for all of them (each imports torch); a failure's traceback names its line number.
    result = run_elsewhere("\n".join(statements), tmp_path)
    numbered = "\n".join(f"  line {i}: {s}" for i, s in enumerate(statements, 1))
    assert result.returncode == 0, f"a README import fails outside the repository ({INSTALL_HINT}):\n{numbered}\n" \
                                   f"{result.stderr[-2000:]}"


@pytest.mark.slow
def test_the_installed_package_is_this_checkout(tmp_path):
    result = run_elsewhere("import src; print(src.__file__)", tmp_path)
    assert result.returncode == 0, f"import src fails outside the repository ({INSTALL_HINT}):\n{result.stderr[-2000:]}"
    assert Path(result.stdout.strip()).resolve() == REPO / "src" / "__init__.py", \
        "src is imported from another copy; reinstall with pip install --no-deps -e ."


@pytest.mark.slow
def test_subpackages_without_init_files_are_installed_too(tmp_path):
    # src/stitching is a namespace package (no __init__.py); the installation must still find it, here.
    folders = sorted({p.parent for p in (REPO / "src").rglob("*.py")
                      if not (p.parent / "__init__.py").exists() and "__pycache__" not in p.parts})
    assert REPO / "src" / "stitching" in folders
    for folder in folders:
        package = ".".join(folder.relative_to(REPO).parts)
        code = f"import importlib; print(*importlib.import_module({package!r}).__path__, sep=chr(10))"
        result = run_elsewhere(code, tmp_path)
        assert result.returncode == 0, f"{package}: {result.stderr[-2000:]}"
        assert str(folder) in result.stdout.splitlines(), (package, result.stdout)


def test_installed_metadata_declares_exactly_the_requirements_txt_ranges():
    # pyproject.toml reads its dependencies from requirements.txt, so the two can never disagree
    # (a pip install of the package never pulls a torch outside the range).
    from importlib.metadata import PackageNotFoundError, requires

    wanted = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            wanted.add(str(Requirement(line)))
    try:
        declared = {str(Requirement(r)) for r in requires("drfrankenstein") or []}
    except PackageNotFoundError:
        raise AssertionError(f"the package drfrankenstein is not installed ({INSTALL_HINT})") from None
    assert declared == wanted
