r"""What the docs check reads: Markdown files (fenced blocks and their marks, inline code spans,
links, headings), the shell commands in them, the flags a program's source defines, and config
files. ``tools/check_docs.py`` checks what this finds."""

from __future__ import annotations

import ast
import dataclasses
import glob
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

SHELL_LANGS = ("bash", "sh", "shell", "console")
COMMAND_LANGS = SHELL_LANGS + ("python",)
MARK_RE = re.compile(
    r"^(?P<lang>[\w+-]*)(?:\s+(?P<mark>check|not-run)(?::\s*(?P<reason>.*))?)?\s*$")
# absl's own flags, which every absl program accepts.
ABSL_FLAGS = frozenset((
    "help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "logtostderr",
    "alsologtostderr", "log_dir", "v", "verbosity", "stderrthreshold", "showprefixforinfo",
    "logger_levels", "only_check_args", "pdb", "pdb_post_mortem", "run_with_pdb"))
SEPARATORS = frozenset(("&&", "||", ";", "|", "(", ")", "&"))
COMMAND_START_RE = re.compile(r"^(?:\w+=\S*\s+)*(?:\S*/)?(?:python3?(?:\.\d+)?|make|bash)\s|"
                              r"^tools/\S+\.sh\b")


@dataclasses.dataclass(frozen=True)
class Block:
  """A fenced block: where it starts (the fence's line), its language, mark and text."""

  path: str
  line: int
  lang: str
  mark: str | None  # "check", "not-run" or None
  reason: str
  text: str


@dataclasses.dataclass
class Doc:
  path: str
  blocks: list[Block]
  spans: list[tuple[int, str]]  # (line, text) of inline code spans outside blocks
  links: list[tuple[int, str]]  # (line, target) of Markdown links outside blocks
  anchors: set[str]
  indented: list[int] = dataclasses.field(default_factory=list)  # lines of indented commands


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"`", "", heading.strip().lower())
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def parse_markdown(path: str) -> Doc:
  """The fenced blocks, inline code spans, links and heading anchors of a Markdown file."""
  doc = Doc(path, [], [], [], set())
  fence, start, lang_line, body = None, 0, "", []
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  prose = [""] * len(lines)  # the lines outside fenced blocks, the others left blank
  for number, line in enumerate(lines, 1):
    stripped = line.strip()
    if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
      fence, start, lang_line, body = stripped[:3], number, stripped[3:].strip(), []
      continue
    if fence is not None:
      if stripped.startswith(fence) and not stripped[3:].strip():
        match = MARK_RE.match(lang_line)
        lang, mark, reason = (match["lang"], match["mark"], match["reason"] or "") if match else (
            lang_line, None, "")
        doc.blocks.append(Block(path, start, lang, mark, reason.strip(), "\n".join(body)))
        fence = None
      else:
        body.append(line)
      continue
    if stripped.startswith("#"):
      doc.anchors.add(_slug(stripped.lstrip("#")))
    if line.startswith("    ") and not lines[number - 2].strip() and COMMAND_START_RE.match(
        stripped + " "):
      doc.indented.append(number)
    prose[number - 1] = line
  if fence is not None:
    doc.blocks.append(Block(path, start, "", None, "", ""))  # reported as unclosed
  # Spans and links in the text outside blocks; a span may run over lines of one paragraph.
  text = "\n".join(prose)
  for match in re.finditer(r"`([^`\n]+(?:\n[^`\n]+)*?)`", text):
    if "\n\n" not in match[1]:
      doc.spans.append((text.count("\n", 0, match.start()) + 1, " ".join(match[1].split())))
  outside = re.sub(r"`[^`]*`", lambda m: "\n" * m[0].count("\n"), text)
  for match in re.finditer(r"\]\(([^)\s]+)\)", outside):
    doc.links.append((outside.count("\n", 0, match.start()) + 1, match[1]))
  return doc


# ----------------------------------------------------------------------------- shell commands


def shell_lines(text: str) -> list[tuple[int, str]]:
  """(offset of its first line, command) of each command of a shell block: continuation lines
  joined, prompts ("$ ") and blank or comment-only lines dropped."""
  commands, pending, first = [], "", 0
  for offset, line in enumerate(text.split("\n")):
    if not pending:
      first = offset
      line = line[2:] if line.startswith("$ ") else line
    if line.rstrip().endswith("\\"):
      pending += line.rstrip()[:-1] + " "
      continue
    command, pending = (pending + line).strip(), ""
    if command and not command.startswith("#"):
      commands.append((first, command))
  return commands


def segments(command: str) -> list[list[str]]:
  """The simple commands of a shell line (split at ``&&``, ``;``, ``|``, ``--`` before a
  program), including those inside a quoted argument (``--command="cd x && python ..."``)."""
  lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
  lexer.whitespace_split, lexer.commenters = True, "#"
  tokens = list(lexer)
  out, current = [], []
  for token in tokens:
    inner = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
    if " " in inner and re.search(r"\bpython|\bmake\b", inner):
      out += segments(inner)
      continue
    if token in SEPARATORS or token == "--":
      out.append(current)
      current = []
    else:
      current.append(token)
  return [segment for segment in out + [current] if segment]


