"""The scoring engine behind `UniQAModel.score` (images in, one score per image out) and `UniQAModel.score_map`
(one image in, a map of window scores out).

Images are decoded and cropped in worker threads while the vision tower runs; crops of consecutive images share
batches; uint8 crops travel to the tower's device and are normalised there; embeddings are scored in large chunks
by the model's level-prompt head. The vision tower can run in another precision or on another device through a
converted copy, made once per model and rebuilt when the model's weights change (docs/method.md, "Test-time crops";
docs/performance.md).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import platform
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from .image_processing_uniqa import (
    ImageInput,
    default_num_workers,
    map_in_order,
    map_in_threads,
    window_positions,
)

if TYPE_CHECKING:
    from .modeling_uniqa import PromptSetLike, UniQAModel

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`"fp32"`/`"bf16"`/`"fp16"` (or their long names, or a `torch.dtype`) -> `torch.dtype`; `None` stays `None`."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, {INT8!r} or a torch.dtype, not {dtype!r}")
    return DTYPES[dtype]


def full_device(device: str | torch.device) -> torch.device:
    """`"cuda"` -> `cuda:<current index>`, so that it compares equal to a parameter's device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _converted(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A frozen copy of a parameter or buffer on `device`; floating-point tensors in `dtype`."""
    converted = tensor.detach().to(device, dtype if tensor.is_floating_point() else tensor.dtype)
    return nn.Parameter(converted, requires_grad=False) if isinstance(tensor, nn.Parameter) else converted


@dataclass
class ScoreDetails:
    """Per-image results of `UniQAModel.score(..., return_details=True)`.

    Args:
        scores: `(N,)` image scores (crop means), higher is better.
        level_probs: `(N, G, K)` level-prompt probabilities per group, averaged over crops.
        groups: the `G` prompt-group names. levels: the `K` level values, worst first.
        task: the task scored. adapter: the multi-cue adapter used, or `None` (zero-shot).
    """

    scores: torch.Tensor
    level_probs: torch.Tensor
    groups: list[str]
    levels: list[float]
    task: str
    adapter: str | None


@dataclass
class ScoreMap:
    """Where an image loses quality: the scores of overlapping windows of one image, from `UniQAModel.score_map`.

    Geometry: the image (upright RGB, `image_size` pixels) is first resized to `analysed_size` (by `max_side` and the
    upscaling of images smaller than a crop, as in `score`, then by the `max_windows` cap). Square windows of side
    `window` analysed pixels are spread evenly over it: row `r` starts at `tops[r]` and column `c` at `lefts[c]`,
    the first at 0, the last ending at the edge, neighbours at most `stride` apart (so they overlap where
    `stride < window`). `scores[r, c]` scores that window, resized to the vision tower's input size when `window`
    differs from it. `cell_box(r, c)` gives the window in the original image's pixels.

    Args:
        scores: `(rows, cols)` float32 window scores, higher is better; in `score_range()` unless `mos_range` is set.
        score: the image's overall score, as `UniQAModel.score` gives it with the same options (its own crops).
        window: window side, in analysed pixels. stride: the largest step between neighbouring windows.
        lefts: the `cols` window offsets along x; tops: the `rows` offsets along y (analysed pixels).
        image_size: `(width, height)` of the image; analysed_size: `(width, height)` of the image the windows cut.
        task: the task scored. adapter: the multi-cue adapter used, or `None` (zero-shot).
    """

    scores: torch.Tensor
    score: float
    window: int
    stride: int
    lefts: list[int]
    tops: list[int]
    image_size: tuple[int, int]
    analysed_size: tuple[int, int]
    task: str
    adapter: str | None

    def cell_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """`(left, top, right, bottom)` of window `(row, col)` in the original image's pixels."""
        scale_x = self.image_size[0] / self.analysed_size[0]
        scale_y = self.image_size[1] / self.analysed_size[1]
        left, top = self.lefts[col], self.tops[row]
        return (left * scale_x, top * scale_y, (left + self.window) * scale_x, (top + self.window) * scale_y)


def window_count(extent: int, window: int, stride: int) -> int:
    """Windows of side `window` needed along an axis of `extent >= window` pixels with steps of at most `stride`."""
    return math.ceil((extent - window) / stride) + 1


