"""What the runner does to a module before computing, and how a run shares the cores: BatchNorms folded only where
the function stays the same; decode threads plus the model's threads never more than the cores; each model's
default batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import media
import vidvec
from vidvec import extraction
from vidvec.optimize import fold_batch_norms
from vidvec.runner import ModelRunner, default_batch_size
from vidvec.writers import read_features


def _trained(norm: nn.modules.batchnorm._BatchNorm, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    channels = norm.num_features
    norm.running_mean.copy_(torch.randn(channels, generator=generator))
    norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    norm.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
    norm.bias.data.copy_(torch.randn(channels, generator=generator))
    return norm.eval()


class Residual(nn.Module):
    """conv1 feeds bn1 only (foldable); conv2's output is also added to the result (not foldable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), _trained(nn.BatchNorm2d(8), 1)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), _trained(nn.BatchNorm2d(8), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.bn2(y) + y


class Untraceable(nn.Module):
    """A forward fx cannot trace (it branches on the data); its child can be."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(3, 4, 3), _trained(nn.BatchNorm3d(4), 3), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) if x.sum() > -1e9 else x


class StandardisedConv(nn.Conv2d):
    """Standardises its weights at every call: scaling them changes nothing, so a BatchNorm cannot be folded in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


def _same_function(module: nn.Module, x: torch.Tensor, folded: int) -> None:
    module.eval()
    with torch.no_grad():
        before = module(x)
        assert fold_batch_norms(module) == folded
        after = module(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_a_batchnorm_that_only_sees_one_convolution_is_folded_and_the_result_is_unchanged():
    model = Residual()
    _same_function(model, torch.randn(2, 3, 9, 9), folded=1)
    assert isinstance(model.bn1, nn.Identity) and isinstance(model.bn2, nn.BatchNorm2d)


def test_the_children_of_a_module_that_does_not_trace_are_folded():
    model = Untraceable()
    _same_function(model, torch.randn(1, 3, 5, 6, 6), folded=1)
    assert isinstance(model.body[1], nn.Identity)


def test_a_convolution_that_uses_its_weights_otherwise_is_left_alone():
    model = nn.Sequential(StandardisedConv(3, 4, 3), _trained(nn.BatchNorm2d(4), 4))
    _same_function(model, torch.randn(2, 3, 7, 7), folded=0)
    assert isinstance(model[1], nn.BatchNorm2d)


def test_a_convolution_called_twice_or_a_batchnorm_in_training_is_left_alone():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), _trained(nn.BatchNorm2d(3), 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + self.conv(x)

    _same_function(Twice(), torch.randn(1, 3, 4, 4), folded=0)
    training = nn.Sequential(nn.Conv2d(3, 3, 1), _trained(nn.BatchNorm2d(3), 6).train())
    assert fold_batch_norms(training) == 0


def test_folding_a_low_precision_model_keeps_its_dtype():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _trained(nn.BatchNorm2d(4), 7)).to(torch.bfloat16).eval()
    assert fold_batch_norms(model) == 1
    assert model[0].weight.dtype == model[0].bias.dtype == torch.bfloat16


class QuickGELU(nn.Module):  # CLIP's activation, as open_clip defines it
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class LooksLikeQuickGELU(nn.Module):  # the name, another function
    def forward(self, x):
        return x * torch.sigmoid(x)


def test_a_quick_gelu_between_two_linears_becomes_a_silu_and_the_result_is_unchanged():
    from vidvec.optimize import fold_quick_gelus

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), QuickGELU(), nn.Linear(32, 8)).eval()
    x = torch.randn(5, 8)
    expected = mlp(x).detach()
    assert fold_quick_gelus(nn.Sequential(mlp)) == 1
    assert isinstance(mlp[1], nn.SiLU)
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
    other = nn.Sequential(nn.Linear(8, 32), LooksLikeQuickGELU(), nn.Linear(32, 8))
    LooksLikeQuickGELU.__name__ = "QuickGELU"
    try:
        assert fold_quick_gelus(other) == 0 and isinstance(other[1], LooksLikeQuickGELU)
    finally:
        LooksLikeQuickGELU.__name__ = "LooksLikeQuickGELU"
    assert fold_quick_gelus(nn.Sequential(nn.Linear(8, 8), QuickGELU(), nn.ReLU())) == 0  # no Linear after


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 64])
def test_decode_threads_and_model_threads_never_exceed_the_cores(monkeypatch, cores):
    monkeypatch.setattr(extraction, "cores", lambda: cores)
    for device in ("cpu", "cuda"):
        workers = extraction.default_workers(device)
        decoder_threads, model_threads = extraction.thread_budget(workers)
        if workers:
            assert decoder_threads == 1 and workers * decoder_threads + model_threads <= max(cores, workers + 1)
        else:  # decoding inline alternates with the model: both may use every core
            assert decoder_threads == 0 and model_threads == cores
    assert extraction.default_workers("cpu") == min(8, cores // 4)
    assert extraction.default_workers("cuda") == max(1, min(8, cores - 1))


def test_the_run_sets_the_model_threads_and_gives_them_back(tmp_path, monkeypatch):
    media.make_video(tmp_path / "a.mp4", frames=3)
    seen = []
    real = ModelRunner.forward

    def spying(self, slot, clips):
        seen.append(torch.get_num_threads())
        return real(self, slot, clips)

    monkeypatch.setattr(ModelRunner, "forward", spying)
    monkeypatch.setattr(extraction, "cores", lambda: 4)
    before = torch.get_num_threads()
    assert before != 3
    (outcome,) = vidvec.extract([tmp_path / "a.mp4"], "efficientnet_lite0", None, num_workers=1)
    assert outcome.status == "done"
    assert seen and set(seen) == {3}  # 4 cores, one for the decode worker's decoder
    assert torch.get_num_threads() == before


def test_each_model_has_its_own_default_batch_and_the_provenance_records_it(tmp_path):
    assert default_batch_size("video", "cpu") == 2
    assert default_batch_size("image", "cpu") == default_batch_size("video", "cuda") == 16
    video = media.make_video(tmp_path / "a.mp4", frames=3)
    list(vidvec.extract([video], "efficientnet_lite0", tmp_path / "out", num_workers=0))
    assert read_features(tmp_path / "out" / "a.npz")[1]["batch_size"] == 16
    list(vidvec.extract([video], "efficientnet_lite0", tmp_path / "out8", num_workers=0, batch_size=8))
    assert read_features(tmp_path / "out8" / "a.npz")[1]["batch_size"] == 8
