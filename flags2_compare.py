"""Compare the flags2 variants: same codes, same server, fresh processes.

Each run starts a variant script as a reader would (``python flags2_X.py
CC... -s URL``) and reads its final report. Against the bundled DELAY or
ERROR server the delay of every code is known, so each run also gets an
*ideal time*: the makespan of issuing the requests in the variant's order
onto ``concur_req`` slots, each taking exactly its delay, with zero overhead.
Efficiency is ideal / measured; 100% would mean the client added nothing.

This file runs and measures; the table, JSON and CSV are written by
flags2/tables.py, the charts drawn by flags2/charts.py.

Sample run::

    $ python flags2_compare.py -s DELAY -l 20
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import importlib
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import tqdm

from flags2_common import (
    SERVERS,
    build_parser,
    concurrency,
    expand_cc_args,
    plural,
)

from flags2.charts import (
    chart_format_problem,
    check_matplotlib,
    plot_sweep,
    plot_timeline,
    timeline_rows,
)
from flags2.codes import country_codes
from flags2.options import (
    ArgumentParser,
    UsageError,
    check_dest,
    check_proxy_settings,
    positive_float,
    positive_int,
    printable_url,
    resolve_server,
)
from flags2.runs import EXIT_CLOSED_PIPE, EXIT_ERRORS, EXIT_INTERRUPTED, EXIT_OK
from flags2.servers import (
    BUNDLED_MODES,
    ServerStartError,
    bundled_server,
    port_answers,
    server_json,
    server_stats,
    start_command,
)
from flags2.streams import guarded_streams
from flags2.tables import table, text_bars, write_csv, write_json

HERE = Path(__file__).resolve().parent
VARIANT_NAMES = ('sequential', 'threadpool', 'asyncio', 'asyncio_executor', 'flags3')
DEFAULT_VARIANTS = VARIANT_NAMES[:3]  # the flags2 trio, which fetch the same thing
SCRIPTS = {'flags3': 'flags3_asyncio.py'}  # the others are flags2_{name}.py
DEFAULT_REPEAT = 3
DEFAULT_TIME_LIMIT = 600.0
PROGRESS_INTERVAL = 0.5  # seconds between two looks at a run in progress


@dataclass(frozen=True)
class Variant:
    name: str
    script: Path
    default_concur_req: int
    max_concur_req: int
    requests_per_flag: int = 1  # flags3 asks for the metadata too

    def concurrency(self, requested: int | None, n_codes: int) -> int:
        """The concur_req the script will use: its ``main`` calls the same formula."""
        wanted = self.default_concur_req if requested is None else requested
        return concurrency(wanted, self.max_concur_req, n_codes)

    @property
    def concurrent(self) -> bool:
        return self.max_concur_req > 1


def variant_script(name: str) -> Path:
    """The script of a variant: flags2_asyncio.py for 'asyncio', flags3_asyncio.py for 'flags3'."""
    return HERE / SCRIPTS.get(name, f'flags2_{name}.py')


def load_variants() -> dict[str, Variant]:
    """The scripts and their concurrency limits, read from the modules themselves."""
    variants = {}
    for name in VARIANT_NAMES:
        script = variant_script(name)
        module = importlib.import_module(script.stem)
        variants[name] = Variant(name, script, module.DEFAULT_CONCUR_REQ,
                                 module.MAX_CONCUR_REQ, 2 if name == 'flags3' else 1)
    return variants


# ------------------------------------------------------------ ideal time

def ideal_time(delays: Sequence[float], slots: int,
               then: Sequence[float | None] | None = None) -> float:
    """Makespan of list scheduling: each request, in the given order, starts on
    the first of ``slots`` slots to come free and holds it for its delay.

    ``then[i]``, if given and not None: the delay of a second request that the
    i-th code makes once its first one ends (flags3 asks for the country's
    metadata), queued behind every request waiting then, as a FIFO semaphore
    taken a second time queues it. This is the best any client can do when it
    issues requests in that order and never has more than ``slots`` open, as
    the variants do.
    """
    if slots < 1:
        raise ValueError('need at least one slot')
    queue = deque((delay, then[i] if then else None) for i, delay in enumerate(delays))
    finish: list[tuple[float, int, float | None]] = []  # busy slots: end, order, next delay
    order = itertools.count()
    now = end = 0.0
    while queue or finish:
        while queue and len(finish) < slots:
            delay, second = queue.popleft()
            heapq.heappush(finish, (now + delay, next(order), second))
        now, _, second = heapq.heappop(finish)
        end = max(end, now)
        if second is not None:
            queue.append((second, None))
    return end


def variant_ideal(delays: dict[str, float], cc_list: list[str], variant: Variant,
                  slots: int) -> float:
    """The ideal time of one variant: flags3 asks twice for each code that has a flag."""
    firsts = [delays.get(cc, 0.0) for cc in cc_list]
    if variant.requests_per_flag == 1:
        return ideal_time(firsts, slots)
    flags = set(country_codes())
    return ideal_time(firsts, slots, [d if cc in flags else None
                                      for cc, d in zip(cc_list, firsts, strict=True)])


# ------------------------------------------------------------- the server
#
# What compare reads from a bundled server on loopback (flags_server.py
# documents the pages): /workload for the ideal times, /stats for the peak
# and the progress, /stats/requests for the timeline. Each answer is checked,
# field by field, before the runs start: a server that answers a page in
# another shape is refused, one line a problem, rather than failing after
# every run has been made. A server that does not answer a page in JSON
# at all (any server but the bundled one) simply has no such page.

@dataclass(frozen=True)
class ServerWorkload:
    """The bundled server's GET /workload: its mode's parameters and every code's delay."""

    mode: str
    seed: str
    delay_min: float
    delay_max: float
    error_rate: float
    fault: str | None
    delays: dict[str, float]

    def record(self) -> dict[str, Any]:
        """As --json saves it: the parameters, without the 676 delays."""
        data = asdict(self)
        del data['delays']
        return data