def fit_windows(image: Image.Image, window: int, stride: int, max_windows: int) -> Image.Image:
    """`image`, downscaled (aspect ratio kept, short side at least `window`) just enough that at most `max_windows`
    windows cover it; unchanged if they already do. A `ValueError` if no such size exists (a very long image)."""
    width, height = image.size

    def size_at(long_side: int) -> tuple[int, int]:
        scale = long_side / max(width, height)
        return max(window, round(width * scale)), max(window, round(height * scale))

    def count(long_side: int) -> int:
        scaled_width, scaled_height = size_at(long_side)
        return window_count(scaled_width, window, stride) * window_count(scaled_height, window, stride)

    low, high = math.ceil(window * max(width, height) / min(width, height)), max(width, height)
    if count(high) <= max_windows:
        return image
    if count(low) > max_windows:
        raise ValueError(
            f"a {width}x{height} image needs more than max_windows={max_windows} windows of {window} px at stride "
            f"{stride} even at its smallest size; raise max_windows or stride"
        )
    while low < high:  # the largest long side whose windows fit
        middle = (low + high + 1) // 2
        low, high = (middle, high) if count(middle) <= max_windows else (low, middle - 1)
    return image.resize(size_at(low), Image.BICUBIC)


def on_mos_scale(scores: torch.Tensor, mos_range: tuple[float, float] | None, details: ScoreDetails) -> torch.Tensor:
    """Map scores linearly onto `mos_range = (low, high)`: adapter scores from [0, 1], zero-shot scores from the
    level range of `details`; `None` leaves them as they are."""
    if mos_range is None:
        return scores
    low, high = mos_range
    lo, hi = (0.0, 1.0) if details.adapter is not None else (min(details.levels), max(details.levels))
    return low + (scores - lo) / (hi - lo) * (high - low)


def image_name(image: ImageInput, fallback: str) -> str:
    """How errors name an input: its path, else `fallback`."""
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else fallback


def check_finite(scores: torch.Tensor, names: Sequence[str], where: str = "") -> None:
    """A `ValueError` naming the first item whose score is NaN or infinite (and `where`, else the value): such a
    value must not pass for a score."""
    bad = (~torch.isfinite(scores)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{names[i]}: the model gave a non-finite score{where or f' ({float(scores[i])})'}")


class ImageTower(nn.Module):
    """CLIP's vision transformer and visual projection: `(N, 3, S, S)` pixels -> `(N, D)` raw image embeddings,
    the same as `CLIPModel.get_image_features`."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)


# ---------------------------------------------------------------------------------------------------------------
# int8 on the CPU: the vision tower as a dynamically quantised onnxruntime graph (docs/performance.md, "int8").

INT8 = "int8"


def onnx_runtime():
    """`(onnx, onnxruntime, onnxruntime.quantization)`, imported when int8 is first asked for (the `[export]`
    extra); a one-line `ImportError` naming the install command when they are missing."""
    try:
        import onnx
        import onnxruntime
        from onnxruntime import quantization
    except ImportError as error:
        raise ImportError(
            f'dtype="int8" runs the vision tower with onnxruntime ({error.name} is not installed): '
            'pip install "uniqa[export]"'
        ) from error
    return onnx, onnxruntime, quantization


def cpu_int8_support() -> bool:
    """Whether this CPU has int8 dot-product instructions (x86 VNNI or AMX, as torch's CPU probes report them; Arm
    CPUs have the dot product). Without them onnxruntime's x86 int8 kernels can saturate 16-bit sums (inaccurate
    scores) and gain little."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return True
    probes = ("_is_vnni_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def export_onnx_graph(
    module: nn.Module, example: torch.Tensor, path: str | os.PathLike, output_names: Sequence[str], opset: int = 17
) -> None:
    """Trace `module` on `example` crops into an ONNX graph at `path`: input `pixel_values`, outputs
    `output_names`, with a dynamic first (crop) axis everywhere."""
    names = ["pixel_values", *output_names]
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: sizes are fixed
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: the new one needs onnxscript
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=names[:1],
            output_names=names[1:],
            dynamic_axes={name: {0: "crops"} for name in names},
            opset_version=opset,
            dynamo=False,
        )


