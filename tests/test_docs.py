"""The documents stay true to the tree: every file they name exists, every command they quote runs.

Whatever Markdown exists is scanned (README.md and every docs/*.md, including ones added later):

- a path in a code span whose first part is a top-level entry of the repository (`peer/api.py`,
  `docs/protocol.md`) must exist; a bare `name.py` / `name.md` must exist somewhere in the tree; a
  Markdown link must resolve; nothing may point outside the repository (`../shared/...`);
- a command quoted for `peer`, `wallet` or `devnet` (in a code span or a shell block) must name
  real subcommands and options, and `--help` of that subcommand must succeed; `make TARGET` must
  be a Makefile target; `python -m MODULE` must be importable, and files it is given must exist.

Other programs (curl, git, tar...) are taken as they are.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import typer.core
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = {"peer": "peer.cli", "wallet": "wallet.cli", "devnet": "devnet.cli"}


def _tracked() -> list[Path]:
    """The repository's files as a fresh clone has them (never .venv or caches)."""
    try:
        names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                               capture_output=True, text=True, check=True, timeout=30).stdout.split()
        return [REPO / n for n in names]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis"}
        return [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


FILES = _tracked()
TOP = {p.relative_to(REPO).parts[0] for p in FILES}
BASENAMES = {p.name for p in FILES}
DOCS = sorted(p for p in FILES if p.suffix == ".md" and (p.parent == REPO / "docs" or p == REPO / "README.md"))


@dataclass
class Quote:
    doc: Path
    line: int
    text: str
    block: bool  # from a shell code block (a whole command line) rather than a code span

    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}: {self.text!r}"


def quotes(doc: Path) -> list[Quote]:
    found: list[Quote] = []
    fence: str | None = None
    pending = ""
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "text")
            continue
        if fence is not None:
            if fence in ("sh", "bash", "shell", "console"):
                pending += line.removeprefix("$ ").rstrip("\\") + " "
                if not line.rstrip().endswith("\\"):
                    found.append(Quote(doc, number, pending.strip(), True))
                    pending = ""
            continue
        for span in re.findall(r"`([^`]+)`", line):
            found.append(Quote(doc, number, span, False))
    return found


def links(doc: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if not re.match(r"[a-z]+:|#", target):
                out.append((number, target.split("#")[0]))
    return out


# ---- paths ---------------------------------------------------------------------------------------------
def _path_problem(doc: Path, token: str) -> str | None:
    token = token.lstrip("([{\"'").rstrip(".,;:)]}\"'")
    token = re.sub(r":\d+$", "", token)
    if "../" in token:
        target = (doc.parent / token).resolve()
        if not target.is_relative_to(REPO):
            return f"{token} points outside the repository"
        return None if target.exists() else f"{token} does not exist"
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)*/?", token) and "/" in token and token.split("/")[0] in TOP:
        return None if (REPO / token).exists() else f"{token} does not exist"
    if re.fullmatch(r"[\w-]+\.(py|md)", token):
        return None if token in BASENAMES else f"{token} is in no directory of the repository"
    return None


def test_the_docs_exist_and_name_only_files_in_the_repository() -> None:
    assert REPO / "README.md" in DOCS and REPO / "docs" / "protocol.md" in DOCS
    problems = []
    for doc in DOCS:
        for quote in quotes(doc):
            for token in quote.text.split():
                problem = _path_problem(doc, token)
                if problem:
                    problems.append(f"{quote.where()}: {problem}")
        for number, target in links(doc):
            if not (doc.parent / target).resolve().exists():
                problems.append(f"{doc.relative_to(REPO)}:{number}: link to {target} does not resolve")
        if "../shared" in doc.read_text():
            problems.append(f"{doc.relative_to(REPO)} refers to ../shared, outside the repository")
    assert not problems, "\n".join(problems)


def test_the_path_check_catches_what_it_must() -> None:
    doc = REPO / "docs" / "architecture.md"
    assert _path_problem(doc, "gossip/standalone.py") == "gossip/standalone.py does not exist"
    assert _path_problem(doc, "standalone.py") is not None
    assert _path_problem(doc, "../shared/DESIGN.md") is not None
    assert _path_problem(doc, "DESIGN.md") is not None
    assert _path_problem(doc, "peer/api.py") is None and _path_problem(doc, "api.py") is None
    assert _path_problem(doc, "peers/NAME/peer.toml") is None  # a devnet's files, not the repository's