def is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number (true and false are not), finite."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def is_count(value: object) -> TypeGuard[int]:
    """A JSON whole number, 0 or more."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def shown(value: object) -> str:
    """A JSON value as a problem line shows it."""
    return repr(value) if isinstance(value, str) else json.dumps(value)


def json_kind(value: object) -> str:
    kinds = ((bool, 'true or false'), (dict, 'an object'), (list, 'a list'),
             (str, 'a string'), (int | float, 'a number'))
    return next((name for kind, name in kinds if isinstance(value, kind)), 'null')


def field_problems(data: dict[str, Any],
                   fields: Mapping[str, tuple[Callable[[object], bool], str]]) -> list[str]:
    """One line for each of ``fields`` missing from ``data`` or not of its kind."""
    problems = []
    for name, (fits, kind) in fields.items():
        if name not in data:
            problems.append(f'no {name!r}')
        elif not fits(data[name]):
            problems.append(f'{name!r} is {shown(data[name])}, not {kind}')
    return problems


WORKLOAD_FIELDS: Mapping[str, tuple[Callable[[object], bool], str]] = {
    'mode': (lambda value: isinstance(value, str), 'a string'),
    'seed': (lambda value: isinstance(value, str), 'a string'),
    'delay_min': (is_number, 'a number'),
    'delay_max': (is_number, 'a number'),
    'error_rate': (is_number, 'a number'),
}


def read_workload(data: object) -> tuple[ServerWorkload | None, list[str]]:
    """The workload a /workload answer publishes, or the problems with it."""
    if not isinstance(data, dict):
        return None, [f'not a JSON object but {json_kind(data)}']
    problems = field_problems(data, WORKLOAD_FIELDS)
    delays = data.get('delays')
    if 'delays' not in data:
        problems.append("no 'delays'")
    elif not isinstance(delays, dict):
        problems.append(f"'delays' is {json_kind(delays)}, not an object")
    else:
        bad = [(cc, d) for cc, d in delays.items() if not (is_number(d) and d >= 0)]
        if bad:
            cc, d = bad[0]
            are = 'value that is' if len(bad) == 1 else 'values that are'
            problems.append(f"'delays' has {len(bad)} {are} not a number of seconds "
                            f'(first: {cc!r}: {shown(d)})')
    fault = data.get('fault')
    if problems or not isinstance(delays, dict):
        return None, problems
    return ServerWorkload(data['mode'], data['seed'], float(data['delay_min']),
                          float(data['delay_max']), float(data['error_rate']),
                          fault if isinstance(fault, str) else None,
                          {str(cc): float(d) for cc, d in delays.items()}), []


def stats_problems(data: object) -> list[str]:
    """What is wrong with a /stats answer, for what compare reads of it."""
    if not isinstance(data, dict):
        return [f'not a JSON object but {json_kind(data)}']
    problems = field_problems(data, {
        'peak_in_flight': (is_count, 'a whole number'),
        'requests': (lambda value: isinstance(value, dict)
                     and all(is_count(n) for n in value.values()),
                     'an object of whole numbers'),
    })
    return problems


def request_log(data: object) -> tuple[list[dict[str, Any]] | None, list[str]]:
    """The requests of a /stats/requests answer, or the problem with it (one line)."""
    if not isinstance(data, dict):
        return None, [f'not a JSON object but {json_kind(data)}']
    requests = data.get('requests')
    if not isinstance(requests, list):
        return None, ["no 'requests'" if 'requests' not in data
                      else f"'requests' is {json_kind(requests)}, not a list"]
    fields = {'start': (is_number, 'a number'), 'end': (is_number, 'a number'),
              'status': (is_count, 'a whole number')}
    for i, request in enumerate(requests, 1):
        if not isinstance(request, dict):
            return None, [f'request {i} is {json_kind(request)}, not an object']
        if missing := [name for name in fields if name not in request]:
            return None, [f'request {i} has no {missing[0]!r}']
        if problems := field_problems(request, fields):
            return None, [f'request {i}: {problems[0]}']
    return requests, []


def read_server(base_url: str, want_log: bool
                ) -> tuple[ServerWorkload | None, list[tuple[str, str]]]:
    """The server's workload, if it publishes one, and every problem with what
    compare reads from it, as (page, problem)."""
    problems: list[tuple[str, str]] = []
    workload = None
    data = server_json(base_url, '/workload', timeout=5)
    if data is not None:
        workload, wrong = read_workload(data)
        problems += [('/workload', problem) for problem in wrong]
    data = server_json(base_url, '/stats', timeout=5)
    if data is not None:
        problems += [('/stats', problem) for problem in stats_problems(data)]
    data = server_json(base_url, '/stats/requests', timeout=5) if want_log else None
    if data is not None:
        problems += [('/stats/requests', problem) for problem in request_log(data)[1]]
    return workload, problems


def server_answers(base_url: str) -> bool:
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == 'https' else 80)
    return port_answers(parts.hostname or 'localhost', port)


# ----------------------------------------------------------------- runs

@dataclass
class RunResult:
    """One run of one variant, as written to --json and --csv."""

    variant: str
    concurrency: int
    requested_concurrency: int | None
    repeat: int
    exit_code: int | None  # None: killed at the time limit
    protocol: str = '1.1'  # HTTP/1.1 or (--http2) HTTP/2
    downloaded: int | None = None
    not_found: int | None = None
    errors: int | None = None
    elapsed: float | None = None
    peak_in_flight: int | None = None
    connections: int | None = None  # that carried the requests, as the server counts them
    ideal: float | None = None
    efficiency: float | None = None
    problem: str = ''
    requests: list[dict[str, Any]] | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        del data['requests']
        for name, digits in (('ideal', 4), ('efficiency', 4)):
            if data[name] is not None:
                data[name] = round(data[name], digits)
        return data


REPORT_LINES = {
    'downloaded': re.compile(r'^(\d+) flags? downloaded\.$', re.M),
    'not_found': re.compile(r'^(\d+) not found\.$', re.M),
    'errors': re.compile(r'^(\d+) errors?\.$', re.M),
}
ELAPSED_LINE = re.compile(r'^Elapsed time: (\d+(?:\.\d+)?)s$', re.M)


def parse_report(run: RunResult, stdout: str) -> None:
    """Fill in the counts and time from a script's final report."""
    elapsed = ELAPSED_LINE.search(stdout)
    if elapsed is None:
        return
    run.elapsed = float(elapsed.group(1))
    for name, pattern in REPORT_LINES.items():
        match = pattern.search(stdout)
        setattr(run, name, int(match.group(1)) if match else 0)


