"""Caption a table of images for the pre-training corpus (appends JSONL; resumable after a kill).

    python -m training.caption --table images.jsonl --output corpus/captions.jsonl            # template captioner
    python -m training.caption --table images.csv --image-root /data/koniq --output captions.jsonl \
        --mllm llava-hf/llava-onevision-qwen2-0.5b-ov-hf --batch-size 8                   # any image-text-to-text model

The table (CSV or JSONL) has `image_path` and any of `task` (quality|aesthetics), `mos_normalized` (0-1, higher is
better), `distortion` + `level` (synthetic, 1-5), `description`, `attributes` (JSONL: {name: 0-1}).
With `--mos-range LOW HIGH` a `mos` column is normalised instead. Templates: `--templates captions.yaml`
(overrides parts of `modeling_uniqa.captioning.DEFAULT_CAPTION_CONFIG`).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml


def read_table(path: Path, mos_range: tuple[float, float] | None, image_column: str = "image_path") -> list[dict]:
    """Rows of a CSV/JSONL table; `image_column` -> `image_path`; `mos` -> `mos_normalized` with `mos_range`."""
    if not path.is_file():
        raise FileNotFoundError(f"caption table {path} does not exist")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    for number, row in enumerate(rows, 1):
        if image_column not in row:
            raise ValueError(f"{path}: row {number} has no {image_column!r} column (has {sorted(row)})")
        row["image_path"] = row[image_column]
    if mos_range is not None:
        from .finetuning import normalize_mos

        for number, row in enumerate(rows, 1):
            if "mos" not in row:
                raise ValueError(f"{path}: row {number} has no 'mos' column (needed with --mos-range)")
            row["mos_normalized"] = float(normalize_mos([float(row["mos"])], mos_range)[0])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uniqa caption", description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path, help="corpus JSONL, appended to (resumable)")
    parser.add_argument("--image-root", default=".", help="folder the table's image paths are relative to")
    parser.add_argument("--mllm", help="an image-text-to-text model name or folder (default: template captioner)")
    parser.add_argument("--templates", type=Path, help="YAML overriding the caption templates / MLLM prompts")
    parser.add_argument("--mos-range", type=float, nargs=2, metavar=("LOW", "HIGH"))
    parser.add_argument("--image-column", default="image_path", help="the table's image path column")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=60)
    args = parser.parse_args(argv)

    from .captioning import CaptionRequest, MLLMCaptioner, TemplateCaptioner, caption_to_jsonl

    templates = yaml.safe_load(args.templates.read_text()) if args.templates else None
    requests = [CaptionRequest.from_row(row) for row in read_table(args.table, args.mos_range, args.image_column)]
    if args.mllm:
        prompts = (templates or {}).get("mllm_prompts")
        captioner = MLLMCaptioner(
            args.mllm, image_root=args.image_root, prompts=prompts, max_new_tokens=args.max_new_tokens
        )
    else:
        captioner = TemplateCaptioner(templates)
    stats = caption_to_jsonl(requests, captioner, args.output, batch_size=args.batch_size)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