@dataclasses.dataclass(frozen=True)
class Invocation:
  program: str  # "kdpose.main" or "tools/ablation.py"
  path: str  # its source file (absolute)
  args: tuple[str, ...]


def invocations(segment: list[str], root: str) -> list[Invocation | str]:
  """The kdpose/tools programs a simple command runs, or a problem (a string)."""
  for index, token in enumerate(segment):
    if re.fullmatch(r"(?:\S*/)?python(?:3(?:\.\d+)?)?", token) and index + 1 < len(segment):
      rest = segment[index + 1:]
      if rest[0] == "-m" and len(rest) > 1:
        module = rest[1]
        if not module.startswith("kdpose"):
          return []
        parts = module.split(".")
        for candidate in (os.path.join(root, *parts) + ".py",
                          os.path.join(root, *parts, "__main__.py")):
          if os.path.exists(candidate):
            return [Invocation(module, candidate, tuple(rest[2:]))]
        return [f"python -m {module}: no such module in {os.path.relpath(root)}"]
      if rest[0].endswith(".py"):
        path = os.path.join(root, rest[0])
        if not os.path.exists(path):
          return [f"python {rest[0]}: no such file"]
        return [Invocation(rest[0], path, tuple(rest[1:]))]
      return []
    if re.fullmatch(r"(?:\./)?tools/\S+\.sh", token) and not os.path.exists(
        os.path.join(root, token)):
      return [f"{token}: no such file"]
  return []


# ----------------------------------------------------------------------------- program flags


@dataclasses.dataclass
class Flags:
  names: set[str]
  config_flags: dict[str, str | None]  # name -> default config file
  absl: bool
  # A program whose flag names are computed: the string keys of its dict literals, where such
  # names usually come from (accepted without importing it; other names make the checker
  # import the program to list its flags).
  likely: set[str] = dataclasses.field(default_factory=set)


def _call_name(node: ast.Call) -> str:
  """``flags.DEFINE_string`` -> ``DEFINE_string``; ``_DEFINE[type]`` -> ``_DEFINE``."""
  func = node.func.value if isinstance(node.func, ast.Subscript) else node.func
  return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _literal(node) -> str | None:
  return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def source_flags(path: str) -> tuple[Flags, bool]:
  """The flags a program's source defines, and whether some names are computed (dynamic)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  flags, dynamic = Flags(set(), {}, False), False
  for node in ast.walk(tree):
    if isinstance(node, ast.Dict):
      flags.likely.update(filter(None, map(_literal, node.keys)))
    if not isinstance(node, ast.Call):
      continue
    name = _call_name(node)
    first = _literal(node.args[0]) if node.args else _literal(
        next((k.value for k in node.keywords if k.arg == "name"), None))
    if name.lstrip("_").startswith("DEFINE"):
      flags.absl = True
      if first is None:
        dynamic = True
        continue
      flags.names.add(first)
      if name == "DEFINE_config_file":
        flags.config_flags[first] = _literal(node.args[1]) if len(node.args) > 1 else None
    elif name == "add_argument":
      flags.names.update(a.lstrip("-") for a in map(_literal, node.args) if a and a[0] == "-")
  if not dynamic:
    flags.likely = set()
  return flags, dynamic


def imported_flags(path: str, root: str) -> set[str]:
  """The flag names a program defines when imported (its ``_define_flags()`` called)."""
  code = (
      "import importlib.util, json, sys\n"
      f"sys.path.insert(0, {root!r})\n"
      f"spec = importlib.util.spec_from_file_location('program', {path!r})\n"
      "module = sys.modules['program'] = importlib.util.module_from_spec(spec)\n"
      "spec.loader.exec_module(module)\n"
      "getattr(module, '_define_flags', lambda: None)()\n"
      "from absl import flags\n"
      "print(json.dumps(sorted(flags.FLAGS)))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  if result.returncode:
    raise RuntimeError(f"importing {path} to list its flags failed:\n{result.stderr[-2000:]}")
  return set(json.loads(result.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------------------- configs


class Configs:
  """Config files loaded once each (``configs/X.py`` with an optional ``:variant``)."""

  def __init__(self, root: str):
    self.root, self._cache = root, {}
    if root not in sys.path:
      sys.path.insert(0, root)

  def load(self, spec: str):
    """The ConfigDict of ``path[:arg]``, or the error message (a string)."""
    if spec not in self._cache:
      path, _, arg = spec.partition(":")
      try:
        module_spec = importlib.util.spec_from_file_location(
            "docs_config_" + re.sub(r"\W", "_", path), os.path.join(self.root, path))
        if module_spec is None or not os.path.exists(os.path.join(self.root, path)):
          raise FileNotFoundError(f"no such file {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        self._cache[spec] = module.get_config(arg) if arg else module.get_config()
      except Exception as error:  # any failure is the problem to report
        self._cache[spec] = f"{spec} does not load: {type(error).__name__}: {error}"
    return self._cache[spec]

  def every(self) -> list:
    """Every config file of configs/ (no variant) that loads."""
    specs = sorted(os.path.relpath(p, self.root)
                   for p in glob.glob(os.path.join(self.root, "configs", "*.py"))
                   if not os.path.basename(p).startswith(("_", "common")))
    return [c for c in map(self.load, specs) if not isinstance(c, str)]