@dataclass
class Plan:
    """What to run and against what."""

    label: str
    base_url: str
    cc_list: list[str]
    dest: Path
    timeout: float
    time_limit: float
    verbose: bool
    want_log: bool
    delays: dict[str, float] | None

    @property
    def shown_url(self) -> str:
        """The base URL as every message and file shows it: its password masked."""
        return printable_url(self.base_url)

    def masked(self, text: str) -> str:
        """``text`` (a child's output) with the URL's password masked wherever it appears."""
        return mask_password(text, self.base_url)


def mask_password(text: str, url: str) -> str:
    """``text`` with the ``user:password@`` of ``url`` shown as ``printable_url`` shows it."""
    userinfo = userinfo_of(url)
    if userinfo is None:
        return text
    return text.replace(userinfo, userinfo_of(printable_url(url)) or '')


def userinfo_of(url: str) -> str | None:
    """The ``user:password@`` of a URL, None when it has no password."""
    authority = url.partition('://')[2].partition('/')[0]
    userinfo, at, _ = authority.rpartition('@')
    return f'{userinfo}{at}' if ':' in userinfo else None


@dataclass
class Finished:
    """What a child left: its exit status (None: killed at the time limit) and output."""

    returncode: int | None
    stdout: str = ''
    stderr: str = ''


