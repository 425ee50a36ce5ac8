#!/usr/bin/env bash
# The serving install, from scratch: a clean venv gets `pip install .` (kdpose's core
# dependencies, no `train` extra), checks that TensorFlow, TFDS and clu did not come along, and
# predicts the viewpoint of a photo with `python -m kdpose.predict`: with EXPORT_DIR (written by
# `python -m kdpose.export`), or with a tiny export of random weights that it writes itself.
# Downloads jax, flax, orbax and their dependencies from PyPI; prints the wall time and the size.
#
#   tools/check_serving_install.sh [EXPORT_DIR]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
model_dir=${1:+$(cd "$1" && pwd)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"  # away from the checkout: python must import the installed kdpose.

"$PYTHON" -m venv venv
venv/bin/python -m pip install --quiet --upgrade pip
venv/bin/python -m pip install --quiet "$repo"

venv/bin/python - "${model_dir:-$work/export}" << 'EOF'
import importlib.util
import os
import sys

import numpy as np
from PIL import Image

present = [name for name in ("tensorflow", "tensorflow_datasets", "clu")
           if importlib.util.find_spec(name) is not None]
if present:
  sys.exit(f"error: the serving install brought {present}.")
model_dir = sys.argv[1]
if not os.path.exists(model_dir):
  import jax
  import jax.numpy as jnp

  from kdpose import export, models

  model_config = models.student_config("tiny").to_dict()
  model = models.build_student(model_config, bin_size=15.0)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  export.write_export(model_dir, model_config, variables, image_size=32, bin_size=15.0,
                      source={"workdir": None, "step": 0})
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save("photo.jpg")
EOF

venv/bin/python -m kdpose.predict --model "${model_dir:-$work/export}" photo.jpg
echo "serving install: $(du -sh venv | cut -f1) in the venv, ${SECONDS} s wall time."
