"""Purify AVA-style user comments against generated descriptions and merge them into the corpus.

    python -m training.purify --comments comments.jsonl --captions corpus/aesthetic_captions.jsonl \
        --output corpus/aesthetics.jsonl --report purification_report.jsonl \
        [--config purify.yaml] [--encoder uniqa --model DIR]

`--comments`: JSONL `{"image_path", "comments": [...]}`; `--captions`: the captioner's JSONL (`prompt` = generated
descriptions; the first is the one comments are compared with). Output: corpus JSONL `{"image_path", "task":
"aesthetics", "prompt": descriptions + kept comments}`; the report lists every dropped comment and why.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uniqa purify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--comments", required=True, type=Path)
    parser.add_argument("--captions", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--report", type=Path, help="JSONL of dropped comments with reasons")
    parser.add_argument("--config", type=Path, help="YAML of PurificationConfig fields (threshold, top_k, ...)")
    parser.add_argument("--encoder", choices=["minilm", "uniqa"], default="minilm")
    parser.add_argument("--model", help="encoder model folder (required for --encoder uniqa)")
    args = parser.parse_args(argv)

    from .purification import PurificationConfig, default_encoder, purify_corpus

    config = PurificationConfig.from_dict(yaml.safe_load(args.config.read_text()) if args.config else {})
    captions: dict[str, list[str]] = {}
    for entry in read_jsonl(args.captions):
        prompts = [entry["prompt"]] if isinstance(entry["prompt"], str) else entry["prompt"]
        captions.setdefault(entry["image_path"], []).extend(prompts)
    rows = []
    for row in read_jsonl(args.comments):
        if row["image_path"] not in captions:
            raise ValueError(f"{args.comments}: {row['image_path']} has comments but no caption in {args.captions}")
        rows.append({**row, "captions": captions[row["image_path"]]})
    entries, report = purify_corpus(rows, default_encoder(args.encoder, args.model), config)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(json.dumps(e) + "\n" for e in entries))
    if args.report:
        args.report.write_text("".join(json.dumps(r) + "\n" for r in report.dropped))
    print(
        json.dumps(
            {"images": report.images, "comments": report.comments, "kept": report.kept, "dropped": report.reasons()}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