def run_child(cmd: list[str], time_limit: float, progress: Callable[[float], None]) -> Finished:
    """Run ``cmd`` to its end, or kill it at ``time_limit``; every PROGRESS_INTERVAL
    while it works, ``progress(seconds so far)``."""
    start = time.monotonic()
    # The child writes UTF-8 to us, whatever our terminal takes.
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, encoding='utf-8', errors='replace',
                          env={**os.environ, 'PYTHONIOENCODING': 'utf-8'}) as proc:
        try:
            while True:
                left = start + time_limit - time.monotonic()
                try:  # a retry after TimeoutExpired loses no output (subprocess docs)
                    stdout, stderr = proc.communicate(timeout=max(0.0, min(PROGRESS_INTERVAL,
                                                                            left)))
                    return Finished(proc.returncode, stdout, stderr)
                except subprocess.TimeoutExpired:
                    if left <= PROGRESS_INTERVAL:
                        proc.kill()
                        proc.communicate()
                        return Finished(None)
                progress(time.monotonic() - start)
        except BaseException:  # Ctrl-C: the child goes too, as with subprocess.run
            proc.kill()
            raise


def progress_text(plan: Plan, variant: Variant, seconds: float) -> str:
    """How far a run has come: its time, and the requests the server has answered."""
    text = f'{seconds:.0f} s'
    stats = server_stats(plan.base_url)
    answered = stats.get('requests') if stats else None
    if isinstance(answered, dict) and all(is_count(n) for n in answered.values()):
        done = sum(answered.values())
        text += (f', {done}/{len(plan.cc_list)} answered' if variant.requests_per_flag == 1
                 else f', {done} requests answered')
    return text


def run_once(plan: Plan, job: Job, repeat: int,
             progress: Callable[[str], None] = lambda text: None) -> RunResult:
    """One run in a fresh process; ``progress`` is told how it goes while it works."""
    variant, requested, protocol = job
    concur_req = variant.concurrency(requested, len(plan.cc_list))
    cmd = [sys.executable, str(variant.script), *plan.cc_list, '-s', plan.base_url,
           '-o', str(plan.dest), '--timeout', str(plan.timeout)]
    if requested is not None and variant.concurrent:
        cmd += ['-m', str(requested)]
    if protocol == '2':
        cmd += ['--http2']
    server_stats(plan.base_url, reset=True)  # the script resets again just before it starts
    proc = run_child(cmd, plan.time_limit,
                     lambda seconds: progress(progress_text(plan, variant, seconds)))
    if proc.returncode is None:
        return RunResult(variant.name, concur_req, requested, repeat, None, protocol,
                         problem=f'timed out after {plan.time_limit:g} s')
    run = RunResult(variant.name, concur_req, requested, repeat, proc.returncode, protocol)
    if plan.verbose:
        n = len(plan.cc_list)
        shown = [Path(cmd[1]).name, f'<{plural(n, "code")}>', *cmd[2 + n:]]
        shown[shown.index('-s') + 1] = plan.shown_url
        tqdm.tqdm.write(plan.masked(f'$ python {" ".join(shown)}\n{proc.stdout.rstrip()}'))
    parse_report(run, proc.stdout)
    if run.elapsed is None:
        lines = plan.masked(proc.stderr).strip().splitlines()
        run.problem = f'no report (exit {proc.returncode})' + (f': {lines[-1]}' if lines else '')
        return run
    stats = server_stats(plan.base_url) or {}
    if is_count(peak := stats.get('peak_in_flight')):
        run.peak_in_flight = peak
    if is_count(connections := stats.get('connections')):
        run.connections = connections
    if plan.delays is not None:
        run.ideal = variant_ideal(plan.delays, plan.cc_list, variant, concur_req)
        if run.elapsed > 0:
            run.efficiency = run.ideal / run.elapsed
    if plan.want_log:
        run.requests = request_log(server_json(plan.base_url, '/stats/requests', timeout=5))[0]
    return run


