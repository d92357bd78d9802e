"""Feature models. Importing this package registers every model card (cheap: no nets, no weights)."""

from vidvec.models.base import FeatureModel, HeadSwapModel
from vidvec.models import efficientnet, torchvision_image, torchvision_video  # noqa: F401  (register cards)
from vidvec.models.pyslowfast import zoo as _pyslowfast_zoo  # noqa: F401  (register PySlowFast's MODEL_ZOO)

__all__ = ["FeatureModel", "HeadSwapModel"]
