"""The docs check (tools/check_docs.py): every command of README.md and docs/ is marked, names
programs, flags, configs and config fields that exist, and the ``check`` blocks run as written in
a fresh copy of the checkout (one shared tiny run); planted errors are each reported."""

import importlib.util
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_check_docs():
  spec = importlib.util.spec_from_file_location(
      "check_docs", os.path.join(REPO, "tools", "check_docs.py"))
  module = sys.modules["check_docs"] = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


check_docs = _load_check_docs()

PLANTED = """\
# Planted

```bash check
python -m kdpose.export --workdri runs/tiny
```

```bash
python -m kdpose.predict --model runs/tiny/export a.png
```

```bash not-run:
python -m kdpose.main --config configs/default.py:huge --workdir runs/x
```

```bash not-run: planted errors
python -m kdpose.main --config configs/default.py:tiny --workdir runs/x \\
    --config.teacher.batch_sise=8
python -m kdpose.main --config configs/default.py --workdir runs/x --config.teacher.batch_size=8x
python -m kdpose.nosuch --workdir runs/x
python tools/nosuch.py --out x
make nosuch
```

Spans: `tools/results/nosuch.md`, `test_training.py::test_nosuch`, `--config.nosuch.key=1`,
`python -m kdpose.evaluate --wrkdir runs/x`. Links: [a](nosuch.md), [b](#nosuch).

    python -m kdpose.main --config configs/default.py --workdir runs/indented
"""

EXPECTED = (
    "kdpose.export: unknown flag --workdri",
    "```bash block without a mark",
    "`not-run` needs a reason",
    "configs/default.py:huge does not load: ValueError: Unknown config variant 'huge'",
    "--config.teacher.batch_sise (configs/default.py:tiny): no field 'teacher.batch_sise'",
    "--config.teacher.batch_size (configs/default.py): teacher.batch_size=8x: expected int",
    "python -m kdpose.nosuch: no such module",
    "python tools/nosuch.py: no such file",
    "make nosuch: no such target in the Makefile",
    "tools/results/nosuch.md: no such file or directory",
    "`test_training.py::test_nosuch`: no test test_nosuch in tests/test_training.py",
    "`--config.nosuch.key=1`: in no config of configs/",
    "kdpose.evaluate: unknown flag --wrkdir",
    "nosuch.md: no such file or directory",
    "link #nosuch: no heading #nosuch",
    "a command in an indented code block",
)


def test_the_docs_pass_the_static_check():
  checker = check_docs.Checker(REPO)
  docs = checker.check_docs(check_docs.default_docs(REPO))
  assert not checker.problems, "\n".join(checker.problems)
  blocks = [b for d in docs for b in d.blocks if b.lang in check_docs.COMMAND_LANGS]
  assert {b.mark for b in blocks} == {"check", "not-run"}
  assert checker.counts["flags"] > 50 and checker.counts["config_keys"] > 10


def test_each_planted_error_is_reported_with_its_line(tmp_path):
  doc = tmp_path / "planted.md"
  doc.write_text(PLANTED)
  checker = check_docs.Checker(REPO)
  checker.check_docs([str(doc)])
  report = "\n".join(checker.problems)
  missing = [e for e in EXPECTED if e not in report]
  assert not missing, f"not reported: {missing}\nreport:\n{report}"
  assert len(checker.problems) == len(EXPECTED), report
  assert f"{os.path.relpath(doc)}:4: kdpose.export: unknown flag --workdri" in report


def test_shell_lines_join_continuations_and_split_nested_commands():
  lines = check_docs.shell_lines("# a comment\npython a.py \\\n    --x=1  # note\n\n$ make run\n")
  assert [(offset, " ".join(line.split())) for offset, line in lines] == [
      (1, "python a.py --x=1 # note"), (4, "make run")]
  segments = check_docs.segments(
      'gcloud ssh --command="cd k && A=1 python -m kdpose.main --config c" && make test')
  assert ["A=1", "python", "-m", "kdpose.main", "--config", "c"] in segments
  assert ["make", "test"] in segments


def test_the_check_blocks_run_in_a_fresh_copy():
  result = subprocess.run([sys.executable, "tools/check_docs.py", "--run", "--no_static"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
  assert "ok: 0 problem(s)" in result.stdout


def test_a_failing_check_block_fails_the_run_and_shows_its_output(tmp_path):
  doc = tmp_path / "planted.md"
  doc.write_text(textwrap.dedent("""\
      ```bash check
      echo before
      python -c "import sys; sys.exit('planted failure')"
      echo after
      ```
      """))
  result = subprocess.run([sys.executable, "tools/check_docs.py", "--run", "--no_static",
                           str(doc)], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stdout
  assert "the block failed (exit 1)" in result.stdout
  assert "planted failure" in result.stdout and "after" not in result.stdout.split("failed")[1]


def test_computed_flag_names_are_listed_by_importing_the_program(tmp_path):
  program = tmp_path / "program.py"
  program.write_text(textwrap.dedent("""\
      from absl import flags
      OPTIONS = {"epochs": 3, "grid": 1}

      def _define_flags():
        for name, value in OPTIONS.items():
          flags.DEFINE_integer(name, value, "An option.")
        flags.DEFINE_string("out", "", "Output.")
      """))
  flags, dynamic = check_docs.source_flags(str(program))
  assert dynamic and flags.names == {"out"} and flags.likely == {"epochs", "grid"}
  assert {"epochs", "grid", "out"} <= check_docs.imported_flags(str(program), REPO)