def run_all(plan: Plan, jobs: list[Job], repeat: int, results: list[RunResult]) -> None:
    """Run every job ``repeat`` times, round-robin so slow spells hit them all alike.

    The bar moves within a run too: its clock, and the run's time and the
    requests the server has answered (a bundled server), as a postfix.
    """
    with tqdm.tqdm(total=len(jobs) * repeat, unit='run', file=sys.stderr) as bar:
        for r in range(1, repeat + 1):
            for job in jobs:
                variant, requested, protocol = job
                m = '' if requested is None or not variant.concurrent else f' -m {requested}'
                h2 = ' --http2' if protocol == '2' else ''
                bar.set_description(f'{variant.name}{m}{h2} #{r}')
                results.append(run_once(plan, job, r, bar.set_postfix_str))
                bar.set_postfix_str('', refresh=False)
                bar.update()


# ----------------------------------------------------------------- rows

@dataclass
class Row:
    """The runs of one variant at one concurrency: one line of the table
    (flags2/tables.py), one point of the sweep chart (flags2/charts.py)."""

    variant: str
    concurrency: int
    requested: int | None
    protocol: str
    runs: list[RunResult]

    @property
    def series(self) -> str:
        """The variant, and the protocol where it is not HTTP/1.1: a line of the charts."""
        return self.variant if self.protocol == '1.1' else f'{self.variant} HTTP/2'

    @property
    def measured(self) -> list[RunResult]:
        return [run for run in self.runs if run.elapsed is not None]

    @property
    def times(self) -> list[float]:
        return [run.elapsed for run in self.measured if run.elapsed is not None]

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def median_run(self) -> RunResult | None:
        """The run whose time is the (lower) median: the one the timeline shows."""
        if not self.measured:
            return None
        target = statistics.median_low(self.times)
        return next(run for run in self.measured if run.elapsed == target)

    @property
    def ideal(self) -> float | None:
        return next((run.ideal for run in self.measured), None)

    def efficiency(self) -> float | None:
        median, ideal = self.median, self.ideal
        return ideal / median if ideal is not None and median else None

    def label(self) -> str:
        if self.variant == 'sequential':
            return self.series
        return f'{self.series} -m {self.requested or self.concurrency}'


def group_rows(results: list[RunResult]) -> list[Row]:
    rows: dict[tuple[str, int, int | None, str], Row] = {}
    for run in results:
        key = (run.variant, run.concurrency, run.requested_concurrency, run.protocol)
        rows.setdefault(key, Row(*key, [])).runs.append(run)
    order = {name: i for i, name in enumerate(VARIANT_NAMES)}
    return sorted(rows.values(), key=lambda row: (order.get(row.variant, 99), row.protocol,
                                                  row.concurrency, row.requested or 0))


# ------------------------------------------------------- for the charts

def describe(plan: Plan, workload: ServerWorkload | None) -> str:
    """The charts' subtitle: what was fetched from which server."""
    text = f'{plural(len(plan.cc_list), "flag")}, {plan.label} server'
    if workload and plan.delays:
        text += f' (delays {workload.delay_min:g}–{workload.delay_max:g} s'
        if workload.mode == 'error':
            text += f', {workload.error_rate:.0%} errors'
        text += ')'
    return text


def ideal_line(plan: Plan) -> Callable[[int], float] | None:
    """The ideal time at each concurrency of the one-request variants, for the
    sweep chart; None without delays."""
    if plan.delays is None:
        return None
    delays = [plan.delays.get(cc, 0.0) for cc in plan.cc_list]
    return lambda slots: ideal_time(delays, slots)


# --------------------------------------------------------- command line

