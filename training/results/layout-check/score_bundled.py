"""Scores of the bundled model on examples/ and 40 LIVEC photos: zero-shot (ensemble20, level5) and adapter livec.

Run from /tmp against a checkout: `PYTHONPATH=CHECKOUT python score_bundled.py CHECKOUT > scores.json`. Run at 8ae293a
(before the layout change) and after it: every score equal (max |difference| 0.0), see scores_*.json.
"""

import glob
import json
import sys
from pathlib import Path

from modeling_uniqa import UniQAModel

repo = Path(sys.argv[1])
model = UniQAModel.from_pretrained(repo / "models" / "uniqa-tiny").eval()
livec_root = repo.parent / "shared/data/livec_jpg/ChallengeDB_release"
livec = sorted(glob.glob(str(livec_root / "**/*.[jJ][pP][gG]"), recursive=True))
images = sorted(glob.glob(str(repo / "examples" / "*.png"))) + livec[:40]
out = {}
for request in ({}, {"prompt_set": "level5"}, {"adapter": "livec"}):
    out[json.dumps(request)] = model.score(images, **request).tolist()
print(json.dumps({"images": [Path(i).name for i in images], "scores": out}))
