"""docs/companion.md stays true: its excerpts are our code, its commands give its output.

Conventions in the guide, checked here:
- A fenced block whose info string is ``python FILE FUNCTION`` quotes FUNCTION in FILE
  (FUNCTION may be ``Class.method``, or ``-`` for the whole module), and the line before
  it says so to the reader: ``From `FILE`, `FUNCTION`:``. A line ``...`` splits
  the block into runs; each run must appear in that function's source, contiguous and
  verbatim apart from common indentation. A plain ``python`` block is a sketch and is not
  checked.
- A ``console`` block holds commands (``$ python flags2_X.py …``) and their output. Each
  command is run against the bundled server, with the labels moved to servers started here
  on ephemeral ports (default workload, so the delays and failures are the guide's); the
  commands run at the same time, as they spend most of their time waiting. The
  exit status must be the one the block shows (an ``[exit status N]`` line, 0 when absent),
  and every shown line that reports codes, counts or causes must be in the real output.
"""

from __future__ import annotations

import ast
import re
import shlex
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, Result, free_port, run_variant

from flags2.servers import FlagsServer, start_server, stop_server

GUIDE = ROOT / 'docs' / 'companion.md'
FENCE = re.compile(r'^( *)```([^\n`]*)\n(.*?)^\1```$', re.MULTILINE | re.DOTALL)
CHECKED_OUTPUT = re.compile(
    r'\d+ flags? downloaded\.|\d+ not found\.|\d+ errors?\.|errors: .*|[A-Z]{2} error: .*'
    r'|[A-Z]{2} (OK|not found)|Searching for .*|\d+ concurrent connections will be used\.'
    r'|1 connection will be used\.|Interrupted by Ctrl-C: .*|\*\*\* .*')
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
LABELS = {'LOCAL': 'local', 'DELAY': 'delay', 'ERROR': 'error'}


@dataclass
class Block:
    info: str
    body: str
    line: int
    label: str  # the last line of text before the fence

    def __str__(self) -> str:
        return f'docs/companion.md:{self.line}'


def blocks() -> list[Block]:
    text = GUIDE.read_text(encoding='utf-8')
    return [Block(m.group(2).strip(), m.group(3), text.count('\n', 0, m.start()) + 1,
                  next((line.strip() for line in reversed(text[:m.start()].splitlines())
                        if line.strip()), ''))
            for m in FENCE.finditer(text)]


def excerpt_blocks() -> list[Block]:
    return [b for b in blocks() if b.info.startswith('python ')]


def console_blocks() -> list[Block]:
    return [b for b in blocks() if b.info == 'console']


def test_guide_quotes_code_and_shows_commands() -> None:
    """The guide keeps its shape: the nine points are quoted, and commands are shown."""
    assert len(excerpt_blocks()) >= 12
    assert sum(len(commands(b)) for b in console_blocks()) >= 4


# ------------------------------------------------------------------ excerpts

def function_lines(path: Path, name: str) -> list[str]:
    """The source lines of function (or class, or Class.method) ``name`` in ``path``."""
    source = path.read_text(encoding='utf-8')
    lines = source.splitlines()
    if name == '-':
        return lines
    body: list[ast.stmt] = ast.parse(source).body
    node: ast.stmt | None = None
    for part in name.split('.'):
        named = [n for n in body if isinstance(n, DEFINITIONS) and n.name == part]
        assert named, f'{name} not found in {path.name}'
        node, body = named[0], named[0].body
    assert node is not None and node.end_lineno is not None
    return lines[node.lineno - 1:node.end_lineno]


def runs(body: str) -> list[list[str]]:
    """The runs of lines an excerpt quotes, each dedented on its own."""
    found: list[list[str]] = [[]]
    for line in body.splitlines():
        if line.strip() == '...':
            found.append([])
        else:
            found[-1].append(line)
    return [dedented(run) for run in found if any(line.strip() for line in run)]


def dedented(lines: list[str]) -> list[str]:
    return textwrap.dedent('\n'.join(lines)).splitlines()


def contains_run(source: list[str], run: list[str]) -> bool:
    n = len(run)
    return any(dedented(source[i:i + n]) == run for i in range(len(source) - n + 1))


@pytest.mark.parametrize('block', excerpt_blocks(), ids=str)
def test_excerpt_is_verbatim_in_the_named_function(block: Block) -> None:
    _, filename, function = block.info.split()
    assert block.label == f'From `{filename}`, `{function}`:', \
        f'{block}: a reader cannot see the info string; say where the excerpt is from'
    source = function_lines(ROOT / filename, function)
    quoted = runs(block.body)
    assert quoted, f'{block}: empty excerpt'
    for run in quoted:
        assert contains_run(source, run), \
            f'{block}: not verbatim in {filename} {function}:\n' + '\n'.join(run)


