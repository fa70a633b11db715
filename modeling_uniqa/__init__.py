"""UniQA for transformers: unified image quality and aesthetics assessment.

Importing this package registers UniQA with transformers' Auto classes and pipelines (`register()`), so model
folders load without `trust_remote_code`. The `uniqa` command is the exception: it loads its classes directly and
registers nothing, so that `uniqa --help` and argument errors need neither torch nor transformers (importing them
takes seconds). The classes below are imported on first use.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent
# The default model: inside an installed wheel (modeling_uniqa/bundled/, the repo's models/ folder) or in a checkout.
BUNDLED_MODEL_CANDIDATES = (_PACKAGE / "bundled" / "uniqa-tiny", _PACKAGE.parent / "models" / "uniqa-tiny")

# Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "ImageQualityAssessmentPipeline": ".pipeline_uniqa",
    "LevelPromptHead": ".adapter",
    "MultiCueAdapter": ".adapter",
    "UniQAConfig": ".configuration_uniqa",
    "UniQAImageProcessor": ".image_processing_uniqa",
    "UniQAModel": ".modeling_uniqa",
    "UniQAOutput": ".modeling_uniqa",
    "ScoreDetails": ".scoring_uniqa",
    "ScoreMap": ".scoring_uniqa",
    "load_image": ".image_processing_uniqa",
}
__all__ = ["BUNDLED_MODEL_CANDIDATES", "bundled_model_path", "register", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """The package's classes, imported on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


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
    import transformers

    folder = bundled_model_path()
    if folder is None:
        return _NoBundledModel(model=None)
    # transformers 4.x keys the default model by framework
    major = int(transformers.__version__.split(".")[0])
    return {"model": (str(folder), None) if major >= 5 else {"pt": (str(folder), None)}}


def register() -> None:
    """Register UniQA with transformers: `AutoConfig`, `AutoModel`, `AutoImageProcessor` and the pipeline task
    `image-quality-assessment` (default model: the bundled one). Idempotent; `import modeling_uniqa` calls it."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    from .configuration_uniqa import UniQAConfig
    from .image_processing_uniqa import UniQAImageProcessor
    from .modeling_uniqa import UniQAModel
    from .pipeline_uniqa import ImageQualityAssessmentPipeline

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


def _started_by_the_uniqa_command() -> bool:
    """Whether this process is the `uniqa` console script (`sys.argv[0]` is it: the script pip writes, `uniqa` or,
    on Windows, `uniqa.exe`), which imports the package before anything else and registers nothing."""
    return Path(sys.argv[0]).name in ("uniqa", "uniqa.exe") if sys.argv and sys.argv[0] else False


if not _started_by_the_uniqa_command():
    register()
