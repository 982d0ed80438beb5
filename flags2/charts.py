"""flags2_compare.py's charts (--plot, --timeline), drawn with matplotlib.

matplotlib is an optional extra (``flags2[plot]``): it is imported only when
a chart is drawn, so the table works without it, and ``check_matplotlib``
lets the tool refuse before any run rather than after all of them, with the
install command that fits how flags2 was installed (pip, or pipx).

A chart is written to exactly the name given, in the format its suffix
names, PNG when it has none; ``chart_format_problem`` refuses, before any
run, a suffix matplotlib cannot write.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flags2_compare import Row

PLOT_INSTALL = "pip install 'flags2[plot]' (or: pip install matplotlib)"
DEFAULT_CHART_FORMAT = 'png'
UNWRITABLE_FORMATS = frozenset({'pgf'})  # matplotlib lists it, but it needs LaTeX
# pipx keeps each app in a venv of its own, $PIPX_HOME/venvs/NAME (--global:
# $PIPX_GLOBAL_HOME/venvs/NAME), and writes pipx_metadata.json into it; the
# homes it uses when those variables are unset, as its docs list them.
PIPX_METADATA = 'pipx_metadata.json'
PIPX_DEFAULT_HOMES = ('~/.local/share/pipx', '~/.local/pipx', '~/pipx',
                      '~/Library/Application Support/pipx')
PIPX_DEFAULT_GLOBAL_HOME = '/opt/pipx'
COLOURS = {'sequential': '#7f7f7f', 'threadpool': '#1f77b4', 'asyncio': '#d62728'}
OUTCOME_COLOURS = {'OK': '#2ca02c', 'not found': '#8c8c8c', 'error': '#d62728'}
IN_FLIGHT_COLOUR = '#c6dbef'
# Where the concurrent variants take the same time their lines coincide: each
# keeps its own marker and dashes, and sits a little to its side of the level
# (a factor, as the x axis is logarithmic), so neither hides the other.
SWEEP_STYLES: dict[str, tuple[str, str, str, float]] = {  # marker, dashes, face, offset
    'threadpool': ('o', '-', 'full', 0.94),
    'asyncio': ('s', '--', 'none', 1.06),
}


HTTP2_STYLE = ('^', '-.')  # marker, dashes: a variant's HTTP/2 line beside its HTTP/1.1 one


def check_matplotlib() -> str | None:
    """None when charts can be drawn; otherwise the one-line reason."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return f'charts need matplotlib, which is not installed: {install_command()}'
    return None


def install_command(prefix: str | None = None,
                    environ: Mapping[str, str] | None = None) -> str:
    """How to add matplotlib to the Python that runs us (``sys.prefix``)."""
    venv = Path(sys.prefix if prefix is None else prefix)
    where = pipx_install(venv, os.environ if environ is None else environ)
    if where is None:
        return PLOT_INSTALL
    option = ' --global' if where == 'global' else ''
    return f'pipx inject{option} {venv.name} matplotlib'


def pipx_install(venv: Path, environ: Mapping[str, str]) -> str | None:
    """'user' or 'global' when ``venv`` is a pipx app's venv; None otherwise.

    A pipx venv is NAME in the venvs folder of a pipx home: the one its
    environment names, or a default one. pipx writes its metadata file into
    each venv it makes, so a venv moved elsewhere is found too.
    """
    def home(value: str) -> Path:
        return Path(value).expanduser().resolve()

    global_homes = {home(environ.get('PIPX_GLOBAL_HOME') or PIPX_DEFAULT_GLOBAL_HOME)}
    user_homes = {home(value) for value in (environ.get('PIPX_HOME'), *PIPX_DEFAULT_HOMES)
                  if value}
    venvs = venv.resolve().parent
    if venvs.name == 'venvs' and venvs.parent in global_homes:
        return 'global'
    if venvs.name == 'venvs' and venvs.parent in user_homes:
        return 'user'
    return 'user' if (venv / PIPX_METADATA).is_file() else None


def chart_format(path: Path) -> str:
    """The format a chart is written in: its suffix's, PNG without one."""
    return path.suffix[1:].lower() or DEFAULT_CHART_FORMAT


