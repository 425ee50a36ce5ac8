r"""Checks that the commands of README.md and docs/*.md work with this checkout.

  python tools/check_docs.py          # the static checks (seconds)
  python tools/check_docs.py --run    # and the runnable blocks, in a fresh copy of the checkout

How a command block is marked (its fence's info string, visible in the Markdown):
  ```bash check                 run by --run, in a fresh copy of the checkout
  ```python check               the same, as a Python program
  ```bash not-run: REASON       not run; REASON says why (a raw download, a GPU, hours)
Every bash, sh, shell, console or python block carries one of the two marks (an unmarked one is
a problem); other blocks (text, output, layouts) are not commands. ``--run`` runs the ``check``
blocks one after the other, README.md first, then docs/*.md by name, in one copy of the tracked
and untracked-but-not-ignored files (what a fresh clone plus your edits holds), each block with
``bash -e``: later blocks may use what earlier ones made (the tiny run of README.md).

The static checks read every command, marked either way, and every inline `code` span:
- ``python -m kdpose.X`` modules and ``python tools/X.py``, ``tools/X.sh`` files exist;
- each ``--flag`` is one that program defines (absl ``DEFINE_*`` or argparse ``add_argument``,
  read from its source; a program whose flag names are computed is imported to list them);
- each config file a config flag names (``--config configs/X.py[:variant]``) loads, and each
  ``--config.a.b=v`` names a field of that config and parses as its type; a ``config.a.b`` span
  outside a command names a field of some config in configs/;
- ``make T`` targets exist in the Makefile (and a ``CONFIG=`` given to make loads);
- repository paths in spans and relative links exist (``{a,b}`` expanded), ``test_x.py::name``
  names a test function of tests/, and ``file.md#anchor`` links name a heading.
"""

from __future__ import annotations