def build_compare_parser() -> ArgumentParser:
    """The scripts' own parser for the codes and the server, plus the tool's options."""
    parser = build_parser(default_concur_req=1)
    parser.description = ('Run the sequential, threadpool and asyncio flag downloaders '
                          'on the same codes against the same server and compare them.')
    parser.epilog = ('Exit status: 0 when at least one run was measured (even if its '
                     'downloads failed) and every file asked for was written; 1 when none '
                     'was, when the server cannot be compared (nothing answers, or it '
                     'answers /workload, /stats or /stats/requests unlike the bundled '
                     'server), or a file could not be written after the runs; 2 for a '
                     'usage error, which includes an output file that cannot be written '
                     '(all checked before any run) or a setting that cannot work '
                     '(FLAGS2_LOCAL_URL and the like, HTTP_PROXY and the like); 130 when '
                     'interrupted; 141 when a reader of the output went away.')
    parser.set_defaults(max_req=None, dest=None)
    for action in parser._actions:
        if action.dest == 'max_req':
            action.help = ('concurrency for the concurrent variants '
                           '(default: their own, threadpool 30 and asyncio 5)')
        elif action.dest == 'dest':
            action.help = 'folder the runs save flags in (default: a temporary folder)'
        elif action.dest == 'verbose':
            action.help = "print each run's own report"
    parser.add_argument(
        '--variants', metavar='LIST', default=','.join(DEFAULT_VARIANTS),
        help=f'comma-separated variants to run, of {",".join(VARIANT_NAMES)} '
             f'(default: {",".join(DEFAULT_VARIANTS)}; flags3 asks for each '
             'country\'s metadata too, so its ideal time counts two requests per flag)')
    parser.add_argument(
        '--repeat', metavar='R', type=positive_int, default=DEFAULT_REPEAT,
        help=f'runs of each variant; the table shows median, min and max '
             f'(default: {DEFAULT_REPEAT})')
    parser.add_argument(
        '--sweep', metavar='LEVELS',
        help='comma-separated concurrency levels for the concurrent variants, '
             'e.g. 1,5,20,100,1000 (sequential runs once, as the baseline)')
    parser.add_argument(
        '--time-limit', metavar='SECONDS', type=positive_float, default=DEFAULT_TIME_LIMIT,
        help=f'stop a run that takes longer (default: {DEFAULT_TIME_LIMIT:g})')
    parser.add_argument(
        '--plot', metavar='FILE.png', type=Path,
        help='chart of elapsed time against concurrency (needs matplotlib)')
    parser.add_argument(
        '--timeline', metavar='FILE.png', type=Path,
        help="Gantt chart of one run of each variant from the server's request log "
             '(needs matplotlib)')
    parser.add_argument(
        '--protocols', metavar='LIST',
        help='comma-separated HTTP versions to run each variant with, of 1.1 and 2 '
             '(default: 2 with --http2, else 1.1); 1.1,2 puts them side by side')
    parser.add_argument('--json', metavar='FILE', type=Path, help='write every run as JSON')
    parser.add_argument('--csv', metavar='FILE', type=Path, help='write every run as CSV')
    return parser


# One kind of run: a variant, its -m (None: its default), the HTTP version.
Job = tuple[Variant, int | None, str]
PROTOCOLS = ('1.1', '2')


@dataclass
class Options:
    label: str
    base_url: str
    cc_list: list[str]
    variants: list[Variant]
    jobs: list[Job]
    args: argparse.Namespace


def parse_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in text.split(',') if part.strip()})
    except ValueError:
        raise UsageError(f'--sweep takes whole numbers separated by commas, got {text!r}') \
            from None
    if not levels or levels[0] < 1:
        raise UsageError(f'--sweep levels must be 1 or more, got {text!r}')
    return levels


def parse_protocols(text: str | None, http2: bool) -> list[str]:
    if text is None:
        return ['2' if http2 else '1.1']
    if http2:
        raise UsageError('use --http2 or --protocols, not both')
    protocols = {part.strip() for part in text.split(',') if part.strip()}
    if not protocols or not protocols <= set(PROTOCOLS):
        raise UsageError(f'--protocols takes 1.1, 2 or 1.1,2, got {text!r}')
    return [protocol for protocol in PROTOCOLS if protocol in protocols]


