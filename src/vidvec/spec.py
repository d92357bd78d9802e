"""A run as data: :class:`RunSpec`, frozen and JSON-serialisable.

A spec names each model of the run (a *slot*) by registry name, weights file and its sha256, build options,
sampling and preprocessing, and says where results go (folder, output layout, file format). Planning a run
(:func:`plan_model`) loads no model: it resolves the weights file and hashes it, nothing more. So a driver can
plan on a login node or in a service, ship ``spec.to_json()`` to workers, and each worker loads the models
(:meth:`ModelSpec.load`) and gets exactly the same settings, settings hashes and outputs.

``RunSpec.settings(slot)`` is what an output folder is bound to; its hash is in every file's provenance and in
the ledger, and is the same as for folders made before specs existed (a test holds those hashes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .ledger import settings_hash
from .sampling import SamplingSpec
from .transforms import Preprocess

if TYPE_CHECKING:
    from .audio import AudioFrontend
    from .registry import ModelCard
    from .weights import LoadedModel

SPEC_VERSION = 1
# How each clip's vector is stored: as the model gives it, or divided by its L2 norm.
NORMALIZATIONS = ("none", "l2")


class SpecError(ValueError):
    """A spec that cannot be used: malformed JSON, or weights that are not what the spec says. One line."""


@dataclass(frozen=True)
class WeightsRef:
    """Which weights a model runs with: a card's entry (``name``), a checkpoint file of the user's ("file"), or
    "random"; the local ``path`` (None for random) and its full ``sha256`` ("random" for random weights, as the
    settings record it); the entry's ``url``; and how the file's identity is known (``trust``, see
    :func:`vidvec.weights.weights_trust`)."""

    name: str
    path: str | None
    sha256: str
    url: str | None = None
    trust: str = "random"


@dataclass(frozen=True)
class ModelSpec:
    """One model of the run: everything that decides its vectors, without the model itself."""

    name: str
    input: str  # video, image or audio
    weights: WeightsRef
    sampling: SamplingSpec
    preprocess: Preprocess | AudioFrontend
    latent: str
    options: tuple[tuple[str, Any], ...] = ()  # build options the card declares, sorted by name
    extras: tuple[str, ...] = ()  # by-products kept besides the vector (("flow",) with --save-flow)
    from_checkpoint: bool = False  # the architecture comes from the checkpoint itself (a PySlowFast .pyth's cfg)
    normalize: str = "none"  # "l2": each clip's vector is stored divided by its L2 norm (after any classifier)

    def load(self, device: str = "cpu", dtype: str = "float32", text: bool = True) -> LoadedModel:
        """Build the model and load its weights (``text=False``: without a text tower, see ``load_model``);
        SpecError when the weights file is not the one planned."""
        from .runner import DTYPES
        from .weights import load_model, sha256_file

        weights: str | Path = "random"
        if self.weights.path is not None:
            weights = Path(self.weights.path)
            digest = sha256_file(weights) if weights.is_file() else "missing"
            if digest != self.weights.sha256:
                raise SpecError(f"{weights} has sha256 {digest[:16]}... but the run was planned with "
                                f"{self.weights.sha256[:16]}...: the file changed since")
        loaded = load_model(None if self.from_checkpoint else self.name, weights=weights, device=device,
                            dtype=DTYPES[dtype], build_options=dict(self.options), text=text)
        return replace(loaded, preprocess=self.preprocess)  # as planned (a preset may set its pixels)


@dataclass(frozen=True)
class OutputSpec:
    """Where a run's results go: ``out`` (None: in memory only), the output ``layout`` (vidvec, pyslowfast,
    hero), the file ``format`` (npz, npy, pt) and the stored feature dtype."""

    out: str | None = None
    layout: str = "vidvec"
    format: str = "npz"
    out_dtype: str = "float32"


@dataclass(frozen=True)
class RunSpec:
    """A whole run: its models (slots), where results go, the compute dtype, what is kept besides the vectors
    (``top_k`` classes, ``logits``) and whether truncated or damaged videos keep what was decoded."""

    models: tuple[ModelSpec, ...]
    output: OutputSpec = field(default_factory=OutputSpec)
    dtype: str = "float32"
    top_k: int = 0
    logits: bool = False
    partial: bool = False

    def folder(self, slot: int) -> Path | None:
        """Model ``slot``'s output folder: ``out``, or ``out/<model>`` in a run with several models."""
        if self.output.out is None:
            return None
        root = Path(self.output.out)
        return root / self.models[slot].name if len(self.models) > 1 else root

    def settings(self, slot: int) -> dict:
        """What makes model ``slot``'s outputs what they are: the settings its output folder is bound to."""
        model = self.models[slot]
        settings = {
            "model": model.name,
            "weights": {"name": model.weights.name, "sha256": model.weights.sha256, "url": model.weights.url},
            "sampling": model.sampling.to_dict(),
            "preprocess": model.preprocess.to_dict(),
            "latent": model.latent,
            "dtype": self.dtype,
            "format": self.output.format,
            "out_dtype": self.output.out_dtype,
            "top_k": self.top_k,
            "logits": bool(self.logits or self.top_k),
        }
        # Keys added after the first release appear only when used, so older folders keep their hash.
        if model.options:
            settings["model_options"] = dict(model.options)
        if model.normalize != "none":
            settings["normalize"] = model.normalize
        if "flow" in model.extras:
            settings["save_flow"] = True
        if self.output.layout != "vidvec":
            settings["layout"] = self.output.layout
        return settings

    def settings_hash(self, slot: int) -> str:
        return settings_hash(self.settings(slot))

    def to_json(self) -> str:
        return json.dumps({"vidvec_run_spec": SPEC_VERSION, **_plain(asdict(self))}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            data = json.loads(text)
            if data.pop("vidvec_run_spec") != SPEC_VERSION:
                raise SpecError("a run spec of another vidvec version")
            models = tuple(_model(m) for m in data.pop("models"))
            return cls(models=models, output=OutputSpec(**data.pop("output")), **data)
        except SpecError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise SpecError(f"not a vidvec run spec: {error}") from None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], weights: str | os.PathLike | None = None) -> RunSpec:
        """The one-model run, results in memory, that makes the vectors of an output folder bound to ``settings``
        (vidvec's own layout): the model with its weights entry found again by name (or ``weights``: an entry,
        a file, "random"), its sampling, pixels, options and normalisation. SpecError when that run's settings
        hash is not the folder's (other weights, or settings this vidvec cannot make)."""
        from .registry import get_card

        stored = settings["weights"]
        if weights is None and stored["name"] in ("random", "file"):
            raise SpecError(f"the {settings['model']} vectors were made with weights '{stored['name']}': give the "
                            "same weights")
        fields = {("geometry" if k == "layout" else k): tuple(v) if isinstance(v, list) else v
                  for k, v in settings["preprocess"].items()}
        try:
            card = get_card(settings["model"])
            model = plan_model(card, weights or stored["name"], SamplingSpec(**settings["sampling"]),
                               settings.get("model_options", {}), pixels=fields,
                               normalize=settings.get("normalize", "none"))
        except (TypeError, ValueError) as error:
            raise SpecError(f"cannot run {settings['model']} as these settings say: {error}") from None
        spec = cls((model,), OutputSpec(None, "vidvec", settings["format"], settings["out_dtype"]),
                   dtype=settings["dtype"], top_k=settings["top_k"], logits=settings["logits"])
        if model.weights.sha256 != stored["sha256"]:
            raise SpecError(f"weights {model.weights.name} have sha256 {model.weights.sha256[:16]}..., the "
                            f"{model.name} vectors were made with {stored['sha256'][:16]}...")
        if spec.settings_hash(0) != settings_hash(dict(settings)):
            raise SpecError(f"this vidvec cannot make {model.name} vectors with exactly these settings (hash "
                            f"{settings_hash(dict(settings))}, it would make {spec.settings_hash(0)})")
        return spec