# ------------------------------------------------------------------ commands

@dataclass
class Command:
    argv: list[str]
    shown: list[str] = field(default_factory=list)
    exit_status: int = 0

    def __str__(self) -> str:
        return shlex.join(self.argv)

    @property
    def labels(self) -> set[str]:
        """The bundled-server labels this command names with ``-s``."""
        return {self.argv[i + 1].upper() for i, arg in enumerate(self.argv[:-1])
                if arg == '-s'} & LABELS.keys()


def commands(block: Block) -> list[Command]:
    found: list[Command] = []
    for line in block.body.splitlines():
        if line.startswith('$ '):
            found.append(Command(shlex.split(line[2:])))
        elif match := re.fullmatch(r'\[exit status (\d+)\]', line.strip()):
            found[-1].exit_status = int(match.group(1))
        elif found:
            found[-1].shown.append(line.strip())
    return found


@pytest.fixture(scope='module')
def guide_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    """Every command of the guide, run once and all at once (they mostly wait on delays).

    Each label a command uses gets its own server with the default workload, so the
    delays and failures are the ones the guide shows; labels not used point at free
    ports, so nothing can reach ports 8000-8002.
    """
    runnable = [command for block in console_blocks() for command in commands(block)
                if re.fullmatch(r'flags2_\w+\.py', command.argv[1])]
    labels = sorted(set().union(*(command.labels for command in runnable)))
    base = tmp_path_factory.mktemp('guide')
    servers: list[FlagsServer] = []
    try:
        with ThreadPoolExecutor() as pool:
            starting = [pool.submit(start_server, LABELS[label]) for label in labels]
        servers.extend(f.result() for f in starting if f.exception() is None)
        for future in starting:
            future.result()  # a server that failed to start fails the run, after the
            #                  others are in `servers` to be stopped
        urls = {label: server.url for label, server in zip(labels, servers, strict=True)}
        env = {f'FLAGS2_{label}_URL': urls.get(label, f'http://127.0.0.1:{free_port()}/flags')
               for label in LABELS}

        def run(numbered: tuple[int, Command]) -> Result:
            n, command = numbered
            variant = command.argv[1].removeprefix('flags2_').removesuffix('.py')
            work = base / str(n)
            work.mkdir()
            return run_variant(variant, *command.argv[2:], '-o', str(work / 'flags'),
                               cwd=work, env=env, timeout=60)

        with ThreadPoolExecutor() as pool:
            results = list(pool.map(run, enumerate(runnable)))
        yield {str(command): result for command, result in zip(runnable, results, strict=True)}
    finally:
        for server in servers:
            stop_server(server)


@pytest.mark.parametrize('block', console_blocks(), ids=str)
def test_console_block_runs_as_shown(block: Block, guide_runs: dict[str, Result]) -> None:
    for command in commands(block):
        assert command.argv[0] == 'python', f'{block}: only python commands are run'
        assert re.fullmatch(r'flags2_\w+\.py', command.argv[1]), \
            f'{block}: {command.argv[1]} is not a variant'
        checked = [line for line in command.shown if CHECKED_OUTPUT.fullmatch(line)]
        assert checked, f'{block}: {command} shows no output this test can check'
        result = guide_runs[str(command)]
        assert result.returncode == command.exit_status, \
            f'{block}: {command} exited {result.returncode}:\n{result.stdout}{result.stderr}'
        real = {line.strip() for line in result.stdout.splitlines()}
        missing = [line for line in checked if line not in real]
        assert not missing, f'{block}: {command} did not print {missing}:\n{result.stdout}'


# ------------------------------------------------------------------ names

def test_named_files_and_links_exist() -> None:
    """Every file the guide names in backticks, and every relative link, exists."""
    text = GUIDE.read_text(encoding='utf-8')
    named = set(re.findall(r'`((?:flags2/)?[\w.]+\.py)`', text))
    assert 'flags2/clients.py' in named
    missing = sorted(name for name in named if not (ROOT / name).is_file())
    assert not missing, f'docs/companion.md names files that do not exist: {missing}'
    links = re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', text)
    broken = sorted(link for link in links if not (GUIDE.parent / link).exists())
    assert not broken, f'docs/companion.md links to missing files: {broken}'
