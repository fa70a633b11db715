"""UniQA for transformers: unified image quality and aesthetics assessment.

Importing this package registers UniQA with transformers' Auto classes and pipelines, so model folders load
without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .adapter import LevelPromptHead, MultiCueAdapter
from .configuration_uniqa import UniQAConfig
from .image_processing_uniqa import UniQAImageProcessor, load_image
from .modeling_uniqa import ScoreDetails, UniQAModel, UniQAOutput
from .pipeline_uniqa import ImageQualityAssessmentPipeline

AutoConfig.register("uniqa", UniQAConfig, exist_ok=True)
AutoModel.register(UniQAConfig, UniQAModel, exist_ok=True)
AutoImageProcessor.register(UniQAConfig, UniQAImageProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "image-quality-assessment", pipeline_class=ImageQualityAssessmentPipeline, pt_model=AutoModel, type="image"
)

__all__ = [
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
