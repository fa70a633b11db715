"""Counting decoded pixels alive at once, for the tests of the decoded-pixel budget (docs/reliability.md, "Memory")."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import pytest
from PIL import Image


class DecodedPixels:
    """Wraps a decoder (`owner.name`, returning PIL images) to count the pixels of the images it made that are still
    alive (`alive`, and the most at once: `peak`), and a `score_chunk` (`scorer.score_chunk`) to record the pixels of
    each chunk handed to the model (`chunks`). Only images decoded from files or bytes count: what the budget holds
    (the copies `model.score` makes of an image it is given while cropping it are not part of the budget)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, decoder: tuple[Any, str], scorer: Any):
        self.alive = self.peak = 0
        self.chunks: list[list[int]] = []
        self.lock = threading.Lock()
        owner, name = decoder
        decode, score_chunk = getattr(owner, name), scorer.score_chunk

        def tracked_decode(*args, **kwargs):
            image = decode(*args, **kwargs)
            if not any(isinstance(arg, Image.Image) for arg in args):
                pixels = image.width * image.height
                with self.lock:
                    self.alive += pixels
                    self.peak = max(self.peak, self.alive)
                weakref.finalize(image, self.release, pixels)
            return image

        def tracked_score_chunk(model, images, *args, **kwargs):
            self.chunks.append([image.width * image.height for image in images.values()])
            return score_chunk(model, images, *args, **kwargs)

        monkeypatch.setattr(owner, name, tracked_decode)
        monkeypatch.setattr(scorer, "score_chunk", tracked_score_chunk)

    def release(self, pixels: int) -> None:
        with self.lock:
            self.alive -= pixels
