"""Does a model rank JPEG versions of its *training* photos below the originals? (diagnostic, not part of the build)

    python training/results/uniqa-tiny-variants/jpeg_on_training_photos.py NAME=MODEL_DIR:WORK_DIR ... > FILE.json

Per model: for every 6th synthetic source photo of the build's corpus (`WORK_DIR/corpus/table.jsonl`), the default
score of each JPEG level it has minus the undistorted photo's score; per level the mean difference and the share of
photos whose JPEG version scores *below* the original (1.0 = always ranked right).
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from modeling_uniqa import UniQAModel


def check(model_dir: str, work: Path) -> dict:
    model = UniQAModel.from_pretrained(model_dir).eval()
    by_source: dict[str, dict] = defaultdict(dict)
    for line in (work / "corpus" / "table.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["image_path"].startswith("synthetic/"):
            by_source[row["source"]][(row["distortion"], row["level"])] = row["image_path"]
    differences: dict[int, list[float]] = defaultdict(list)
    sources = sorted(by_source)[::6]
    for source in sources:
        items = [(0, by_source[source][("none", 0)])]
        items += sorted((level, path) for (kind, level), path in by_source[source].items() if kind == "jpeg")
        scores = model.score([work / "corpus" / "images" / path for _, path in items]).tolist()
        for (level, _), score in zip(items[1:], scores[1:], strict=True):
            differences[level].append(score - scores[0])
    return {
        "sources": len(sources),
        "per_level": {
            level: {
                "mean_difference": float(np.mean(v)),
                "below_original": float(np.mean(np.array(v) < 0)),
                "n": len(v),
            }
            for level, v in sorted(differences.items())
        },
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    results = {}
    for arg in sys.argv[1:]:
        name, folders = arg.split("=", 1)
        model_dir, work = folders.split(":", 1)
        results[name] = check(model_dir, Path(work))
    print(json.dumps(results, indent=1))
