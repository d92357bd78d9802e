"""Feature models. Importing this package registers every model card (cheap: no nets, no weights)."""

from vidvec.models.base import FeatureModel, HeadSwapModel
from vidvec.models import (clip, efficientnet, i3d, ig65m, s3d, torchvision_image,  # noqa: F401 (register cards)
                           torchvision_video, vggish)
from vidvec.models.pyslowfast import zoo as _pyslowfast_zoo  # noqa: F401  (register PySlowFast's MODEL_ZOO)

__all__ = ["FeatureModel", "HeadSwapModel"]