def chart_format_problem(path: Path) -> str | None:
    """Why matplotlib cannot write a chart named ``path``; None when it can
    (or when matplotlib is missing: ``check_matplotlib`` says so)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return None
    formats = sorted(set(FigureCanvasBase.get_supported_filetypes()) - UNWRITABLE_FORMATS)
    if chart_format(path) in formats:
        return None
    return (f'cannot write {path.suffix!r} files: name the chart .png, or one of '
            f'{", ".join("." + name for name in formats)}')


def plot_sweep(path: Path, rows: list[Row], subtitle: str,
               ideal_at: Callable[[int], float] | None) -> None:
    """Elapsed time against concurrency (log-log) above efficiency at each level.

    The concurrent variants differ in marker, dashes and a small sideways
    offset, so where their times are equal both stay visible (issue 11).

    ``ideal_at(concur_req)``: the ideal time at that level, drawn as the
    line no client can beat; None when the server publishes no delays.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 7.5), layout='constrained')
    ax, eff_ax = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    levels = sorted({row.concurrency for row in rows})
    for (variant, colour), http2 in itertools.product(COLOURS.items(), (False, True)):
        name = f'{variant} HTTP/2' if http2 else variant
        mine = [row for row in rows if row.series == name and row.median is not None]
        if not mine:
            continue
        if variant == 'sequential':
            row = mine[0]
            assert row.median is not None
            ax.axhline(row.median, color=colour, linestyle='-.' if http2 else ':',
                       linewidth=1.5, label=f'{name} (the baseline): {row.median:.2f} s')
            if (efficiency := row.efficiency()) is not None:
                eff_ax.plot([1], [efficiency * 100], marker='D' if http2 else 's',
                            markersize=10, markerfacecolor='none', linestyle='none',
                            color=colour, label=name)
            continue
        marker, dashes, fill, offset = SWEEP_STYLES.get(variant, ('o', '-', 'full', 1.0))
        if http2:  # the same colour, its own marker and dashes
            marker, dashes = HTTP2_STYLE
        style: dict[str, Any] = {'marker': marker, 'linestyle': dashes, 'fillstyle': fill}
        xs = [row.concurrency * offset for row in mine]
        ys = [row.median or 0.0 for row in mine]
        low = [y - min(row.times) for y, row in zip(ys, mine, strict=True)]
        high = [max(row.times) - y for y, row in zip(ys, mine, strict=True)]
        ax.errorbar(xs, ys, yerr=[low, high], capsize=3, color=colour, **style,
                    label=f'{name} (median of the runs, bars: min–max)')
        effs = [(row.concurrency * offset, e * 100) for row in mine
                if (e := row.efficiency()) is not None]
        if effs:
            eff_ax.plot(*zip(*effs, strict=True), color=colour, **style, label=name)
    if ideal_at is not None:
        ideal_levels = levels or [1]
        ax.plot(ideal_levels, [ideal_at(x) for x in ideal_levels], color='black', linestyle='--',
                marker='x', label='ideal: the server\'s delays only, zero client overhead')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_ylabel('elapsed time (s, log scale)')
    ax.set_title(f'Elapsed time against concurrency\n{subtitle}', fontsize=11)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=9)
    eff_ax.set_ylabel('efficiency (%)\nideal / median')
    eff_ax.set_ylim(0, 105)
    eff_ax.grid(True, which='both', alpha=0.3)
    if ideal_at is None:
        eff_ax.text(0.5, 0.5, 'no ideal time: the server publishes no delays',
                    transform=eff_ax.transAxes, ha='center', va='center')
    else:
        eff_ax.legend(fontsize=9, loc='lower left')
    if levels:
        eff_ax.set_xticks(levels, [str(level) for level in levels])
        eff_ax.minorticks_off()
    eff_ax.set_xlabel('concurrent requests (concur_req: -m, capped at the number of flags)')
    fig.savefig(path, dpi=110, format=chart_format(path))


def outcome(status: int) -> str:
    return 'OK' if status == 200 else 'not found' if status == 404 else 'error'