def quantize_int8(source: str | os.PathLike, target: str | os.PathLike, scope: str = "") -> None:
    """Dynamic int8 quantisation of the ONNX graph `source` into `target` (onnxruntime): the matrix products with
    a constant weight (the linear layers) whose node names start with `scope` get int8 weights, one scale per
    output channel, and quantise their input to uint8 per batch at run time. All else stays fp32: the patch
    embedding (a convolution; quantising it too was no faster in a probe), the attention products (no constant
    operand) and nodes outside `scope` (e.g. an adapter and the prompt head)."""
    onnx, _, quantization = onnx_runtime()
    nodes = None
    if scope:
        graph = onnx.load(str(source)).graph
        nodes = [node.name for node in graph.node if node.op_type == "MatMul" and node.name.startswith(scope)]
    # quantize_dynamic logs a hint to pre-process the graph through the root logger, configuring that logger when it
    # has no handler. Pre-processing made the tower no faster here: the hint is dropped, the root logger left alone.
    root, placeholder = logging.getLogger(), logging.NullHandler()

    def not_the_hint(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root.addHandler(placeholder)
    root.addFilter(not_the_hint)
    try:
        quantization.quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            per_channel=True,
            weight_type=quantization.QuantType.QInt8,
        )
    finally:
        root.removeFilter(not_the_hint)
        root.removeHandler(placeholder)


class Int8ImageTower(nn.Module):
    """An `ImageTower` run by onnxruntime with int8 linear layers (`quantize_int8`): float32 CPU crops
    `(N, 3, S, S)` -> float32 `(N, D)` embeddings. It has no torch parameters."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        (embeds,) = self.session.run(None, {"pixel_values": pixel_values.float().contiguous().numpy()})
        return torch.from_numpy(embeds)


def quantized_tower(tower: nn.Module, crop_size: int) -> Int8ImageTower:
    """`tower` (fp32, on the CPU) exported to ONNX, quantised to int8 and loaded into onnxruntime with torch's CPU
    thread count. A `RuntimeError` on a CPU without int8 dot-product instructions (`cpu_int8_support`)."""
    _, onnxruntime, _ = onnx_runtime()
    if not cpu_int8_support():
        raise RuntimeError(
            'dtype="int8" needs a CPU with int8 dot-product instructions (x86 AVX-512 VNNI, AVX-VNNI or AMX; Arm '
            "dot product), and this one has none: use bf16 (CPUs with AVX-512 BF16 or AMX) or fp32"
        )
    with tempfile.TemporaryDirectory(prefix="uniqa-int8-") as folder:
        source, target = os.path.join(folder, "tower.onnx"), os.path.join(folder, "tower-int8.onnx")
        export_onnx_graph(tower, torch.zeros(2, 3, crop_size, crop_size), source, ["image_embeds"])
        quantize_int8(source, target)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        # idle threads sleep instead of spinning: the CPU goes to the threads decoding the next images
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(target, options, providers=["CPUExecutionProvider"])
    return Int8ImageTower(session)


def tower_input(tower: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype a tower of `ScoringEngine.image_tower` takes its crops in."""
    if isinstance(tower, Int8ImageTower):
        return torch.device("cpu"), torch.float32
    parameter = next(tower.parameters())
    return parameter.device, parameter.dtype


