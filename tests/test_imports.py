"""Import structure: no cycle among vidvec's modules, and the registry and the light commands need no torch."""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vidvec.registry import list_models

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_files() -> dict[str, Path]:
    """Module name -> file for every module under src/vidvec; a package's ``__init__`` is the package's node."""
    files = {}
    for path in (SRC / "vidvec").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                                         or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every ``import`` / ``from ... import`` at any depth (module level, in functions, ...), except in the body
    of an ``if TYPE_CHECKING:`` (its ``else`` still counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(node.orelse if _is_type_checking(node) else ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """vidvec module -> the vidvec modules its import statements name (relative imports resolved; ``from X import
    y`` names the module X.y when there is one, else X)."""
    files = _module_files()
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _import_nodes(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def test_the_walker_sees_function_level_imports_and_skips_type_checking_ones():
    graph = import_graph()
    assert len(graph) > 40 and "vidvec.models.pyslowfast" in graph
    assert "vidvec.models.i3d_net" in graph["vidvec.models.i3d"]  # imported inside build_i3d
    assert "vidvec.models.pyslowfast.build" in graph["vidvec.models.pyslowfast.checkpoint"]  # relative import
    assert "vidvec.models.base" not in graph["vidvec.registry"]  # only under `if TYPE_CHECKING:`


def test_no_import_cycles():
    # The registry finds the model families by module name (registry.FAMILIES and entry points), so the
    # family modules import it and it imports none of them.
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as error:
        pytest.fail("import cycle: " + " -> ".join(error.args[1]))


def _run(code: str, **kwargs) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_card_is_made_without_torch():
    out = _run("""
        import sys
        import vidvec.registry
        from vidvec.registry import get_card, list_models
        vidvec.registry.list_models()
        cards = [get_card(n) for n in list_models()]
        assert list_models("pyslowfast") and [c.preprocess_for(None) for c in cards]
        print(len(cards), [m for m in ("torch", "torchvision") if m in sys.modules])
    """)
    assert out.split() == [str(len(list_models())), "[]"], out


def _runs_without_torch(argv: list[str]) -> None:
    """Run ``vidvec *argv`` in a fresh interpreter and assert it succeeded without importing torch."""
    out = _run(f"""
        import sys
        from vidvec.cli import app
        sys.argv = ["vidvec", *{argv!r}]
        try:
            app()
        except SystemExit as exit:
            assert not exit.code, exit.code
        print("modules:", [m for m in ("torch", "torchvision") if m in sys.modules])
    """)
    assert out.rstrip().endswith("modules: []"), out[-2000:]


@pytest.mark.parametrize("argv", [["--help"], ["models"], ["models", "--family", "pyslowfast"]])
def test_light_commands_need_no_torch(argv):
    _runs_without_torch(argv)


def test_index_and_search_by_a_stored_clip_need_no_torch(tmp_path: Path):
    import media
    import vidvec

    media.make_video(tmp_path / "a.mp4", frames=20, fps=10, size=(64, 48))
    assert [o.status for o in vidvec.extract([tmp_path / "a.mp4"], out=tmp_path / "out", num_workers=0)] == ["done"]
    _runs_without_torch(["index", str(tmp_path / "out"), "--into", str(tmp_path / "store")])
    _runs_without_torch(["search", str(tmp_path / "store"), "--like-clip", "a@0.5", "-k", "1"])


def test_entry_points_add_model_families(tmp_path: Path):
    # A distribution (here a bare .dist-info on sys.path) names a module in the vidvec.models group.
    dist = tmp_path / "vidvec_toy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vidvec-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vidvec.models]\ntoy = vidvec_toy_models\n")
    (tmp_path / "vidvec_toy_models.py").write_text(textwrap.dedent("""
        from vidvec.registry import ModelCard, register_model
        from vidvec.sampling import SamplingSpec
        from vidvec.transforms import Preprocess

        @register_model
        def toy_model() -> ModelCard:
            return ModelCard(name="toy_model", family="toy", input="image", build=lambda num_classes=None: None,
                             weights=(), embed_dim=8, sampling=SamplingSpec("frames", fps=None), latent="none",
                             description="a toy", preprocess=Preprocess((8,), (8, 8), (0.5,) * 3, (0.5,) * 3))
    """))
    out = _run("""
        import sys
        from vidvec.registry import family_modules, get_card, list_models
        assert family_modules()[-1] == "vidvec_toy_models", family_modules()
        assert list_models("toy") == ["toy_model"] and "toy_model" in list_models()
        print(get_card("toy_model").description, "torch" in sys.modules)
    """, env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))})
    assert out.split() == ["a", "toy", "False"]
