"""UniQA for transformers: unified image quality and aesthetics assessment.

Importing this package registers UniQA with transformers' Auto classes and pipelines, so model folders load
without `trust_remote_code`.
"""

from pathlib import Path

from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .adapter import LevelPromptHead, MultiCueAdapter
from .configuration_uniqa import UniQAConfig
from .image_processing_uniqa import UniQAImageProcessor, load_image
from .modeling_uniqa import UniQAModel, UniQAOutput
from .pipeline_uniqa import ImageQualityAssessmentPipeline
from .scoring_uniqa import ScoreDetails

AutoConfig.register("uniqa", UniQAConfig, exist_ok=True)
AutoModel.register(UniQAConfig, UniQAModel, exist_ok=True)
AutoImageProcessor.register(UniQAConfig, UniQAImageProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "image-quality-assessment", pipeline_class=ImageQualityAssessmentPipeline, pt_model=AutoModel, type="image"
)

_PACKAGE = Path(__file__).resolve().parent
# The default model: inside an installed wheel (modeling_uniqa/bundled/, the repo's models/ folder) or in a checkout.
BUNDLED_MODEL_CANDIDATES = (_PACKAGE / "bundled" / "uniqa-tiny", _PACKAGE.parent / "models" / "uniqa-tiny")


def bundled_model_path() -> Path | None:
    """The folder of the bundled default model `uniqa-tiny`, or `None` where it is absent."""
    return next((path for path in BUNDLED_MODEL_CANDIDATES if (path / "config.json").is_file()), None)


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
    "load_image",
]