class ScoringEngine:
    """Scores images with one [`UniQAModel`]; owns the converted copies of its vision tower.

    A copy is keyed by `(dtype, device, compile)` and stamped with the weights' identity and in-place version
    counters (`Tensor._version`, the counter autograd uses to detect in-place edits): weights loaded, trained or
    merged in place (e.g. LoRA's `merge_and_unload`) make the next call rebuild it.
    """

    def __init__(self, model: UniQAModel):
        self.model = model
        self._towers: dict[tuple, tuple[tuple, nn.Module]] = {}

    def image_tower(
        self, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None, compile: bool = False
    ) -> nn.Module:
        """The vision tower and its projection as one module: `(N, 3, S, S)` pixels -> `(N, D)` raw embeddings.

        In the model's own dtype and device it shares the model's weights; another `dtype` or `device` gives a
        converted copy. `compile=True` wraps it in `torch.compile` (compiled once per shape). `dtype="int8"` (CPU
        only) gives an [`Int8ImageTower`]: the fp32 tower exported to ONNX and quantised (`quantize_int8`)."""
        model = self.model
        int8 = dtype == INT8
        dtype = torch.float32 if int8 else resolve_dtype(dtype) or model.dtype
        device = full_device(device) if device is not None else model.device
        if int8 and (device.type != "cpu" or compile):
            where = f"on {device}" if device.type != "cpu" else "with compile=True"
            raise ValueError(
                f'dtype="int8" runs the vision tower on the CPU with onnxruntime, not {where}: on a GPU use bf16 or '
                "fp16; int8 is not compiled"
            )
        parts = ImageTower(model.clip.vision_model, model.clip.visual_projection)
        same = dtype == model.dtype and device == model.device
        if same and not compile and not int8:
            return parts
        stamp = tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in parts.state_dict().values())
        key = (INT8 if int8 else dtype, str(device), compile)
        if key in self._towers and self._towers[key][0] == stamp:
            return self._towers[key][1]
        tower = parts
        if not same:  # convert tensor by tensor into the copy (no transient full-precision duplicate)
            memo = {id(t): _converted(t, device, dtype) for t in (*parts.parameters(), *parts.buffers())}
            tower = copy.deepcopy(parts, memo).eval()
        if int8:
            tower = quantized_tower(tower, model.image_processor.crop_size)
        elif compile:
            tower = torch.compile(tower)
        self._towers[key] = (stamp, tower)
        return tower

    @torch.inference_mode()
    def score(
        self,
        images: ImageInput | Sequence[ImageInput],
        task: str | None = None,
        adapter: str | None = None,
        prompt_set: PromptSetLike | None = None,
        batch_size: int = 32,
        crop_mode: str | None = None,
        crops: int | None = None,
        max_side: int | None = None,
        seed: int = 0,
        mos_range: tuple[float, float] | None = None,
        return_details: bool = False,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
        compile: bool = False,
        decode: str | Executor = "threads",
    ) -> torch.Tensor | ScoreDetails:
        """See [`UniQAModel.score`]."""
        if isinstance(images, (str, os.PathLike, bytes)) or not isinstance(images, Sequence):
            images = [images]
        crop = functools.partial(
            self.model.image_processor.crop_image,
            crop_mode=crop_mode,
            crops=crops,
            max_side=max_side,
            seed=seed,
            normalize=False,
        )
        workers = default_num_workers() if num_workers is None else num_workers
        if isinstance(decode, Executor):  # e.g. worker processes (`modeling_uniqa.tools.decoding`), owned by the caller
            crop_stream = map_in_order(decode, crop, images, lookahead=2 * workers + 2)
        elif decode == "threads":
            crop_stream = map_in_threads(crop, images, workers)
        else:
            raise ValueError(f'decode must be "threads" or a concurrent.futures.Executor, not {decode!r}')
        details = self._score_crops(
            crop_stream, len(images), task, adapter, prompt_set, batch_size, dtype, device, compile
        )
        check_finite(details.scores, [image_name(image, f"images[{i}]") for i, image in enumerate(images)])
        details.scores = on_mos_scale(details.scores, mos_range, details)
        return details if return_details else details.scores

    @torch.inference_mode()
    def score_map(
        self,
        image: ImageInput,
        window: int | None = None,
        stride: int | None = None,
        task: str | None = None,
        adapter: str | None = None,
        prompt_set: PromptSetLike | None = None,
        max_side: int | None = None,
        max_windows: int = 256,
        mos_range: tuple[float, float] | None = None,
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        compile: bool = False,
    ) -> ScoreMap:
        """See [`UniQAModel.score_map`]."""
        processor = self.model.image_processor
        size = processor.crop_size
        window = size if window is None else int(window)
        stride = max(1, window // 2) if stride is None else int(stride)
        if window < 1 or stride < 1 or max_windows < 1:
            raise ValueError(f"window, stride and max_windows must be >= 1, not {window}, {stride}, {max_windows}")
        loaded = processor.load_image(image)
        analysed = processor.resize_for_crops(loaded, max_side if max_side is not None else processor.max_side)
        window = min(window, *analysed.size)
        analysed = fit_windows(analysed, window, stride, max_windows)
        width, height = analysed.size
        lefts = window_positions(width, window, window_count(width, window, stride))
        tops = window_positions(height, window, window_count(height, window, stride))
        pixels = np.asarray(analysed)

        def crop_stream() -> Iterable[torch.Tensor]:
            """One item per window (row by row), then the crops of the overall score, as uint8 `(n, 3, S, S)`."""
            for top in tops:
                for left in lefts:
                    crop = pixels[top : top + window, left : left + window]
                    if window != size:
                        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))
                    yield torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
            yield processor.crop_image(loaded, max_side=max_side, normalize=False)

        count = len(tops) * len(lefts) + 1
        details = self._score_crops(crop_stream(), count, task, adapter, prompt_set, batch_size, dtype, device, compile)
        check_finite(details.scores, [image_name(image, "the image")] * count, where=" for some window")
        scores = on_mos_scale(details.scores, mos_range, details)
        return ScoreMap(
            scores=scores[:-1].view(len(tops), len(lefts)),
            score=float(scores[-1]),
            window=window,
            stride=stride,
            lefts=lefts,
            tops=tops,
            image_size=loaded.size,
            analysed_size=analysed.size,
            task=details.task,
            adapter=details.adapter,
        )

    def _score_crops(
        self,
        crop_stream: Iterable[torch.Tensor],
        count: int,
        task: str | None,
        adapter: str | None,
        prompt_set: PromptSetLike | None,
        batch_size: int,
        dtype: str | torch.dtype | None,
        device: str | torch.device | None,
        compile: bool,
    ) -> ScoreDetails:
        """Score `count` items, each given by `crop_stream` as uint8 crops `(n_i, 3, S, S)`: an item's score and
        level probabilities are the means over its crops (`ScoreDetails.scores` `(count,)` in the level range)."""
        model = self.model
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        task, adapter, prompt_set = model.resolve(task, adapter or model.active_multicue_adapter, prompt_set)
        groups = model.prompt_groups(prompt_set)
        adapter_module = model.adapters[adapter] if adapter is not None else None
        levels = model.levels_for(adapter, prompt_set).detach()
        text_embeds = model.prompt_embeds(prompt_set)
        tower = self.image_tower(dtype, device, compile)
        tower_device, tower_dtype = tower_input(tower)
        pin = tower_device.type == "cuda"
        sums = torch.zeros(count, dtype=torch.float64)
        prob_sums = torch.zeros(count, len(groups), len(levels), dtype=torch.float64)
        counts = torch.zeros(count, dtype=torch.float64)

        # The prompt head's small ops cost more in thread wake-ups than in arithmetic (10x on a busy 2-core CPU),
        # so embeddings are gathered and scored in chunks of `head_chunk` crops.
        head_chunk = max(batch_size, 4096)
        gathered: list[tuple[torch.Tensor, torch.Tensor]] = []

        def score_gathered() -> None:
            embeds = torch.cat([e for e, _ in gathered]).to(model.device, model.dtype)
            owner = torch.cat([o for _, o in gathered])
            gathered.clear()
            scores, probs = model.level_head(
                embeds, text_embeds, levels, model.clip.logit_scale, adapter=adapter_module
            )
            sums.index_add_(0, owner, scores.double().cpu())
            prob_sums.index_add_(0, owner, probs.double().cpu())
            counts.index_add_(0, owner, torch.ones(len(owner), dtype=torch.float64))

        def run(pixels: torch.Tensor, owner: torch.Tensor) -> None:
            # uint8 crops travel to the tower's device and are normalised there (4x fewer bytes to copy)
            pixels = pixels.pin_memory() if pin else pixels
            pixels = processor.normalize(pixels.to(tower_device, non_blocking=pin))
            gathered.append((tower(pixels.to(tower_dtype)), owner))
            if sum(len(o) for _, o in gathered) >= head_chunk:
                score_gathered()

        processor = model.image_processor
        buffered: list[torch.Tensor] = []
        owners: list[torch.Tensor] = []
        pending = 0
        for i, pixels in enumerate(crop_stream):
            buffered.append(pixels)
            owners.append(torch.full((len(pixels),), i))
            pending += len(pixels)
            if pending < batch_size:
                continue
            pixels, owner = torch.cat(buffered), torch.cat(owners)
            full = pending - pending % batch_size
            for start in range(0, full, batch_size):
                run(pixels[start : start + batch_size], owner[start : start + batch_size])
            buffered, owners, pending = [pixels[full:]], [owner[full:]], pending - full
        if pending:
            run(torch.cat(buffered), torch.cat(owners))
        if gathered:
            score_gathered()
        return ScoreDetails(
            scores=(sums / counts).float(),
            level_probs=(prob_sums / counts.view(-1, 1, 1)).float(),
            groups=list(groups),
            levels=levels.float().cpu().tolist(),
            task=task,
            adapter=adapter,
        )