class UsageErrors(UsageError):
    """Several problems with the command line, each one line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(*problems)
        self.problems = problems


def parse_options(parser: ArgumentParser, argv: list[str] | None) -> Options:
    """Parse and check ``argv``; every problem ends in ``parser.error``: one line
    a problem, then the usage, exit 2."""
    args = parser.parse_args(argv)
    try:
        check_proxy_settings(os.environ)  # as the scripts: one line naming the setting
        return check_options(args)
    except UsageErrors as exc:
        for problem in exc.problems[:-1]:
            print(f'*** Usage error: {problem}', file=sys.stderr)
        parser.error(exc.problems[-1])
    except UsageError as exc:
        parser.refuse(exc)


OUTPUTS = ('json', 'csv', 'plot', 'timeline')
CHARTS = ('plot', 'timeline')


def output_problems(args: argparse.Namespace) -> list[str]:
    """Every reason a file asked for could not be written: checked before the runs."""
    problems = []
    writers: dict[Path, str] = {}
    for option in OUTPUTS:
        path: Path | None = getattr(args, option)
        if path is None:
            continue
        problem = unwritable(path)
        if problem is None and option in CHARTS:
            problem = chart_format_problem(path)
        if problem is None and (other := writers.setdefault(path.resolve(), option)) != option:
            problem = f'--{other} writes {str(path)!r} too'
        if problem is not None:
            problems.append(f'--{option}: {problem}')
    return problems


def unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written; None when it can. Leaves no file behind,
    and an existing one as it was."""
    folder = path.parent
    try:
        if path.is_dir():
            return f'{str(path)!r} is a folder; give a file name'
        if not folder.is_dir():
            return (f'{str(folder)!r} is a file, not a folder' if folder.exists()
                    else f'folder {str(folder)!r} does not exist')
        existed = path.exists()
        # No O_TRUNC: an existing file keeps its contents; O_NONBLOCK: a FIFO never waits.
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                         | getattr(os, 'O_NONBLOCK', 0)))
        if not existed:
            path.unlink()
    except OSError as exc:
        return f'cannot write {str(path)!r}: {exc.strerror or exc}'
    return None


def check_options(args: argparse.Namespace) -> Options:
    """What argparse cannot check; raises UsageError."""
    label, base_url = resolve_server(args.server, SERVERS)
    cc_list = expand_cc_args(args.every, args.all, args.cc, args.limit)
    if not cc_list:
        raise UsageError('no country codes to fetch')
    known = load_variants()
    names = [name.strip().lower() for name in args.variants.split(',') if name.strip()]
    if not names or any(name not in known for name in names):
        raise UsageError(f'--variants takes a comma-separated subset of '
                         f'{",".join(VARIANT_NAMES)}, got {args.variants!r}')
    variants = [known[name] for name in VARIANT_NAMES if name in names]
    if args.sweep is not None and args.max_req is not None:
        raise UsageError('use -m or --sweep, not both')
    jobs: list[Job] = []
    levels = parse_levels(args.sweep) if args.sweep is not None else [args.max_req]
    for protocol in parse_protocols(args.protocols, args.http2):
        for variant in variants:
            for level in levels if variant.concurrent else [None]:
                jobs.append((variant, level, protocol))
    problems = output_problems(args)
    if args.dest is not None:
        try:
            check_dest(args.dest)
        except UsageError as exc:
            problems.append(str(exc))
    if problems:
        raise UsageErrors(problems)
    return Options(label, base_url, cc_list, variants, jobs, args)


@contextlib.contextmanager
def destination(dest: Path | None) -> Iterator[Path]:
    if dest is not None:
        yield dest
        return
    with tempfile.TemporaryDirectory(prefix='flags2-compare-') as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    """Compare, writing as the scripts do (``streams.guarded_streams``): text the
    terminal cannot show is replaced (on an ASCII terminal the table's dashes
    lost the report), a stream that fails never ends the comparison, and one
    whose reader went away (``| head``) makes the exit status 141."""
    closed_pipe = threading.Event()
    with guarded_streams(closed_pipe.set):
        status = run_comparison(argv)
    return EXIT_CLOSED_PIPE if closed_pipe.is_set() else status