import argparse
import ast
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # docs_reading, beside this file
from docs_reading import (  # noqa: E402
  ABSL_FLAGS,
  COMMAND_LANGS,
  COMMAND_START_RE,
  SHELL_LANGS,
  Block,
  Configs,
  Doc,
  Flags,
  Invocation,
  imported_flags,
  invocations,
  parse_markdown,
  segments,
  shell_lines,
  source_flags,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_PATH_RE = re.compile(r"^(kdpose|configs|tools|tests|docs)/[\w./{},*+-]*$|"
                          r"^(Makefile|LICENSE|pyproject\.toml|README\.md)$")
TEST_REF_RE = re.compile(r"^(?:tests/)?(test_\w+\.py)?::(\w+)$")
CONFIG_KEY_RE = re.compile(r"^(?:--)?(config|dataset_config)\.([\w.]+)(?:=(.*))?$")

def field_problem(config, key: str, value: str | None) -> str | None:
  """Why ``key`` (dotted) with ``value`` does not fit ``config``, or None."""
  node, walked = config, []
  for part in key.split("."):
    if part.startswith("<") or not hasattr(node, "keys"):
      return None if part.startswith("<") else f"{'.'.join(walked)} has no fields"
    if part not in node:
      where = ".".join(walked) or "the config"
      return f"no field {key!r} ({where} has: {', '.join(sorted(node.keys()))})"
    node, walked = node[part], walked + [part]
  if value is None or re.search(r"[<$]|\.\.\.", value) or hasattr(node, "keys"):
    return None
  try:
    if isinstance(node, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(value)
    elif isinstance(node, (int, float)):
      type(node)(value)
  except ValueError:
    return f"{key}={value}: expected {type(node).__name__}"
  return None


# ----------------------------------------------------------------------------- the checks


class Checker:
  """Collects problems (``path:line: message``) of the docs against a checkout at ``root``."""

  def __init__(self, root: str = REPO):
    self.root, self.configs, self.problems = root, Configs(root), []
    self._flags: dict[str, Flags] = {}
    self._dynamic: dict[str, bool] = {}
    self.counts = dict(commands=0, flags=0, config_keys=0, paths=0)

  def problem(self, path: str, line: int, message: str) -> None:
    self.problems.append(f"{os.path.relpath(path)}:{line}: {message}")

  def flags_of(self, invocation: Invocation, name: str | None = None) -> Flags:
    """The program's flags. A program with computed flag names is imported to list them, once
    a flag is asked about that neither its source spells nor its dict literals hold."""
    if invocation.path not in self._flags:
      flags, dynamic = source_flags(invocation.path)
      if flags.absl:
        flags.names |= ABSL_FLAGS
      self._flags[invocation.path] = flags
      self._dynamic[invocation.path] = dynamic
    flags = self._flags[invocation.path]
    if (name is not None and name not in flags.names | flags.likely
        and self._dynamic.pop(invocation.path, 0)):
      flags.names |= imported_flags(invocation.path, self.root)
      flags.likely = set()  # the exact list from now on
    return flags

  def check_invocation(self, path: str, line: int, invocation: Invocation) -> None:
    flags, args = self.flags_of(invocation), list(invocation.args)
    given: dict[str, str] = {}
    overrides: list[tuple[str, str, str | None]] = []
    for index, arg in enumerate(args):
      if not arg.startswith("-") or arg in ("-", "--") or arg == "...":
        continue
      name, _, value = arg.lstrip("-").partition("=")
      if not value and index + 1 < len(args) and not args[index + 1].startswith("-"):
        value = args[index + 1]
      root_name = name.split(".")[0]
      self.counts["flags"] += 1
      if "." in name and root_name in flags.config_flags:
        overrides.append((root_name, name.split(".", 1)[1], value if "=" in arg else None))
      elif name in (self.flags_of(invocation, name).names | flags.likely) or (
          name.startswith("no") and name[2:] in flags.names):
        if name in flags.config_flags:
          given[name] = value
      else:
        self.problem(path, line, f"{invocation.program}: unknown flag --{name} (it defines: "
                     f"{', '.join(sorted(flags.names - ABSL_FLAGS))})")
    for name, default in flags.config_flags.items():
      spec = given.get(name, default)
      if name in given or any(o[0] == name for o in overrides):
        self.check_config(path, line, name, spec, [(k, v) for n, k, v in overrides if n == name])

  def check_config(self, path: str, line: int, flag: str, spec: str | None,
                   overrides: list[tuple[str, str | None]]) -> None:
    if not spec:
      self.problem(path, line, f"--{flag}.{overrides[0][0]} without --{flag}")
      return
    if re.search(r"[<$]|/path/to|\.\.\.", spec):
      return
    config = self.configs.load(spec)
    if isinstance(config, str):
      self.problem(path, line, f"--{flag}: {config}")
      return
    for key, value in overrides:
      self.counts["config_keys"] += 1
      if message := field_problem(config, key, value):
        self.problem(path, line, f"--{flag}.{key} ({spec}): {message}")

  def check_make(self, path: str, line: int, segment: list[str]) -> None:
    with open(os.path.join(self.root, "Makefile"), encoding="utf-8") as f:
      targets = set(re.findall(r"^([\w.-]+):", f.read(), re.M))
    for token in segment[1:]:
      if token.startswith("CONFIG="):
        self.check_config(path, line, "CONFIG", token.split("=", 1)[1], [])
      elif not token.startswith("-") and "=" not in token and token not in targets | {"..."}:
        self.problem(path, line, f"make {token}: no such target in the Makefile")

  def check_command(self, path: str, line: int, command: str) -> None:
    self.counts["commands"] += 1
    try:
      parts = segments(command)
    except ValueError as error:
      self.problem(path, line, f"cannot parse {command!r}: {error}")
      return
    for segment in parts:
      start = next((i for i, t in enumerate(segment) if not re.fullmatch(r"\w+=\S*", t)), 0)
      if segment[start] == "make":
        self.check_make(path, line, segment[start:])
      for found in invocations(segment, self.root):
        if isinstance(found, str):
          self.problem(path, line, found)
        else:
          self.check_invocation(path, line, found)

  def check_python(self, block: Block) -> None:
    """A Python block parses, and the kdpose modules it imports exist."""
    try:
      tree = ast.parse(block.text)
    except SyntaxError as error:
      self.problem(block.path, block.line + (error.lineno or 0), f"Python block: {error.msg}")
      return
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
               if isinstance(node, ast.ImportFrom) else [])
      for name in names:
        if name.startswith("kdpose") and not _module_or_name_exists(self.root, name):
          self.problem(block.path, block.line + node.lineno, f"import {name}: no such module")

  def check_block(self, block: Block) -> None:
    if block.lang == "" and not block.text:
      self.problem(block.path, block.line, "unclosed code fence")
      return
    if block.lang in COMMAND_LANGS:
      if block.mark is None:
        self.problem(block.path, block.line, f"```{block.lang} block without a mark: "
                     "add `check` (run by tools/check_docs.py --run) or `not-run: REASON`")
      elif block.mark == "not-run" and not block.reason:
        self.problem(block.path, block.line, "`not-run` needs a reason: `not-run: REASON`")
    if block.lang in SHELL_LANGS:
      for offset, command in shell_lines(block.text):
        self.check_command(block.path, block.line + 1 + offset, command)
    elif block.lang == "python":
      self.check_python(block)

  def check_span(self, doc: Doc, line: int, span: str, last_test: str | None) -> str | None:
    """Checks one inline code span; returns the test file it names (for a following ``::x``)."""
    if COMMAND_START_RE.match(span + " "):
      self.check_command(doc.path, line, span)
    elif match := CONFIG_KEY_RE.match(span):
      if match[2] != "json" and not match[2].startswith("json"):
        self.counts["config_keys"] += 1
        configs = (self.configs.every() if match[1] == "config" else
                   [self.configs.load("configs/pix3d_eval.py")])
        results = [field_problem(c, match[2], match[3]) for c in configs]
        if all(results):
          self.problem(doc.path, line, f"`{span}`: in no config of configs/ ({results[0]})")
    elif re.fullmatch(r"configs/\w+\.py:[\w,]+", span):
      self.check_config(doc.path, line, "config", span, [])
    elif match := TEST_REF_RE.match(span):
      test_file = match[1] or last_test
      self.counts["paths"] += 1
      if test_file is None or not _defines(os.path.join(self.root, "tests", test_file),
                                            match[2]):
        self.problem(doc.path, line, f"`{span}`: no test {match[2]} in tests/{test_file}")
      return test_file
    elif REPO_PATH_RE.match(span):
      self.check_path(doc.path, line, span, self.root)
    elif re.fullmatch(r"test_\w+\.py", span):
      self.check_path(doc.path, line, "tests/" + span, self.root)
      return span
    return last_test

  def check_path(self, path: str, line: int, target: str, base: str) -> None:
    if "<" in target or "..." in target:
      return
    for expanded in _expand_braces(target):
      self.counts["paths"] += 1
      full = os.path.join(base, expanded)
      if not (glob.glob(full) if "*" in expanded else os.path.exists(full)):
        self.problem(path, line, f"{target}: no such file or directory")

  def check_link(self, doc: Doc, line: int, target: str, anchors: dict[str, set[str]]) -> None:
    if re.match(r"^[a-z]+:", target):
      return
    file_part, _, anchor = target.partition("#")
    full = os.path.normpath(os.path.join(os.path.dirname(doc.path), file_part)) if file_part \
        else doc.path
    if file_part:
      self.check_path(doc.path, line, os.path.relpath(full, self.root), self.root)
    if anchor and full.endswith(".md") and os.path.exists(full):
      known = anchors.get(full) or parse_markdown(full).anchors
      if anchor not in known:
        self.problem(doc.path, line, f"link {target}: no heading #{anchor} in "
                     f"{os.path.relpath(full)}")

  def check_docs(self, paths: list[str]) -> list[Doc]:
    docs = [parse_markdown(p) for p in paths]
    anchors = {os.path.normpath(d.path): d.anchors for d in docs}
    for doc in docs:
      for line in doc.indented:
        self.problem(doc.path, line, "a command in an indented code block: put it in a fenced "
                     "block marked `check` or `not-run: REASON`")
      for block in doc.blocks:
        self.check_block(block)
      last_test = None
      for line, span in doc.spans:
        last_test = self.check_span(doc, line, span, last_test)
      for line, target in doc.links:
        self.check_link(doc, line, target, anchors)
    return docs


def _module_or_name_exists(root: str, dotted: str) -> bool:
  parts = dotted.split(".")
  for cut in (len(parts), len(parts) - 1):
    base = os.path.join(root, *parts[:cut])
    if os.path.exists(base + ".py") or os.path.exists(os.path.join(base, "__init__.py")):
      return True
  return False


def _defines(path: str, name: str) -> bool:
  if not os.path.exists(path):
    return False
  with open(path, encoding="utf-8") as f:
    return re.search(rf"^\s*def {re.escape(name)}\(", f.read(), re.M) is not None


def _expand_braces(text: str) -> list[str]:
  match = re.search(r"\{([^{}]*)\}", text)
  if not match:
    return [text]
  return [e for choice in match[1].split(",")
          for e in _expand_braces(text[:match.start()] + choice + text[match.end():])]


def default_docs(root: str) -> list[str]:
  return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


# ----------------------------------------------------------------------------- running blocks


def fresh_copy(root: str, dest: str) -> None:
  """The tracked and untracked-but-not-ignored files of the checkout at ``root``, in ``dest``."""
  listed = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others",
                           "--exclude-standard"], capture_output=True, check=True).stdout
  for name in sorted(set(filter(None, listed.decode().split("\0")))):
    source = os.path.join(root, name)
    if os.path.isfile(source):
      os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
      shutil.copy2(source, os.path.join(dest, name))