# ---- commands --------------------------------------------------------------------------------------------
def _app(program: str) -> typer.Typer:
    return importlib.import_module(PROGRAMS[program]).app


@functools.cache
def _root_command(program: str) -> typer.core.TyperGroup:
    return typer.main.get_command(_app(program))


@functools.cache
def _help_status(program: str, path: tuple[str, ...]) -> int:
    return CliRunner().invoke(_app(program), [*path, "--help"], prog_name=program).exit_code


def _segments(text: str) -> list[list[str]]:
    """The simple commands of a shell line, with placeholders (<...>, $(...), $VAR) neutralised."""
    text = re.sub(r"<[^>]*>", "X", text)
    text = re.sub(r"\$\([^)]*\)", "X", text)
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        words = text.split()
    segments, current = [], []
    for word in words:
        if word in ("&&", "||", ";", "|"):
            segments.append(current)
            current = []
        else:
            current.append(word)
    segments.append(current)
    cleaned = []
    for seg in segments:
        while seg and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", seg[0]):
            seg = seg[1:]  # VAR=value before the program
        if seg:
            cleaned.append(seg)
    return cleaned


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))


def _check_cli(program: str, args: list[str]) -> tuple[list[str], str | None]:
    """The subcommand path the words name, and what is wrong with them (None: nothing)."""
    command = _root_command(program)
    path: list[str] = []
    for word in args:
        if isinstance(command, typer.core.TyperGroup) and not word.startswith("-"):
            sub = command.commands.get(word)
            if sub is None:
                return path, f"`{program} {' '.join(path)}` has no subcommand {word!r}"
            command, path = sub, [*path, word]
            continue
        if word.startswith("-") and word not in ("-", "--"):
            name = word.split("=", 1)[0]
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
            if name not in known:
                return path, f"`{program} {' '.join(path)}` has no option {name}"
    if isinstance(command, typer.core.TyperGroup) and path:
        return path, f"`{program} {' '.join(path)}` needs a subcommand"
    return path, None


def _command_problems(quote: Quote) -> list[str]:
    problems = []
    for seg in _segments(quote.text):
        program = seg[0].removeprefix(".venv/bin/")
        if program in PROGRAMS:
            path, problem = _check_cli(program, seg[1:])
            if problem:
                problems.append(problem)
                continue
            status = _help_status(program, tuple(path))
            if status != 0:
                problems.append(f"`{program} {' '.join(path)} --help` exited {status}")
        elif program == "make":
            for target in (w for w in seg[1:] if not w.startswith("-") and "=" not in w):
                if target not in _makefile_targets():
                    problems.append(f"the Makefile has no target {target!r}")
        elif re.fullmatch(r"(\.venv/bin/)?python3?", program) and "-m" in seg:
            module = seg[seg.index("-m") + 1]
            if importlib.util.find_spec(module) is None:
                problems.append(f"no module {module}")
            for word in seg:
                if word.endswith(".py") and not (REPO / word).exists():
                    problems.append(f"{word} does not exist")
    return problems


def _is_command(quote: Quote) -> bool:
    first = quote.text.split()[0] if quote.text.split() else ""
    return quote.block or first.removeprefix(".venv/bin/") in (*PROGRAMS, "make") or first.startswith(".venv/bin/")


def test_every_quoted_command_exists() -> None:
    problems = []
    checked = 0
    for doc in DOCS:
        for quote in quotes(doc):
            if not _is_command(quote):
                continue
            checked += 1
            problems.extend(f"{quote.where()}: {p}" for p in _command_problems(quote))
    assert checked >= 30  # the README alone quotes that many: the scan must not silently find none
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("line", "needle"), [
    ("devnet frobnicate --dir x", "no subcommand 'frobnicate'"),
    ("devnet up --colour", "no option --colour"),
    ("wallet send --to x --amount 1 --bogus", "no option --bogus"),
    ("peer status --api http://x", None),  # the old name, hidden, still accepted
    ("make devnet DEVNET_ARGS=\"--detach\"", None),
    ("make deploy", "no target 'deploy'"),
    ("python -m tests.nothing_here", "no module tests.nothing_here"),
    ("eval \"$(devnet env)\" && wallet send -a demo0 --to demo1 --amount 12.50", None),
])
def test_the_command_check_catches_what_it_must(line: str, needle: str | None) -> None:
    problems = _command_problems(Quote(REPO / "README.md", 1, line, True))
    if needle is None:
        assert problems == []
    else:
        assert any(needle in p for p in problems), problems