def run_comparison(argv: list[str] | None) -> int:
    options = parse_options(build_compare_parser(), argv)
    args = options.args
    if args.plot or args.timeline:
        problem = check_matplotlib()
        if problem is not None:
            print(f'*** {problem}', file=sys.stderr)
            return EXIT_ERRORS
    results: list[RunResult] = []
    try:
        with bundled_server(options.base_url, BUNDLED_MODES.get(options.label)) as started, \
                destination(args.dest) as dest:
            if started is not None:  # as the scripts say it
                print(f'Started the bundled flags server for {options.label} on port '
                      f'{started.port}; it stops once no run uses it.')
            if not server_answers(options.base_url):
                command = start_command(options.label, options.base_url)
                print(f'*** No server answers at {printable_url(options.base_url)}.'
                      + (f' Start the bundled one with: {command}' if command else ''),
                      file=sys.stderr)
                return EXIT_ERRORS
            workload, problems = read_server(options.base_url, args.timeline is not None)
            for page, problem in problems:
                print(f'*** The server at {printable_url(options.base_url)} answers {page} '
                      f'unlike the bundled server: {problem}', file=sys.stderr)
            if problems:
                return EXIT_ERRORS
            delays = workload.delays if workload and any(workload.delays.values()) else None
            plan = Plan(options.label, options.base_url, options.cc_list, dest,
                        args.timeout, args.time_limit, args.verbose,
                        args.timeline is not None, delays)
            intro(plan, options, workload, args.repeat)
            run_all(plan, options.jobs, args.repeat, results)
    except ServerStartError as exc:
        print(f'*** Could not start the bundled flags server: {exc}', file=sys.stderr)
        return EXIT_ERRORS
    except KeyboardInterrupt:
        print('\n*** Interrupted; the runs so far:', file=sys.stderr)
        report(group_rows(results), plan=None, workload=None, args=None, results=results)
        return EXIT_INTERRUPTED
    written = report(group_rows(results), plan, workload, args, results)
    measured = any(run.elapsed is not None for run in results)
    return EXIT_OK if measured and written else EXIT_ERRORS


def intro(plan: Plan, options: Options, workload: ServerWorkload | None, repeat: int) -> None:
    codes = plan.cc_list
    where = ', '.join(codes) if len(codes) <= 10 else f'from {codes[0]} to {codes[-1]}'
    names = ', '.join(variant.name for variant in options.variants)
    print(f'{plan.label} site: {plan.shown_url}' if plan.label in SERVERS
          else f'Site: {plan.shown_url}')
    print(f'Comparing {names} on {plural(len(codes), "flag")} ({where}): '
          f'{plural(len(options.jobs) * repeat, "run")}, each in a fresh process.')
    if workload is None:
        print('The server publishes no delays: no ideal times.')
    elif plan.delays is None:
        print(f'The bundled server in {workload.mode} mode adds no delays: '
              'no ideal times.')
    else:
        print(f'The server is the bundled one in {workload.mode} mode (seed '
              f'{workload.seed!r}): ideal times come from its per-code delays.')


def report(rows: list[Row], plan: Plan | None, workload: ServerWorkload | None,
           args: argparse.Namespace | None, results: list[RunResult]) -> bool:
    """Print the table and the bars, then write the files asked for: False
    when one could not be written (each says why in a line; the others are
    written all the same)."""
    print()
    for line in table(rows):
        print(line)
    print('ok / 404 / errors: flags downloaded / not found / failed; peak: most requests in '
          'flight at the server (on how many connections);')
    print('ideal: best possible time in the variant\'s request order at its concurrency; '
          'efficiency = ideal / median.')
    bars = text_bars(rows)
    if bars:
        print('\nMedian elapsed time:')
        for line in bars:
            print(line)
    if plan is None or args is None:
        return True
    written = True

    def write(path: Path, what: str, writer: Callable[[], object]) -> None:
        nonlocal written
        try:
            writer()
        except OSError as exc:
            written = False
            print(f'*** Could not write {str(path)!r}: {exc.strerror or exc}', file=sys.stderr)
        else:
            print(f'Wrote {what} to {path}')

    if args.json is not None:
        server = {'label': plan.label, 'url': plan.shown_url,
                  'workload': workload and workload.record()}
        write(args.json, 'every run', lambda: write_json(args.json, server, plan.cc_list,
                                                         args.repeat, results))
    if args.csv is not None:
        write(args.csv, 'every run', lambda: write_csv(args.csv, results))
    if args.plot is not None:
        write(args.plot, 'the chart', lambda: plot_sweep(args.plot, rows, describe(plan, workload),
                                                         ideal_line(plan)))
    if args.timeline is not None:
        if timeline_rows(rows):
            write(args.timeline, 'the timeline',
                  lambda: plot_timeline(args.timeline, rows, describe(plan, workload)))
        else:
            print(f'*** No timeline: the server at {plan.shown_url} keeps no request log '
                  '(only the bundled flags_server.py does)', file=sys.stderr)
    return written


def cli() -> None:
    sys.exit(main())


if __name__ == '__main__':
    cli()