def run_environment(sandbox: str, cache_dir: str) -> dict[str, str]:
  """``python`` is this interpreter; kdpose and configs come from the copy; CPU, one device,
  XLA -O0 and one compilation cache for every block (each compiles what the last one did)."""
  env = dict(os.environ)
  env.update(PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
             PYTHONPATH=sandbox, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
             XLA_FLAGS="--xla_backend_optimization_level=0", TF_CPP_MIN_LOG_LEVEL="2",
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  return env


def run_blocks(docs: list[Doc], root: str, keep: str | None, timeout: float) -> list[str]:
  """Runs every ``check`` block in one fresh copy; the problems (the first failure ends it)."""
  sandbox = keep or tempfile.mkdtemp(prefix="kdpose-docs-")
  cache = tempfile.mkdtemp(prefix="kdpose-docs-cache-")
  fresh_copy(root, sandbox)
  env = run_environment(sandbox, cache)
  where = subprocess.run([sys.executable, "-c", "import kdpose; print(kdpose.__file__)"],
                         cwd=sandbox, env=env, capture_output=True, text=True).stdout.strip()
  print(f"running in {sandbox} (kdpose from {where})", flush=True)
  problems = []
  if not where.startswith(os.path.realpath(sandbox)) and not where.startswith(sandbox):
    problems.append(f"kdpose imports from {where}, not from the copy {sandbox}")
  blocks = [b for d in docs for b in d.blocks if b.mark == "check"]
  for block in blocks if not problems else []:
    program = ["bash", "-e", "-o", "pipefail", "-c", block.text] if block.lang != "python" \
        else [sys.executable, "-c", block.text]
    start = time.perf_counter()
    result = subprocess.run(program, cwd=sandbox, env=env, capture_output=True, text=True,
                            timeout=timeout)
    label = f"{os.path.relpath(block.path, root)}:{block.line}"
    print(f"  {label} ({block.lang}): exit {result.returncode}, "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    if result.returncode:
      tail = (result.stdout + result.stderr)[-3000:]
      problems.append(f"{label}: the block failed (exit {result.returncode}):\n{tail}")
      break
  if not keep:
    shutil.rmtree(sandbox, ignore_errors=True)
  shutil.rmtree(cache, ignore_errors=True)
  return problems


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", action="store_true", help="Also run the `check` blocks.")
  parser.add_argument("--no_static", action="store_true", help="Skip the static checks.")
  parser.add_argument("--keep", default=None, help="Run in this folder and keep it.")
  parser.add_argument("--timeout", type=float, default=600, help="Seconds per block.")
  parser.add_argument("docs", nargs="*", help="Markdown files (default: README.md, docs/*.md).")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  paths = args.docs or default_docs(REPO)
  checker = Checker(REPO)
  docs = checker.check_docs(paths) if not args.no_static else [parse_markdown(p) for p in paths]
  marks = [b.mark for d in docs for b in d.blocks if b.lang in COMMAND_LANGS]
  problems = [] if args.no_static else list(checker.problems)
  print(f"static: {len(paths)} files, {marks.count('check')} blocks to run, "
        f"{marks.count('not-run')} marked not-run; checked "
        + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in checker.counts.items())
        + f" ({time.perf_counter() - start:.1f} s)")
  if args.run and not problems:
    problems += run_blocks(docs, REPO, args.keep, args.timeout)
  for message in problems:
    print(message)
  print(f"{'FAILED' if problems else 'ok'}: {len(problems)} problem(s), "
        f"{time.perf_counter() - start:.0f} s")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