def _model(data: dict) -> ModelSpec:
    audio = data["input"] == "audio"
    if audio:
        from .audio import AudioFrontend

        preprocess: Any = AudioFrontend(**data["preprocess"])
    else:
        preprocess = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["preprocess"].items()})
    return ModelSpec(
        name=data["name"], input=data["input"], weights=WeightsRef(**data["weights"]),
        sampling=SamplingSpec(**data["sampling"]), preprocess=preprocess, latent=data["latent"],
        options=tuple((k, v) for k, v in data["options"]), extras=tuple(data["extras"]),
        from_checkpoint=data["from_checkpoint"], normalize=data.get("normalize", "none"))


def _plain(value: Any) -> Any:
    """``asdict``'s output as JSON types (tuples as lists, paths as text)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def plan_model(card: ModelCard, weights: str | os.PathLike | None, sampling: SamplingSpec,
               options: Mapping[str, Any] = (), extras: tuple[str, ...] = (), from_checkpoint: bool = False,
               progress: Any = None, pixels: Mapping[str, Any] = {}, normalize: str = "none") -> ModelSpec:
    """The spec of ``card`` with ``weights`` (None: the default entry; an entry name; a checkpoint path;
    "random"): the file is found (downloaded if it must be) and hashed, the model is not built. ``pixels``:
    preprocessing fields that replace the weights entry's (a preset's; ValueError if they do not fit)."""
    from .weights import resolve, sha256_file, weights_trust

    entry, path = resolve(card, weights, progress)
    ref = WeightsRef(
        name=entry.name if entry else ("random" if path is None else "file"),
        path=None if path is None else os.fspath(path),
        sha256="random" if path is None else sha256_file(path),
        url=entry.url if entry else None,
        trust=weights_trust(entry, path),
    )
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be {' or '.join(NORMALIZATIONS)}, not {normalize!r}")
    preprocess = card.preprocess_for(entry)
    if pixels:
        preprocess = replace(preprocess, **pixels)
    return ModelSpec(name=card.name, input=card.input, weights=ref, sampling=sampling,
                     preprocess=preprocess, latent=card.latent,
                     options=tuple(sorted(dict(options).items())), extras=tuple(extras),
                     from_checkpoint=from_checkpoint, normalize=normalize)