def max_overlap(requests: list[dict[str, Any]]) -> int:
    """Most requests open at once in the record (an end before a start at a tie)."""
    return max(in_flight_steps(requests, 0.0)[1])


def timeline_rows(rows: list[Row]) -> list[Row]:
    """One row a variant (and protocol), in the rows' order: its only one, or in a
    sweep the lowest level above 1."""
    chosen = []
    for name in dict.fromkeys(row.series for row in rows):
        mine = [row for row in rows if row.series == name and row.median_run is not None
                and row.median_run.requests]
        if mine:
            above_one = [row for row in mine if row.concurrency > 1]
            chosen.append((above_one or mine)[0])
    return chosen


def in_flight_steps(requests: list[dict[str, Any]], t0: float) -> tuple[list[float],
                                                                         list[int]]:
    """Times and counts of requests open at the server, for a step line.

    At a tie an end comes before a start, so back-to-back requests never count
    as overlapping.
    """
    events = sorted([(r['start'] - t0, 1) for r in requests]
                    + [(r['end'] - t0, -1) for r in requests])
    times, counts, current = [0.0], [0], 0
    for time_, step in events:
        current += step
        times.append(time_)
        counts.append(current)
    return times, counts


def plot_timeline(path: Path, rows: list[Row], subtitle: str) -> bool:
    """One Gantt panel a variant, each on a time axis of its own.

    Every panel shows its whole run: a shared axis would either cut the
    slower run short or shrink the faster one to a sliver (issue 11).
    False when no row has a request log to draw.
    """
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    chosen = timeline_rows(rows)
    if not chosen:
        return False

    fig = Figure(figsize=(10, 1.6 + 2.6 * len(chosen)), layout='constrained')
    axes = list(fig.subplots(len(chosen), 1, squeeze=False)[:, 0])
    for ax, row in zip(axes, chosen, strict=True):
        run = row.median_run
        assert run is not None and run.requests
        requests = sorted(run.requests, key=lambda r: r['start'])
        t0 = requests[0]['start']
        ax.barh(range(len(requests)), [r['end'] - r['start'] for r in requests],
                left=[r['start'] - t0 for r in requests], height=1.0,
                color=[OUTCOME_COLOURS[outcome(r['status'])] for r in requests],
                edgecolor='none')
        ax.set_ylim(len(requests), -0.5)
        ax.set_ylabel('request (in start order)')
        ax.grid(True, axis='x', alpha=0.3)
        times, counts = in_flight_steps(requests, t0)
        count_ax = ax.twinx()  # drawn behind the bars, as a shaded area
        count_ax.set_zorder(ax.get_zorder() - 1)
        ax.patch.set_visible(False)
        count_ax.fill_between(times, counts, step='post', color=IN_FLIGHT_COLOUR,
                              linewidth=0)
        count_ax.axhline(row.concurrency, color='black', linestyle=':', linewidth=0.9)
        count_ax.set_ylim(0, row.concurrency * 1.25)
        count_ax.set_ylabel('requests in flight')
        span_s = max(r['end'] for r in requests) - t0
        ax.set_title(f'{row.label()}: {len(requests)} requests in {span_s:.2f} s at the '
                     f'server, at most {max(counts)} in flight '
                     f'(concur_req {row.concurrency})', fontsize=10, loc='left')
        ax.set_xlim(0, span_s * 1.02 or 1.0)
        ax.set_xlabel('seconds since the first request reached the server (own scale)')
    fig.suptitle('One run of each variant, one bar per request, as the server saw it\n'
                 + subtitle, fontsize=11)
    handles: list[Artist] = [Patch(color=c, label=k) for k, c in OUTCOME_COLOURS.items()]
    handles += [Patch(color=IN_FLIGHT_COLOUR, label='requests in flight (right axis)'),
                Line2D([], [], color='black', linestyle=':', linewidth=0.9,
                       label='concur_req')]
    fig.legend(handles=handles, loc='outside lower center', ncols=5, fontsize=9)
    fig.savefig(path, dpi=110, format=chart_format(path))
    return True
