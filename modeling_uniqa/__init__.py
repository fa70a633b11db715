"""UniQA for transformers: unified image quality and aesthetics assessment.

Importing this package registers UniQA with transformers' Auto classes and pipelines, so model folders load
without `trust_remote_code`.
"""

from pathlib import Path

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .adapter import LevelPromptHead, MultiCueAdapter
from .configuration_uniqa import UniQAConfig
from .image_processing_uniqa import UniQAImageProcessor, load_image
from .modeling_uniqa import UniQAModel, UniQAOutput
from .pipeline_uniqa import ImageQualityAssessmentPipeline
from .scoring_uniqa import ScoreDetails, ScoreMap

_PACKAGE = Path(__file__).resolve().parent
# The default model: inside an installed wheel (modeling_uniqa/bundled/, the repo's models/ folder) or in a checkout.
BUNDLED_MODEL_CANDIDATES = (_PACKAGE / "bundled" / "uniqa-tiny", _PACKAGE.parent / "models" / "uniqa-tiny")


def bundled_model_path() -> Path | None:
    """The folder of the bundled default model `uniqa-tiny`, or `None` where it is absent."""
    return next((path for path in BUNDLED_MODEL_CANDIDATES if (path / "config.json").is_file()), None)


class _NoBundledModel(dict):
    """The task's default where the bundled model is absent: transformers' look-up of it raises a clear error."""

    def __getitem__(self, key: str):
        raise FileNotFoundError(
            'pipeline("image-quality-assessment") without a model uses the bundled model uniqa-tiny, which is not '
            f"installed here (looked in {', '.join(map(str, BUNDLED_MODEL_CANDIDATES))}): pass model=MODEL_DIR"
        )


def _pipeline_default() -> dict:
    """The model `pipeline("image-quality-assessment")` loads when none is given: the bundled model."""
    folder = bundled_model_path()
    if folder is None:
        return _NoBundledModel(model=None)
    # transformers 4.x keys the default model by framework
    major = int(transformers.__version__.split(".")[0])
    return {"model": (str(folder), None) if major >= 5 else {"pt": (str(folder), None)}}


AutoConfig.register("uniqa", UniQAConfig, exist_ok=True)
AutoModel.register(UniQAConfig, UniQAModel, exist_ok=True)
AutoImageProcessor.register(UniQAConfig, UniQAImageProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "image-quality-assessment",
    pipeline_class=ImageQualityAssessmentPipeline,
    pt_model=AutoModel,
    default=_pipeline_default(),
    type="image",
)

__all__ = [
    "bundled_model_path",
    "ImageQualityAssessmentPipeline",
    "LevelPromptHead",
    "MultiCueAdapter",
    "UniQAConfig",
    "UniQAImageProcessor",
    "UniQAModel",
    "UniQAOutput",
    "ScoreDetails",
    "ScoreMap",
    "load_image",
]
