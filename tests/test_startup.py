"""vidvec.startup: the command's imports of torchvision and open_clip leave the compiler and timm out, and the
models they build are the same."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


def _python(code: str, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_torchvision_and_open_clip_come_without_the_compiler_and_timm():
    _python("""
        import sys
        from vidvec.startup import trim_imports
        trim_imports()
        import torch, torchvision, open_clip
        assert "torch._dynamo" not in sys.modules, "the compiler was imported"
        assert "timm" not in sys.modules, "timm was imported"
        x, boxes = torch.rand(1, 3, 8, 8), torch.tensor([[0, 0, 0, 4, 4.]])
        assert torchvision.ops.roi_align(x, boxes, 2).shape == (1, 3, 2, 2)
        # roi_align's helper is the real one, imported on its first call
        assert sys.modules["torchvision.ops.roi_align"].is_compile_supported("cpu") is True
        assert "torch._dynamo" in sys.modules
        import timm  # nothing is left blocked afterwards
        assert timm.__version__
    """)


def test_a_library_that_does_not_fit_is_imported_as_it_is(tmp_path: Path):
    """A version whose import needs more of the compiler than the stand-in has: the trimmed import is undone and
    done again as it is (here a made-up library in torchvision's place)."""
    package = tmp_path / "fakevision"
    package.mkdir()
    (package / "__init__.py").write_text("from fakevision import ops\n")
    (package / "ops.py").write_text("from torch._dynamo.utils import is_compile_supported, counters\n")
    _python("""
        import sys
        from vidvec import startup
        startup.TRIMMED = ("fakevision",)
        startup.trim_imports()
        import fakevision
        assert "torch._dynamo" in sys.modules
        from torch._dynamo.utils import counters
        assert fakevision.ops.counters is counters
    """, cwd=tmp_path)


@pytest.mark.slow
def test_clip_is_the_same_model_with_trimmed_imports(tmp_path: Path):
    code = """
        import sys, numpy as np, torch
        if {trim}:
            from vidvec.startup import trim_imports
            trim_imports()
        import open_clip
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
        with torch.inference_mode():
            image = model.encode_image(torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
            text = model.encode_text(open_clip.get_tokenizer("ViT-B-32-quickgelu")(["a dog"]))
        np.save({out!r}, np.concatenate([image.numpy(), text.numpy()]))
    """
    for trim in (True, False):
        _python(code.format(trim=trim, out=str(tmp_path / f"{trim}.npy")))
    trimmed, plain = np.load(tmp_path / "True.npy"), np.load(tmp_path / "False.npy")
    assert np.abs(plain).max() > 0
    np.testing.assert_array_equal(trimmed, plain)
