"""The training entry point without the training stack: it says which extra to install."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_training_without_the_train_extra_says_what_to_install(tmp_path, without_training_stack):
  code = without_training_stack + (
      "import runpy\n"
      "sys.argv = ['kdpose.main', '--config', 'configs/default.py:tiny', '--workdir', "
      f"{str(tmp_path / 'run')!r}]\n"
      "runpy.run_module('kdpose.main', run_name='__main__')\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
  assert result.returncode == 1
  assert "kdpose.main: training needs kdpose's `train` extra" in result.stderr
  assert "pip install -e '.[train]'" in result.stderr
  assert not (tmp_path / "run").exists()
