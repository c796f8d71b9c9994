"""The README and docs/ keep working: every relative link and image points to a file of
the repository (a `#heading` to a heading there), none leaves the repository, and every
`prakerja` command they show names a command and options the command line has.

Checked in-process on the text and on the click objects (no subprocess), so a renamed
command, option, page or heading fails here naming the page and line that show it."""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)[ \t]*(\w*)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
# [text](target) and ![alt](target); the text may run over a line end.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
PRAKERJA = {"prakerja", "./prakerja", ".venv/bin/prakerja"}
PYTHON = {"python", "python3", ".venv/bin/python"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Shown:
    """Something a page shows, and where: `docs/scale.md:142`."""

    page: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


def _blank(text: str, start: int, end: int) -> str:
    """The text with [start, end) blanked, line ends kept: line numbers stay true."""
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def _prose(text: str) -> str:
    """The page without its code blocks and code spans (links there are not links)."""
    for m in reversed(list(FENCE.finditer(text))):
        text = _blank(text, m.start(), m.end())
    for m in reversed(list(INLINE_CODE.finditer(text))):
        text = _blank(text, m.start(), m.end())
    return text


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    for m in reversed(list(FENCE.finditer(text))):  # a `# comment` in a block is no heading
        text = _blank(text, m.start(), m.end())
    seen: dict[str, int] = {}
    found = set()
    for m in HEADING.finditer(text):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links() -> list[Shown]:
    shown = []
    for page in PAGES:
        text = _prose(page.read_text(encoding="utf-8"))
        for m in LINK.finditer(text):
            shown.append(Shown(page, _line(text, m.start()), m.group(1)))
    return shown


def _bash_commands(page: Path) -> list[Shown]:
    """Each command line of the page's bash blocks, continuation lines joined."""
    text = page.read_text(encoding="utf-8")
    commands = []
    for m in FENCE.finditer(text):
        if m.group(2) not in {"bash", "sh", "shell"}:
            continue
        first = _line(text, m.start(3))
        pending, start = "", first
        for n, line in enumerate(m.group(3).splitlines(), first):
            if not pending:
                start = n
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            commands.append(Shown(page, start, pending + line))
            pending = ""
    return commands


def _inline_commands(page: Path) -> list[Shown]:
    """`prakerja ...` in the prose: a command's name and its options, placeholders aside."""
    text = page.read_text(encoding="utf-8")
    for m in reversed(list(FENCE.finditer(text))):
        text = _blank(text, m.start(), m.end())
    shown = []
    for m in INLINE_CODE.finditer(text):
        code = " ".join(m.group(2).split())
        if re.match(r"(\./|\.venv/bin/)?prakerja ", code):  # the program alone: no command
            shown.append(Shown(page, _line(text, m.start()), code))
    return shown


def _words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _simple_commands(words: list[str]) -> list[list[str]]:
    """`a && b | c &` as [a], [b], [c]; leading VAR=value assignments dropped."""
    commands: list[list[str]] = [[]]
    for word in words:
        if word in SEPARATORS:
            commands.append([])
        elif commands[-1] or not ENV_ASSIGNMENT.match(word):
            commands[-1].append(word)
    return [c for c in commands if c]


def _option_names(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
    return names


def prakerja_problem(args: list[str]) -> str | None:
    """Why `prakerja <args>` names no command or option of the CLI; None when it does.
    Placeholders (`N`, `FILE`, `[--json]`, `...`) are taken as the values they stand for."""
    from cli import main

    command: click.Command = main
    path = ["prakerja"]
    words = [w.strip("[]") for w in args]
    i = 0
    while isinstance(command, click.Group) and i < len(words):
        word = words[i]
        if word == "...":  # `prakerja -v ...`: any command
            return None
        if word.startswith("-"):
            if word.split("=", 1)[0] not in _option_names(command):
                return f"`{' '.join(path)}` has no option {word}"
        else:
            ctx = click.Context(command, info_name=path[-1])
            sub = command.get_command(ctx, word)
            if sub is None:
                return f"`{' '.join(path)}` has no command {word!r}"
            command = sub
            path.append(word)
        i += 1
    if isinstance(command, click.Group):
        return f"`{' '.join(path)}` is a group, not a command"
    options = _option_names(command)
    for word in words[i:]:
        for part in word.split("|"):  # `[--json | --verify]`
            name = part.split("=", 1)[0]
            if re.fullmatch(r"--?[A-Za-z][\w-]*", name) and name not in options:
                return f"`{' '.join(path)}` has no option {name}"
    return None


def program_problem(words: list[str]) -> str | None:
    """Why a command's program (or the script or module it runs) does not exist here."""
    program = words[0]
    if program in PRAKERJA:
        return prakerja_problem(words[1:])
    if program in PYTHON and len(words) > 1:
        if words[1] == "-m" and len(words) > 2:
            module = words[2]
            if importlib.util.find_spec(module.split(".")[0]) is None:
                return f"no module {module}"
            if importlib.util.find_spec(module) is None:
                return f"no module {module}"
            return None
        if words[1].endswith(".py") and not (ROOT / words[1]).is_file():
            return f"no script {words[1]}"
        return None
    is_repo_path = "/" in program and not program.startswith(("/", "~", "$", ".venv/"))
    if is_repo_path and not (ROOT / program).exists():
        return f"no program {program}"
    return None


def test_the_pages_are_the_readme_and_one_topic_per_page_it_links():
    linked = {
        (ROOT / target.split("#")[0]).resolve()
        for target in re.findall(r"\]\((docs/[^)#\s]+\.md)", (ROOT / "README.md").read_text())
    }
    unlinked = {p.resolve() for p in PAGES[1:]} - linked
    assert not unlinked, f"pages of docs/ the README does not link: {sorted(unlinked)}"


def test_every_relative_link_points_to_a_file_and_heading_of_the_repository():
    broken = []
    for link in links():
        target = link.text
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            if target.lower().startswith("file:"):
                broken.append(f"{link.where}: {target} is a file outside the repository")
            continue
        if not target:
            broken.append(f"{link.where}: an empty link")
            continue
        path, _, anchor = target.partition("#")
        if path.startswith("/"):
            broken.append(f"{link.where}: {target} is absolute: write it relative to the page")
            continue
        file = (link.page.parent / path).resolve() if path else link.page
        if not file.is_relative_to(ROOT) or "shared" in Path(path).parts:
            broken.append(f"{link.where}: {target} leads outside the repository")
        elif not file.exists():
            broken.append(f"{link.where}: {target}: no such file")
        elif anchor and anchor not in (anchors(file) if file.suffix == ".md" else set()):
            broken.append(f"{link.where}: {target}: no heading #{anchor} in {file.name}")
    assert not broken, "\n".join(broken)


def test_every_command_in_a_bash_block_exists():
    broken = []
    for shown in [c for page in PAGES for c in _bash_commands(page)]:
        for words in _simple_commands(_words(shown.text)):
            problem = program_problem(words)
            if problem:
                broken.append(f"{shown.where}: {shown.text.strip()}: {problem}")
    assert not broken, "\n".join(broken)


def test_every_prakerja_command_in_the_prose_exists():
    broken = []
    for shown in [c for page in PAGES for c in _inline_commands(page)]:
        problem = prakerja_problem(shown.text.split()[1:])
        if problem:
            broken.append(f"{shown.where}: `{shown.text}`: {problem}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["wave", "run", "--wave", "1", "--quota", "5", "--sign-off", "2"], None),
        (["wave", "run", "--no-backfill"], None),
        (["-v", "wave", "report", "--wave", "N", "[--json]"], None),
        (["wave", "rerun", "--wave", "1"], "`prakerja wave` has no command 'rerun'"),
        (["wave", "report", "--wave", "1", "--verify"], "`prakerja wave report` has no option"),
        (["--quiet", "demo"], "`prakerja` has no option --quiet"),
        (["db"], "`prakerja db` is a group, not a command"),
    ],
)
def test_a_command_is_checked_against_the_cli_itself(args, problem):
    found = prakerja_problem(args)
    assert (found is None) if problem is None else (found or "").startswith(problem), found


def test_a_broken_link_or_command_is_named_with_its_page_and_line():
    text = "# T\n\nSee [the\npage](nowhere.md), not `[code](x.md)`.\n\n```bash\nscripts/nope\n```\n"
    prose = _prose(text)
    found = [(m.group(1), _line(prose, m.start())) for m in LINK.finditer(prose)]
    assert found == [("nowhere.md", 3)]
    assert Shown(ROOT / "docs" / "x.md", 3, "").where == "docs/x.md:3"
    assert program_problem(_words("scripts/nope")) == "no program scripts/nope"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("What `wave run` (and `demo`) print", "what-wave-run-and-demo-print"),
        ("The registrant export (`--registrants`)", "the-registrant-export---registrants"),
        ("Once: a Prefect server, a pool", "once-a-prefect-server-a-pool"),
    ],
)
def test_anchors_are_githubs(heading, anchor):
    assert slug(heading) == anchor
