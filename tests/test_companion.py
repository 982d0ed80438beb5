"""docs/companion.md stays true: its excerpts are our code, its commands give its output.

Conventions in the guide, checked here:
- A fenced block whose info string is ``python FILE FUNCTION`` quotes FUNCTION in FILE
  (FUNCTION may be ``Class.method``, or ``-`` for the whole module), and the line before
  it says so to the reader: ``From `FILE`, `FUNCTION`:``. A line ``...`` splits
  the block into runs; each run must appear in that function's source, contiguous and
  verbatim apart from common indentation, and the runs in the order of the source. A
  plain ``python`` block is a sketch and is not checked.
- Every ``console`` block (and every block with no info string) is a real run: each
  command in it is run as written and its output compared line by line, under the rules
  of tests/samples.py (ports, elapsed seconds, the auto-start line and progress bars are
  normalised; everything else, in order, must match). A ``text`` block is not run.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import samples

from conftest import ROOT

GUIDE = ROOT / 'docs' / 'companion.md'
FENCE = re.compile(r'^( *)```([^\n`]*)\n(.*?)^\1```$', re.MULTILINE | re.DOTALL)
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


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


def test_guide_quotes_code_and_shows_commands() -> None:
    """The guide keeps its shape: code is quoted from every listing, and commands are shown."""
    assert len(excerpt_blocks()) >= 12
    quoted = {block.info.split()[1] for block in excerpt_blocks()}
    listings = {'flags2_common.py', 'flags2_sequential.py', 'flags2_threadpool.py',
                'flags2_asyncio.py', 'flags2_asyncio_executor.py', 'flags3_asyncio.py'}
    assert listings <= quoted, f'no excerpt from {sorted(listings - quoted)}'
    assert len(samples.markdown_samples(GUIDE)) >= 4


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


def find_run(source: list[str], run: list[str], start: int = 0) -> int | None:
    """The index of the first line of ``run`` in ``source`` at or after ``start``."""
    n = len(run)
    return next((i for i in range(start, len(source) - n + 1)
                 if dedented(source[i:i + n]) == run), None)


@pytest.mark.parametrize('block', excerpt_blocks(), ids=str)
def test_excerpt_is_verbatim_in_the_named_function(block: Block) -> None:
    _, filename, function = block.info.split()
    assert block.label == f'From `{filename}`, `{function}`:', \
        f'{block}: a reader cannot see the info string; say where the excerpt is from'
    source = function_lines(ROOT / filename, function)
    quoted = runs(block.body)
    assert quoted, f'{block}: empty excerpt'
    after = 0
    for run in quoted:
        assert find_run(source, run) is not None, \
            f'{block}: not verbatim in {filename} {function}:\n' + '\n'.join(run)
        found = find_run(source, run, after)
        assert found is not None, \
            f'{block}: runs not in source order in {filename} {function}; this one comes ' \
            'before the run shown above it:\n' + '\n'.join(run)
        after = found + len(run)


# ------------------------------------------------------------------ commands

GUIDE_SAMPLES = samples.markdown_samples(GUIDE)


def test_guide_runs_are_all_checked() -> None:
    """Every command shown outside a ``text`` block is a variant this test runs."""
    assert len(GUIDE_SAMPLES) >= 4
    for sample in GUIDE_SAMPLES:
        assert sample.argv[0] == 'python', f'{sample}: only python commands are run'
        assert re.fullmatch(r'flags[23]_\w+\.py', sample.script), f'{sample}: not a variant'


@pytest.fixture(scope='module')
def guide_runs(tmp_path_factory: pytest.TempPathFactory) -> list[samples.Real]:
    """Every command of the guide, each alone against servers of its own."""
    return samples.run_all(GUIDE_SAMPLES, tmp_path_factory.mktemp('guide'))


@pytest.mark.parametrize('index', range(len(GUIDE_SAMPLES)),
                         ids=[s.where for s in GUIDE_SAMPLES])
def test_console_sample_runs_as_shown(index: int, guide_runs: list[samples.Real]) -> None:
    samples.check(GUIDE_SAMPLES[index], guide_runs[index])


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
