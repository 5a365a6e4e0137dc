"""The example notebooks in notebooks/: stored without outputs, and every one runs top to bottom.

Each notebook is executed headless (nbclient) in a kernel of the Python running the tests, started
in a temporary folder outside the repository, so it finds the package through the installation
(``pip install -e .``) and the committed models through ``src.config.REPO_ROOT``, as it would in
Jupyter anywhere. A changed API therefore breaks this suite, not a user's notebook.
"""
import json
import sys
import time
from pathlib import Path

import pytest

# Every test here starts processes (torchrun ranks, kernels, scripts): deselect with -m "not slow".
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"stitching_results.ipynb", "layer_similarity.ipynb", "stitch_matrix.ipynb", "your_own_models.ipynb"}
CELL_TIMEOUT_S = 600  # a cell on a loaded 2-core machine; the notebooks take a minute or two in all


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_example_notebooks_exist():
    assert EXPECTED <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs_and_opens_with_what_it_shows(path):
    nb = read_json(path)
    assert nb["nbformat"] == 4
    cells = nb["cells"]
    first = cells[0]
    assert first["cell_type"] == "markdown"
    text = "".join(first["source"])
    assert text.startswith("# "), "the first cell should be a markdown title"
    assert len(text.split()) > 20, "the first cell should say what the notebook shows"
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {index} has stored outputs (clear them before committing)"
            assert cell.get("execution_count") is None, f"cell {index} has an execution count"
        assert "attachments" not in cell, f"cell {index} has attachments"


@pytest.fixture
def kernel_of_this_python(tmp_path, monkeypatch):
    """A kernel spec that runs the interpreter of these tests, found first on JUPYTER_PATH.

    Without it "python3" could name a kernel of another environment installed in the user's
    Jupyter folders. PYTHONPATH is cleared so that only the installed package can be imported.
    """
    pytest.importorskip("ipykernel", reason="pip install -r requirements-dev.txt")
    name = "drfrank-tests"
    spec_dir = tmp_path / "jupyter" / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (drfrank tests)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # ipykernel's inline backend: figures become outputs
    return name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom_outside_the_repository(path, kernel_of_this_python, tmp_path):
    nbclient = pytest.importorskip("nbclient", reason="pip install -r requirements-dev.txt")
    nbformat = pytest.importorskip("nbformat", reason="pip install -r requirements-dev.txt")
    nb = nbformat.read(path, as_version=4)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, kernel_name=kernel_of_this_python, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(workdir)}})
    started = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    print(f"{path.name}: {time.perf_counter() - started:.1f} s")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "every code cell ran"
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors
    images = [out for cell in code for out in cell.outputs if "image/png" in out.get("data", {})]
    assert images, f"{path.name} draws no figure"
    assert list(workdir.iterdir()) == [], "a notebook should write only to temporary folders it makes itself"
