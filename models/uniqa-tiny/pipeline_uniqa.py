"""`pipeline("image-quality-assessment", model=...)`: one score per image, higher is better."""

from __future__ import annotations

from typing import Any

from transformers import Pipeline


class ImageQualityAssessmentPipeline(Pipeline):
    """Scores images with a UniQA model.

    Call with one image or a list (paths, PIL images, numpy arrays) and optional `task`, `adapter`,
    `prompt_set`, `crop_mode`, `crops`, `max_side`, `seed`, `mos_range` (see `UniQAModel.score`).
    Returns `{"score": float, "task": str}` per image (a list for a list of images).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False  # else transformers >= 5 asks to run the model folder's code for one

    _score_options = ("task", "adapter", "prompt_set", "crop_mode", "crops", "max_side", "seed", "mos_range")

    def _sanitize_parameters(self, **kwargs) -> tuple[dict, dict, dict]:
        unknown = set(kwargs) - set(self._score_options)
        if unknown:
            raise TypeError(f"unexpected argument(s) {sorted(unknown)}; accepted: {list(self._score_options)}")
        return {}, kwargs, {}

    def preprocess(self, image: Any) -> dict[str, Any]:
        return {"image": self.model.image_processor.load_image(image)}

    def _forward(self, model_inputs: dict[str, Any], **score_options) -> dict[str, Any]:
        task, _, _ = self.model.resolve(
            score_options.get("task"), score_options.get("adapter"), score_options.get("prompt_set")
        )
        score = self.model.score([model_inputs["image"]], batch_size=64, **score_options)
        return {"score": float(score[0]), "task": task}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        return model_outputs
